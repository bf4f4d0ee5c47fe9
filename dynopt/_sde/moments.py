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
from .sgd import _samples_with_replacement, SGDNoise


def _quadratic_data(p: Problem, flat0: Float[Array, " d"]):
    unravel = ravel_pytree(p.params0)[1]

    def loss(y):
        return p.loss(unravel(y))

    def sample_loss(y, sample):
        return p.sample_loss_fn(unravel(y), sample)

    h = jax.hessian(loss)(flat0)
    xstar = flat0 - jnp.linalg.solve(h, jax.grad(loss)(flat0))  # one Newton step: exact
    data = data_like_params(p.data, unravel(xstar))
    a = jax.vmap(jax.hessian(sample_loss), in_axes=(None, 0))(xstar, data)
    q = jax.vmap(jax.grad(sample_loss), in_axes=(None, 0))(xstar, data)
    da = a - jnp.mean(a, axis=0, keepdims=True)
    dq = q - jnp.mean(q, axis=0, keepdims=True)
    return h, xstar, flat0 - xstar, da, dq, loss(xstar)


@eqx.filter_jit
def _curvature(p: Problem, flat0: Float[Array, " d"]):
    r"""The eigenvalues of $H(\theta_0)$ and $\max|H(\theta^*) - H(\theta_0)|$ over the Newton
    step $\theta^*$ of `_quadratic_data` (zero to rounding for a quadratic loss)."""
    unravel = ravel_pytree(p.params0)[1]

    def loss(y):
        return p.loss(unravel(y))

    h0 = jax.hessian(loss)(flat0)
    xstar = flat0 - jnp.linalg.solve(h0, jax.grad(loss)(flat0))
    return jnp.linalg.eigvalsh(h0), jnp.max(jnp.abs(jax.hessian(loss)(xstar) - h0))


def _check_quadratic_model(p: Problem, flat0: Float[Array, " d"], who: str) -> None:
    r"""`ValueError` for a non-quadratic loss whose Hessian at $\theta_0$ is not positive
    definite: its quadratic model at the Newton step has no minimizer (a saddle, or no point at
    all), and the moments of that model are no approximation of SGD's (on a tanh network they
    gave $\mathbb E L = -19$ for a squared loss). A quadratic is exact at any curvature."""
    if is_traced((p, flat0)):
        return
    eigenvalues, moved = _curvature(p, flat0)
    eigenvalues = np.asarray(eigenvalues)
    scale = float(np.max(np.abs(eigenvalues)))
    # Positive definite beyond rounding: numpy's rank tolerance, d * eps * |lambda|_max.
    floor = eigenvalues.size * np.finfo(eigenvalues.dtype).eps * scale
    # A quadratic's Hessian is the same at theta* to rounding (n eps |H| for n samples);
    # sqrt(eps) relative is far above that.
    quadratic = bool(moved <= np.sqrt(np.finfo(eigenvalues.dtype).eps) * scale)
    if eigenvalues[0] <= floor and not quadratic:
        raise ValueError(
            f"{who} approximates a non-quadratic loss by its quadratic model at the minimizer "
            "one Newton step from x0, which needs a positive-definite Hessian at x0; its "
            f"smallest eigenvalue there is {eigenvalues[0]:.3g} (largest {eigenvalues[-1]:.3g}):"
            " the model has no minimizer and its moments do not approximate SGD's. Pass an x0 "
            "at (or near) a minimum, e.g. trained parameters, or estimate the moments by Monte "
            "Carlo (dynopt.sde.simulate, dynopt.run with a batch of keys)."
        )


def _noise_mean(m, big_m, da, dq):
    n = da.shape[0]
    amq = jnp.einsum("ijk,k,il->ijl", da, m, dq)
    s = jnp.einsum("ijk,kl,ilm->jm", da, big_m, da) + jnp.einsum("ij,ik->jk", dq, dq)
    return (s + jnp.sum(amq, axis=0) + jnp.sum(amq, axis=0).T) / n


def _pack(m, big_m):
    return jnp.concatenate([m, big_m.ravel()])


def _unpack(z, d):
    return z[:d], z[d:].reshape(d, d)


def _diffusion_mean(sde, m, big_m, da, dq):
    r"""$\mathbb E[GG^\top]/\kappa$ for the model's diffusion factor $G$: $S(m, M)$, or its
    diagonal for `covariance="diagonal"` ($G G^\top = \kappa\,\mathrm{diag}\,\Sigma(\theta)$,
    linear in $\Sigma$, so its mean is $\mathrm{diag}\,S$)."""
    s = _noise_mean(m, big_m, da, dq)
    return jnp.diag(jnp.diag(s)) if sde.covariance == "diagonal" else s


def _check_closes(sde: SGDNoise) -> None:
    # The top-r projection of Sigma(theta) is not linear in theta theta^T: no closed moment
    # recursion (with the full S the result would be the moments of another SDE).
    if sde.covariance == "lowrank":
        raise ValueError(
            "covariance='lowrank' has no closed moment equations (the top-rank projection of "
            "Sigma(theta) is not linear in the second moment); use covariance='full', "
            "'samples' or 'diagonal', or estimate the moments with dynopt.sde.simulate."
        )


def _linear_system(sde, problem, h, continuous: bool, data):
    """The moment dynamics as z' = K z + b (continuous) or z+ = F z + b (step h): (K or F, b)."""
    hess, _, _, da, dq, _ = data
    d = hess.shape[0]
    kappa = sde.noise_scale(problem).astype(hess.dtype)
    eye = jnp.eye(d, dtype=hess.dtype)

    def rhs(z):
        m, big_m = _unpack(z, d)
        s = _diffusion_mean(sde, m, big_m, da, dq)
        if continuous:
            dm = -hess @ m
            dbig = -hess @ big_m - big_m @ hess + kappa * s
        else:
            step = eye - h * hess
            dm = step @ m
            dbig = step @ big_m @ step + h * kappa * s
        return _pack(dm, dbig)

    zero = jnp.zeros(d + d * d, hess.dtype)
    return jax.jacfwd(rhs)(zero), rhs(zero)


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
        zs = jax.vmap(lambda t: jax.scipy.linalg.expm(gen * t.astype(gen.dtype)) @ z0)(ts)
    else:
        zs = jax.vmap(lambda k: _power(_affine(mat, b), k) @ z0)(steps)
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
    positive-definite Hessian at `x0`: start near a minimum).

    **Raises:** `ValueError` for `ts` that are not 1-D finite times $\ge 0$, a `step` that is
    not finite and > 0 (or does not divide `ts`, or needs $2^{40}$ steps or more), an `x0`
    unlike `problem.params0` or not finite, a `covariance0` that is not a finite symmetric
    positive semi-definite $(d, d)$ matrix, a learning rate that is not
    one number (a vector would broadcast per coordinate), `covariance="lowrank"`, or a
    non-quadratic loss whose Hessian at `x0` is not positive definite.
    """
    sde.check(problem)
    _check_closes(sde)
    check_unbatched(sde, "quadratic_moments")
    size = ravel_pytree(problem.params0)[0].size
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
        sde,
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
def _stationary(sde, problem, flat0, h, continuous: bool):
    data = _quadratic_data(problem, flat0)
    d = data[0].shape[0]
    mat, b = _linear_system(sde, problem, h, continuous, data)
    # Stationary second moment with zero mean: solve on the M block only.
    blk = mat[d:, d:] if continuous else mat[d:, d:] - jnp.eye(d * d, dtype=mat.dtype)
    big_m = jnp.linalg.solve(blk, -b[d:]).reshape(d, d)
    if continuous:
        return big_m
    rho = jnp.max(jnp.abs(jnp.linalg.eigvals(mat[d:, d:])))
    return jnp.where(rho < 1, big_m, jnp.nan)


def quadratic_stationary_covariance(
    sde: SGDNoise, problem: Problem, *, step: float | None = None
) -> Float[Array, "d d"]:
    r"""The exact stationary covariance $M$: $HM + MH - hHMH = \kappa S(0, M)$ with $h$ = `step`
    (`None`: the SDE, $h = 0$; `sde.learning_rate`: SGD). `nan` if the recursion is unstable.
    For `covariance="diagonal"` the noise is $\kappa\,\mathrm{diag}\,S(0, M)$, as in
    `quadratic_moments`.

    **Raises:** `ValueError` for a `step` that is not finite and > 0 (as `quadratic_moments`),
    a learning rate that is not one number, `covariance="lowrank"` (no closed moment
    equations), or a non-quadratic loss whose Hessian at `problem.params0` is not positive
    definite (as `quadratic_moments`)."""
    sde.check(problem)
    _check_closes(sde)
    check_unbatched(sde, "quadratic_stationary_covariance")
    flat0 = ravel_pytree(problem.params0)[0]
    h = 0.0 if step is None else float(positive("step", step, hint="step=None is the SDE (h = 0)."))
    _check_quadratic_model(problem, flat0, "quadratic_stationary_covariance")
    return _stationary(sde, problem, flat0, jnp.asarray(h), step is None)


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
        mean, cov, loss = mom.mean[n], mom.covariance[n], np.asarray(mom.expected_loss[: n + 1])
        losses.append(loss if k == 0 else loss[1:])
    return np.concatenate(losses), mean, cov
