r"""Route (b): the Fokker–Planck equation by the method of lines, integrated by diffrax.

$$\partial_t P = -\partial_x J,\qquad J = pP - \tfrac{\alpha}{2}\partial_x P$$
(post 2, eq. 12). Finite volumes on a uniform grid $x_i$, spacing $h$: face fluxes
$J_{i+1/2} = p(x_{i+1/2},t)\tfrac{P_i+P_{i+1}}{2} - \tfrac{\alpha}{2}\tfrac{P_{i+1}-P_i}{h}$
(second order in $h$), $\dot P_i = -(J_{i+1/2}-J_{i-1/2})/h$, with absorbing ends ($P = 0$ one
cell outside). The state carries the outflow $\dot L = J_{M-1/2} - J_{-1/2}$, so
$\sum_i P_i h + L$ is conserved exactly by the semi-discrete system: its drift measures the
solver's conservation error (`mass_defect`) and $L$ is the mass that left the grid (`lost_mass`).
The ODE is stiff ($\sim \alpha/h^2$): an implicit diffrax solver (Kvaerno5) with a PID controller.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Float, ScalarLike
from .base import check_lost_mass, check_positive, check_uniform_grid, GridDensity, ScalarSDE


@eqx.filter_jit
def _solve(sde, grid, num, y0, t0, t1, rtol, atol, max_steps):
    # `grid` may be padded past `num` active cells (one compiled program for several grids).
    h = grid[1] - grid[0]
    faces = jnp.concatenate([grid[:1] - 0.5 * h, grid + 0.5 * h])
    active = jnp.arange(grid.shape[0]) < num

    def vf(t, y, args):
        P = jnp.where(active, y[:-1], 0.0)
        ext = jnp.concatenate([jnp.zeros(1), P, jnp.zeros(1)])
        pf = jax.vmap(lambda x: sde.p(x, t))(faces)
        J = pf * 0.5 * (ext[:-1] + ext[1:]) - 0.5 * sde.alpha * (ext[1:] - ext[:-1]) / h
        dP = jnp.where(active, -(J[1:] - J[:-1]) / h, 0.0)
        return jnp.concatenate([dP, (J[num] - J[0])[None]])

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf),
        diffrax.Kvaerno5(),
        t0,
        t1,
        None,
        y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    return sol.ys[-1]


def fokker_planck(
    sde: ScalarSDE,
    initial: Float[Array, " m"],
    grid: Float[Array, " m"],
    t0: ScalarLike,
    t1: ScalarLike,
    *,
    rtol: float = 1e-9,
    atol: float = 1e-12,
    mass_tol: float | None = 1e-6,
    max_steps: int = 100_000,
    pad_to: int | None = None,
) -> GridDensity:
    r"""Evolve the density `initial` (values on `grid` at time $t_0$) to $t_1$ by Fokker–Planck.

    A delta start $P(\cdot, 0) = \delta_{x_0}$ has no grid representation: start at a small
    $t_0$ from an exact density or from `short_time_density` (error $O(t_0)$).

    `pad_to`: run on a state of this length (the extra cells inactive), so grids of different
    sizes share one compiled program (and the drift, if an `eqx.Module` such as `Polynomial`,
    is traced, not static). Keep it small: the implicit solver factorises a dense
    `pad_to`×`pad_to` Jacobian.

    **Returns:** `GridDensity` with `lost_mass` (flux out of the absorbing ends) and
    `mass_defect` = $|\sum P h + L - \sum P_0 h|$ (the conservation check).

    **Raises:** `ValueError` for a non-uniform grid, $t_1 \le t_0$, an `initial` whose mass on
    the grid differs from 1 by more than `mass_tol`, or a lost mass above `mass_tol`
    (`mass_tol=None` reports without raising).
    """
    if not isinstance(sde, ScalarSDE):
        raise ValueError(f"sde must be a dynopt.densities.ScalarSDE, got {type(sde).__name__}.")
    g = check_uniform_grid("grid", grid)
    p0 = jnp.asarray(initial, dtype=float)
    if p0.shape != g.shape:
        raise ValueError(f"initial must have the grid's shape {g.shape}, got {p0.shape}.")
    if not float(t1) > float(t0):
        raise ValueError(f"need t1 > t0, got t0={t0}, t1={t1}.")
    h = float(g[1] - g[0])
    mass0 = jnp.sum(p0) * h
    check_lost_mass(abs(1.0 - float(mass0)), mass_tol, "fokker_planck (initial density)")
    m = g.size
    size = m if pad_to is None else int(pad_to)
    if size < m:
        raise ValueError(f"pad_to must be >= the grid size {m}, got {pad_to}.")
    padded = g[0] + h * np.arange(size, dtype=np.float64)
    padded[:m] = g
    y0 = jnp.concatenate([p0, jnp.zeros(size - m + 1)])
    y1 = _solve(
        sde,
        jnp.asarray(padded),
        jnp.asarray(m),
        y0,
        jnp.asarray(t0, float),
        jnp.asarray(t1, float),
        rtol,
        atol,
        max_steps,
    )
    P, lost = y1[:m], y1[-1]
    mass = jnp.sum(P) * h
    check_lost_mass(lost, mass_tol, "fokker_planck")
    return GridDensity(
        x=jnp.asarray(g),
        density=P,
        t=jnp.asarray(t1, float),
        mass=mass,
        lost_mass=lost,
        mass_defect=jnp.abs(mass + lost - mass0),
        method="fokker_planck",
    )


def short_time_density(
    sde: ScalarSDE, x0: ScalarLike, t: ScalarLike, grid: Float[Array, " m"]
) -> Float[Array, " m"]:
    r"""The one-slice Itô propagator $\mathcal N(x;\ x_0 + p(x_0,0)t,\ \alpha t)$ on `grid`: a
    start for `fokker_planck` at a small $t_0 = t$ (error $O(t)$)."""
    check_positive("t", t)
    x = jnp.asarray(check_uniform_grid("grid", grid))
    var = sde.alpha * t
    mean = x0 + sde.p(jnp.asarray(x0, float), 0.0) * t
    return jnp.exp(-0.5 * (x - mean) ** 2 / var) / jnp.sqrt(2 * jnp.pi * var)
