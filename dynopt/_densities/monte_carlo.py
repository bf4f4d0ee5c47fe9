r"""Route (a): Monte Carlo. `dynopt.sde.simulate` (diffrax; ShARK for this additive noise) draws
$N$ paths of $dx = p\,dt + \sqrt\alpha\,dW$; a histogram on fixed bins estimates the density.

Against exact bin probabilities $\pi_b$ the total-variation error
$\tfrac12\sum_b|\hat\pi_b - \pi_b|$ has no binning bias, only sampling error
$\approx \tfrac12\sum_b\sqrt{2\pi_b(1-\pi_b)/(\pi N)} \propto N^{-1/2}$ (plus the solver's weak
error, $O(dt^2)$ for ShARK).
"""

import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Float, Key, ScalarLike
from .._sde.simulate import simulate
from .base import check_lost_mass, check_positive, GridDensity, ScalarSDE


def histogram_density(
    samples: Float[Array, " N"], edges: Float[Array, " b+1"], t: ScalarLike
) -> GridDensity:
    """A histogram density on `edges` (bin centres as `x`); samples outside count as lost."""
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.all(np.diff(e) > 0):
        raise ValueError("edges must be a 1-D increasing array of >= 2 bin edges.")
    s = jnp.asarray(samples)
    idx = jnp.searchsorted(jnp.asarray(e), s, side="right") - 1
    inside = (idx >= 0) & (idx < e.size - 1)
    counts = jnp.zeros(e.size - 1).at[jnp.where(inside, idx, 0)].add(inside.astype(float))
    probs = counts / s.shape[0]
    width = jnp.asarray(np.diff(e))
    return GridDensity(
        x=jnp.asarray(0.5 * (e[1:] + e[:-1])),
        density=probs / width,
        t=jnp.asarray(t, float),
        mass=jnp.sum(probs),
        lost_mass=1.0 - jnp.sum(probs),
        mass_defect=jnp.zeros(()),
        method="monte_carlo",
    )


def monte_carlo_samples(
    sde: ScalarSDE,
    x0: ScalarLike,
    t1: ScalarLike,
    key: Key,
    num_paths: int,
    *,
    dt: float,
    solver=None,
) -> Float[Array, " N"]:
    """$x(t_1)$ on `num_paths` independent diffrax paths (`dynopt.sde.simulate`). Prefixes
    `samples[:N]` are independent samples too: a convergence study in $N$ needs one run."""
    if not isinstance(sde, ScalarSDE):
        raise ValueError(f"sde must be a dynopt.densities.ScalarSDE, got {type(sde).__name__}.")
    check_positive("t1", t1)
    paths = simulate(sde, x0, jnp.asarray([0.0, float(t1)]), key, num_paths, dt=dt, solver=solver)
    return paths.ys[:, -1, 0]


def monte_carlo_density(
    sde: ScalarSDE,
    x0: ScalarLike,
    t1: ScalarLike,
    edges: Float[Array, " b+1"],
    key: Key,
    num_paths: int,
    *,
    dt: float,
    solver=None,
    mass_tol: float | None = None,
) -> GridDensity:
    r"""Histogram of $x(t_1)$ over `num_paths` diffrax paths from $x_0$ (fixed step `dt`;
    `solver` as in `dynopt.sde.simulate`). `mass` is the fraction of paths inside the bins.

    **Raises:** `ValueError` as `simulate` does, or when the fraction of paths outside `edges`
    exceeds `mass_tol` (default `None`: report only, since it is itself random).
    """
    samples = monte_carlo_samples(sde, x0, t1, key, num_paths, dt=dt, solver=solver)
    dens = histogram_density(samples, edges, t1)
    check_lost_mass(dens.lost_mass, mass_tol, "monte_carlo_density")
    return dens


def total_variation(dens: GridDensity, edges: Float[Array, " b+1"], cdf) -> Float[Array, ""]:
    r"""$\tfrac12\sum_b |\hat\pi_b - \pi_b|$ between a histogram on `edges` and the exact bin
    probabilities $\pi_b = F(e_{b+1}) - F(e_b)$ from the callable CDF `cdf`."""
    e = jnp.asarray(edges)
    exact = jnp.diff(cdf(e))
    return 0.5 * jnp.sum(jnp.abs(dens.density * jnp.diff(e) - exact))
