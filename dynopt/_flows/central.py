r"""Central flows (Cohen, Damian, Talwalkar, Kolter, Lee, ICLR 2025): ODEs for the
*time-averaged* trajectory of gradient descent at the edge of stability.

GD with step $\eta$ on a network sharpens until $\eta\lambda_{\max}(H) = 2$ and then oscillates
along the top eigenvectors while its average moves on. The central flow (time $t = k\eta$ after
$k$ steps, as `GradientFlow`) is

$$\dot w = -\Big[\nabla L(w) + \tfrac12\nabla_w\langle H(w), \Sigma\rangle\Big],\qquad
  \Sigma = U X U^\top,\ X \succeq 0,$$

with $U$ the top-$k$ eigenvectors and $X$ the solution of a complementarity problem that keeps
every eigenvalue of $\eta H$ at or below 2. Here it is solved in JAX (jittable, vmappable over
learning rates): with $G_{ij} = \nabla_w(u_i^\top H u_j) = D^3L[u_i, u_j, \cdot]$ (nested
`jax.jvp`), $g_{ij} = \langle G_{ij}, \nabla L\rangle$, $\mathcal M(X)_{ij} = \langle G_{ij},
\sum_{ab} X_{ab}G_{ab}\rangle$ and the gaps $B = 2/\eta - \Lambda$,

$$X \succeq 0,\quad K(X) = g + \tfrac12\mathcal M(X) + rB \succeq 0,\quad
  \langle X, K(X)\rangle = 0,$$

i.e. $\dot B = g + \tfrac12\mathcal M(X) \succeq -rB$: an eigenvalue at the threshold ($B = 0$)
cannot cross it (the central flow's condition), and one below it may approach no faster than
rate $r$ (a Baumgarte stabilization: it keeps the flow on $\eta\lambda \le 2$ despite solver
errors and turns the constraint on smoothly; $r \to \infty$ is the unstabilized flow). This is
the convex program $\min_{X\succeq0}\langle g + rB, X\rangle + \frac14\langle X, \mathcal
M(X)\rangle$, solved by accelerated projected gradient (FISTA with restarts; projection onto
the PSD cone by a $k\times k$ `eigh`). One direction: $\sigma^2 = \max(0,
-2(g + rB)/\|\nabla S\|^2)$, i.e. $2\langle -\nabla L, \nabla S\rangle/\|\nabla S\|^2$ at the
threshold.

As a matrix condition at finite $r$ it also couples a direction at the threshold to tracked ones
far below it: $K_{11} = 0$ and $K \succeq 0$ force $K_{12} = 0$, so $X$ tilts towards direction 2
by $O(K_{12}/rB_2)$, an artifact of the look-ahead $1/r$ (the central flow itself, $r \to
\infty$, puts $\Sigma$ on the eigenvalues at the threshold only): on a 13-parameter MLP with one
direction at the edge, $k = 5$ moved the path $10^{-3}$ away from the unstabilized flow that $k =
1$ follows to $3\cdot10^{-5}$ (and at a point 2% past the edge, $\sigma^2$ by 1.8%). So each
direction's rate grows with its relative gap $\delta_i = B_i\eta/2$: $\dot B_i \ge -rB_i(1 +
F_i)$, $F_i = (\max(\delta_i, 0)/\delta_0)^4$, $\delta_0 =$ `DECOUPLING` (the matrix condition
$\dot A + \phi(A) \succeq 0$, $\phi(b) = rb(1 + F(b)) \ge rb$, still keeps $A = 2/\eta -
U^\top HU \succeq 0$); in the congruent variables $X = D\tilde XD$, $D = \mathrm{diag}(1 +
F_i)^{-1/2}$, that is the problem above for the shrunk vectors $d_iu_i$ with the gaps' term $rB$
unchanged. Directions within a few percent of the edge keep their full coupling (ties at the
threshold are the flow's own), those 10% below it enter $17\times$ weaker, 30% below
$1300\times$; $k = 5$ then gives $k = 1$'s path to $5\cdot10^{-8}$, and the anchor example's
prediction moved by at most $5\cdot10^{-5}$ of itself. One direction, in full: $\sigma^2 =
\max(0, -2(g + rB(1 + F))/\|\nabla S\|^2)$.

The field is continuous while the $k$ tracked directions include every one at the edge. Where
one more reaches it, $\lambda_{k+1}$ ties $\lambda_k$ there and $\Sigma$ jumps as the two trade
places in the top $k$: a sliding mode (`tied`), which `central_solve` stops and names.
"""

import numbers
import warnings
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.sparse.linalg import lobpcg_standard
from jax.flatten_util import ravel_pytree

from .._batching import map_batch
from .._custom_types import Array, Float, Int, Params, Scalar, ScalarLike
from .._discretization import Discretization
from .._maps.gradient import GradientDescent
from .._problem import Problem
from .._sharpness import (
    _dense_top,
    _lanczos_top,
    block_operator,
    check_k,
    Eigenpairs,
    hvp_column,
    lanczos_broke,
    lane_cond,
    lobpcg_fits,
    METHODS,
    random_start,
    top_eigenpairs,
)
from .._validation import (
    choice,
    hyperparameter,
    instance,
    is_traced,
    positive_int,
    solver_options,
)
from .base import AbstractFlow, check_own_step


# How far above 2/η a tracked eigenvalue may rise before `central_solve` says the flow lost its
# hold: 100× what the tests measure it held to (1e-5 at rtol 1e-6), below the smallest loss of
# hold measured (2e-3, a third direction reaching the edge with k = 2).
SLIP = 1e-3

# The relative gap δ₀ beyond which a tracked direction's coupling to the others fades (module
# docstring): F = (δ/δ₀)⁴ is 0.0016 at δ = 1%, 1 at 5%, 16 at 10%. At the switch-on of a direction
# sharpening by 1% of the threshold per GD step F is 0.002 (the same onset as without), at 5% per
# step 0.3.
DECOUPLING = 0.05

# The complementarity solve's tolerance is at least this many machine epsilons of the parameters'
# dtype (float64: 1.4e-14, below the default 1e-10; float32: 7.6e-6).
QP_TOL_FLOOR = 64


class Complementarity(NamedTuple):
    """A solved complementarity problem: `X` $\\succeq 0$, `K` $= K(X)$, the relative
    natural residual and the iteration count."""

    X: Float[Array, "k k"]
    K: Float[Array, "k k"]
    residual: Scalar
    iterations: Array


def _psd_part(X):
    w, V = jnp.linalg.eigh(0.5 * (X + X.T))
    return (V * jnp.maximum(w, 0.0)[None, :]) @ V.T


def solve_complementarity(
    c: Float[Array, "k k"],
    gram: Float[Array, "k k k k"],
    *,
    max_iters: int = 2000,
    tol: float = 1e-10,
) -> Complementarity:
    r"""Solve $X \succeq 0$, $K = c + \frac12\mathcal M(X) \succeq 0$, $\langle X, K\rangle = 0$
    with $\mathcal M(X)_{ij} = \sum_{ab}$ `gram[i, j, a, b]` $X_{ab}$ ($\mathcal M$ symmetric
    positive semi-definite): the minimizer of $\langle c, X\rangle + \frac14\langle X, \mathcal
    M(X)\rangle$ over the PSD cone, by FISTA with gradient restarts (a `lax.while_loop`;
    jittable and vmappable).

    Converged when the natural residual $\|X - \Pi(X - \nabla f/\ell)\|\,\ell$ is at most
    `tol` $\cdot(\|c\| + \ell\|X\|)$ ($\ell$ the Lipschitz constant $\frac12\|\mathcal M\|$).

    **Returns:** `Complementarity` (check `residual <= tol`; `CentralFlow` raises otherwise).

    **Raises:** `ValueError` for a `c` that is not square, a `gram` that is not $(k, k, k, k)$,
    a `max_iters` that is not a positive integer, or a `tol` that is not positive and finite.
    """
    positive_int("max_iters", max_iters)
    if not (isinstance(tol, numbers.Real) and not isinstance(tol, bool) and 0 < tol < np.inf):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}.")
    if c.ndim != 2 or c.shape[0] != c.shape[1] or gram.shape != c.shape * 2:
        raise ValueError(
            "c must be a square (k, k) matrix and gram a (k, k, k, k) tensor, got shapes "
            f"{c.shape} and {gram.shape}."
        )
    k = c.shape[0]
    c = 0.5 * (c + c.T)
    op = jnp.reshape(gram, (k * k, k * k))
    lip = 0.5 * jnp.linalg.eigvalsh(0.5 * (op + op.T))[-1]
    lip = jnp.maximum(lip, jnp.finfo(c.dtype).tiny * 1e10 + 1e-300)

    def grad(X):
        return c + 0.5 * jnp.einsum("ijab,ab->ij", gram, X)

    def residual(X):
        step = X - _psd_part(X - grad(X) / lip)
        scale = jnp.linalg.norm(c) + lip * jnp.linalg.norm(X) + jnp.finfo(c.dtype).tiny
        return lip * jnp.linalg.norm(step) / scale

    def body(carry):
        X, Y, t, i, _ = carry
        Xn = _psd_part(Y - grad(Y) / lip)
        tn = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        restart = jnp.vdot(Y - Xn, Xn - X) > 0  # momentum points uphill: drop it
        Yn = jnp.where(restart, Xn, Xn + ((t - 1.0) / tn) * (Xn - X))
        tn = jnp.where(restart, 1.0, tn)
        return Xn, Yn, tn, i + 1, residual(Xn)

    def cond(carry):
        *_, i, res = carry
        return (res > tol) & (i < max_iters)

    X0 = jnp.zeros_like(c)
    init = (X0, X0, jnp.ones((), c.dtype), jnp.asarray(0), residual(X0))
    X, _, _, iterations, res = jax.lax.while_loop(cond, body, init)
    return Complementarity(X, grad(X), res, iterations)


def third_derivatives(
    problem: Problem, params: Params, vectors: Float[Array, "n k"]
) -> Float[Array, "k k n"]:
    r"""$G_{ij} = D^3L(w)[u_i, u_j, \cdot] = \nabla_w(u_i^\top H(w) u_j)$ for the columns
    $u_i$ of `vectors` (raveled): forward-over-forward over the gradient, one `jax.jvp` pair per
    $i \le j$ (the $k(k+1)/2$ distinct pairs, `map_batch`), mirrored to the full
    $(k, k, n)$."""
    flat, unravel = ravel_pytree(params)
    k = vectors.shape[1]

    def flat_grad(x):
        return ravel_pytree(problem.grad(unravel(x)))[0]

    def d3(u, v):
        def hvp(x):
            return jax.jvp(flat_grad, (x,), (v,))[1]

        return jax.jvp(hvp, (flat,), (u,))[1]

    rows, cols = np.triu_indices(k)
    pairs = map_batch(d3, vectors[:, rows].T, vectors[:, cols].T)
    index = np.zeros((k, k), np.int32)
    index[rows, cols] = np.arange(len(rows))
    index[cols, rows] = np.arange(len(rows))
    return pairs[index]


def hessian_derivative(
    problem: Problem, params: Params, direction: Float[Array, " n"], vectors: Float[Array, "n k"]
) -> Float[Array, "n k"]:
    r"""$D^3L(w)[d, u_j, \cdot] = \frac{d}{d\epsilon}H(w + \epsilon d)\,u_j$ for the columns
    $u_j$ of `vectors` and one `direction` $d$ (raveled): $k$ forward-over-forward products
    (`map_batch`). With $d = \nabla L$, $U^\top$ of it is $g_{ij} = \langle G_{ij}, \nabla
    L\rangle$, the drift of $U^\top H U$ under gradient flow, at $k$ products instead of the
    $k(k+1)/2$ of `third_derivatives`."""
    flat, unravel = ravel_pytree(params)

    def flat_grad(x):
        return ravel_pytree(problem.grad(unravel(x)))[0]

    def d3(u):
        def hvp(x):
            return jax.jvp(flat_grad, (x,), (u,))[1]

        return jax.jvp(hvp, (flat,), (direction,))[1]

    return map_batch(d3, vectors.T).T


def start_block(basis: Array | None, k: int, flat: Array) -> Array:
    """The eigen-solver's starting block: `basis` (checked to be `(num_params, k)`) or a fixed
    random block."""
    if basis is None:
        return random_start(jax.random.key(0), flat.shape[0], k, flat.dtype)
    if basis.shape != (flat.shape[0], k):
        raise ValueError(
            f"basis must have shape (num_params, k) = ({flat.shape[0]}, {k}), got {basis.shape}."
        )
    return basis.astype(flat.dtype)


def warm_eigenpairs(
    flow,
    problem: Problem,
    params: Params,
    flat: Array,
    *,
    max_iters: int | None = None,
    diag=None,
) -> Eigenpairs:
    """The top `flow.k` eigenpairs at `params` (raveled: `flat`) from the flow's warm start
    `flow.basis`: by `flow.eig_method` with `flow.eig_iters` (a Lanczos depth above the
    parameter count is cut to it), or, given `max_iters`, by LOBPCG to `flow.eig_tol` (the
    refresh of the warm start); `diag` as in `top_eigenpairs`."""
    n = flat.shape[0]
    check_k(flow.k, n)
    start = start_block(flow.basis, flow.k, flat)
    if max_iters is not None or flow.eig_method == "lobpcg":
        iters = flow.eig_iters if max_iters is None else max_iters
        return top_eigenpairs(
            problem.grad, params, start, diag=diag, max_iters=iters, tol=flow.eig_tol
        )
    depth = max(min(flow.eig_iters, n), flow.k)
    return top_eigenpairs(
        problem.grad, params, start, diag=diag, max_iters=depth, method=flow.eig_method
    )


def check_sizes(flow, counts: tuple[str, ...] = ()) -> None:
    """`ValueError` unless a central flow's `k`, `eig_iters`, `qp_iters` and the fields named
    in `counts` are positive integers, `eig_tol` and `qp_tol` positive finite numbers (a
    `qp_tol` of 0 can never be met: every oscillating evaluation would raise), and
    `eig_method` is one of `dynopt.sharpness.top_eigenpairs`'s methods."""
    for name in ("k", "eig_iters", "qp_iters", *counts):
        positive_int(name, getattr(flow, name))
    for name in ("eig_tol", "qp_tol"):
        value = getattr(flow, name)
        if not (
            isinstance(value, numbers.Real)
            and not isinstance(value, bool)
            and 0 < float(value) < float("inf")
        ):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    choice("eig_method", flow.eig_method, METHODS)


def decoupling_weights(relative_gap: Float[Array, " k"]) -> Float[Array, " k"]:
    r"""$d_i = (1 + F_i)^{-1/2}$, $F_i = (\max(\delta_i, 0)/\delta_0)^4$ for the relative gaps
    $\delta_i$ (module docstring; $\delta_0$ = `DECOUPLING`): 1 at and above the threshold."""
    ratio = jnp.maximum(relative_gap, 0.0) / DECOUPLING
    return jax.lax.rsqrt(1.0 + ratio**4)


def oscillation(
    problem: Problem,
    params: Params,
    U: Array,
    drift_c: Array,
    gap_term: Array,
    relative_gap: Array,
    gram_of,
    *,
    qp_iters: int,
    qp_tol: float,
    who: str,
) -> tuple[Array, Scalar, Array]:
    r"""`(X, residual, drift)`: the complementarity problem $K(X) = c + \frac12\mathcal M(X)$,
    $c$ = `drift_c` + diag(`gap_term`) (the gaps' rate of change under the stable flow and
    their Baumgarte term), solved in the decoupled variables of the module docstring: with
    $d$ = `decoupling_weights(relative_gap)`, $\tilde c = D$`drift_c`$D$ + diag(`gap_term`) and
    the Gram tensor `gram_of(T, d)` of the third derivatives $T_{ab} = \nabla(d_au_a^\top H
    u_bd_b)$ (`d` for the terms of $\mathcal M$ that are not Gram products); $X = D\tilde XD$,
    and the drift $\frac12\nabla\langle H, UXU^\top\rangle = \frac12\sum\tilde X_{ab}T_{ab}$.

    $X = 0$ solves the problem exactly iff $\tilde c \succeq 0$ (then $K(0) \succeq 0$): every
    gap closes slower than its rate. Only otherwise are the $k(k+1)/2$ third derivatives and
    the complementarity solve needed (`lane_cond`: skipped below the edge, also under `vmap`
    as long as no lane is at it). `qp_tol` is floored at `QP_TOL_FLOOR` machine epsilons of
    the parameters' dtype. Errors (`eqx.error_if`) naming `who`: a third derivative
    that is not finite (read off $c$ and $T$: a non-finite $c$ would otherwise look stable and
    give gradient flow), and a solve that does not converge (a NaN residual included)."""
    k = drift_c.shape[0]
    d = decoupling_weights(relative_gap)
    c = d[:, None] * (0.5 * (drift_c + drift_c.T)) * d[None, :] + jnp.diag(gap_term)
    # A tolerance below the arithmetic's reach cannot be met (float32 parameters with the default
    # 1e-10: every oscillating evaluation raised, advising more iterations).
    qp_tol = max(float(qp_tol), QP_TOL_FLOOR * float(jnp.finfo(c.dtype).eps))

    def oscillating(params, U, c, d):
        T = third_derivatives(problem, params, U * d[None, :])
        sol = solve_complementarity(c, gram_of(T, d), max_iters=qp_iters, tol=qp_tol)
        drift = 0.5 * jnp.einsum("ab,abn->n", sol.X, T)
        finite = jnp.all(jnp.isfinite(T))
        return d[:, None] * sol.X * d[None, :], sol.residual, drift, finite

    def stable(params, U, c, d):
        zero = jnp.zeros((), c.dtype)
        X = jnp.zeros((k, k), c.dtype)
        return X, zero, jnp.zeros(U.shape[0], c.dtype), jnp.asarray(True)

    # `>= 0` false for NaN: a non-finite c takes the oscillating branch, and is said below.
    active = ~(jnp.linalg.eigvalsh(c)[0] >= 0)
    X, residual, drift, finite = lane_cond(active, oscillating, stable, params, U, c, d)
    # One check (one host callback) on every output: attached to X alone it was dead code
    # wherever only the drift is used (the vector field inside an ODE solve), and XLA removed it.
    third_bad = ~(jnp.all(jnp.isfinite(c)) & finite)
    X, residual, drift = eqx.branched_error_if(
        (X, residual, drift),
        third_bad | ~(residual <= qp_tol),
        jnp.where(third_bad, 0, 1),
        (
            f"{who}: the loss's third derivative along the top eigenvectors (D^3 L[u_i, u_j, .], "
            "by nested jax.jvp) is not finite at some evaluation of the vector field: the "
            "central flow needs a loss that is three times differentiable there (relu, abs or "
            "sqrt at 0, |x|^p with p < 3, ... are not); or, for RMSProp's central flows, the "
            "state's second moment G is not finite.",
            f"{who}: the complementarity solve did not converge (residual above qp_tol after "
            "qp_iters iterations) at some evaluation of the vector field; raise qp_iters or "
            "qp_tol, or lower k (near-duplicate top directions make it ill-conditioned). If the "
            "sharpness is above 2/learning_rate where the third derivative along the top "
            "directions vanishes (a quadratic loss), no central flow exists: GD there diverges, "
            "and no iteration count helps.",
        ),
    )
    return X, residual, drift


class CentralState(NamedTuple):
    """What `CentralFlow.central` returns at a point: the eigenpairs, the oscillation covariance
    $X$ (in the eigenbasis; $\\Sigma = UXU^\\top$), the complementarity residual, the drift
    $\\dot w$ (raveled) and the predicted time-averaged loss
    $L + \\frac12\\langle\\Sigma,H\\rangle$."""

    eig: Eigenpairs
    X: Float[Array, "k k"]
    residual: Scalar
    velocity: Float[Array, " n"]
    predicted_loss: Scalar


class CentralFlow(AbstractFlow):
    r"""The central flow of gradient descent with learning rate $\eta$ (module docstring):
    $\dot w = -[\nabla L + \frac12\nabla\langle H, \Sigma\rangle]$, time $t = k\eta$.

    With no eigenvalue near $2/\eta$ (every gap $B_i$ closing slower than rate $r(1 + F_i)$,
    module docstring) $\Sigma = 0$ and this is `GradientFlow`. GD with learning rate $\eta$ is
    its discretization (`discretize(η)`), in the time-averaged sense only: GD oscillates
    around it.

    **Arguments:**

    - `learning_rate`: $\eta > 0$ (an array leaf: vmappable, no recompilation).
    - `k`: the number of top eigen-directions that may oscillate ($1 \le k \le n$; a dense
      `eigh` for $5k \ge n$). It must cover every direction that reaches the edge together:
      where one more does, it ties the $k$-th there and the field jumps (`tied`). A
      cross-entropy loss over $C$ classes has up to $C - 1$ top eigenvalues rising together
      (measured, digits MLP, 64 samples, $\eta = 1/\lambda_{\max}(\theta_0)$, 100 GD steps:
      three at the edge within $5\cdot10^{-4}$ of each other at GD step 11; $k = 2$ stalls
      there, $k = 3$, 5 and 10 give the same path to $3\cdot10^{-5}$ at 95, 103 and 356 s).
    - `basis`: the warm start of the eigen-solver, an $(n, k)$ block (e.g. the vectors at a
      nearby point; `central_solve` refreshes it along the path), or `None` for a fixed
      random block.
    - `stabilization`: $r\eta$, the stabilization rate per GD step ($> 0$; default 1): how fast
      an eigenvalue may approach $2/\eta$ from just below, and how fast one above it (a start
      past the edge) is pulled back (module docstring).
    - `eig_method`, `eig_iters`: the eigen-solver inside the vector field, from the warm start:
      `"lanczos"` (default; `matfree`'s Lanczos decomposition with `eig_iters` products,
      default 48, cut to the parameter count) or `"lobpcg"` (jax's `lobpcg_standard`, at most
      `eig_iters` iterations of $4k$ products, to `eig_tol`). Measured: the digits run of
      `experiments/edge_of_stability` (1,482 parameters, k = 2, bases refreshed every 25 GD
      steps) gives the prediction error of LOBPCG converged to tol 1e-12 to 3e-7 relative at
      depth 48 (to 1.2e-3 at depth 24; LOBPCG capped at 8 iterations, the previous default,
      to 5e-5). On the anchor MLP (k = 5; `central_solve` over 100 GD steps, 11 saved times,
      CPU time, 2026-12-06 on 2 shared cores at load 4-7) depth 48 costs 0.92× LOBPCG-8 at
      the edge (from the flow's own state at step 400; 0.84-0.92 over 3 rounds) and 0.57×
      below it (from the initialization), with the same solver steps and predicted losses
      equal to 1.5e-8: LOBPCG's cost grows with the warm start's distance (from the exact
      vectors its field evaluation at the edge costs 0.67× depth 48's). A fixed depth has
      no residual test inside the field; `central_solve` measures it after the fact
      (`CentralPath.eig_deviation`: the field's eigenvalues at each interval's end against
      refreshed ones; 9e-9 on the digits run, 9e-10 on the anchor's, each then relative to its
      own $|\lambda_j|$, so at most that now; 1.4e-5 at depth 2 in the tests): where it is
      not small (few save times, `solve` from a fixed `basis`, large k), raise `eig_iters` or
      use `"lobpcg"`.
    - `eig_tol`: LOBPCG's tolerance (`top_eigenpairs`' residual test, $10\,n\,$`eig_tol`
      relative: it loosens with the parameter count $n$; on a 190-parameter CNN the default
      left the refreshed $\Sigma$ 2e-6 off the exact eigenvectors' at a relative eigengap of
      0.2); `refresh_iters`: LOBPCG's cap when the warm start is refreshed (`central_solve`,
      at save times); `qp_iters`, `qp_tol`: the complementarity
      solver's (`qp_tol` floored at `QP_TOL_FLOOR` = 64 machine epsilons of the parameters'
      dtype: 7.6e-6 for float32 parameters, which `central_solve` promotes to float64 anyway).

    **Raises:** `ValueError` for a non-positive `learning_rate` or `stabilization`, a `k`,
    `eig_iters`, `refresh_iters` or `qp_iters` that is not a positive integer, a non-positive
    `eig_tol` or `qp_tol`, and (at the first evaluation) $k$ above the parameter count; at run
    time, an error (`eqx.error_if`) when the complementarity solve does not converge (with
    the advice to raise `qp_iters`), a Hessian-vector product is not finite, or the third
    derivative along the top eigenvectors is not finite.
    """

    learning_rate: Array = hyperparameter("learning_rate", lower=0.0, lower_open=True)
    k: int = eqx.field(static=True, default=5)
    basis: Array | None = None
    stabilization: Array = hyperparameter("stabilization", default=1.0, lower=0.0, lower_open=True)
    eig_method: str = eqx.field(static=True, default="lanczos")
    eig_iters: int = eqx.field(static=True, default=48)
    refresh_iters: int = eqx.field(static=True, default=100)
    eig_tol: float = eqx.field(static=True, default=1e-9)
    qp_iters: int = eqx.field(static=True, default=2000)
    qp_tol: float = eqx.field(static=True, default=1e-10)

    def __check_init__(self):
        check_sizes(self, ("refresh_iters",))

    def central(self, params: Params, problem: Problem, *, refresh: bool = False) -> CentralState:
        """The eigenpairs, $X$, the drift and the predicted loss at `params` (`eig_method` from
        `basis`, or LOBPCG for at most `refresh_iters` iterations when `refresh`)."""
        flat, _ = ravel_pytree(params)
        iters = self.refresh_iters if refresh else None
        eig = warm_eigenpairs(self, problem, params, flat, max_iters=iters)
        return self.central_at(params, problem, eig)

    def central_at(self, params: Params, problem: Problem, eig: Eigenpairs) -> CentralState:
        """`central` given the top-$k$ eigenpairs `eig` at `params`."""
        flat, _ = ravel_pytree(params)
        value, grad = problem.value_and_grad(params)
        grad = ravel_pytree(grad)[0]
        U = eig.vectors
        g = U.T @ hessian_derivative(problem, params, grad, U)
        eta = self.learning_rate.astype(flat.dtype)
        rate = self.stabilization.astype(flat.dtype) / eta
        gaps = 2.0 / eta - eig.values
        X, residual, drift = oscillation(
            problem,
            params,
            U,
            g,
            rate * gaps,
            0.5 * eta * gaps,
            lambda T, d: jnp.einsum("ijn,abn->ijab", T, T),
            qp_iters=self.qp_iters,
            qp_tol=self.qp_tol,
            who="CentralFlow",
        )
        velocity = -(grad + drift)
        predicted = value + 0.5 * jnp.sum(jnp.diagonal(X) * eig.values)
        return CentralState(eig, X, residual, velocity, predicted)

    def init(self, params: Params) -> Params:
        return params

    def vector_field(self, t: ScalarLike, state: Params, problem: Problem) -> Params:
        del t
        _, unravel = ravel_pytree(state)
        return unravel(self.central(state, problem).velocity)

    def params(self, state: Params) -> Params:
        return state

    def predicted_loss(self, params: Params, problem: Problem) -> Scalar:
        r"""GD's predicted time-averaged loss $L(w) + \frac12\langle\Sigma, H(w)\rangle$."""
        return self.central(params, problem).predicted_loss

    def discretize(self, step_size: ScalarLike) -> Discretization:
        r"""GD with step `step_size`, which must be this flow's own $\eta$ (`learning_rate`).

        The central flow of learning rate $\eta$ describes GD at step $\eta$ only: its
        threshold $2/\eta$ is GD's stability limit at that step. GD at another step $h$
        oscillates at the edge $2/h$ and follows `CentralFlow(h)`, so a sweep of step sizes
        against one central flow measures no order (as `ModifiedGradientFlow`). Use
        `CentralFlow(η).discretize(η)`, or `CentralFlow.from_hyperparams(η)`.

        **Raises:** `ValueError` for a concrete `step_size` not equal to `learning_rate` (to a
        relative $10^{-6}$, so a float32 copy of $\eta$ passes)."""
        check_own_step(
            step_size,
            self.learning_rate,
            "learning_rate",
            "GD with step h follows CentralFlow(h), whose threshold is 2/h",
            "Use CentralFlow(eta).discretize(eta), or CentralFlow.from_hyperparams(eta).",
        )
        return GradientDescent()(self, step_size)

    @classmethod
    def from_hyperparams(cls, learning_rate: ScalarLike, k: int = 5) -> tuple["CentralFlow", Array]:
        """GD with learning rate $\\eta$: `CentralFlow(η, k)` with $dt = \\eta$."""
        _, h = GradientDescent().inverse(learning_rate)
        return cls(h, k), h

    def loss_rate(self, t: ScalarLike, state: Params, problem: Problem) -> Scalar:
        del t
        grad = ravel_pytree(problem.grad(state))[0]
        return jnp.vdot(grad, self.central(state, problem).velocity)


class CentralPath(NamedTuple):
    """A central-flow solution saved at `ts`: `params` (leading time axis), the loss $L$, the
    predicted time-averaged loss $L + \\frac12\\langle\\Sigma,H\\rangle$, the top-$k$
    eigenvalues and $X$ at each saved time, and diffrax's step count (accepted and rejected)
    on each interval between saved times (under `vmap` every lane pays the largest). After
    an interval whose solve failed the path stays where that solve stopped: the later saved
    times hold that point, its eigenvalues and `next_eigenvalue`, NaN `X` and
    `predicted_loss`, and 0 steps.
    `eig_deviation[i]`: the vector field's own eigen-solve (`eig_method`, `eig_iters`, from the
    warm start it used over interval $i$) at the interval's end, against the refreshed
    eigenvalues there: $\\max_j |\\tilde\\lambda_j - \\lambda_j| / \\max_j |\\lambda_j|$ (relative
    to the tracked spectrum's scale: a tracked eigenvalue near 0 has no relative error to
    speak of), the largest error of the field's eigenvalues over the interval, the point
    farthest from the warm start (a fixed Lanczos depth has no residual test of its own: raise
    `eig_iters` or save more often where it is not small).
    `next_eigenvalue`: $\\lambda_{k+1}$ at each saved time (NaN for $k = n$; the top of the
    deflated Hessian by a warm Lanczos of `NEXT_DEPTH` products, exact for small models): the
    flow holds only its $k$ tracked directions at the threshold, so it describes GD only while
    $\\eta\\lambda_{k+1} < 2$ (`central_solve` warns where not)."""

    ts: Float[Array, " T"]
    params: Params
    loss: Float[Array, " T"]
    predicted_loss: Float[Array, " T"]
    eigenvalues: Float[Array, "T k"]
    X: Float[Array, "T k k"]
    num_steps: Int[Array, " T-1"]
    eig_deviation: Float[Array, " T-1"]
    next_eigenvalue: Float[Array, " T"]


# The depth of the deflated Lanczos for the (k+1)-th eigenvalue at each saved time (cut to n - k):
# from the previous saved time's vector, as the field's own warm Lanczos.
NEXT_DEPTH = 24

# LOBPCG's iteration cap where that Lanczos breaks down (`_next_eigenpair`): `top_eigenpairs`'
# default `max_iters`.
NEXT_FALLBACK_ITERS = 100


def _next_eigenpair(problem: Problem, params: Params, U: Array, spare: Array):
    r"""$(\lambda_{k+1}, v)$ at `params`, given the top-$k$ eigenvectors `U`: the top of
    $(I - UU^\top)H(I - UU^\top)$ by Lanczos (`NEXT_DEPTH` products, from `spare`; a Ritz
    value, so from below), or exactly (a dense `eigh`) for a model too small for that; NaN for
    $k = n$."""
    n, k = U.shape
    if k == n:
        return jnp.full((), jnp.nan, U.dtype), spare
    column = hvp_column(problem.grad, params)
    if not lobpcg_fits(k + 1, n):
        values, vectors, _ = _dense_top(column, n, k + 1, U.dtype)
        return values[k], vectors[:, k:]
    op = block_operator(column)

    def deflate(V):
        return V - U @ (U.T @ V)

    def deflated(V):
        return deflate(op(deflate(V)))

    def deflated_column(v):
        return deflate(column(deflate(v)))

    depth = min(NEXT_DEPTH, n - k)
    values, vectors, _ = _lanczos_top(deflated, deflate(spare), depth, matvec=deflated_column)
    # A deflated Hessian of low rank (flat directions) closes the Krylov space before
    # `NEXT_DEPTH` products and breaks matfree's Lanczos as in `top_eigenpairs` (rank 3 in 60
    # dimensions: 122.8 for a λ₂ of 3.34, and a false warning that a second direction was at
    # the edge). Its test (`lanczos_broke`) hands such a pair to LOBPCG from the same block.
    values, vectors = lane_cond(
        lanczos_broke(deflated_column, values, vectors),
        lambda block, *_: lobpcg_standard(deflated, block, m=NEXT_FALLBACK_ITERS)[:2],
        lambda _, *found: found,
        deflate(spare),
        values,
        vectors,
    )
    return values[0], vectors


# The steps of one attempt at an interval's solve in `central_path` (between two the solve may
# stop early, where a sliding mode would take it to `max_steps`). Above what an interval takes
# on the smooth flow: at most 280 (10 GD steps at a direction's onset, a cross-entropy MLP), the
# experiments' intervals 40-110; in a sliding mode 5e4 per GD step (rtol 1e-6).
ATTEMPT_STEPS = 256


def tied(learning_rate, value_k, value_next):
    r"""Whether the $k$-th and $(k+1)$-th eigenvalues are tied at the edge: within `SLIP` of each
    other (relative), the $k$-th within `DECOUPLING` of $2/\eta$ or above it (coupled).

    There the flow's field jumps: it holds only the top $k$ directions, and as the tied ones
    trade places in the top $k$, $\Sigma$ switches from one to the other. The one held is pushed
    down, the other, no longer held, rises past it, and they trade back: a sliding mode along
    $\lambda_k = \lambda_{k+1}$ (Filippov), which keeps them tied and which an adaptive solver
    follows with steps of about its tolerance over the jump (measured: 2e-5 GD steps at rtol
    1e-6 on a cross-entropy MLP, 5e4 steps per GD step). A larger $k$, holding both, removes
    it. NaN (no $(k+1)$-th eigenvalue, $k = n$) is not a tie."""
    relative_gap = 1.0 - 0.5 * learning_rate * value_k
    return (value_k - value_next <= SLIP * abs(value_k)) & (relative_gap <= DECOUPLING)


def _probe(flow, problem, params, field_basis, U, at_start, spare):
    """At `params`: the field's own eigen-solve (warm from `field_basis`) and the $(k+1)$-th
    eigenpair of `_next_eigenpair` (from `spare`), deflated by `U` where `at_start` (an
    interval's start: the refreshed vectors), else by the field's own vectors (`tied` at an
    attempt's end). `(field eigenvalues, λ_{k+1}, its vector)`."""
    eig = warm_eigenpairs(_with_basis(flow, field_basis), problem, params, ravel_pytree(params)[0])
    value_next, spare = _next_eigenpair(problem, params, jnp.where(at_start, U, eig.vectors), spare)
    return eig.values, value_next, spare


def _no_probe(flow, problem, params, field_basis, U, at_start, spare):
    del flow, problem, params, field_basis, at_start
    return jnp.zeros(U.shape[1], U.dtype), jnp.zeros((), U.dtype), spare


def _central_at(flow: CentralFlow, problem: Problem, params: Params, eig: Eigenpairs):
    return flow.central_at(params, problem, eig)


def _stopped(flow: CentralFlow, problem: Problem, params: Params, eig: Eigenpairs):
    """A `CentralState` holding only `eig`, NaN elsewhere: a point after a failed interval."""
    del flow, problem
    dtype = eig.values.dtype
    k, n = eig.vectors.shape[1], eig.vectors.shape[0]
    nan = jnp.full((), jnp.nan, dtype)
    return CentralState(
        eig, jnp.full((k, k), jnp.nan, dtype), nan, jnp.full(n, jnp.nan, dtype), nan
    )


def _vector_field(t, y, args):
    flow, problem = args
    return flow.vector_field(t, y, problem)


def _with_basis(flow: CentralFlow, basis) -> CentralFlow:
    return eqx.tree_at(lambda f: f.basis, flow, basis, is_leaf=lambda x: x is None)


def central_path(
    flow: CentralFlow,
    problem: Problem,
    ts,
    *,
    rtol=1e-6,
    atol=1e-9,
    max_steps=4096,
    solver=None,
):
    """The traceable core of `central_solve` (no checks, no host sync): `(CentralPath,
    diffrax results)`, one result per interval (nothing is solved after the first that
    failed); `jax.vmap` it over flows with a batch of learning rates."""
    import diffrax

    from .._solve import _FirstStepGiven, integrate

    # One refreshed `central` per saved time, at the *start* of each interval (the last interval
    # has zero length: diffrax returns at once), so that the program holds one copy of it (the
    # eigen-solve, third derivatives and complementarity solve are what XLA takes longest to
    # compile) besides the vector field's. Each interval's first step is the previous one's
    # mean accepted step (the first interval's: 1e-3 of a mean interval), not diffrax's
    # first-step heuristic, which evaluates the field outside the step loop: a second copy of
    # it in the program.
    #
    # Besides the refresh, the (k+1)-th eigenvalue (while k < n): whether more directions reach
    # the threshold than the flow holds there. From the top of the deflated operator
    # (I - UU^T) H (I - UU^T), by a Lanczos of `NEXT_DEPTH` products warm-started from the
    # previous saved time's vector (the refresh itself is unchanged: the same numbers as without).
    k = flow.k
    # The path is a float64 reference, as `solve`'s: float32 parameters (equinox's default) are
    # promoted at the start, and the returned `params` are float64 (as diffrax returns them).
    params0 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), problem.params0)
    flat0 = ravel_pytree(params0)[0]
    n = flat0.shape[0]

    def chunk(carry, interval):
        w, basis, spare, first, failed = carry
        # After a failed interval, the point where it stopped has only its eigenvalues saved
        # (`_stopped`): the rest is not needed, and there (a sliding mode's tied eigenvalues)
        # the complementarity solve may not converge, an error that hid the diagnosis.
        flat_w = ravel_pytree(w)[0]
        eig = warm_eigenpairs(
            _with_basis(flow, basis), problem, w, flat_w, max_iters=flow.refresh_iters
        )
        cs = lane_cond(~failed, _central_at, _stopped, flow, problem, w, eig)
        # After a failed interval the path stays where that solve stopped: the later intervals
        # are empty (diffrax returns at once), not solved from that point at a later time. (They
        # were: every one after a stall could run to `max_steps` again, to give a path the error
        # then discarded.)
        t_end = jnp.where(failed, interval[0], interval[1])
        U = cs.eig.vectors
        args = (_with_basis(flow, U), problem)
        eta = flow.learning_rate.astype(U.dtype)

        def attempt(state):
            # `ATTEMPT_STEPS` steps of the interval's solve, from where the previous stopped.
            t, y, step, steps, accepted, _ = state
            sol = integrate(
                diffrax.ODETerm(_vector_field),
                _default_solver() if solver is None else solver,
                t,
                t_end,
                y,
                args=args,
                controller=_FirstStepGiven(diffrax.PIDController(rtol=rtol, atol=atol), step),
                max_steps=budget,
            )
            t1, y1 = sol.ts[-1], jax.tree.map(lambda x: x[-1], sol.ys)
            steps = steps + sol.stats["num_steps"]
            accepted = accepted + sol.stats["num_accepted_steps"]
            done = sol.stats["num_accepted_steps"]
            step = jnp.where(done > 0, (t1 - t) / jnp.maximum(done, 1).astype(t.dtype), step)
            capped = (sol.result == diffrax.RESULTS.max_steps_reached) & (steps < max_steps)
            # At this pace the interval needs more than `max_steps`: it would fail anyway.
            pace = jnp.where(t1 > interval[0], (t_end - interval[0]) / (t1 - interval[0]), jnp.inf)
            doomed = capped & (steps.astype(pace.dtype) * pace > max_steps)
            return (t1, y1, step, steps, accepted, sol.result), capped, doomed

        def not_attempted(state):
            return state, jnp.asarray(False), jnp.asarray(False)

        def body(loop):
            state, probe, at_start, spare, values, next_value, _ = loop
            # One `_probe` in the program for two uses (each is an eigen-solve and a deflated
            # Lanczos, with their LOBPCG fallbacks: a copy cost ~20% of the program's compile
            # time). First, at the interval's start: the field's eigen-solve there, from the warm
            # start it used over the interval ending here (the first chunk's: the initial block,
            # not a field's; dropped below), and the (k+1)-th eigenvalue. Then after an attempt
            # that left the interval doomed: where the k-th and (k+1)-th eigenvalues are tied at
            # the edge (a sliding mode, `tied`), no budget helps: stop now, not after
            # `max_steps`.
            found = lane_cond(
                probe,
                _probe,
                _no_probe,
                flow,
                problem,
                state[1],
                jnp.where(at_start, basis, U),
                U,
                at_start,
                spare,
            )
            kept = [jnp.where(probe & at_start, a, b) for a, b in zip(found, (values, next_value))]
            spare = jnp.where(probe & at_start, found[2], spare)
            stop = probe & ~at_start & tied(eta, found[0][-1], found[1])
            state, capped, doomed = lane_cond(~stop, attempt, not_attempted, state)
            return state, doomed, jnp.asarray(False), spare, *kept, capped

        zero = jnp.asarray(0)  # (weak: the loop takes diffrax's counters' type)
        state0 = (interval[0], w, first, zero, zero, diffrax.RESULTS.successful)
        values0 = jnp.zeros(k, U.dtype)
        yes = jnp.asarray(True)
        loop0 = (state0, yes, yes, spare, values0, jnp.zeros((), U.dtype), yes)
        loop = jax.lax.while_loop(lambda loop: loop[-1], body, loop0)
        (_, w1, _, num_steps, accepted, result), _, _, spare, field_values, next_value, _ = loop
        # Relative to the tracked spectrum's scale, not to each |λ_j|: a tracked eigenvalue
        # near 0 (k at or above the Hessian's rank) made exact values (1e-16 apart) read 80-200%.
        deviation = jnp.max(jnp.abs(field_values - cs.eig.values)) / jnp.max(jnp.abs(cs.eig.values))
        accepted = jnp.maximum(accepted, 1).astype(interval.dtype)
        mean_step = (interval[1] - interval[0]) / accepted
        first = jnp.where(mean_step > 0, mean_step, first)
        out = (w, cs, result, num_steps, deviation, next_value)
        failed = failed | ~(result == diffrax.RESULTS.successful)
        return (w1, cs.eig.vectors, spare, first, failed), out

    # Each interval's solve in attempts of `ATTEMPT_STEPS` steps (one attempt where it needs
    # fewer: the same solve as a single call), `max_steps` in all.
    attempts = -(-max_steps // ATTEMPT_STEPS)
    budget = -(-max_steps // attempts)
    basis0 = start_block(flow.basis, k, flat0)
    # The (k+1)-th direction's cold start (seeded apart from `start_block`'s).
    spare0 = random_start(jax.random.key(1), n, 1, flat0.dtype)
    intervals = jnp.stack([ts, jnp.concatenate([ts[1:], ts[-1:]])], axis=1)
    first0 = 1e-3 * (ts[-1] - ts[0]) / max(ts.shape[0] - 1, 1)  # of a mean interval
    carry0 = (params0, basis0, spare0, first0, jnp.asarray(False))
    scanned = jax.lax.scan(chunk, carry0, intervals)[1]
    params, cs, results, num_steps, deviation, next_values = scanned
    path = CentralPath(
        ts=ts,
        params=params,
        loss=jax.vmap(problem.loss)(params),
        predicted_loss=cs.predicted_loss,
        eigenvalues=cs.eig.values,
        X=cs.X,
        num_steps=num_steps[:-1],
        eig_deviation=deviation[1:],
        next_eigenvalue=next_values,
    )
    return path, results


@eqx.filter_jit
def _central_path_jit(flow, problem, ts, rtol, atol, max_steps, solver):
    return central_path(flow, problem, ts, rtol=rtol, atol=atol, max_steps=max_steps, solver=solver)


def _default_solver():
    import diffrax

    return diffrax.Bosh3()


def central_solve(
    flow: CentralFlow,
    problem: Problem,
    ts,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    max_steps: int = 4096,
    solver=None,
) -> CentralPath:
    r"""Solve `flow` from `problem.params0`, saving at `ts` (times $k\eta$), with diffrax
    (adaptive, PID control) between consecutive save times and the eigen-solver's warm start
    refreshed at each of them: one `integrate` per interval inside one `lax.scan`, all jitted.
    (`dynopt.solve(flow, ..., solver="tsit5")` works too, warm-started from `flow.basis`
    throughout, which costs more LOBPCG iterations far from it; with an explicit solver named:
    its automatic choice differentiates the vector field, which the eigen-solver's loops do not
    allow, and raised JAX's "Reverse-mode differentiation does not work for lax.while_loop".)

    The default solver is `diffrax.Bosh3` (3 evaluations a step), chosen by cost: at the edge
    $\eta\lambda_{\max} = 2$ makes the flow stiff for an explicit method, the step is set by
    stability (and, for third-order Bosh3, by `rtol` too: 46 / 78 / 166 steps for 40 GD steps
    at rtol 1e-4 / 1e-6 / 1e-8), and Bosh3's stable step per evaluation is the larger
    (anchor MLP at the edge, 100 GD steps at rtol 1e-6: 162 steps × 3 evaluations against
    Tsit5's 102 × 6; 52 against 63 ms per GD step, medians of 5 interleaved runs; the
    predicted loss the same to 3e-7 relative). Below the edge, where `rtol` sets the step,
    `diffrax.Tsit5()` is 1.2× faster.

    **Arguments:** `flow`, `problem`, `ts` (increasing); `rtol`, `atol`, `max_steps` (per
    interval, taken in attempts of `ATTEMPT_STEPS` = 256 steps: an interval that needs fewer
    is one solve; rounded up to a whole number of equal attempts); `solver` (any explicit
    diffrax solver; `None`: Bosh3).

    **Returns:** a `CentralPath`, in float64 as `solve`'s reference: float32 parameters
    (equinox's default dtype, or a model built before enabling x64) are promoted at the start,
    and its `params` are float64.

    **Raises:** `ValueError` for a flow that is not one `CentralFlow` (a batch of learning
    rates: vmap `central_path`), a `problem` that is not a `Problem` or a `solver` that is not a
    diffrax solver; `SolveError` when an interval's solve fails (saying which
    and what to change), nothing solved after it. An attempt that leaves the interval
    needing more than `max_steps` at its pace, stopped where the $k$-th and $(k+1)$-th
    eigenvalues are `tied` at the edge, fails at once: a sliding mode, which no step budget
    gets through (a cross-entropy digits MLP with $k = 2$ ran for over 35 minutes; now, 64
    samples: tied at GD step 10.8 with steps of $2\cdot10^{-5}$ GD steps, stopped after 512
    steps, 129 s with compilation; 512 samples: tied 2.3% below the edge at GD step 2.7,
    1,280 steps, 372 s), and the error says so and names the $k$ to use. The flow's own
    runtime errors (non-converged complementarity solve, non-finite HVP or third
    derivative).

    **Warns:** `RuntimeWarning` where the flow no longer holds GD's edge: at the first saved
    time where the $(k+1)$-th eigenvalue (`CentralPath.next_eigenvalue`) is at or above
    $2/\eta$, or the top tracked one rose above it by more than `SLIP` (a direction beyond
    the $k$ held ones overtook one between saved times); it names the $k$ to use. (Before a
    failed interval, that is the `SolveError`'s likely cause instead.) Also where the path
    starts past the edge ($\eta\lambda_1/2 > 1 +$ `SLIP` at `ts[0]`): no central flow starts
    there, and the path is the stabilization's pull back to the threshold until it is there
    (the warning says when).
    """
    import diffrax

    from .._solve import _check_times, _require_x64, raise_for_result

    _require_x64()
    if not isinstance(flow, CentralFlow):
        raise ValueError(
            f"central_solve solves a CentralFlow, got {type(flow).__name__} (the RMSProp central "
            "flows are solved by dynopt.solve)."
        )
    # (Anything else was an AttributeError: "'int' object has no attribute 'params0'" or
    # "... 'term_structure'".)
    instance("problem", problem, Problem, "a dynopt.Problem (a loss)")
    if solver is not None and not isinstance(solver, diffrax.AbstractSolver):
        raise ValueError(
            f"solver must be None (Bosh3) or an explicit diffrax solver, got {solver!r}."
        )
    for name in ("learning_rate", "stabilization"):
        value = getattr(flow, name)
        if not is_traced(value) and jnp.ndim(value) > 0:
            # (Not a per-coordinate value: a batch, whose solve is `central_path` under vmap.)
            raise ValueError(
                f"central_solve takes one flow: {name} has shape {jnp.shape(value)}. For a batch "
                "of learning rates, jax.vmap the traceable core dynopt._flows.central."
                "central_path over lambda eta: CentralFlow(eta, ...) (one program), or call "
                "central_solve once per value (one compilation: the values are array leaves)."
            )
    rtol, atol, max_steps = solver_options(rtol, atol, max_steps)
    # The shape first (a 2-D or empty `ts` raised a TypeError or IndexError reading ts[0]), then
    # a horizon after the first saved time.
    ts = _check_times(ts, -np.inf)
    ts = jnp.asarray(_check_times(ts, float(ts[0])))
    path, results = _central_path_jit(flow, problem, ts, rtol, atol, max_steps, solver)
    said = [
        m
        for m in (
            _stalled(flow, path, results),
            _past_the_edge(flow, path),
            _lost_hold(flow, path, results),
        )
        if m
    ]
    raise_for_result(
        results,
        what="central_solve",
        max_steps=max_steps,
        rtol=rtol,
        atol=atol,
        diagnosis=None if not said else "Likely cause: " + " And: ".join(said),
        entries="intervals between saved times",
    )
    for message in said:
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return path


def _stalled(flow: CentralFlow, path: CentralPath, results) -> str | None:
    """What to say where an interval's solve failed with the $k$-th and $(k+1)$-th eigenvalues
    `tied` at the edge where it stopped (the path's next saved point, which stays there), or
    `None`."""
    import diffrax

    failed = np.flatnonzero(~np.asarray(results == diffrax.RESULTS.successful))
    if failed.size == 0 or failed[0] + 1 >= len(path.ts):
        return None
    i, k = int(failed[0]), flow.k
    eta = float(np.asarray(flow.learning_rate))
    value_k = float(np.asarray(path.eigenvalues)[i + 1, -1])
    value_next = float(np.asarray(path.next_eigenvalue)[i + 1])
    if not tied(eta, value_k, value_next):
        return None
    ts = np.asarray(path.ts)
    return (
        f"the solve from t = {float(ts[i]):.6g} to {float(ts[i + 1]):.6g} (saved times {i} to "
        f"{i + 1}) stalled after {int(np.asarray(path.num_steps)[i])} steps where lambda_{k} "
        f"and lambda_{k + 1} of the Hessian are tied at the edge of stability (learning_rate * "
        f"lambda / 2 = {0.5 * eta * value_k:.6g} and {0.5 * eta * value_next:.6g}): a direction "
        f"beyond the k = {k} this flow holds reached the edge with them. The field then jumps "
        "as the tied eigenvectors trade places in the top k (a sliding mode: the solver's step "
        "collapses, and no max_steps helps). Solve again with a larger k "
        f"(CentralFlow(..., k={k + 1}) or more; with cross-entropy over C classes up to C - 1 "
        "top eigenvalues rise together)."
    )


def _past_the_edge(flow: CentralFlow, path: CentralPath) -> str | None:
    r"""What to say where the path starts past GD's edge ($\eta\lambda_1/2 > 1 +$ `SLIP` at the
    first saved time), or `None`. No central flow starts there: GD from such a point is
    unstable along its top direction at once (a catapult), and the stabilized flow instead
    pulls the eigenvalue down at its Baumgarte rate, a transient set by `stabilization`."""
    eta = np.asarray(flow.learning_rate)
    top = eta * np.asarray(path.eigenvalues)[:, 0] / 2.0
    if not top[0] > 1.0 + SLIP:
        return None
    back = np.flatnonzero(top <= 1.0 + SLIP)
    ts = np.asarray(path.ts)
    until = (
        f"it is back at the threshold by t = {float(ts[back[0]]):.6g} (saved time {back[0]})"
        if back.size
        else f"it is still above it at the last saved time (learning_rate * lambda_1 / 2 = "
        f"{float(top[-1]):.6g} at t = {float(ts[-1]):.6g})"
    )
    return (
        f"at t = {float(ts[0]):.6g} (saved time 0) the top eigenvalue is already above the "
        f"threshold (learning_rate * lambda_1 / 2 = {float(top[0]):.6g}): GD from this start is "
        "past its edge of stability (its top direction grows at once, a catapult), where no "
        "central flow starts. This path pulls the eigenvalue back at the stabilization rate "
        "instead (stabilization / learning_rate: one e-fold per 1/stabilization GD steps, "
        f"slower where the loss sharpens) and {until}; until then it is that transient, not "
        "GD's central flow. Start below the edge (a smaller learning_rate, or params0 taken "
        "where learning_rate * lambda_max < 2)."
    )


def _lost_hold(flow: CentralFlow, path: CentralPath, results) -> str | None:
    """What to say where the flow stops holding GD's edge (before the first failed interval):
    the $(k+1)$-th eigenvalue is at or above $2/\\eta$ at a saved time, or the top tracked one
    is above it by more than `SLIP` and higher than at the previous saved time (tracked ones
    above the threshold can only decay, at the stabilization rate: a rise means a direction
    the flow did not hold overtook one it did, between saved times); or `None`."""
    import diffrax

    eta, k = np.asarray(flow.learning_rate), flow.k
    following = eta * np.asarray(path.next_eigenvalue) / 2.0
    top = eta * np.asarray(path.eigenvalues)[:, 0] / 2.0
    failed = np.flatnonzero(~np.asarray(results == diffrax.RESULTS.successful))
    last = failed[0] if failed.size else top.shape[0] - 1  # saved times before a failure
    reached = following[: last + 1] >= 1.0  # NaN (k = n) compares False
    rose = np.zeros_like(reached)
    rose[1:] = (top[1 : last + 1] > 1.0 + SLIP) & (top[1 : last + 1] > top[:last])
    at = np.flatnonzero(reached | rose)
    if at.size == 0:
        return None
    i = int(at[0])
    if reached[i]:
        what = (
            f"the ({k}+1)-th eigenvalue of the Hessian is at or above the threshold "
            f"(learning_rate * lambda_{k + 1} / 2 = {float(following[i]):.6g})"
        )
    else:
        what = (
            f"the top eigenvalue rose above the threshold (learning_rate * lambda_1 / 2 = "
            f"{float(top[i]):.6g}, {float(top[i - 1]):.6g} at the saved time before): a "
            f"direction beyond the k = {k} held ones most likely reached the edge in between"
        )
    return (
        f"at t = {float(path.ts[i]):.6g} (saved time {i}) {what}. More directions are at the "
        f"edge of stability than the k = {k} this flow holds there, so from then on its "
        "eigenvalues can drift above 2/learning_rate and the path is not GD's central flow. "
        f"Solve again with a larger k (CentralFlow(..., k={k + 1}) or more)."
    )
