"""`compare`: discrete runs against the reference flow, every step size in one compiled program."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._custom_types import ArrayLike, ScalarLike
from ._discretization import Discretization
from ._flows.base import AbstractFlow
from ._order import fit_order
from ._problem import AbstractProblem
from ._run import _floating_dtype, make_fast_step
from ._sharding import gather, sweep_map
from ._solve import (
    _pick_solver,
    _require_x64,
    check_dense_memory,
    dense_solve,
    raise_for_result,
)
from ._trajectory import Comparison
from ._validation import positive


def default_map(flow: AbstractFlow, step_size: ScalarLike) -> Discretization:
    """The flow's own discretization map: `flow.discretize(step_size)`."""
    return flow.discretize(step_size)


def _error_run(flow, problem, map, ref_flow, interp, h, n):
    """Run `map(flow, h)` for `n` steps on `problem`; max and final error against the reference.

    The steps are `run`'s (`make_fast_step`: the same oracle and extra arguments), unchecked:
    the error norm, computed at every step anyway, is non-finite exactly when the iterate is,
    and then the loop stops with `diverged_at` = k."""
    disc = map(flow, h).astype(_floating_dtype(problem.params0))
    step = make_fast_step(disc.transform, problem, None)

    def cond(c):
        (_, _, diverged_at, k), _, _ = c
        return (k < n) & (diverged_at < 0)

    def body(c):
        inner, err_max, _ = c
        (params, state, _, k), _ = step(inner)
        t = jnp.minimum(k.astype(disc.dt.dtype) * disc.dt, interp.t1)
        ref = ref_flow.params(interp.evaluate(t))
        err = optax.tree.norm(optax.tree.sub(optax.tree.cast_like(params, ref), ref))
        diverged_at = jnp.where(jnp.isfinite(err), -1, k)
        return (params, state, diverged_at, k), jnp.maximum(err_max, err), err

    params0 = problem.params0
    zero = jnp.zeros((), jnp.float64)
    init = ((params0, disc.init(params0, problem), jnp.asarray(-1), jnp.asarray(0)), zero, zero)
    (_, _, diverged_at, _), err_max, err_last = jax.lax.while_loop(cond, body, init)
    inf = jnp.asarray(jnp.inf, jnp.float64)
    diverged = diverged_at >= 0
    return jnp.where(diverged, inf, err_max), jnp.where(diverged, inf, err_last), diverged_at


def matched_steps(
    step_sizes: ArrayLike, t1, dt_of
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    r"""Validate a sweep: `(hs, dts, ns, t1)` with the time steps $\Delta t(h)$ = `dt_of(h)` and
    $N_h = t_1/\Delta t(h)$ an integer for every $h$."""
    hs = np.asarray(step_sizes, dtype=np.float64)
    if hs.ndim != 1 or hs.size == 0:
        raise ValueError(f"step_sizes must be a non-empty 1-D array, got shape {hs.shape}.")
    positive("step_sizes", hs)
    t1 = float(positive("t1", t1))
    dts = np.asarray([float(dt_of(h)) for h in hs])
    ns = np.rint(t1 / dts)
    bad = (ns < 1) | (np.abs(ns * dts - t1) > 1e-9 * t1)
    if np.any(bad):
        raise ValueError(
            f"t1={t1} must be a positive integer multiple of each step's dt; it is not for step "
            f"sizes {hs[bad].tolist()}. Choose t1 = N * dt (e.g. step sizes t1/N for integers N)."
        )
    return hs, dts, ns, t1


def make_comparison(hs, dts, ns, errs, finals, diverged_at, t1: float, solver: str) -> Comparison:
    r"""Assemble a `Comparison`, fitting the orders of the max and final errors against the
    time steps $\Delta t$."""
    dts = jnp.asarray(dts)
    return Comparison(
        step_sizes=jnp.asarray(hs),
        dts=dts,
        errors=errs,
        final_errors=finals,
        order=fit_order(dts, errs),
        final_order=fit_order(dts, finals),
        diverged_at=diverged_at,
        num_steps=jnp.asarray(ns, dtype=int),
        t1=t1,
        solver=solver,
    )


@eqx.filter_jit
def _compare_jit(
    flow, problem, map, reference, per_step, hs, ns, t1, solver, rtol, atol, max_steps
):
    def solve_ref(ref, problem, solver):
        ts = jnp.asarray([t1])
        return dense_solve(ref, problem, solver, 0.0, t1, ts, rtol, atol, max_steps)

    # The step sizes are the sweep axis, split across devices (`sweep_map`).
    if per_step:

        def one(hn, shared):
            (h, n), (flow, problem, map, solver) = hn, shared
            ref = reference(h)
            sol = solve_ref(ref, problem, solver)
            return (*_error_run(flow, problem, map, ref, sol.interpolation, h, n), sol.result)

        errs, finals, div, result = sweep_map(one, (hs, ns), (flow, problem, map, solver))
    else:
        sol = solve_ref(reference, problem, solver)

        def one(hn, shared):
            (h, n), (flow, problem, map, ref, interp) = hn, shared
            return _error_run(flow, problem, map, ref, interp, h, n)

        shared = (flow, problem, map, reference, sol.interpolation)
        errs, finals, div = sweep_map(one, (hs, ns), shared)
        result = sol.result
    return errs, finals, div, result


def compare(
    flow: AbstractFlow,
    problem: AbstractProblem,
    step_sizes: ArrayLike,
    t1: float,
    *,
    map: Callable[[AbstractFlow, jax.Array], Discretization] | None = None,
    reference: AbstractFlow | Callable[[jax.Array], AbstractFlow] | None = None,
    solver=None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 16_384,
) -> Comparison:
    r"""Compare the discretization `map(flow, h)` with a reference flow for every step size $h$,
    on $[0, t_1]$.

    For each $h$ the discrete run takes $N_h = t_1/\Delta t$ steps ($\Delta t$ = the
    discretization's `dt`) and is compared with the dense diffrax reference at the matched times
    $t = k\Delta t$: $e_h = \max_{k\le N_h}\|\theta_k - \theta(k\Delta t)\|_2$ (also reported
    at $t_1$), and the fitted order is the least-squares slope of $\log e_h$ against
    $\log\Delta t$: the order in the time step, whatever the map from $h$ to $\Delta t$ (a map
    with $\Delta t = \sqrt\alpha$ and a first-order error in $\Delta t$ reports 1, not the
    0.5 of a fit against $\alpha$). The steps are `run`'s: the problem's oracle (a `Problem`'s
    gradient, a `Game`'s simultaneous gradient), with `value`, `grad`, `value_fn` and `grad_fn`
    for a `GradientTransformationExtraArgs`.

    All step sizes run in one compiled program (`vmap` over $h$, a `while_loop` over steps, no
    stored trajectories): calling again with new step sizes of the same count does not recompile.
    With several devices (GPUs, hosts after `jax.distributed.initialize()`, or CPU devices from
    `XLA_FLAGS=--xla_force_host_platform_device_count=N`) the step sizes are split across all of
    them, padded to a multiple of the device count; the numbers are those of one device.

    **Arguments:**

    - `flow`: the continuous model; `problem`: any `dynopt.AbstractProblem` (a `Problem`, a
      `dynopt.games.Game`), deterministic oracle.
    - `step_sizes`: the $h$ values (1-D, positive); $t_1/\Delta t$ must be an integer for each.
    - `map`: the discretization map, a callable `map(flow, h) -> Discretization` (e.g. a
      `dynopt.maps` module); `None` is the flow's default, `flow.discretize(h)`. Pass a module
      or a module-level function: a new lambda compiles anew.
    - `reference`: the flow to compare against: `None` (`flow` itself), a flow, or a callable
      `h -> flow` for references that depend on the step size, e.g. `ModifiedGradientFlow` or a
      game flow's `flow.modified`.
    - `solver`, `rtol`, `atol`, `max_steps`: as in `solve`.

    **Returns:** a `Comparison` (`step_sizes` = the $h$, `dts` = the $\Delta t$).

    **Raises:** `ValueError` for invalid step sizes, horizon, map or reference; `SolveError` if
    a reference solve fails.
    """
    _require_x64()
    if not isinstance(flow, AbstractFlow):
        raise ValueError(f"flow must be a dynopt flow (AbstractFlow), got {type(flow).__name__}.")
    if not isinstance(problem, AbstractProblem):
        raise ValueError(f"problem must be a dynopt.AbstractProblem, got {type(problem).__name__}.")
    problem.check_key(None)
    map = default_map if map is None else map
    if not callable(map):
        raise ValueError(
            f"map must be None or a callable (flow, h) -> Discretization, got {map!r}."
        )

    def dt_of(h):
        disc = map(flow, h)
        if not isinstance(disc, Discretization):
            raise ValueError(
                f"map(flow, h) must return a dynopt.Discretization, got {type(disc).__name__}."
            )
        return disc.dt

    hs, dts, ns, t1 = matched_steps(step_sizes, t1, dt_of)
    per_step = reference is not None and not isinstance(reference, AbstractFlow)
    if per_step and not callable(reference):
        raise ValueError("reference must be None, a flow, or a callable step_size -> flow.")
    ref = flow if reference is None else reference
    if per_step and not isinstance(reference(float(hs[0])), AbstractFlow):
        raise ValueError("reference(step_size) must return a dynopt flow (AbstractFlow).")
    check_dense_memory(
        ref(float(hs[0])) if per_step else ref,
        problem,
        int(max_steps),
        copies=hs.size if per_step else 1,
    )
    solver_obj, name, ratio = _pick_solver(solver, problem, problem.params0, t1)
    errs, finals, div, result = gather(
        _compare_jit(
            flow,
            problem,
            map,
            ref,
            per_step,
            jnp.asarray(hs),
            jnp.asarray(ns, dtype=int),
            t1,
            solver_obj,
            rtol,
            atol,
            int(max_steps),
        )
    )
    raise_for_result(
        result,
        what=f"compare: reference solve({name})",
        max_steps=int(max_steps),
        rtol=rtol,
        atol=atol,
        stiffness=ratio,
    )
    return make_comparison(hs, dts, ns, errs, finals, div, t1, name)


__all__ = ["compare", "default_map"]
