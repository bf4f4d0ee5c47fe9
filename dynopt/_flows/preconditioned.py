r"""Preconditioned gradient flows $\dot\theta = -P(\theta)\nabla L$, $P$ SPD: diagonal, Newton."""

from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, Params, ScalarLike
from .._discretization import widest_dtype
from .._maps.preconditioned import PreconditionedStep, split_preconditioner
from .._problem import Problem
from .._transforms.adaptive import tree_vdot
from .._validation import check, choice, function, is_traced, nonnegative
from .base import AbstractMappedFlow


LossFn = Callable[[Params], Array]


def _scalar_number(name: str, value) -> Array:
    """`value` validated `>= 0` (all three tiers of `nonnegative`) and stored as a weakly typed
    scalar array leaf: a new value reuses the compiled program, and it computes in the
    parameters' dtype as the Python float it replaces did (a float32 run stays float32 under
    strict promotion, also for a float64 value traced under `vmap`)."""
    value = nonnegative(name, value)
    if np.ndim(value) != 0:
        raise ValueError(
            f"{name} must be a scalar, got shape {np.shape(value)}: one preconditioner holds "
            "one value (for a batch, vmap over the values)."
        )
    # `lax.full_like` gives its result the weak type of its template, the Python float 0.0.
    return jax.lax.full_like(0.0, value)


class DiagonalPreconditioner(eqx.Module):
    r"""$P(\theta)v = d(\theta)\odot v$ for `diagonal(params) -> d` (a pytree like `params`, all
    entries $> 0$). `diagonal` must be hashable (e.g. a module-level function)."""

    diagonal: Callable[[Params], Params] = eqx.field(static=True)

    def __call__(self, params: Params, v: Params, loss_fn: LossFn | None = None) -> Params:
        return jax.tree.map(jnp.multiply, self.diagonal(params), v)


class NewtonPreconditioner(eqx.Module):
    r"""$P(\theta)v = (\nabla^2 L(\theta) + \mu I)^{-1} v$, solved with lineax on the operator
    $u \mapsto \nabla^2 L\,u + \mu u$ built from Hessian-vector products (`jax.jvp` of the
    gradient; no Hessian is formed by hand).

    **Arguments:**

    - `damping` $\mu \ge 0$ (Levenberg-Marquardt; 0 is pure Newton).
    - `linear_solver`: `"cholesky"` (lineax materializes the operator from $d$ HVPs, then
      Cholesky: exact, for small $d$) or `"cg"` (matrix-free conjugate gradients, `rtol`/`atol`).
    - `rtol`, `atol` $\ge 0$: the CG tolerances (unused by Cholesky; for CG not both 0, which
      would leave it no stopping rule but its step limit).

    `damping`, `rtol` and `atol` are scalar array leaves (hyper-parameters): a new value reuses
    the compiled program (`solve`, and `run` of `PreconditionedFlow(P).discretize(h)`, which
    passes them as traced hyper-parameters), and a batch of values can be `vmap`ped. A value
    out of range is a `ValueError` on construction, and inside `jit` (traced) an error of the
    compiled program. `linear_solver` is static.

    Both assume $\nabla^2 L + \mu I \succ 0$ along the path (check it with
    `PreconditionedFlow(..., check_on=problem)` at the start).

    **Raises:** `ValueError` for a negative, non-finite or non-scalar number, an unknown
    `linear_solver`, or CG with `rtol = atol = 0`.
    """

    damping: Array
    linear_solver: str = eqx.field(static=True)
    rtol: Array
    atol: Array

    def __init__(
        self,
        damping: ScalarLike = 0.0,
        linear_solver: str = "cholesky",
        rtol: ScalarLike = 1e-12,
        atol: ScalarLike = 1e-14,
    ):
        self.damping = _scalar_number("damping", damping)
        self.linear_solver = choice("linear_solver", linear_solver, ("cholesky", "cg"))
        rtol, atol = _scalar_number("rtol", rtol), _scalar_number("atol", atol)
        if linear_solver == "cg":
            msg = "rtol and atol must not both be 0 (CG would stop only at its step limit)"
            if is_traced((rtol, atol)):
                rtol = check(rtol, (rtol == 0) & (atol == 0), msg + ", got both 0 inside jit.")
            elif float(rtol) == 0 and float(atol) == 0:
                raise ValueError(msg + "; give rtol > 0 (e.g. 1e-12).")
        self.rtol, self.atol = rtol, atol

    def __call__(self, params: Params, v: Params, loss_fn: LossFn | None = None) -> Params:
        if loss_fn is None:
            raise ValueError("NewtonPreconditioner needs the loss: pass loss_fn (value_fn).")
        grad = jax.grad(loss_fn)
        # A mixed-dtype tree (float32 weights, float64 biases) is solved in its widest dtype
        # and the result cast back leaf by leaf: lineax materializes the operator (Cholesky) or
        # closure-converts it (CG) on one dtype, and refused the mixed one inside `run`.
        dtype = widest_dtype(v)
        rhs = jax.tree.map(lambda x: x.astype(dtype), v)

        # The numbers are cast to the parameters' dtype, as a Python float is taken: lineax's
        # batching rule (a vmapped damping) drops their weak type, and a float64 tolerance would
        # then meet float32 parameters under strict promotion.
        def matvec(u):
            tangent = jax.tree.map(lambda ui, p: ui.astype(p.dtype), u, params)
            hu = jax.jvp(grad, (params,), (tangent,))[1]
            hu = jax.tree.map(lambda x: x.astype(dtype), hu)
            return jax.tree.map(lambda a, b: a + self.damping.astype(b.dtype) * b, hu, u)

        structure = jax.eval_shape(lambda: rhs)
        tags = (lx.symmetric_tag, lx.positive_semidefinite_tag)
        op = lx.FunctionLinearOperator(matvec, structure, tags)
        if self.linear_solver == "cholesky":
            solver = lx.Cholesky()
        else:
            rtol, atol = self.rtol.astype(dtype), self.atol.astype(dtype)
            solver = lx.CG(rtol=rtol, atol=atol, max_steps=10 * optax.tree.size(v) + 10)
        # throw=False: a failed solve (e.g. Cholesky of an indefinite Hessian) returns NaN, which
        # `solve` reports as a SolveError and `run` as divergence, instead of a runtime crash.
        out = lx.linear_solve(op, rhs, solver, throw=False).value
        return jax.tree.map(lambda x, like: x.astype(like.dtype), out, v)


def preconditioner_matrix(P, params: Params, loss_fn: LossFn | None) -> np.ndarray:
    """$P(\\theta)$ as a dense matrix on the raveled parameters (one column per basis vector)."""
    flat, unravel = ravel_pytree(params)

    def apply(u):
        return ravel_pytree(P(params, unravel(u), loss_fn))[0]

    return np.asarray(jax.jit(jax.vmap(apply))(jnp.eye(flat.size, dtype=flat.dtype))).T


class _StaticPreconditioner(eqx.Module):
    """A user's function `P(params, v, loss_fn)` held as a static field: the flow stays a pytree
    of arrays only (a bare function as a leaf failed plain `jax.jit` over the flow)."""

    fn: Callable[[Params, Params, LossFn | None], Params] = eqx.field(static=True)

    def __call__(self, params: Params, v: Params, loss_fn: LossFn | None = None) -> Params:
        return self.fn(params, v, loss_fn)


class PreconditionedFlow(AbstractMappedFlow):
    r"""The preconditioned gradient flow $\dot\theta = -P(\theta)\nabla L(\theta)$ for a
    symmetric positive-definite $P(\theta)$.

    **Lyapunov:** $\frac{d}{dt}L = -\nabla L^\top P\,\nabla L \le 0$: $L$ is a Lyapunov function
    for every such $P$ (post 3: descent needs only $\dot L < 0$).
    Examples: `DiagonalPreconditioner(d)` (per-coordinate rates, $P = \mathrm{diag}\,d(\theta)$);
    `NewtonPreconditioner()` ($P = \nabla^2L^{-1}$: on a quadratic,
    $\theta(t) = \theta^* + e^{-t}(\theta_0 - \theta^*)$, every direction at rate 1).

    **Discretization:** preconditioned GD $\theta_{k+1} = \theta_k - hP(\theta_k)\nabla L(\theta_k)$
    (`dynopt.transforms.preconditioned_sgd`), explicit Euler, order 1, $t = kh$ (damped Newton
    for the Newton preconditioner).

    **Arguments:**

    - `P`: `P(params, v, loss_fn) -> P(θ) v`, linear in `v` (`loss_fn` is the loss, for
      Hessian-based $P$). A pytree field: the arrays of an `eqx.Module` $P$ (a
      `NewtonPreconditioner`'s numbers, a user's module's weights) are leaves of the flow (a
      new value reuses the compiled `solve`; scalar ones are the discretization's traced
      hyper-parameters, so also `run`'s, while an array of another shape cannot be one:
      `discretize` refuses it, as `run` would read it as a batch of runs); anything else in
      $P$ is compiled into the optimizer, so it must be hashable: a module-level function (held
      as a static field, so the flow's leaves are arrays only), or a module's other fields.
    - `check_on`: optional `Problem`; if given, $P(\theta_0)$ is materialized at
      `check_on.params0` and must be symmetric (to $10^{-8}$ relative) and positive definite,
      else `ValueError`. Only that sample point is checked; $P$ elsewhere is the caller's promise.
    """

    default_map: ClassVar[type] = PreconditionedStep

    P: Callable[[Params, Params, LossFn | None], Params]

    def __init__(self, P, *, check_on: Problem | None = None):
        function("P", P, "callable P(params, v, loss_fn)")
        if not isinstance(P, eqx.Module):  # a function: static, as a field of a module
            P = _StaticPreconditioner(P)
        split_preconditioner(P)  # `ValueError` where its part besides arrays is not hashable
        self.P = P
        if check_on is not None:
            check_preconditioner(P, check_on.params0, check_on.loss)

    def init(self, params: Params) -> Params:
        return params

    def vector_field(self, t: ScalarLike, state: Params, problem: Problem) -> Params:
        del t
        direction = self.P(state, problem.grad(state), problem.loss)
        return jax.tree.map(jnp.negative, direction)

    def params(self, state: Params) -> Params:
        return state

    @classmethod
    def from_hyperparams(
        cls, learning_rate, precondition, damping=None, rtol=None, atol=None
    ) -> tuple["PreconditionedFlow", Array]:
        """Inverse map: `preconditioned_sgd(h, P)` follows `PreconditionedFlow(P)`, $dt = h$;
        `PreconditionedStep.inverse`, so a `NewtonPreconditioner` split into its static part and
        its traced numbers (`damping`, `rtol`, `atol`: a discretization's hyper-parameters) is
        put back together."""
        return PreconditionedStep().inverse(learning_rate, precondition, damping, rtol, atol)

    def loss_rate(self, t: ScalarLike, state: Params, problem: Problem):
        r"""$-\nabla L^\top P\nabla L$."""
        del t
        g = problem.grad(state)
        return -tree_vdot(g, self.P(state, g, problem.loss))


def check_preconditioner(P, params: Params, loss_fn: LossFn | None = None) -> None:
    r"""Check that $P(\theta)$ at `params` is symmetric and positive definite, as a preconditioned
    flow needs.

    $P$ is built as a dense matrix on the raveled parameters (one application per basis vector):
    symmetric means $\max|P - P^\top|/\max|P| \le 10^{-8}$, positive definite that the smallest
    eigenvalue of its symmetric part is $> 0$.

    **Arguments:**

    - `P`: the preconditioner, a callable `P(params, v, loss_fn)` returning $P(\theta)v$.
    - `params`: the sample point $\theta$, any pytree.
    - `loss_fn`: the loss, passed to `P` (for Newton-type preconditioners; default `None`).

    **Returns:** `None`.

    **Raises:** `ValueError` naming `P` where $P(\theta)$ has a non-finite entry, is not
    symmetric, or is not positive definite.
    """
    mat = preconditioner_matrix(P, params, loss_fn)
    if not np.all(np.isfinite(mat)):
        raise ValueError(
            "P must be positive definite: P(θ) at the sample point is not finite (for Newton: "
            "the Hessian there is singular or indefinite; add damping)."
        )
    scale = max(float(np.max(np.abs(mat))), np.finfo(float).tiny)
    asym = float(np.max(np.abs(mat - mat.T))) / scale
    if asym > 1e-8:
        raise ValueError(
            f"P must be symmetric: at the sample point max|P - P^T|/max|P| = {asym:.3g} > 1e-8."
        )
    lam_min = float(np.min(np.linalg.eigvalsh(0.5 * (mat + mat.T))))
    if lam_min <= 0:
        raise ValueError(
            f"P must be positive definite: at the sample point its smallest eigenvalue is "
            f"{lam_min:.3g} <= 0 (for Newton, add damping or start where the Hessian is SPD)."
        )
