"""`make bench` = `python -m benchmarks`: writes results/bench/bench.json and bench.md and prints
the table.

    python -m benchmarks [--only transform,sweep,solver,bandwidth,suite,modified,central]
                         [--repeats N] [--experiments quick|full|both|none] [--tiny] [--out DIR]

Every row is a ratio against what a user would otherwise run, measured side by side in this
process: calls of dynopt and of the baseline alternate after a first (compiling) call, `--repeats`
of each and more where a benchmark needs them (11 back-to-back pairs for CPU-time ratios, enough
calls to fill 0.5 s of samples), fewer only for the slowest calls (`--help` says which); compile
time is reported apart. `--tiny` shrinks every size and the experiment suite to one experiment
(a smoke test of the code, not a measurement).
The whole default run took 15 min 56 s wall (819 s of CPU) on 2 CPU cores under a load average of
1.4-4.4, this run included (2026-12-06; docs/performance.md); `--experiments both` adds every
experiment's full mode. The persistent compilation cache is off in this command and its children
(compile times are part of what it reports). The report is rewritten after each benchmark and
marked partial (`"complete": false`, a PARTIAL line in bench.md) until the last one is done;
a bench.json or bench.md of someone else's that appeared in `--out` meanwhile is not overwritten:
the report goes to a new folder beside it, named in an `error:` line (exit status 1). Ctrl-C,
SIGTERM and SIGHUP stop the run and its child process (one line, exit status 128 + the signal's
number); a child outlives no `kill -9` of this command either (`_common.exit_with_parent`). On a
GPU machine the same command runs there unchanged (rows record the device).
"""

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path


BENCHMARKS = {
    "transform": "benchmarks.transform_overhead",
    "sweep": "benchmarks.sweep",
    "solver": "benchmarks.solver",
    "bandwidth": "benchmarks.bandwidth",
    "suite": "benchmarks.suite",
    "modified": "benchmarks.modified",
    "central": "benchmarks.central",
}


# How a report this command wrote is recognised: the keys of bench.json, the table's header,
# and the stamp of the file it wrote (`experiments._stamp`: a copy or an edit is the user's).
_JSON_KEYS = {"machine", "versions", "config", "rows", "written_by"}
_MD_HEADER = "| benchmark | case | dynopt | baseline |"


def is_report(path: Path) -> bool:
    """Whether the file `path` is a bench.json or bench.md this command wrote, unchanged."""
    from experiments._stamp import is_stamped

    if path.name not in ("bench.json", "bench.md") or not is_stamped(path):
        return False
    try:
        text = path.read_text(errors="replace")
        if path.suffix == ".json":
            data = json.loads(text)
            return isinstance(data, dict) and _JSON_KEYS <= set(data)
        return _MD_HEADER in text
    except (OSError, ValueError):
        return False


def check_out(out: Path) -> str | None:
    """`None` if the report may be written to `out`, else why not (one line): `out` must be a
    folder (or not exist yet) whose bench.json and bench.md, where present, this command
    wrote."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a folder; choose another path."
    for name in ("bench.json", "bench.md"):
        if (out / name).exists() and not is_report(out / name):
            return (
                f"--out {out} holds a {name} that is not a dynopt benchmark report as this "
                "command wrote it (a copy, an edited report, or one from a dynopt before "
                "2026-12-06, which stamped none); choose another folder (nothing was run)."
            )
    # A real write where the reports will go (or the nearest folder that exists above it):
    # `os.access` says yes to root, and a folder such as /proc refuses anyway.
    where = out
    while not where.exists():
        where = where.parent
    if not where.is_dir():
        return f"--out {out}: {where} is a file, not a folder; choose another path."
    from experiments._io import is_result

    if is_result(where):  # (the report would be a file of the user's in it: its run refuses it)
        inside = "" if where == out else f"inside {where}, "
        return (
            f"--out {out} is {inside}a dynopt experiment result; choose a folder of its own, "
            "e.g. --out results/bench (nothing was run)."
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".bench-write-test-", dir=where))
    except OSError as e:
        return f"--out {out}: cannot write under {where} ({e.strerror or e}); nothing was run."
    return None


def _not_ours(out: Path) -> str | None:
    """What in `out` a report must not be written over (`out` a file; a bench.json or bench.md
    this command did not write), said as "OUT is a file" / "OUT/bench.md exists"; None if
    nothing. Checked again before each write: a run takes minutes, the folder may change."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file"
    for name in ("bench.json", "bench.md"):
        if os.path.lexists(out / name) and not is_report(out / name):
            return f"{out / name} exists"
    return None


def _new_folder_beside(out: Path) -> Path:
    """A new, empty folder `OUT.dynopt-DATE-TIME[-N]` beside `out`, made here."""
    out = out.absolute()  # (`--out .` has no name to add to)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1, 1000):
        folder = out.with_name(f"{out.name}.dynopt-{stamp}" + (f"-{i}" if i > 1 else ""))
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        return folder
    raise OSError(f"could not make a new folder beside {out}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help="comma-separated subset of " + ",".join(BENCHMARKS) + " (default: all)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed calls of each side per figure, >= 1 (default: %(default)s); most figures "
        "take more where they need them (11+ back-to-back pairs for CPU-time ratios, calls until "
        "each side has 0.5 s of samples); the slowest take fewer: the sweep's Python-loop (b) "
        "baseline N//2, its logistic-regression d=1000 rows min(N, 3), the central-flow rows 3 "
        "rounds whatever N",
    )
    parser.add_argument(
        "--experiments",
        choices=["quick", "full", "both", "none"],
        default="quick",
        help="which experiment modes the suite benchmark times (default: %(default)s)",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="toy sizes, one experiment in the suite (tests the code only)",
    )
    parser.add_argument(
        "--out",
        default="results/bench",
        help="folder for bench.json and bench.md (default: %(default)s); a bench.json or "
        "bench.md there that this command did not write is never overwritten",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if not names:
        parser.error(f"--only names no benchmark; choose from {','.join(BENCHMARKS)}")
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; choose from {sorted(BENCHMARKS)}")
    names = list(dict.fromkeys(names))  # each once, in the order given
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if not args.out.strip():  # (`--out "$DIR"` with DIR unset: not the working folder)
        parser.error("--out is empty; give a folder for bench.json and bench.md")
    # "~/x" quoted past the shell reads as the experiments' --out does, not as a folder "~".
    args.out = Path(args.out).expanduser()
    if (why := check_out(args.out)) is not None:  # before any work
        parser.error(why)

    import jax

    jax.config.update("jax_enable_x64", True)  # an entry point: references run in float64
    from experiments.__main__ import _stop_signals, _stop_status, _stopped

    from ._common import Config, machine, markdown, versions

    config = Config(tiny=args.tiny, repeats=args.repeats, experiments=args.experiments)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    report = {
        "machine": machine(),
        "versions": versions(),
        "config": settings,
        "complete": False,  # until the last benchmark is done
        "planned": names,
        "ran": [],
        "seconds": {},
        "total_s": 0.0,
        "rows": [],
    }
    start, out, stopped = time.perf_counter(), args.out, []
    # SIGTERM and SIGHUP stop the run as Ctrl-C does: the benchmark's child process (an
    # experiment of the suite, the sweep on host devices) killed with it, not left running.
    with _stop_signals(stopped):
        try:
            for name in names:
                out = _bench(name, config, report, out, start, len(names))
        except KeyboardInterrupt:
            ran = ", ".join(report["ran"]) or "none"
            kept = f"; their report, marked partial: {out}" if report["ran"] else ""
            print(f"{_stopped(stopped)}; benchmarks finished: {ran}{kept}", file=sys.stderr)
            return _stop_status(stopped)
    js, md = out / "bench.json", out / "bench.md"
    print()
    print(markdown(report))
    print(f"[bench] {len(report['rows'])} rows in {report['total_s']:.0f} s: {js}, {md}")
    return 0 if out == args.out else 1


def _bench(name: str, config, report: dict, out: Path, start: float, planned: int) -> Path:
    """Run the benchmark `name`, add its rows to `report` and write the report (so far) to
    `out`, or to a new folder beside it where a file of someone else's is in the way now (an
    `error:` line says so): the folder written."""
    from ._common import load_average, write

    t0 = time.perf_counter()
    print(f"[bench] {name} ...", flush=True)
    rows = importlib.import_module(BENCHMARKS[name]).run(config)
    device = report["machine"]["platform"]
    report["rows"] += [r | {"device": device} for r in rows]
    report["ran"].append(name)
    report["seconds"][name] = time.perf_counter() - t0
    print(f"[bench] {name}: {len(rows)} rows in {time.perf_counter() - t0:.1f} s", flush=True)
    report["machine"]["load_average_end"] = load_average()
    report["total_s"] = time.perf_counter() - start
    report["complete"] = len(report["ran"]) == planned
    if (clash := _not_ours(out)) is not None:  # (put there while the run went on)
        beside = _new_folder_beside(out)
        print(
            f"error: {clash}, not a report this command wrote: not overwriting it; the report "
            f"goes to {beside} instead",
            file=sys.stderr,
            flush=True,
        )
        out = beside
    write(report, out)  # after each benchmark, so a partial run still leaves results
    return out


if __name__ == "__main__":
    # Compile times are part of what the report says: no persistent compilation cache in this
    # process, even where the caller's environment turns it on (`JAX_COMPILATION_CACHE_DIR`),
    # set before JAX is imported (it reads this once); the child processes (the sweep's
    # host-device run, each experiment of the suite) are given the same setting explicitly.
    os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    sys.exit(main())
