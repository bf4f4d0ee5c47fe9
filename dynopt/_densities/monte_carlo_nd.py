r"""Route (a) in $d$ dimensions: `dynopt.sde.simulate` (ShARK, additive noise) draws $N$ paths of
$dx = p\,dt + \sqrt\alpha\,dW$ in $\mathbb R^d$; a histogram on fixed tensor bins estimates the
density. Exact bin probabilities $\pi_b = \int_b P$ come from tensor Gauss–Legendre over each
bin, so the total variation $\tfrac12\sum_b|\hat\pi_b - \pi_b|$ has no binning bias, only the
sampling error $\propto N^{-1/2}$ (and the solver's weak error).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Float, Key, ScalarLike
from .._sde.simulate import simulate
from .base import check_lost_mass, check_positive
from .vector import (
    check_dimension,
    check_point,
    evaluate_on,
    mesh_points,
    TensorDensity,
    VectorSDE,
)


def _check_edges(edges) -> tuple[np.ndarray, ...]:
    if isinstance(edges, np.ndarray | jax.Array) or not hasattr(edges, "__len__") or not edges:
        raise ValueError("edges must be a tuple of 1-D bin-edge arrays, one per dimension.")
    out = []
    for i, e in enumerate(edges):
        e = np.asarray(e, dtype=np.float64)
        w = np.diff(e)
        if e.ndim != 1 or e.size < 3 or not np.all(w > 0) or not np.allclose(w, w[0], rtol=1e-9):
            raise ValueError(
                f"edges[{i}] must be uniform increasing bin edges (>= 2 bins), e.g. np.linspace."
            )
        out.append(e)
    return tuple(out)


@jax.jit
def _bin_fractions(s, edges):
    nb = tuple(e.shape[0] - 1 for e in edges)
    idx = jnp.stack(
        [jnp.searchsorted(e, s[:, i], side="right") - 1 for i, e in enumerate(edges)], axis=1
    )
    inside = jnp.all((idx >= 0) & (idx < jnp.asarray(nb, dtype=idx.dtype)[None]), axis=1)
    flat = jnp.ravel_multi_index(tuple(idx.T), nb, mode="clip")
    counts = jnp.zeros(int(np.prod(nb))).at[flat].add(inside.astype(float)).reshape(nb)
    return counts / s.shape[0]


def histogram_density_nd(samples: Float[Array, "N d"], edges, t: ScalarLike) -> TensorDensity:
    """A $d$-dim histogram density on tensor bins `edges` (one uniform edge array per axis; bin
    centres as `axes`); samples outside every bin count as lost."""
    edges = _check_edges(edges)
    s = jnp.asarray(samples)
    if s.ndim != 2 or s.shape[1] != len(edges):
        raise ValueError(f"samples must have shape (N, {len(edges)}), got {s.shape}.")
    probs = _bin_fractions(s, tuple(jnp.asarray(e) for e in edges))
    vol = float(np.prod([e[1] - e[0] for e in edges]))
    return TensorDensity(
        axes=tuple(jnp.asarray(0.5 * (e[1:] + e[:-1])) for e in edges),
        density=probs / vol,
        t=jnp.asarray(t, float),
        mass=jnp.sum(probs),
        lost_mass=1.0 - jnp.sum(probs),
        mass_defect=jnp.zeros(()),
        method="monte_carlo",
    )


def monte_carlo_samples_nd(
    sde: VectorSDE, x0, t1: ScalarLike, key: Key, num_paths: int, *, dt: float, solver=None
) -> Float[Array, "N d"]:
    """$x(t_1)$ on `num_paths` independent diffrax paths (prefixes are independent samples)."""
    x0 = jnp.asarray(x0, dtype=float)
    check_dimension(sde, x0.size)
    x0 = check_point("x0", x0, x0.size)
    check_positive("t1", t1)
    paths = simulate(sde, x0, jnp.asarray([0.0, float(t1)]), key, num_paths, dt=dt, solver=solver)
    return paths.ys[:, -1, :]


def monte_carlo_density_nd(
    sde: VectorSDE,
    x0,
    t1: ScalarLike,
    edges,
    key: Key,
    num_paths: int,
    *,
    dt: float,
    solver=None,
    mass_tol: float | None = None,
) -> TensorDensity:
    r"""Histogram of $x(t_1)$ over `num_paths` diffrax paths on the tensor bins `edges`.

    **Raises:** `ValueError` as `simulate` does, for bad edges, or when the fraction of paths
    outside the bins exceeds `mass_tol` (default `None`: report only, it is random)."""
    samples = monte_carlo_samples_nd(sde, x0, t1, key, num_paths, dt=dt, solver=solver)
    dens = histogram_density_nd(samples, edges, t1)
    check_lost_mass(dens.lost_mass, mass_tol, "monte_carlo_density_nd")
    return dens


def bin_probabilities(
    density: Callable[[Array], Array], edges, *, nodes: int = 8
) -> Float[Array, "..."]:
    r"""$\pi_b = \int_b P(x)\,dx$ for every tensor bin, by `nodes`-point Gauss–Legendre per axis
    (`density`: a callable $x:(d,) \to$ density)."""
    edges = _check_edges(edges)
    gl_x, gl_w = np.polynomial.legendre.leggauss(nodes)
    xs, ws = [], []
    for e in edges:
        half = 0.5 * np.diff(e)[:, None]
        xs.append((0.5 * (e[1:] + e[:-1])[:, None] + half * gl_x[None]).reshape(-1))
        ws.append((half * gl_w[None]).reshape(-1))
    d = len(edges)
    vals = evaluate_on(density, mesh_points(xs))
    for i, w in enumerate(ws):  # weight and reduce axis i: (b_i * q) -> (b_i, q) -> b_i
        shp = [1] * d
        shp[i] = -1
        vals = vals * jnp.asarray(w).reshape(shp)
    nb = [e.size - 1 for e in edges]
    return vals.reshape([v for b in nb for v in (b, nodes)]).sum(axis=tuple(range(1, 2 * d, 2)))


def total_variation_nd(dens: TensorDensity, probs: Float[Array, "..."]) -> Float[Array, ""]:
    r"""$\tfrac12\sum_b |\hat\pi_b - \pi_b|$ between a histogram and exact bin probabilities."""
    vol = 1.0
    for a in dens.axes:
        vol = vol * (a[1] - a[0])
    return 0.5 * jnp.sum(jnp.abs(dens.density * vol - probs))
