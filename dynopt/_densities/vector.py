r"""The SDE $dx = p(x,t)\,dt + \sqrt{\alpha}\,dW$ in $\mathbb R^d$ (isotropic noise), or
$dx = p\,dt + B\,dW$ with a constant diffusion matrix $D = BB^\top$ (anisotropic noise), the
exact transition density of a linear drift, the stationary law of a gradient drift, and the
result type of every $d$-dimensional density route: a density on a tensor grid.

**Convention** as in 1-D: $\alpha$ is the variance rate, $\mathrm{Cov}(dx) = \alpha\,dt\,I$, or
$D\,dt$ for a matrix (isotropic noise is $D = \alpha I$). The Fokker–Planck equation is
$\partial_t P = \tfrac12\nabla\cdot(D\nabla P) - \nabla\cdot(pP)$, i.e.
$\tfrac\alpha2\Delta P - \nabla\cdot(pP)$ for isotropic noise.
"""

from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, Bool, Float, Scalar, ScalarLike
from .._discretization import widest_dtype
from .._flows.base import AbstractFlow
from .._problem import Problem
from .._sde.base import AbstractSDE, not_an_optimizer
from .._validation import (
    as_hyperparameter,
    function,
    interval,
    is_traced,
    nonnegative,
    positive,
)
from .base import (
    as_point_array,
    check_edge_mass,
    check_scalar_point,
    check_tolerance,
    check_uniform_grid,
    float_array,
    line_integral,
    ScalarSDE,
)


def check_diffusion_matrix(name: str, value) -> Float[Array, "d d"]:
    r"""`value` as a float $(d, d)$ array: `ValueError` naming `name` unless it is square and,
    given concretely, finite, symmetric (to $10^{-12}$ of its largest entry) and positive
    definite. A singular $D$ (noise on some directions only, e.g. `Kramers`' on the velocity)
    has no density on $\mathbb R^d$, and the Gaussian kernels would divide by $\det D = 0$."""
    # (np.ndim/np.shape: a nested list too, and a tracer's own shape.)
    if np.ndim(value) != 2 or np.shape(value)[0] != np.shape(value)[1] or not np.size(value):
        raise ValueError(f"{name} must be a square (d, d) matrix, got shape {np.shape(value)}.")
    if is_traced(value):
        return jnp.asarray(value, dtype=float)
    interval(name, value)  # finite real numbers
    m = np.asarray(value, dtype=np.float64)
    scale = float(np.max(np.abs(m)))
    if not np.allclose(m, m.T, rtol=0.0, atol=1e-12 * scale):
        raise ValueError(
            f"{name} must be symmetric (a diffusion matrix D = B B^T), got {m.tolist()}."
        )
    eig = np.linalg.eigvalsh(0.5 * (m + m.T))
    if not eig[0] > 1e-12 * max(scale, 1e-300):
        raise ValueError(
            f"{name} must be positive definite (a nonsingular diffusion matrix D = B B^T), got "
            f"eigenvalues {np.round(eig, 6).tolist()}: noise that misses a direction (e.g. "
            "Kramers: on the velocity only) has no density on R^d for the grid routes. "
            "Simulate it with dynopt.sde.simulate."
        )
    return jnp.asarray(value, dtype=float)


def _convert_alpha(value) -> Float[Array, "..."]:
    # A scalar exactly as a `hyperparameter` field stores it (> 0, a weakly typed float array);
    # a matrix checked as a diffusion matrix. Other shapes are refused by `__check_init__`.
    if np.ndim(value) == 2:
        return check_diffusion_matrix("alpha", value)
    if np.ndim(value) == 0:
        return as_hyperparameter("alpha", value, lower=0.0, lower_open=True)
    return value


def _check_alpha_shape(alpha) -> None:
    if jnp.ndim(alpha) not in (0, 2):
        raise ValueError(
            f"alpha must be a scalar, the one variance rate of the noise sqrt(alpha) dW, or a "
            f"(d, d) diffusion matrix D = B B^T of the noise B dW, got shape {jnp.shape(alpha)} "
            "(per-axis variance rates a_i are the matrix D = diag(a_i))."
        )


class VectorSDE(AbstractSDE):
    r"""$dx = p(x, t)\,dt + \sqrt{\alpha}\,dW$ in $\mathbb R^d$, $W$ a $d$-dimensional Brownian
    motion: the model every density route works on.

    With a matrix `alpha` $= D$ it is $dx = p\,dt + B\,dW$, $BB^\top = D$ (anisotropic noise;
    $B$ the Cholesky factor, the law depends on $D$ only); a scalar $\alpha$ is $D = \alpha I$.
    A flow with noise (constant additive noise, so `dynopt.sde.simulate(sde, None, ts, key, n,
    x0=x0)` uses ShARK); its drift is a general $p$, not an optimizer's, so it has no
    `discretize`. Flows with noise (`dynopt.sde.Langevin`, a user's `AbstractSDE`) reach the
    routes through `VectorSDE.from_flow(flow, problem)`, which every route applies when given
    `problem=`.

    **Arguments:**

    - `drift`: $p(x, t)$, a callable mapping shape $(d,)$ and a scalar to shape $(d,)$ (an
      `eqx.Module` such as `LinearDrift` keeps its numbers traced: one compilation for many).
    - `alpha`: the variance rate $\alpha > 0$, a scalar (an array leaf); or the diffusion
      matrix $D$, $(d, d)$ symmetric positive definite ($\mathrm{Cov}(dx) = D\,dt$; per-axis
      rates $a_i$ are $D = \mathrm{diag}(a_i)$).

    **Raises:** `ValueError` for $\alpha \le 0$, an $\alpha$ that is neither a scalar nor a
    square matrix, a matrix that is not symmetric positive definite (a singular $D$ has no
    density), a non-callable drift, or (at `check_dimension`, i.e. in `simulate` and every
    route) a drift whose output shape is not the state's $(d,)$, or a $D$ that is not $(d, d)$.
    """

    drift_fn: Callable[[Array, Scalar], Array]
    # Not a `hyperparameter` field: a matrix is one model, not a batch of runs (`simulate`'s
    # `check_unbatched` refuses a hyperparameter that is not a scalar).
    alpha: Float[Array, ""] | Float[Array, "d d"] = eqx.field(converter=_convert_alpha)
    additive: ClassVar[bool] = True

    def __check_init__(self):
        function("drift", self.drift_fn, "callable (x, t) -> shape (d,)")
        _check_alpha_shape(self.alpha)

    @property
    def isotropic(self) -> bool:
        r"""Whether the noise is $\sqrt\alpha\,dW$ with a scalar $\alpha$ (static: the shape)."""
        return jnp.ndim(self.alpha) == 0

    def diffusion_matrix(self, d: int) -> Float[Array, "d d"]:
        r"""$D$, $\mathrm{Cov}(dx) = D\,dt$: $\alpha I_d$ for a scalar $\alpha$."""
        return self.alpha * jnp.eye(d) if self.isotropic else self.alpha

    @staticmethod
    def from_flow(flow: AbstractFlow, problem: Problem, *, times=(0.0, 1.0)) -> "VectorSDE":
        r"""The flow with noise `flow` on `problem` as $dx = p\,dt + G\,dW$ on its raveled state:
        $p$ is the flow's `vector_field`, and its `diffusion` $G$ must be one constant matrix for
        every state and time with $D = GG^\top$ nonsingular (the densities' Fokker–Planck
        $\partial_t P = \tfrac12\nabla\cdot(D\nabla P) - \nabla\cdot(pP)$). Isotropic noise,
        $D = \alpha I$, gives the scalar `alpha` $= \alpha$ (`Langevin(T)`: $p = -\nabla L$,
        $\alpha = 2T$); any other $D$ the matrix `alpha` $= D$. The noise is read at
        `problem.params0` at each of `times` (the routes pass five times across their
        $[t_0, t_1]$), with its derivative in the state.

        **Raises:** `ValueError` for a flow without diffusion or with zero noise (`Langevin(0)`),
        one that declares state-dependent noise (`additive = False`: `SGDNoise`, `GBM`), or noise
        whose $D$ is singular (`Kramers`: on the velocity only; it has no density on the whole
        state), depends on the state (its derivative at `params0`, or its value at four fixed
        states around it), or changes across `times`.
        """
        if not isinstance(flow, AbstractFlow) or not isinstance(problem, Problem):
            raise ValueError(
                "from_flow needs a dynopt flow with noise and its dynopt.Problem, got "
                f"{type(flow).__name__} and {type(problem).__name__}."
            )
        name = type(flow).__name__
        need = (
            "the density routes need constant isotropic additive noise sqrt(alpha) dW, or "
            "constant additive noise G dW with a nonsingular D = G G^T, on the whole state (one "
            "alpha or D for every state and time)"
        )
        if isinstance(flow, AbstractSDE):
            flow.check(problem)
            if not flow.additive:  # a zero derivative at params0 does not make it additive
                raise ValueError(
                    f"{need}; {name} declares state-dependent noise (additive = False). "
                    "Simulate it with dynopt.sde.simulate."
                )
        state0 = flow.init(problem.params0)
        x0 = ravel_pytree(state0)[0]
        ts = [float(t) for t in np.atleast_1d(np.asarray(times, dtype=np.float64))]
        noise = [_diffusion_matrix(flow, problem, state0, x0, t) for t in ts]
        if noise[0][0] is None:
            raise ValueError(f"{name} declares no diffusion: it is an ODE.")
        n = x0.shape[0]
        alpha = None  # the scalar alpha, or the matrix D, read at the first time
        for t, (g, dg) in zip(ts, noise):
            gg = np.asarray(g @ g.T)
            a = float(gg[0, 0]) if gg.size else 0.0
            if alpha is None and not np.any(gg):
                cold = float(getattr(flow, "temperature", 1.0)) == 0.0
                why = " (its temperature is 0)" if cold else ""
                raise ValueError(
                    f"{need}; {name}'s diffusion is 0 at t = {t:g}{why}: there is no noise, and "
                    "the law is a moving point mass. Integrate it with dynopt.solve, or give it "
                    "noise."
                )
            iso = gg.shape == (n, n) and np.allclose(
                gg, a * np.eye(n), rtol=0, atol=1e-12 * max(abs(a), 1e-300)
            )
            if alpha is None and not iso:
                _check_nonsingular_noise(gg, n, name, need)
            if np.any(np.asarray(dg)):
                raise ValueError(
                    f"{need}; {name}'s diffusion depends on the state (its derivative at "
                    f"params0 is not 0 at t = {t:g}). Simulate it with dynopt.sde.simulate."
                )
            if alpha is None:
                alpha, t_first = (a if iso else 0.5 * (gg + gg.T)), t
                _check_constant_noise(flow, problem, state0, x0, t, alpha, need)
            elif np.ndim(alpha) == 0 and not (iso and abs(a - alpha) <= 1e-12 * alpha):
                now = f"{a:.6g} I" if iso else "not a multiple of I"
                raise ValueError(
                    f"{need}; {name}'s noise changes with time: g g^T = {alpha:.6g} I at t = "
                    f"{t_first:g} but {now} at t = {t:g}. The routes use one alpha throughout; "
                    "simulate it with dynopt.sde.simulate."
                )
            elif np.ndim(alpha) == 2 and not _same_matrix(gg, alpha):
                raise ValueError(
                    f"{need}; {name}'s noise changes with time: g g^T = "
                    f"{np.round(alpha, 6).tolist()} at t = {t_first:g} but "
                    f"{np.round(gg, 6).tolist()} at t = {t:g}. The routes use one D throughout; "
                    "simulate it with dynopt.sde.simulate."
                )
        return VectorSDE(_FlowDrift(flow, problem, state0), alpha)

    def p(self, x: Float[Array, " d"], t: ScalarLike) -> Float[Array, " d"]:
        """The drift $p(x, t)$."""
        return jnp.asarray(self.drift_fn(x, t))

    def grad_p(self, x: Float[Array, " d"], t: ScalarLike) -> Float[Array, "d d"]:
        r"""$\nabla p$, $(\nabla p)_{ij} = \partial_j p_i$, by autodiff (reverse mode for
        $d = 1$: the same operations as the 1-D `ScalarSDE.dp_dx`; forward mode otherwise)."""
        x = jnp.asarray(x, dtype=float)
        jac = jax.jacrev if x.shape == (1,) else jax.jacfwd
        return jac(lambda y: self.p(y, t))(x)

    def check_dimension(self, d: int) -> None:
        """`ValueError` unless the drift maps shape $(d,)$ to $(d,)$ (and a matrix $D$ is
        $(d, d)$)."""
        if isinstance(self.drift_fn, _FlowDrift):  # its unravel would fail with a shape error
            n = ravel_pytree(self.drift_fn.state0)[0].shape[0]
            if n != d:
                raise ValueError(
                    f"problem has a {n}-dimensional state ({type(self.drift_fn.flow).__name__} "
                    f"on problem.params0, raveled), but the grid (and x0) has {d} dimension"
                    f"{'s' if d != 1 else ''}: give one axis per state coordinate (the _nd "
                    "routes for d > 1)."
                )
        y0 = jnp.zeros(d)
        try:
            out = jax.eval_shape(self.drift_fn, y0, jnp.zeros(()))
        except (TypeError, ValueError) as e:  # e.g. a 2-D linear drift's matmul on a 1-D grid
            raise ValueError(
                f"the drift cannot take a state of shape {y0.shape} (the grid's, or x0's, "
                f"dimension {d}): {type(e).__name__}: {e}"
            ) from e
        if getattr(out, "shape", None) != y0.shape:
            shape = getattr(out, "shape", type(out).__name__)
            raise ValueError(f"drift must map shape {y0.shape} to {y0.shape}, got {shape}.")
        if not self.isotropic and jnp.shape(self.alpha) != (d, d):
            raise ValueError(
                f"alpha, the diffusion matrix D, must have shape ({d}, {d}) for a state of "
                f"dimension {d}, got {jnp.shape(self.alpha)}."
            )

    def check(self, problem) -> None:
        del problem  # the drift is self-contained

    def init(self, params) -> Float[Array, " d"]:
        x = jnp.atleast_1d(jnp.asarray(params, dtype=float))
        if x.ndim != 1:
            raise ValueError(f"x0 must be a vector of shape (d,), got shape {x.shape}.")
        self.check_dimension(x.shape[0])
        return x

    def vector_field(self, t, state, problem):
        del problem
        return self.p(state, t).astype(state.dtype)

    def diffusion(self, t, state, problem):
        del t, problem
        # sqrt(alpha) in the wider of alpha's and the state's precisions: a bfloat16 alpha had it
        # rounded to bfloat16 (2.8e-3) on the float64 state.
        alpha = self.alpha.astype(widest_dtype([jnp.dtype(self.alpha.dtype), state.dtype]))
        if not self.isotropic:  # B with B B^T = D: the law depends on D only
            return jnp.linalg.cholesky(alpha).astype(state.dtype)
        return jnp.sqrt(alpha).astype(state.dtype) * jnp.eye(state.shape[0], dtype=state.dtype)

    def params(self, state):
        return state

    def discretize(self, step_size):
        del step_size
        not_an_optimizer("VectorSDE")


class _FlowDrift(eqx.Module):
    # p(x, t) of a flow on the raveled state (`VectorSDE.from_flow`).
    flow: AbstractFlow
    problem: Problem
    state0: Any

    def __call__(self, x, t):
        unravel = ravel_pytree(self.state0)[1]
        return ravel_pytree(self.flow.vector_field(t, unravel(x), self.problem))[0]


def _diffusion_matrix(flow, problem, state0, x0, t, *, derivative=True):
    """The flow's noise coefficient at `x0` and time `t` as a dense matrix, and its derivative in
    the state (zero for additive noise; `None` unless `derivative`); `(None, None)` for an ODE."""
    unravel = ravel_pytree(state0)[1]

    def dense(x):
        g = flow.diffusion(t, unravel(x), problem)
        if g is None:
            return None
        return g.as_matrix() if isinstance(g, lx.AbstractLinearOperator) else jnp.asarray(g)

    if jax.eval_shape(dense, x0) is None:
        return None, None
    return dense(x0), (jax.jacfwd(dense)(x0) if derivative else None)


# States at which `from_flow` compares the noise with its value at params0: a zero derivative
# there is no proof of additive noise (g = σ(1 + x²) at x = 0 passed, and every route used σ²).
_NUM_NOISE_PROBES = 4


def _same_matrix(gg: np.ndarray, D: np.ndarray) -> bool:
    # Equal to 1e-12 of D's largest entry.
    return gg.shape == D.shape and np.allclose(
        gg, D, rtol=0, atol=1e-12 * float(np.max(np.abs(D))), equal_nan=False
    )


def _check_nonsingular_noise(gg: np.ndarray, n: int, name: str, need: str) -> None:
    r"""`ValueError` unless a flow's $gg^\top$ is a positive definite $(n, n)$ matrix."""
    try:
        check_diffusion_matrix("g g^T", gg if gg.shape == (n, n) else np.zeros((0, 0)))
    except ValueError as exc:
        rank = int(np.linalg.matrix_rank(gg)) if gg.ndim == 2 and gg.size else 0
        raise ValueError(
            f"{need}; {name}'s diffusion matrix g g^T is singular (rank {rank} of {n}; e.g. "
            "Kramers: noise on the velocity only): the law has no density on the whole state. "
            f"Simulate it with dynopt.sde.simulate. ({exc})"
        ) from None


def _check_constant_noise(flow, problem, state0, x0, t, alpha, need) -> None:
    r"""`ValueError` unless the flow's $gg^\top$ at time `t` is `alpha` $I$ (or the matrix
    `alpha`) at a few states around `x0` too ($x_0 + (1 + \|x_0\|_\infty) z_k$, $z_k$ fixed
    standard normal draws)."""
    x = np.asarray(x0, dtype=np.float64)
    scale = 1.0 + (float(np.max(np.abs(x))) if x.size else 0.0)
    draws = np.random.default_rng(0).standard_normal((_NUM_NOISE_PROBES, x.size))
    for z in draws:
        y = jnp.asarray(x + scale * z, dtype=jnp.asarray(x0).dtype)
        g = _diffusion_matrix(flow, problem, state0, y, t, derivative=False)[0]
        gg = np.asarray(g @ g.T)
        n = x.size
        iso = np.ndim(alpha) == 0
        was = f"{alpha:.6g} I" if iso else f"{np.round(alpha, 6).tolist()}"
        if not _same_matrix(gg, alpha * np.eye(n) if iso else alpha):
            name = type(flow).__name__
            raise ValueError(
                f"{need}; {name}'s diffusion depends on the state: g g^T = {was} at "
                f"params0 but not at x = {np.round(np.asarray(y), 4).tolist()} (t = {t:g}). "
                "Simulate it with dynopt.sde.simulate."
            )


class _ScalarDrift(eqx.Module):
    # A 1-D drift p(x, t) on scalars as the d = 1 drift on shape (1,).
    fn: Callable[[Scalar, Scalar], Scalar]

    def __call__(self, x, t):
        return jnp.reshape(jnp.asarray(self.fn(x[0], t)), (1,))


def as_vector_sde(sde, problem: Problem | None = None, *, times=(0.0, 1.0)) -> VectorSDE:
    """The density model of `sde`: a `VectorSDE` as is, a `ScalarSDE` as its $d = 1$ case, or a
    flow with noise on `problem` (`VectorSDE.from_flow`, its noise compared at `times`: the
    routes pass their time window).

    **Arguments:**

    - `sde`: a `VectorSDE`, a `ScalarSDE`, or a flow with noise.
    - `problem`: the problem a flow acts on (`None` otherwise).
    - `times`: the times at which a flow's noise is compared (it must be constant additive,
      with a nonsingular $D$).

    **Returns:** a `VectorSDE`.

    **Raises:** `ValueError` for anything else, or a flow given without its problem."""
    if isinstance(sde, VectorSDE):
        return sde
    if isinstance(sde, ScalarSDE):
        return VectorSDE(_ScalarDrift(sde.drift_fn), sde.alpha)
    if isinstance(sde, AbstractFlow):
        if problem is None:
            raise ValueError(
                f"{type(sde).__name__} is a flow: pass the problem it acts on (problem=...)."
            )
        return VectorSDE.from_flow(sde, problem, times=times)
    raise ValueError(
        "sde must be a dynopt.densities.VectorSDE or ScalarSDE, or a flow with noise together "
        f"with problem=..., got {type(sde).__name__}."
    )


class LinearDrift(eqx.Module):
    r"""$p(x) = A x$ with $A$ a traced $(d, d)$ array leaf (SDEs that differ only in $A$ share
    compiled programs)."""

    A: Float[Array, "d d"]

    def __init__(self, A):
        # Finite real entries (inside jit too): a NaN drift would only show as NaN paths.
        a = jnp.asarray(interval("A", A), dtype=float)
        if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 1:
            raise ValueError(f"A must be a square (d, d) matrix, got shape {a.shape}.")
        self.A = a

    def __call__(self, x, t):
        del t
        return self.A @ x


def linear_vector_sde(A, alpha) -> VectorSDE:
    r"""The linear SDE $dx = A x\,dt + \sqrt\alpha\,dW$ in $\mathbb R^d$ (OU for a stable $A$), or
    $dx = Ax\,dt + B\,dW$ with $BB^\top = D$ for a matrix `alpha` $= D$.

    **Arguments:**

    - `A`: a square $(d, d)$ matrix of finite real numbers (a traced array leaf).
    - `alpha`: the variance rate $\alpha > 0$, a scalar; or the diffusion matrix $D$, $(d, d)$
      symmetric positive definite.

    **Returns:** a `VectorSDE` with drift `LinearDrift(A)`.

    **Raises:** `ValueError` for an `A` that is not a finite square matrix, or an `alpha` that
    is neither a scalar $> 0$ nor a symmetric positive definite matrix of $A$'s shape.
    """
    drift = LinearDrift(A)
    if np.ndim(alpha) == 2 and np.shape(alpha) != drift.A.shape:
        raise ValueError(
            f"alpha (the diffusion matrix D) must have A's shape {drift.A.shape}, got "
            f"{np.shape(alpha)}."
        )
    return VectorSDE(drift, alpha)


def linear_moments(
    A, t: ScalarLike, x0, *, alpha
) -> tuple[Float[Array, " d"], Float[Array, "d d"]]:
    r"""Mean and covariance of $x(t)$ for $dx = Ax\,dt + \sqrt\alpha\,dW$, $x(0)=x_0$ (for a
    matrix `alpha` $= D$: $dx = Ax\,dt + B\,dW$, $BB^\top = D$, and $\alpha I$ below reads $D$):
    $$\mu(t) = e^{At}x_0,\qquad \Sigma(t) = \alpha\int_0^t e^{As}e^{A^\top s}\,ds,$$
    the integral exactly by Van Loan's block exponential:
    $\exp\Big(t\begin{bmatrix}-A & \alpha I\\ 0 & A^\top\end{bmatrix}\Big)
    = \begin{bmatrix}\cdot & G\\ 0 & F\end{bmatrix}$, $\Sigma = F^\top G$.

    **Arguments:**

    - `A`: the drift matrix, $(d, d)$, finite.
    - `t`: the time $t > 0$.
    - `x0`: the start, shape $(d,)$.
    - `alpha`: the variance rate $\alpha > 0$, or the diffusion matrix $D$ ($(d, d)$,
      symmetric positive definite).

    **Returns:** `(mean, cov)`, shapes $(d,)$ and $(d, d)$ (the covariance symmetrized).

    **Raises:** `ValueError` for $\alpha \le 0$ (or a $D$ that is not symmetric positive
    definite of $A$'s shape), $t \le 0$, an $A$ that is not a square matrix of finite real
    numbers, or an `x0` that is not a point of shape $(d,)$."""
    # The checked values (under jit/vmap each carries its check: a negative alpha gave a
    # negative covariance).
    if np.ndim(alpha) == 2:
        alpha = check_diffusion_matrix("alpha", alpha)
    else:
        alpha = positive("alpha", alpha)
    t = positive("t", t)
    a = LinearDrift(A).A
    d = a.shape[0]
    if jnp.shape(x0) != (d,):
        raise ValueError(f"x0 must have shape (d,) = ({d},) like A, got {jnp.shape(x0)}.")
    if jnp.ndim(alpha) == 2 and jnp.shape(alpha) != (d, d):
        raise ValueError(f"alpha (the matrix D) must have A's shape {(d, d)}, got {alpha.shape}.")
    t = jnp.asarray(t, dtype=float)
    # Van Loan's block with D in place of alpha I (the Lyapunov integral of e^{As} D e^{A^T s}).
    noise = alpha if jnp.ndim(alpha) == 2 else jnp.asarray(alpha, float) * jnp.eye(d)
    block = jnp.block([[-a, noise], [jnp.zeros((d, d)), a.T]])
    E = jax.scipy.linalg.expm(t * block)
    F, G = E[d:, d:], E[:d, d:]
    cov = F.T @ G
    mean = F.T @ jnp.asarray(interval("x0", x0), dtype=float)  # F^T = e^{At}
    return mean, 0.5 * (cov + cov.T)


def gaussian_density(x: Float[Array, "... d"], mean, cov) -> Float[Array, "..."]:
    r"""$\mathcal N(x;\ \mu, \Sigma)$ for points `x` of shape $(\dots, d)$ (Cholesky solve).

    **Arguments:**

    - `x`: the points, shape $(\dots, d)$.
    - `mean`: $\mu$, shape $(d,)$.
    - `cov`: $\Sigma$, shape $(d, d)$, symmetric positive definite.

    **Returns:** the density at each point, shape `x.shape[:-1]`.

    **Raises:** `ValueError` for a `mean` that is not 1-D, a `cov` that is not $(d, d)$ or `x`
    not $(\dots, d)$ (a reshape error), and, given concretely, a `mean` or `cov` that is not
    finite or a `cov` that is not positive definite (its Cholesky factor was NaN, so was the
    density)."""
    if jnp.ndim(mean) != 1:
        raise ValueError(f"mean must be a 1-D array (d,), got shape {jnp.shape(mean)}.")
    d = jnp.shape(mean)[0]
    if jnp.shape(cov) != (d, d) or jnp.ndim(x) < 1 or jnp.shape(x)[-1] != d:
        raise ValueError(
            f"cov must have shape (d, d) and x (..., d) with d = {d} (mean's size), got "
            f"{jnp.shape(cov)} and {jnp.shape(x)}."
        )
    if not is_traced(mean):
        interval("mean", mean)
    if not is_traced(cov):
        interval("cov", cov)
        try:  # (the lower triangle, as jnp.linalg.cholesky reads it)
            np.linalg.cholesky(np.asarray(cov, np.float64))
        except np.linalg.LinAlgError:
            raise ValueError(
                f"cov must be symmetric positive definite, got {np.asarray(cov).tolist()}."
            ) from None
    return _gaussian_density(x, mean, cov)


@jax.jit
def _gaussian_density(x, mean, cov):
    chol = jnp.linalg.cholesky(cov)
    d = mean.shape[0]
    z = jax.scipy.linalg.solve_triangular(chol, (x.reshape(-1, d) - mean[None]).T, lower=True)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    logp = -0.5 * jnp.sum(z * z, axis=0) - 0.5 * (d * jnp.log(2 * jnp.pi) + logdet)
    return jnp.exp(logp).reshape(x.shape[:-1])


def linear_density_nd(
    x: Float[Array, "... d"], t: ScalarLike, x0, *, A, alpha
) -> Float[Array, "..."]:
    r"""Exact transition density of $dx = Ax\,dt + \sqrt\alpha\,dW$ (or $B\,dW$, $BB^\top = D$):

    $$P(x, t\mid x_0) = \mathcal N(x;\ \mu(t), \Sigma(t)),\qquad \mu(t) = e^{At}x_0,\quad
    \Sigma(t) = \int_0^t e^{As}De^{A^\top s}\,ds\quad(D = \alpha I),$$

    the moments from `linear_moments`.

    **Arguments:**

    - `x`: the points, shape $(\dots, d)$.
    - `t`: the time $t > 0$.
    - `x0`: the start, shape $(d,)$.
    - `A`: the drift matrix, $(d, d)$, finite.
    - `alpha`: the variance rate $\alpha > 0$, or the diffusion matrix $D$ ($(d, d)$,
      symmetric positive definite).

    **Returns:** the density at each point, shape `x.shape[:-1]`.

    **Raises:** `ValueError` as `linear_moments`, for `x` not of shape $(\dots, d)$, or for a
    covariance that is not positive definite (as `gaussian_density`).
    """
    mean, cov = linear_moments(A, t, x0, alpha=alpha)
    x = jnp.asarray(x, dtype=float)
    if x.ndim < 1 or x.shape[-1] != mean.shape[0]:
        raise ValueError(
            f"x must have shape (..., d) with d = {mean.shape[0]} (A's size), got {x.shape}."
        )
    return gaussian_density(x, mean, cov)


# ----------------------------------------------------------------------------- tensor grids


def check_axes(name: str, axes) -> tuple[np.ndarray, ...]:
    """`ValueError` unless `axes` is a non-empty sequence of uniform 1-D grids (>= 3 points)."""
    if isinstance(axes, np.ndarray | jax.Array) or not hasattr(axes, "__len__") or not len(axes):
        raise ValueError(
            f"{name} must be a tuple of 1-D uniform grids, one per dimension, got {type(axes)}."
        )
    return tuple(check_uniform_grid(f"{name}[{i}]", g) for i, g in enumerate(axes))


def mesh_points(axes) -> Float[Array, "m1 ... md d"]:
    """The tensor grid's points, shape $(m_1, \\dots, m_d, d)$ (`indexing="ij"`).

    **Raises:** `ValueError` unless `axes` is a non-empty sequence of non-empty 1-D arrays of
    finite reals, one per dimension (a NaN coordinate made NaN points; a bare 1-D array is
    `(x,)`). Traced axes are checked for their shapes only."""
    if isinstance(axes, str | bytes) or not hasattr(axes, "__len__") or len(axes) == 0:
        raise ValueError(
            f"axes must be a non-empty sequence of 1-D arrays, one per dimension, got {axes!r:.60}."
        )
    for i, a in enumerate(axes):
        if not is_traced(a):
            interval(f"axes[{i}]", a)
        if jnp.ndim(a) != 1:
            raise ValueError(
                f"axes[{i}] must be a 1-D array of coordinates, got shape {jnp.shape(a)} (a 1-D "
                "grid x is axes=(x,))."
            )
    return jnp.stack(jnp.meshgrid(*(jnp.asarray(a) for a in axes), indexing="ij"), axis=-1)


def cell_volume(axes) -> float:
    return float(np.prod([a[1] - a[0] for a in axes]))


def padded_axes(axes, pad_to) -> tuple[tuple[np.ndarray, ...], tuple[int, ...]]:
    """Extend each axis to `pad_to[i]` points with the same spacing (inactive padding cells)."""
    shape = tuple(a.size for a in axes)
    size = shape if pad_to is None else tuple(int(s) for s in np.broadcast_to(pad_to, len(axes)))
    if any(s < m for s, m in zip(size, shape)):
        raise ValueError(f"pad_to must be >= the grid's shape {shape} on every axis, got {pad_to}.")
    out = []
    for a, s in zip(axes, size):
        g = a[0] + (a[1] - a[0]) * np.arange(s, dtype=np.float64)
        g[: a.size] = a
        out.append(g)
    return tuple(out), size


def active_cells(shape: tuple[int, ...], nums) -> Bool[Array, "..."]:
    """The active cells of a padded array of `shape`: those with index < `nums[i]` along every
    axis i (`nums` may be traced: one program serves several grids)."""
    d = len(shape)
    active = jnp.ones(shape, bool)
    for i in range(d):
        keep = jnp.arange(shape[i]) < nums[i]
        active = active & keep.reshape([-1 if j == i else 1 for j in range(d)])
    return active


def check_dimension(sde: VectorSDE, d: int) -> None:
    """`ValueError` unless `sde` is a `VectorSDE` whose drift maps shape (d,) to (d,)."""
    if not isinstance(sde, VectorSDE):
        raise ValueError(f"sde must be a dynopt.densities.VectorSDE, got {type(sde).__name__}.")
    sde.check_dimension(d)


def check_model_on_grid(
    sde, problem: Problem | None, axes, t0: ScalarLike, t1: ScalarLike
) -> tuple[VectorSDE, tuple[np.ndarray, ...]]:
    """A grid route's model, grid and time window: `sde` as a `VectorSDE` (`as_vector_sde`, a
    flow's noise compared over $[t_0, t_1]$) and `axes` (`check_axes`), of the same dimension;
    `ValueError` unless $t_0 < t_1$, both finite."""
    interval("t0", t0)
    # Finite real numbers before float(): named, not "could not convert"; an infinite horizon
    # read as a step budget exhausted.
    interval("t1", t1)
    if not float(t1) > float(t0):
        raise ValueError(f"need t1 > t0, got t0={t0}, t1={t1}.")
    sde = as_vector_sde(sde, problem, times=np.linspace(float(t0), float(t1), 5))
    axes = check_axes("axes", axes)
    check_dimension(sde, len(axes))
    return sde, axes


def check_finite_drift(sde: VectorSDE, points: Float[Array, "... d"], ts, who: str) -> None:
    """`ValueError` naming where the drift is not finite among `points` at the times `ts`. A
    diagnosis for a route whose result came out non-finite or whose solve failed (a NaN drift
    otherwise reads as lost mass or a step budget exhausted); eager, so it costs nothing when
    the route succeeds."""
    flat = jnp.asarray(points).reshape(-1, jnp.shape(points)[-1])
    for t in ts:
        values = jax.vmap(sde.p, in_axes=(0, None))(flat, jnp.asarray(t, float))
        bad = np.asarray(~jnp.all(jnp.isfinite(values), axis=-1))
        if bad.any():
            x = np.asarray(flat[int(np.argmax(bad))])
            raise ValueError(
                f"{who}: the drift p(x, t) is not finite at {int(bad.sum())} of the {bad.size} "
                f"points where the route evaluates it at t = {float(t):g} (e.g. x = "
                f"{x.tolist()}). Restrict the grid to the drift's domain, or fix the drift there."
            )


def check_point(name: str, x, d: int) -> Float[Array, " d"]:
    """`ValueError` unless `x` is a point of shape (d,) with finite coordinates."""
    x = as_point_array(name, x)
    if x.shape != (d,):
        raise ValueError(f"{name} must have shape ({d},) (one coordinate per axis), got {x.shape}.")
    if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{name} must be finite, got {np.asarray(x).tolist()}.")
    return x


@eqx.filter_jit
def evaluate_on(fn: Callable[[Array], Array], pts: Float[Array, "... d"]) -> Float[Array, "..."]:
    """`fn` ($x:(d,) \\to$ scalar) at every point of `pts` (one compiled program per shape)."""
    d = pts.shape[-1]
    return jax.vmap(fn)(pts.reshape(-1, d)).reshape(pts.shape[:-1])


class TensorDensity(eqx.Module):
    r"""A transition density $P(x, t_1 \mid x_0)$ on a tensor grid, from one of the $d$-dim
    routes (the $d$-dim `GridDensity`).

    **Fields:**

    - `axes`: one uniform 1-D grid per dimension; `density`: shape $(m_1, \dots, m_d)$.
    - `t`: the time $t_1$.
    - `mass`: $\int P\,dx$ (Riemann sum with the cell volume $\prod_i h_i$).
    - `lost_mass`: probability that left the grid (absorbed at its faces, or outside the
      histogram's bins): a grid that does not cover the mass shows up here.
    - `mass_defect`: |mass + lost_mass − initial mass| (the route's conservation check).
    - `method`: the route's name.

    Every field but `method` is stored as JAX arrays (`t` as a float), whatever a route computed
    it as (NumPy axes, a Python $t_1$, sums on the host).
    """

    axes: tuple[Float[Array, " m"], ...] = eqx.field(converter=lambda a: tuple(map(jnp.asarray, a)))
    density: Float[Array, "..."] = eqx.field(converter=jnp.asarray)
    t: Float[Array, ""] = eqx.field(converter=float_array)
    mass: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    lost_mass: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    mass_defect: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    method: str = eqx.field(static=True)

    @property
    def points(self) -> Float[Array, "... d"]:
        return mesh_points(self.axes)

    def exact_on_grid(self, exact: Callable[[Array], Array]) -> Float[Array, "..."]:
        """`exact` (a callable $x:(d,) \\to$ density) at every grid point."""
        return evaluate_on(exact, self.points)

    def error(self, exact: Callable[[Array], Array]) -> Float[Array, ""]:
        """Max-norm error $\\max_i |P_i - P_{exact}(x_i)|$ (`exact`: $x:(d,)\\to$ density)."""
        return jnp.max(jnp.abs(self.density - self.exact_on_grid(exact)))


# ------------------------------------------------------------------------ stationary density


@eqx.filter_jit
def _potential(sde: VectorSDE, flat: Float[Array, "M d"]) -> tuple[Array, Array, Array]:
    r"""$\Phi$, the line integral of $q = p(\cdot, 0)$ ($q = D^{-1}p$ for a matrix $D$) from the
    first of the points `flat` to each; and, for $d > 1$, $\max|\nabla q - \nabla q^\top|$ and
    $\max|\nabla q|$ over them (a 1-D drift is always a gradient: zeros)."""
    if sde.isotropic:
        field, grad = (lambda y: sde.p(y, 0.0)), (lambda x: sde.grad_p(x, 0.0))
    else:
        field = lambda y: jnp.linalg.solve(sde.alpha, sde.p(y, 0.0))
        grad = lambda x: jnp.linalg.solve(sde.alpha, sde.grad_p(x, 0.0))
    phi = jax.vmap(lambda x: line_integral(field, x, flat[0]))(flat)
    if flat.shape[-1] == 1:
        return phi, jnp.zeros(()), jnp.zeros(())
    jac = jax.vmap(grad)(flat)
    return phi, jnp.max(jnp.abs(jac - jnp.swapaxes(jac, 1, 2))), jnp.max(jnp.abs(jac))


def _stationary_density(sde: VectorSDE, axes, curl_tol: float, edge_tol, name: str):
    # `sde`, `axes` and the tolerances checked by the caller.
    pts = mesh_points(axes)
    phi, asym, scale = _potential(sde, pts.reshape(-1, len(axes)))
    if len(axes) > 1:  # (every 1-D drift is a gradient)
        not_gradient = asym > curl_tol * jnp.maximum(1.0, scale)
        why = (
            "the stationary law exp(-2U/alpha) needs p = -∇U"
            if sde.isotropic
            else "the stationary law exp(-2U) needs D^-1 p = -∇U (p = -D ∇U, detailed balance)"
        )
        if isinstance(not_gradient, jax.core.Tracer):  # under jit (a traced drift)
            phi = eqx.error_if(phi, not_gradient, f"the drift is not a gradient field: {why}.")
        elif bool(not_gradient):
            what = "the drift is not" if sde.isotropic else "D^-1 p is not"
            raise ValueError(
                f"{what} a gradient field (max |∇q - ∇qᵀ| = {float(asym):.3g} on the grid, q = "
                f"{'p' if sde.isotropic else 'D^-1 p'}): {why}."
            )
    # Normalised eagerly, as the 1-D route always was: in one program with the quadrature, XLA
    # turns the divisions into products with reciprocals (1e-14 relative on the density).
    vol = cell_volume(axes)
    logd = 2.0 * phi / sde.alpha if sde.isotropic else 2.0 * phi
    dens = jnp.exp(logd - jnp.max(logd))
    dens = (dens / (jnp.sum(dens) * vol)).reshape(pts.shape[:-1])
    return check_edge_mass(dens, vol, edge_tol, name)


def stationary_density_nd(
    sde,
    axes,
    *,
    curl_tol: float = 1e-8,
    edge_tol: float | None = 1e-3,
    problem: Problem | None = None,
) -> Float[Array, "..."]:
    r"""The stationary solution of Fokker–Planck for a time-independent gradient drift
    $p = -\nabla U$: $P_\infty \propto e^{-2U/\alpha}$, normalised on the tensor grid `axes`
    (Riemann sum), with $U$ from the line integral of $p$ from the grid's first corner
    (`line_integral`: exact for polynomial drifts).

    With a diffusion matrix $D$ the zero-flux condition $pP = \tfrac12D\nabla P$ needs
    $D^{-1}p = -\nabla U$ (detailed balance; e.g. $p = -D\nabla V/2$ gives $U = V/2$, or $p = -Ax$
    with $D^{-1}A$ symmetric), and then $P_\infty \propto e^{-2U}$, $U$ the line integral of
    $D^{-1}p$ ($D = \alpha I$: the isotropic law). Otherwise a stationary law may exist, but
    not in closed form: refused.

    **Arguments:**

    - `sde`: a `VectorSDE`, a `ScalarSDE` ($d = 1$), or a flow with constant additive noise on
      `problem`.
    - `axes`: the tensor grid, a tuple of $d$ uniform 1-D grids.
    - `curl_tol`: the relative asymmetry of $\nabla p$ ($\nabla(D^{-1}p)$) accepted as a
      gradient field, $\ge 0$.
    - `edge_tol`: the largest mass fraction accepted on the grid's boundary (`None`: no check).
    - `problem`: the problem a flow `sde` acts on (`None` otherwise).

    **Returns:** the density on the grid, shape $(m_1, \dots, m_d)$.

    **Raises:** `ValueError` for bad axes, or when $p$ ($D^{-1}p$) is not a gradient field:
    $\max|\nabla p - \nabla p^\top| > $ `curl_tol` $\cdot \max(1, \max|\nabla p|)$ on the grid
    (then no such closed form exists; every 1-D drift is one), or when more than `edge_tol` of
    the mass lies on the grid's boundary points (a grid that cuts the law off, or a drift that
    does not confine: no stationary law).
    """
    curl_tol = float(nonnegative("curl_tol", curl_tol))
    edge_tol = check_tolerance("edge_tol", edge_tol)
    sde = as_vector_sde(sde, problem)
    axes = check_axes("axes", axes)
    check_dimension(sde, len(axes))
    return _stationary_density(sde, axes, curl_tol, edge_tol, "stationary_density_nd")


def stationary_density(
    sde: ScalarSDE,
    grid: Float[Array, " m"],
    *,
    edge_tol: float | None = 1e-3,
    problem: Problem | None = None,
) -> Float[Array, " m"]:
    r"""The stationary solution of Fokker–Planck for a time-independent drift,
    $$P_\infty(x) \propto \exp\Big(\frac{2}{\alpha}\int^x p\,dy\Big),$$
    normalised on the uniform `grid` (Riemann sum): `stationary_density_nd` on `(grid,)`, with
    $\int^x p$ by Gauss–Legendre quadrature (exact for polynomial drifts).

    **Arguments:**

    - `sde`: a `ScalarSDE`, a 1-D `VectorSDE`, or a flow with noise on `problem`.
    - `grid`: a uniform 1-D grid of $m$ points.
    - `edge_tol`: the largest mass fraction accepted on the two end points (`None`: no check,
      a truncated law accepted; default $10^{-3}$).
    - `problem`: the problem a flow `sde` acts on (`None` otherwise).

    **Returns:** the density on `grid`, shape $(m,)$.

    **Raises:** `ValueError` for a bad grid, or when more than `edge_tol` of the mass lies on
    the grid's two end points: the law exists on $\mathbb{R}$ only for a confining drift, and
    the normalisation on a grid hides a drift that is not (it would put the mass at the ends).
    """
    edge_tol = check_tolerance("edge_tol", edge_tol)
    axes = (check_uniform_grid("grid", grid),)
    sde = as_vector_sde(sde, problem)
    check_dimension(sde, 1)
    return _stationary_density(sde, axes, 0.0, edge_tol, "stationary_density")


def _short_time(sde: VectorSDE, x0, t, axes) -> Float[Array, "..."]:
    # N(x; x0 + p(x0, 0) t, alpha t I) on the grid `axes`. Eager, as the 1-D route always was
    # (one program would divide by reciprocals: 1e-16 relative, and every later route's result
    # moved).
    pts = mesh_points(axes)
    r = pts - (x0 + sde.p(x0, 0.0) * t).reshape((1,) * len(axes) + x0.shape)
    if not sde.isotropic:  # N(x; x0 + p t, D t)
        return gaussian_density(r, jnp.zeros(x0.shape), sde.alpha * t)
    var = sde.alpha * t
    return jnp.exp(-0.5 * jnp.sum(r**2, axis=-1) / var) / jnp.sqrt(2 * jnp.pi * var) ** x0.size


def short_time_density_nd(
    sde, x0, t: ScalarLike, axes, *, problem: Problem | None = None
) -> Float[Array, "..."]:
    r"""The one-slice Itô propagator on a tensor grid, a start for `fokker_planck_nd` at a small
    $t_0 = t$ (error $O(t)$):

    $$P(x, t\mid x_0) \approx \mathcal N(x;\ x_0 + p(x_0,0)\,t,\ \alpha t I)\quad
    (D\,t\text{ for a diffusion matrix } D).$$

    **Arguments:**

    - `sde`: a `VectorSDE` (isotropic or with a matrix $D$), a `ScalarSDE` ($d = 1$), or a flow
      with constant additive noise on `problem` (`VectorSDE.from_flow`: the state is the raveled
      flow state).
    - `x0`: the start, a finite point of shape $(d,)$.
    - `t`: the time $t > 0$.
    - `axes`: the grid, a tuple of $d$ uniform 1-D grids.
    - `problem`: the problem a flow `sde` acts on (`None` otherwise).

    **Returns:** the density on the grid, shape $(m_1, \dots, m_d)$.

    **Raises:** `ValueError` for $t \le 0$, a bad grid, an `sde` of another kind or dimension
    (or a flow without its problem), or a bad `x0`.
    """
    t = positive("t", t)
    sde, axes = check_model_on_grid(sde, problem, axes, 0.0, t)
    x0 = check_point("x0", x0, len(axes))
    return _short_time(sde, x0, t, axes)


def short_time_density(
    sde: ScalarSDE,
    x0: ScalarLike,
    t: ScalarLike,
    grid: Float[Array, " m"],
    *,
    problem: Problem | None = None,
) -> Float[Array, " m"]:
    r"""The 1-D one-slice Itô propagator on `grid`, a start for `fokker_planck` at a small $t_0 = t$
    (error $O(t)$; `short_time_density_nd` on `(grid,)`):

    $$P(x, t\mid x_0) \approx \mathcal N(x;\ x_0 + p(x_0,0)\,t,\ \alpha t).$$

    **Arguments:**

    - `sde`: a `ScalarSDE`, a 1-D `VectorSDE`, or a flow with noise on `problem`.
    - `x0`: the start $x_0$, one finite real number.
    - `t`: the time $t > 0$.
    - `grid`: a uniform 1-D grid of $m$ points.
    - `problem`: the problem a flow `sde` acts on (`None` otherwise).

    **Returns:** the density on `grid`, shape $(m,)$.

    **Raises:** `ValueError` for $t \le 0$, a bad `x0` or `grid`, or an `sde` of another kind or
    dimension (or a flow without its problem).
    """
    t = positive("t", t)  # the checked value (under jit it carries its check)
    x0 = check_scalar_point("x0", x0)
    axes = (check_uniform_grid("grid", grid),)
    sde = as_vector_sde(sde, problem)
    check_dimension(sde, 1)
    return _short_time(sde, x0, t, axes)
