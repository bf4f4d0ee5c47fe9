r"""`simulate`: many paths of a flow with noise at once (diffrax under `vmap`), and first-passage
times. Both integrate through `dynopt._solve.integrate` on the raveled state.

Their programs hold no host callback, so JAX's persistent cache keeps them: every input is
checked on the host (the step grid and save times built there, strictly increasing; `flow.init`
evaluated concretely) and the programs are traced inside `host_validated()`; the steps are
`_Grid` (diffrax's `StepTo` without its `eqx.error_if` checks of the traced grid) and the solver
writes the save times into its state (`SaveAtTimes`) instead of diffrax's checked
`SaveAt(ts=...)`. (`brownian="tree"` keeps `VirtualBrownianTree`'s own range checks.)"""

import warnings
from collections.abc import Callable
from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, Bool, Float, Key, Params, PyTree, Scalar
from .._flows.base import AbstractFlow
from .._problem import Problem
from .._saving import SaveAtTimes, saved
from .._solve import integrate, raise_for_result, SolveError
from .._validation import (
    check_unbatched,
    function,
    host_validated,
    increasing,
    is_traced,
    positive,
    positive_int,
)
from .base import AbstractSDE, is_additive, noise_dim, raveled


# Solvers derived for additive noise only (they would silently converge to the wrong SDE
# otherwise); they also need the space-time Lévy area.
_ADDITIVE_ONLY = (diffrax.ShARK, diffrax.SRA1, diffrax.SEA)


class SDEPaths(eqx.Module):
    r"""`num_paths` sample paths of a flow with noise saved at times `ts`.

    **Fields:**

    - `ts`: the save times, shape $(T,)$.
    - `ys`: the raveled states, shape $(P, T, n)$ (paths, times, state).
    - `blowup_time`: per path, the first save time at which the state was non-finite, or `inf`
      (`diverged`, `num_diverged`). `simulate` returns such paths only when asked to
      (`on_blowup="warn"` or `"keep"`), and `expectation` averages them only on request.
    - `sde`, `problem`: the simulated flow and its problem (`params` maps states to parameters).
    - `solver`: the diffrax solver's name; `dt`: the (largest) integration step.
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
    def num_diverged(self) -> int:
        """How many paths blew up (became non-finite) before the last save time."""
        return int(np.sum(np.isfinite(np.asarray(self.blowup_time))))  # on the host: no program

    @property
    def params(self) -> PyTree:
        """The parameter part of every saved state, leaves with leading axes $(P, T)$."""
        return jax.vmap(jax.vmap(self._params))(self.ys)

    def _params(self, y: Float[Array, " n"]) -> Params:
        unravel = ravel_pytree(self.sde.init(self.x0))[1]
        return self.sde.params(unravel(y))

    def expectation(
        self, fn: Callable[[Params], Scalar], *, drop_diverged: bool = False
    ) -> tuple[Float[Array, " T"], Float[Array, " T"]]:
        r"""Monte-Carlo mean of $\varphi(\theta_t)$ over the paths, and its standard error
        $s/\sqrt{P}$, at every save time.

        **Arguments:** `fn`, the function $\varphi$ of the parameters; `drop_diverged`: average
        over the $P'$ paths that never blew up instead (the mean *conditional on survival*,
        biased towards the paths that stayed small: a choice to make explicitly).

        **Returns:** `(mean, standard_error)`, each of shape $(T,)$; with `drop_diverged`, NaN
        at save times where no path survives (the mean) or fewer than two do (the error).

        **Raises:** `ValueError` if some path blew up and `drop_diverged` is false (inside
        `jit`: an `eqx.error_if` with the same message): the mean over all paths does not exist.
        """
        values = jax.vmap(jax.vmap(lambda y: fn(self._params(y))))(self.ys)
        if not drop_diverged:
            msg = (
                "paths blew up, so the mean over all paths does not exist; pass "
                "drop_diverged=True for the mean over the surviving paths (conditional on "
                "survival, biased), or simulate with a smaller dt."
            )
            if not is_traced(self.blowup_time):
                if self.num_diverged:
                    raise ValueError(f"{self.num_diverged} of {self.num_paths} {msg}")
            else:
                values = eqx.error_if(values, jnp.any(self.diverged), f"some {msg}")
        ok = ~self.diverged[:, None]
        count = jnp.sum(ok, axis=0)
        # No surviving path: no mean (NaN, not 0); one: a mean but no standard error.
        n = count.astype(values.dtype)
        mean = jnp.where(count > 0, jnp.sum(jnp.where(ok, values, 0.0), axis=0) / n, jnp.nan)
        sq = jnp.sum(jnp.where(ok, (values - mean[None]) ** 2, 0.0), axis=0)
        return mean, jnp.where(count > 1, jnp.sqrt(sq / ((n - 1) * n)), jnp.nan)


def _levy_area(solver):
    if isinstance(solver, diffrax.AbstractSRK):
        return diffrax.SpaceTimeLevyArea
    return diffrax.BrownianIncrement


def _brownian(kind, t0, t1, dt, m, key, dtype, levy):
    shape = jax.ShapeDtypeStruct((m,), dtype)
    if kind == "unsafe":
        return diffrax.UnsafeBrownianPath(shape, key, levy_area=levy)
    return diffrax.VirtualBrownianTree(t0, t1, tol=dt / 16, shape=shape, key=key, levy_area=levy)


class _Grid(diffrax.StepTo):
    """diffrax's `StepTo(ts)` without its runtime checks of a traced `ts` (strictly increasing,
    from `t0` to `t1`: `eqx.error_if`s, host callbacks that keep the program out of JAX's
    persistent cache). The grids here are built on the host (`_grid`, `_default_grid`), strictly
    increasing, and solved from `ts[0]` to `ts[-1]`. (diffrax's own `StepTo` fast path, the
    loop ending after `len(ts) - 1` steps, still applies: it tests `isinstance`.)"""

    def wrap(self, direction):
        return type(self)(ts=self.ts * direction)

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        del terms, t0, t1, y0, args, func, error_order
        if dt0 is not None:
            raise ValueError("dt0 must be None: the grid sets the steps.")
        return self.ts[1], 2


def _solve_path(flow, problem, x0, grid, key, solver, brownian, dt, *, save_at=None, **kwargs):
    """One path from `x0` on the fixed step grid `grid` (one step per grid interval), the
    Brownian motion of kind `brownian` from `key` at resolution `dt`; `kwargs` (`adjoint`,
    `event`) go to `integrate`. Returns the solution and the raveled initial state. With
    `save_at` (times on the grid), the solver writes the state at them into its state
    (`SaveAtTimes`; read them with `saved`); else the solution holds the final state."""
    y0, drift, diffusion, _ = raveled(flow, problem, flow.init(x0))
    # diffrax promotes the state to the times' dtype: the Brownian motion is drawn in it too.
    with jax.numpy_dtype_promotion("standard"):
        y0 = y0.astype(jnp.result_type(y0, grid))
    m = noise_dim(diffusion(grid[0], y0, None))
    bm = _brownian(brownian, grid[0], grid[-1], dt, m, key, y0.dtype, _levy_area(solver))
    terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
    if save_at is not None:
        solver = SaveAtTimes(solver, save_at)
    sol = integrate(
        terms,
        solver,
        grid[0],
        grid[-1],
        y0,
        controller=_Grid(grid),
        max_steps=grid.shape[0],
        saveat=diffrax.SaveAt(t1=True, solver_state=save_at is not None),
        **kwargs,
    )
    return sol, y0


@eqx.filter_jit
def _simulate(flow, problem, x0, ts, grid, step, keys, solver, brownian):
    dt = step  # the smallest step: the Brownian tree's resolution
    adjoint = (
        diffrax.ForwardMode() if brownian == "unsafe" else diffrax.RecursiveCheckpointAdjoint()
    )

    def one(key):
        sol, y0 = _solve_path(
            flow, problem, x0, grid, key, solver, brownian, dt, save_at=ts, adjoint=adjoint
        )
        # Saved by the solver at `ts` (on the grid, checked by `simulate`): what diffrax's
        # `SaveAt(ts=...)` saves, y0 at ts[0] and inf past where a failed solve stopped.
        ys = saved(sol, ts, grid[0], y0)
        # A blow-up is a per-path outcome (`blowup_time`), not a failure of the simulation.
        finite = jnp.all(jnp.isfinite(ys))
        return ys, diffrax.RESULTS.where(finite, sol.result, diffrax.RESULTS.successful)

    ys, result = jax.vmap(one)(keys)
    finite = jnp.all(jnp.isfinite(ys), axis=-1)
    first_bad = jnp.argmin(finite, axis=1)
    blowup = jnp.where(jnp.all(finite, axis=1), jnp.inf, ts[first_bad])
    return ys, blowup, result


def _check_key(key) -> Key:
    """One PRNG key (`jax.random.key(seed)`, or a legacy `uint32[2]` `PRNGKey`)."""
    if isinstance(key, jax.Array) and not is_traced(key):
        typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
        if typed or (key.dtype == jnp.uint32 and key.shape == (2,)):
            return key
    shown = f"{type(key).__name__} {key!r}" if not isinstance(key, jax.Array) else key.dtype
    raise ValueError(
        f"key must be one jax.random.key (e.g. jax.random.key(0)), got {shown}; the paths "
        "use jax.random.split(key, num_paths)."
    )


def _check_x0(flow, problem, x0, t0) -> None:
    """`ValueError` unless `x0` fits the problem (the structure and shapes of `params0`) or,
    for a flow without a problem, its drift maps the state of `x0` to the same shape."""
    if problem is not None:  # no tracing here: new hyper-parameters must not retrace the loss
        ref, got = jax.tree.structure(problem.params0), jax.tree.structure(x0)
        shapes = [jnp.shape(a) for a in jax.tree.leaves(problem.params0)]
        if ref != got or shapes != [jnp.shape(a) for a in jax.tree.leaves(x0)]:
            raise ValueError(
                f"x0 must have the structure and shapes of problem.params0 ({ref} with shapes "
                f"{shapes}), got {got} with shapes {[jnp.shape(a) for a in jax.tree.leaves(x0)]}."
            )
        return

    def drift_at_start(x0):
        y0, drift, _, _ = raveled(flow, problem, flow.init(x0))
        return y0, drift(t0, y0, None)

    try:
        y0, out = jax.eval_shape(drift_at_start, x0)
    except (TypeError, ValueError, AttributeError) as e:  # e.g. a shape error in the drift
        first = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise ValueError(f"x0 does not fit {type(flow).__name__}: {first}") from None
    if out.shape != y0.shape:
        raise ValueError(
            f"x0 does not fit {type(flow).__name__}: its drift maps the state of shape "
            f"{y0.shape} to shape {out.shape}."
        )


def _check_common(flow, problem, x0, num_paths, brownian, key, on_blowup, who):
    """Concrete checks; returns the initial parameters."""
    if not isinstance(flow, AbstractFlow):
        raise ValueError(f"flow must be a dynopt flow with noise, got {type(flow).__name__}.")
    # A vector temperature would broadcast into per-coordinate noise (another SDE, whose law
    # is not exp(-L/T)), as solve and compare refuse it.
    check_unbatched(flow, who)
    if problem is not None and not isinstance(problem, Problem):
        raise ValueError(f"problem must be a dynopt.Problem or None, got {type(problem)}.")
    if x0 is None:
        if problem is None:
            raise ValueError("x0 is required when problem is None.")
        x0 = problem.params0
    if isinstance(flow, AbstractSDE):  # declares its diffusion
        flow.check(problem)
    _check_x0(flow, problem, x0, 0.0)
    if not is_traced(x0):
        # A NaN start would read as every path blowing up ("take a smaller dt").
        if not all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(x0)):
            raise ValueError("x0 contains NaN or inf; every initial value must be finite.")
        # Concretely, so a check in `init` (GBM's S0 > 0) raises here: the program is traced
        # inside `host_validated()`, where it would only poison the paths with NaN.
        flow.init(x0)
    if not isinstance(flow, AbstractSDE) and (
        jax.eval_shape(lambda: flow.diffusion(0.0, flow.init(x0), problem)) is None
    ):
        raise ValueError(
            f"{type(flow).__name__} declares no diffusion (an ODE): integrate it with "
            "dynopt.solve, or use a flow with noise (Langevin, Kramers, SGDNoise)."
        )
    positive_int("num_paths", num_paths)
    if brownian not in ("unsafe", "tree"):
        raise ValueError(f"brownian must be 'unsafe' or 'tree', got {brownian!r}.")
    if on_blowup not in ("raise", "warn", "keep"):
        raise ValueError(f"on_blowup must be 'raise', 'warn' or 'keep', got {on_blowup!r}.")
    _check_key(key)
    return x0


def _default_solver(flow, solver, problem, x0, t0):
    additive = is_additive(flow)
    if solver is None:
        solver = diffrax.ShARK() if additive else diffrax.Euler()
    elif isinstance(solver, _ADDITIVE_ONLY) and not additive:
        raise ValueError(
            f"solver {type(solver).__name__} is for additive noise only, but "
            f"{type(flow).__name__} does not declare additive noise; use diffrax.Euler() (Itô)."
        )
    if isinstance(solver, _ADDITIVE_ONLY) and not is_traced(x0):
        _check_declared_additive(flow, problem, x0, t0, solver)
    return solver


# States at which a flow that declares additive noise has it compared with its value at x0
_NUM_NOISE_PROBES = 4


@eqx.filter_jit
def _noise_products(flow, problem, x0, t0, draws):
    r"""$g(t_0, y)\,v$ at $y_0$ and at $y_0 + (1 + \|y_0\|_\infty) z_k$ for one fixed random
    $v$: products, not matrices, so a network-sized state costs a few diffusion calls."""
    y0, _, diffusion, _ = raveled(flow, problem, flow.init(x0))
    g0 = diffusion(t0, y0, None)
    v = jax.random.normal(jax.random.key(2), (noise_dim(g0),), y0.dtype)

    def product(y):
        g = diffusion(t0, y, None)
        return g.mv(v) if isinstance(g, lx.AbstractLinearOperator) else g @ v

    scale = 1.0 + jnp.max(jnp.abs(y0), initial=0.0)
    states = y0[None, :] + scale * draws.astype(y0.dtype)
    return product(y0), jax.vmap(product)(states), states


def _check_declared_additive(flow, problem, x0, t0, solver) -> None:
    r"""`ValueError` when a flow that declares additive noise (`additive = True`) has noise that
    changes with the state: ShARK, SRA1 and SEA drop the terms of $\partial_x g$ and would
    integrate another SDE, without a word."""
    n = int(np.prod(jax.eval_shape(lambda: ravel_pytree(flow.init(x0))[0]).shape))
    draws = np.random.default_rng(0).standard_normal((_NUM_NOISE_PROBES, n))
    at0, at, states = _noise_products(flow, problem, x0, jnp.asarray(t0), jnp.asarray(draws))
    at0, at = np.asarray(at0), np.asarray(at)
    gap = np.max(np.abs(at - at0), axis=1)
    tol = 1e-12 * max(float(np.max(np.abs(at0), initial=0.0)), 1e-300)
    if np.all(gap <= tol):
        return
    k = int(np.argmax(gap))
    name = type(flow).__name__
    raise ValueError(
        f"{name} declares additive noise (additive = True), but its diffusion depends on the "
        f"state: g(t0, x) v differs by {gap[k]:.3g} between x0 and a state "
        f"{np.linalg.norm(np.asarray(states[k]) - np.asarray(ravel_pytree(flow.init(x0))[0])):.3g} "
        f"away (t0 = {t0:g}). {type(solver).__name__} is exact only for additive noise: declare "
        "additive = False (Euler-Maruyama, Itô), or pass solver=diffrax.Euler()."
    )


def _check_resolution(grid: np.ndarray, dt: float, brownian: str) -> np.ndarray:
    if not np.all(np.diff(grid) > 0):  # `_Grid` does not check it in the program
        raise ValueError(
            f"dt={dt:g} is below float64 resolution at t={grid[-1]:g}: the step grid is not "
            "strictly increasing. Use a larger dt or a shorter horizon."
        )
    if brownian == "unsafe" and not np.all(np.diff(grid.astype(np.float32)) > 0):
        # UnsafeBrownianPath keys each increment by its endpoints cast to float32: steps whose
        # float32 endpoints coincide would reuse the same increment.
        raise ValueError(
            f"dt={dt:g} is below float32 resolution at t={grid[-1]:g}: UnsafeBrownianPath would "
            "reuse Brownian increments. Use a larger dt, a shorter horizon, or brownian='tree'."
        )
    return grid


def _grid(t0: float, t1: float, dt: float, brownian: str) -> np.ndarray:
    num = round((t1 - t0) / dt)
    return _check_resolution(t0 + dt * np.arange(num + 1, dtype=np.float64), dt, brownian)


# The default step resolves the drift's fastest time scale 1/rho over the simulated interval with
# this margin: explicit schemes (Euler: |1 - h rho| < 1; ShARK: h rho below about 2) are stable
# far beyond it, and the weak error (order 1 or 2 in h rho) stays small.
STEP_MARGIN = 0.05
_DENSE_JACOBIAN_MAX_DIM = 512
# Times at which the drift's Jacobian is read (t0, t1 and evenly between): a drift whose rate
# grows with t, -(1 + 60 t) x on [0, 1], was stepped at 0.05/1 from its rate at t0 and its
# variance came out 560 times the exact one, with nothing reported.
_RATE_TIMES = 17


def _drift(flow, problem, x0):
    y0, drift, _, _ = raveled(flow, problem, flow.init(x0))
    return y0, lambda t, y: drift(t, y, None)


@eqx.filter_jit
def _drift_jacobians(flow, problem, x0, times):
    y0, f = _drift(flow, problem, x0)
    return jax.vmap(lambda t: jax.jacfwd(lambda y: f(t, y))(y0))(times)


@eqx.filter_jit
def _drift_probe(flow, problem, x0, times):
    """The drift's Jacobian-vector product with one random vector at each time: equal at all
    times (to rounding) for a drift whose Jacobian does not depend on t."""
    y0, f = _drift(flow, problem, x0)
    v = jax.random.normal(jax.random.key(1), y0.shape, y0.dtype)
    return jax.vmap(lambda t: jax.jvp(lambda y: f(t, y), (y0,), (v,))[1])(times)


@eqx.filter_jit
def _drift_rate_power(flow, problem, x0, times):
    """|lambda_max| of the drift's Jacobian at each time by 50 power iterations on
    Jacobian-vector products."""
    y0, f = _drift(flow, problem, x0)
    v0 = jax.random.normal(jax.random.key(0), y0.shape, y0.dtype)

    def at(t):
        def body(v, _):
            jv = jax.jvp(lambda y: f(t, y), (y0,), (v,))[1]
            norm = jnp.linalg.norm(jv)
            return jv / jnp.where(norm > 0, norm, 1.0), norm

        return jax.lax.scan(body, v0 / jnp.linalg.norm(v0), None, length=50)[1][-1]

    return jax.vmap(at)(times)


def drift_rate(
    flow: AbstractFlow,
    problem: Problem | None,
    x0: Params,
    t0: float,
    t1: float | None = None,
) -> float:
    r"""$\rho = \max_{t} \max_i |\lambda_i(\partial_\theta f(t, \theta_0))|$: the largest
    modulus over the eigenvalues of the drift's Jacobian at the initial state, over the times
    $t_0, \dots, t_1$ (17 evenly spaced; $t_0$ alone without `t1`): the fastest rate the
    integration step must resolve, also where the drift stiffens with time.

    **Arguments:**

    - `flow`, `problem`, `x0`: the model, its problem and the initial parameters.
    - `t0`, `t1`: the interval of the simulation (`t1=None`: the rate at `t0` only).

    **Returns:** $\rho$ as a float (`inf` when the Jacobian has a non-finite entry): exact
    eigenvalues up to 512 state entries, above that 50 power iterations on Jacobian-vector
    products at each time (at $t_0$ alone when those products do not depend on $t$).
    """
    times = np.array([t0], dtype=np.float64)
    if t1 is not None and t1 > t0:
        times = np.linspace(t0, t1, _RATE_TIMES)
    n = int(np.prod(jax.eval_shape(lambda: _drift(flow, problem, x0)[0]).shape))
    if n <= _DENSE_JACOBIAN_MAX_DIM:
        jacs = np.asarray(_drift_jacobians(flow, problem, x0, jnp.asarray(times)))
        if not np.all(np.isfinite(jacs)):
            return np.inf
        # A drift that does not depend on t has one Jacobian: one eigen-solve, not 17
        distinct = [jacs[0]] + [j for j in jacs[1:] if not np.array_equal(j, jacs[0])]
        return float(max(np.max(np.abs(np.linalg.eigvals(j))) for j in distinct))
    if len(times) > 1:
        probe = np.asarray(_drift_probe(flow, problem, x0, jnp.asarray(times)))
        if np.all(probe == probe[0]):
            times = times[:1]
    return float(np.max(_drift_rate_power(flow, problem, x0, jnp.asarray(times))))


def _default_grid(ts: np.ndarray, rho: float, brownian: str) -> tuple[np.ndarray, float, float]:
    """Each save interval split into equal steps of at most `STEP_MARGIN / rho`: `(grid, largest
    step, smallest step)`. A save gap already that fine is one step (the grid is `ts`)."""
    gaps = np.diff(ts)
    safe = STEP_MARGIN / rho if rho > 0 else np.inf
    sub = np.maximum(1, np.ceil(gaps / safe - 1e-9)).astype(int)
    if np.all(sub == 1):
        return _check_resolution(ts.copy(), float(gaps.min()), brownian), gaps.max(), gaps.min()
    starts = np.concatenate([[0], np.cumsum(sub)])
    k = np.arange(starts[-1]) - np.repeat(starts[:-1], sub) + 1  # step index within interval
    grid = np.empty(starts[-1] + 1)
    grid[1:] = np.repeat(ts[:-1], sub) + np.repeat(gaps / sub, sub) * k
    grid[starts] = ts  # save times are exact step endpoints
    steps = gaps / sub
    return _check_resolution(grid, float(steps.min()), brownian), steps.max(), steps.min()


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
    on_blowup: Literal["raise", "warn", "keep"] = "raise",
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
    by the step endpoints, so the same `key`, grid and solver give the same paths bit for bit.
    `"tree"` is `VirtualBrownianTree(tol=dt/16)` (slower; supports reverse-mode gradients).
    Common random numbers hold only between solvers of one Lévy-area kind: those that draw the
    space-time Lévy area (`diffrax.AbstractSRK`: ShARK, SRA1, SEA) and those that draw plain
    increments (Euler, Heun) get independent Brownian paths from the same key (OU, $dt = 1/64$:
    final states uncorrelated, RMS difference $\sqrt2$ times their spread; ShARK vs SRA1 within
    4e-5 of it). A strong-error study must compare solvers of one kind.

    **Arguments:**

    - `flow`, `problem`: the model and the problem it acts on (`None` for models that carry
      their own drift, such as `densities.VectorSDE`; then `x0` is required).
    - `ts`: increasing save times (SDE time; for `SGDNoise`, $t = k\eta$); with `dt` given,
      each must lie on the grid $t_0 + k\,dt$ with $t_0$ = `ts[0]`.
    - `key`: one PRNG key (`jax.random.key(seed)`); `num_paths`: $P \ge 1$.
    - `x0`: initial parameters (default `problem.params0`; the same structure and shapes).
    - `dt`: the integration step. Default: resolve the drift's fastest rate $\rho$ (the
      largest $|\lambda|$ of its Jacobian at the initial state, over 17 times from `ts[0]` to
      `ts[-1]`, `drift_rate`: a drift that stiffens with time is resolved where it is
      fastest) with a margin:
      every save interval is split into equal steps of at most $0.05/\rho$ (one step when the
      save gap is already that fine). The save gap itself is no integration step: on a double
      well at $T = 0.4$ saved every 5 time units, it made every path blow up. For `SGDNoise`
      this is finer than the SGD step $\eta$ whenever $\eta\lambda_{\max} > 0.05$ (12 steps per
      $\eta$ on a digits MLP at $\eta\lambda_{\max} = 0.6$), and on purpose: Euler–Maruyama
      with $dt = \eta$ *is* SGD with Gaussian noise, whose stationary variance on
      $\frac12\lambda\theta^2$ is $2/(2 - \eta\lambda)$ times the SDE's, the very $O(\eta)$
      gap between SGD and its SDE (at $\eta\lambda = 0.6$: 1.43; at the default step: 1.026).
      Pass `dt=η` for SGD with Gaussian noise, or run SGD itself
      (`dynopt.run(model.discretize(), model.sgd_problem(problem), n, key=keys)`).
    - `on_blowup`: what to do when paths blow up (become non-finite): `"raise"` (default,
      `dynopt.SolveError` with the count and the step advice), `"warn"` (a `RuntimeWarning`)
      or `"keep"` (silently; for SDEs that do explode). Either way they are flagged in
      `diverged` and counted in `num_diverged`.

    **Returns:** `SDEPaths` with `ys` of shape $(P, T, n)$; paths that blew up carry their
    `blowup_time`; `expectation` refuses to average over them unless told to drop them.

    **Raises:** `ValueError` for a flow without diffusion or with a hyper-parameter that is not
    a scalar (e.g. a vector temperature), a key that is not one PRNG key, an
    `x0` that does not fit the problem or the flow, `num_paths < 1`, non-increasing `ts`, save
    times off the grid, a `dt` too fine for `UnsafeBrownianPath`, or an unsuitable solver
    (an additive-noise solver, the default ShARK included, for a flow that declares additive
    noise whose diffusion changes with the state at four fixed states around `x0`);
    `dynopt.SolveError` if paths blew up (`on_blowup="raise"`) or diffrax fails on a path that
    stayed finite (e.g. an implicit solver's Newton iteration).
    """
    x0 = _check_common(flow, problem, x0, num_paths, brownian, key, on_blowup, "simulate")
    ts_np = np.asarray(increasing("ts", ts, min_size=2))
    t0 = float(ts_np[0])
    rho = None
    if dt is None:
        rho = drift_rate(flow, problem, x0, t0, float(ts_np[-1]))
        if not np.isfinite(rho):
            raise ValueError(
                f"the drift of {type(flow).__name__} is not finite at x0 (its Jacobian has "
                "non-finite entries): check the problem and x0."
            )
        grid, dt, step = _default_grid(ts_np, rho, brownian)
    else:
        dt = float(positive("dt", dt))
        k = (ts_np - t0) / dt
        if not np.allclose(k, np.round(k), rtol=0, atol=1e-6):
            raise ValueError(f"every save time must be t0 + k*dt with integer k (dt={dt:g}).")
        grid = _grid(t0, float(ts_np[-1]), dt, brownian)
        grid[np.round(k).astype(int)] = ts_np  # save times are exact step endpoints
        step = grid[1] - grid[0]
    solver = _default_solver(flow, solver, problem, x0, t0)
    keys = jax.random.split(key, num_paths)
    with host_validated():  # flow, problem, x0, key and times checked above: no runtime checks
        ys, blowup, result = _simulate(
            flow,
            problem,
            x0,
            jnp.asarray(ts_np),
            jnp.asarray(grid),
            jnp.asarray(step),
            keys,
            solver,
            brownian,
        )
    raise_for_result(result, what=f"simulate({type(solver).__name__})", max_steps=len(grid))
    paths = SDEPaths(
        ts=jnp.asarray(ts_np),
        ys=ys,
        blowup_time=blowup,
        sde=flow,
        problem=problem,
        x0=x0,
        dt=jnp.asarray(dt),
        solver=type(solver).__name__,
    )
    if paths.num_diverged and on_blowup != "keep":
        _report_blowup(paths, flow, problem, x0, t0, float(ts_np[-1]), rho, on_blowup)
    return paths


def _report_blowup(paths, flow, problem, x0, t0, t1, rho, on_blowup) -> None:
    if rho is None:  # dt was given: say how it compares with the default
        rho = drift_rate(flow, problem, x0, t0, t1)
    dt = float(paths.dt)
    advice = (
        f"dt={dt:g} is {dt * rho / STEP_MARGIN:.3g} times the default step "
        f"{STEP_MARGIN:g}/rho = {STEP_MARGIN / rho:.3g} (rho = {rho:.3g}, the drift's fastest "
        "rate over the interval): take a smaller dt"
        if rho > 0 and np.isfinite(rho)
        else f"dt={dt:g}: take a smaller dt"
    )
    msg = (
        f"simulate: {paths.num_diverged} of {paths.num_paths} paths blew up (non-finite; the "
        f"first by t={float(jnp.min(paths.blowup_time)):g}). {advice}, unless the SDE itself "
        "explodes; on_blowup='keep' (or 'warn') returns them, flagged in paths.diverged and "
        "counted in paths.num_diverged."
    )
    if on_blowup == "raise":
        raise SolveError(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


@eqx.filter_jit
def _passage(flow, problem, x0, grid, keys, solver, hit):
    dt = grid[1] - grid[0]
    event = diffrax.Event(lambda t, y, args, **kw: hit(y))
    kwargs = {"adjoint": diffrax.ForwardMode(), "event": event}

    def one(key):
        sol, _ = _solve_path(flow, problem, x0, grid, key, solver, "unsafe", dt, **kwargs)
        fired = sol.result == diffrax.RESULTS.event_occurred
        # An event ends the solve with `event_occurred`: `is_okay` says whether anything else
        # went wrong; a path that blew up before hitting is reported (`blew`), never a failure.
        blew = ~fired & ~jnp.all(jnp.isfinite(sol.ys))
        okay = diffrax.is_okay(sol.result) | blew
        result = diffrax.RESULTS.where(okay, diffrax.RESULTS.successful, sol.result)
        return jnp.where(fired, sol.ts[-1], jnp.inf), result, blew

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
    on_blowup: Literal["raise", "warn", "keep"] = "raise",
) -> Float[Array, " P"]:
    r"""First time $\tau = \inf\{t : \text{hit}(Y_t)\}$ on the step grid, per path, of the flow
    with noise `flow` on `problem` from `flow.init(x0)` (default `problem.params0`).

    A `diffrax.Event` stops each path at the first step whose end state satisfies `hit` (a
    function of the raveled state returning a boolean), so $\tau$ is resolved to one step $dt$.
    Paths that have not hit by `t1` (a multiple of `dt`) return `inf` (censored; report their
    fraction).
    Same solvers, Brownian path and determinism as `simulate`; paths that blew up before hitting
    are handled by `on_blowup` as in `simulate` (kept as censored only on request).

    **Arguments:**

    - `flow`: the flow with noise.
    - `problem`: the problem it acts on.
    - `hit`: a function of the raveled state returning a boolean scalar.
    - `t1`: the censoring time, finite, $> 0$ and a multiple of `dt`.
    - `key`: a JAX PRNG key.
    - `num_paths`: $P$, the number of paths.
    - `dt`: the fixed step, finite, $0 < dt < t_1$.
    - `x0`: the start parameters (`None`: `problem.params0`).
    - `solver`: as in `simulate`.
    - `on_blowup`: `"raise"` (default), `"warn"` or `"keep"`, as in `simulate`.

    **Returns:** the hitting times, shape `(P,)` (`inf` where censored).

    **Raises:** as `simulate`; `ValueError` also for a `t1` or `dt` that is not finite and
    > 0, $dt \ge t_1$, or a `t1` that is not a multiple of `dt`.
    """
    x0 = _check_common(flow, problem, x0, num_paths, "unsafe", key, on_blowup, "first_passage")
    function("hit", hit, "callable state -> bool")
    t1, dt = float(positive("t1", t1)), float(positive("dt", dt))
    if not dt < t1:
        raise ValueError(f"need 0 < dt < t1, got dt={dt}, t1={t1}.")
    # The grid is k*dt: a t1 off it would censor at round(t1/dt)*dt, before or after t1.
    k = t1 / dt
    if abs(k - round(k)) > 1e-6:
        raise ValueError(
            f"t1 must be a multiple of dt (the paths are censored at the last step), got "
            f"t1={t1:g} = {k:.6g} * dt={dt:g}; take t1={round(k) * dt:g} or another dt."
        )
    grid = _grid(0.0, t1, dt, "unsafe")
    solver = _default_solver(flow, solver, problem, x0, 0.0)
    keys = jax.random.split(key, num_paths)
    with host_validated():  # flow, problem, x0, key and grid checked above
        tau, result, blew = _passage(flow, problem, x0, jnp.asarray(grid), keys, solver, hit)
    raise_for_result(result, what=f"first_passage({type(solver).__name__})", max_steps=len(grid))
    num_blew = int(np.sum(np.asarray(blew)))  # on the host: no program
    if num_blew and on_blowup != "keep":
        msg = (
            f"first_passage: {num_blew} of {num_paths} paths blew up (non-finite) before "
            f"hitting, with dt={float(dt):g}: take a smaller dt, unless the SDE itself explodes; "
            "on_blowup='keep' (or 'warn') returns them as censored (tau = inf)."
        )
        if on_blowup == "raise":
            raise SolveError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return tau
