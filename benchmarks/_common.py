"""Shared timing, row and report helpers for `python -m benchmarks`.

Every row times dynopt and the baseline a user would otherwise write, side by side in the same
process: the first call (trace + compile + one run) is timed on its own, then further calls of
the two *alternate* (`alternating`, `paired`), so that the speed drift of a shared machine hits
both sides alike; compile time is the first call minus a later one.
"""

import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class Config:
    """`tiny`: toy sizes and one repeat (tests); `repeats`: timed calls per median;
    `experiments`: which experiment modes to time (`quick`, `full`, `both`, `none`)."""

    tiny: bool = False
    repeats: int = 5
    experiments: str = "quick"


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a benchmark's child process: this one's, with JAX's persistent
    compilation cache off (compile times are part of what the rows report) and `extra`."""
    return {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false", **extra}


def exit_with_parent(poll_s: float = 0.5) -> None:
    """In a benchmark's child process: end it at once (exit status 1) when the process that
    started it is gone (`python -m benchmarks` killed outright, `kill -9`: nothing passes the
    kill on), instead of timing on alone for up to half an hour on a machine already short of
    cores. A daemon thread polls the parent's pid."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def block(x: Any) -> Any:
    return jax.block_until_ready(x)


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, float]:
    """`(first_call_s, median_s)`: the first call alone, then the median of `repeats` calls
    after `warmup - 1` further untimed calls."""
    start = time.perf_counter()
    block(fn())
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        block(fn())
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def row(
    benchmark: str,
    case: str,
    *,
    dynopt_s: float | None,
    baseline: str,
    baseline_s: float | None,
    ratio: float | None = None,
    target: float | None = None,
    higher_is_better: bool = True,
    note: str = "",
    failed: bool = False,
    **extra: Any,
) -> dict:
    """One measurement. `ratio` defaults to baseline_s / dynopt_s (> 1: dynopt is faster);
    `met` compares it with `target` (>= when `higher_is_better`, else <=); `failed` (the
    measurement or the benchmarked run failed) makes `met` False whatever the ratio."""
    if ratio is None and dynopt_s and baseline_s:
        ratio = baseline_s / dynopt_s
    met = None
    if target is not None and ratio is not None:
        met = bool(ratio >= target) if higher_is_better else bool(ratio <= target)
    if failed:
        met = False
    return {
        "benchmark": benchmark,
        "case": case,
        "dynopt_s": dynopt_s,
        "baseline": baseline,
        "baseline_s": baseline_s,
        "ratio": ratio,
        "target": target,
        "target_is": ">=" if higher_is_better else "<=",
        "met": met,
        "note": note,
        **extra,
    }


def cost_row(
    benchmark: str,
    case: str,
    *,
    dynopt_s: float,
    baseline: str,
    baseline_s: float,
    target: float | None = None,
    ratio: float | None = None,
    note: str = "",
    **extra: Any,
) -> dict:
    """A cost row: dynopt's time as a multiple of the baseline's (`ratio` defaults to
    dynopt_s / baseline_s; met when <= `target`)."""
    return row(
        benchmark,
        case,
        dynopt_s=dynopt_s,
        baseline=baseline,
        baseline_s=baseline_s,
        ratio=dynopt_s / baseline_s if ratio is None else ratio,
        target=target,
        higher_is_better=False,
        note=note,
        **extra,
    )


@dataclasses.dataclass
class Timing:
    """One callable's timings from `alternating`: `first` (the first call: trace, compile and one
    run), `samples` (the later calls), `result` (the last call's output)."""

    first: float
    samples: list[float]
    result: Any = None

    @property
    def median(self) -> float:
        return float(statistics.median(self.samples))

    @property
    def best(self) -> float:
        return float(min(self.samples))


def alternating(
    fns: list[Callable[[], Any]],
    repeats: int,
    min_total_s: float = 0.5,
    *,
    clock: Callable[[], float] = time.perf_counter,
    max_rounds: int = 200,
) -> list[Timing]:
    """Time the callables `fns` in alternation (a, b, then b, a, ...) after one first call each:
    at least `repeats` rounds, and more until every callable's samples add up to `min_total_s`
    (at most `max_rounds`). The VM's speed drifts by 10-30% over seconds, and a ratio of two
    medians taken seconds apart carries that drift (Rosenbrock d = 100 read 0.76x and 1.01x in
    two runs that way; alternating, 1.06-1.10x in three); a call of a few ms varies by 2x from
    call to call, and five samples give a median that moves as much."""
    out = []
    for fn in fns:
        start = clock()
        result = block(fn())
        out.append(Timing(clock() - start, [], result))
    rounds = 0
    while rounds < max(repeats, 1) or (
        min(sum(t.samples) for t in out) < min_total_s and rounds < max_rounds
    ):
        pairs = list(zip(out, fns))
        # Each round in the other order (a, b, b, a, ...): a callable timed right after another
        # (caches, clock boost, the VM's drift within a round) is not always the same one.
        for entry, fn in pairs if rounds % 2 == 0 else reversed(pairs):
            start = clock()
            entry.result = block(fn())
            entry.samples.append(clock() - start)
        rounds += 1
    return out


def paired(
    baseline: Callable[[], Any],
    candidate: Callable[[], Any],
    repeats: int,
    min_pairs: int = 11,
):
    """`(baseline_s, candidate_s, ratio)`: CPU seconds of the two calls timed alternately (after
    one warm call each; at least `max(repeats, min_pairs)` pairs), their minima, and the median
    over pairs of candidate/baseline. On a shared VM the speed drifts by ±30% over seconds; a
    ratio of back-to-back calls does not see the drift that a baseline timed once, apart from
    the candidates, does. CPU time counts every thread of this process (XLA's too), not other
    processes' load."""
    block(baseline())
    block(candidate())
    pairs = []
    for _ in range(max(repeats, min_pairs)):
        times = []
        for fn in (baseline, candidate):
            start = time.process_time()
            block(fn())
            times.append(time.process_time() - start)
        pairs.append(times)
    a, b = zip(*pairs)
    return min(a), min(b), statistics.median(y / x for x, y in pairs)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict:
    dev = jax.devices()[0]
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "load_average_start": load_average(),
    }


def versions() -> dict:
    from experiments._io import package_versions

    out = package_versions()
    try:
        import scipy

        out["scipy"] = scipy.__version__
    except ImportError:
        out["scipy"] = "not installed"
    return out


def fmt_time(s: float | None) -> str:
    if s is None:
        return "—"
    if s >= 1.0:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


def markdown(report: dict) -> str:
    m = report["machine"]
    v = report["versions"]
    lines = []
    if report.get("complete") is False:
        done, planned = report.get("ran", []), report.get("planned", [])
        ran = ", ".join(done) or "none"
        lines += [
            f"**PARTIAL: ran {len(done)} of {len(planned)} benchmarks** ({ran}; planned: "
            f"{', '.join(planned)}): the run stopped or is still going.",
            "",
        ]
    # `--tiny` times toy sizes to test the code: its ratios judge no target.
    tiny = bool(report.get("config", {}).get("tiny"))
    if tiny:
        lines += [
            "**TINY: toy sizes (`--tiny`), a smoke test of the code, not a measurement**: the "
            "times and ratios below say nothing of dynopt's speed, and no target is judged "
            "(run `make bench` for the report).",
            "",
        ]
    lines += [
        f"Measured on {m['cpu']} ({m['cpu_count']} cores, {m['memory_gib']} GiB), "
        f"{m['platform']} ×{m['device_count']}, load average {m.get('load_average_start')} at "
        f"start / {m.get('load_average_end')} at end; jax {v.get('jax')}, optax {v.get('optax')}, "
        f"diffrax {v.get('diffrax')}, scipy {v.get('scipy')}.",
        "",
        "| benchmark | case | dynopt | baseline | baseline time | ratio | target | met | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.3g}"
        target = "—" if r["target"] is None else f"{r['target_is']} {r['target']:g}"
        met = "—" if tiny else {True: "yes", False: "**no**", None: "—"}[r["met"]]
        cells = [
            r["benchmark"],
            r["case"],
            fmt_time(r["dynopt_s"]),
            r["baseline"],
            fmt_time(r["baseline_s"]),
            ratio,
            target,
            met,
            r["note"],
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write(report: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write bench.json and bench.md into `out_dir`, each atomically with its stamp
    (`experiments._stamp.write_stamped`: a temporary file of a unique name in the same folder,
    then `os.replace`; a reader sees the old report or the new one, two writers never share a
    temporary file, and `clean` tells the report from a user's copy or edit of it)."""
    from experiments._stamp import PLACEHOLDER, write_stamped

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / "bench.json", out_dir / "bench.md"
    stamped = {"written_by": PLACEHOLDER, **report}
    write_stamped(js, json.dumps(stamped, indent=2, default=float))
    write_stamped(md, f"{markdown(report)}\n<!-- {PLACEHOLDER} -->\n")
    return js, md
