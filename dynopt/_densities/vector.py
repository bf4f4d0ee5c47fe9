r"""The SDE $dx = p(x,t)\,dt + \sqrt{\alpha}\,dW$ in $\mathbb R^d$ (isotropic noise), the exact
transition density of a linear drift, the stationary law of a gradient drift, and the result type
of every $d$-dimensional density route: a density on a tensor grid.

**Convention** as in 1-D: $\alpha$ is the variance rate, $\mathrm{Cov}(dx) = \alpha\,dt\,I$. The
Fokker–Planck equation is $\partial_t P = \tfrac\alpha2\Delta P - \nabla\cdot(pP)$.
"""

from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Float, Scalar, ScalarLike
from .._sde.base import AbstractSDE
from .base import _GL_NODES, _GL_WEIGHTS, check_positive, check_uniform_grid


class VectorSDE(AbstractSDE):
    r"""$dx = p(x, t)\,dt + \sqrt{\alpha}\,dW$ in $\mathbb R^d$, $W$ a $d$-dimensional Brownian
    motion (isotropic additive noise, so `dynopt.sde.simulate` uses ShARK).

    **Arguments:**

    - `drift`: $p(x, t)$, a callable mapping shape $(d,)$ and a scalar to shape $(d,)$ (an
      `eqx.Module` such as `LinearDrift` keeps its numbers traced: one compilation for many).
    - `alpha`: the variance rate $\alpha > 0$.

    **Raises:** `ValueError` for $\alpha \le 0$, a non-callable drift, or (at `check`, i.e. in
    `simulate` and every route) a drift whose output shape is not the state's $(d,)$.
    """

    drift_fn: Callable[[Array, Scalar], Array]
    alpha: Float[Array, ""]
    additive: ClassVar[bool] = True

    def __init__(self, drift: Callable, alpha: ScalarLike):
        if not callable(drift):
            raise ValueError(f"drift must be callable (x, t) -> shape (d,), got {type(drift)}.")
        check_positive("alpha", alpha)
        self.drift_fn = drift
        self.alpha = jnp.asarray(alpha, dtype=float)

    def p(self, x: Float[Array, " d"], t: ScalarLike) -> Float[Array, " d"]:
        """The drift $p(x, t)$."""
        return jnp.asarray(self.drift_fn(x, t))

    def grad_p(self, x: Float[Array, " d"], t: ScalarLike) -> Float[Array, "d d"]:
        r"""$\nabla p$, $(\nabla p)_{ij} = \partial_j p_i$, by forward-mode autodiff."""
        return jax.jacfwd(lambda y: self.p(y, t))(jnp.asarray(x, dtype=float))

    def init(self, x0) -> Float[Array, " d"]:
        return jnp.atleast_1d(jnp.asarray(x0, dtype=float))

    def check(self, y0) -> None:
        if y0.ndim != 1:
            raise ValueError(f"x0 must be a vector of shape (d,), got shape {y0.shape}.")
        out = jax.eval_shape(self.drift_fn, y0, jnp.zeros(()))
        if getattr(out, "shape", None) != y0.shape:
            shape = getattr(out, "shape", type(out).__name__)
            raise ValueError(f"drift must map shape {y0.shape} to {y0.shape}, got {shape}.")

    def drift(self, t, y, args):
        del args
        return self.p(y, t).astype(y.dtype)

    def diffusion(self, t, y, args):
        del t, args
        return jnp.sqrt(self.alpha).astype(y.dtype) * jnp.eye(y.shape[0], dtype=y.dtype)

    def noise_dim(self, y0) -> int:
        return y0.shape[0]

    def params(self, y):
        return y


class LinearDrift(eqx.Module):
    r"""$p(x) = A x$ with $A$ a traced $(d, d)$ array leaf (SDEs that differ only in $A$ share
    compiled programs)."""

    A: Float[Array, "d d"]

    def __init__(self, A):
        a = jnp.asarray(A, dtype=float)
        if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 1:
            raise ValueError(f"A must be a square (d, d) matrix, got shape {a.shape}.")
        self.A = a

    def __call__(self, x, t):
        del t
        return self.A @ x


def linear_vector_sde(A, alpha: ScalarLike) -> VectorSDE:
    r"""$dx = A x\,dt + \sqrt\alpha\,dW$ in $\mathbb R^d$ (OU for a stable $A$)."""
    return VectorSDE(LinearDrift(A), alpha)


def linear_moments(
    A, t: ScalarLike, x0, *, alpha: ScalarLike
) -> tuple[Float[Array, " d"], Float[Array, "d d"]]:
    r"""Mean and covariance of $x(t)$ for $dx = Ax\,dt + \sqrt\alpha\,dW$, $x(0)=x_0$:
    $$\mu(t) = e^{At}x_0,\qquad \Sigma(t) = \alpha\int_0^t e^{As}e^{A^\top s}\,ds,$$
    the integral exactly by Van Loan's block exponential:
    $\exp\Big(t\begin{bmatrix}-A & \alpha I\\ 0 & A^\top\end{bmatrix}\Big)
    = \begin{bmatrix}\cdot & G\\ 0 & F\end{bmatrix}$, $\Sigma = F^\top G$.

    **Raises:** `ValueError` for $\alpha \le 0$, $t \le 0$ or a non-square $A$."""
    check_positive("alpha", alpha)
    check_positive("t", t)
    a = LinearDrift(A).A
    d = a.shape[0]
    t = jnp.asarray(t, dtype=float)
    block = jnp.block([[-a, jnp.asarray(alpha, float) * jnp.eye(d)], [jnp.zeros((d, d)), a.T]])
    E = jax.scipy.linalg.expm(t * block)
    F, G = E[d:, d:], E[:d, d:]
    cov = F.T @ G
    mean = F.T @ jnp.asarray(x0, dtype=float)  # F^T = e^{At}
    return mean, 0.5 * (cov + cov.T)


@jax.jit
def gaussian_density(x: Float[Array, "... d"], mean, cov) -> Float[Array, "..."]:
    r"""$\mathcal N(x;\ \mu, \Sigma)$ for points `x` of shape $(\dots, d)$ (Cholesky solve)."""
    chol = jnp.linalg.cholesky(cov)
    d = mean.shape[0]
    z = jax.scipy.linalg.solve_triangular(chol, (x.reshape(-1, d) - mean[None]).T, lower=True)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    logp = -0.5 * jnp.sum(z * z, axis=0) - 0.5 * (d * jnp.log(2 * jnp.pi) + logdet)
    return jnp.exp(logp).reshape(x.shape[:-1])


def linear_density_nd(
    x: Float[Array, "... d"], t: ScalarLike, x0, *, A, alpha: ScalarLike
) -> Float[Array, "..."]:
    r"""Exact transition density of $dx = Ax\,dt + \sqrt\alpha\,dW$: $\mathcal N(x;\ \mu(t),
    \Sigma(t))$ with `linear_moments`."""
    mean, cov = linear_moments(A, t, x0, alpha=alpha)
    return gaussian_density(jnp.asarray(x, dtype=float), mean, cov)


# ----------------------------------------------------------------------------- tensor grids


def check_axes(name: str, axes) -> tuple[np.ndarray, ...]:
    """`ValueError` unless `axes` is a non-empty sequence of uniform 1-D grids (>= 3 points)."""
    if isinstance(axes, np.ndarray | jax.Array) or not hasattr(axes, "__len__") or not len(axes):
        raise ValueError(
            f"{name} must be a tuple of 1-D uniform grids, one per dimension, got {type(axes)}."
        )
    return tuple(check_uniform_grid(f"{name}[{i}]", g) for i, g in enumerate(axes))


def mesh_points(axes) -> Float[Array, "m1 ... md d"]:
    """The tensor grid's points, shape $(m_1, \\dots, m_d, d)$ (`indexing="ij"`)."""
    return jnp.stack(jnp.meshgrid(*(jnp.asarray(a) for a in axes), indexing="ij"), axis=-1)


def cell_volume(axes) -> float:
    return float(np.prod([a[1] - a[0] for a in axes]))


def padded_axes(axes, pad_to) -> tuple[tuple[np.ndarray, ...], tuple[int, ...]]:
    """Extend each axis to `pad_to[i]` points with the same spacing (inactive padding cells)."""
    shape = tuple(a.size for a in axes)
    size = shape if pad_to is None else tuple(int(s) for s in np.broadcast_to(pad_to, len(axes)))
    if any(s < m for s, m in zip(size, shape)):
        raise ValueError(f"pad_to must be >= the grid's shape {shape} on every axis, got {pad_to}.")
    out = []
    for a, s in zip(axes, size):
        g = a[0] + (a[1] - a[0]) * np.arange(s, dtype=np.float64)
        g[: a.size] = a
        out.append(g)
    return tuple(out), size


def check_dimension(sde, d: int) -> None:
    """`ValueError` unless `sde` is a `VectorSDE` whose drift maps shape (d,) to (d,)."""
    if not isinstance(sde, VectorSDE):
        raise ValueError(f"sde must be a dynopt.densities.VectorSDE, got {type(sde).__name__}.")
    sde.check(jnp.zeros(d))


def check_point(name: str, x, d: int) -> Float[Array, " d"]:
    x = jnp.asarray(x, dtype=float)
    if x.shape != (d,):
        raise ValueError(f"{name} must have shape ({d},) (one coordinate per axis), got {x.shape}.")
    return x


@eqx.filter_jit
def evaluate_on(fn: Callable[[Array], Array], pts: Float[Array, "... d"]) -> Float[Array, "..."]:
    """`fn` ($x:(d,) \\to$ scalar) at every point of `pts` (one compiled program per shape)."""
    d = pts.shape[-1]
    return jax.vmap(fn)(pts.reshape(-1, d)).reshape(pts.shape[:-1])


class TensorDensity(eqx.Module):
    r"""A transition density $P(x, t_1 \mid x_0)$ on a tensor grid, from one of the $d$-dim
    routes (the $d$-dim `GridDensity`).

    **Fields:**

    - `axes`: one uniform 1-D grid per dimension; `density`: shape $(m_1, \dots, m_d)$.
    - `t`: the time $t_1$.
    - `mass`: $\int P\,dx$ (Riemann sum with the cell volume $\prod_i h_i$).
    - `lost_mass`: probability that left the grid (absorbed at its faces, or outside the
      histogram's bins): a grid that does not cover the mass shows up here.
    - `mass_defect`: |mass + lost_mass − initial mass| (the route's conservation check).
    - `method`: the route's name.
    """

    axes: tuple[Float[Array, " m"], ...]
    density: Float[Array, "..."]
    t: Float[Array, ""]
    mass: Float[Array, ""]
    lost_mass: Float[Array, ""]
    mass_defect: Float[Array, ""]
    method: str = eqx.field(static=True)

    @property
    def points(self) -> Float[Array, "... d"]:
        return mesh_points(self.axes)

    def exact_on_grid(self, exact: Callable[[Array], Array]) -> Float[Array, "..."]:
        """`exact` (a callable $x:(d,) \\to$ density) at every grid point."""
        return evaluate_on(exact, self.points)

    def error(self, exact: Callable[[Array], Array]) -> Float[Array, ""]:
        """Max-norm error $\\max_i |P_i - P_{exact}(x_i)|$ (`exact`: $x:(d,)\\to$ density)."""
        return jnp.max(jnp.abs(self.density - self.exact_on_grid(exact)))


# ------------------------------------------------------------------------ stationary density


def potential_along_segment(sde: VectorSDE, x, x_ref) -> Scalar:
    r"""$\Phi(x) = \int_0^1 p(x_r + s(x-x_r), 0)\cdot(x - x_r)\,ds$ (48-point Gauss–Legendre):
    for a gradient drift $p = -\nabla U$, $\Phi(x) = U(x_r) - U(x)$."""
    nodes = 0.5 * (jnp.asarray(_GL_NODES) + 1.0)
    dx = x - x_ref
    vals = jax.vmap(lambda s: sde.p(x_ref + s * dx, 0.0) @ dx)(nodes)
    return 0.5 * jnp.sum(jnp.asarray(_GL_WEIGHTS) * vals)


def stationary_density_nd(sde: VectorSDE, axes, *, curl_tol: float = 1e-8) -> Float[Array, "..."]:
    r"""The stationary solution of Fokker–Planck for a time-independent gradient drift
    $p = -\nabla U$: $P_\infty \propto e^{-2U/\alpha}$, normalised on the tensor grid `axes`
    (Riemann sum), with $U$ from the line integral of $p$ from the grid's first corner.

    **Raises:** `ValueError` for bad axes, or when $p$ is not a gradient field:
    $\max|\nabla p - \nabla p^\top| > $ `curl_tol` $\cdot \max(1, \max|\nabla p|)$ on the grid
    (then no such closed form exists)."""
    axes = check_axes("axes", axes)
    check_dimension(sde, len(axes))
    pts = mesh_points(axes)
    d = len(axes)
    flat = pts.reshape(-1, d)
    jac = jax.vmap(lambda x: sde.grad_p(x, 0.0))(flat)
    asym = float(jnp.max(jnp.abs(jac - jnp.swapaxes(jac, 1, 2))))
    if asym > curl_tol * max(1.0, float(jnp.max(jnp.abs(jac)))):
        raise ValueError(
            f"the drift is not a gradient field (max |∇p - ∇pᵀ| = {asym:.3g} on the grid): "
            "the stationary law exp(-2U/alpha) needs p = -∇U."
        )
    phi = jax.vmap(lambda x: potential_along_segment(sde, x, flat[0]))(flat)
    logd = 2.0 * phi / sde.alpha
    dens = jnp.exp(logd - jnp.max(logd))
    return (dens / (jnp.sum(dens) * cell_volume(axes))).reshape(pts.shape[:-1])


def short_time_density_nd(sde: VectorSDE, x0, t: ScalarLike, axes) -> Float[Array, "..."]:
    r"""The one-slice Itô propagator $\mathcal N(x;\ x_0 + p(x_0,0)t,\ \alpha t I)$ on the tensor
    grid: a start for `fokker_planck_nd` at a small $t_0 = t$ (error $O(t)$)."""
    check_positive("t", t)
    axes = check_axes("axes", axes)
    d = len(axes)
    check_dimension(sde, d)
    x0 = check_point("x0", x0, d)
    mean = x0 + sde.p(x0, 0.0) * t
    return gaussian_density(mesh_points(axes), mean, sde.alpha * t * jnp.eye(d))
