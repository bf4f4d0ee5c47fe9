r"""Route (c) in $d$ dimensions: the time-sliced path integral on a tensor grid.

Each convention is a one-step scheme $x_k - x_{k-1} - \epsilon\,\bar p_k = \sqrt\alpha\,\Delta W_k$
in $\mathbb R^d$; changing variables $\Delta W_k \to x_k$ gives
$$K_\epsilon(x_k\mid x_{k-1}) = (2\pi\alpha\epsilon)^{-d/2}
  \exp\Big(-\frac{|x_k - x_{k-1} - \epsilon\bar p_k|^2}{2\alpha\epsilon}\Big)
  \Big|\det\frac{\partial(\sqrt\alpha\,\Delta W_k)}{\partial x_k}\Big| ,$$

- `"ito"`: $\bar p_k = p(x_{k-1}, t_{k-1})$, Jacobian 1;
- `"midpoint"`: $\bar p_k = p(\bar x_k, t_{k-1}+\epsilon/2)$, $\bar x_k = (x_k+x_{k-1})/2$,
  Jacobian $|\det(I - \tfrac\epsilon2\nabla p(\bar x_k))|$;
- `"trapezoid"`: $\bar p_k = \tfrac12[p(x_k,t_k)+p(x_{k-1},t_{k-1})]$, Jacobian
  $|\det(I - \tfrac\epsilon2\nabla p(x_k,t_k))|$.

For $d = 1$ these are the 1-D kernels ($1 - \tfrac\epsilon2 p'$). The product of the Jacobians
is $\exp(-\tfrac12\int\nabla\!\cdot p\,dt)$; the midpoint rule without it converges to
$e^{+\frac12\int\nabla\cdot p\,dt}$ times the right density. The $n-1$ intermediate integrals are
trapezoid sums over the $M = \prod_i m_i$ grid points ($M\times M$ kernel matrices, spectrally
accurate once every $h_i \lesssim \sqrt{\alpha\epsilon}$).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Float, Scalar, ScalarLike
from .base import check_lost_mass, check_positive
from .path_integral import _CONVENTIONS, Convention
from .vector import (
    cell_volume,
    check_axes,
    check_dimension,
    check_point,
    mesh_points,
    TensorDensity,
    VectorSDE,
)


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
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {_CONVENTIONS}, got {convention!r}.")
    xn, xo = jnp.asarray(x_new, float), jnp.asarray(x_old, float)
    d = xn.shape[0]
    eye = jnp.eye(d)
    if convention == "ito":
        pbar, jac = sde.p(xo, t_old), jnp.ones(())
    elif convention == "midpoint":
        xb, tb = 0.5 * (xn + xo), t_old + 0.5 * eps
        pbar, jac = sde.p(xb, tb), jnp.linalg.det(eye - 0.5 * eps * sde.grad_p(xb, tb))
    else:
        t_new = t_old + eps
        pbar = 0.5 * (sde.p(xn, t_new) + sde.p(xo, t_old))
        jac = jnp.linalg.det(eye - 0.5 * eps * sde.grad_p(xn, t_new))
    jac = jnp.abs(jac) if jacobian else jnp.ones(())
    var = sde.alpha * eps
    r = xn - xo - eps * pbar
    return jac * jnp.exp(-0.5 * jnp.sum(r * r) / var) / (2 * jnp.pi * var) ** (0.5 * d)


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


def path_integral_nd(
    sde: VectorSDE,
    x0,
    t1: ScalarLike,
    axes,
    num_slices: int,
    *,
    convention: Convention = "midpoint",
    jacobian: bool = True,
    t0: ScalarLike = 0.0,
    mass_tol: float | None = 1e-6,
) -> TensorDensity:
    r"""$P(x, t_1\mid x_0, t_0)$ on the tensor grid `axes` from `num_slices` composed short-time
    propagators (the $d$-dim `path_integral`): the first slice from the point $x_0$, the other
    $n-1$ by $M\times M$ kernel products in one `fori_loop`. `lost_mass` = $1-\int P$.

    Cost: $n$ kernels of $M^2$ entries ($M = \prod m_i$); keep $M \lesssim 2500$.

    **Raises:** `ValueError` for `num_slices < 1`, an unknown convention, bad axes, an $x_0$ of
    the wrong shape, $t_1\le t_0$, or (with the Jacobian) a lost mass above `mass_tol`.
    """
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {_CONVENTIONS}, got {convention!r}.")
    if not isinstance(num_slices, int | np.integer) or num_slices < 1:
        raise ValueError(f"num_slices must be a positive integer, got {num_slices!r}.")
    check_positive("t1 - t0", float(t1) - float(t0))
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
    mass = jnp.sum(P) * vol
    if jacobian:
        check_lost_mass(1.0 - mass, mass_tol, f"path_integral_nd ({convention})")
    return TensorDensity(
        axes=tuple(jnp.asarray(a) for a in axes),
        density=P,
        t=jnp.asarray(t1, float),
        mass=mass,
        lost_mass=1.0 - mass,
        mass_defect=jnp.zeros(()),
        method=f"path_integral_{convention}" + ("" if jacobian else "_no_jacobian"),
    )
