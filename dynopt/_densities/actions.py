r"""The Onsager–Machlup action of the 1-D SDE $dx = p\,dt + \sqrt\alpha\,dW$ and its boundary
form (post 7, eqs. 56–69): the midpoint action of a discretised path, eq. (66) for a smooth path,
its rewriting (67) into a bulk term with the potential $V$ of eq. (69) and a boundary factor, and
Mehler's harmonic-oscillator kernel (eq. 57)."""

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Float, Scalar, ScalarLike
from .._validation import positive
from .base import _GL_NODES, _GL_WEIGHTS, antiderivative, ScalarSDE


def mehler_kernel(
    xb: ScalarLike, xa: ScalarLike, T: ScalarLike, alpha: ScalarLike
) -> Float[Array, ""]:
    r"""The Euclidean harmonic-oscillator kernel $K$ of eq. (57),
    $K = (2\pi\alpha\sinh T)^{-1/2}\exp\{-[(x_a^2+x_b^2)\cosh T - 2x_ax_b]/(2\alpha\sinh T)\}$.

    Post 7's linear-SDE propagator is $e^{-T/2}\,e^{(x_b^2-x_a^2)/2\alpha}\,K$: the boundary
    factor of eq. (56), the constant Jacobian (64) with $\partial_x p = 1$, and this kernel.

    **Raises:** `ValueError` for $\alpha \le 0$ or $T \le 0$ (an `eqx.error_if` error under
    `jit`/`vmap`)."""
    # The checked values (under jit/vmap each carries its check).
    alpha, T = positive("alpha", alpha), positive("T", T)
    s, c = jnp.sinh(T), jnp.cosh(T)
    return jnp.exp(-((xa**2 + xb**2) * c - 2 * xa * xb) / (2 * alpha * s)) / jnp.sqrt(
        2 * jnp.pi * alpha * s
    )


@eqx.filter_jit
def onsager_machlup_action(
    sde: ScalarSDE, ts: Float[Array, " n+1"], xs: Float[Array, " n+1"]
) -> Scalar:
    r"""The Onsager–Machlup action (eqs. 65–66) of a discretised path $(t_k, x_k)$, midpoint rule:
    $$S[x] = \sum_k \Big[\frac{(x_k - x_{k-1} - \epsilon_k p(\bar x_k,\bar t_k))^2}
      {2\alpha\epsilon_k}
      + \frac{\epsilon_k}{2}\,\partial_x p(\bar x_k, \bar t_k)\Big]
      \approx \frac1{2\alpha}\int [(\dot x - p)^2 + \alpha\,\partial_x p]\,dt,$$
    so that the path weight is $e^{-S}$ (up to the normalisation $(2\pi\alpha\epsilon)^{-n/2}$).
    """
    ts, xs = jnp.asarray(ts, float), jnp.asarray(xs, float)
    eps, dx = jnp.diff(ts), jnp.diff(xs)
    xb, tb = 0.5 * (xs[1:] + xs[:-1]), 0.5 * (ts[1:] + ts[:-1])
    pb = jax.vmap(sde.p)(xb, tb)
    dpb = jax.vmap(sde.dp_dx)(xb, tb)
    return jnp.sum((dx - eps * pb) ** 2 / (2 * sde.alpha * eps) + 0.5 * eps * dpb)


def potential_V(sde: ScalarSDE, x: ScalarLike, t: ScalarLike) -> Scalar:
    r"""Eq. (69): $V(x,t) = -\tfrac12(\alpha\,\partial_xp + p^2) - \int_0^x \partial_t p\,dy$."""
    dtp = jax.grad(lambda s, y: sde.p(y, s))
    return -0.5 * (sde.alpha * sde.dp_dx(x, t) + sde.p(x, t) ** 2) - antiderivative(
        lambda y: dtp(jnp.asarray(t, float), y), x
    )


def _gauss_legendre(ta, tb):
    ta, tb = jnp.asarray(ta, float), jnp.asarray(tb, float)
    half = 0.5 * (tb - ta)
    return ta + half * (jnp.asarray(_GL_NODES) + 1.0), half * jnp.asarray(_GL_WEIGHTS)


@eqx.filter_jit
def action_eq66(sde: ScalarSDE, path, ta: ScalarLike, tb: ScalarLike) -> Scalar:
    r"""Eq. (66): $S = \frac1\alpha\int_{t_a}^{t_b}[\tfrac12\dot x^2 - \dot xp + \tfrac12p^2 +
    \tfrac12\alpha\partial_xp]\,dt$ for a smooth `path` $t\mapsto x(t)$ ($\dot x$ by autodiff,
    48-point Gauss–Legendre in $t$); the path weight is $e^{-S}$."""
    ts, ws = _gauss_legendre(ta, tb)

    def integrand(t):
        x, xd = jax.jvp(path, (t,), (jnp.ones_like(t),))
        p = sde.p(x, t)
        return 0.5 * xd**2 - xd * p + 0.5 * p**2 + 0.5 * sde.alpha * sde.dp_dx(x, t)

    return jnp.sum(ws * jax.vmap(integrand)(ts)) / sde.alpha


@eqx.filter_jit
def action_eq68(sde: ScalarSDE, path, ta: ScalarLike, tb: ScalarLike) -> Scalar:
    r"""The same action rewritten with eq. (67) into eqs. (68)–(69):
    $$S = \frac1\alpha\int_{t_a}^{t_b}\big(\tfrac12\dot x^2 - V(x,t)\big)dt
      - \frac1\alpha\big[\Phi(x_b,t_b) - \Phi(x_a,t_a)\big],\qquad
      \Phi(x,t) = \int_0^x p(y,t)\,dy,$$
    i.e. $e^{-S}$ = bulk weight × the boundary factor $\exp(\frac1\alpha\int_{x_a}^{x_b}p\,dx)$
    (for time-dependent $p$, $\Phi$ at the two end times; the $\partial_tp$ part sits in $V$)."""
    ts, ws = _gauss_legendre(ta, tb)

    def integrand(t):
        x, xd = jax.jvp(path, (t,), (jnp.ones_like(t),))
        return 0.5 * xd**2 - potential_V(sde, x, t)

    bulk = jnp.sum(ws * jax.vmap(integrand)(ts)) / sde.alpha
    return bulk - boundary_term(sde, path, ta, tb)


def boundary_term(sde: ScalarSDE, path, ta: ScalarLike, tb: ScalarLike) -> Scalar:
    r"""$\frac1\alpha[\Phi(x_b,t_b)-\Phi(x_a,t_a)]$, $\Phi(x,t)=\int_0^x p(y,t)\,dy$."""
    ta, tb = jnp.asarray(ta, float), jnp.asarray(tb, float)
    phi_b = antiderivative(lambda y: sde.p(y, tb), path(tb))
    phi_a = antiderivative(lambda y: sde.p(y, ta), path(ta))
    return (phi_b - phi_a) / sde.alpha
