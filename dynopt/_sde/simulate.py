r"""`simulate`: many paths of a flow with noise at once (diffrax under `vmap`), and first-passage
times. Both integrate through `dynopt._solve.integrate` on the raveled state."""

from collections.abc import Callable
from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, Bool, Float, Key, Params, PyTree, Scalar
from .._flows.base import AbstractFlow
from .._problem import Problem
from .._solve import integrate, raise_for_result
from .._validation import positive, positive_int
from .base import AbstractSDE, is_additive, noise_dim, raveled


# Solvers derived for additive noise only (they would silently converge to the wrong SDE
# otherwise); they also need the space-time Lévy area.
_ADDITIVE_ONLY = (diffrax.ShARK, diffrax.SRA1, diffrax.SEA)


class SDEPaths(eqx.Module):
    r"""`num_paths` sample paths of a flow with noise saved at times `ts`.

    **Fields:**

    - `ts`: the save times, shape $(T,)$.
    - `ys`: the raveled states, shape $(P, T, n)$ (paths, times, state).
    - `blowup_time`: per path, the first save time at which the state was non-finite, or `inf`.
      Such paths are flagged, never averaged in (`expectation` drops them).
    - `sde`, `problem`: the simulated flow and its problem (`params` maps states to parameters).
    - `solver`: the diffrax solver's name; `dt`: the fixed integration step.
    """

    ts: Float[Array, " T"]
    ys: Float[Array, "P T n"]
    blowup_time: Float[Array, " P"]
    sde: AbstractFlow
    problem: Problem | None
    x0: Params
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
        return jax.vmap(jax.vmap(self._params))(self.ys)

    def _params(self, y: Float[Array, " n"]) -> Params:
        unravel = ravel_pytree(self.sde.init(self.x0))[1]
        return self.sde.params(unravel(y))

    def expectation(
        self, fn: Callable[[Params], Scalar]
    ) -> tuple[Float[Array, " T"], Float[Array, " T"]]:
        r"""Monte-Carlo mean of $\varphi(\theta_t)$ over the paths that never blew up, and its
        standard error $s/\sqrt{P'}$ ($P'$ = number of such paths), at every save time."""
        values = jax.vmap(jax.vmap(lambda y: fn(self._params(y))))(self.ys)
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


def _terms(flow, problem, x0, t0, bm_of_m):
    y0, drift, diffusion, _ = raveled(flow, problem, flow.init(x0))
    bm = bm_of_m(noise_dim(diffusion(t0, y0, None)), y0.dtype)
    return y0, diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))


@eqx.filter_jit
def _simulate(flow, problem, x0, ts, grid, keys, solver, brownian, max_steps):
    dt = grid[1] - grid[0]
    adjoint = (
        diffrax.ForwardMode() if brownian == "unsafe" else diffrax.RecursiveCheckpointAdjoint()
    )

    def one(key):
        def bm(m, dtype):
            return _brownian(brownian, grid[0], grid[-1], dt, m, key, dtype, _levy_area(solver))

        y0, terms = _terms(flow, problem, x0, grid[0], bm)
        sol = integrate(
            terms,
            solver,
            grid[0],
            grid[-1],
            y0,
            saveat=diffrax.SaveAt(ts=ts),
            controller=diffrax.StepTo(grid),
            adjoint=adjoint,
            max_steps=max_steps,
        )
        # A blow-up is a per-path outcome (`blowup_time`), not a failure of the simulation.
        finite = jnp.all(jnp.isfinite(sol.ys))
        return sol.ys, diffrax.RESULTS.where(finite, sol.result, diffrax.RESULTS.successful)

    ys, result = jax.vmap(one)(keys)
    finite = jnp.all(jnp.isfinite(ys), axis=-1)
    first_bad = jnp.argmin(finite, axis=1)
    blowup = jnp.where(jnp.all(finite, axis=1), jnp.inf, ts[first_bad])
    return ys, blowup, result


def _check_common(flow, problem, x0, num_paths, brownian):
    """Concrete checks; returns the initial parameters."""
    if not isinstance(flow, AbstractFlow):
        raise ValueError(f"flow must be a dynopt flow with noise, got {type(flow).__name__}.")
    if problem is not None and not isinstance(problem, Problem):
        raise ValueError(f"problem must be a dynopt.Problem or None, got {type(problem)}.")
    if x0 is None:
        if problem is None:
            raise ValueError("x0 is required when problem is None.")
        x0 = problem.params0
    if isinstance(flow, AbstractSDE):  # declares its diffusion
        flow.check(problem)
    elif jax.eval_shape(lambda: flow.diffusion(0.0, flow.init(x0), problem)) is None:
        raise ValueError(
            f"{type(flow).__name__} declares no diffusion (an ODE): integrate it with "
            "dynopt.solve, or use a flow with noise (Langevin, Kramers, SGDNoise)."
        )
    positive_int("num_paths", num_paths)
    if brownian not in ("unsafe", "tree"):
        raise ValueError(f"brownian must be 'unsafe' or 'tree', got {brownian!r}.")
    return x0


def _default_solver(flow, solver):
    additive = is_additive(flow)
    if solver is None:
        return diffrax.ShARK() if additive else diffrax.Euler()
    if isinstance(solver, _ADDITIVE_ONLY) and not additive:
        raise ValueError(
            f"solver {type(solver).__name__} is for additive noise only, but "
            f"{type(flow).__name__} does not declare additive noise; use diffrax.Euler() (Itô)."
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
    flow: AbstractFlow,
    problem: Problem | None,
    ts: Float[Array, " T"],
    key: Key,
    num_paths: int,
    *,
    x0: Params | None = None,
    dt: float | None = None,
    solver: diffrax.AbstractSolver | None = None,
    brownian: Literal["unsafe", "tree"] = "unsafe",
) -> SDEPaths:
    r"""Simulate `num_paths` independent paths of the flow with noise `flow` on `problem`, from
    `flow.init(x0)`, saved at `ts`.

    Any `AbstractFlow` whose `diffusion` is not `None` (`Langevin`, `Kramers`, `SGDNoise`, the
    density layer's `VectorSDE`, a user's flow): the drift is its `vector_field`, the noise its
    `diffusion`, both on the raveled state. One jitted program: `MultiTerm(ODETerm(drift),
    ControlTerm(diffusion, W))` with fixed steps (`StepTo` on the grid $t_0 + k\,dt$) through
    `dynopt._solve.integrate`, `vmap`ped over `jax.random.split(key, num_paths)`. New
    hyper-parameter values (temperature, friction, learning rate, batch size) reuse it.

    **Solver (default):** for additive noise (`AbstractSDE.additive`: `Langevin`, `Kramers`)
    `diffrax.ShARK` (strong order 1.5, weak order 2; it draws the space-time Lévy area);
    otherwise (`SGDNoise`, or a flow that does not declare it) Euler–Maruyama `diffrax.Euler`
    (Itô, strong ½, weak 1). Any diffrax SDE solver can be passed; the additive-only ones
    (ShARK, SRA1, SEA) are refused unless the flow declares additive noise.

    **Brownian motion:** `"unsafe"` (default) is `diffrax.UnsafeBrownianPath` with
    `adjoint=ForwardMode()`: fast, fixed steps only, no backpropagation. Its increments are keyed
    by the step endpoints, so the same `key` and grid give the same paths bit for bit. `"tree"`
    is `VirtualBrownianTree(tol=dt/16)` (slower; supports reverse-mode gradients).

    **Arguments:**

    - `flow`, `problem`: the model and the problem it acts on (`None` for models that carry
      their own drift, such as `densities.VectorSDE`; then `x0` is required).
    - `ts`: increasing save times (SDE time; for `SGDNoise`, $t = k\eta$); each must lie on the
      grid $t_0 + k\,dt$ with $t_0$ = `ts[0]`.
    - `key`: one PRNG key; `num_paths`: $P \ge 1$.
    - `x0`: initial parameters (default `problem.params0`).
    - `dt`: the integration step (default: the smallest gap of `ts`).

    **Returns:** `SDEPaths` with `ys` of shape $(P, T, n)$; paths that blew up carry their
    `blowup_time` and are left out of `expectation`.

    **Raises:** `ValueError` for a flow without diffusion, `num_paths < 1`, non-increasing `ts`,
    save times off the grid, a `dt` too fine for `UnsafeBrownianPath`, or an unsuitable solver;
    `dynopt.SolveError` if diffrax fails on a path that stayed finite (e.g. an implicit
    solver's Newton iteration).
    """
    x0 = _check_common(flow, problem, x0, num_paths, brownian)
    ts_np = np.asarray(ts, dtype=np.float64)
    if ts_np.ndim != 1 or ts_np.size < 2 or not np.all(np.diff(ts_np) > 0):
        raise ValueError(f"ts must be a 1-D increasing array of >= 2 times, got {ts_np!r}.")
    t0, t1 = float(ts_np[0]), float(ts_np[-1])
    dt = float(positive("dt", np.min(np.diff(ts_np)) if dt is None else dt))
    k = (ts_np - t0) / dt
    if not np.allclose(k, np.round(k), rtol=0, atol=1e-6):
        raise ValueError(f"every save time must be t0 + k*dt with integer k (dt={dt:g}).")
    grid = _grid(t0, t1, dt, brownian)
    grid[np.round(k).astype(int)] = ts_np  # save times are exact step endpoints
    solver = _default_solver(flow, solver)
    keys = jax.random.split(key, num_paths)
    ys, blowup, result = _simulate(
        flow, problem, x0, jnp.asarray(ts_np), jnp.asarray(grid), keys, solver, brownian, len(grid)
    )
    raise_for_result(result, what=f"simulate({type(solver).__name__})", max_steps=len(grid))
    return SDEPaths(
        ts=jnp.asarray(ts_np),
        ys=ys,
        blowup_time=blowup,
        sde=flow,
        problem=problem,
        x0=x0,
        dt=jnp.asarray(dt),
        solver=type(solver).__name__,
    )


@eqx.filter_jit
def _passage(flow, problem, x0, grid, keys, solver, hit, max_steps):
    dt = grid[1] - grid[0]
    event = diffrax.Event(lambda t, y, args, **kw: hit(y))

    def one(key):
        def bm(m, dtype):
            return _brownian("unsafe", grid[0], grid[-1], dt, m, key, dtype, _levy_area(solver))

        y0, terms = _terms(flow, problem, x0, grid[0], bm)
        sol = integrate(
            terms,
            solver,
            grid[0],
            grid[-1],
            y0,
            saveat=diffrax.SaveAt(t1=True),
            controller=diffrax.StepTo(grid),
            adjoint=diffrax.ForwardMode(),
            event=event,
            max_steps=max_steps,
        )
        fired = sol.result == diffrax.RESULTS.event_occurred
        # An event ends the solve with `event_occurred`: `is_okay` says whether anything else
        # went wrong; a non-finite path is censored like one that never hit.
        okay = diffrax.is_okay(sol.result) | ~jnp.all(jnp.isfinite(sol.ys))
        result = diffrax.RESULTS.where(okay, diffrax.RESULTS.successful, sol.result)
        return jnp.where(fired, sol.ts[-1], jnp.inf), result

    return jax.vmap(one)(keys)


def first_passage(
    flow: AbstractFlow,
    problem: Problem | None,
    hit: Callable[[Float[Array, " n"]], Bool[Array, ""]],
    t1: float,
    key: Key,
    num_paths: int,
    *,
    dt: float,
    x0: Params | None = None,
    solver: diffrax.AbstractSolver | None = None,
) -> Float[Array, " P"]:
    r"""First time $\tau = \inf\{t : \text{hit}(Y_t)\}$ on the step grid, per path, of the flow
    with noise `flow` on `problem` from `flow.init(x0)` (default `problem.params0`).

    A `diffrax.Event` stops each path at the first step whose end state satisfies `hit` (a
    function of the raveled state returning a boolean), so $\tau$ is resolved to one step $dt$.
    Paths that have not hit by `t1` return `inf` (censored; report their fraction).
    Same solvers, Brownian path and determinism as `simulate`.

    **Raises:** as `simulate`.
    """
    x0 = _check_common(flow, problem, x0, num_paths, "unsafe")
    if not callable(hit):
        raise ValueError(f"hit must be callable state -> bool, got {type(hit).__name__}.")
    if not positive("dt", dt) < t1:
        raise ValueError(f"need 0 < dt < t1, got dt={dt}, t1={t1}.")
    grid = _grid(0.0, float(t1), float(dt), "unsafe")
    solver = _default_solver(flow, solver)
    keys = jax.random.split(key, num_paths)
    tau, result = _passage(flow, problem, x0, jnp.asarray(grid), keys, solver, hit, len(grid))
    raise_for_result(result, what=f"first_passage({type(solver).__name__})", max_steps=len(grid))
    return tau
