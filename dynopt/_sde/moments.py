r"""Exact first and second moments of SGD, of its SDE and of Euler–Maruyama on quadratic finite
sums (linear regression, $\frac12\lambda\theta^2$ with noisy per-sample gradients).

With per-sample gradients $g_i(\theta^*+e) = A_i e + q_i$ (every $\ell_i$ quadratic),
$H = \nabla^2 L$, $\delta A_i = A_i - \bar A$, $\delta q_i = q_i - \bar q$, the gradient
covariance is
$\Sigma(e) = \frac1n\sum_i(\delta A_i e + \delta q_i)(\delta A_i e + \delta q_i)^\top$, and its
mean over the law of $e$ with mean $m$ and second moment $M = \mathbb E[ee^\top]$ is
$$S(m, M) = \tfrac1n\textstyle\sum_i \big(\delta A_i M \delta A_i + \delta A_i m\,\delta q_i^\top
  + \delta q_i m^\top \delta A_i + \delta q_i\delta q_i^\top\big).$$
With $\kappa = \eta c/B$ (see `SGDNoise`) the moments close exactly:

- SDE: $\dot m = -Hm$, $\dot M = -HM - MH + \kappa S(m, M)$;
- a step $h$ of Euler–Maruyama: $m^+ = (I-hH)m$, $M^+ = (I-hH)M(I-hH) + h\kappa S(m, M)$.
  SGD itself is the case $h = \eta$ (its noise is not Gaussian, but only its covariance
  $c\Sigma/B$ enters second moments).

A model with `covariance="diagonal"` has $\mathrm{diag}\,S$ in place of $S$ (still exact: the
diagonal is linear); `"lowrank"` does not close.

Stationary: $HM + MH - hHMH = \kappa S(0, M)$, so on $\frac12\lambda\theta^2$ with
$\Sigma = \sigma^2$: $V = \kappa\sigma^2/(\lambda(2 - h\lambda))$, i.e.
$\eta c\sigma^2/(B\lambda(2-\eta\lambda))$ for SGD and
$\eta c\sigma^2/(2B\lambda)$ for the SDE ($h = 0$).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, Float, Params
from .._problem import Problem
from .._problems.finite_sum import data_like_params
from .._validation import check_unbatched, is_traced, positive, positive_int
from .sgd import (
    _factor_dtype,
    _num_samples,
    _samples_with_replacement,
    _without_replacement,
    SGDNoise,
)


def _pinv_newton(h: Float[Array, "d d"], g: Float[Array, " d"]) -> Float[Array, " d"]:
    r"""The least-norm Newton step $H^+g$, by `eigh` with numpy's rank tolerance
    ($d\,\epsilon\,|\lambda|_{\max}$): `solve` for a non-singular $H$, and for a singular one
    (a dead input's weights, an over-parametrised regression) the step to the nearest
    stationary point, where `solve` returned NaN moments without a word."""
    w, v = jnp.linalg.eigh(h)
    floor = w.size * jnp.finfo(w.dtype).eps * jnp.max(jnp.abs(w))
    inverse = jnp.where(jnp.abs(w) > floor, 1 / jnp.where(w == 0, 1, w), 0)
    return v @ (inverse * (v.T @ g))


def _quadratic_data(p: Problem, flat0: Float[Array, " d"]):
    unravel = ravel_pytree(p.params0)[1]

    def loss(y):
        return p.loss(unravel(y))

    def sample_loss(y, sample):
        return p.sample_loss_fn(unravel(y), sample)

    h = jax.hessian(loss)(flat0)
    xstar = flat0 - _pinv_newton(h, jax.grad(loss)(flat0))  # one Newton step: exact
    data = data_like_params(p.data, unravel(xstar))
    a = jax.vmap(jax.hessian(sample_loss), in_axes=(None, 0))(xstar, data)
    q = jax.vmap(jax.grad(sample_loss), in_axes=(None, 0))(xstar, data)
    da = a - jnp.mean(a, axis=0, keepdims=True)
    dq = q - jnp.mean(q, axis=0, keepdims=True)
    return h, xstar, flat0 - xstar, da, dq, loss(xstar)


@eqx.filter_jit
def _curvature(p: Problem, flat0: Float[Array, " d"]):
    r"""The eigenpairs of $H(\theta_0)$, $\max|H(\theta^*) - H(\theta_0)|$ over the Newton
    step $\theta^*$ of `_quadratic_data` (zero to rounding for a quadratic loss), and
    $\|\nabla L(\theta^*)\|$ with $\|\nabla L(\theta_0)\|$ (a quadratic with a linear term
    along a null direction of $H$ has no stationary point: the first is not ~0)."""
    unravel = ravel_pytree(p.params0)[1]

    def loss(y):
        return p.loss(unravel(y))

    h0 = jax.hessian(loss)(flat0)
    g0 = jax.grad(loss)(flat0)
    xstar = flat0 - _pinv_newton(h0, g0)
    w, v = jnp.linalg.eigh(h0)
    moved = jnp.max(jnp.abs(jax.hessian(loss)(xstar) - h0))
    return w, v, moved, jnp.linalg.norm(jax.grad(loss)(xstar)), jnp.linalg.norm(g0), xstar


def _check_quadratic_model(p: Problem, flat0: Float[Array, " d"], who: str):
    r"""`ValueError` for a non-quadratic loss whose Hessian at $\theta_0$ is not positive
    definite: its quadratic model at the Newton step has no minimizer (a saddle, or no point at
    all), and the moments of that model are no approximation of SGD's (on a tanh network they
    gave $\mathbb E L = -19$ for a squared loss). A quadratic is exact at any curvature, a
    singular one too (its least-norm Newton step, `_pinv_newton`), unless it is linear along a
    null direction of $H$ (unbounded below, no stationary point: `ValueError`).

    **Returns:** `(range, null)`: the eigenvectors of $H$ whose eigenvalues are beyond the
    rank tolerance, $(d, d - k)$, and within it, $(d, k)$ (`None` when traced)."""
    if is_traced((p, flat0)):
        return None
    eigenvalues, vectors, moved, residual, start, xstar = _curvature(p, flat0)
    eigenvalues = np.asarray(eigenvalues)
    scale = float(np.max(np.abs(eigenvalues)))
    eps = np.finfo(eigenvalues.dtype).eps
    # Positive definite beyond rounding: numpy's rank tolerance, d * eps * |lambda|_max.
    floor = eigenvalues.size * eps * scale
    # A quadratic's Hessian is the same at theta* to rounding (n eps |H| for n samples);
    # sqrt(eps) relative is far above that.
    quadratic = bool(moved <= np.sqrt(eps) * scale)
    if eigenvalues[0] <= floor and not quadratic:
        raise ValueError(
            f"{who} approximates a non-quadratic loss by its quadratic model at the minimizer "
            "one Newton step from x0, which needs a positive-definite Hessian at x0; its "
            f"smallest eigenvalue there is {eigenvalues[0]:.3g} (largest {eigenvalues[-1]:.3g}):"
            " the model has no minimizer and its moments do not approximate SGD's. Pass an x0 "
            "at (or near) a minimum, e.g. trained parameters, or estimate the moments by Monte "
            "Carlo (dynopt.sde.simulate, dynopt.run with a batch of keys)."
        )
    null = np.abs(eigenvalues) <= floor
    # At theta* the gradient is zero to the rounding of H theta*; a linear term along a null
    # direction of H is left whole by the least-norm step.
    size = float(start) + scale * float(np.linalg.norm(np.asarray(xstar)))
    if null.any() and float(residual) > np.sqrt(eps) * size:
        raise ValueError(
            f"{who}: the loss is quadratic with a singular Hessian ({int(null.sum())} zero "
            f"eigenvalues of {eigenvalues.size}) and a gradient along its null directions "
            f"(|grad L| = {float(residual):.3g} at the least-norm Newton step): it decreases "
            "linearly along them, without bound, and SGD's moments have no stationary point "
            "to expand about."
        )
    vectors = np.asarray(vectors)
    return vectors[:, ~null], vectors[:, null]


def _pack(m, big_m):
    return jnp.concatenate([m, big_m.ravel()])


def _unpack(z, d):
    return z[:d], z[d:].reshape(d, d)


# The moment system has d^2 + d + 1 unknowns: a dense matrix of (d^2 + d + 1)^2 entries, and
# each time is a matrix exponential (~15 products) or a binary power (up to 80), O(d^6) flops.
# At d = 32 one time took 20 s (the SDE) and 57 s (SGD) on a shared 2-core CPU, compile
# included; d = 64 is 64 times the flops (over 8 minutes). A 160-parameter network asked XLA
# for 127 GB.
MAX_MOMENT_DIM = 32


def _check_size(size: int, who: str) -> None:
    if size > MAX_MOMENT_DIM:
        unknowns = size * size + size + 1
        raise ValueError(
            f"{who} solves the exact moment equations of d = {size} parameters: "
            f"{unknowns:,} unknowns (d^2 + d + 1), a dense {unknowns:,}^2 matrix of "
            f"{8 * unknowns**2 / 2**30:.3g} GiB in float64 and O(d^6) flops per time; it takes "
            f"d <= {MAX_MOMENT_DIM}. For a network, estimate the moments by Monte Carlo: "
            "dynopt.sde.simulate (the SDE) or dynopt.run(model.discretize(), "
            "model.sgd_problem(problem), num_steps, key=keys) with a batch of keys (SGD)."
        )


def _check_closes(sde: SGDNoise) -> None:
    # The top-r projection of Sigma(theta) is not linear in theta theta^T: no closed moment
    # recursion (with the full S the result would be the moments of another SDE).
    if sde.covariance == "lowrank":
        raise ValueError(
            "covariance='lowrank' has no closed moment equations (the top-rank projection of "
            "Sigma(theta) is not linear in the second moment); use covariance='full', "
            "'samples' or 'diagonal', or estimate the moments with dynopt.sde.simulate."
        )


class _MomentNoise(eqx.Module):
    """What the moment programs read of an `SGDNoise`: its noise scale and covariance kind,
    with the sampling scheme an array leaf (static in `SGDNoise`, where it picks how
    `sgd_problem` samples), so that both schemes share one compiled program."""

    learning_rate: Array
    batch_size: Array
    replace: Array
    covariance: str = eqx.field(static=True)

    def __init__(self, sde: SGDNoise):
        self.learning_rate, self.batch_size = sde.learning_rate, sde.batch_size
        self.replace = jnp.asarray(sde.replace)
        self.covariance = sde.covariance

    def noise_scale(self, problem: Problem) -> Array:
        r"""`SGDNoise.noise_scale`: $\eta c/B$, $c = 1$ with replacement."""
        dtype = _factor_dtype(self.learning_rate)
        b = self.batch_size.astype(dtype)
        c = jnp.where(self.replace, 1.0, _without_replacement(_num_samples(problem), b))
        return self.learning_rate.astype(dtype) * c / b


def _linear_system(sde, problem, h, continuous: bool, data):
    r"""The moment dynamics as $z' = Kz + b$ (continuous) or $z^+ = Fz + b$ (step $h$) on
    $z = (m, \mathrm{vec}\,M)$ (row-major): `(K or F, b)`, assembled block by block.

    With $\mathrm{vec}(AMB) = (A \otimes B^\top)\,\mathrm{vec}\,M$, the noise's mean $S(m, M)$
    is $\frac1n\sum_i[(\delta A_i \otimes \delta A_i)\mathrm{vec}\,M + (\delta A_i \otimes
    \delta q_i + \delta q_i \otimes \delta A_i)\,m + \delta q_i \otimes \delta q_i]$: $O(nd^4)$
    flops and one $(d + d^2)^2$ matrix (the Jacobian of the update, taken by `jacfwd` before,
    cost $O(nd^5)$: $d^2$ tangents of an $O(nd^3)$ update). `covariance="diagonal"` keeps the
    rows of $\mathrm{diag}\,S$ only."""
    hess, _, _, da, dq, _ = data
    d, n = hess.shape[0], da.shape[0]
    kappa = sde.noise_scale(problem).astype(hess.dtype)
    eye = jnp.eye(d, dtype=hess.dtype)
    # S's coefficients, indexed [a, b, ...] for the entry S[a, b].
    s_mm = jnp.einsum("iac,idb->abcd", da, da) / n  # of M[c, d]
    s_m = (jnp.einsum("iac,ib->abc", da, dq) + jnp.einsum("ia,icb->abc", dq, da)) / n  # of m[c]
    s_0 = dq.T @ dq / n
    if sde.covariance == "diagonal":  # G G^T = kappa diag(Sigma): only diag S enters
        keep = eye.astype(bool)
        s_mm = jnp.where(keep[:, :, None, None], s_mm, 0)
        s_m = jnp.where(keep[:, :, None], s_m, 0)
        s_0 = jnp.where(keep, s_0, 0)
    s_mm, s_m, s_0 = s_mm.reshape(d * d, d * d), s_m.reshape(d * d, d), s_0.reshape(d * d)
    if continuous:  # m' = -H m, M' = -H M - M H + kappa S
        mean_block = -hess
        cov_block = -(jnp.kron(hess, eye) + jnp.kron(eye, hess)) + kappa * s_mm
        scale = kappa
    else:  # m+ = P m, M+ = P M P + h kappa S, P = I - h H (symmetric)
        step = eye - h * hess
        mean_block = step
        cov_block = jnp.kron(step, step) + h * kappa * s_mm
        scale = h * kappa
    mat = jnp.block([[mean_block, jnp.zeros((d, d * d), hess.dtype)], [scale * s_m, cov_block]])
    return mat, jnp.concatenate([jnp.zeros(d, hess.dtype), scale * s_0])


def _affine(mat, b):
    """[[mat, b], [0, 1]]: an affine map as one matrix acting on (z, 1)."""
    n = mat.shape[0]
    return jnp.zeros((n + 1, n + 1), mat.dtype).at[:n, :n].set(mat).at[:n, n].set(b).at[n, n].set(1)


_POWER_BITS = 40
_MAX_STEPS = 2**_POWER_BITS


def _power(a, k):
    """a**k for a traced integer k < 2**40 (binary powering: one program for every k)."""

    def body(_, carry):
        result, base, k = carry
        result = jnp.where(k % 2 == 1, result @ base, result)
        return result, base @ base, k // 2

    eye = jnp.eye(a.shape[0], dtype=a.dtype)
    return jax.lax.fori_loop(0, _POWER_BITS, body, (eye, a, k))[0]


class QuadraticMoments(eqx.Module):
    """Exact moments at times `ts`: `mean` $(T, d)$, `covariance` $(T, d, d)$ and
    `expected_loss` $\\mathbb E L(\\theta_t)$ $(T,)$ (exact for quadratic $L$)."""

    ts: Float[Array, " T"]
    mean: Float[Array, "T d"]
    covariance: Float[Array, "T d d"]
    expected_loss: Float[Array, " T"]


@eqx.filter_jit
def _moments(sde, problem, flat0, ts, steps, h, continuous: bool, mean0, cov0):
    data = _quadratic_data(problem, flat0)
    hess, xstar, m0, _, _, loss_star = data
    m0 = mean0 - xstar
    big_m0 = cov0 + jnp.outer(m0, m0)
    d = hess.shape[0]
    mat, b = _linear_system(sde, problem, h, continuous, data)
    z0 = jnp.concatenate([_pack(m0, big_m0), jnp.ones(1, m0.dtype)])
    if continuous:
        gen = _affine(mat, b).at[-1, -1].set(0.0)  # d/dt (z, 1) = (K z + b, 0)
        # In the problem's dtype (float64 times would not promote into a float32 generator).
        # One time after another (`lax.map`): `vmap` held a (d^2 + d + 1)^2 matrix per time.
        zs = jax.lax.map(lambda t: jax.scipy.linalg.expm(gen * t.astype(gen.dtype)) @ z0, ts)
    else:
        affine = _affine(mat, b)
        zs = jax.lax.map(lambda k: _power(affine, k) @ z0, steps)
    m, big_m = jax.vmap(lambda z: _unpack(z[:-1], d))(zs)
    mean = xstar[None] + m
    cov = big_m - jnp.einsum("ti,tj->tij", m, m)
    exp_loss = loss_star + 0.5 * jnp.einsum("ij,tji->t", hess, big_m)
    return QuadraticMoments(ts=ts, mean=mean, covariance=cov, expected_loss=exp_loss)


def _same_structure(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        jnp.shape(x) == jnp.shape(y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def _check_start(flat0, cov0) -> None:
    """`ValueError` unless the start's mean is finite and its covariance a finite symmetric
    positive semi-definite matrix (concrete values; the moments of any other are NaN or not
    moments): symmetric to 1e-12 of its largest entry, eigenvalues >= -1e-12 of the largest
    (round-off of a covariance computed elsewhere)."""
    if is_traced((flat0, cov0)):
        return
    mean, cov = np.asarray(flat0, np.float64), np.asarray(cov0, np.float64)
    if not np.all(np.isfinite(mean)):
        raise ValueError("x0 must be finite.")
    if not np.all(np.isfinite(cov)):
        raise ValueError("covariance0 must be finite.")
    scale = float(np.max(np.abs(cov), initial=0.0))
    if np.max(np.abs(cov - cov.T), initial=0.0) > 1e-12 * scale:
        raise ValueError("covariance0 must be symmetric (a covariance matrix).")
    if cov.size and np.linalg.eigvalsh(cov)[0] < -1e-12 * scale:
        raise ValueError(
            "covariance0 must be positive semi-definite (a covariance matrix), got an eigenvalue "
            f"{np.linalg.eigvalsh(cov)[0]:.3g}."
        )


def quadratic_moments(
    sde: SGDNoise,
    problem: Problem,
    ts: Float[Array, " T"],
    *,
    step: float | None = None,
    x0: Params | None = None,
    covariance0: Float[Array, "d d"] | None = None,
) -> QuadraticMoments:
    r"""Exact mean, covariance and $\mathbb E L$ at times `ts` (from $\theta_0$ = `x0`, default
    `problem.params0`, at $t = 0$) of `sde` on `problem`, a finite sum whose per-sample losses
    are quadratic.
    A random start (e.g. the end of a previous phase of a schedule) is given by its mean `x0` and
    `covariance0` (default 0).

    - `step=None`: the SDE of `sde` (linear moment ODE, solved by a matrix exponential);
    - `step=h`: Euler–Maruyama of that SDE with step $h$; `step=sde.learning_rate` is SGD
      itself (times `ts` must then be multiples of $h$, fewer than $2^{40}$ steps) for a model
      with the exact covariance (`"full"` or `"samples"`).

    The noise is the model's: $\kappa S$ for `covariance="full"`/`"samples"`, its diagonal
    $\kappa\,\mathrm{diag}\,S$ for `"diagonal"` (the moments of that SDE, whose correlations
    are dropped); `"lowrank"` has no closed moment equations (`ValueError`).

    One jitted program per problem shape: new step sizes, learning rates, batch sizes and times
    reuse it. For non-quadratic losses the result is the moment dynamics of the linearisation at
    the minimizer found by one Newton step from `x0` (an approximation, which needs a
    positive-definite Hessian at `x0`: start near a minimum). A quadratic with a singular
    Hessian (a constant input's weights, more parameters than samples) is expanded about the
    least-norm Newton step: its null directions move only by the noise that reaches them.

    **Cost:** the moments solve a linear system in $(m, M)$, $d^2 + d + 1$ unknowns: assembled
    in $O(nd^4)$, then $O(d^6)$ per time (a matrix exponential, or a binary power of the
    one-step map). $d \le$ `MAX_MOMENT_DIM` = 32; a network has more parameters: estimate its
    moments by Monte Carlo (`simulate`, or `dynopt.run` of SGD with a batch of keys).

    **Arguments:**

    - `sde`: the `SGDNoise` model.
    - `problem`: a finite-sum problem with quadratic per-sample losses, $d \le 32$ parameters.
    - `ts`: the times, 1-D, finite, $\ge 0$.
    - `step`: `None` (the SDE) or the Euler–Maruyama step $h > 0$.
    - `x0`: the start's mean (`None`: `problem.params0`).
    - `covariance0`: the start's covariance, $(d, d)$ symmetric positive semi-definite (`None`:
      0).

    **Returns:** `QuadraticMoments` (mean, covariance and $\mathbb E L$ at `ts`).

    **Raises:** `ValueError` for `ts` that are not 1-D finite times $\ge 0$, a `step` that is
    not finite and > 0 (or does not divide `ts`, or needs $2^{40}$ steps or more), an `x0`
    unlike `problem.params0` or not finite, a `covariance0` that is not a finite symmetric
    positive semi-definite $(d, d)$ matrix, a learning rate that is not
    one number (a vector would broadcast per coordinate), `covariance="lowrank"`, more than 32
    parameters, a non-quadratic loss whose Hessian at `x0` is not positive definite, or a
    quadratic that decreases linearly along a null direction of its Hessian (no minimum).
    """
    sde.check(problem)
    _check_closes(sde)
    check_unbatched(sde, "quadratic_moments")
    size = ravel_pytree(problem.params0)[0].size
    _check_size(size, "quadratic_moments")
    # x0: parameters like params0, or a raveled mean (as `QuadraticMoments.mean` holds them)
    if x0 is not None and not (_same_structure(x0, problem.params0) or jnp.shape(x0) == (size,)):
        raise ValueError(
            "x0 must have the structure and shapes of problem.params0 "
            f"({jax.tree.map(jnp.shape, problem.params0)}) or be raveled parameters of shape "
            f"({size},), got {jax.tree.map(jnp.shape, x0)}."
        )
    flat0 = ravel_pytree(problem.params0 if x0 is None else x0)[0]
    cov0 = jnp.zeros((flat0.size,) * 2, flat0.dtype) if covariance0 is None else covariance0
    if jnp.shape(cov0) != (flat0.size,) * 2:
        raise ValueError(
            f"covariance0 must be a (d, d) matrix with d = {flat0.size} (the number of "
            f"parameters), got shape {jnp.shape(cov0)}."
        )
    _check_start(flat0, cov0)
    _check_quadratic_model(problem, flat0, "quadratic_moments")
    ts_np = np.asarray(ts, dtype=np.float64)
    if ts_np.ndim != 1 or not np.all(ts_np >= 0) or not np.all(np.isfinite(ts_np)):
        raise ValueError(f"ts must be a 1-D array of finite times >= 0, got {ts_np}.")
    if step is None:
        steps, h = np.zeros(ts_np.shape, int), 0.0
    else:
        h = float(positive("step", step))
        steps = ts_np / h
        if not np.allclose(steps, np.round(steps), rtol=0, atol=1e-6):
            raise ValueError(f"ts must be multiples of step={h:g}.")
        steps = np.round(steps).astype(int)
        if np.any(steps >= _MAX_STEPS):  # `_power` reads 40 bits: more would drop the high ones
            raise ValueError(
                f"ts must be fewer than 2**40 steps of step={h:g}, got {int(steps.max())}; the "
                "moments have long reached their stationary values (quadratic_stationary_"
                "covariance)."
            )
    return _moments(
        _MomentNoise(sde),
        problem,
        flat0,
        jnp.asarray(ts_np),
        jnp.asarray(steps),
        jnp.asarray(h),
        step is None,
        flat0,
        jnp.asarray(cov0, flat0.dtype),
    )


@eqx.filter_jit
def _stationary(sde, problem, flat0, h, continuous: bool, basis):
    data = _quadratic_data(problem, flat0)
    leak = None
    if basis is not None:
        # H singular: on its null space N nothing pulls back, so a stationary law needs the
        # noise to leave N alone (dA_i and dq_i vanish on it; then N stays where it started);
        # the law is that of the range R = span(rng), solved there and mapped back.
        rng, null = basis
        hess, xstar, m0, da, dq, loss_star = data
        leak = jnp.maximum(
            jnp.max(jnp.abs(jnp.einsum("ak,iab->ikb", null, da)), initial=0.0),
            jnp.max(jnp.abs(dq @ null), initial=0.0),
        )
        leak = leak / jnp.maximum(
            jnp.max(jnp.abs(da), initial=0.0) + jnp.max(jnp.abs(dq), initial=0.0),
            jnp.finfo(hess.dtype).tiny,
        )
        project = lambda a: rng.T @ a @ rng
        data = (
            project(hess),
            rng.T @ xstar,
            rng.T @ m0,
            jax.vmap(project)(da),
            dq @ rng,
            loss_star,
        )
    d = data[0].shape[0]
    mat, b = _linear_system(sde, problem, h, continuous, data)
    # Stationary second moment with zero mean: solve on the M block only.
    blk = mat[d:, d:] if continuous else mat[d:, d:] - jnp.eye(d * d, dtype=mat.dtype)
    big_m = jnp.linalg.solve(blk, -b[d:]).reshape(d, d)
    if not continuous:
        rho = jnp.max(jnp.abs(jnp.linalg.eigvals(mat[d:, d:])))
        big_m = jnp.where(rho < 1, big_m, jnp.nan)
    if basis is not None:
        big_m = basis[0] @ big_m @ basis[0].T
    return big_m, leak


def quadratic_stationary_covariance(
    sde: SGDNoise, problem: Problem, *, step: float | None = None
) -> Float[Array, "d d"]:
    r"""The exact stationary covariance $M$: $HM + MH - hHMH = \kappa S(0, M)$ with $h$ = `step`
    (`None`: the SDE, $h = 0$; `sde.learning_rate`: SGD). `nan` if the recursion is unstable.
    For `covariance="diagonal"` the noise is $\kappa\,\mathrm{diag}\,S(0, M)$, as in
    `quadratic_moments`.

    A singular Hessian (a dead input's weights, more parameters than samples) leaves its null
    directions without restoring force: where the noise does not reach them (per-sample
    Hessians and gradients zero along them, as for a constant input) they keep their start
    and $M$ is zero there, the law being solved on the range of $H$; where it does, there is
    no stationary law (`ValueError`).

    **Arguments:**

    - `sde`: the `SGDNoise` model.
    - `problem`: a finite-sum problem with quadratic per-sample losses, $d \le 32$ parameters.
    - `step`: `None` (the SDE) or the step $h > 0$.

    **Returns:** $M$, shape $(d, d)$ (`nan` if the recursion is unstable).

    **Raises:** `ValueError` for a `step` that is not finite and > 0 (as `quadratic_moments`),
    a learning rate that is not one number, `covariance="lowrank"` (no closed moment
    equations), more than `MAX_MOMENT_DIM` = 32 parameters (as `quadratic_moments`), a
    non-quadratic loss whose Hessian at `problem.params0` is not positive definite (as
    `quadratic_moments`), or a singular Hessian whose null directions the noise drives."""
    sde.check(problem)
    _check_closes(sde)
    check_unbatched(sde, "quadratic_stationary_covariance")
    flat0 = ravel_pytree(problem.params0)[0]
    _check_size(flat0.size, "quadratic_stationary_covariance")
    h = 0.0 if step is None else float(positive("step", step, hint="step=None is the SDE (h = 0)."))
    spaces = _check_quadratic_model(problem, flat0, "quadratic_stationary_covariance")
    basis = None
    if spaces is not None and spaces[1].shape[1]:
        basis = tuple(jnp.asarray(v, flat0.dtype) for v in spaces)
    noise = _MomentNoise(sde)
    big_m, leak = _stationary(noise, problem, flat0, jnp.asarray(h), step is None, basis)
    # The noise along the null space, relative to its size: zero to rounding where it is none.
    if (
        leak is not None
        and not is_traced(leak)
        and float(leak) > np.sqrt(np.finfo(flat0.dtype).eps)
    ):
        raise ValueError(
            f"quadratic_stationary_covariance: the Hessian is singular ({basis[1].shape[1]} zero "
            f"eigenvalues of {flat0.size}) and the gradient noise drives its null directions "
            f"(relative size {float(leak):.3g}): nothing pulls them back, their variance grows "
            "without bound and there is no stationary law. quadratic_moments gives the "
            "moments at finite times."
        )
    return big_m


def _check_phases(phases) -> list[tuple]:
    r"""`phases` as `(eta, batch, steps)` triples with integer batch sizes $\ge 1$ and step
    counts $\ge 0$ (`int()` would truncate a batch of 2.5 to 2: another schedule); else
    `ValueError` naming the phase. `eta` is checked by `SGDNoise`."""
    try:
        phases = [tuple(p) for p in phases]
    except TypeError:
        phases = None
    if not phases or any(len(p) != 3 for p in phases):
        raise ValueError(
            f"phases must be a non-empty sequence of (eta, batch, steps) triples, got {phases!r}."
        )
    for k, (_, batch, n) in enumerate(phases):
        positive_int(f"phases[{k}]'s batch", batch)
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"phases[{k}]'s steps must be an integer >= 0, got {n!r}.")
    return [(eta, int(batch), int(n)) for eta, batch, n in phases]


def scheduled_moments(
    problem: Problem, phases, *, replace: bool | None = None
) -> tuple[np.ndarray, Float[Array, " d"], Float[Array, "d d"]]:
    r"""Exact moments of SGD through a schedule of constant phases $(\eta_k, B_k, n_k)$: phase $k$
    runs $n_k$ steps of `SGDNoise(η_k, B_k, replace=replace)` from the mean and covariance that
    phase $k-1$ ends with (the first from $\theta_0$), by the recursion of `quadratic_moments`.
    Every phase is evaluated on the longest phase's grid $\eta_k\{0, \dots, \max_j n_j\}$ and cut
    at its end, so all phases share one compiled program.

    **Arguments:** `problem` (a quadratic finite sum), `phases`: `(eta, batch, steps)` triples,
    `replace`: `True` (sampling with replacement), `False` (without), or `None` (default): the
    problem's own scheme, as its `stochastic_loss` draws (`problems.finite_sum`'s `replace`;
    without replacement, `SGDNoise`'s default, for a problem `finite_sum` did not build).

    **Returns:** `(expected_loss, mean, covariance)`: $\mathbb E L$ at the start and after each of
    the $\sum_k n_k$ updates, and the final mean and covariance.

    **Raises:** `ValueError` for `phases` that are not a non-empty sequence of triples, a batch
    that is not an integer $\ge 1$, a step count that is not an integer $\ge 0$, or what
    `SGDNoise` and `quadratic_moments` refuse.
    """
    if replace is None:
        replace = bool(_samples_with_replacement(problem))
    phases = _check_phases(phases)
    mean = cov = None
    losses = []
    longest = max(n for *_, n in phases)
    for k, (eta, batch, n) in enumerate(phases):
        model = SGDNoise(eta, batch, replace=replace)
        ts = eta * np.arange(longest + 1)
        mom = quadratic_moments(model, problem, ts, step=eta, x0=mean, covariance0=cov)
        # Cut on the host: indexing the device arrays compiles a program per index.
        mean, cov = np.asarray(mom.mean)[n], np.asarray(mom.covariance)[n]
        loss = np.asarray(mom.expected_loss)[: n + 1]
        losses.append(loss if k == 0 else loss[1:])
    return np.concatenate(losses), jnp.asarray(mean), jnp.asarray(cov)
