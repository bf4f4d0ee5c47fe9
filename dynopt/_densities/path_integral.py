r"""Route (c): the time-sliced path integral (post 7, eqs. 59–64) on a tensor grid in $\mathbb R^d$;
the 1-D route is its $d = 1$ case.

Slice $[t_a, t_b]$ into $n$ steps $\epsilon = (t_b-t_a)/n$. (For a diffusion matrix $D$, noise
$B\,dW$ with $BB^\top = D$: $|r|^2/\alpha \to r^\top D^{-1}r$ and $\alpha^d \to \det D$ below;
the Jacobians are the drift's, unchanged, since $D$ is constant.) Each convention is a one-step
scheme $x_k - x_{k-1} - \epsilon\,\bar p_k = \sqrt\alpha\,\Delta W_k$; changing variables
$\Delta W_k \to x_k$ gives the short-time propagator
$$K_\epsilon(x_k\mid x_{k-1}) = (2\pi\alpha\epsilon)^{-d/2}
  \exp\Big(-\frac{|x_k - x_{k-1} - \epsilon\bar p_k|^2}{2\alpha\epsilon}\Big)
  \Big|\det\frac{\partial(\sqrt\alpha\,\Delta W_k)}{\partial x_k}\Big| ,$$
with its own Jacobian (eq. 62):

- `"ito"` (pre-point): $\bar p_k = p(x_{k-1}, t_{k-1})$; Jacobian 1 (constant: no
  $\nabla p$ term).
- `"midpoint"` (Onsager–Machlup): $\bar p_k = p(\bar x_k, t_{k-1}+\epsilon/2)$,
  $\bar x_k = (x_k+x_{k-1})/2$; Jacobian $|\det(I-\tfrac\epsilon2\nabla p(\bar x_k))|$
  ($1-\tfrac\epsilon2 p' \approx e^{-\epsilon p'/2}$ in 1-D).
- `"trapezoid"` (eq. 60): $\bar p_k = \tfrac12[p(x_k,t_k)+p(x_{k-1},t_{k-1})]$; Jacobian
  $|\det(I-\tfrac\epsilon2\nabla p(x_k,t_k))|$ (eq. 62).

The product of Jacobians is eq. (63) → (64), $\exp(-\tfrac12\int\nabla\!\cdot p\,dt)$, the
$\alpha\partial_xp$ term of the action (65; `dynopt.densities.onsager_machlup_action`). [note] Each
convention is consistent only with its own Jacobian: the midpoint rule *without* it
(`jacobian=False`) converges to the wrong density (for $p = x$, to $e^{T/2}$ times the right one),
while the Itô rule needs none.

$P(x, t_b \mid x_0) = \int K_\epsilon(x\mid x_{n-1})\cdots K_\epsilon(x_1\mid x_0)\,dx_1\cdots
dx_{n-1}$, each integral a trapezoid sum over the $M = \prod_i m_i$ grid points ($M\times M$
kernel matrices; spectrally accurate for Gaussians once every $h_i \lesssim \sqrt{\alpha\epsilon}$).
"""

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Float, Scalar, ScalarLike
from .._problem import Problem
from .._validation import choice, flag, interval, positive, positive_int
from .base import (
    check_lost_mass,
    check_scalar_point,
    check_tolerance,
    check_uniform_grid,
    GridDensity,
)
from .vector import (
    as_vector_sde,
    cell_volume,
    check_dimension,
    check_finite_drift,
    check_model_on_grid,
    check_point,
    mesh_points,
    TensorDensity,
    VectorSDE,
)


# Mass the slices create (each slice's trapezoid sum of its kernel above 1, compounding) is the
# density's error relative to its peak, and mostly a factor on all of it: normalised by `mass` a
# tenth to a half remains (coarse OU and p = x grids: 3.2e-2 -> 4.0e-3, 5.8e-2 -> 2.7e-2,
# 0.155 -> 7.6e-3, 13.5 -> 0.11). Refused from 5%, where that remainder reaches the few % of peak
# that the routes' other errors carry (the 2-D tests start Fokker-Planck from a path integral that
# created 1.5%, normalised).
CREATED_MASS_TOL = 5e-2

Convention = Literal["ito", "midpoint", "trapezoid"]
_CONVENTIONS = ("ito", "midpoint", "trapezoid")


def _det(m: Float[Array, "d d"]) -> Float[Array, ""]:
    # d = 1: the entry itself (jnp.linalg.det goes through an LU and can differ in the last bit).
    return m[0, 0] if m.shape == (1, 1) else jnp.linalg.det(m)


def short_time_propagator_nd(
    sde: VectorSDE,
    x_new: Float[Array, " d"],
    x_old: Float[Array, " d"],
    t_old: ScalarLike,
    eps: ScalarLike,
    convention: Convention = "midpoint",
    jacobian: bool = True,
) -> Scalar:
    r"""$K_\epsilon(x_{new}\mid x_{old})$ of one slice in $\mathbb R^d$ (table above).

    **Arguments:**

    - `sde`: a `VectorSDE` in $\mathbb R^d$.
    - `x_new`, `x_old`: the end and start points, shape $(d,)$ each.
    - `t_old`: the slice's start time (finite).
    - `eps`: the slice length $\epsilon > 0$.
    - `convention`: `"ito"`, `"midpoint"` (default) or `"trapezoid"`.
    - `jacobian`: whether to include the convention's Jacobian (default `True`).

    **Returns:** the kernel, a scalar.

    **Raises:** `ValueError` for `eps` not finite and $> 0$ (inside `jit`: `eqx.error_if`),
    `x_new`, `x_old` not of one shape `(d,)`, an `sde` whose drift does not map shape `(d,)`
    to `(d,)`, or a `convention` or `jacobian` not offered.
    """
    choice("convention", convention, _CONVENTIONS)
    flag("jacobian", jacobian)
    # A slice of length eps <= 0 has no kernel: the Gaussian's variance alpha*eps is not > 0.
    eps = positive("eps", eps, hint="eps is the slice length t_new - t_old.")
    t_old = interval("t_old", t_old)
    if jnp.ndim(x_new) != 1 or jnp.shape(x_new) != jnp.shape(x_old):
        raise ValueError(
            f"x_new and x_old must be points of one shape (d,), got shapes {jnp.shape(x_new)} "
            f"and {jnp.shape(x_old)}."
        )
    # A drift of another dimension failed inside the kernel with a matmul TypeError.
    sde = as_vector_sde(sde)
    check_dimension(sde, jnp.shape(x_new)[0])
    return _kernel(sde, x_new, x_old, t_old, eps, convention, jacobian)


def _kernel(sde, x_new, x_old, t_old, eps, convention, jacobian) -> Scalar:
    """`short_time_propagator_nd` unchecked: the path integral calls it with the slice length
    it checked itself."""
    xn, xo = jnp.asarray(x_new, float), jnp.asarray(x_old, float)
    d = xn.shape[0]
    eye = jnp.eye(d)
    if convention == "ito":
        pbar, jac = sde.p(xo, t_old), jnp.ones(())
    elif convention == "midpoint":
        xb, tb = 0.5 * (xn + xo), t_old + 0.5 * eps
        pbar, jac = sde.p(xb, tb), _det(eye - 0.5 * eps * sde.grad_p(xb, tb))
    else:
        t_new = t_old + eps
        pbar = 0.5 * (sde.p(xn, t_new) + sde.p(xo, t_old))
        jac = _det(eye - 0.5 * eps * sde.grad_p(xn, t_new))
    jac = jnp.abs(jac) if jacobian else jnp.ones(())
    r = xn - xo - eps * pbar
    if not sde.isotropic:  # N(r; 0, D eps): B dW's Jacobian det B^-1 is in its normaliser
        chol = jnp.linalg.cholesky(sde.alpha * eps)
        z = jax.scipy.linalg.solve_triangular(chol, r, lower=True)
        norm = (2 * jnp.pi) ** (0.5 * d) * jnp.prod(jnp.diag(chol))
        return jac * jnp.exp(-0.5 * jnp.sum(z * z)) / norm
    var = sde.alpha * eps
    return jac * jnp.exp(-0.5 * jnp.sum(r * r) / var) / (2 * jnp.pi * var) ** (0.5 * d)


def short_time_propagator(
    sde,
    x_new: ScalarLike,
    x_old: ScalarLike,
    t_old: ScalarLike,
    eps: ScalarLike,
    convention: Convention = "midpoint",
    jacobian: bool = True,
) -> Scalar:
    r"""The 1-D short-time kernel of one slice (`short_time_propagator_nd` at $d = 1$):

    $$K_\epsilon(x_{new}\mid x_{old}) = \frac{|J|}{\sqrt{2\pi\alpha\epsilon}}
    \exp\Big(-\frac{(x_{new} - x_{old} - \epsilon\bar p)^2}{2\alpha\epsilon}\Big),$$

    with $\bar p$ and the Jacobian $J$ of the convention (module docstring).

    **Arguments:**

    - `sde`: a `ScalarSDE` or a 1-D `VectorSDE`.
    - `x_new`, `x_old`: the end and start points, real numbers.
    - `t_old`: the slice's start time (finite).
    - `eps`: the slice length $\epsilon > 0$.
    - `convention`: `"ito"`, `"midpoint"` (default) or `"trapezoid"`.
    - `jacobian`: whether to include the convention's Jacobian (`False` only for studying the
      wrong density it gives).

    **Returns:** the kernel, a scalar.

    **Raises:** `ValueError` for an `sde` of another kind or dimension, `eps` not finite and
    $> 0$ (inside `jit`: `eqx.error_if`), a `t_old` not finite, or a `convention` or `jacobian`
    not offered.
    """
    return short_time_propagator_nd(
        as_vector_sde(sde),
        jnp.reshape(jnp.asarray(x_new, float), (1,)),
        jnp.reshape(jnp.asarray(x_old, float), (1,)),
        t_old,
        eps,
        convention,
        jacobian,
    )


@eqx.filter_jit
def _compose(sde, x0, axes, vol, t0, t1, n, convention, jacobian):
    """`(P, eps, mass, lost_mass, finite)` after `n` slices on the grid `axes`: one program per
    grid shape, convention and `jacobian`. `n` is an array, hence traced: one program for every
    number of slices (a Python int is a static argument of `filter_jit`: one program each). The
    grid, the slice and the reductions are in it too, not one eager program per operation."""
    pts = mesh_points(axes)
    flat = pts.reshape(-1, pts.shape[-1])
    eps = (t1 - t0) / n.astype(t1.dtype)

    def kernel(xn, xo, t):
        return _kernel(sde, xn, xo, t, eps, convention, jacobian)

    kern = jax.vmap(jax.vmap(kernel, in_axes=(None, 0, None)), in_axes=(0, None, None))
    first = jax.vmap(lambda xn: kernel(xn, x0, t0))(flat)

    def step(k, P):
        return kern(flat, flat, t0 + k.astype(eps.dtype) * eps) @ P * vol

    P = jax.lax.fori_loop(1, n, step, first).reshape(pts.shape[:-1])
    # (The barrier keeps the sum over the grid's shape: XLA would fold the reshape into a flat
    # sum, which rounds a 2-D grid's mass otherwise than the sum of the density returned.)
    mass = jnp.sum(jax.lax.optimization_barrier(P)) * vol
    return P, eps, mass, 1.0 - mass, jnp.all(jnp.isfinite(P))


def _path_integral(
    sde, problem, x0, t1, axes, num_slices, convention, jacobian, t0, mass_tol, name
):
    choice("convention", convention, _CONVENTIONS)
    positive_int("num_slices", num_slices)
    mass_tol = check_tolerance("mass_tol", mass_tol)
    sde, axes = check_model_on_grid(sde, problem, axes, t0, t1)
    d = len(axes)
    x0 = check_point("x0", x0, d)
    vol = cell_volume(axes)
    P, eps, mass, lost, finite = _compose(
        sde,
        x0,
        axes,
        jnp.asarray(vol),
        jnp.asarray(t0, float),
        jnp.asarray(t1, float),
        jnp.asarray(num_slices),
        convention,
        jacobian,
    )
    if not bool(finite):  # name a NaN drift (it would read as lost mass)
        check_finite_drift(sde, mesh_points(axes), (t0, float(t1)), name)
    # Judged on the mass created, not on h_i / sqrt(alpha eps) up front: the kernel's alias
    # 2 exp(-2 pi^2 alpha eps / h^2) carries a phase, the drift rescales the kernel's width and
    # the excess compounds over n slices, so the ratio alone misjudges (the tests run at 1.04,
    # 1.26 and 1.62, accurate to 1e-4, 1% and, normalised, a few 1e-3 of the peak), while the
    # created mass measures the compounded excess itself.
    if jacobian:
        where = f"{name} ({convention})"
        _check_created_mass(float(mass), sde, axes, float(eps), num_slices, mass_tol, where)
        check_lost_mass(lost, mass_tol, where)
    return TensorDensity(
        axes=axes,
        density=P,
        t=t1,
        mass=mass,
        lost_mass=lost,
        mass_defect=jnp.zeros(()),
        method=f"path_integral_{convention}" + ("" if jacobian else "_no_jacobian"),
    )


def _check_created_mass(mass, sde, axes, eps, n, mass_tol, where) -> None:
    r"""`ValueError` when the slices created more than max(`mass_tol`, `CREATED_MASS_TOL`) of mass:
    each slice's trapezoid sum of its kernel, a Gaussian of width $\sigma = \sqrt{\alpha\epsilon}$,
    is $1 + 2\sum_i e^{-2\pi^2\sigma^2/h_i^2}\cos(\cdot) + \dots$ (Poisson summation), and
    the excess compounds over the $n$ slices into the density itself."""
    if mass_tol is None or not mass - 1.0 > max(mass_tol, CREATED_MASS_TOL):
        return
    hs = np.array([a[1] - a[0] for a in axes])
    # The kernel's narrowest width: sqrt(alpha eps), or sqrt(lambda_min(D) eps).
    rate = float(sde.alpha) if sde.isotropic else float(np.linalg.eigvalsh(sde.alpha)[0])
    sigma = float(np.sqrt(rate * eps))
    alias = float(np.sum(2.0 * np.exp(-2.0 * np.pi**2 * sigma**2 / hs**2)))
    points = " x ".join(str(int(np.ceil((a[-1] - a[0]) / sigma)) + 1) for a in axes)
    fewer = int(np.floor(n * eps * rate / float(np.max(hs)) ** 2))
    slices = f", or at most {fewer} slices" if fewer >= 1 else ""
    raise ValueError(
        f"{where}: mass was created, not lost: the density's mass is {mass:.4g} (lost_mass "
        f"{1.0 - mass:.3g}), more than max(mass_tol, {CREATED_MASS_TOL:g}) above 1, and its error "
        f"relative to its peak is about as large. The grid is too coarse for the slices: its "
        f"spacing h = {float(np.max(hs)):.3g} is {float(np.max(hs)) / sigma:.3g} times the "
        f"short-time kernel's width sqrt(alpha*eps) = {sigma:.3g}, so each slice's trapezoid sum "
        f"of the kernel exceeds 1 by about 2 exp(-2 pi^2 alpha eps / h^2) = {alias:.2g}, "
        f"compounding over the {n} slices. Refine the grid to a spacing <= sqrt(alpha*eps) "
        f"({points} points over these ranges){slices} (a larger eps = (t1 - t0)/n)."
    )


def path_integral_nd(
    sde,
    x0,
    t1: ScalarLike,
    axes,
    num_slices: int,
    *,
    convention: Convention = "midpoint",
    jacobian: bool = True,
    t0: ScalarLike = 0.0,
    mass_tol: float | None = 1e-6,
    problem: Problem | None = None,
) -> TensorDensity:
    r"""$P(x, t_1\mid x_0, t_0)$ on the tensor grid `axes` from `num_slices` composed short-time
    propagators: the first slice from the point $x_0$ (off-grid allowed), the other $n-1$ by
    $M\times M$ kernel products in one `fori_loop`. `lost_mass` = $1-\int P$: the mass the
    kernels sent off the grid (every convention with its Jacobian conserves mass per slice, up
    to quadrature error, when the scheme's map is monotone).

    Cost: $n$ kernels of $M^2$ entries ($M = \prod m_i$);
    keep $M \lesssim 2500$.

    A grid too coarse for the slices ($h_i \gtrsim \sqrt{\alpha\epsilon}$) makes each slice's
    trapezoid sum of its kernel exceed 1, and the excess compounds into the density: with the
    Jacobian such created mass ($\int P > 1$, `lost_mass` $< 0$) is refused from
    max(`mass_tol`, `CREATED_MASS_TOL` = 5%), and shows in `lost_mass` below that.

    **Arguments:**

    - `sde`: a `VectorSDE` (scalar $\alpha$ or diffusion matrix $D$), a `ScalarSDE` ($d = 1$), or a
      flow with constant additive noise (nonsingular $D$) on
      `problem` (`VectorSDE.from_flow`).
    - `x0`: the start, a finite point of shape $(d,)$ (off-grid allowed).
    - `t1`: the final time $t_1 > t_0$.
    - `axes`: the tensor grid, a tuple of $d$ uniform 1-D grids.
    - `num_slices`: $n \ge 1$, the number of slices $\epsilon = (t_1 - t_0)/n$.
    - `convention`: `"ito"`, `"midpoint"` (default) or `"trapezoid"` (module docstring).
    - `jacobian`: whether each slice carries its convention's Jacobian (default `True`).
    - `t0`: the start time, finite (default 0).
    - `mass_tol`: the largest lost mass accepted, `None` (report only) or $\ge 0$ and finite.
    - `problem`: the problem a flow `sde` acts on (`None` otherwise).

    **Raises:** `ValueError` for `num_slices < 1`, an unknown convention, bad axes, an $x_0$ of
    the wrong shape or not finite, $t_1\le t_0$, a flow whose noise is not constant
    additive noise over $[t_0, t_1]$, or (with the Jacobian) a lost mass above `mass_tol` or a
    created mass above max(`mass_tol`, 5%); a `mass_tol` that is not `None` or >= 0 and finite.
    """
    return _path_integral(
        sde,
        problem,
        x0,
        t1,
        axes,
        num_slices,
        convention,
        jacobian,
        t0,
        mass_tol,
        "path_integral_nd",
    )


def path_integral(
    sde,
    x0: ScalarLike,
    t1: ScalarLike,
    grid: Float[Array, " m"],
    num_slices: int,
    *,
    convention: Convention = "midpoint",
    jacobian: bool = True,
    t0: ScalarLike = 0.0,
    mass_tol: float | None = 1e-6,
    problem: Problem | None = None,
) -> GridDensity:
    r"""The 1-D route: `path_integral_nd` on `(grid,)` from the point $x_0$, as a `GridDensity`.

    **Arguments:**

    - `sde`: a `ScalarSDE`, a 1-D `VectorSDE`, or a flow with noise on `problem`.
    - `x0`: the start $x_0$, one finite real number (off-grid allowed).
    - `t1`: the final time $t_1 > t_0$.
    - `grid`: a uniform 1-D grid.
    - `num_slices`, `convention`, `jacobian`, `t0`, `mass_tol`, `problem`: as
      `path_integral_nd`.

    **Raises:** as `path_integral_nd`.
    """
    res = _path_integral(
        sde,
        problem,
        check_scalar_point("x0", x0),
        t1,
        (check_uniform_grid("grid", grid),),
        num_slices,
        convention,
        jacobian,
        t0,
        mass_tol,
        "path_integral",
    )
    return GridDensity.from_tensor(res)
