r"""The Onsager–Machlup action of the 1-D SDE $dx = p\,dt + \sqrt\alpha\,dW$ and its boundary
form (post 7, eqs. 56–69): the midpoint action of a discretised path, eq. (66) for a smooth path,
its rewriting (67) into a bulk term with the potential $V$ of eq. (69) and a boundary factor, and
Mehler's harmonic-oscillator kernel (eq. 57)."""

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Float, Scalar, ScalarLike
from .._validation import check, function, increasing, interval, is_traced, positive
from .base import _GL_NODES, _GL_WEIGHTS, antiderivative, ScalarSDE


def mehler_kernel(
    xb: ScalarLike, xa: ScalarLike, T: ScalarLike, alpha: ScalarLike
) -> Float[Array, ""]:
    r"""The Euclidean harmonic-oscillator kernel $K$ of eq. (57),
    $K = (2\pi\alpha\sinh T)^{-1/2}\exp\{-[(x_a^2+x_b^2)\cosh T - 2x_ax_b]/(2\alpha\sinh T)\}$.

    Post 7's linear-SDE propagator is $e^{-T/2}\,e^{(x_b^2-x_a^2)/2\alpha}\,K$: the boundary
    factor of eq. (56), the constant Jacobian (64) with $\partial_x p = 1$, and this kernel.

    **Arguments:**

    - `xb`, `xa`: the end and start points, finite.
    - `T`: the time $T > 0$.
    - `alpha`: the variance rate $\alpha > 0$.

    **Raises:** `ValueError` for $\alpha \le 0$, $T \le 0$ or points $x_a$, $x_b$ that are
    not finite (an `eqx.error_if` error under `jit`/`vmap`)."""
    # The checked values (under jit/vmap each carries its check).
    alpha, T = positive("alpha", alpha), positive("T", T)
    xb, xa = interval("xb", xb), interval("xa", xa)
    s, c = jnp.sinh(T), jnp.cosh(T)
    return jnp.exp(-((xa**2 + xb**2) * c - 2 * xa * xb) / (2 * alpha * s)) / jnp.sqrt(
        2 * jnp.pi * alpha * s
    )


def _check_sde(sde) -> None:
    if not isinstance(sde, ScalarSDE):
        raise ValueError(
            "sde must be a dynopt.densities.ScalarSDE (dx = p(x, t) dt + sqrt(alpha) dW), got "
            f"{type(sde).__name__}."
        )


def _check_scalar(name: str, value):
    """`value` real, finite (a NaN time or point made the action NaN, or was dropped silently
    by a time-independent drift) and a scalar; traced: checked inside `jit` (`interval`)."""
    value = interval(name, value)
    if jnp.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(value)}.")
    return value


def _check_path(sde, path, ta, tb):
    """The checks of a smooth-path action on $[t_a, t_b]$: `sde` a `ScalarSDE`, `path` a
    function of a scalar time to a scalar, $t_a < t_b$ finite. The action is that of the
    transition forward in time from $t_a$ to $t_b$, with path weight $e^{-S}$: reversed limits
    gave $-S$ (a weight above 1), an empty interval $S = 0$."""
    _check_sde(sde)
    function("path", path, "callable t -> x(t) (a smooth scalar path)")
    ta, tb = _check_scalar("ta", ta), _check_scalar("tb", tb)
    msg = "tb must be > ta (the action of a path forward in time from ta to tb), got {}."
    if is_traced((ta, tb)):
        tb = check(tb, tb <= ta, msg.format("tb <= ta (inside jit/vmap)"))
    elif not float(tb) > float(ta):
        raise ValueError(msg.format(f"ta={float(ta):g}, tb={float(tb):g}"))
    shape = jax.eval_shape(path, jax.ShapeDtypeStruct((), jnp.result_type(float))).shape
    if shape != ():
        raise ValueError(f"path must map a time t to a scalar x(t), got shape {shape}.")
    return ta, tb


def onsager_machlup_action(
    sde: ScalarSDE, ts: Float[Array, " n+1"], xs: Float[Array, " n+1"]
) -> Scalar:
    r"""The Onsager–Machlup action (eqs. 65–66) of a discretised path $(t_k, x_k)$, midpoint rule:
    $$S[x] = \sum_k \Big[\frac{(x_k - x_{k-1} - \epsilon_k p(\bar x_k,\bar t_k))^2}
      {2\alpha\epsilon_k}
      + \frac{\epsilon_k}{2}\,\partial_x p(\bar x_k, \bar t_k)\Big]
      \approx \frac1{2\alpha}\int [(\dot x - p)^2 + \alpha\,\partial_x p]\,dt,$$
    so that the path weight is $e^{-S}$ (up to the normalisation $(2\pi\alpha\epsilon)^{-n/2}$).

    **Arguments:**

    - `sde`: a `ScalarSDE` with drift $p$ and variance rate $\alpha$.
    - `ts`: the times $t_0 < \dots < t_n$, shape $(n + 1,)$, $n \ge 1$.
    - `xs`: the path's points $x_k$, shape $(n + 1,)$, finite.

    **Raises:** `ValueError` for an `sde` that is no `ScalarSDE`, `ts` that are not at least
    two finite, strictly increasing times ($\epsilon_k > 0$: a NaN time made $S$ NaN), or
    `xs` that are not finite or not of the shape of `ts` (traced: checked inside `jit`).
    """
    _check_sde(sde)
    if is_traced(ts):
        if jnp.ndim(ts) != 1 or jnp.shape(ts)[0] < 2:
            raise ValueError(f"ts must be a 1-D array of >= 2 times, got shape {jnp.shape(ts)}.")
        ts = check(ts, ~jnp.all(jnp.diff(ts) > 0), "ts must be finite and strictly increasing.")
    else:
        increasing("ts", ts, min_size=2)
    xs = interval("xs", xs)
    if jnp.shape(xs) != jnp.shape(ts):
        raise ValueError(
            f"xs must hold one point per time, shape {jnp.shape(ts)}, got {jnp.shape(xs)}."
        )
    return _onsager_machlup_action(sde, ts, xs)


@eqx.filter_jit
def _onsager_machlup_action(sde: ScalarSDE, ts, xs) -> Scalar:
    ts, xs = jnp.asarray(ts, float), jnp.asarray(xs, float)
    eps, dx = jnp.diff(ts), jnp.diff(xs)
    xb, tb = 0.5 * (xs[1:] + xs[:-1]), 0.5 * (ts[1:] + ts[:-1])
    pb = jax.vmap(sde.p)(xb, tb)
    dpb = jax.vmap(sde.dp_dx)(xb, tb)
    return jnp.sum((dx - eps * pb) ** 2 / (2 * sde.alpha * eps) + 0.5 * eps * dpb)


def potential_V(sde: ScalarSDE, x: ScalarLike, t: ScalarLike) -> Scalar:
    r"""Eq. (69): $V(x,t) = -\tfrac12(\alpha\,\partial_xp + p^2) - \int_0^x \partial_t p\,dy$.

    **Arguments:**

    - `sde`: a `ScalarSDE` with drift $p$ and variance rate $\alpha$.
    - `x`, `t`: the point and time, finite scalars.

    **Raises:** `ValueError` for an `sde` that is no `ScalarSDE`, or an `x` or `t` that is not
    a finite scalar (traced: checked inside `jit`)."""
    _check_sde(sde)
    return _potential_V(sde, _check_scalar("x", x), _check_scalar("t", t))


def _potential_V(sde: ScalarSDE, x, t) -> Scalar:
    dtp = jax.grad(lambda s, y: sde.p(y, s))
    return -0.5 * (sde.alpha * sde.dp_dx(x, t) + sde.p(x, t) ** 2) - antiderivative(
        lambda y: dtp(jnp.asarray(t, float), y), x
    )


def _gauss_legendre(ta, tb):
    ta, tb = jnp.asarray(ta, float), jnp.asarray(tb, float)
    half = 0.5 * (tb - ta)
    return ta + half * (jnp.asarray(_GL_NODES) + 1.0), half * jnp.asarray(_GL_WEIGHTS)


def action_eq66(sde: ScalarSDE, path, ta: ScalarLike, tb: ScalarLike) -> Scalar:
    r"""Eq. (66): $S = \frac1\alpha\int_{t_a}^{t_b}[\tfrac12\dot x^2 - \dot xp + \tfrac12p^2 +
    \tfrac12\alpha\partial_xp]\,dt$ for a smooth `path` $t\mapsto x(t)$ ($\dot x$ by autodiff,
    48-point Gauss–Legendre in $t$) from $t_a$ to $t_b > t_a$; the path weight is $e^{-S}$.

    **Arguments:**

    - `sde`: a `ScalarSDE` with drift $p$ and variance rate $\alpha$.
    - `path`: a smooth function $t \mapsto x(t)$, scalar to scalar.
    - `ta`, `tb`: the end times, finite, $t_a < t_b$.

    **Raises:** `ValueError` for an `sde` that is no `ScalarSDE`, a `path` that is not a
    function of a scalar time to a scalar, or times that are not finite scalars with
    $t_a < t_b$ (the transition forward in time; traced: checked inside `jit`)."""
    return _action_eq66(sde, path, *_check_path(sde, path, ta, tb))


def _along(path, ta, tb, integrand) -> Scalar:
    r"""$\int_{t_a}^{t_b}$ `integrand`$(x, \dot x, t)\,dt$ along `path` (48-point Gauss–Legendre,
    $\dot x$ by `jax.jvp`)."""
    ts, ws = _gauss_legendre(ta, tb)

    def one(t):
        x, xd = jax.jvp(path, (t,), (jnp.ones_like(t),))
        return integrand(x, xd, t)

    return jnp.sum(ws * jax.vmap(one)(ts))


@eqx.filter_jit
def _action_eq66(sde: ScalarSDE, path, ta, tb) -> Scalar:
    def integrand(x, xd, t):
        p = sde.p(x, t)
        return 0.5 * xd**2 - xd * p + 0.5 * p**2 + 0.5 * sde.alpha * sde.dp_dx(x, t)

    return _along(path, ta, tb, integrand) / sde.alpha


def action_eq68(sde: ScalarSDE, path, ta: ScalarLike, tb: ScalarLike) -> Scalar:
    r"""The same action rewritten with eq. (67) into eqs. (68)–(69):
    $$S = \frac1\alpha\int_{t_a}^{t_b}\big(\tfrac12\dot x^2 - V(x,t)\big)dt
      - \frac1\alpha\big[\Phi(x_b,t_b) - \Phi(x_a,t_a)\big],\qquad
      \Phi(x,t) = \int_0^x p(y,t)\,dy,$$
    i.e. $e^{-S}$ = bulk weight × the boundary factor $\exp(\frac1\alpha\int_{x_a}^{x_b}p\,dx)$
    (for time-dependent $p$, $\Phi$ at the two end times; the $\partial_tp$ part sits in $V$).

    **Arguments:**

    - `sde`: a `ScalarSDE` with drift $p$ and variance rate $\alpha$.
    - `path`: a smooth function $t \mapsto x(t)$, scalar to scalar.
    - `ta`, `tb`: the end times, finite, $t_a < t_b$.

    **Raises:** as `action_eq66`."""
    return _action_eq68(sde, path, *_check_path(sde, path, ta, tb))


@eqx.filter_jit
def _action_eq68(sde: ScalarSDE, path, ta, tb) -> Scalar:
    def integrand(x, xd, t):
        return 0.5 * xd**2 - _potential_V(sde, x, t)

    bulk = _along(path, ta, tb, integrand) / sde.alpha
    return bulk - _boundary_term(sde, path, ta, tb)


def boundary_term(sde: ScalarSDE, path, ta: ScalarLike, tb: ScalarLike) -> Scalar:
    r"""$\frac1\alpha[\Phi(x_b,t_b)-\Phi(x_a,t_a)]$, $\Phi(x,t)=\int_0^x p(y,t)\,dy$: the
    boundary part of `action_eq68`'s action from $t_a$ to $t_b$.

    **Arguments:**

    - `sde`: a `ScalarSDE` with drift $p$ and variance rate $\alpha$.
    - `path`: a smooth function $t \mapsto x(t)$, scalar to scalar.
    - `ta`, `tb`: the end times, finite, $t_a < t_b$.

    **Raises:** as `action_eq66`."""
    return _boundary_term(sde, path, *_check_path(sde, path, ta, tb))


def _boundary_term(sde: ScalarSDE, path, ta, tb) -> Scalar:
    ta, tb = jnp.asarray(ta, float), jnp.asarray(tb, float)
    phi_b = antiderivative(lambda y: sde.p(y, tb), path(tb))
    phi_a = antiderivative(lambda y: sde.p(y, ta), path(ta))
    return (phi_b - phi_a) / sde.alpha
