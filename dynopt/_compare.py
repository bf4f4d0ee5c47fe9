"""`compare`: discrete runs against the reference flow, every step size in one compiled program."""

import functools as ft
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._batching import map_batch
from ._custom_types import ArrayLike, ScalarLike
from ._discretization import Discretization
from ._flows.base import AbstractFlow, AbstractMappedFlow
from ._maps.base import AbstractMap
from ._order import assess_order, OrderAssessment
from ._problem import AbstractProblem, Problem
from ._run import divergence_limit, make_fast_step, optax_call, warn_if_float32_inside
from ._sharding import gather, sweep_apply
from ._solve import (
    _DENSE_HESSIAN_MAX_DIM,
    _pick_solver,
    _require_x64,
    check_implicit_memory,
    DENSE_COUNTED_BYTES,
    DENSE_MEMORY_LIMIT,
    dense_solve,
    dense_values_per_step,
    failure_diagnosis,
    floor_stage_tolerance,
    NotFiniteStart,
    raise_for_result,
    SolveError,
    top_eigenvalue,
)
from ._trajectory import Comparison, Trajectory
from ._validation import (
    check_unbatched,
    flag,
    host_validated,
    is_traced,
    positive,
    solver_options,
)


def default_map(flow: AbstractFlow, step_size: ScalarLike) -> Discretization:
    """The flow's own discretization map: `flow.discretize(step_size)`."""
    return flow.discretize(step_size)


class _OptaxStart(eqx.Module):
    """`map`'s discretization started from its transform's own `init` (optax's zero state)
    instead of the correspondence's start (a slow manifold, a half-step velocity). Equal for
    equal maps, so a repeated `compare(..., start="optax")` finds its compiled program."""

    map: Callable = eqx.field(static=True)

    def __call__(self, flow: AbstractFlow, step_size: ScalarLike) -> Discretization:
        d = self.map(flow, step_size)
        if not isinstance(d, Discretization):
            return d  # `compare` names the wrong return type
        return Discretization(d.factory, d.hyperparams, d.dt, d.options, init_fn=None)


def _error_start(flow, problem, map, h):
    """`_error_run`'s initial carry at the step size `h`: the map's start (its `init`) at
    `problem.params0`, no step taken, no divergence, zero errors and scale."""
    disc = map(flow, h).weakly_typed()  # as `_error_run`'s
    params0 = problem.params0
    state0 = optax_call(disc.init, params0, problem)
    warn_if_float32_inside(disc.transform, problem, params0, state0, None)  # at trace time
    zero = jnp.zeros((), jnp.float64)
    return (params0, state0, jnp.asarray(-1), jnp.asarray(0)), zero, zero, zero


def _error_run(flow, problem, map, ref_flow, read, h, n, init):
    r"""Run `map(flow, h)` for `n` steps on `problem` from `init` (`_error_start`); max and final
    error against the reference, the first diverged step, and the solution's scale
    $\max_k\|\theta(k\Delta t)-\theta(0)\|$.

    `read(k, dt)` is the reference's state at $t = k\Delta t$ (`_dense_read`, `_rows_read`).
    The steps are `run`'s (`make_fast_step`: the same oracle and extra arguments), unchecked:
    the error norm, computed at every step anyway, is non-finite exactly when the iterate is,
    and the oracle's value is checked against `run`'s growth criterion (`divergence_limit`);
    either stops the loop with `diverged_at` = the step."""
    disc = map(flow, h).weakly_typed()  # as a hand loop's Python floats, in any dtype
    step = make_fast_step(disc.transform, problem, None)
    limit = divergence_limit(problem.loss(problem.params0))
    ref0 = ref_flow.params(read(jnp.asarray(0), disc.dt))

    def cond(c):
        (_, _, diverged_at, k), _, _, _ = c
        return (k < n) & (diverged_at < 0)

    def body(c):
        inner, err_max, _, scale = c
        (params, state, _, k), value = step(inner)
        ref = ref_flow.params(read(k, disc.dt))
        err = optax.tree.norm(optax.tree.sub(optax.tree.cast_like(params, ref), ref))
        scale = jnp.maximum(scale, optax.tree.norm(optax.tree.sub(ref, ref0)))
        grown = ~(value <= limit)  # the value at the step's start, k - 1 (also NaN)
        diverged_at = jnp.where(grown, k - 1, jnp.where(jnp.isfinite(err), -1, k))
        return (params, state, diverged_at, k), jnp.maximum(err_max, err), err, scale

    (_, _, diverged_at, _), err_max, err_last, scale = jax.lax.while_loop(cond, body, init)
    inf = jnp.asarray(jnp.inf, jnp.float64)
    diverged = diverged_at >= 0
    return (
        jnp.where(diverged, inf, err_max),
        jnp.where(diverged, inf, err_last),
        diverged_at,
        scale,
    )


def _bound_step(ref: AbstractFlow):
    """`(own time step, what the flow is, the per-step route)` for a flow that describes the
    run of one step size only (its terms are those of that step), else `None`."""
    from ._flows.central import CentralFlow
    from ._flows.gradient import ModifiedGradientFlow
    from ._modified import ModifiedFlow

    if isinstance(ref, ModifiedFlow) and ref.order >= 2:  # order 1: the h-free limit
        return (
            ref.tau,
            f"the order-{ref.order} modified flow",
            "Compare the optimizer itself against its flow at each step size: "
            f"compare(optimizer, problem, step_sizes, t1, order={ref.order}).",
        )
    if isinstance(ref, ModifiedGradientFlow):
        return (
            ref.step_size,
            "ModifiedGradientFlow",
            "Pass reference=ModifiedGradientFlow (the class: one flow per step size).",
        )
    if isinstance(ref, CentralFlow):
        return (
            ref.learning_rate,
            "CentralFlow",
            "Pass reference=CentralFlow (the class: one flow per step size), or compare at "
            "its own learning rate only.",
        )
    return None


def _check_fixed_reference(ref: AbstractFlow, hs: np.ndarray, dts: np.ndarray) -> None:
    r"""`ValueError` when one reference for every step size is a flow bound to one time step
    (`_bound_step`) that some runs do not take: a run of another step follows its own flow,
    an $O(|\Delta t - \Delta t_0|)$ different one, so its errors against this one measure a
    gap between two flows, not an order (GD against its order-2 flow of 0.0025 over
    h = 0.04 to 0.01 fitted an "asymptotic" 1.19)."""
    bound = _bound_step(ref)
    if bound is None:
        return
    own, what, advice = bound
    if is_traced(own) or np.ndim(own):
        return  # (a batched flow is refused by `check_unbatched`)
    own = float(own)
    bad = ~np.isclose(dts, own, rtol=1e-6, atol=0.0)  # (a float32 copy of the step passes)
    if np.any(bad):
        raise ValueError(
            f"compare: the reference, {what}, describes the runs of time step {own:g} only (its "
            f"terms are those of that step); the runs at step sizes {hs[bad].tolist()} (time "
            f"steps {dts[bad].tolist()}) follow their own, so against it their errors measure "
            f"the gap between two flows, not an order. {advice}"
        )


def matched_steps(
    step_sizes: ArrayLike, t1, dt_of
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    r"""Validate a sweep: `(hs, dts, ns, t1)` with the time steps $\Delta t(h)$ = `dt_of(h)` and
    $N_h = t_1/\Delta t(h)$ an integer for every $h$."""
    try:
        hs = np.asarray(step_sizes, dtype=np.float64)
    except (TypeError, ValueError):
        hs = None
    if hs is None or isinstance(step_sizes, str | bytes):
        raise ValueError(
            f"step_sizes must be a non-empty 1-D array of positive numbers, got {step_sizes!r}."
        )
    if hs.ndim != 1 or hs.size == 0:
        raise ValueError(f"step_sizes must be a non-empty 1-D array, got shape {hs.shape}.")
    positive("step_sizes", hs)
    if np.unique(hs).size != hs.size:  # a repeated step has no slope to the other
        raise ValueError(f"step_sizes must be distinct, got {hs.tolist()}.")
    t1 = float(positive("t1", t1))
    dts = np.asarray([float(dt_of(h)) for h in hs])
    if np.unique(dts).size != dts.size:  # the order is fitted against dt: a repeat has no slope
        raise ValueError(
            f"step_sizes must give distinct time steps dt = map(flow, h).dt, got dt = "
            f"{dts.tolist()} for step sizes {hs.tolist()}."
        )
    ns = np.rint(t1 / dts)
    bad = (ns < 1) | (np.abs(ns * dts - t1) > 1e-9 * t1)
    if np.any(bad):
        # The hint names step sizes only where they are the time steps: under a map whose dt
        # is not h (NAG's dt = sqrt(s)), "step sizes t1/N" would be wrong.
        same = np.allclose(dts, hs, rtol=1e-12, atol=0.0)
        hint = (
            "e.g. step sizes t1/N for integers N"
            if same
            else "step sizes whose dt = map(flow, h).dt is t1/N for integers N"
        )
        steps = "" if same else f" (time steps dt = {dts[bad].tolist()})"
        raise ValueError(
            f"t1={t1} must be a positive integer multiple of each step's dt; it is not for step "
            f"sizes {hs[bad].tolist()}{steps}. Choose t1 = N * dt ({hint})."
        )
    return hs, dts, ns, t1


def make_comparison(
    hs,
    dts,
    ns,
    errs,
    finals,
    diverged_at,
    t1: float,
    solver: str,
    scales=None,
    unstable=None,
    at_least: float | None = None,
    start: str = "map",
    reference: Trajectory | None = None,
    rounding=None,
    dtype: str | None = None,
) -> Comparison:
    r"""Assemble a `Comparison`: the local orders and the verdict of the max and final errors
    against the time steps $\Delta t$ (`assess_order`, with the least order `at_least` the
    errors can have and the runs' `rounding` level, of their `dtype`), the fitted orders only
    where asymptotic; `reference` the kept reference solve (`compare(..., keep_reference=True)`)."""
    dts_host = np.asarray(dts, dtype=np.float64)
    diverged = np.asarray(diverged_at) >= 0
    kwargs = dict(
        scales=None if scales is None else np.asarray(scales),
        diverged=diverged,
        at_least=at_least,
        rounding=rounding,
        dtype=dtype,
    )
    main, final = (
        _accumulated_rounding(
            assess_order(dts_host, np.asarray(e), unstable=unstable, **kwargs),
            dts_host, e, ns, rounding, dtype,
        )
        for e in (errs, finals)
    )  # fmt: skip
    reason = main.reason
    hs_host = np.asarray(hs, dtype=np.float64)
    if not np.allclose(hs_host, dts_host, rtol=1e-12, atol=0.0):
        # `assess_order` names the time steps; under a map whose dt is not h (NAG: dt = sqrt(s))
        # say which step sizes they are, or "compare again without them" names values the
        # caller never passed.
        pairs = ", ".join(f"{h:.3g} -> {dt:.3g}" for h, dt in zip(hs_host, dts_host))
        reason = f"{reason} (sizes named are the time steps dt; step size h -> dt: {pairs})"
    return Comparison(
        step_sizes=jnp.asarray(hs),
        dts=jnp.asarray(dts_host),
        errors=errs,
        final_errors=finals,
        order=jnp.asarray(main.order),
        final_order=jnp.asarray(final.order),
        diverged_at=diverged_at,
        num_steps=jnp.asarray(ns, dtype=int),
        t1=t1,
        solver=solver,
        local_orders=jnp.asarray(main.local_orders),
        verdict=main.verdict,
        reason=reason,
        final_verdict=final.verdict,
        scales=None if scales is None else jnp.asarray(scales),
        start=start,
        reference=reference,
    )


def _accumulated_rounding(assessment: OrderAssessment, dts, errors, ns, rounding, dtype):
    r"""`assessment` with a note where its errors are the rounding of runs coarser than float64
    accumulated over their steps: the error at the smallest step exceeds the next one's (a
    method's truncation error only falls with the step, rounding's grows with the number of
    steps $n = t_1/\Delta t$) and is within $n\rho$, what $n$ roundings of the iterate, each
    $\rho = \varepsilon\|\theta\|$ (`rounding`), add up to. (`assess_order`'s floor is one
    rounding: reached where the truncation error itself is that small, not where many steps'
    roundings pile up above it.)"""
    if rounding is None or assessment.verdict != "pre-asymptotic":
        return assessment
    h, e = np.asarray(dts, np.float64), np.asarray(errors, np.float64)
    smallest, next_ = np.argsort(h)[:2]
    level = np.broadcast_to(np.asarray(rounding, np.float64), h.shape) * np.asarray(ns)
    if not (e[smallest] > e[next_] and e[smallest] <= level[smallest]):
        return assessment
    note = (
        f"the errors grow as the step shrinks ({e[next_]:.3g} at {h[next_]:.3g}, "
        f"{e[smallest]:.3g} at {h[smallest]:.3g}), within the n*eps*|θ| = "
        f"{level[smallest]:.3g} that the rounding of the {dtype} runs adds up to over their "
        f"n = {int(np.asarray(ns)[smallest])} steps: rounding's error, not the method's, which "
        "a smaller step only increases; for an order compare in float64 (params0 as float64)"
    )
    return assessment._replace(reason=f"{assessment.reason}; {note}")


def _own_default_map(flow: AbstractFlow) -> AbstractMap | None:
    """`flow.default_map()` where it is the map behind `flow.discretize` (an
    `AbstractMappedFlow` that keeps the default `discretize`, a user's included); `None` for
    any other flow (a `discretize` of its own: the default map's claims are not its)."""
    if not isinstance(flow, AbstractMappedFlow):
        return None
    if type(flow).discretize is not AbstractMappedFlow.discretize:
        return None
    return type(flow).default_map()


def _default_map_order(flow: AbstractFlow) -> float | None:
    """The claimed order of the map behind `flow.discretize` (`_own_default_map`), read from
    the instance: a map's order may depend on its fields, e.g. `Leapfrog`'s half-step start;
    `None` where there is none."""
    own = _own_default_map(flow)
    return None if own is None else float(own.order)


def _declared_map(flow: AbstractFlow, map, h: float) -> AbstractMap | None:
    """The `AbstractMap` behind `map`: itself, or for the flow's default (`map=None`) the
    flow's own `default_map()` (an `AbstractMappedFlow` that keeps its `discretize`, a user's
    included), else the registry's map whose discretization at the step `h` is
    `flow.discretize(h)`; `None` if unknown."""
    if isinstance(map, AbstractMap):
        return map
    if map is not default_map:
        return None
    own = _own_default_map(flow)
    if own is not None:
        # `discretize` is `default_map()(flow, h)` by construction; the registry holds only
        # dynopt's rows, so a user's map and its stability limit were not found there.
        return own
    from ._correspondences import REGISTRY  # the registry imports the package's flows

    mine = flow.discretize(h)
    for row in REGISTRY:
        if type(row.flow()) is not type(flow):
            continue
        try:
            theirs = row.map(flow, h)
        except ValueError:  # a map whose hyper-parameters this flow and step do not admit
            continue
        same = (
            theirs.factory is mine.factory
            and theirs.options == mine.options
            and theirs.hyperparams.keys() == mine.hyperparams.keys()
            and all(
                np.array_equal(np.asarray(theirs.hyperparams[k]), np.asarray(v))
                for k, v in mine.hyperparams.items()
            )
        )
        if same:
            return row.map
    return None


def _past_stability_limit(flow, problem, map, hs: np.ndarray) -> np.ndarray | None:
    r"""Per step size: at or past the map's declared linear stability limit for the largest
    Hessian eigenvalue at $\theta_0$ (`AbstractMap.stability_limit`); `None` where unknown
    (no declared limit, not a `Problem`, more than 1000 parameters, or no positive
    curvature)."""
    declared = _declared_map(flow, map, float(hs[0]))
    if declared is None or type(declared).stability_limit is AbstractMap.stability_limit:
        return None
    if not isinstance(problem, Problem):
        return None
    lam = top_eigenvalue(problem, problem.params0)
    if lam is None or not lam > 0:
        return None
    limit = declared.stability_limit(flow, lam)
    return None if limit is None else hs >= float(limit)


def _dense_read(interp):
    r"""The reference at $t = k\Delta t$ read off its dense output (clamped to the last step
    reached)."""

    def read(k, dt):
        return interp.evaluate(jnp.minimum(k.astype(dt.dtype) * dt, interp.t1))

    return read


def _rows_read(ys, rows):
    """The reference saved at the runs' times (`dense_solve(..., at_times=True)`): step `k`'s
    state is row `rows[k]` of `ys`."""
    return lambda k, dt: jax.tree.map(lambda y: y[rows[k]], ys)


# Up to this many bytes of dense output (in all) the runs read the reference off it; above, the
# reference is saved at the runs' times only. Both give the same numbers (the same polynomials
# evaluated at the same times); measured on small problems, see `_reference_buffers`. (The size
# above which `solve` counts its steps before a dense solve: the same trade-off, measured alike.)
DENSE_COMPARE_BYTES = DENSE_COUNTED_BYTES


def _state_size(flow, problem) -> int:
    return sum(int(np.prod(jnp.shape(x))) for x in jax.tree.leaves(flow.init(problem.params0)))


def _bucket(n: int) -> int:
    """`n` rounded up to a power of 2, at least 16: a buffer's length changes with the step
    sizes and horizon only at doublings, so a new sweep seldom compiles anew."""
    return max(16, 1 << (int(n) - 1).bit_length())


def _save_grid(dts, ns, t1: float, per_step: bool) -> tuple[np.ndarray, np.ndarray]:
    r"""Where the reference is saved (`grid`, in $t$) and where run $h$ reads its step $k$
    (`rows[h, k]`): the times $\min(k\Delta t_h, t_1)$, $k = 0, \dots, N_h$ (the dense read's
    times, its clamp included), for a shared reference their sorted union (the finest grid of
    a halving sweep), for per-step references each run's own grid, a row of `grid` each.
    Padded to `_bucket` lengths with $2t_1$, a time no step covers."""
    times = [np.minimum(np.arange(int(n) + 1) * float(dt), t1) for dt, n in zip(dts, ns)]
    width = _bucket(max(t.size for t in times))
    rows = np.zeros((len(times), width), dtype=np.int32)
    if per_step:
        grid = np.full((len(times), width), 2.0 * t1)
        for i, t in enumerate(times):
            grid[i, : t.size] = t
        rows[:] = np.arange(width)
        return grid, rows
    union, inverse = np.unique(np.concatenate(times), return_inverse=True)
    grid = np.full(_bucket(union.size), 2.0 * t1)
    grid[: union.size] = union
    for i, part in enumerate(np.split(inverse, np.cumsum([t.size for t in times])[:-1])):
        rows[i, : part.size] = part
    return grid, rows


# Live copies of the saved rows while the reference solves: the loop's carry, the step's
# update and diffrax's select between the accepted and the rejected step.
_SAVED_COPIES = 3


def _reference_buffers(ref, problem, dts, ns, t1, per_step, solver, max_steps):
    """`(grid, rows)` of `_save_grid` when the reference is to be saved at the runs' times,
    `(None, None)` when the runs read its dense output: while that preallocates at most
    `DENSE_COMPARE_BYTES` (`max_steps` steps of every stage, 9 values per state entry for
    Tsit5, for each per-step reference), and up to `DENSE_MEMORY_LIMIT` where the saved rows
    would take more than 1/16 of it. Refuses (`ValueError`) a saved reference whose rows would
    exceed `DENSE_MEMORY_LIMIT`.

    Why the second rule: diffrax selects the solver's whole state between the accepted and the
    rejected step, so saving costs a pass over all its rows every reference step. Measured
    (2 cores, gradient flow, d = 1000): 2,001 times (4 halvings to N = 2,000) 0.90 s saved
    against 1.8 s dense; 8,001 times (N = 8,000) 9.1 s saved against 2.3 s dense (1.2 GB)."""
    size = _state_size(ref, problem)
    per_entry, per_step_values = dense_values_per_step(solver)
    copies = len(ns) if per_step else 1
    dense = 8 * int(max_steps) * (per_entry * size + per_step_values) * copies
    if dense <= DENSE_COMPARE_BYTES:
        return None, None
    grid, rows = _save_grid(dts, ns, t1, per_step)
    # One per-step reference solves at a time (`lax.map`): its own rows only.
    need = 8 * grid.shape[-1] * size * _SAVED_COPIES
    if dense <= DENSE_MEMORY_LIMIT and 16 * need > dense:
        return None, None
    if need > DENSE_MEMORY_LIMIT:
        raise ValueError(
            f"compare: the reference saved at the runs' times would take about "
            f"{need / 2**30:.1f} GiB ({grid.shape[-1]} times x {size} state entries x "
            f"{_SAVED_COPIES} copies while it solves; the times are those of the finest run, "
            f"N = t1/dt = {int(np.max(ns))} steps, rounded up to a power of 2). Shorten t1 or "
            "drop the smallest step sizes (fewer steps per run)."
        )
    return grid, rows


def _compare_program(
    flow,
    problem,
    map,
    reference,
    per_step,
    hs,
    ns,
    t1,
    solver,
    rtol,
    atol,
    max_steps,
    grid=None,
    rows=None,
    keep=False,
):
    """The comparison, one program. With `grid` (`_save_grid`) the reference is saved at the
    runs' times only, and run `h` reads its step `k` from row `rows[h, k]`; without, from the
    dense output. Also where each reference solve stopped, `(t, y)` (one per step size for
    per-step references): a failed one's diagnosis (`failure_diagnosis`) compiles nothing.
    With `keep` (a single reference only), also the reference itself, `_kept_reference`'s
    input; else `None`."""
    saving = grid is not None

    def solve_ref(ref, problem, solver, grid):
        # With `stop`: also where it stopped, `(t, y)`, for a failure's diagnosis.
        ts = grid if saving else jnp.reshape(t1, (1,))
        args = (ref, problem, solver, 0.0, t1, ts, rtol, atol, max_steps)
        return dense_solve(*args, dense=not saving, at_times=saving, stop=True)

    def source(sol):  # what the runs read: the saved rows, or the dense output
        return sol.ys if saving else sol.interpolation

    def reader(source, rows):
        return _rows_read(source, rows) if saving else _dense_read(source)

    # The step sizes are the sweep axis, split across devices (`sweep_apply`).
    if per_step:

        def one(batch, shared):
            (h, n, grid, rows), (flow, problem, map, solver) = batch, shared
            ref = reference(h)
            sol, stop = solve_ref(ref, problem, solver, grid)
            init = _error_start(flow, problem, map, h)
            errors = _error_run(flow, problem, map, ref, reader(source(sol), rows), h, n, init)
            return (*errors, sol.result, stop)

        # A sequential map over each device's step sizes, not `vmap`: batching the adaptive
        # reference solve re-traces its body (the order-p field) through vmap's while-loop rule,
        # and a batched while loop runs every member to the slowest one's step count anyway.
        # Order-3 AdaBelief cell: tracing 9.8 -> 5.5 s, compilation unchanged, results equal.
        # (It also keeps one reference's buffers alive at a time.)
        def each(batch, shared):
            return jax.lax.map(lambda b: one(b, shared), batch)

        errs, finals, div, scales, result, stop = sweep_apply(
            each, (hs, ns, grid, rows), (flow, problem, map, solver)
        )
        kept = None
    else:
        sol, stop = solve_ref(reference, problem, solver, grid)

        def start(h, shared):
            flow, problem, map, _, _ = shared
            return _error_start(flow, problem, map, h)

        def one(batch, shared):
            (h, n, rows, init), (flow, problem, map, ref, src) = batch, shared
            return _error_run(flow, problem, map, ref, reader(src, rows), h, n, init)

        # On an accelerator each device's step sizes run at once (`vmap`); on a CPU one after
        # another (`map_batch`: a `lax.map`): there a batch gains no speed, and a batched while
        # loop is traced again through vmap's rule and computes every step size's step until the
        # slowest one's count (the order-2 modified GD of tests/test_modifying.py: its two
        # programs traced in 3.3 -> 1.6 s). Batched, the loop's predicate (`n`) is batched, so
        # vmap's while rule batches its whole carry, tracing the step's body once per pass of
        # its fixpoint over which entries are batched, then once more: from a carry started
        # batched (`vmap` batches every output), one pass instead of two.
        def each(fn):
            return lambda batch, shared: map_batch(lambda b: fn(b, shared), batch)

        shared = (flow, problem, map, reference, source(sol))
        init = sweep_apply(each(start), hs, shared)
        errs, finals, div, scales = sweep_apply(each(one), (hs, ns, rows, init), shared)
        result = sol.result
        kept = None
        if keep:  # its saves (at t1, or the runs' times) as `solve` returns them
            params = jax.vmap(reference.params)(sol.ys)
            stats = {k: v for k, v in sol.stats.items() if k != "max_steps"}
            kept = (sol.ts, params, jax.vmap(problem.loss)(params), sol.interpolation, stats)
    return errs, finals, div, scales, result, stop, kept


def _kept_reference(kept, flow, solver: str, t1: float) -> Trajectory:
    """`compare`'s reference solve as the `Trajectory` `solve` would return: saved at $t_1$
    with its dense output, or (a reference saved at the runs' times) at those times, in order,
    without one."""
    ts, params, loss, interpolation, stats = kept
    if interpolation is None:  # the padding rows (at 2 t1) dropped
        n = int(np.sum(np.asarray(ts) <= t1))
        ts, params, loss = jax.tree.map(lambda x: x[:n], (ts, params, loss))
    return Trajectory(
        ts=ts,
        params=params,
        loss=loss,
        diverged_at=jnp.asarray(-1),
        interpolation=interpolation,
        flow=flow,
        solver=solver,
        stats=stats,
    )


# Traced inside `host_validated()` (no host callbacks: JAX's persistent cache keeps it). A
# failure is diagnosed on the host, from the program's outputs: a second `filter_jit` of the same
# function would share this one's traces, not add the runtime checks.
_compare_jit = eqx.filter_jit(_compare_program)


def _automatic(optimizer, step_sizes, reference, order, problem):
    """An optimizer callable's automatic flow (`modified_flow`: its discretization is the
    optimizer itself, started on the order-`order` slow manifold where its state is fast) and,
    for `order` > 1, the order-`order` modified flow at each h as the reference."""
    from ._modified import modified_flow

    if order is not None and reference is not None:
        raise ValueError("give order= or reference=, not both.")
    try:
        hs = np.asarray(step_sizes, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"step_sizes must be positive numbers, got {step_sizes!r}.") from None
    if hs.ndim != 1 or hs.size == 0:
        raise ValueError(f"step_sizes must be a non-empty 1-D array, got shape {hs.shape}.")
    # Named as given (modified_flow below would name its own `step_size`, the largest one).
    hint = float(np.max(positive("step_sizes", hs)))
    flow = modified_flow(optimizer, hint, 1 if order is None else order, problem=problem)
    if order is not None and order != 1:
        reference = _order_reference(optimizer, order, problem)
    return flow, reference


# The order-p reference of each (optimizer, order, problem) seen last: one object per key, so
# that a repeated `compare(optimizer, ..., order=p)` finds the compiled program (the reference
# is a static argument of the jitted comparison, and a new partial is a new key: a recompile).
_REFERENCES: dict = {}
_MAX_REFERENCES = 8


def _order_reference(optimizer, order: int, problem):
    from ._modified import modified_flow

    try:
        key = (optimizer, order, id(problem))
        hash(key)
    except TypeError:  # an unhashable callable: a fresh reference (compiled anew each call)
        return ft.partial(modified_flow, optimizer, order=order, problem=problem)
    ref = _REFERENCES.get(key)
    if ref is None or ref.keywords["problem"] is not problem:  # an id reused by a new problem
        ref = ft.partial(modified_flow, optimizer, order=order, problem=problem)
        _REFERENCES.pop(key, None)
        while len(_REFERENCES) >= _MAX_REFERENCES:
            _REFERENCES.pop(next(iter(_REFERENCES)))
        _REFERENCES[key] = ref
    return ref


def _series_diagnosis(reference, per_step, problem, hs) -> str | None:
    r"""Why an automatic reference may fail to solve: its field is not finite at $\theta_0$
    (named by term and leaf), or, at order $p \ge 2$, its $O(\tau)$ term dominates the leading
    one there ($\tau\|f_2\|/\|f_1\| \ge 1/2$ at the largest step size), i.e. the truncated
    series is used outside its asymptotic regime."""
    from ._modified import ModifiedFlow

    h = float(np.max(hs))
    ref = reference(h) if per_step else reference
    if not isinstance(ref, ModifiedFlow):
        return None
    terms, not_finite = _series_terms(ref, problem)
    if not_finite is not None:
        return not_finite
    if ref.order < 2:
        return None
    f1, f2 = terms[0], terms[1]
    n1, n2 = float(optax.tree.norm(f1)), float(ref.tau * optax.tree.norm(f2))
    if n1 == 0.0:  # a stationary θ0 (0/0 printed "ratio nan ... below about h = nan")
        return (
            None
            if n2 == 0.0
            else (
                f"Likely cause: the order-{ref.order} modified flow's leading term vanishes at θ0 "
                f"while its correction does not (τ‖f2‖ = {n2:.3g} at h = {h:g}): near θ0 the "
                "truncated series is dominated by its correction at any step size. Start away "
                "from θ0's stationary point, or compare with order=1."
            )
        )
    ratio = n2 / n1
    if ratio < 0.5:
        return None
    return (
        f"Likely cause: the order-{ref.order} modified flow's correction dominates its leading "
        f"term at these step sizes: at θ0, τ‖f2‖/‖f1‖ = {ratio:.3g} at h = {h:g}, so the "
        "truncated series is outside its asymptotic regime and the flow it defines is stiff "
        "or blows up (the terms grow like (τ/(1 - β))^j for a decay β: optax.adam's "
        "b2 = 0.999 needs τ ≪ 1e-3). Take step sizes where this ratio is small (below about "
        f"h = {h / ratio / 10:.2g}), or compare with order=1."
    )


# The ratio τ‖f2‖/‖f1‖ at θ0 from which a sweep is refused before its reference's solve
# (`_refuse_outside_series`): the first correction as large as the leading term.
SERIES_REFUSAL_RATIO = 1.0


class OutsideSeriesRegime(SolveError, ValueError):
    """`compare` refused an order-p reference before its solve: the truncated modified series
    is far outside its asymptotic regime at every step size (a `ValueError` for the step
    sizes, a `SolveError` for the solve not run, as `NotFiniteStart`)."""


def _refuse_outside_series(reference, per_step, problem, hs) -> None:
    r"""`OutsideSeriesRegime` when an automatic order-$p \ge 2$ reference is past its series'
    regime at every step size: $r(h) = \tau\|f_2\|/\|f_1\| \ge 1$ at $\theta_0$ for the
    smallest $h$ ($r$ grows like $\tau$: at the others too). One evaluation of the terms.

    Why 1: an asymptotic series is of use only while its terms decrease; its best truncation
    stops before the smallest term. At $r \ge 1$ the first correction is no smaller than the
    leading term, so the order-$p$ flow describes the optimizer no better than the order-1
    flow at any step size of the sweep: no order $p$ can be measured, and the flow it defines
    is typically stiff or blows up (its solve ran 16+ minutes on a 9k-parameter MLP under
    AdamW at optax's eps, $r \approx 10^3$, before its failure named the cause). On a
    quadratic under GD, $r \le h\lambda_{\max}/2$: 1 is GD's own stability limit
    $h\lambda = 2$; between 1/2 ($h\lambda = 1$, the radius of convergence of the series of
    $\tfrac1h\log(I - hH)$) and 1 the solve runs and its verdict says pre-asymptotic."""
    from ._modified import ModifiedFlow

    hs = np.sort(np.asarray(hs, np.float64))
    ref = reference(float(hs[0])) if per_step else reference
    if not isinstance(ref, ModifiedFlow) or ref.order < 2:
        return
    (f1, f2, *_), not_finite = _series_terms(ref, problem)
    if not_finite is not None:
        raise NotFiniteStart(
            "compare: the reference's solve cannot start (its vector field is not finite at "
            f"θ0, so none was run). {not_finite}"
        )
    n1, n2 = float(optax.tree.norm(f1)), float(ref.tau * optax.tree.norm(f2))
    if n1 == 0.0 or n2 / n1 < SERIES_REFUSAL_RATIO:
        return  # (a stationary θ0: the solve's own diagnosis, `_series_diagnosis`)
    ratio, h = n2 / n1, float(hs[0])
    # The step size where the ratio is 1/10 (the ratio falls like τ).
    below = f"{h / ratio / 10:.2g}"
    raise OutsideSeriesRegime(
        f"compare: step_sizes {hs[::-1].tolist()} are all outside the asymptotic regime of the "
        f"order-{ref.order} modified flow, so its solve was not run: at θ0, τ‖f2‖/‖f1‖ = "
        f"{ratio:.3g} at the smallest step size h = {h:g} (>= {SERIES_REFUSAL_RATIO:g}, and "
        "larger at the others: it grows like τ). The series' first correction is at least as "
        f"large as its leading term, so its order-{ref.order} truncation describes the optimizer "
        "no better than the order-1 flow at any of these step sizes, and the flow it defines is "
        "stiff or blows up (the terms grow like (τ/(1 - β))^j for a decay β; a small eps "
        f"divides by a small root). Take step sizes below about h = {below}, a larger eps, or "
        "compare with order=1."
    )


def _series_terms(flow, problem) -> tuple[list, str | None]:
    r"""`(terms, cause)`: the terms $f_1, f_2, \dots$ of the modified flow `flow` at $\theta_0$
    (their parameters' parts), and where one is not finite there the likely cause of a failure
    from that start (naming the terms and leaves), else `None`: the one reading of a series'
    start behind a failed reference's diagnosis and a dead slow-manifold start's."""
    from ._modified.flow import non_finite_leaves, NOT_FINITE

    fs = flow.field_values(flow.init(problem.params0), problem)  # jitted inside
    terms = [flow.params(f) for f in fs]
    bad = [f"f{i + 1} at {b}" for i, f in enumerate(terms) if (b := non_finite_leaves(f))]
    if not bad:
        return terms, None
    return terms, (
        f"Likely cause: the order-{flow.order} modified flow is not finite at θ0 "
        f"({'; '.join(bad)}): {NOT_FINITE}"
    )


def _check_counted_start(flow) -> None:
    r"""A slow-regime automatic flow with bias corrections carried as products $c = b^k$ is
    singular at optax's zero start ($1 - b\,c = 1 - b \to 0$ at $h = 0$ when $c = 1$)."""
    from ._modified import ModifiedFlow

    if isinstance(flow, ModifiedFlow) and flow.spec.products:
        raise ValueError(
            "compare: the optimizer's bias corrections 1 - b**k read its step counter; in the "
            "slow regime (decays 1 - a*h) they are carried as products c = b**k, and the "
            "modified series is singular at k = 0 (1 - b**0 = 0): the flow describes the run "
            "for t >> h, not from optax's zero start, so orders measured from t = 0 would be "
            "those of the start-up layer. Compare with state='fast' (fixed decays), with "
            "dynopt.flows.AdamFlow (its first-order flow, with the t -> 0 limits), or solve the "
            "modified flow from a state at t > 0."
        )


def _check_branches(flow, problem, map, hs, dts, ns) -> None:
    """An automatic flow of a step with iterate-dependent branches (clipping, `jnp.where`
    guards) is exact only while the run stays on one side of every switching surface: replay
    the runs with the predicates recorded and refuse one that switches."""
    from ._modified import ModifiedFlow
    from ._modified.branches import first_switch

    if not isinstance(flow, ModifiedFlow) or not flow.spec.branches or map is not default_map:
        return
    switch = first_switch(flow, problem, hs, ns)
    if np.any(switch == 0):
        i = int(np.argmax(switch == 0))
        raise ValueError(
            f"flow: the optimizer's step has a branch chosen by the iterate "
            f"({', '.join(flow.spec.branches)}), and the run at h = {float(hs[i]):g} starts on "
            "its kink (a max/min/clamp whose operands are equal there, e.g. a running maximum "
            "equal to the value it is compared with), where the step has no derivative and no "
            "modified flow exists. Start from a point off the kink (another state or θ₀)."
        )
    if np.any(switch >= 0):
        i = int(np.argmax(switch >= 0))
        k = int(switch[i])
        raise ValueError(
            f"flow: the optimizer's step has a branch chosen by the iterate "
            f"({', '.join(flow.spec.branches)}), and the run at h = {float(hs[i]):g} switches "
            f"branch at step {k} (t = {k * float(dts[i]):.4g}): it crosses a kink (e.g. "
            "clipping becoming active, or two compared values becoming equal), across which "
            "no modified flow exists. Compare over a "
            "horizon t1 that ends before the switch, or replace the branch by a smooth surrogate."
        )


def _reference_at(reference, h: float):
    """`reference(h)`; for a flow class that takes no step size (`reference=GradientFlow`, the
    class where an instance was meant), a `ValueError` saying to pass the instance instead of
    Python's `TypeError` about positional arguments."""
    try:
        return reference(float(h))
    except TypeError as e:
        if isinstance(reference, type) and issubclass(reference, AbstractFlow):
            raise ValueError(
                f"reference={reference.__name__} is a flow class: compare calls a callable "
                f"reference with the step size, {reference.__name__}(h), which it does not take "
                f"({e}). Pass an instance, reference={reference.__name__}(...), or a callable "
                "h -> flow."
            ) from e
        raise


def compare(
    flow: AbstractFlow | Callable[[jax.Array], Any],
    problem: AbstractProblem,
    step_sizes: ArrayLike,
    t1: float,
    *,
    map: Callable[[AbstractFlow, jax.Array], Discretization] | None = None,
    reference: AbstractFlow | Callable[[jax.Array], AbstractFlow] | None = None,
    order: int | None = None,
    start: str = "map",
    solver=None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 16_384,
    keep_reference: bool = False,
) -> Comparison:
    r"""Compare the discretization `map(flow, h)` with a reference flow for every step size $h$,
    on $[0, t_1]$.

    For each $h$ the discrete run takes $N_h = t_1/\Delta t$ steps ($\Delta t$ = the
    discretization's `dt`) and is compared with the diffrax reference at the matched times
    $t = k\Delta t$: $e_h = \max_{k\le N_h}\|\theta_k - \theta(k\Delta t)\|_2$ (also reported
    at $t_1$). The reference is read off its dense output, or, where that would preallocate more
    than 256 MiB (`max_steps` steps of every stage: a network), saved at those times only,
    $(N + 1)$ rows of the state for the finest run's $N$ steps (the same values). The local
    orders between consecutive step sizes decide the `verdict` (`dynopt.assess_order`):
    "asymptotic" when they agree within 0.2, the errors decrease and stay below 1/4 of the
    distance the solution travels; "unstable" when a run diverged (non-finite, or its loss grew
    past `run`'s threshold) or a step size is at or past the map's known
    stability limit for the Hessian at $\theta_0$; "too few step sizes" below 3; else
    "pre-asymptotic". Only when asymptotic is `order` a number: the least-squares slope of
    $\log e_h$ against $\log\Delta t$, the order in the time step whatever the map from $h$
    to $\Delta t$ (a map with $\Delta t = \sqrt\alpha$ and a first-order error in
    $\Delta t$ reports 1, not the 0.5 of a fit against $\alpha$). The steps are `run`'s: the
    problem's oracle (a `Problem`'s gradient, a `Game`'s simultaneous gradient), with `value`,
    `grad`, `value_fn` and `grad_fn` for a `GradientTransformationExtraArgs`.

    All step sizes run in one compiled program (a `while_loop` over steps, no stored
    trajectories; batched over $h$ on an accelerator, one $h$ after another on a CPU, the same
    numbers to rounding): calling again with new step sizes of the same count does not recompile.
    With several devices (GPUs, hosts after `jax.distributed.initialize()`, or CPU devices from
    `XLA_FLAGS=--xla_force_host_platform_device_count=N`) the step sizes are split across all of
    them, padded to a multiple of the device count; the numbers are those of one device.

    **Arguments:**

    - `flow`: the continuous model; or an optimizer, a callable `h -> optax transform`
      (e.g. `lambda h: optax.adamw(h)`): its continuous model is then derived automatically
      (`dynopt.modified_flow`) and the discrete runs are the optimizer itself.
    - `problem`: any `dynopt.AbstractProblem` (a `Problem`, a `dynopt.games.Game`),
      deterministic oracle.
    - `step_sizes`: the $h$ values (1-D, positive, distinct, at least 3 for an order, e.g.
      halvings), giving distinct time steps $\Delta t$; $t_1/\Delta t$ must be an integer for
      each.
    - `t1`: the horizon $t_1 > 0$ of the runs and the reference solve.
    - `map`: the discretization map, a callable `map(flow, h) -> Discretization` (e.g. a
      `dynopt.maps` module); `None` is the flow's default, `flow.discretize(h)`. Pass a module
      or a module-level function: a new lambda compiles anew.
    - `reference`: the flow to compare against: `None` (`flow` itself), a flow, or a callable
      `h -> flow` for references that depend on the step size, e.g. `ModifiedGradientFlow` or a
      game flow's `flow.modified`. A single flow that describes the run of one step only (an
      order-$p \ge 2$ `modified_flow` of $h_0$, `ModifiedGradientFlow(h0)`, `CentralFlow(h0)`)
      is refused for runs of other time steps: against it their errors measure the gap
      between two flows, not an order.
    - `order`: with an optimizer callable, compare against its order-`order` automatic modified
      flow at each $h$ (`modified_flow(optimizer, h, order)`; expected global order `order`);
      `None` or 1: the continuum limit. Only with an optimizer callable and no `reference`.
    - `start`: where the discrete runs start. `"map"` (default): the map's own initial state,
      the one its correspondence is stated from (an optimizer callable's order-$p$ slow
      manifold; `HeavyBall`'s default map: the velocity of the flow's first half step).
      `"optax"`: the transform's own `init`, optax's zero moments, as a user's training loop
      starts. The errors then include the optimizer's start-up layer, an $O(\tau)$ offset
      wherever the map's start is not optax's, so the fitted order is typically 1 whatever
      the reference's order: the drift a user's own run has, not the correspondence's order.
    - `solver`, `rtol`, `atol`, `max_steps`: as in `solve`.
    - `keep_reference`: also return the reference solve, as `Comparison.reference` (a single
      reference flow only: `reference` `None` or a flow): the `Trajectory` `solve` would give,
      saved at $t_1$ with its dense output (or, where the runs read it saved at their times,
      at those times without one), for further checks along it (`dynopt.lyapunov.rates`)
      without solving again. Off by default: the dense output is `max_steps` steps of every
      stage, kept alive with the `Comparison`.

    **Returns:** a `Comparison` (`step_sizes` = the $h$, `dts` = the $\Delta t$, `verdict`,
    `local_orders`, `order`, `start`; `reference` with `keep_reference`).

    **Raises:** `ValueError` for invalid step sizes, horizon, map or reference (also one bound
    to another step than the runs'), for a reference
    saved at the runs' times that would exceed 2 GiB (shorten `t1` or drop the smallest step
    sizes), or when the runs
    of an optimizer's order-$p \ge 2$ flow blow up from their start on the order-$p$ slow
    manifold because the series is outside its asymptotic regime (said with its diagnosis, not
    reported as an unstable optimizer); `SolveError` if a reference solve fails. An
    optimizer's order-$p \ge 2$ reference far outside its series' regime at every step size,
    $\tau\|f_2\|/\|f_1\| \ge 1$ at $\theta_0$ for the smallest $h$ (the first correction at
    least the leading term: past the series' best truncation), is refused before its solve
    where that solve is costly (more than 1000 state entries, or an implicit solver) with
    `OutsideSeriesRegime`, both a `ValueError` and a `SolveError`, in the time of one
    evaluation of the terms; elsewhere the solve runs and its failure, if any, names the cause.
    """
    _require_x64()
    automatic_order = None
    if not isinstance(flow, (AbstractFlow, type)) and callable(flow):
        if reference is None:  # against its own automatic flow
            automatic_order = 1 if order is None else order
        flow, reference = _automatic(flow, step_sizes, reference, order, problem)
    elif order is not None:
        raise ValueError("order= is for an optimizer callable (h -> optax transform) as flow.")
    if isinstance(flow, type) and issubclass(flow, AbstractFlow):
        raise ValueError(
            f"flow must be a flow instance, got the class {flow.__name__}: pass "
            f"{flow.__name__}(...)."
        )
    if not isinstance(flow, AbstractFlow):
        raise ValueError(
            "flow must be a dynopt flow (AbstractFlow) or an optimizer callable "
            f"h -> optax.GradientTransformation, got {type(flow).__name__}."
        )
    if not isinstance(problem, AbstractProblem):
        raise ValueError(f"problem must be a dynopt.AbstractProblem, got {type(problem).__name__}.")
    check_unbatched(flow, "compare")
    if isinstance(reference, AbstractFlow):
        check_unbatched(reference, "compare (its reference)")
    problem.check_key(None)
    rtol, atol, max_steps = solver_options(rtol, atol, max_steps)
    _check_counted_start(flow)
    map = default_map if map is None else map
    if isinstance(map, type) and issubclass(map, AbstractMap):
        raise ValueError(
            f"map must be a map instance, got the class {map.__name__}: pass "
            f"map={map.__name__}() (a map is an eqx.Module; its fields, if any, are its "
            "options)."
        )
    if not callable(map):
        raise ValueError(
            f"map must be None or a callable (flow, h) -> Discretization, got {map!r}."
        )
    if start not in ("map", "optax"):
        raise ValueError(
            f"start must be 'map' (the map's own initial state) or 'optax' (the transform's "
            f"init, optax's zero state), got {start!r}."
        )
    # The stability limit and branch replay read the map itself; only the start differs.
    declared_map = map
    if start == "optax":
        map = _OptaxStart(map)

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
    if not per_step:
        _check_fixed_reference(ref, hs, dts)
    if flag("keep_reference", keep_reference) and per_step:
        raise ValueError(
            "keep_reference=True keeps a single reference solve; this reference depends on the "
            "step size (one solve per h). Solve the one you need with dynopt.solve."
        )
    # Every step size's reference built on the host: its hyper-parameters are validated here,
    # so the compiled program needs no runtime checks (`host_validated`).
    if per_step and not all(isinstance(_reference_at(reference, h), AbstractFlow) for h in hs):
        raise ValueError("reference(step_size) must return a dynopt flow (AbstractFlow).")
    # The solver for the references' own Jacobian at the start (the first step size's, for a
    # per-step reference: they differ by O(h)).
    first_ref = ref(float(hs[0])) if per_step else ref
    # A truncated series far outside its regime, refused before its solve where that is costly:
    # a network's state (before the spectrum and the branch replay, themselves costly reads of
    # the order-p field and the runs), or an implicit solver (a Jacobian of the field per step).
    large = _state_size(first_ref, problem) > _DENSE_HESSIAN_MAX_DIM
    if large:
        _refuse_outside_series(ref, per_step, problem, hs)
    _check_branches(flow, problem, declared_map, hs, dts, ns)
    try:
        solver_obj, name, ratio = _pick_solver(
            solver, problem, problem.params0, t1, max_steps, flow=first_ref, refuse_not_finite=True
        )
    except NotFiniteStart as error:
        # Seen by the automatic choice at θ0, before any solve; a modified series names the
        # term (one field evaluation, on this failure only).
        series = _series_diagnosis(ref, per_step, problem, hs[:1])
        if series is None or "not finite" not in series:
            raise NotFiniteStart(f"compare: the reference's solve cannot start: {error}") from None
        raise NotFiniteStart(
            "compare: the reference's solve cannot start (its vector field is not finite at "
            f"θ0, so none was run). {series}"
        ) from None
    if not large and isinstance(solver_obj, diffrax.AbstractImplicitSolver):
        _refuse_outside_series(ref, per_step, problem, hs)
    # (One reference solves at a time: per-step ones in a `lax.map` on each device.)
    check_implicit_memory(first_ref, problem, solver_obj, "compare: the reference solve")
    if solver is None:  # the automatic implicit solver's stage tolerance, as in `solve`
        solver_obj = floor_stage_tolerance(solver_obj, name, problem, first_ref, 0.0, t1, atol)
    grid, rows = _reference_buffers(
        first_ref, problem, dts, ns, t1, per_step, solver_obj, max_steps
    )
    args = (
        flow,
        problem,
        map,
        ref,
        per_step,
        jnp.asarray(hs),
        jnp.asarray(ns, dtype=int),
        jnp.asarray(t1),  # traced: a new horizon does not recompile
        solver_obj,
        rtol,
        atol,
        int(max_steps),
        None if grid is None else jnp.asarray(grid),
        None if rows is None else jnp.asarray(rows),
        keep_reference,
    )
    with host_validated():
        errs, finals, div, scales, result, stop, kept = gather(_compare_jit(*args))
    diagnosis = None
    ok = np.atleast_1d(np.asarray(result == diffrax.RESULTS.successful))
    if not np.all(ok):
        # A truncated series used outside its asymptotic regime first: a cause named from
        # one field evaluation.
        diagnosis = _series_diagnosis(ref, per_step, problem, hs)
        if diagnosis is None:
            # the runs' start on the slow manifold, where it is what failed first
            diagnosis = _dead_start_cause(flow, map, problem, hs, np.asarray(div))
        if diagnosis is None:
            # where the first failed reference stopped, and why (read off the program's outputs)
            if per_step:
                i = int(np.flatnonzero(~ok)[0])
                failed, stop = ref(float(hs[i])), jax.tree.map(lambda x: x[i], stop)
            else:
                failed = ref
            diagnosis = failure_diagnosis(failed, problem, 0.0, [t1], stop)
    raise_for_result(
        result,
        what=f"compare: reference solve({name})",
        max_steps=int(max_steps),
        rtol=rtol,
        atol=atol,
        stiffness=ratio,
        diagnosis=diagnosis,
        implicit=isinstance(solver_obj, diffrax.AbstractImplicitSolver),
    )
    _check_manifold_start(flow, map, problem, hs, np.asarray(div))
    unstable = _past_stability_limit(flow, problem, declared_map, hs)
    # An optimizer against its own order-p automatic flow, its runs started where the flow
    # starts (the default map: on the order-p slow manifold): a local error O(τ^{p+1}), so a
    # global one O(τ^p) on [0, t1]; a fit below p is not the limit. Likewise a flow against
    # itself under its default map, whose claimed order the correspondence battery fits.
    at_least = None
    if map is default_map:
        if automatic_order is not None:
            at_least = automatic_order
        elif reference is None:
            at_least = _default_map_order(flow)
    kept = None if kept is None else _kept_reference(kept, ref, name, t1)
    rounding, dtype = _run_rounding(problem, scales)
    return make_comparison(
        hs,
        dts,
        ns,
        errs,
        finals,
        div,
        t1,
        name,
        scales,
        unstable,
        at_least,
        start,
        kept,
        rounding=rounding,
        dtype=dtype,
    )


def _run_rounding(problem, scales) -> tuple[np.ndarray | None, str | None]:
    r"""`(levels, dtype)`: per run, one rounding of its iterate, $\varepsilon(\|\theta_0\| + D)$
    ($D$ = `scales`, the distance the solution travels: $\|\theta\|$ along it is at most
    that), for the coarsest floating dtype of `problem.params0` (its $\varepsilon$, its name);
    `(None, None)` for float64 runs, whose floor is the reference's tolerance."""
    leaves = [
        x
        for x in jax.tree.leaves(problem.params0)
        if jnp.issubdtype(jnp.result_type(x), jnp.floating)
    ]
    if not leaves:
        return None, None
    coarse = max((jnp.result_type(x) for x in leaves), key=lambda d: jnp.finfo(d).eps)
    if jnp.finfo(coarse).eps <= jnp.finfo(jnp.float64).eps:
        return None, None
    norm0 = float(np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in leaves)))
    levels = float(jnp.finfo(coarse).eps) * (norm0 + np.asarray(scales, np.float64))
    return levels, jnp.dtype(coarse).name


def _check_manifold_start(flow, map, problem, hs, diverged_at) -> None:
    r"""A fast-regime automatic flow of order $p \ge 2$ starts its runs on the order-$p$ slow
    manifold, itself a truncated series in $\tau$: where the series is outside its asymptotic
    regime, that start is garbage (e.g. a negative second moment) and the runs blow up at once.
    Reported as diverged runs, it would read as an unstable optimizer; `ValueError` with the
    series' diagnosis instead."""
    bad = diverged_at >= 0
    if not (np.any(bad) and _starts_on_manifold(flow, map, problem)):
        return
    _check_dead_start(flow, map, problem, hs, diverged_at)
    h = float(np.max(hs[bad]))
    at_h = ft.partial(eqx.tree_at, lambda f: f.step_size, flow)
    cause = _series_diagnosis(lambda h: at_h(jnp.asarray(h)), True, problem, np.asarray([h]))
    if cause is None:
        return
    raise ValueError(f"{_blew_up(flow, hs, diverged_at)} {cause}")


def _blew_up(flow, hs, diverged_at) -> str:
    bad = diverged_at >= 0
    steps = sorted({int(k) for k in diverged_at[bad]})
    return (
        f"compare: the optimizer's runs at step sizes {hs[bad].tolist()} blew up at step(s) "
        f"{steps}, started on the order-{flow.order} slow manifold of its state, a truncated "
        "series in the step like the flow."
    )


def _check_dead_start(flow, map, problem, hs, diverged_at) -> None:
    r"""Runs dead within one step of their start on the order-$p$ slow manifold: `ValueError`
    when the start itself, or its first step, is not finite, whatever the global ratio
    $\tau\|f_2\|/\|f_1\|$ says (a coordinate whose gradient is near 0 can get a negative
    second moment while the ratio stays small). Where the reference solve failed too, the
    same cause is its diagnosis when the series' own is silent."""
    cause = _dead_start_cause(flow, map, problem, hs, diverged_at)
    if cause is not None:
        raise ValueError(cause)


def _dead_start_cause(flow, map, problem, hs, diverged_at) -> str | None:
    """`_check_dead_start`'s message, or `None`."""
    early = (diverged_at >= 0) & (diverged_at <= 1)
    if not (np.any(early) and _starts_on_manifold(flow, map, problem)):
        return None
    cause = _manifold_start_failure(flow, problem, float(np.max(hs[early])))
    return None if cause is None else f"{_blew_up(flow, hs, diverged_at)} {cause}"


def _starts_on_manifold(flow, map, problem) -> bool:
    """Whether `flow`'s runs start on a truncated slow manifold: a fast-regime automatic flow
    of order >= 2 with a state, under the default map."""
    from ._modified import ModifiedFlow

    return bool(
        map is default_map
        and isinstance(flow, ModifiedFlow)
        and flow.spec.regime == "fast"
        and flow.order >= 2
        and jax.tree.leaves(flow.spec(flow.step_size).init(problem.params0))
    )


@eqx.filter_jit
def _start_and_first_step(flow, problem, h):
    from ._modified.step import raw_step

    disc = flow.discretize(h)
    state = disc.init(problem.params0, problem)
    with jax.numpy_dtype_promotion("standard"):
        return state, raw_step(flow.spec, disc.dt, problem.params0, state, problem)


def _count_non_finite(tree) -> tuple[int, str]:
    """The number of non-finite entries of `tree` and the paths of the leaves holding them."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    counts = [
        (jax.tree_util.keystr(path), int(np.sum(~np.isfinite(np.asarray(x)))))
        for path, x in flat
        if eqx.is_array(x) and jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    counts = [(path, c) for path, c in counts if c]
    return sum(c for _, c in counts), ", ".join(
        f"{path} ({c})" if path else str(c) for path, c in counts
    )


def _manifold_start_failure(flow, problem, h: float) -> str | None:
    r"""Why the runs from the order-$p$ slow-manifold start die at once, or `None` when the
    start and its first step are finite: the non-finite entries of the start or of the first
    step (a negative second moment under a square root reads as NaN), the start's negative
    entries there, and the per-coordinate size of the series' correction at $\theta_0$,
    $\max_i \tau|f_{2,i}|/|f_{1,i}|$ (large where a gradient coordinate is near 0, even when
    the global $\tau\|f_2\|/\|f_1\|$ is small)."""
    with host_validated():
        start, (p1, s1) = _start_and_first_step(flow, problem, jnp.asarray(h))
    n_start, where_start = _count_non_finite(start)
    n_step, _ = _count_non_finite((p1, s1))
    if not n_start and not n_step:
        return None
    if n_start:
        what = (
            f"At h = {h:g} the start state itself is not finite: {n_start} entries, in "
            f"{where_start}."
        )
    else:
        # the start state's parameter-shaped parts (moments) negative where the step is NaN,
        # and only there: e.g. a second moment below 0, whose square root is NaN
        ptree = jax.tree.structure(problem.params0)
        nan_at = [~np.isfinite(np.asarray(y)) for y in jax.tree.leaves(p1)]
        subs, _ = jax.tree_util.tree_flatten_with_path(
            start, is_leaf=lambda x: jax.tree.structure(x) == ptree
        )
        neg = []
        for path, sub in subs:
            xs = jax.tree.leaves(sub)
            if jax.tree.structure(sub) != ptree or not all(
                eqx.is_array(x) and jnp.issubdtype(x.dtype, jnp.inexact) and x.shape == m.shape
                for x, m in zip(xs, nan_at)
            ):
                continue
            c = sum(int(np.sum((np.asarray(x) < 0) & m)) for x, m in zip(xs, nan_at))
            # a part negative only there (a second moment), not one of either sign (a mean)
            if c and c == sum(int(np.sum(np.asarray(x) < 0)) for x in xs):
                neg.append(f"{jax.tree_util.keystr(path) or 'the state'} ({c})")
        parts = [
            f"{name}: {where}"
            for name, tree in (("parameters", p1), ("state", s1))
            for n, where in [_count_non_finite(tree)]
            if n
        ]
        what = (
            f"At h = {h:g} the start state is finite but its first step is not: {n_step} "
            f"non-finite entries, in {'; '.join(parts)}"
            + (
                f"; at those coordinates the start is negative in {', '.join(neg)}: a second "
                "moment below 0, whose square root is NaN (an invalid start)."
                if neg
                else "."
            )
        )
    flow_h = eqx.tree_at(lambda f: f.step_size, flow, jnp.asarray(h))
    (f1, f2, *_), not_finite = _series_terms(flow_h, problem)
    if not_finite is not None:
        return f"{what} {not_finite}"
    tau = float(flow_h.tau)
    ratio = tau * float(optax.tree.norm(f2) / optax.tree.norm(f1))
    a1 = np.concatenate([np.abs(np.ravel(x)) for x in jax.tree.leaves(f1)])
    a2 = np.concatenate([np.abs(np.ravel(x)) for x in jax.tree.leaves(f2)])
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where(a2 == 0, 0.0, tau * a2 / a1)
    worst = float(np.max(per))
    many = int(np.sum(per >= 0.5))
    below = (
        f"step sizes below about h = {h / worst / 10:.2g}"
        if np.isfinite(worst) and worst > 0
        else "smaller step sizes"
    )
    return (
        f"{what} Likely cause: the order-{flow.order} modified flow's correction dominates its "
        f"leading term coordinate by coordinate: at θ0, max_i τ|f2_i|/|f1_i| = {worst:.3g} "
        f"({many} of {a1.size} coordinates at or above 1/2; the global "
        f"τ‖f2‖/‖f1‖ = {ratio:.3g} at h = {h:g}): where a gradient coordinate is near 0 the "
        "truncated series of the slow manifold is outside its asymptotic regime, and the start "
        "it gives is not a state the optimizer can take (this says nothing of the optimizer's "
        f"stability: its runs from optax's own init may be fine). Take {below} (the ratio "
        "falls like τ), compare with order=1, raise an ε that keeps the denominator positive "
        "(one inside the square root, as optax.scale_by_rms's), or start from a θ0 with no "
        "gradient coordinate near 0."
    )


__all__ = ["compare", "default_map"]
