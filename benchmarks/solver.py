"""Benchmark 3: the reference solver. `dynopt.solve` (diffrax + PID, float64, `dense=False`)
vs `scipy.integrate.solve_ivp(method="DOP853")` on the same gradient flow θ' = -∇L, at matched
accuracy against a much tighter reference.

Two dynopt solvers per problem: Tsit5 (`solve`'s default) and Dopri8, the same Dormand–Prince
8(5,3) scheme as scipy's DOP853 (so that row compares implementations of one method, while the
Tsit5 row is what the default costs). dynopt runs at rtol=1e-8, atol=1e-10 and its error at t1
is measured; scipy is then run at the loosest tolerance of a grid (10^-5 … 10^-13) whose error is
no larger, so scipy is at least as accurate as dynopt in every row. The right-hand side is plain
numpy where the gradient has a closed form (Rosenbrock, quadratic), else the jitted JAX gradient
called from scipy (MLP). Wall times exclude compilation (the first call is timed separately).
Vector-field evaluations: scipy's `nfev`; dynopt's counted by a host callback in an untimed,
otherwise identical diffrax solve.
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

from ._common import block, Config, row


RTOL, ATOL = 1e-8, 1e-10
MAX_STEPS = 16_384  # with dense=False this budget costs no memory
SCIPY_RTOLS = [10.0**-k for k in range(5, 14)]


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


def _grad_time(grad, x0, repeats: int) -> float:
    """One gradient's time inside a jitted loop (no dispatch): the solver-overhead unit."""
    m = 50

    @jax.jit
    def loop(x):
        return jax.lax.fori_loop(0, m, lambda _, y: y - 1e-9 * grad(y), x)

    x = jnp.asarray(x0)
    block(loop(x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        block(loop(x))
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / m


def _count_fevals(grad, x0, t1: float, solver) -> int:
    """Vector-field evaluations of the timed solve (same solver, controller and tolerances)."""
    count = [0]

    def tick():
        count[0] += 1

    def vf(t, y, args):
        jax.debug.callback(tick)
        return -grad(y)

    diffrax.diffeqsolve(
        diffrax.ODETerm(vf),
        solver,
        0.0,
        t1,
        None,
        jnp.asarray(x0),
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
        max_steps=MAX_STEPS,
    ).ys.block_until_ready()
    jax.effects_barrier()
    return count[0]


def _bare_diffrax_time(grad, x0, t1: float, repeats: int, solver) -> float:
    """The same solve as one jitted `diffeqsolve` saving only y(t1): the floor under
    `dynopt.solve` (which also validates inputs, estimates stiffness and checks the result on the
    host)."""

    @jax.jit
    def bare(y0):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: -grad(y)),
            solver,
            0.0,
            t1,
            None,
            y0,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
            max_steps=MAX_STEPS,
        ).ys

    y0 = jnp.asarray(x0)
    block(bare(y0))
    return _median_time(lambda: block(bare(y0)), repeats)[0]


def _median_time(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def run(config: Config) -> list[dict]:
    rows = []
    for case in _cases(config.tiny):
        for method in ("tsit5", "dopri8"):
            rows += _one_case(*case, method=method, repeats=config.repeats)
    return rows


_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri8": diffrax.Dopri8}


def _one_case(case, problem, t1, rhs, ref, rhs_kind, *, method: str, repeats: int) -> list[dict]:
    rows = []
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
        traj = dynopt.solve(
            flow,
            problem,
            [t1],
            solver=method,
            rtol=RTOL,
            atol=ATOL,
            max_steps=MAX_STEPS,
            dense=False,  # like scipy's default: no dense output, no preallocated buffers
        )
        return block(traj)

    start = time.perf_counter()
    ours()
    first = time.perf_counter() - start
    ours_s, traj = _median_time(ours, repeats)
    err = float(np.linalg.norm(np.asarray(jax.flatten_util.ravel_pytree(traj.params)[0]) - ref))
    nfev = _count_fevals(grad, x0, t1, _SOLVERS[method]())

    sp = None
    for rtol in SCIPY_RTOLS:
        sol = scipy.integrate.solve_ivp(
            rhs, (0.0, t1), x0, method="DOP853", rtol=rtol, atol=rtol * 1e-2
        )
        sp_err = float(np.linalg.norm(sol.y[:, -1] - ref))
        if sol.success and sp_err <= err:
            sp = (rtol, sol, sp_err)
            break
    if sp is None:
        raise RuntimeError(f"{case}: scipy never reached dynopt's error {err:.3g}")
    sp_rtol, sol, sp_err = sp
    reps = max(1, repeats if rhs_kind == "numpy" else repeats // 2)
    sp_s, _ = _median_time(
        lambda sp_rtol=sp_rtol: scipy.integrate.solve_ivp(
            rhs, (0.0, t1), x0, method="DOP853", rtol=sp_rtol, atol=sp_rtol * 1e-2
        ),
        reps,
    )
    extra = dict(
        dynopt_compile_s=max(first - ours_s, 0.0),
        dynopt_error=err,
        dynopt_nfev=nfev,
        baseline_error=sp_err,
        baseline_nfev=int(sol.nfev),
        baseline_rtol=sp_rtol,
        params=int(x0.size),
    )
    base = f"scipy DOP853 ({rhs_kind} RHS)"
    acc = (
        f"error {err:.1e} vs {sp_err:.1e} (scipy rtol {sp_rtol:.0e}); f-evals {nfev} vs {sol.nfev}"
    )
    solver_row = functools.partial(
        row, "reference solver", case, dynopt_s=ours_s, baseline=base, baseline_s=sp_s, note=acc
    )
    if rhs_kind == "numpy":
        # The goals: 20x on the tiny Rosenbrock (per-call overhead), 2x on the d = 100
        # quadratic (its matrix-vector product is most of scipy's cost too).
        rows.append(solver_row(target=20.0 if problem.num_params == 2 else 2.0, **extra))
        return rows
    t_grad = _grad_time(grad, x0, repeats)
    overhead = ours_s / (nfev * t_grad)
    bare_s = _bare_diffrax_time(grad, x0, t1, repeats, _SOLVERS[method]())
    rows.append(solver_row(target=1.0, **extra))
    rows.append(
        row(
            "reference solver",
            case + ": solver overhead",
            dynopt_s=ours_s,
            baseline="f-evals × one jitted gradient",
            baseline_s=nfev * t_grad,
            ratio=overhead,
            target=1.3,
            higher_is_better=False,
            note=f"overhead row: ratio = wall / ({nfev} × {t_grad * 1e6:.0f} µs gradient); "
            f"bare jitted diffeqsolve (no dense output, no checks): {bare_s * 1e3:.1f} ms",
            gradient_s=t_grad,
            bare_diffrax_s=bare_s,
            **extra,
        )
    )
    return rows
