r"""`simulate`: many paths of an SDE at once (diffrax under `vmap`), and first-passage times."""

from collections.abc import Callable
from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Bool, Float, Key, Params, PyTree, Scalar
from .base import AbstractSDE


# Solvers derived for additive noise only (they would silently converge to the wrong SDE
# otherwise); they also need the space-time Lévy area.
_ADDITIVE_ONLY = (diffrax.ShARK, diffrax.SRA1, diffrax.SEA)


class SDEPaths(eqx.Module):
    r"""`num_paths` sample paths of an SDE saved at times `ts`.

    **Fields:**

    - `ts`: the save times, shape $(T,)$.
    - `ys`: the states, shape $(P, T, n)$ (paths, times, state).
    - `blowup_time`: per path, the first save time at which the state was non-finite, or `inf`.
      Such paths are flagged, never averaged in (`expectation` drops them).
    - `sde`: the simulated SDE (maps states to parameters in `params`).
    - `solver`: the diffrax solver's name; `dt`: the fixed integration step.
    """

    ts: Float[Array, " T"]
    ys: Float[Array, "P T n"]
    blowup_time: Float[Array, " P"]
    sde: AbstractSDE
    dt: Float[Array, ""]
    solver: str = eqx.field(static=True)

    @property
    def diverged(self) -> Bool[Array, " P"]:
        return jnp.isfinite(self.blowup_time)

    @property
    def num_paths(self) -> int:
        return self.ys.shape[0]

    @property
    def params(self) -> PyTree:
        """The parameter part of every saved state, leaves with leading axes $(P, T)$."""
        return jax.vmap(jax.vmap(self.sde.params))(self.ys)

    def expectation(
        self, fn: Callable[[Params], Scalar]
    ) -> tuple[Float[Array, " T"], Float[Array, " T"]]:
        r"""Monte-Carlo mean of $\varphi(\theta_t)$ over the paths that never blew up, and its
        standard error $s/\sqrt{P'}$ ($P'$ = number of such paths), at every save time."""
        values = jax.vmap(jax.vmap(lambda y: fn(self.sde.params(y))))(self.ys)
        ok = ~self.diverged[:, None]
        count = jnp.sum(ok, axis=0)
        n = jnp.maximum(count, 1).astype(values.dtype)
        mean = jnp.sum(jnp.where(ok, values, 0.0), axis=0) / n
        var = jnp.sum(jnp.where(ok, (values - mean[None]) ** 2, 0.0), axis=0) / jnp.maximum(
            n - 1, 1
        )
        return mean, jnp.sqrt(var / n)


def _levy_area(solver):
    if isinstance(solver, diffrax.AbstractSRK):
        return diffrax.SpaceTimeLevyArea
    return diffrax.BrownianIncrement


def _brownian(kind, t0, t1, dt, m, key, dtype, levy):
    shape = jax.ShapeDtypeStruct((m,), dtype)
    if kind == "unsafe":
        return diffrax.UnsafeBrownianPath(shape, key, levy_area=levy)
    return diffrax.VirtualBrownianTree(t0, t1, tol=dt / 16, shape=shape, key=key, levy_area=levy)


def _terms(sde, bm):
    return diffrax.MultiTerm(diffrax.ODETerm(sde.drift), diffrax.ControlTerm(sde.diffusion, bm))


@eqx.filter_jit
def _simulate(sde, y0, ts, grid, keys, solver, brownian, max_steps):
    m = sde.noise_dim(y0)
    dt = grid[1] - grid[0]
    adjoint = (
        diffrax.ForwardMode() if brownian == "unsafe" else diffrax.RecursiveCheckpointAdjoint()
    )

    def one(key):
        bm = _brownian(brownian, grid[0], grid[-1], dt, m, key, y0.dtype, _levy_area(solver))
        sol = diffrax.diffeqsolve(
            _terms(sde, bm),
            solver,
            grid[0],
            grid[-1],
            None,
            y0,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.StepTo(grid),
            adjoint=adjoint,
            max_steps=max_steps,
            throw=False,
        )
        return sol.ys

    ys = jax.vmap(one)(keys)
    finite = jnp.all(jnp.isfinite(ys), axis=-1)
    first_bad = jnp.argmin(finite, axis=1)
    blowup = jnp.where(jnp.all(finite, axis=1), jnp.inf, ts[first_bad])
    return ys, blowup


def _check_common(sde, num_paths, brownian):
    if not isinstance(sde, AbstractSDE):
        raise ValueError(f"sde must be a dynopt.sde model, got {type(sde).__name__}.")
    if not isinstance(num_paths, int | np.integer) or num_paths < 1:
        raise ValueError(f"num_paths must be a positive integer, got {num_paths!r}.")
    if brownian not in ("unsafe", "tree"):
        raise ValueError(f"brownian must be 'unsafe' or 'tree', got {brownian!r}.")


def _default_solver(sde, solver):
    if solver is None:
        return diffrax.ShARK() if sde.additive else diffrax.Euler()
    if isinstance(solver, _ADDITIVE_ONLY) and not sde.additive:
        raise ValueError(
            f"solver {type(solver).__name__} is for additive noise only, but "
            f"{type(sde).__name__} has state-dependent diffusion; use diffrax.Euler() (Itô)."
        )
    return solver


def _grid(t0: float, t1: float, dt: float, brownian: str) -> np.ndarray:
    num = round((t1 - t0) / dt)
    grid = t0 + dt * np.arange(num + 1, dtype=np.float64)
    if brownian == "unsafe" and not np.all(np.diff(grid.astype(np.float32)) > 0):
        # UnsafeBrownianPath keys each increment by its endpoints cast to float32: steps whose
        # float32 endpoints coincide would reuse the same increment.
        raise ValueError(
            f"dt={dt:g} is below float32 resolution at t={t1:g}: UnsafeBrownianPath would reuse "
            "Brownian increments. Use a larger dt, a shorter horizon, or brownian='tree'."
        )
    return grid


def simulate(
    sde: AbstractSDE,
    x0: Params,
    ts: Float[Array, " T"],
    key: Key,
    num_paths: int,
    *,
    dt: float | None = None,
    solver: diffrax.AbstractSolver | None = None,
    brownian: Literal["unsafe", "tree"] = "unsafe",
) -> SDEPaths:
    r"""Simulate `num_paths` independent paths of `sde` from `x0`, saved at `ts`.

    One jitted program: `diffrax.diffeqsolve` on `MultiTerm(ODETerm(drift),
    ControlTerm(diffusion, W))` with fixed steps (`StepTo` on the grid $t_0 + k\,dt$), `vmap`ped
    over `jax.random.split(key, num_paths)`.

    **Solver (default):** for additive noise (`Langevin`, `Kramers`) `diffrax.ShARK` (strong
    order 1.5, weak order 2; it draws the space-time Lévy area); for state-dependent noise
    (`SGDNoise`) Euler–Maruyama `diffrax.Euler` (Itô, strong ½, weak 1). Any diffrax SDE
    solver can be passed; the additive-only ones (ShARK, SRA1, SEA) are refused for
    state-dependent noise.

    **Brownian motion:** `"unsafe"` (default) is `diffrax.UnsafeBrownianPath` with
    `adjoint=ForwardMode()`: fast, fixed steps only, no backpropagation. Its increments are keyed
    by the step endpoints, so the same `key` and grid give the same paths bit for bit. `"tree"`
    is `VirtualBrownianTree(tol=dt/16)` (slower; supports reverse-mode gradients).

    **Arguments:**

    - `x0`: initial parameters (a pytree; `None` for a model built on a `Problem` means
      `problem.params0`).
    - `ts`: increasing save times (SDE time; for `SGDNoise`, $t = k\eta$); each must lie on the
      grid $t_0 + k\,dt$ with $t_0$ = `ts[0]`.
    - `key`: one PRNG key; `num_paths`: $P \ge 1$.
    - `dt`: the integration step (default: the smallest gap of `ts`).

    **Returns:** `SDEPaths` with `ys` of shape $(P, T, n)$; paths that blew up carry their
    `blowup_time` and are left out of `expectation`.

    **Raises:** `ValueError` for `num_paths < 1`, non-increasing `ts`, save times off the grid,
    a `dt` too fine for `UnsafeBrownianPath`, or an unsuitable solver.
    """
    _check_common(sde, num_paths, brownian)
    ts_np = np.asarray(ts, dtype=np.float64)
    if ts_np.ndim != 1 or ts_np.size < 2 or not np.all(np.diff(ts_np) > 0):
        raise ValueError(f"ts must be a 1-D increasing array of >= 2 times, got {ts_np!r}.")
    t0, t1 = float(ts_np[0]), float(ts_np[-1])
    dt = float(np.min(np.diff(ts_np))) if dt is None else float(dt)
    if not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt}.")
    k = (ts_np - t0) / dt
    if not np.allclose(k, np.round(k), rtol=0, atol=1e-6):
        raise ValueError(f"every save time must be t0 + k*dt with integer k (dt={dt:g}).")
    grid = _grid(t0, t1, dt, brownian)
    grid[np.round(k).astype(int)] = ts_np  # save times are exact step endpoints
    solver = _default_solver(sde, solver)
    y0 = sde.init(x0)
    sde.check(y0)
    keys = jax.random.split(key, num_paths)
    ys, blowup = _simulate(
        sde, y0, jnp.asarray(ts_np), jnp.asarray(grid), keys, solver, brownian, len(grid)
    )
    return SDEPaths(
        ts=jnp.asarray(ts_np),
        ys=ys,
        blowup_time=blowup,
        sde=sde,
        dt=jnp.asarray(dt),
        solver=type(solver).__name__,
    )


@eqx.filter_jit
def _passage(sde, y0, grid, keys, solver, hit, max_steps):
    m = sde.noise_dim(y0)
    dt = grid[1] - grid[0]
    event = diffrax.Event(lambda t, y, args, **kw: hit(y))

    def one(key):
        bm = _brownian("unsafe", grid[0], grid[-1], dt, m, key, y0.dtype, _levy_area(solver))
        sol = diffrax.diffeqsolve(
            _terms(sde, bm),
            solver,
            grid[0],
            grid[-1],
            None,
            y0,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.StepTo(grid),
            adjoint=diffrax.ForwardMode(),
            event=event,
            max_steps=max_steps,
            throw=False,
        )
        fired = sol.result == diffrax.RESULTS.event_occurred
        return jnp.where(fired, sol.ts[-1], jnp.inf)

    return jax.vmap(one)(keys)


def first_passage(
    sde: AbstractSDE,
    x0: Params,
    hit: Callable[[Float[Array, " n"]], Bool[Array, ""]],
    t1: float,
    key: Key,
    num_paths: int,
    *,
    dt: float,
    solver: diffrax.AbstractSolver | None = None,
) -> Float[Array, " P"]:
    r"""First time $\tau = \inf\{t : \text{hit}(Y_t)\}$ on the step grid, per path.

    A `diffrax.Event` stops each path at the first step whose end state satisfies `hit` (a
    function of the flat state returning a boolean), so $\tau$ is resolved to one step $dt$.
    Paths that have not hit by `t1` return `inf` (censored; report their fraction).
    Same solvers, Brownian path and determinism as `simulate`.
    """
    _check_common(sde, num_paths, "unsafe")
    if not callable(hit):
        raise ValueError(f"hit must be callable state -> bool, got {type(hit).__name__}.")
    if not dt > 0 or not t1 > dt:
        raise ValueError(f"need 0 < dt < t1, got dt={dt}, t1={t1}.")
    grid = _grid(0.0, float(t1), float(dt), "unsafe")
    solver = _default_solver(sde, solver)
    y0 = sde.init(x0)
    sde.check(y0)
    keys = jax.random.split(key, num_paths)
    return _passage(sde, y0, jnp.asarray(grid), keys, solver, hit, len(grid))
