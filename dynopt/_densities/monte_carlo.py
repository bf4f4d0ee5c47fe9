r"""Route (a): Monte Carlo. `dynopt.sde.simulate` (diffrax; ShARK for this additive noise) draws
$N$ paths of $dx = p\,dt + \sqrt\alpha\,dW$ in $\mathbb R^d$; a histogram on fixed (tensor) bins
estimates the density. The 1-D route is the $d = 1$ case of the sampler, with its own histogram
on arbitrary increasing edges.

Against exact bin probabilities $\pi_b$ (1-D: from the CDF; $d$-dim: tensor Gauss–Legendre over
each bin, `bin_probabilities`) the total-variation error $\tfrac12\sum_b|\hat\pi_b - \pi_b|$ has
no binning bias, only sampling error
$\approx \tfrac12\sum_b\sqrt{2\pi_b(1-\pi_b)/(\pi N)} \propto N^{-1/2}$ (plus the solver's weak
error, $O(dt^2)$ for ShARK).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Float, Key, ScalarLike
from .._problem import Problem
from .._sde.simulate import simulate
from .._validation import function, interval, is_traced, positive, positive_int
from .base import (
    as_point_array,
    check_lost_mass,
    check_scalar_point,
    check_tolerance,
    GridDensity,
    is_uniform,
)
from .vector import (
    as_vector_sde,
    cell_volume,
    check_dimension,
    check_point,
    evaluate_on,
    mesh_points,
    TensorDensity,
    VectorSDE,
)


def histogram_density(
    samples: Float[Array, " N"], edges: Float[Array, " b+1"], t: ScalarLike
) -> GridDensity:
    """A histogram density on `edges` (bin centres as `x`); samples outside count as lost.

    **Arguments:**

    - `samples`: shape $(N,)$, $N \\ge 1$; no NaN ($\\pm\\infty$ is outside every bin).
    - `edges`: increasing bin edges, shape $(b + 1,)$, $b \\ge 1$ (not necessarily uniform).
    - `t`: the time the density is labelled with (finite).

    **Raises:** `ValueError` for `samples` not a non-empty 1-D array without NaN, `edges` not
    increasing, or a `t` not finite (inside `jit`: `eqx.error_if` for the values)."""
    e = _check_edges_1d(edges)
    if jnp.ndim(samples) != 1 or jnp.size(samples) < 1:
        raise ValueError(
            f"samples must be a non-empty 1-D array, got shape {jnp.shape(samples)} "
            "(histogram_density_nd takes (N, d) samples)."
        )
    samples, t = _check_samples_and_time(samples, t)
    probs = _bin_fractions_1d(jnp.asarray(samples), jnp.asarray(e))
    width = jnp.asarray(np.diff(e))
    return GridDensity(x=0.5 * (e[1:] + e[:-1]), **_histogram_fields(probs, width, t))


def _check_samples_and_time(samples, t):
    """A NaN sample falls in no bin and would count as lost mass (an escape), silently; a NaN
    time labels the density with no time. (+-inf samples are outside every bin: lost.)"""
    hint = "(NaN is no sample; +-inf is outside every bin.)"
    return interval("samples", samples, allow_inf=True, hint=hint), interval("t", t)


def _histogram_fields(probs, cell, t) -> dict:
    """The fields a histogram density has in any dimension, from its bin fractions `probs` and
    bin sizes `cell` (widths, or the volume): what no bin caught is the lost mass."""
    mass = jnp.sum(probs)
    return dict(
        density=probs / cell,
        t=t,
        mass=mass,
        lost_mass=1.0 - mass,
        mass_defect=jnp.zeros(()),
        method="monte_carlo",
    )


def _check_edges_1d(edges) -> np.ndarray:
    """`edges` as float64, or a `ValueError` unless 1-D, increasing, >= 2 of them (a 1-D
    histogram's bins need not be uniform)."""
    msg = "edges must be a 1-D increasing array of >= 2 finite bin edges, got {}."
    try:
        e = np.asarray(edges, dtype=np.float64)
    except (TypeError, ValueError) as err:  # a string, None, a ragged list
        raise ValueError(msg.format(repr(edges)[:60])) from err
    # An infinite edge made an infinite bin: a NaN bin centre and a zero density.
    if e.ndim != 1 or e.size < 2 or not np.all(np.isfinite(e)) or not np.all(np.diff(e) > 0):
        raise ValueError(msg.format(f"{e}" if e.size <= 8 else f"shape {e.shape}"))
    return e


def _check_edges(edges) -> tuple[np.ndarray, ...]:
    if isinstance(edges, np.ndarray | jax.Array) or not hasattr(edges, "__len__") or not edges:
        raise ValueError("edges must be a tuple of 1-D bin-edge arrays, one per dimension.")
    out = []
    for i, e in enumerate(edges):
        raw, e = e, np.asarray(e, dtype=np.float64)
        # Uniform to the precision of the edges' own dtype (as `check_uniform_grid`).
        if e.ndim != 1 or e.size < 3 or not is_uniform(raw, e):
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


@jax.jit
def _bin_fractions_1d(s, edges):
    """The d = 1 case of `_bin_fractions` (one compiled program per shape: run eagerly, the
    binning compiled each primitive on its own, for every sample and bin count)."""
    return _bin_fractions(s[:, None], (edges,))


def histogram_density_nd(samples: Float[Array, "N d"], edges, t: ScalarLike) -> TensorDensity:
    r"""A $d$-dimensional histogram density on tensor bins: the fraction of `samples` in each bin
    over the bin's volume; samples outside every bin count as lost (`lost_mass`).

    **Arguments:**

    - `samples`: shape $(N, d)$, $N \ge 1$; no NaN ($\pm\infty$ is outside every bin).
    - `edges`: a tuple of $d$ uniform increasing bin-edge arrays ($\ge 2$ bins each), one per
      axis.
    - `t`: the time the density is labelled with (finite).

    **Returns:** a `TensorDensity` with the bin centres as `axes`.

    **Raises:** `ValueError` for bad `edges`, `samples` not of shape $(N, d)$ or with a NaN, or
    a `t` that is not finite.
    """
    edges = _check_edges(edges)
    s = jnp.asarray(samples)
    if s.ndim != 2 or s.shape[1] != len(edges) or s.shape[0] < 1:
        raise ValueError(f"samples must have shape (N, {len(edges)}) with N >= 1, got {s.shape}.")
    s, t = _check_samples_and_time(s, t)
    probs = _bin_fractions(s, tuple(jnp.asarray(e) for e in edges))
    return TensorDensity(
        axes=tuple(0.5 * (e[1:] + e[:-1]) for e in edges),
        **_histogram_fields(probs, cell_volume(edges), t),
    )


def _check_sampler(sde, x0, t1, problem) -> tuple[VectorSDE, Float[Array, " d"]]:
    """The sampler's model and start, checked (the rest is checked by `simulate`, before it
    simulates)."""
    positive("t1", t1)
    sde = as_vector_sde(sde, problem, times=np.linspace(0.0, float(t1), 5))
    x0 = as_point_array("x0", x0)
    check_dimension(sde, x0.size)
    return sde, check_point("x0", x0, x0.size)


def _final_states(sde, x0, t1, key, num_paths, dt, solver) -> Float[Array, "N d"]:
    ts = jnp.asarray([0.0, float(t1)])
    paths = simulate(sde, None, ts, key, num_paths, x0=x0, dt=dt, solver=solver)
    return paths.ys[:, -1, :]


def monte_carlo_samples_nd(
    sde,
    x0,
    t1: ScalarLike,
    key: Key,
    num_paths: int,
    *,
    dt: float,
    solver=None,
    problem: Problem | None = None,
) -> Float[Array, "N d"]:
    r"""$x(t_1)$ on `num_paths` independent diffrax paths of $dx = p\,dt + \sqrt\alpha\,dW$ from
    $x_0$ (prefixes `samples[:N]` are independent samples too).

    **Arguments:**

    - `sde`: a `VectorSDE` (scalar $\alpha$ or diffusion matrix $D$), a `ScalarSDE` ($d = 1$), or a
      flow with constant additive noise (nonsingular $D$) on
      `problem` (`VectorSDE.from_flow`: the state is the raveled flow state).
    - `x0`: the start, a point of shape $(d,)$.
    - `t1`: the final time $t_1 > 0$.
    - `key`: a JAX PRNG key.
    - `num_paths`: $N$, the number of independent paths.
    - `dt`: the fixed step of the solver.
    - `solver`: as in `dynopt.sde.simulate` (`None`: its default).
    - `problem`: the problem a flow `sde` acts on (`None` otherwise).

    **Returns:** the final states, shape $(N, d)$.

    **Raises:** `ValueError` for $t_1 \le 0$, an `sde` of another kind (or a flow without its
    problem), an `x0` that is not a finite point of the model's dimension, or as `simulate`
    does.
    """
    sde, x0 = _check_sampler(sde, x0, t1, problem)
    return _final_states(sde, x0, t1, key, num_paths, dt, solver)


def monte_carlo_density_nd(
    sde,
    x0,
    t1: ScalarLike,
    edges,
    key: Key,
    num_paths: int,
    *,
    dt: float,
    solver=None,
    mass_tol: float | None = None,
    problem: Problem | None = None,
) -> TensorDensity:
    r"""Histogram of $x(t_1)$ over `num_paths` diffrax paths on the tensor bins `edges`.

    **Arguments:**

    - `sde`: a `VectorSDE` (scalar $\alpha$ or diffusion matrix $D$), a `ScalarSDE` ($d = 1$), or a
      flow with constant additive noise (nonsingular $D$) on
      `problem`.
    - `x0`: the start, a point of shape $(d,)$.
    - `t1`: the final time $t_1 > 0$.
    - `edges`: a tuple of $d$ uniform increasing bin-edge arrays, one per coordinate.
    - `key`: a JAX PRNG key.
    - `num_paths`: $N$, the number of independent paths.
    - `dt`: the solver's fixed step.
    - `solver`: as in `dynopt.sde.simulate` (`None`: its default).
    - `mass_tol`: the largest fraction of paths outside the bins accepted (`None`: report only).
    - `problem`: the problem a flow `sde` acts on (`None` otherwise).

    **Raises:** `ValueError` as `simulate` does, for bad edges (or not one edge array per
    coordinate of $x_0$), or when the fraction of paths outside the bins exceeds `mass_tol`
    (default `None`: report only, it is random). All but the last before any path is drawn."""
    mass_tol = check_tolerance("mass_tol", mass_tol)
    sde, x0 = _check_sampler(sde, x0, t1, problem)
    edges = _check_edges(edges)
    if len(edges) != x0.shape[0]:
        raise ValueError(
            f"edges must hold one bin-edge array per coordinate of x0 ({x0.shape[0]}), got "
            f"{len(edges)}."
        )
    samples = _final_states(sde, x0, t1, key, num_paths, dt, solver)
    dens = histogram_density_nd(samples, edges, t1)
    check_lost_mass(dens.lost_mass, mass_tol, "monte_carlo_density_nd")
    return dens


def monte_carlo_samples(
    sde,
    x0: ScalarLike,
    t1: ScalarLike,
    key: Key,
    num_paths: int,
    *,
    dt: float,
    solver=None,
    problem: Problem | None = None,
) -> Float[Array, " N"]:
    """The 1-D sampler: $x(t_1)$ on `num_paths` independent diffrax paths from $x_0$
    (`monte_carlo_samples_nd` at $d = 1$). Prefixes `samples[:N]` are independent samples too: a
    convergence study in $N$ needs one run.

    **Arguments:**

    - `sde`: a `ScalarSDE`, a 1-D `VectorSDE`, or a flow with noise on `problem`.
    - `x0`: the start $x_0$, one finite real number.
    - `t1`, `key`, `num_paths`, `dt`, `solver`, `problem`: as `monte_carlo_samples_nd`.

    **Returns:** the final states, shape $(N,)$.

    **Raises:** `ValueError` as `monte_carlo_samples_nd`, or for an `x0` that is not one finite
    number.
    """
    x0 = check_scalar_point("x0", x0)
    return monte_carlo_samples_nd(
        sde, x0, t1, key, num_paths, dt=dt, solver=solver, problem=problem
    )[:, 0]


def monte_carlo_density(
    sde,
    x0: ScalarLike,
    t1: ScalarLike,
    edges: Float[Array, " b+1"],
    key: Key,
    num_paths: int,
    *,
    dt: float,
    solver=None,
    mass_tol: float | None = None,
    problem: Problem | None = None,
) -> GridDensity:
    r"""Histogram of $x(t_1)$ over `num_paths` diffrax paths from $x_0$ (fixed step `dt`;
    `solver` as in `dynopt.sde.simulate`). `mass` is the fraction of paths inside the bins.

    **Arguments:**

    - `sde`: a `ScalarSDE`, a 1-D `VectorSDE`, or a flow with noise on `problem`.
    - `x0`: the start $x_0$, one finite real number.
    - `edges`: increasing bin edges, shape $(b + 1,)$.
    - `t1`, `key`, `num_paths`, `dt`, `solver`, `mass_tol`, `problem`: as
      `monte_carlo_density_nd`.

    **Raises:** `ValueError` as `simulate` does, for bad edges, or when the fraction of paths
    outside `edges` exceeds `mass_tol` (default `None`: report only, since it is itself
    random). All but the last before any path is drawn.
    """
    mass_tol = check_tolerance("mass_tol", mass_tol)
    edges = _check_edges_1d(edges)
    samples = monte_carlo_samples(
        sde, x0, t1, key, num_paths, dt=dt, solver=solver, problem=problem
    )
    dens = histogram_density(samples, edges, t1)
    check_lost_mass(dens.lost_mass, mass_tol, "monte_carlo_density")
    return dens


def bin_probabilities(
    density: Callable[[Array], Array], edges, *, nodes: int = 8
) -> Float[Array, "..."]:
    r"""Exact bin probabilities of a density on tensor bins,

    $$\pi_b = \int_b P(x)\,dx,$$

    for every bin $b$, by `nodes`-point Gauss–Legendre per axis.

    **Arguments:**

    - `density`: a callable $x \mapsto P(x)$, $x$ of shape $(d,)$.
    - `edges`: a tuple of $d$ uniform increasing bin-edge arrays ($\ge 2$ bins each).
    - `nodes`: Gauss–Legendre nodes per axis and bin, a positive integer (default 8).

    **Returns:** an array of shape $(b_1, \dots, b_d)$, one probability per bin.

    **Raises:** `ValueError` for a `density` that is not callable, bad `edges` or a `nodes` that
    is not a positive integer.
    """
    function("density", density, "callable x (shape (d,)) -> density")
    nodes = positive_int("nodes", nodes)
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
    r"""$\tfrac12\sum_b |\hat\pi_b - \pi_b|$ between a histogram and exact bin probabilities.

    **Arguments:**

    - `dens`: the histogram, a `TensorDensity`.
    - `probs`: the exact bin probabilities $\pi_b$, of the shape of its bins (e.g.
      `bin_probabilities`).

    **Raises:** `ValueError` for a `dens` that is no `TensorDensity` or `probs` of another
    shape than its bins (it broadcast silently)."""
    if not isinstance(dens, TensorDensity):
        raise ValueError(
            f"dens must be a TensorDensity (histogram_density_nd(...)), got {type(dens).__name__}."
        )
    if jnp.shape(probs) != dens.density.shape:
        raise ValueError(
            f"probs must have the histogram's shape {dens.density.shape} (one probability per "
            f"bin, e.g. bin_probabilities(density, edges)), got {jnp.shape(probs)}."
        )
    vol = 1.0
    for a in dens.axes:
        vol = vol * (a[1] - a[0])
    return 0.5 * jnp.sum(jnp.abs(dens.density * vol - probs))


def total_variation(dens: GridDensity, edges: Float[Array, " b+1"], cdf) -> Float[Array, ""]:
    r"""$\tfrac12\sum_b |\hat\pi_b - \pi_b|$ between a histogram on `edges` and the exact bin
    probabilities $\pi_b = F(e_{b+1}) - F(e_b)$ from the callable CDF `cdf`.

    **Arguments:**

    - `dens`: the histogram, a `GridDensity` on `edges`.
    - `edges`: its $b + 1$ increasing bin edges.
    - `cdf`: the exact CDF $F$, a callable mapping the edges (an array) to $b + 1$ values.

    **Raises:** `ValueError` for a `dens` that is no `GridDensity`, `edges` that are not the
    histogram's $b + 1$ increasing edges, or a `cdf` that is not callable or does not map the
    edges to $b + 1$ values."""
    if not isinstance(dens, GridDensity):
        raise ValueError(
            f"dens must be a GridDensity (histogram_density(...)), got {type(dens).__name__}."
        )
    if not is_traced(edges):
        _check_edges_1d(edges)
    function("cdf", cdf, "callable x -> F(x) (the exact CDF, e.g. jax.scipy.stats.norm.cdf)")
    e = jnp.asarray(edges)
    if e.shape != (dens.density.shape[0] + 1,):
        raise ValueError(
            f"edges must be the histogram's {dens.density.shape[0] + 1} bin edges, got shape "
            f"{e.shape}."
        )
    values = cdf(e)
    if jnp.shape(values) != e.shape:
        raise ValueError(
            f"cdf must map the edges (shape {e.shape}) to CDF values of the same shape, got "
            f"shape {jnp.shape(values)}."
        )
    exact = jnp.diff(values)
    return 0.5 * jnp.sum(jnp.abs(dens.density * jnp.diff(e) - exact))
