"""The benchmark code (not its timings): the report schema, the ratio/target logic, the command
line's refusals, and the equivalences the rows rely on (what is timed computes the same numbers
as its baseline)."""

import json
import os
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate

import dynopt
import experiments
from benchmarks import central, solver, suite, transform_overhead
from benchmarks.__main__ import main
from benchmarks._common import alternating, Config, markdown, row, write
from dynopt.correspondences import REGISTRY

from .helpers import optimized_compilation


REQUIRED = {"benchmark", "case", "dynopt_s", "baseline", "baseline_s", "ratio", "target", "met"}


def test_bench_cli_writes_json_and_markdown(tmp_path, capsys):
    with jax.numpy_dtype_promotion("standard"):  # an entry point, like `make bench`
        assert (
            main(["--tiny", "--repeats", "1", "--only", "bandwidth", "--out", str(tmp_path)]) == 0
        )
    report = json.loads((tmp_path / "bench.json").read_text())
    assert {"machine", "versions", "rows"} <= set(report)
    assert report["machine"]["cpu_count"] >= 1 and "jax" in report["versions"]
    assert report["complete"] is True and report["ran"] == report["planned"] == ["bandwidth"]
    assert len(report["rows"]) == 4  # momentum and Adam, dynopt's and optax's
    for r in report["rows"]:
        assert REQUIRED <= set(r), REQUIRED - set(r)
        assert r["dynopt_s"] > 0 and r["baseline_s"] > 0 and 0 < r["ratio"]
        # above the x + y ceiling is a failed measurement, never "met"
        assert r["met"] == (r["target"] <= r["ratio"] <= 1.0)
    md = (tmp_path / "bench.md").read_text()
    assert md.count("\n| bandwidth |") == 4 and "| benchmark | case |" in md
    assert "PARTIAL" not in md
    assert "| bandwidth |" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "bench.md"]
    with jax.numpy_dtype_promotion("standard"):  # its own report is replaced
        assert (
            main(["--tiny", "--repeats", "1", "--only", "bandwidth", "--out", str(tmp_path)]) == 0
        )


def test_bench_cli_refuses_a_users_report_files_before_any_work(tmp_path, capsys):
    """`--out` may hold only this command's own bench.json and bench.md: a user's file of that
    name (or an `--out` that is a file) stops it before any benchmark runs, untouched."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "bench.md").write_text("my notes")
    (tmp_path / "file").write_text("mine")
    cases = (
        (mine, "bench.md that is not"),
        (tmp_path / "file", "is a file"),
        (Path("/proc/bench"), "cannot write under /proc"),  # refused only at the end before
    )
    for out, match in cases:
        with pytest.raises(SystemExit) as info:
            main(["--tiny", "--only", "bandwidth", "--out", str(out)])
        assert info.value.code == 2
        assert match in capsys.readouterr().err
    assert (mine / "bench.md").read_text() == "my notes"
    assert sorted(p.name for p in mine.iterdir()) == ["bench.md"]


@pytest.mark.parametrize(
    "args, match",
    [
        (["--only", ","], "names no benchmark"),
        (["--only", ""], "names no benchmark"),
        (["--only", "nope"], "unknown benchmarks"),
        (["--repeats", "0"], "--repeats must be at least 1"),
    ],
)
def test_bench_cli_refuses_bad_arguments_before_writing(tmp_path, capsys, args, match):
    """A bad `--only` or `--repeats` stops the command before any work: an existing report in
    `--out` stays as it was (an empty `--only` used to overwrite it, then crash)."""
    report = {"machine": _MACHINE, "versions": {}, "config": {}, "rows": [_ROW]}
    write(report, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(SystemExit) as info:
        main(["--tiny", "--out", str(tmp_path), *args])
    assert info.value.code == 2
    assert match in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_bench_cli_help_names_out_and_its_default(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--out" in text and "(default: results/bench)" in text
    assert "--repeats" in text and "timed calls of each side per figure" in text


_MACHINE = {"cpu": "x", "cpu_count": 2, "memory_gib": 1, "platform": "cpu", "device_count": 1}
_ROW = row("b", "c", dynopt_s=1.0, baseline="x", baseline_s=2.0, target=1.0)


def test_a_report_is_partial_until_its_last_benchmark(tmp_path):
    report = {
        "machine": _MACHINE,
        "versions": {},
        "config": {},
        "complete": False,
        "planned": ["sweep", "central"],
        "ran": ["sweep"],
        "rows": [_ROW],
    }
    js, md = write(report, tmp_path)
    assert json.loads(js.read_text())["complete"] is False
    assert "PARTIAL: ran 1 of 2 benchmarks" in md.read_text()
    write(report | {"complete": True, "ran": ["sweep", "central"]}, tmp_path)
    assert "PARTIAL" not in md.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "bench.md"]


def test_write_goes_through_a_unique_temporary_file(tmp_path, monkeypatch):
    """A failed write leaves the previous report and no temporary file behind; the temporary
    file is a fresh one in the same folder (two writers never share one)."""
    write({"machine": _MACHINE, "versions": {}, "config": {}, "rows": [_ROW]}, tmp_path)
    before = (tmp_path / "bench.json").read_bytes()
    seen = []

    def failing_replace(src, dst):
        seen.append(Path(src))
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        write({"machine": _MACHINE, "versions": {}, "config": {}, "rows": []}, tmp_path)
    assert seen and seen[0].parent == tmp_path and seen[0].name.startswith(".bench.json.")
    assert seen[0].name != ".bench.json.tmp"
    assert (tmp_path / "bench.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "bench.md"]


def test_alternating_interleaves_and_fills_the_sample_time():
    """`alternating` calls a, b, then b, a, ... (each round in the other order): at least
    `repeats` rounds, more until every callable has `min_total_s` of samples (a fake clock: one
    unit a call of a, two of b)."""
    order, now = [], [0.0]

    def make(name, cost):
        def fn():
            order.append(name)
            now[0] += cost
            return name

        return fn

    a, b = alternating([make("a", 1.0), make("b", 2.0)], 2, 5.0, clock=lambda: now[0])
    # first calls, then 5 rounds (a needs 5 units), every other one in reverse
    assert order == ["a", "b"] + ["a", "b", "b", "a"] * 2 + ["a", "b"]
    assert a.first == 1.0 and a.samples == [1.0] * 5 and b.median == 2.0 and b.result == "b"


def test_suite_failures_and_timeouts_are_misses(monkeypatch):
    """A failed or timed-out experiment is a row with `met` False ("no"), and every experiment
    runs with the persistent compilation cache off."""
    envs = []

    def timeout(args, **kwargs):
        envs.append(kwargs["env"])
        raise subprocess.TimeoutExpired(args, kwargs["timeout"])

    def failing(args, **kwargs):
        envs.append(kwargs["env"])
        return subprocess.CompletedProcess(args, 1, "", "Traceback\nValueError: boom\n")

    for fake, why in ((timeout, "timed out after"), (failing, "ValueError: boom")):
        monkeypatch.setattr(suite.subprocess, "run", fake)
        (r,) = suite.run(Config(experiments="quick"), names=["gd_flow"])
        assert r["met"] is False and why in r["note"] and r["target"] == 1.0
        assert "| **no** |" in markdown({"machine": _MACHINE, "versions": {}, "rows": [r]})
    assert all(env["JAX_ENABLE_COMPILATION_CACHE"] == "false" for env in envs)


def test_row_ratio_and_target_logic():
    r = row("b", "c", dynopt_s=1.0, baseline="x", baseline_s=4.0, target=3.0)
    assert r["ratio"] == 4.0 and r["met"] is True
    r = row(
        "b",
        "c",
        dynopt_s=1.1,
        baseline="x",
        baseline_s=1.0,
        ratio=1.1,
        target=1.05,
        higher_is_better=False,
    )
    assert r["met"] is False and r["target_is"] == "<="
    r = row("b", "c", dynopt_s=None, baseline="—", baseline_s=None, note="failed")
    assert r["ratio"] is None and r["met"] is None
    text = markdown(
        {
            "machine": {
                "cpu": "x",
                "cpu_count": 2,
                "memory_gib": 1,
                "platform": "cpu",
                "device_count": 1,
            },
            "versions": {},
            "rows": [r],
        }
    )
    assert "| b | c | — | — | — | — | — | — | failed |" in text
    r = row("b", "c", dynopt_s=1.0, baseline="x", baseline_s=2.0, target=0.5, failed=True)
    assert r["ratio"] == 2.0 and r["met"] is False


def test_pairs_read_the_registry():
    names = {p.label.split(" ")[0] for p in transform_overhead.PAIRS if p.identical}
    assert names == {r.name for r in REGISTRY if r.baseline is not None}


@pytest.mark.parametrize(
    "pair", [p for p in transform_overhead.PAIRS if p.identical], ids=lambda p: p.label.split()[0]
)
def test_transform_pairs_equal_their_optax_transform(pair):
    """`check` (the benchmark's equivalence step, no timing loop) raises unless dynopt's
    discretization and the optax baseline give the same iterates (float32, 1000 steps from the
    same start); traced hyper-parameters compile to as many fused kernels per update as optax's
    constants."""
    with jax.numpy_dtype_promotion("standard"):
        m = transform_overhead.check(pair, 1000)
    assert m["max_abs_diff"] <= 1e-5 and m["checked_steps"] == 1000
    assert m["kernels"][0] == m["kernels"][1] > 0


def test_solver_bare_solve_is_the_timed_solve():
    """The solver rows' f-evals and bare-solve floor come from the solve `dynopt.solve` runs:
    the bare unit-time `diffeqsolve` takes the same steps and gives the same numbers, and its
    evaluations are 1 + (6 for Tsit5, 13 for Dopri8) × steps. scipy's tolerance is matched to
    within 10% of dynopt's error."""
    name, problem, t1, rhs, _, _ = solver._cases(True)[0]
    assert name.startswith("Rosenbrock")
    x0, _, grad = solver._flat(problem)
    for method, per_step in (("tsit5", 6), ("dopri8", 13)):
        with jax.numpy_dtype_promotion("standard"):
            traj = dynopt.solve(
                dynopt.flows.GradientFlow(),
                problem,
                [t1],
                solver=method,
                rtol=solver.RTOL,
                atol=solver.ATOL,
                max_steps=solver.MAX_STEPS,
                dense=False,
            )
            count, steps = solver._count_fevals(grad, x0, t1, solver._SOLVERS[method]())
            ys, bare_steps = solver._unit_time_solve(grad, t1, solver._SOLVERS[method]())(
                jnp.asarray(x0)
            )
        assert steps == int(bare_steps) == int(traj.stats["num_steps"])
        assert count == 1 + per_step * steps
        final = jax.flatten_util.ravel_pytree(traj.params)[0]
        np.testing.assert_allclose(np.asarray(ys)[-1], np.asarray(final), rtol=1e-12, atol=1e-14)
    ref = scipy.integrate.solve_ivp(rhs, (0.0, t1), x0, method="DOP853", rtol=1e-13, atol=1e-15).y[
        :, -1
    ]
    target = 1e-7
    _, _, err, _ = solver._match_scipy(rhs, t1, x0, ref, target)
    assert abs(err / target - 1.0) <= 0.1


def test_central_gd_baseline_is_a_plain_scan():
    """The central rows' unit, `_gd_steps` (`run` with `every=N`), gives the iterates of a
    hand-written jitted `lax.scan` of the optax update, bit for bit."""
    problem = central._problem(True)
    tx = optax.sgd(central.ETA)

    @jax.jit
    def scan(p0):
        def body(p, _):
            u, _ = tx.update(problem.grad(p), tx.init(p), p)
            return optax.apply_updates(p, u), None

        return jax.lax.scan(body, p0, None, length=20)[0]

    with jax.numpy_dtype_promotion("standard"), optimized_compilation():
        ours = central._gd_steps(problem, central.ETA, 20)()
        theirs = scan(problem.params0)
    for x, y in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_tiny_suite_times_one_experiment(monkeypatch):
    """`--tiny` is a smoke test of the code: its suite ran all twelve quick experiments in
    fresh processes without a compile cache (38 min on a loaded 2-core machine)."""
    names = []

    def fake(args, **kwargs):
        names.append(args[3])
        return subprocess.CompletedProcess(args, 0, '{"wall_s": 1.0, "compile_s": 0.5}\n', "")

    monkeypatch.setattr(suite.subprocess, "run", fake)
    rows = suite.run(Config(tiny=True, experiments="quick"))
    assert names == [suite.TINY_EXPERIMENT] and len(rows) == 1
    names.clear()
    suite.run(Config(tiny=False, experiments="quick"))
    assert len(names) == len(experiments.EXPERIMENTS)
