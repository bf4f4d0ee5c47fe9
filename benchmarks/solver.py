"""Benchmark 3: the reference solver. `dynopt.solve` (diffrax + PID, float64, `dense=False`)
vs `scipy.integrate.solve_ivp(method="DOP853")` on the same gradient flow θ' = -∇L, at matched
accuracy against a much tighter reference.

Two dynopt solvers per problem: `solve`'s default (its automatic choice, Tsit5 on these
problems: checked, and its cost included) and Dopri8, the same Dormand–Prince 8(5,3) scheme as
scipy's DOP853 (so that row compares implementations of one method, while the Tsit5 row is what
the default costs). dynopt runs at rtol=1e-8, atol=1e-10 and its error at t1
is measured; scipy's rtol (atol = rtol·1e-2) is then bisected in log10 until scipy's error is
within 10% of dynopt's (`_match_scipy`), so both run at the same accuracy. The right-hand side is
plain numpy where the gradient has a closed form (Rosenbrock, quadratic), else the jitted JAX
gradient called from scipy (MLP). dynopt, scipy, the bare solve below (and for the MLP a jitted
loop of gradients) are timed in alternation, at least `repeats` calls each and more until each
has 0.5 s of samples; medians of wall time, compilation excluded (the first call is timed apart).

Vector-field evaluations: scipy's `nfev`; dynopt's are 1 + (evaluations per step) × the timed
solve's own `stats["num_steps"]`, the evaluations per step counted by a host callback in the bare
solve. The bare solve (`_unit_time_solve`) is the one `dynopt.solve` runs, as a plain jitted
`diffeqsolve`: the unit time s = t/t1 on [0, 1], the first step 1e-6 handed to the same PID
controller (not Hairer's heuristic over [0, t1]); the benchmark checks that it takes the same
steps and gives the same numbers (to 1e-12), so the overhead row's floor is `solve`'s own.
"""

import functools
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate

import dynopt
from dynopt import flows, problems
from dynopt._solve import _FIRST_STEP

from ._common import alternating, block, Config, row


RTOL, ATOL = 1e-8, 1e-10
MAX_STEPS = 16_384  # with dense=False this budget costs no memory
SCIPY_RTOLS = [10.0**-k for k in range(5, 14)]
MIN_SAMPLES_S = 0.5  # seconds of samples per timed callable


def _rosenbrock_rhs(_, x):
    g = np.empty(2)
    g[0] = -2.0 * (1.0 - x[0]) - 400.0 * x[0] * (x[1] - x[0] ** 2)
    g[1] = 200.0 * (x[1] - x[0] ** 2)
    return -g


def _cases(tiny: bool):
    rosen = problems.rosenbrock()
    d = 20 if tiny else 100
    quad = problems.quadratic(jnp.logspace(-1.0, 1.0, d), rotate=True, seed=0)
    hess = np.asarray(quad.hessian)
    xstar = np.asarray(quad.minimizer)
    quad_ref = np.asarray(quad.flow_solution(1.0))
    cases = [
        ("Rosenbrock d=2, t1=1", rosen, 1.0, _rosenbrock_rhs, None, "numpy"),
        (f"quadratic d={d}, t1=1", quad, 1.0, lambda _, x: -hess @ (x - xstar), quad_ref, "numpy"),
    ]
    mlp = (
        problems.mlp_regression(64, 4, width=16, depth=2)
        if tiny
        else problems.mlp_regression(256, 16, width=64, depth=3)
    )
    cases.append((f"MLP regression d={mlp.num_params}, t1=2", mlp, 2.0, None, None, "jax"))
    return cases


def _flat(problem):
    flat, unravel = jax.flatten_util.ravel_pytree(problem.params0)
    grad = jax.jit(lambda x: jax.flatten_util.ravel_pytree(problem.grad(unravel(x)))[0])
    return np.asarray(flat), unravel, grad


def _grad_loop(grad, x0):
    """A jitted loop of `GRAD_LOOP` gradients (no dispatch between them): one call's time over
    `GRAD_LOOP` is the solver-overhead unit."""

    @jax.jit
    def loop(x):
        return jax.lax.fori_loop(0, GRAD_LOOP, lambda _, y: y - 1e-9 * grad(y), x)

    x = jnp.asarray(x0)
    return lambda: loop(x)


GRAD_LOOP = 50


def _unit_time_solve(grad, t1: float, solver, tick=None):
    """The solve `dynopt.solve` runs, as one bare jitted `diffeqsolve` saving only y(t1): the
    gradient flow in the unit time s = t / t1 on [0, 1] (the field times t1), the first step
    `dynopt._solve._FIRST_STEP` handed to the same PID controller, the same tolerances and step
    budget (none of `solve`'s input validation, stiffness estimate or host-side checks). With
    `tick`, every vector-field evaluation calls it on the host (counting them)."""

    def vf(s, y, args):
        if tick is not None:
            jax.debug.callback(tick)
        return -t1 * grad(y)

    @jax.jit
    def bare(y0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vf),
            solver,
            0.0,
            1.0,
            _FIRST_STEP,
            y0,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
            max_steps=MAX_STEPS,
        )
        return sol.ys, sol.stats["num_steps"]

    return bare


def _count_fevals(grad, x0, t1: float, solver) -> tuple[int, int]:
    """`(evaluations, steps)` of the bare unit-time solve (`_unit_time_solve`: the timed
    `dynopt.solve`'s interval, first step, controller and tolerances), counted by a host
    callback in the vector field."""
    count = [0]

    def tick():
        count[0] += 1

    _, steps = block(_unit_time_solve(grad, t1, solver, tick)(jnp.asarray(x0)))
    jax.effects_barrier()
    return count[0], int(steps)


def _match_scipy(rhs, t1: float, x0, ref, err: float, band: float = 0.1, max_iter: int = 30):
    """scipy DOP853 at the rtol (atol = rtol·1e-2) whose error at t1 is within `band` (10%) of
    dynopt's `err`: the loosest decade of 1e-5 … 1e-13 at least as accurate brackets it, then
    bisection in log10(rtol), keeping an accurate-enough end (error ≤ err) and a too-loose one.
    Returns `(rtol, solution, error, evaluations tried)`; the error is the closest found within
    the band or, if none was within it after `max_iter` halvings, the accurate end's (at most
    `err`: scipy then stays the more accurate).

    **Raises:** `RuntimeError` where even rtol 1e-13 misses `err`."""

    def solve(rtol):
        sol = scipy.integrate.solve_ivp(
            rhs, (0.0, t1), x0, method="DOP853", rtol=rtol, atol=rtol * 1e-2
        )
        return sol, (float(np.linalg.norm(sol.y[:, -1] - ref)) if sol.success else np.inf)

    lo = None
    for rtol in SCIPY_RTOLS:
        sol, e = solve(rtol)
        if e <= err:
            lo = (np.log10(rtol), sol, e)
            break
    if lo is None:
        raise RuntimeError(f"scipy never reached dynopt's error {err:.3g}")
    hi = lo[0] + 1.0  # one decade looser: its error exceeded err (or it is the grid's first)
    best, tries = lo, 1
    while abs(best[2] / err - 1.0) > band and tries < max_iter:
        mid = 0.5 * (lo[0] + hi)
        sol, e = solve(10.0**mid)
        tries += 1
        if abs(e / err - 1.0) <= band:
            best = (mid, sol, e)
        elif e <= err:
            lo = best = (mid, sol, e)
        else:
            hi = mid
    return 10.0 ** best[0], best[1], best[2], tries


def run(config: Config) -> list[dict]:
    rows = []
    for case in _cases(config.tiny):
        for method in ("tsit5", "dopri8"):
            rows += _one_case(*case, method=method, repeats=config.repeats)
    return rows


_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri8": diffrax.Dopri8}


def _one_case(case, problem, t1, rhs, ref, rhs_kind, *, method: str, repeats: int) -> list[dict]:
    flow = flows.GradientFlow()
    case = f"{case}, dynopt {'Tsit5 (default)' if method == 'tsit5' else 'Dopri8'}"
    x0, _, grad = _flat(problem)
    if rhs is None:
        rhs = lambda _, x, grad=grad: -np.asarray(grad(jnp.asarray(x)))
    if ref is None:  # Dopri8 at rtol 1e-13: errors of the compared solves are >= 1e-11
        tight = dynopt.solve(
            flow,
            problem,
            [t1],
            solver="dopri8",
            rtol=1e-13,
            atol=1e-15,
            max_steps=MAX_STEPS,
            dense=False,
        )
        ref = np.asarray(jax.flatten_util.ravel_pytree(tight.final_params)[0])

    def ours():
        return dynopt.solve(
            flow,
            problem,
            [t1],
            # The default row is `solve`'s own choice (its spectrum read once, then cached).
            solver=None if method == "tsit5" else method,
            rtol=RTOL,
            atol=ATOL,
            max_steps=MAX_STEPS,
            dense=False,  # like scipy's default: no dense output, no preallocated buffers
        )

    start = time.perf_counter()
    traj = block(ours())  # compiles (timed again below, with the others)
    first = time.perf_counter() - start
    if traj.solver != method:
        raise AssertionError(f"{case}: solve chose {traj.solver}, not {method}")
    final = np.asarray(jax.flatten_util.ravel_pytree(traj.params)[0])
    err = float(np.linalg.norm(final - ref))
    steps = int(np.asarray(traj.stats["num_steps"]))

    # The f-evals of the timed solve: its steps times the evaluations a step of this solver
    # costs, measured on the bare unit-time solve (the same solve: same steps, same numbers).
    count, bare_steps = _count_fevals(grad, x0, t1, _SOLVERS[method]())
    per_step = (count - 1) / bare_steps  # FSAL: one evaluation before the first step
    if bare_steps != steps or per_step != int(per_step):
        raise AssertionError(
            f"{case}: the bare solve took {bare_steps} steps, {count} evaluations; "
            f"dynopt.solve {steps} steps"
        )
    nfev = 1 + int(per_step) * steps
    bare = _unit_time_solve(grad, t1, _SOLVERS[method]())
    y0 = jnp.asarray(x0)
    bare_final = np.asarray(block(bare(y0))[0])[-1]
    if not np.allclose(bare_final, final, rtol=1e-12, atol=1e-14):
        raise AssertionError(f"{case}: the bare solve differs from dynopt.solve's")

    sp_rtol, sol, sp_err, tries = _match_scipy(rhs, t1, x0, ref, err)
    scipy_call = lambda: scipy.integrate.solve_ivp(
        rhs, (0.0, t1), x0, method="DOP853", rtol=sp_rtol, atol=sp_rtol * 1e-2
    )
    fns = [ours, scipy_call, lambda: bare(y0)]
    if rhs_kind == "jax":
        fns.append(_grad_loop(grad, x0))
    timed = alternating(fns, repeats, min_total_s=MIN_SAMPLES_S)
    ours_s, sp_s, bare_s = (t.median for t in timed[:3])
    extra = dict(
        dynopt_compile_s=max(first - ours_s, 0.0),
        dynopt_error=err,
        dynopt_nfev=nfev,
        dynopt_steps=steps,
        evals_per_step=int(per_step),
        baseline_error=sp_err,
        baseline_nfev=int(sol.nfev),
        baseline_rtol=sp_rtol,
        bare_diffrax_s=bare_s,
        samples=len(timed[0].samples),
        params=int(x0.size),
    )
    base = f"scipy DOP853 ({rhs_kind} RHS)"
    acc = (
        f"error {err:.2e} vs scipy {sp_err:.2e} (×{sp_err / err:.2f}; scipy rtol {sp_rtol:.3g}, "
        f"bisected in {tries} solves); f-evals {nfev} ({steps} steps × {int(per_step)} + 1) vs "
        f"{sol.nfev}; medians of {len(timed[0].samples)} alternating calls (wall); bare jitted "
        f"diffeqsolve of the same solve {bare_s * 1e3:.3g} ms"
    )
    solver_row = functools.partial(
        row, "reference solver", case, dynopt_s=ours_s, baseline=base, baseline_s=sp_s, note=acc
    )
    if rhs_kind == "numpy":
        # The goals: 20x on the tiny Rosenbrock (per-call overhead), 2x on the d = 100
        # quadratic (its matrix-vector product is most of scipy's cost too).
        return [solver_row(target=20.0 if problem.num_params == 2 else 2.0, **extra)]
    t_grad = timed[3].median / GRAD_LOOP
    return [
        solver_row(target=1.0, **extra),
        row(
            "reference solver",
            case + ": solver overhead",
            dynopt_s=ours_s,
            baseline="f-evals × one jitted gradient",
            baseline_s=nfev * t_grad,
            ratio=ours_s / (nfev * t_grad),
            target=1.3,
            higher_is_better=False,
            note=f"overhead row: ratio = wall / ({nfev} f-evals × {t_grad * 1e6:.0f} µs gradient, "
            f"a jitted loop of {GRAD_LOOP}, timed in the same alternation); bare jitted "
            f"diffeqsolve of the same solve (no checks): {bare_s * 1e3:.1f} ms "
            f"({bare_s / (nfev * t_grad):.2f}×)",
            gradient_s=t_grad,
            **extra,
        ),
    ]
