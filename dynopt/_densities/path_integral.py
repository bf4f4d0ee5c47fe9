r"""Route (c): the time-sliced path integral, and the Onsager–Machlup action (post 7, eqs. 59–69).

Slice $[t_a, t_b]$ into $n$ steps $\epsilon = (t_b-t_a)/n$. Each convention is a one-step
scheme $x_k - x_{k-1} - \epsilon\,\bar p_k = \sqrt\alpha\,\Delta W_k$; changing variables
$\Delta W_k \to x_k$ gives the short-time propagator
$$K_\epsilon(x_k \mid x_{k-1}) = \frac{1}{\sqrt{2\pi\alpha\epsilon}}
  \exp\Big(-\frac{(x_k - x_{k-1} - \epsilon\bar p_k)^2}{2\alpha\epsilon}\Big)
  \Big|\frac{\partial(\sqrt\alpha\,\Delta W_k)}{\partial x_k}\Big| ,$$
with its own Jacobian (eq. 62):

- `"ito"` (pre-point): $\bar p_k = p(x_{k-1}, t_{k-1})$; Jacobian 1 (constant: no
  $\partial_x p$ term).
- `"midpoint"` (Onsager–Machlup): $\bar p_k = p(\bar x_k, t_{k-1}+\epsilon/2)$,
  $\bar x_k = (x_k+x_{k-1})/2$; Jacobian $1-\tfrac\epsilon2\partial_xp(\bar x_k)
  \approx e^{-\epsilon\partial_xp/2}$.
- `"trapezoid"` (eq. 60): $\bar p_k = \tfrac12[p(x_k,t_k)+p(x_{k-1},t_{k-1})]$; Jacobian
  $1-\tfrac\epsilon2\partial_xp(x_k,t_k)$ (eq. 62).

The product of Jacobians is eq. (63) → (64), $\exp(-\tfrac12\int\partial_xp\,dt)$, the
$\alpha\partial_xp$ term of the action (65). [note] Each convention is consistent only with its own
Jacobian: the midpoint rule *without* it (`jacobian=False`) converges to the wrong density (for
$p = x$, to $e^{T/2}$ times the right one), while the Itô rule needs none.

$P(x, t_b \mid x_0) = \int K_\epsilon(x\mid x_{n-1})\cdots K_\epsilon(x_1\mid x_0)\,dx_1\cdots
dx_{n-1}$, each integral a trapezoid sum on the uniform grid (spectrally accurate for Gaussians
once $h \lesssim \sqrt{\alpha\epsilon}$).
"""

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Float, Scalar, ScalarLike
from .base import (
    _GL_NODES,
    _GL_WEIGHTS,
    antiderivative,
    check_lost_mass,
    check_positive,
    check_uniform_grid,
    GridDensity,
    ScalarSDE,
)


Convention = Literal["ito", "midpoint", "trapezoid"]
_CONVENTIONS = ("ito", "midpoint", "trapezoid")


def short_time_propagator(
    sde: ScalarSDE,
    x_new: ScalarLike,
    x_old: ScalarLike,
    t_old: ScalarLike,
    eps: ScalarLike,
    convention: Convention = "midpoint",
    jacobian: bool = True,
) -> Scalar:
    r"""$K_\epsilon(x_{new}\mid x_{old})$ of one slice in the given convention (table above)."""
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {_CONVENTIONS}, got {convention!r}.")
    xn, xo = jnp.asarray(x_new, float), jnp.asarray(x_old, float)
    if convention == "ito":
        pbar, jac = sde.p(xo, t_old), jnp.ones(())
    elif convention == "midpoint":
        xb, tb = 0.5 * (xn + xo), t_old + 0.5 * eps
        pbar, jac = sde.p(xb, tb), 1.0 - 0.5 * eps * sde.dp_dx(xb, tb)
    else:
        t_new = t_old + eps
        pbar = 0.5 * (sde.p(xn, t_new) + sde.p(xo, t_old))
        jac = 1.0 - 0.5 * eps * sde.dp_dx(xn, t_new)
    jac = jnp.abs(jac) if jacobian else jnp.ones(())
    var = sde.alpha * eps
    return jac * jnp.exp(-0.5 * (xn - xo - eps * pbar) ** 2 / var) / jnp.sqrt(2 * jnp.pi * var)


@eqx.filter_jit
def _compose(sde, x0, grid, t0, eps, n, convention, jacobian):
    h = grid[1] - grid[0]
    kern = jax.vmap(  # K[i, j] = K(grid_i | grid_j)
        jax.vmap(
            lambda xn, xo, t: short_time_propagator(sde, xn, xo, t, eps, convention, jacobian),
            in_axes=(None, 0, None),
        ),
        in_axes=(0, None, None),
    )
    first = jax.vmap(lambda xn: short_time_propagator(sde, xn, x0, t0, eps, convention, jacobian))(
        grid
    )

    def step(k, P):
        return kern(grid, grid, t0 + k * eps) @ P * h

    # n is traced: one compiled program for every number of slices.
    return jax.lax.fori_loop(1, n, step, first)


def path_integral(
    sde: ScalarSDE,
    x0: ScalarLike,
    t1: ScalarLike,
    grid: Float[Array, " m"],
    num_slices: int,
    *,
    convention: Convention = "midpoint",
    jacobian: bool = True,
    t0: ScalarLike = 0.0,
    mass_tol: float | None = 1e-6,
) -> GridDensity:
    r"""$P(x, t_1 \mid x_0, t_0)$ on `grid` from `num_slices` composed short-time propagators.

    The first slice starts from the point $x_0$ (off-grid allowed); the other $n-1$ integrate over
    the grid (one `fori_loop` of $m\times m$ kernel products). `lost_mass` = $1 - \int P$: the
    mass the kernels sent off the grid (both conventions with their Jacobian conserve mass per
    slice, up to quadrature error, when the scheme's map is monotone).

    **Raises:** `ValueError` for `num_slices < 1`, an unknown convention, a non-uniform grid,
    $t_1 \le t_0$, or (with the Jacobian) a lost mass above `mass_tol`.
    """
    if not isinstance(sde, ScalarSDE):
        raise ValueError(f"sde must be a dynopt.densities.ScalarSDE, got {type(sde).__name__}.")
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {_CONVENTIONS}, got {convention!r}.")
    if not isinstance(num_slices, int | np.integer) or num_slices < 1:
        raise ValueError(f"num_slices must be a positive integer, got {num_slices!r}.")
    check_positive("t1 - t0", float(t1) - float(t0))
    g = jnp.asarray(check_uniform_grid("grid", grid))
    eps = (jnp.asarray(t1, float) - t0) / num_slices
    P = _compose(
        sde,
        jnp.asarray(x0, float),
        g,
        jnp.asarray(t0, float),
        eps,
        num_slices,
        convention,
        jacobian,
    )
    mass = jnp.sum(P) * (g[1] - g[0])
    if jacobian:
        check_lost_mass(1.0 - mass, mass_tol, f"path_integral ({convention})")
    return GridDensity(
        x=g,
        density=P,
        t=jnp.asarray(t1, float),
        mass=mass,
        lost_mass=1.0 - mass,
        mass_defect=jnp.zeros(()),
        method=f"path_integral_{convention}" + ("" if jacobian else "_no_jacobian"),
    )


def mehler_kernel(
    xb: ScalarLike, xa: ScalarLike, T: ScalarLike, alpha: ScalarLike
) -> Float[Array, ""]:
    r"""The Euclidean harmonic-oscillator kernel $K$ of eq. (57),
    $K = (2\pi\alpha\sinh T)^{-1/2}\exp\{-[(x_a^2+x_b^2)\cosh T - 2x_ax_b]/(2\alpha\sinh T)\}$.

    Post 7's linear-SDE propagator is $e^{-T/2}\,e^{(x_b^2-x_a^2)/2\alpha}\,K$: the boundary
    factor of eq. (56), the constant Jacobian (64) with $\partial_x p = 1$, and this kernel."""
    check_positive("alpha", alpha)
    s, c = jnp.sinh(T), jnp.cosh(T)
    return jnp.exp(-((xa**2 + xb**2) * c - 2 * xa * xb) / (2 * alpha * s)) / jnp.sqrt(
        2 * jnp.pi * alpha * s
    )


# --------------------------------------------------------------------- actions and eq. 66 ⇔ 68


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
