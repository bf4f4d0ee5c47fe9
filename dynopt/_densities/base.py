r"""The 1-D SDE of the path-integral series, $dx = p(x,t)\,dt + \sqrt{\alpha}\,dW$ (post 7,
eq. 48), its exact Gaussian transition densities, and the result type of every density route.

**Convention.** $\alpha$ is the *variance rate*: $\mathrm{Var}(dx) = \alpha\,dt$. An SDE written
$dx = b\,dt + \sigma\,dW$ has $\alpha = \sigma^2$ (post 8's σ-vs-σ² note in SEEDS.md). The
Fokker–Planck equation (post 2, eq. 12) is
$$\partial_t P = \tfrac{\alpha}{2}\partial_x^2 P - \partial_x(pP).$$
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Float, Scalar, ScalarLike
from .._validation import function, hyperparameter, interval, is_traced, nonnegative, positive


def check_scalar_alpha(alpha) -> None:
    """`ValueError` unless the variance rate is one number (traced or not)."""
    if jnp.ndim(alpha) != 0:
        raise ValueError(
            f"alpha must be a scalar, the one variance rate of the noise sqrt(alpha) dW, got shape "
            f"{jnp.shape(alpha)} (the routes and the sampler would read it as several "
            "Brownian motions or fail)."
        )


def as_point_array(name: str, x) -> Array:
    """`x` as a float array: `ValueError` naming `name` for a pytree such as a dict of arrays or
    anything not numeric (the routes act on the raveled state)."""
    try:
        return jnp.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        tree = isinstance(x, dict) or len(jax.tree.leaves(x)) > 1
        hint = (
            f": pass jax.flatten_util.ravel_pytree({name})[0], the order of a flow's raveled "
            "state as VectorSDE.from_flow reads it"
            if tree
            else ""
        )
        raise ValueError(
            f"{name} must be an array of real coordinates on the raveled state, got a "
            f"{type(x).__name__}{hint} ({exc})."
        ) from exc


def check_scalar_point(name: str, x) -> Float[Array, " 1"]:
    """A 1-D route's start as shape (1,): `ValueError` unless it is one finite real number."""
    v = as_point_array(name, x)
    if v.size != 1:
        raise ValueError(
            f"{name} must be a scalar (the 1-D route's start), got shape {v.shape}; for a start "
            "in d dimensions use the route's _nd form."
        )
    if not isinstance(v, jax.core.Tracer) and not bool(jnp.isfinite(v).all()):
        raise ValueError(f"{name} must be finite, got {float(v.reshape(()))}.")
    return v.reshape(1)


def input_eps(value) -> float:
    """The machine epsilon of `value`'s floating dtype (float64's for integers and others):
    how finely the caller could write it."""
    dtype = np.asarray(value).dtype
    return float(np.finfo(dtype if np.issubdtype(dtype, np.floating) else np.float64).eps)


def is_uniform(raw, g: np.ndarray) -> bool:
    """Whether the points `g` (>= 2 of them: `raw` in float64) increase with equal spacings, to
    the precision of `raw`'s own dtype (see `check_uniform_grid`)."""
    d = np.diff(g)
    finite = np.all(np.isfinite(g))
    rounding = 2.0 * input_eps(raw) * float(np.max(np.abs(g))) if finite else 0.0
    return bool(np.all(d > 0) and np.allclose(d, d[0], rtol=1e-9, atol=rounding))


def check_uniform_grid(name: str, grid) -> np.ndarray:
    r"""`ValueError` unless `grid` is 1-D, uniform, increasing, with >= 3 points.

    Uniform to the precision of its own values: each point is rounded to its dtype (by
    `linspace` itself, or a cast to float32), so a spacing can differ from another by
    $2\epsilon_{dtype}\max|x|$ (spacings of float32 [-3, 3] by 101 points: 6e-6 of h)."""
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 1 or g.size < 3:
        raise ValueError(f"{name} must be a 1-D array of >= 3 points, got shape {g.shape}.")
    if not is_uniform(grid, g):
        raise ValueError(f"{name} must be uniform and increasing (e.g. np.linspace(a, b, m)).")
    d = np.diff(g)
    if not np.allclose(d, d[0], rtol=1e-9, atol=0.0):
        # Uniform only to its dtype's rounding: the uniform grid it rounds (the schemes take
        # the spacing from its first two points).
        g = np.linspace(g[0], g[-1], g.size)
    return g


class ScalarSDE(eqx.Module):
    r"""$dx = p(x, t)\,dt + \sqrt{\alpha}\,dW$ in one dimension (post 7, eq. 48).

    The input of the 1-D density routes (each the $d = 1$ case of its $d$-dimensional route,
    which sees this model as a `VectorSDE`) and of the 1-D path-integral theory (actions,
    eq. 69's potential, the Jacobians $\partial_x p$).

    **Arguments:**

    - `drift`: $p(x, t)$, a callable on two scalars returning a scalar.
    - `alpha`: the variance rate $\alpha > 0$ (noise $\sigma\,dW$ means $\alpha=\sigma^2$).

    **Raises:** `ValueError` for $\alpha \le 0$, an $\alpha$ that is not a scalar, or a
    non-callable drift.
    """

    drift_fn: Callable[[Scalar, Scalar], Scalar]
    alpha: Float[Array, ""] = hyperparameter("alpha", lower=0.0, lower_open=True)

    def __init__(self, drift: Callable, alpha: ScalarLike):
        function("drift", drift, "callable (x, t) -> scalar")
        self.drift_fn = drift
        self.alpha = alpha

    def __check_init__(self):
        check_scalar_alpha(self.alpha)

    def p(self, x: ScalarLike, t: ScalarLike) -> Scalar:
        """The drift $p(x, t)$."""
        return jnp.asarray(self.drift_fn(x, t))

    def dp_dx(self, x: ScalarLike, t: ScalarLike) -> Scalar:
        r"""$\partial_x p(x, t)$ by autodiff (the Jacobian terms of eqs. 62–66)."""
        return jax.grad(lambda y: self.p(y, t))(jnp.asarray(x, dtype=float))


class Polynomial(eqx.Module):
    r"""A time-independent polynomial drift $p(x) = \sum_k c_k x^k$ (`coeffs` = $c_0, c_1, \dots$).

    Its coefficients are array leaves, so SDEs that differ only in them share compiled programs
    (a plain Python callable is a static field: a new one means a new compilation)."""

    coeffs: Float[Array, " k"]

    def __init__(self, coeffs):
        if not is_traced(coeffs):  # a NaN drift ran silently, a string was NumPy's message
            interval("coeffs", coeffs)
        c = jnp.asarray(coeffs, dtype=float)
        if c.ndim != 1 or c.size < 1:
            raise ValueError(f"coeffs must be a non-empty 1-D array, got shape {c.shape}.")
        self.coeffs = c

    def __call__(self, x, t):
        del t
        return jnp.polyval(self.coeffs[::-1], jnp.asarray(x, dtype=float))


def linear_sde(rate: ScalarLike, alpha: ScalarLike) -> ScalarSDE:
    r"""The linear SDE $dx = \lambda x\,dt + \sqrt{\alpha}\,dW$: post 7's eq. (49) for
    $\lambda = 1$, OU for $\lambda = -\theta < 0$.

    **Arguments:**

    - `rate`: $\lambda$, a finite real number.
    - `alpha`: the variance rate $\alpha > 0$, a scalar.

    **Returns:** a `ScalarSDE` whose drift is the cubic-shaped `Polynomial` $(0, \lambda, 0, 0)$
    (it shares compiled programs with cubic drifts, e.g. double wells).

    **Raises:** `ValueError` for a `rate` that is not finite, or an `alpha` that is not a scalar
    $> 0$.
    """
    # Cubic-shaped coefficients: shares compiled programs with cubic drifts (double wells).
    z = jnp.zeros(())
    rate = jnp.asarray(interval("rate", rate), dtype=float)  # finite: a NaN drift ran silently
    return ScalarSDE(Polynomial(jnp.stack([z, rate, z, z])), alpha)


def _linear_moments(t, x0, rate, alpha) -> tuple[Array, Array]:
    r"""Mean $x_0e^{\lambda t}$ and variance $\alpha(e^{2\lambda t}-1)/(2\lambda)$ ($\alpha t$ at
    $\lambda = 0$) of $dx = \lambda x\,dt + \sqrt\alpha\,dW$ at `t`."""
    alpha, t = positive("alpha", alpha), positive("t", t)
    rate, x0 = interval("rate", rate), interval("x0", x0)  # a NaN gave a NaN density
    rate, t, x0 = (jnp.asarray(v, dtype=float) for v in (rate, t, x0))
    safe = jnp.where(rate == 0, 1.0, rate)
    var = jnp.asarray(alpha, float) * jnp.where(
        rate == 0, t, jnp.expm1(2.0 * safe * t) / (2.0 * safe)
    )
    return x0 * jnp.exp(rate * t), var


def linear_density(
    x: Float[Array, "..."], t: ScalarLike, x0: ScalarLike, *, rate: ScalarLike, alpha: ScalarLike
) -> Float[Array, "..."]:
    r"""Exact transition density of $dx = \lambda x\,dt + \sqrt\alpha\,dW$:
    $$P(x, t \mid x_0) = \mathcal N\big(x;\ x_0 e^{\lambda t},\
      \alpha\,(e^{2\lambda t}-1)/(2\lambda)\big)\quad(\alpha t \text{ at } \lambda = 0).$$

    **Arguments:**

    - `x`: the points, any shape.
    - `t`: the time $t > 0$.
    - `x0`: the start $x_0$, finite.
    - `rate`: $\lambda$, finite.
    - `alpha`: the variance rate $\alpha > 0$.

    **Raises:** `ValueError` for $\alpha \le 0$, $t \le 0$, or a rate or $x_0$ that is not
    finite (an `eqx.error_if` error under `jit`/`vmap`).
    """
    mean, var = _linear_moments(t, x0, rate, alpha)
    return _normal_pdf(jnp.asarray(x, dtype=float), mean, var)


def linear_cdf(
    x: Float[Array, "..."], t: ScalarLike, x0: ScalarLike, *, rate: ScalarLike, alpha: ScalarLike
) -> Float[Array, "..."]:
    r"""The CDF of `linear_density`, for exact histogram-bin probabilities:

    $$F(x, t \mid x_0) = \Phi\Big(\frac{x - x_0e^{\lambda t}}{\sigma(t)}\Big),\qquad
    \sigma^2(t) = \alpha\,(e^{2\lambda t}-1)/(2\lambda)\quad(\alpha t \text{ at } \lambda = 0).$$

    **Arguments:** `x` (the points, any shape), `t`, `x0`, `rate`, `alpha` as `linear_density`.

    **Returns:** an array of `x`'s shape (float64).

    **Raises:** `ValueError` as `linear_density`.
    """
    mean, var = _linear_moments(t, x0, rate, alpha)
    return _normal_cdf(jnp.asarray(x, dtype=float), mean, var)


# Jitted: evaluated eagerly, each grid size would compile every primitive on its own (a density
# convergence study over grid sizes compiled ~8 one-op programs per size).
@jax.jit
def _normal_pdf(x, mean, var):
    return jnp.exp(-0.5 * (x - mean) ** 2 / var) / jnp.sqrt(2.0 * jnp.pi * var)


@jax.jit
def _normal_cdf(x, mean, var):
    return jax.scipy.stats.norm.cdf((x - mean) / jnp.sqrt(var))


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(48)


def line_integral(f, x: Float[Array, " d"], x_ref: Float[Array, " d"]) -> Scalar:
    r"""$\int f\cdot dy$ along the segment from $x_{ref}$ to $x$ in $\mathbb R^d$ ($f$: shape
    $(d,)$ to $(d,)$) by 48-point Gauss–Legendre: with $h = (x - x_{ref})/2$,
    $\sum_k w_k\,f(x_{ref} + h(\nu_k + 1))\cdot h$ (exact for polynomials of degree $\le 95$
    along the segment). For a gradient field $f = \nabla\Phi$ it is $\Phi(x) - \Phi(x_{ref})$."""
    half = 0.5 * (x - x_ref)
    ys = x_ref[None] + half[None] * (jnp.asarray(_GL_NODES)[:, None] + 1.0)
    # Summed over the nodes first: at d = 1, the operations of the 1-D rule half * sum(w f).
    return jnp.sum(half * jnp.sum(jnp.asarray(_GL_WEIGHTS)[:, None] * jax.vmap(f)(ys), axis=0))


def antiderivative(f, x: ScalarLike, x_ref: ScalarLike = 0.0) -> Scalar:
    r"""$\int_{x_{ref}}^{x} f(y)\,dy$ by 48-point Gauss–Legendre (exact for polynomials of degree
    $\le 95$; spectrally accurate for smooth $f$): `line_integral` at $d = 1$.

    **Arguments:**

    - `f`: a callable $y \mapsto f(y)$, scalar to scalar.
    - `x`: the upper limit.
    - `x_ref`: the lower limit (default 0).

    **Raises:** `ValueError` if `f` is not callable or a concrete `x` or `x_ref` is not finite
    (a NaN limit made the integral NaN; a traced one, inside the actions' programs, is not
    checked: no callback)."""
    function("f", f, "callable y -> f(y)")
    for name, value in (("x", x), ("x_ref", x_ref)):
        if not is_traced(value):
            interval(name, value)
    return _antiderivative(f, x, x_ref)


@eqx.filter_jit  # one program per call, not one per primitive (`f` is static)
def _antiderivative(f, x, x_ref) -> Scalar:
    return line_integral(
        lambda y: jnp.reshape(f(y[0]), (1,)),
        jnp.reshape(jnp.asarray(x, float), (1,)),
        jnp.reshape(jnp.asarray(x_ref, float), (1,)),
    )


def check_edge_mass(density, cell, edge_tol: float | None, who: str):
    """`density` itself, checked: a `ValueError` (an `eqx.error_if` error under `jit`/`vmap`)
    when more than `edge_tol` of the normalised grid density's mass sits on the grid's edge
    points (those with a coordinate at its axis's first or last value). Then the grid cuts the
    law off, or the drift does not confine it and no stationary law exists (the formula piles
    the mass at the edge)."""
    if edge_tol is None:
        return density
    edge = ~np.pad(np.ones([n - 2 for n in density.shape], bool), 1)
    edge_mass = jnp.sum(jnp.where(edge, density, 0.0)) * cell
    why = (
        f"of the stationary density's mass lies on the grid's edge points (edge_tol = "
        f"{edge_tol:g}): either the grid does not cover the stationary law (widen it), or the "
        "drift does not confine it (e.g. p(x) = +x: no stationary law exists; check the "
        "drift's sign). Pass edge_tol=None to accept a truncated law."
    )
    if isinstance(edge_mass, jax.core.Tracer):
        return eqx.error_if(density, ~(edge_mass <= edge_tol), f"{who}: more than edge_tol {why}")
    if not float(edge_mass) <= edge_tol:
        raise ValueError(f"{who}: {float(edge_mass):.3g} {why}")
    return density


def float_array(value) -> Float[Array, "..."]:
    """`value` as a JAX array of the default float dtype (a Python or integer time too)."""
    return jnp.asarray(value, dtype=float)


class GridDensity(eqx.Module):
    r"""A transition density $P(x, t_1 \mid x_0)$ on points `x`, from one of the routes.

    **Fields:**

    - `x`, `density`: the points and the density there.
    - `t`: the time $t_1$.
    - `mass`: $\int P\,dx$ over the points (Riemann sum with the point spacing).
    - `lost_mass`: probability that left the grid (absorbed at its ends, or outside the
      histogram range); a grid that does not cover the mass shows up here.
    - `mass_defect`: |mass + lost_mass − initial mass|: the conservation check (route-specific).
    - `method`: the route's name.

    Every field but `method` is stored as a JAX array (`t` as a float).
    """

    x: Float[Array, " m"] = eqx.field(converter=jnp.asarray)
    density: Float[Array, " m"] = eqx.field(converter=jnp.asarray)
    t: Float[Array, ""] = eqx.field(converter=float_array)
    mass: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    lost_mass: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    mass_defect: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    method: str = eqx.field(static=True)

    @staticmethod
    def from_tensor(dens) -> "GridDensity":
        """A route's $d = 1$ `TensorDensity` as a 1-D density on its axis."""
        (x,) = dens.axes
        return GridDensity(
            x=x,
            density=dens.density,
            t=dens.t,
            mass=dens.mass,
            lost_mass=dens.lost_mass,
            mass_defect=dens.mass_defect,
            method=dens.method,
        )

    def error(self, exact: Callable[[Array], Array]) -> Float[Array, ""]:
        """Max-norm error $\\max_i |P_i - P_{exact}(x_i)|$ against a callable density."""
        # On the host: a reduction of a result, not worth a compiled program per grid size.
        gap = np.abs(np.asarray(self.density) - np.asarray(exact(self.x)))
        return jnp.asarray(np.max(gap))


# The exact density is >= 0 and only loses mass (through the grid's edges): a negative value, or
# mass a scheme created, is an error by construction (the max error is at least the depth of the
# negative value, the L1 error at least the mass created). Fokker-Planck refuses either from 1%
# (of the peak, of the mass): below, it stays under the O(h^2) error of the grids the routes run
# at (the 2-D tests: 7.7e-4 created, negative to 8.4e-4 of the peak, with 2.5-5% O(h^2) error).
BROKEN_TOL = 1e-2


def check_tolerance(name: str, tol) -> float | None:
    """`tol` itself: `None` (report, do not raise), or a tolerance >= 0 and finite, else a
    `ValueError` naming it (a negative or NaN one would refuse every result, blaming the grid)."""
    if tol is None:
        return None
    return float(nonnegative(name, tol, hint="Pass None to report without raising."))


def check_lost_mass(lost, mass_tol, where: str) -> None:
    if mass_tol is None:
        return
    lost = float(lost)
    if not lost <= mass_tol:
        raise ValueError(
            f"{where}: the grid does not cover the mass: lost mass {lost:.3e} > mass_tol="
            f"{mass_tol:g}. Widen the grid (or pass mass_tol=None to accept and report it)."
        )
