"""`compare`: discrete runs against the reference flow, every step size in one compiled program."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._custom_types import ArrayLike
from ._discretization import check_positive
from ._flows.base import AbstractFlow
from ._order import fit_order
from ._problem import Problem
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


def _error_run(flow, problem, ref_flow, interp, h, n):
    """Run `flow.discretize(h)` for `n` steps; max and final error against the reference.

    The steps are unchecked (`make_fast_step`): the error norm, computed at every step anyway,
    is non-finite exactly when the iterate is, and then the loop stops with `diverged_at` = k."""
    disc = flow.discretize(h).astype(_floating_dtype(problem.params0))
    tx = disc.transform
    step = make_fast_step(tx, problem, None)
    ravel = lambda p: ravel_pytree(p)[0]

    def cond(c):
        (_, _, diverged_at, k), _, _ = c
        return (k < n) & (diverged_at < 0)

    def body(c):
        inner, err_max, _ = c
        params, state, _, k = step(inner)
        t = jnp.minimum(k.astype(disc.dt.dtype) * disc.dt, interp.t1)
        ref = ref_flow.params(interp.evaluate(t))
        err = jnp.linalg.norm(ravel(params) - ravel(ref))
        diverged_at = jnp.where(jnp.isfinite(err), -1, k)
        return (params, state, diverged_at, k), jnp.maximum(err_max, err), err

    params0 = problem.params0
    zero = jnp.zeros((), jnp.float64)
    init = ((params0, disc.init(params0, problem), jnp.asarray(-1), jnp.asarray(0)), zero, zero)
    (_, _, diverged_at, _), err_max, err_last = jax.lax.while_loop(cond, body, init)
    inf = jnp.asarray(jnp.inf, jnp.float64)
    diverged = diverged_at >= 0
    return jnp.where(diverged, inf, err_max), jnp.where(diverged, inf, err_last), diverged_at


def matched_steps(step_sizes: ArrayLike, t1, dt_of) -> tuple[np.ndarray, np.ndarray, float]:
    r"""Validate a sweep: `(hs, ns, t1)` with $N_h = t_1/\Delta t(h)$ an integer for every $h$."""
    hs = np.asarray(step_sizes, dtype=np.float64)
    if hs.ndim != 1 or hs.size == 0:
        raise ValueError(f"step_sizes must be a non-empty 1-D array, got shape {hs.shape}.")
    check_positive("step_sizes", hs)
    check_positive("t1", t1)
    t1 = float(t1)
    dts = np.asarray([float(dt_of(h)) for h in hs])
    ns = np.rint(t1 / dts)
    bad = (ns < 1) | (np.abs(ns * dts - t1) > 1e-9 * t1)
    if np.any(bad):
        raise ValueError(
            f"t1={t1} must be a positive integer multiple of each step's dt; it is not for step "
            f"sizes {hs[bad].tolist()}. Choose t1 = N * dt (e.g. step sizes t1/N for integers N)."
        )
    return hs, ns, t1


def make_comparison(hs, ns, errs, finals, diverged_at, t1: float, solver: str) -> Comparison:
    """Assemble a `Comparison`, fitting the orders of the max and final errors."""
    hs = jnp.asarray(hs)
    return Comparison(
        step_sizes=hs,
        errors=errs,
        final_errors=finals,
        order=fit_order(hs, errs),
        final_order=fit_order(hs, finals),
        diverged_at=diverged_at,
        num_steps=jnp.asarray(ns, dtype=int),
        t1=t1,
        solver=solver,
    )


@eqx.filter_jit
def _compare_jit(flow, problem, reference, per_step, hs, ns, t1, solver, rtol, atol, max_steps):
    def solve_ref(ref, problem, solver):
        ts = jnp.asarray([t1])
        return dense_solve(ref, problem, solver, 0.0, t1, ts, rtol, atol, max_steps)

    # The step sizes are the sweep axis, split across devices (`sweep_map`).
    if per_step:

        def one(hn, shared):
            (h, n), (flow, problem, solver) = hn, shared
            ref = reference(h)
            sol = solve_ref(ref, problem, solver)
            return (*_error_run(flow, problem, ref, sol.interpolation, h, n), sol.result)

        errs, finals, div, result = sweep_map(one, (hs, ns), (flow, problem, solver))
    else:
        sol = solve_ref(reference, problem, solver)

        def one(hn, shared):
            (h, n), (flow, problem, ref, interp) = hn, shared
            return _error_run(flow, problem, ref, interp, h, n)

        shared = (flow, problem, reference, sol.interpolation)
        errs, finals, div = sweep_map(one, (hs, ns), shared)
        result = sol.result
    return errs, finals, div, result


def compare(
    flow: AbstractFlow,
    problem: Problem,
    step_sizes: ArrayLike,
    t1: float,
    *,
    reference: AbstractFlow | Callable[[jax.Array], AbstractFlow] | None = None,
    solver=None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 16_384,
) -> Comparison:
    r"""Compare `flow.discretize(h)` with a reference flow for every step size $h$, on $[0, t_1]$.

    For each $h$ the discrete run takes $N_h = t_1/\Delta t$ steps and is compared with the dense
    diffrax reference at the matched times $t = k\Delta t$:
    $e_h = \max_{k\le N_h}\|\theta_k - \theta(k\Delta t)\|_2$ (also reported at $t_1$), and the
    fitted order is the least-squares slope of $\log e_h$ against $\log h$.

    All step sizes run in one compiled program (`vmap` over $h$, a `while_loop` over steps, no
    stored trajectories): calling again with new step sizes of the same count does not recompile.
    With several devices (GPUs, hosts after `jax.distributed.initialize()`, or CPU devices from
    `XLA_FLAGS=--xla_force_host_platform_device_count=N`) the step sizes are split across all of
    them, padded to a multiple of the device count; the numbers are those of one device.

    **Arguments:**

    - `flow`: the flow whose `discretize(h)` gives the discrete optimizer.
    - `step_sizes`: the $h$ values (1-D, positive); $t_1/\Delta t$ must be an integer for each.
    - `reference`: the flow to compare against: `None` (`flow` itself), a flow, or a callable
      `h -> flow` for references that depend on the step size, e.g. `ModifiedGradientFlow`.
    - `solver`, `rtol`, `atol`, `max_steps`: as in `solve`.

    **Raises:** `ValueError` for invalid step sizes or horizon; `SolveError` if a reference solve
    fails.
    """
    _require_x64()
    if not isinstance(flow, AbstractFlow):
        raise ValueError(f"flow must be a dynopt flow (AbstractFlow), got {type(flow).__name__}.")
    hs, ns, t1 = matched_steps(step_sizes, t1, lambda h: flow.discretize(h).dt)
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
    return make_comparison(hs, ns, errs, finals, div, t1, name)


__all__ = ["compare"]
