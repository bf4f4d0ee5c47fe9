"""Convergence orders as fitted slopes."""

import jax.numpy as jnp

from ._custom_types import Array, Float


def fit_order(step_sizes: Float[Array, " k"], errors: Float[Array, " k"]) -> Float[Array, ""]:
    r"""Least-squares slope $p$ of $\log e = p\log h + c$ over the finite, positive errors.

    `compare` passes the time steps $h = \Delta t$ of the runs (not the map's step-size
    argument), so $p$ is the order in the time step whatever the discretization map.

    Returns `nan` when fewer than two points qualify. Works under `jit` (masking, not slicing).
    """
    h = jnp.asarray(step_sizes)
    e = jnp.asarray(errors)
    ok = jnp.isfinite(e) & (e > 0) & (h > 0)
    x = jnp.where(ok, jnp.log(jnp.where(ok, h, 1.0)), 0.0)
    y = jnp.where(ok, jnp.log(jnp.where(ok, e, 1.0)), 0.0)
    n = jnp.sum(ok)
    nf = jnp.maximum(n, 1).astype(x.dtype)
    xm = jnp.sum(x) / nf
    ym = jnp.sum(y) / nf
    sxx = jnp.sum(jnp.where(ok, (x - xm) ** 2, 0.0))
    sxy = jnp.sum(jnp.where(ok, (x - xm) * (y - ym), 0.0))
    slope = sxy / jnp.where(sxx > 0, sxx, 1.0)
    return jnp.where((n >= 2) & (sxx > 0), slope, jnp.nan)
