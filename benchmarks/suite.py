"""Benchmark 5: the experiment suite. Wall time and compile time of every registered experiment
(`experiments.EXPERIMENTS`), quick and/or full mode, each in a fresh Python process so that no
compiled program is shared between them (process start-up and imports are excluded), with JAX's
persistent compilation cache off (a cold run: what a first `make run` pays).

Compile time is what JAX's monitoring events report (tracing, lowering to MLIR, XLA compilation),
summed over the run. There is no baseline to divide by: the row's target is the 30 s budget of a
quick mode (tests/test_experiments.py) and no target for full modes. Each experiment runs alone
(one at a time, nothing else from this command running beside it): issue 17's goal is the 30 s
on a *loaded* 2-core machine, and these rows do not load the machine themselves; each note gives
the load average (other processes) when the experiment started. An experiment that fails or
times out is a row with `met` False.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ._common import child_env, Config, load_average, row


CHILD = """
import json, sys, time
from benchmarks._common import exit_with_parent
exit_with_parent()  # (the benchmark killed outright: this run ends with it)
import jax
compile_s = [0.0]
EVENTS = {
    "/jax/core/compile/backend_compile_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/jaxpr_trace_duration",
}
def listen(event, duration, **kwargs):
    if event in EVENTS:
        compile_s[0] += duration
jax.monitoring.register_event_duration_secs_listener(listen)
from experiments import run_experiment
name, quick, out = sys.argv[1], sys.argv[2] == "quick", sys.argv[3]
start = time.perf_counter()
run_experiment(name, quick=quick, out=out)
wall = time.perf_counter() - start
print(json.dumps({"wall_s": wall, "compile_s": compile_s[0]}))
"""
QUICK_BUDGET_S = 30.0
TINY_EXPERIMENT = "nesterov"


def _modes(config: Config) -> list[str]:
    return {"quick": ["quick"], "full": ["full"], "both": ["quick", "full"], "none": []}[
        config.experiments
    ]


TIMEOUT_S = 1800.0


def time_experiment(name: str, mode: str, timeout: float = TIMEOUT_S) -> dict:
    """`{"wall_s", "compile_s"}` of one experiment run in a fresh process, or `{"error": why}`
    (it failed, printed no result, or ran past `timeout` seconds)."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, name, mode, str(Path(tmp) / name)],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=child_env(),
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": "printed no result"}


def run(config: Config, names: list[str] | None = None) -> list[dict]:
    from experiments import EXPERIMENTS

    if names is None:
        # `--tiny` tests the code: one experiment (the quickest) shows the suite's machinery
        # works; all twelve without a compile cache took 38 min on a loaded machine
        names = [TINY_EXPERIMENT] if config.tiny else sorted(EXPERIMENTS)
    rows = []
    for mode in _modes(config):
        for name in names:
            print(f"  experiment suite: {name} ({mode})", flush=True)
            load = load_average()
            m = time_experiment(name, mode)
            quick = mode == "quick"
            budget = dict(
                baseline="quick-mode budget (run alone)" if quick else "—",
                baseline_s=QUICK_BUDGET_S if quick else None,
                target=1.0 if quick else None,
            )
            if "error" in m:
                rows.append(
                    row(
                        "experiment suite",
                        f"{name} ({mode}), alone",
                        dynopt_s=None,
                        note=f"failed: {m['error']}",
                        failed=True,
                        mode=mode,
                        **budget,
                    )
                )
                continue
            rows.append(
                row(
                    "experiment suite",
                    f"{name} ({mode}), alone",
                    dynopt_s=m["wall_s"],
                    note=f"compile {m['compile_s']:.1f} s of {m['wall_s']:.1f} s wall"
                    + ("; ratio = budget / wall" if quick else "")
                    + f"; run alone, load average {load[0] if load else '?'} at its start",
                    compile_s=m["compile_s"],
                    mode=mode,
                    load_average_start=load,
                    **budget,
                )
            )
    return rows
