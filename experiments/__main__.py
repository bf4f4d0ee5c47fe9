"""Command line: python -m experiments list | run NAME [--quick] [--seed N] [--out DIR] |
run-all [NAME ...] [--quick] [--seed N] [--out PARENT] [--jobs J] | figures [NAME ...] |
page [--out PARENT]

After each run the headline numbers are printed next to the values the run card predicts;
`run-all`, `figures` and `page` (re)write the results page PARENT/index.html. `run-all --jobs J`
runs J experiments at a time, each in its own process (`make run` uses `JOBS`, 2 by default:
most of a quick run is XLA compiling on one thread)."""

import argparse
import functools
import json
import shutil
import sys
from pathlib import Path

from . import (
    _card,
    _jobs,
    _page,
    check_name,
    DEFAULT_RESULTS,
    EXPERIMENTS,
    get,
    replot,
    run_experiment,
    summary,
)
from ._io import check_out, remove_results
from ._jobs import enable_compilation_cache, run_one, run_parallel


# Figures the README shows: (experiment, file) -> docs path. `figures` refreshes them.
README_FIGURES = {("gd_flow", "orders.png"): Path("docs/figures/gd_flow_orders.png")}


def _print_page(written: bool, line: str) -> None:
    print(line, file=sys.stdout if written else sys.stderr, flush=True)


def write_page(parent: Path, names) -> None:
    _print_page(*_jobs.page(parent, names))


def _log(message: str) -> None:
    print(message, flush=True)


def _report(name: str, out: Path, elapsed: float) -> None:
    print(_jobs.report(get(name), name, out, elapsed), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments with their descriptions")
    names_help = "one of: " + ", ".join(sorted(EXPERIMENTS))
    p_run = sub.add_parser("run", help="run one experiment", description=names_help)
    p_run.add_argument("name", metavar="NAME", help=names_help)
    p_all = sub.add_parser("run-all", help="run every experiment (or the NAMEs given)")
    p_all.add_argument("names", nargs="*", metavar="NAME", help=names_help)
    p_all.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="experiments run at once, each in its own process (default 1: one after another)",
    )
    for p in (p_run, p_all):
        p.add_argument("--quick", action="store_true", help="small settings (seconds)")
        p.add_argument("--seed", type=int, default=0)
    p_run.add_argument("--out", default=None, help="results folder (default results/NAME)")
    p_all.add_argument(
        "--out", default=None, help="parent folder: results go to OUT/NAME (default results)"
    )
    p_fig = sub.add_parser("figures", help="redraw figures from saved results")
    p_fig.add_argument("names", nargs="*", metavar="NAME", help=names_help)
    p_page = sub.add_parser("page", help="write PARENT/index.html over the saved results")
    p_page.add_argument("--out", default=None, help="parent folder (default results)")
    p_clean = sub.add_parser(
        "clean",
        help="remove the results dynopt wrote (result folders, the page), never other files",
    )
    p_clean.add_argument("--out", default=None, help="parent folder (default results)")
    args = parser.parse_args(argv)
    if args.command == "clean":
        from benchmarks.__main__ import is_report

        def ours(path: Path) -> bool:  # the results page, or a `make bench` report
            return (path.name == "index.html" and _page.written_by_dynopt(path)) or is_report(path)

        root = Path(args.out or DEFAULT_RESULTS)
        removed, kept = remove_results(root, ours)
        for path in removed:
            print(f"removed {path}", flush=True)
        for path in kept:
            print(f"kept {path}: not written by dynopt", flush=True)
        if not removed and not kept:  # say why nothing happened
            if root.is_symlink():
                print(f"left {root} alone: a link (clean never follows one)", flush=True)
            elif root.exists():
                print(f"left {root} alone: a file, not a results folder", flush=True)
            else:
                print(f"nothing to remove: there is no {root}", flush=True)
        return 0
    jobs = getattr(args, "jobs", 1)
    if args.command not in ("list", "page") and not (args.command == "run-all" and jobs > 1):
        enable_compilation_cache()  # (a parallel run's workers turn it on for themselves)

    if args.command == "list":
        width = max(map(len, EXPERIMENTS))
        for name in sorted(EXPERIMENTS):
            print(f"{name:{width}s}  {summary(name)}")
        return 0
    if args.command == "page":
        write_page(Path(args.out or DEFAULT_RESULTS), sorted(EXPERIMENTS))
        return 0
    if args.command in ("run", "run-all"):
        if args.command == "run":
            names = [args.name]
        else:
            names = list(dict.fromkeys(args.names)) or sorted(EXPERIMENTS)
        if args.command == "run":
            outs = [DEFAULT_RESULTS / args.name if args.out is None else args.out]
        elif args.out is not None and not args.out.strip():
            outs = [""] * len(names)  # refused by check_out
        else:
            outs = [Path(args.out or DEFAULT_RESULTS) / name for name in names]
        try:  # every check before any work
            _card.check_seed(args.seed)
            if not isinstance(jobs, int) or jobs < 1:
                raise ValueError(f"--jobs must be a positive integer, got {jobs}.")
            for name, out in zip(names, outs):
                check_name(name)
                check_out(out)
        except ValueError as e:  # unknown experiment, or an --out that must not be touched
            print(f"error: {e}", file=sys.stderr)
            return 2
        mode = "quick" if args.quick else "full"
        if jobs > 1:
            print(f"{len(names)} experiments ({mode} mode), {jobs} at a time:", flush=True)
            for i, name in enumerate(names):
                print(f"  {name} ({i + 1}/{len(names)}): {summary(name)}", flush=True)
            # The page too is written by a worker: one that has dynopt imported already.
            parent = Path(args.out or DEFAULT_RESULTS)
            then = functools.partial(_jobs.page, parent, sorted(EXPERIMENTS))
            _print_page(
                *run_parallel(names, outs, quick=args.quick, seed=args.seed, jobs=jobs, then=then)
            )
            return 0
        for i, (name, out) in enumerate(zip(names, outs)):
            print(f"{name} ({i + 1}/{len(names)}, {mode} mode): {summary(name)}", flush=True)
            out, elapsed = run_one(
                name,
                args.quick,
                args.seed,
                out,
                progress=not args.quick,
                log=_log,
                run=run_experiment,  # this module's name for it (tests replace it)
            )
            _report(name, out, elapsed)
            # One process running every experiment would otherwise near Linux's 65,530-mapping
            # limit (vm.max_map_count), where XLA's next compilation segfaults.
            _jobs.release_programs()
        if args.command == "run-all":  # the page over every result in the folder
            write_page(Path(args.out or DEFAULT_RESULTS), sorted(EXPERIMENTS))
        elif args.out is None:  # the default results folder: keep its page current
            write_page(DEFAULT_RESULTS, sorted(EXPERIMENTS))
        return 0
    if args.command == "figures":
        readme_sources = {name for name, _ in README_FIGURES}
        for name in args.names or sorted(EXPERIMENTS):
            metrics_file = DEFAULT_RESULTS / name / "metrics.json"
            # README figures come from full-size runs; other figures redraw whatever is saved.
            missing = not metrics_file.exists()
            if missing or (
                name in readme_sources and json.loads(metrics_file.read_text())["quick"]
            ):
                run_experiment(name)
            paths = replot(name)
            print(f"{name}: {', '.join(str(p) for p in paths)}")
        for (name, file), target in README_FIGURES.items():
            source = DEFAULT_RESULTS / name / file
            if source.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                print(f"README figure refreshed: {target}")
        write_page(DEFAULT_RESULTS, sorted(EXPERIMENTS))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
