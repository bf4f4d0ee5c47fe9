import re
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate

import dynopt
from dynopt import flows, problems
from dynopt._solve import raise_for_result

from .helpers import count_backend_compiles


@pytest.mark.parametrize(
    "eigenvalues",
    [[1.0, 2.0], [1.0, 10.0, 100.0], [0.01, 0.5, 3.0, 30.0]],
)
def test_solve_matches_quadratic_closed_form(eigenvalues):
    params0 = {"x": jnp.linspace(-1.0, 1.0, len(eigenvalues) - 1), "y": jnp.array(2.0)}
    p = problems.quadratic(eigenvalues, params0=params0, rotate=True, seed=1)
    ts = jnp.linspace(0.0, 5.0, 26)
    traj = dynopt.solve(flows.GradientFlow(), p, ts)
    exact = jax.vmap(p.flow_solution)(ts)
    for a, b in zip(jax.tree.leaves(traj.params), jax.tree.leaves(exact)):
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-8
    # Dense output at times off the save grid.
    for t in [0.123, 1.7, 4.99]:
        got, want = traj.evaluate(t), p.flow_solution(jnp.asarray(t))
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert float(jnp.max(jnp.abs(a - b))) <= 1e-8
    np.testing.assert_allclose(traj.loss, jax.vmap(p.loss)(exact), rtol=1e-7, atol=1e-12)
    assert traj.solver == "tsit5" and int(traj.diverged_at) == -1


def test_stiff_problem_switches_to_implicit_and_is_accurate():
    p = problems.quadratic([1.0, 1e3, 1e5], rotate=True)
    ts = jnp.array([0.5, 1.0, 2.0])
    traj = dynopt.solve(flows.GradientFlow(), p, ts, rtol=1e-10, atol=1e-12)
    assert traj.solver == "kvaerno5"
    exact = jax.vmap(p.flow_solution)(ts)
    assert float(jnp.max(jnp.abs(traj.params - exact))) <= 1e-8
    assert dynopt.stiffness_ratio(p, p.params0, 2.0) == pytest.approx(1e5, rel=1e-6)


@pytest.mark.parametrize("fast, horizon", [(1e5, 10.0), (1e5, 100.0), (1e7, 10.0)])
def test_very_stiff_quadratic_solves_at_defaults(fast, horizon):
    # Stiffness ratios 1e8 and 1e10: at the default tolerances Kvaerno5's chord iteration asked
    # for each stage's derivative below its rounding floor and ran to max_steps.
    p = problems.quadratic(jnp.array([1e-3, 1.0, fast]), rotate=True)
    ts = jnp.linspace(horizon / 10, horizon, 10)
    traj = dynopt.solve(flows.GradientFlow(), p, ts)
    assert traj.solver == "kvaerno5" and int(traj.stats["num_steps"]) < 500
    exact = jax.vmap(p.flow_solution)(ts)
    assert float(jnp.max(jnp.abs(traj.params - exact))) <= 1e-8


def test_explicit_choice_is_respected():
    p = problems.quadratic([1.0, 2.0])
    ts = jnp.array([1.0])
    assert dynopt.solve(flows.GradientFlow(), p, ts, solver="implicit").solver == "kvaerno5"
    assert dynopt.solve(flows.GradientFlow(), p, ts, solver="dopri8").solver == "dopri8"
    assert dynopt.solve(flows.GradientFlow(), p, ts, solver=diffrax.Dopri5()).solver == "dopri5"


def test_solve_rosenbrock_matches_scipy_dop853():
    p = problems.rosenbrock()
    ts = np.linspace(0.0, 2.0, 9)
    traj = dynopt.solve(flows.GradientFlow(), p, ts, rtol=1e-12, atol=1e-14)

    def rhs(t, x):
        a, b = x
        return [2 * (1 - a) + 400 * a * (b - a * a), -200 * (b - a * a)]

    ref = scipy.integrate.solve_ivp(
        rhs, (0.0, 2.0), [-1.2, 1.0], method="DOP853", rtol=1e-12, atol=1e-14, t_eval=ts
    )
    # Both solvers meet ~1e-12 local tolerances; the flow contracts here, so global errors stay
    # within a few orders of that.
    np.testing.assert_allclose(np.asarray(traj.params), ref.y.T, rtol=0, atol=1e-8)


def test_unknown_solver_raises():
    with pytest.raises(ValueError, match="unknown solver 'rk99'"):
        dynopt.solve(flows.GradientFlow(), problems.rosenbrock(), [1.0], solver="rk99")


@pytest.mark.parametrize(
    ("ts", "match"),
    [
        ([1.0, 0.5], "strictly increasing"),
        ([[1.0]], "1-D"),
        ([], "1-D"),
        ([0.0], "horizon"),
        ([-1.0, 1.0], "start at or after t0"),
        ([1.0, float("nan")], "finite"),
    ],
)
def test_bad_times_raise(ts, match):
    with pytest.raises(ValueError, match=match):
        dynopt.solve(flows.GradientFlow(), problems.rosenbrock(), ts)


def test_max_steps_failure_names_the_fix():
    with pytest.raises(dynopt.SolveError, match="max_steps= \\(now 5\\)"):
        dynopt.solve(flows.GradientFlow(), problems.rosenbrock(), [10.0], max_steps=5)


def test_bad_tolerances_raise():
    with pytest.raises(ValueError, match="rtol and atol"):
        dynopt.solve(flows.GradientFlow(), problems.rosenbrock(), [1.0], rtol=0.0)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(max_steps=2.5), r"max_steps must be a positive integer, got 2\.5"),  # was int()'d
        (dict(max_steps=True), "max_steps must be a positive integer"),
        (dict(rtol=float("inf")), r"rtol and atol must be > 0 and finite, got rtol=inf"),
        (dict(atol="1e-8"), r"rtol and atol must be > 0 and finite, got .*atol='1e-8'"),
    ],
)
def test_solver_options_are_checked_by_every_entry_point(options, match):
    """`solve`, `compare` and the central flow's solve take the same options and refuse the same
    bad values before any work (`compare` and `central_solve` took any before; a fractional
    `max_steps` was truncated, 2.5 -> 2, and failed as a step budget exhausted)."""
    from dynopt.flows import central_solve, CentralFlow

    problem, flow = problems.rosenbrock(), flows.GradientFlow()
    with pytest.raises(ValueError, match=match):
        dynopt.solve(flow, problem, [1.0], **options)
    with pytest.raises(ValueError, match=match):
        dynopt.compare(flow, problem, [0.002, 0.001, 0.0005], 0.01, **options)
    with pytest.raises(ValueError, match=match):
        central_solve(CentralFlow(learning_rate=0.01, k=1), problem, [0.0, 0.1], **options)


def test_non_flow_raises():
    with pytest.raises(ValueError, match="flow must be a dynopt flow"):
        dynopt.solve(lambda t, y: y, problems.rosenbrock(), [1.0])


def test_a_flow_with_batched_hyperparameters_is_refused():
    """`run` takes `HeavyBall([0.5, 1.0])`'s discretization as two runs; `solve` and `compare`
    would have taken it as one flow with per-coordinate damping: refused, naming the field."""
    q = problems.quadratic([1.0, 4.0])
    batched = flows.HeavyBall(jnp.array([0.5, 1.0]))
    assert dynopt.run(batched.discretize(0.1), q, 3).loss.shape == (2, 4)
    match = r"takes one flow: HeavyBall.damping has shape \(2,\)"
    with pytest.raises(ValueError, match="solve " + match):
        dynopt.solve(batched, q, [1.0])
    with pytest.raises(ValueError, match="compare " + match):
        dynopt.compare(batched, q, [0.1, 0.05, 0.025], t1=0.5)


def test_dense_false_saves_memory_and_matches():
    p = problems.quadratic([1.0, 10.0], rotate=True)
    ts = jnp.array([0.5, 1.0])
    dense = dynopt.solve(flows.GradientFlow(), p, ts)
    sparse = dynopt.solve(flows.GradientFlow(), p, ts, dense=False)
    np.testing.assert_allclose(sparse.params, dense.params, rtol=1e-13)
    # (`_trajectory.py`, being edited alongside, now says "of the reference solve ... dense=False")
    with pytest.raises(ValueError, match=r"dense output of (a|the) reference solve"):
        sparse.evaluate(0.7)


def test_a_final_time_only_solve_is_the_last_row_of_a_longer_one():
    """With one save time and `dense=False`, the save is diffrax's t1 save (no runtime checks
    of the save times): the same steps, so the same end point as the last of several saves
    (those are evaluated on the step's interpolant at t1, equal to the step's end up to
    rounding), and its loss and statistics too."""
    p = problems.rosenbrock()
    one = dynopt.solve(flows.GradientFlow(), p, [1.0], dense=False)
    two = dynopt.solve(flows.GradientFlow(), p, [0.5, 1.0], dense=False)
    assert one.params.shape == (1, 2) and one.ts.tolist() == [1.0]
    np.testing.assert_allclose(one.params[0], two.params[-1], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(one.loss[0], two.loss[-1], rtol=1e-12, atol=1e-18)
    assert int(one.stats["num_steps"]) == int(two.stats["num_steps"])


def test_dense_memory_guard_names_the_fix():
    """20,000 entries: dense output is sized to the steps the solve takes (counted first), and
    a solve that takes ~10^3 steps (1,354: Tsit5's stability on rates up to 10^3 over t = 3)
    would still preallocate 2,048 x 20,000 x 9 float64 values, 2.7 GiB: refused, saying what
    to change. (From x = 0, as this test solved before, it takes 7 steps and now runs.) The
    counting solve is the cost, steps x entries; 20,000 is over the 2 GiB budget by 1.35x
    (1,024 rows would fit: the rounding up to a power of 2 counts)."""
    rates = jnp.linspace(1.0, 1e3, 20_000)
    big = dynopt.Problem(lambda x: 0.5 * jnp.sum(rates * x**2), jnp.ones(20_000))
    with pytest.raises(ValueError, match=r"\d+ steps for the \d+ it takes .* Pass dense=False"):
        dynopt.solve(flows.GradientFlow(), big, [3.0], solver="tsit5", max_steps=16_384)


def test_raise_for_result_names_the_failure_and_the_fix():
    """The one translation of diffrax's RESULTS (public API only): a batched result names the
    failed entries, the failure and what to change; success passes silently."""
    fail = diffrax.RESULTS.nonlinear_divergence
    results = jax.vmap(lambda i: diffrax.RESULTS.where(i == 1, fail, diffrax.RESULTS.successful))(
        jnp.arange(3)
    )
    with pytest.raises(
        dynopt.SolveError,
        match=r"x failed \(batch entries \[1\] of 3\): nonlinear_divergence.*Newton",
    ):
        raise_for_result(results, what="x", rtol=1e-8, atol=1e-10)
    raise_for_result(diffrax.RESULTS.successful, what="x")


def test_every_diffrax_solve_goes_through_integrate():
    root = Path(dynopt.__file__).parent
    callers = sorted(
        str(p.relative_to(root)) for p in root.rglob("*.py") if "diffeqsolve(" in p.read_text()
    )
    assert callers == ["_solve.py"], callers


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((flows.GradientFlow(), None, [1.0]), {}, "problem must be a dynopt.AbstractProblem"),
        ((problems.rosenbrock(), flows.GradientFlow(), [1.0]), {}, "solve\\(flow, problem, ts\\)"),
        ((flows.GradientFlow(), problems.rosenbrock(), "abc"), {}, "ts must be a non-empty 1-D"),
        ((flows.GradientFlow(), problems.rosenbrock(), [1.0]), {"t0": float("nan")}, "t0 must"),
        # a fixed-step solver cannot control its error
        (
            (flows.GradientFlow(), problems.rosenbrock(), [1.0]),
            {"solver": diffrax.Euler()},
            "Euler has fixed steps",
        ),
        (
            (flows.GradientFlow(), problems.rosenbrock(), [1.0]),
            {"rtol": 10.0},
            r"rtol must be in \[2.22e-16, 1\)",
        ),
    ],
)
def test_bad_arguments_are_one_line_value_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        dynopt.solve(*args, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "ts, t0, match",
    [
        ([[0.5, 1.0]], 0.0, r"non-empty 1-D array of times, got shape \(1, 2\)"),
        ([], 0.0, r"non-empty 1-D array of times, got shape \(0,\)"),
        ([np.nan], 0.0, "ts must be finite"),
        ([0.5, np.inf], 0.0, "ts must be finite"),
        ([0.5, np.inf, 2.0], 0.0, "ts must be finite"),
        ([0.5, np.nan, 2.0], 0.0, "ts must be finite"),
        ([-np.inf, 1.0], -np.inf, "ts must be finite"),  # central_solve's first check
        ([1.0, 1.0], 0.0, "ts must be strictly increasing"),
        ([0.5, 2.0, 1.0], 0.0, "ts must be strictly increasing"),
        ([-0.5, 1.0], 0.0, r"ts must start at or after t0=0.0, got ts\[0\]=-0.5"),
        ([0.0], 0.0, r"the horizon ts\[-1\] must be > t0=0.0, got 0.0"),
        ([0.5], 1.0, r"ts must start at or after t0=1.0"),
    ],
)
def test_save_times_are_refused_with_what_is_wrong(ts, t0, match):
    """Each bad `ts` is named by its first failing check, as before the checks that pass (every
    call) were folded into one pass: a NaN or an infinity anywhere, with any `t0`."""
    from dynopt import _solve

    with pytest.raises(ValueError, match=match):
        _solve._check_times(ts, t0)
    np.testing.assert_array_equal(_solve._check_times([0.0, 0.5, 2.0], 0.0), [0.0, 0.5, 2.0])


def test_a_warm_solve_flattens_its_flow_and_problem_once(monkeypatch):
    """Host work per call: a solve flattens `(flow, problem)` once, for its checks, the
    automatic choice's key and the compiled program's arrays alike (twice before: ~7 µs a
    call at Rosenbrock d = 2), with a new problem object too."""
    flow, calls = flows.GradientFlow(), []
    flatten = jax.tree.flatten

    def counting(tree, *args, **kwargs):
        if isinstance(tree, tuple) and any(x is flow for x in tree):
            calls.append(tree)
        return flatten(tree, *args, **kwargs)

    dynopt.solve(flow, problems.rosenbrock(), [1.0], dense=False)
    monkeypatch.setattr(jax.tree, "flatten", counting)
    dynopt.solve(flow, problems.rosenbrock(), [0.5, 1.0], dense=False)
    assert len(calls) == 1


def test_solve_under_a_trace_says_it_runs_on_the_host():
    """`solve` decides its solver, checks and save times on the host: under `vmap` (a batch
    of flows) or `jit` (traced times) it says so instead of a TracerBoolConversionError."""
    q = problems.quadratic([1.0, 4.0])
    ts = jnp.linspace(0.0, 1.0, 3)
    with pytest.raises(ValueError, match="flow must be concrete: solve is called on the host"):
        jax.vmap(lambda d: dynopt.solve(flows.HeavyBall(d), q, ts).params)(jnp.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="ts must be concrete"):
        jax.jit(lambda t: dynopt.solve(flows.GradientFlow(), q, t).params)(ts)


def _minus_x4(x):
    return -jnp.sum(x**4)


def _log_loss(x):
    return jnp.sum(jnp.log(x))  # x' = -1/x: x(t) = sqrt(1 - 2t), the field infinite at t = 1/2


def _nan_loss(x):
    return jnp.sum(jnp.sqrt(x - 2.0))  # NaN for x < 2


def test_finite_time_blow_up_is_reported_as_such():
    """-x^4 from 1: the gradient flow x' = 4x^3 is x(t) = (1 - 8t)^(-1/2), infinite at
    t = 0.125. No step budget reaches t = 1: the error names the time reached (just before
    0.125), the state's size there, and the blow-up, not "raise max_steps"."""
    p = dynopt.Problem(_minus_x4, jnp.array([1.0]))
    with pytest.raises(dynopt.SolveError, match="blows up in finite time") as info:
        dynopt.solve(flows.GradientFlow(), p, [1.0], max_steps=4096)
    message = str(info.value)
    assert "raise max_steps" not in message
    reached = float(message.split("reached t = ")[1].split()[0])
    assert 0.12 < reached <= 0.125
    norm = float(message.split("norm is ")[1].split()[0])
    assert norm > 1e3  # x(t) = (1 - 8t)^(-1/2) > 1e3 only within 1e-7 of the blow-up


def test_non_finite_or_singular_vector_field_is_reported_as_such():
    p = dynopt.Problem(_nan_loss, jnp.array([1.0]))
    with pytest.raises(dynopt.SolveError, match="vector field is not finite") as info:
        dynopt.solve(flows.GradientFlow(), p, [1.0], max_steps=64)
    assert "raise max_steps" not in str(info.value)
    p = dynopt.Problem(_log_loss, jnp.array([1.0]))
    with pytest.raises(dynopt.SolveError, match="vector field grows without bound") as info:
        dynopt.solve(flows.GradientFlow(), p, [1.0], max_steps=4096)
    reached = float(str(info.value).split("reached t = ")[1].split()[0])
    assert 0.49 < reached <= 0.5


def test_dense_memory_guard_counts_the_solver_values_per_step():
    """diffrax keeps 9 values per step and state entry for Tsit5 and 16 for Dopri8 (read from
    the solve's shapes): at the default max_steps, 1,700 parameters fit the 2 GiB budget for
    Tsit5 (2.05e9 bytes) but not for Dopri8 (3.6e9; the old count of 9 said 1.87 GiB)."""
    from dynopt._solve import _DENSE_VALUES, _dense_values_per_step, check_dense_memory

    # The table the guard reads, against the measurement from the solve's shapes.
    for kind in (diffrax.Tsit5, diffrax.Dopri8, diffrax.Bosh3):
        assert _DENSE_VALUES[kind] == _dense_values_per_step(kind)
    assert _DENSE_VALUES[diffrax.Tsit5][0] == 9
    assert _DENSE_VALUES[diffrax.Dopri8][0] == 16
    p = dynopt.Problem(lambda x: jnp.sum(x**2), jnp.zeros(1_700))
    check_dense_memory(flows.GradientFlow(), p, 16_384, solver=diffrax.Tsit5())
    # (A solve counts its steps first and preallocates for those: the guard on its own.)
    with pytest.raises(ValueError, match=r"x 16 values per step.*Pass dense=False"):
        check_dense_memory(flows.GradientFlow(), p, 16_384, solver=diffrax.Dopri8())


def test_repeated_solves_reuse_one_compiled_program():
    """`solve` keeps one jitted program per (flow, problem, solver) structure and static
    options: new save times, tolerances and start values reuse it (no retrace), and each
    answer is the closed form to the accuracy its tolerances ask for."""
    from dynopt import _solve

    p = problems.quadratic([1.0, 3.0], rotate=True)
    flow = flows.GradientFlow()
    first = dynopt.solve(flow, p, [0.5, 1.0], solver="tsit5", dense=False)
    compiled, _ = _solve._compiled_solve(flow, p, diffrax.Tsit5(), 16_384, False, False)
    traces = compiled.run._cache_size()
    moved = problems.quadratic([1.0, 3.0], rotate=True, params0=jnp.array([0.3, -2.0]))
    ts = jnp.array([0.25, 2.0])  # as many save times: the same shapes
    again = dynopt.solve(flow, moved, ts, solver="tsit5", rtol=1e-9, atol=1e-11, dense=False)
    assert compiled.run._cache_size() == traces
    for traj, prob, times in [(first, p, jnp.array([0.5, 1.0])), (again, moved, ts)]:
        exact = jax.vmap(prob.flow_solution)(times)
        np.testing.assert_array_equal(traj.ts, times)
        assert float(jnp.max(jnp.abs(traj.params - exact))) <= 1e-7


def test_unit_time_solve_reads_back_in_the_flows_time():
    """`solve` integrates in s = (t - t0)/(t1 - t0) on the constant [0, 1] and reads the dense
    output back in t: a non-autonomous flow (Adam's bias correction depends on t) started at
    t0 > 0 agrees with diffrax solving it directly in t (both to rtol 1e-10 / atol 1e-12, from
    the same first step, 1e-6 of the interval: the same step sequence, so they agree to
    rounding, 1e-12, where each is 2.4e-10 off a Dopri8 solve at rtol 1e-14), at the solver's
    step times, at the ends exactly, in `evaluate` and in the derivative of the dense output
    (the vector field, by the chain rule through s)."""
    p = problems.quadratic([1.0, 4.0], rotate=True)
    flow = flows.AdamFlow(1.0, 0.5)
    t0, ts = 0.3, jnp.array([0.5, 1.1, 2.3])
    ours = dynopt.solve(flow, p, ts, t0=t0, solver="tsit5")
    interp = ours.interpolation
    assert float(interp.t0) == t0 and float(interp.t1) == 2.3  # exactly, not t0 + 1 * span
    steps = np.asarray(interp.ts)
    steps = steps[np.isfinite(steps)]
    assert steps[0] == t0 and steps[-1] == 2.3 and np.all(np.diff(steps) > 0)
    y0 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), flow.init(p.params0))
    direct = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: flow.vector_field(t, y, p)),
        diffrax.Tsit5(),
        t0,
        2.3,
        1e-6 * (2.3 - t0),
        y0,
        saveat=diffrax.SaveAt(ts=ts, dense=True),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-12),
        max_steps=16_384,
    )
    np.testing.assert_allclose(ours.params, direct.ys.params, rtol=0, atol=1e-12)
    inner = jnp.linspace(t0, 2.3, 7)
    for t in inner:
        a, b = interp.evaluate(t), direct.interpolation.evaluate(t)
        np.testing.assert_allclose(a.params, b.params, atol=1e-12)
        inc = interp.evaluate(t0, t)
        np.testing.assert_allclose(inc.params, a.params - y0.params, atol=1e-12)  # from t0
        rate = interp.derivative(t).params
        field = flow.vector_field(t, a, p).params
        # The dense output's derivative is the field to the interpolant's accuracy.
        np.testing.assert_allclose(rate, field, atol=1e-6 * float(jnp.max(jnp.abs(field))))
    with pytest.raises(ValueError, match=r"t must be in \[0.3, 2.3\], got 2.4"):
        ours.evaluate(2.4)


def test_a_solves_program_holds_no_unrolled_end_time_chain():
    """diffrax rounds a step that ends within 100 ulps of t1 to t1, computing that bound by 100
    unrolled `prevbefore`s of t1 (each ~22 HLO ops after lowering). With the horizon traced
    they stayed in every compiled solve (~2,200 ops, ~1/3 of a small solve's compile time);
    in the unit time [0, 1] XLA folds them to a constant."""
    from dynopt import _solve

    p = problems.quadratic([1.0, 3.0])
    flow = flows.GradientFlow()
    dynopt.solve(flow, p, [0.5, 1.0], solver="tsit5")
    compiled, arrays = _solve._compiled_solve(flow, p, diffrax.Tsit5(), 16_384, True, False)
    args = (arrays, jnp.asarray(0.0), jnp.array([0.5, 1.0]), 1e-10, 1e-12)
    hlo = compiled.run.lower(*args).compile().as_text()
    assert hlo.count("nextafter") < 50, hlo.count("nextafter")


def test_a_failed_solve_names_the_time_it_reached_with_or_without_dense_output():
    """Out of steps, the `SolveError` says how far the solve got. Without the dense output the
    requested saves past that point are `inf`, so the diagnosis re-runs the solve saving the
    state where it stopped (it used to report t = t0): the same time as with `dense=True`."""
    import re

    p = problems.quadratic([1.0, 100.0])
    reached = []
    for dense in (True, False):
        with pytest.raises(dynopt.SolveError, match="max_steps_reached") as info:
            dynopt.solve(flows.GradientFlow(), p, [10.0], max_steps=40, dense=dense)
        found = re.search(r"It reached t = ([0-9.e+-]+) of \[0, 10\]", str(info.value))
        assert found is not None, str(info.value)
        reached.append(float(found.group(1)))
    assert 0.0 < reached[0] < 10.0
    assert reached[1] == pytest.approx(reached[0], rel=1e-9)


def test_a_given_first_step_is_a_step_size_in_either_time_direction():
    """`_FirstStepGiven` (the first step of reference solves and central-flow chunks) hands its
    step to the controller in diffrax's frame, where a backward solve runs forward in -t: a
    negative first step there ran out of steps (max_steps reached)."""
    from dynopt._solve import _FirstStepGiven, integrate

    def solve(t0, t1):
        controller = diffrax.PIDController(rtol=1e-10, atol=1e-12)
        return integrate(
            diffrax.ODETerm(lambda t, y, args: -y),
            diffrax.Tsit5(),
            t0,
            t1,
            jnp.ones(3),
            controller=_FirstStepGiven(controller, jnp.asarray(1e-6)),
            max_steps=4096,
        )

    forward, backward = solve(0.0, 1.0), solve(1.0, 0.0)
    for sol, t1 in ((forward, 1.0), (backward, 0.0)):
        assert diffrax.is_successful(sol.result), sol.result
        assert float(sol.ts[-1]) == t1
    np.testing.assert_allclose(forward.ys[-1], np.exp(-1.0) * np.ones(3), rtol=1e-9)
    np.testing.assert_allclose(backward.ys[-1], np.exp(1.0) * np.ones(3), rtol=1e-9)


def _stalled_sign_flow(problem) -> str:
    """The message of an explicit solve of the sign flow of width 1e-9 on `problem` (a
    quadratic from ones, its minimum reached at t = 1), checked: it names the Jacobian's
    spectral radius where it stopped against t0's, and the horizon to end before."""
    with pytest.raises(dynopt.SolveError) as info:
        dynopt.solve(flows.SignFlow(width=1e-9), problem, ts=[5.0], solver="tsit5", max_steps=2000)
    msg = str(info.value)
    assert "It reached t = 1.00000" in msg, msg
    radius = float(re.search(r"spectral radius ([0-9.e+-]+) \(at t0: ([0-9.e+-]+)\)", msg)[1])
    assert radius > 1e8, msg  # ~ λ_max / width = 3e9
    assert "End the horizon before t = 1," in msg and "-g/(|g| + eps)" in msg, msg
    return msg


def test_a_solve_stalled_by_a_nearly_discontinuous_field_says_so():
    """The sign flow of width 1e-9 reaches the minimum of a quadratic at t = 1 and then slides
    along a field that switches on a 1e-9 scale: an explicit solve spends its step budget
    there, and says so (`_stalled_sign_flow`); an implicit solve that fails is not told to go
    implicit."""
    p = problems.quadratic([1.0, 3.0])
    _stalled_sign_flow(p)
    # Whether Kvaerno5 gets past t = 1 at all depends on rounding (it stalls at t ≈ 0.947 with
    # XLA's optimizations, and finishes in 1,578 steps without them): 200 steps fail either way.
    with pytest.raises(dynopt.SolveError) as info:
        dynopt.solve(flows.SignFlow(width=1e-9), p, ts=[5.0], solver="implicit", max_steps=200)
    assert "solver='implicit'" not in str(info.value), str(info.value)


def test_a_large_state_stalled_by_a_nearly_discontinuous_field_says_so():
    """The same stall on a state above the dense Jacobian's 1,000 entries (a network's: there
    the radius comes from Jacobian-vector products). Before, such a failure named no cause at
    all: a user's optax.adamw on a digits MLP (its continuum -g/(|g| + eps) per coordinate,
    eps = 1e-8) spent 16,384 steps before t = 0.009 of 0.2 and was told to raise max_steps."""
    from dynopt._solve import _DENSE_HESSIAN_MAX_DIM

    d = _DENSE_HESSIAN_MAX_DIM + 200
    _stalled_sign_flow(problems.quadratic(np.linspace(1, 3, d), params0=np.ones(d), diagonal=True))


class _FieldOfWrongShape(flows.AbstractFlow):
    """θ' = -∇L with a slip: the first entry of each leaf only."""

    def init(self, params):
        return params

    def params(self, state):
        return state

    def vector_field(self, t, state, problem):
        return jax.tree.map(lambda g: -g[:1], problem.grad(state))

    def discretize(self, step_size):
        return dynopt.Discretization(optax.sgd, {"learning_rate": step_size}, dt=step_size)


class _FieldMissingALeaf(_FieldOfWrongShape):
    def vector_field(self, t, state, problem):
        return {"a": -problem.grad(state)["a"]}


class _ComplexField(_FieldOfWrongShape):
    def vector_field(self, t, state, problem):
        return jax.tree.map(lambda g: -g * (1 + 0j), problem.grad(state))


@pytest.mark.parametrize(
    "flow, match",
    [
        (
            _FieldOfWrongShape(),
            r"_FieldOfWrongShape\.vector_field returned shape \(1,\) at \['a'\], where the "
            r"state's leaf has shape \(3,\)",
        ),
        (_FieldMissingALeaf(), r"_FieldMissingALeaf\.vector_field .* lacks the leaves \['b'\]"),
        (_ComplexField(), r"_ComplexField\.vector_field returned dtype complex128 at \['a'\]"),
    ],
    ids=["shape", "structure", "dtype"],
)
def test_a_vector_field_unlike_the_state_is_refused_by_solve_and_compare(flow, match):
    """diffrax's ODETerm broadcasts a field leaf of the wrong shape silently: `solve` and
    `compare` returned numbers for an ODE the flow never wrote. Checked on shapes where the
    field is traced: a ValueError naming the flow's vector_field, the leaf and both shapes."""
    problem = problems.logcosh()  # params {'a': (3,), 'b': (2,)}
    with pytest.raises(ValueError, match=match):
        dynopt.solve(flow, problem, ts=[1.0])
    with pytest.raises(ValueError, match=match):
        dynopt.compare(flow, problem, [0.02, 0.01, 0.005], 1.0)


def test_a_solve_stuck_at_a_kink_of_the_gradient_says_the_gradient_is_not_smooth():
    """Gradient flow of |w0 - 1| (as a max, relu's primitive) reaches the kink at t = 1 and
    chatters there: the budget runs out and the advice to raise it, loosen rtol or go implicit
    would not help. The diagnosis names the non-smooth primitives and a smooth activation. A
    smooth loss that holds the same primitives (softplus: max, abs, select_n) stopped away
    from any kink keeps the usual advice."""
    kinked = dynopt.Problem(
        lambda w: jnp.maximum(1.0 - w[0], w[0] - 1.0) + 0.5 * w[1] ** 2, jnp.array([0.0, 1.0])
    )
    with pytest.raises(dynopt.SolveError) as info:
        dynopt.solve(flows.GradientFlow(), kinked, [3.0], max_steps=200)
    message = str(info.value)
    assert "the loss's gradient is not smooth" in message and "max" in message, message
    assert "smooth activation (tanh, gelu, softplus)" in message
    assert "raise max_steps" not in message
    smooth = dynopt.Problem(lambda w: jnp.sum(jax.nn.softplus(3.0 * w)), jnp.array([2.0, 1.0]))
    with pytest.raises(dynopt.SolveError) as info:
        dynopt.solve(flows.GradientFlow(), smooth, [3.0], max_steps=5)
    assert "not smooth" not in str(info.value) and "raise max_steps" in str(info.value)


def test_a_repeated_solve_returns_an_ordinary_trajectory():
    """`solve` assembles its `Trajectory` from the compiled program's outputs without
    `Trajectory.__init__`: the result is the one `__init__` builds from the same fields (tree
    structure, static fields, the caller's flow itself), every call a new object."""
    p = problems.quadratic([1.0, 3.0], rotate=True)
    for dense in (True, False):
        flow = flows.HeavyBall(1.0)
        trajs = [dynopt.solve(flow, p, [0.5, 1.0], solver="tsit5", dense=dense) for _ in range(2)]
        for traj in trajs:
            fields = {f: getattr(traj, f) for f in ("ts", "params", "loss", "diverged_at")}
            built = dynopt.Trajectory(
                **fields,
                interpolation=traj.interpolation,
                flow=flow,
                solver="tsit5",
                stats=traj.stats,
            )
            assert jax.tree.structure(traj) == jax.tree.structure(built)
            assert traj.flow is flow and traj.solver == "tsit5" and traj.ts_unit == "time"
            assert traj.steps is None and traj.observations is None
            assert set(traj.stats) == set(built.stats) and "max_steps" not in traj.stats
        assert trajs[0] is not trajs[1]
        for x, y in zip(jax.tree.leaves(trajs[0]), jax.tree.leaves(trajs[1])):
            np.testing.assert_array_equal(x, y)
        if dense:
            np.testing.assert_array_equal(trajs[1].evaluate(1.0), trajs[1].params[-1])


def test_a_failed_solves_diagnosis_compiles_no_solve_anew(monkeypatch):
    """The failure path compiled the solve again at every failure (a `filter_jit` of a new
    lambda each time: 0.5 s a failure at d = 3, 7.5 s in one case). Now a dense solve's
    failure is diagnosed from its own outputs (no second program), a solve without dense
    output compiles the solve-with-its-stopping-state once per program, and compare's
    diagnosis reads where its reference stopped off the comparison's own outputs (it compiled
    a third solve for it): the same diagnosis every way."""
    from dynopt import _compare, _solve

    traces = []  # each trace of a reference solve, i.e. each program compiled
    dense_solve = _solve.dense_solve
    monkeypatch.setattr(
        _solve, "dense_solve", lambda *a, **k: traces.append(1) or dense_solve(*a, **k)
    )
    p = dynopt.Problem(lambda x: jnp.sum(x**4) + 0.5 * jnp.sum(x**2), jnp.array([1.0, 2.0, 3.0]))
    messages = set()
    for dense in (True, False):
        for _ in range(2):
            with pytest.raises(dynopt.SolveError, match="max_steps_reached") as info:
                dynopt.solve(
                    flows.GradientFlow(), p, [1.0], solver="tsit5", max_steps=9, dense=dense
                )
            messages.add(str(info.value))
    assert len(traces) == 3, traces  # dense: its run; without: its run and the full solve
    (message,) = messages
    diagnosis = "It reached t = " + message.split("It reached t = ")[1].split(" To fix")[0]
    traces.clear()
    monkeypatch.setattr(_compare, "dense_solve", _solve.dense_solve)
    monkeypatch.setattr(_solve, "_COMPILED", {})  # (solve's programs: none to reuse)
    for _ in range(2):
        with pytest.raises(dynopt.SolveError, match="max_steps_reached") as info:
            dynopt.compare(
                flows.GradientFlow(), p, [0.1, 0.05, 0.025], 1.0, solver="tsit5", max_steps=9
            )
        assert diagnosis in str(info.value), (diagnosis, str(info.value))
    assert len(traces) == 1, traces  # the comparison


def test_a_repeated_failures_jump_probe_compiles_nothing_anew():
    """The diagnosis of a switching field (`_field_jump`) and of a kinked gradient
    (`_kinked_gradient`) probes the function on both sides of the stopping point (`_jump`): a
    `jax.jit` of a new closure at every failure traced and compiled it again. Now one jitted
    function takes the field or gradient as a pytree: a failure of another flow and problem of
    the same structure, stopped elsewhere, compiles nothing."""
    from dynopt import _solve

    sign = lambda x: 0.5 * jnp.sum(x**2 * jnp.array([1.0, 3.0]))
    kinked = lambda w: jnp.maximum(1.0 - w[0], w[0] - 1.0) + 0.5 * w[1] ** 2
    for probe, flow, loss, starts, kink in (
        (_solve._field_jump, flows.SignFlow(0.0), sign, ([0.5, 2.0], [0.25, 1.0]), 0.0),
        (_solve._kinked_gradient, flows.GradientFlow(), kinked, ([0.0, 1.0], [-0.5, 2.0]), 1.0),
    ):
        for i, x0 in enumerate(starts):
            # just past the kink, where a stalled solve stops: x_0 = 0 of the sign flow's
            # quadratic, w_0 = 1 of |w_0 - 1|
            at = jnp.asarray(x0).at[0].set(kink + 1e-13)
            problem = dynopt.Problem(loss, jnp.asarray(x0))
            calls, found = count_backend_compiles(probe, flow, problem, 0.5 + 0.25 * i, at)
            assert found is not None, probe
            if i:
                assert calls == 0, (probe, calls)
