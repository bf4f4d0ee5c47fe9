r"""Route (c): the time-sliced path integral (post 7, eqs. 59–64) on a tensor grid in $\mathbb R^d$;
the 1-D route is its $d = 1$ case.

Slice $[t_a, t_b]$ into $n$ steps $\epsilon = (t_b-t_a)/n$. Each convention is a one-step
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

from .._custom_types import Array, Float, Scalar, ScalarLike
from .._problem import Problem
from .._validation import choice, positive, positive_int
from .base import check_lost_mass, check_uniform_grid, GridDensity
from .vector import (
    as_vector_sde,
    cell_volume,
    check_axes,
    check_dimension,
    check_finite_drift,
    check_point,
    mesh_points,
    TensorDensity,
    VectorSDE,
)


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
    r"""$K_\epsilon(x_{new}\mid x_{old})$ of one slice in $\mathbb R^d$ (table above)."""
    choice("convention", convention, _CONVENTIONS)
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
    var = sde.alpha * eps
    r = xn - xo - eps * pbar
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
    r"""The 1-D kernel $K_\epsilon(x_{new}\mid x_{old})$: `short_time_propagator_nd` at
    $d = 1$."""
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
def _compose(sde, x0, pts, vol, t0, eps, n, convention, jacobian):
    def kernel(xn, xo, t):
        return short_time_propagator_nd(sde, xn, xo, t, eps, convention, jacobian)

    kern = jax.vmap(jax.vmap(kernel, in_axes=(None, 0, None)), in_axes=(0, None, None))
    first = jax.vmap(lambda xn: kernel(xn, x0, t0))(pts)

    def step(k, P):
        return kern(pts, pts, t0 + k * eps) @ P * vol

    # n is traced: one compiled program for every number of slices.
    return jax.lax.fori_loop(1, n, step, first)


def _path_integral(sde, x0, t1, axes, num_slices, convention, jacobian, t0, mass_tol, name):
    choice("convention", convention, _CONVENTIONS)
    positive_int("num_slices", num_slices)
    positive("t1 - t0", float(t1) - float(t0))
    axes = check_axes("axes", axes)
    d = len(axes)
    check_dimension(sde, d)
    x0 = check_point("x0", x0, d)
    vol = cell_volume(axes)
    pts = mesh_points(axes)
    eps = (jnp.asarray(t1, float) - t0) / num_slices
    P = _compose(
        sde,
        x0,
        pts.reshape(-1, d),
        jnp.asarray(vol),
        jnp.asarray(t0, float),
        eps,
        num_slices,
        convention,
        jacobian,
    )
    P = P.reshape(pts.shape[:-1])
    if not bool(jnp.all(jnp.isfinite(P))):  # name a NaN drift (it would read as lost mass)
        check_finite_drift(sde, pts, (t0, float(t1)), name)
    mass = jnp.sum(P) * vol
    if jacobian:
        check_lost_mass(1.0 - mass, mass_tol, f"{name} ({convention})")
    return TensorDensity(
        axes=tuple(jnp.asarray(a) for a in axes),
        density=P,
        t=jnp.asarray(t1, float),
        mass=mass,
        lost_mass=1.0 - mass,
        mass_defect=jnp.zeros(()),
        method=f"path_integral_{convention}" + ("" if jacobian else "_no_jacobian"),
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

    `sde`: a `VectorSDE`, a `ScalarSDE` ($d = 1$), or a flow with isotropic additive noise on
    `problem` (`VectorSDE.from_flow`). Cost: $n$ kernels of $M^2$ entries ($M = \prod m_i$);
    keep $M \lesssim 2500$.

    **Raises:** `ValueError` for `num_slices < 1`, an unknown convention, bad axes, an $x_0$ of
    the wrong shape, $t_1\le t_0$, or (with the Jacobian) a lost mass above `mass_tol`.
    """
    sde = as_vector_sde(sde, problem)
    return _path_integral(
        sde, x0, t1, axes, num_slices, convention, jacobian, t0, mass_tol, "path_integral_nd"
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

    **Raises:** as `path_integral_nd`.
    """
    res = _path_integral(
        as_vector_sde(sde, problem),
        jnp.reshape(jnp.asarray(x0, float), (1,)),
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
