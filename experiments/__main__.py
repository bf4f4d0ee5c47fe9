"""Command line: python -m experiments list | run NAME [--quick] [--seed N] [--out DIR] |
run-all [NAME ...] [--quick] [--seed N] [--out PARENT] [--jobs J] |
figures [NAME ...] | figures NAME --out DIR | page [--out PARENT] | clean [--out PARENT]

After each run the headline numbers are printed next to the values the run card predicts;
`run-all`, `figures` (without `--out`) and `page` (re)write the results page PARENT/index.html.
`run-all --jobs J` runs J experiments at a time, each in its own process (`make run` uses `JOBS`,
2 by default: most of a quick run is XLA compiling on one thread). A refused argument (an unknown
experiment, an `--out` that is not dynopt's to write) is one line `error: ...` and exit status 2,
before any work. An `--out` that became such a place while the run went on is one `error:` line
naming the new folder beside it where the finished result went (exit status 1). Ctrl-C stops a
run: one line `interrupted; finished: ...; results kept in ...`, the page over what is there,
exit status 130; SIGTERM and SIGHUP alike (`stopped by SIGTERM; ...`, 143 and 129), and a
parallel run's workers stop with it, or on their own where it was killed outright. `figures`
with no NAME redraws the saved results' figures and names the experiments without one (it runs
no experiment; `figures NAME` runs NAME at full size first where no result of it is saved); a
result whose files were edited by hand so that its figures cannot be drawn is one `error:` line
naming the file changed (exit status 1), the other experiments redrawn."""

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from . import (
    _card,
    _jobs,
    _page,
    check_name,
    check_redraw,
    DEFAULT_RESULTS,
    EXPERIMENTS,
    figure_names,
    get,
    replot,
    run_experiment,
    summary,
)
from ._io import (
    _umask,
    begin_redraw,
    check_out,
    is_result,
    OutError,
    remove_results,
    shell_path,
    why_kept,
    written,
)
from ._jobs import enable_compilation_cache, run_one, run_parallel


# Figures the README shows: (experiment, file) -> path in this source checkout (not under the
# working folder, whose docs/ may be anyone's). `figures` refreshes them from full-size results
# in this checkout's own results folder, never from a results/ elsewhere.
_CHECKOUT = Path(__file__).resolve().parents[1]
CHECKOUT_RESULTS = _CHECKOUT / "results"
README_FIGURES = {("gd_flow", "orders.png"): _CHECKOUT / "docs" / "figures" / "gd_flow_orders.png"}


# What stops a run as Ctrl-C does: SIGTERM (`kill`, `timeout`, a batch system cancelling the
# job) and SIGHUP (the terminal closed) too, whose default ends Python at once, leaving a
# temporary folder behind and a parallel run's workers running on without their parent.
_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def _stop_signals(received: list):
    """In the block, each of `_STOP_SIGNALS` appends its number to `received` and raises
    `KeyboardInterrupt`, so that a run stops as after Ctrl-C (its temporary folder removed, its
    workers stopped). SIGTERM or SIGHUP ignored when the block starts stays ignored (`nohup`
    ignores SIGHUP); Ctrl-C always stops a run. Outside the main thread, nothing."""

    def stop(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    previous = {}
    try:
        for signum in _STOP_SIGNALS:
            if signum == signal.SIGINT or signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, stop)
    except ValueError:  # not the main thread: the signals are not ours to catch
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _stopped(received: list) -> str:
    """How the run was stopped, to begin its last line: "interrupted" (Ctrl-C), else the
    signal's name."""
    if not received or received[0] == signal.SIGINT:
        return "interrupted"
    return f"stopped by {signal.Signals(received[0]).name}"


def _stop_status(received: list) -> int:
    """The exit status of a run stopped by the signal first `received`: 128 + its number, as a
    shell reports a process the signal ended (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (received[0] if received else signal.SIGINT)


def _print_page(written: bool, line: str) -> None:
    print(line, file=sys.stdout if written else sys.stderr, flush=True)


def write_page(parent: Path, names) -> None:
    _print_page(*_jobs.page(parent, names))


def _log(message: str) -> None:
    print(message, flush=True)


def _report(name: str, out: Path, elapsed: float) -> None:
    print(_jobs.report(get(name), name, out, elapsed), flush=True)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 2


def _refuse_a_result_as_parent(parent: Path) -> None:
    """`ValueError` if `parent`, where results go as PARENT/NAME with the page beside them, is a
    result folder itself."""
    if is_result(parent):
        raise ValueError(
            f"--out {parent} is a dynopt result folder itself, not a folder that holds results "
            "(each in PARENT/NAME, the page in PARENT/index.html); give e.g. --out "
            f"{parent.absolute().parent}"
        )


def _saved_metrics(name: str, folder: Path) -> dict | None:
    """The metrics of `name`'s result saved in `folder` (`check_out` passed: none, or a dynopt
    result), `None` if there is none; `ValueError` if it is unreadable or another experiment's."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ValueError(f"--out {folder}: cannot read its metrics.json ({e}).") from e
    if not isinstance(metrics, dict) or metrics.get("experiment", name) != name:
        other = metrics.get("experiment") if isinstance(metrics, dict) else None
        raise ValueError(f"--out {folder} holds the result of {other!r}, not of {name!r}.")
    return metrics


def _check_loads(name: str, folder: Path, out) -> None:
    """`ValueError` unless the files of `name`'s result saved in `folder` that its figures are
    drawn from can be read (one missing or cut short: a traceback from inside the redraw),
    saying how to make it anew."""
    try:
        _card.load(get(name), folder)  # the files, and the sections in them
    except ValueError as e:
        raise ValueError(
            f"{folder}: the saved result of {name} cannot be read ({e}), so "
            f"its figures cannot be redrawn; {_make_anew(name, folder, out)}"
        ) from e


def _changed(folder: Path) -> list[str]:
    """The files of the result `folder` that figures are drawn from and that no longer hold what
    dynopt wrote (edited by hand)."""
    ours = written(folder)
    names = ("config.json", "data.npz", "metrics.json")
    return [n for n in names if (folder / n).is_file() and n not in ours]


def _make_anew(name: str, folder: Path, out) -> str:
    """How to make `name`'s result in `folder` anew: its run command, after moving out the files
    changed since dynopt wrote them (the user's now: a run refuses a result that holds one)."""
    again = f"python -m experiments run {name}" + (
        "" if out is None else f" --out {shell_path(out)}"
    )
    if not (changed := _changed(folder)):
        return f"make it anew: {again}"
    return (
        f"{' and '.join(changed)} changed since dynopt wrote it, so yours now (a run replaces only "
        f"dynopt's files): move it out of {folder}, then make it anew: {again}"
    )


def _undrawable(name: str, folder: Path, out, error: Exception) -> str:
    """The line saying that `name`'s figures could not be drawn from the result in `folder`
    (`error` raised while drawing), if the result holds a file changed since dynopt wrote it
    (edited by hand: its numbers read, but are not what the figures expect); `error` itself
    otherwise (a result as dynopt wrote it that cannot be drawn is dynopt's bug: its traceback
    is what to report)."""
    if not _changed(folder):
        raise error
    return (
        f"{folder}: the figures of {name} cannot be drawn from its saved result "
        f"({type(error).__name__}: {error}): {_make_anew(name, folder, out)}"
    )


def _refresh_readme_figure(name: str, source: Path, target: Path, metrics: dict) -> str:
    """Copy `source` (a figure of `name`'s result in the default results folder) over the README
    figure `target`, atomically, if that result is full-size and in this checkout's own results
    folder (a results/ elsewhere is another project's, or a copy's); the line to print either
    way."""
    if source.parent.resolve().parent != CHECKOUT_RESULTS.resolve():
        return (
            f"README figure {target} not refreshed: {source.parent} is not in this checkout's "
            f"results folder {CHECKOUT_RESULTS} (README figures come from there: run figures "
            f"in {_CHECKOUT})."
        )
    if metrics.get("quick") is not False:
        return (
            f"README figure {target} not refreshed: {source.parent} is a quick-mode result; "
            f"README figures come from full-size runs (python -m experiments run {name})."
        )
    if not source.is_file():
        return f"README figure {target} not refreshed: there is no {source}."
    if not target.parent.is_dir():
        return f"README figure {target} not refreshed: no {target.parent} (not a source checkout)."
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return f"README figure refreshed: {target} (from {source})"


def _redraw_figures(names: list[str], out) -> int:
    """`figures [NAME ...] [--out DIR]`: redraw each experiment's figures from its saved result
    (in results/NAME, or DIR as `run --out DIR` wrote it), running an experiment NAMEd at full
    size first where none is saved; with no NAME, every saved result's, naming the experiments
    without one and the command that makes them (all at full size, about half an hour by the run
    cards' runtimes, is never started unasked); refresh the README figures of the experiments
    named from full-size results in results/; rewrite the results page over results/."""
    try:  # every check before any work
        if out is not None and len(names) != 1:
            raise ValueError(
                "--out DIR is one experiment's results folder (as in run); give exactly one NAME."
            )
        every = not names
        names = list(dict.fromkeys(names)) or sorted(EXPERIMENTS)
        saved = {}
        for name in names:
            check_name(name)
            folder = DEFAULT_RESULTS / name if out is None else out
            folder = check_out(folder, experiment=name, redraw=True)
            check_redraw(name, folder)
            saved[name] = folder, _saved_metrics(name, folder)
            if saved[name][1] is not None:
                _check_loads(name, folder, out)
    except ValueError as e:  # unknown experiment, a user's folder, another experiment's result
        return _error(str(e))
    missing = [name for name, (_, metrics) in saved.items() if every and metrics is None]
    for name in missing:
        del saved[name]
    if missing:
        which = "saved results" if saved else f"saved results (there are none in {DEFAULT_RESULTS})"
        run_all = " ".join(["run-all", *(missing if saved else ())])  # (none saved: all of them)
        print(
            f"figures redraws {which}; no result of {', '.join(missing)}: make them with python "
            f"-m experiments {run_all} (full size, minutes each; --quick: seconds), then run "
            "figures again",
            flush=True,
        )
    redrawn, stopped, failed = [], [], []
    with _stop_signals(stopped):  # SIGTERM, SIGHUP: as Ctrl-C
        try:
            for name, (folder, metrics) in saved.items():
                if metrics is None:
                    print(
                        f"{name}: no saved result in {folder}; running it (full size) first",
                        flush=True,
                    )
                    enable_compilation_cache()
                    run_experiment(name, out=folder, log=_log)
                    saved[name] = folder, _saved_metrics(name, folder)
                # (a redraw cut short leaves figures that are still dynopt's, not the user's)
                begin_redraw(folder, figure_names(name))
                try:
                    paths = replot(name, folder)
                except Exception as e:
                    print(
                        f"error: {_undrawable(name, folder, out, e)}", file=sys.stderr, flush=True
                    )
                    failed.append(name)
                    continue
                print(f"{name}: {', '.join(str(p) for p in paths)}", flush=True)
                redrawn.append(name)
        except KeyboardInterrupt:  # one line, not a traceback from inside JAX
            print(
                f"{_stopped(stopped)}; figures redrawn: {', '.join(redrawn) or 'none'}; the saved "
                "results are whole (a run stopped before its result was written leaves none)",
                file=sys.stderr,
                flush=True,
            )
            return _stop_status(stopped)
    for (name, file), target in README_FIGURES.items():
        if name in missing:
            print(
                f"README figure {target} not refreshed: no saved result in "
                f"{DEFAULT_RESULTS / name} (python -m experiments run {name}).",
                flush=True,
            )
            continue
        if name not in saved or name in failed:  # only the experiments asked for, drawn
            continue
        if out is not None:
            print(
                f"README figure {target} not refreshed: it comes from {DEFAULT_RESULTS / name} "
                "(figures without --out).",
                flush=True,
            )
            continue
        folder, metrics = saved[name]
        print(_refresh_readme_figure(name, folder / file, target, metrics), flush=True)
    if out is None and (saved or DEFAULT_RESULTS.is_dir()):
        write_page(DEFAULT_RESULTS, sorted(EXPERIMENTS))
    return 1 if failed else 0


def _run(names, outs, quick: bool, seed: int, jobs: int, page: Path | None, where: Path) -> int:
    """`run` / `run-all` once every check passed: the experiments (`jobs` at a time), their
    reports, then the page over `page` (None: no page). Exit status 0; 1 where an `--out` became
    a place dynopt must not write during the run (its result went to a new folder beside it,
    named); 130 after Ctrl-C, which keeps every result written and writes the page over them
    (128 + N after signal N of `_STOP_SIGNALS`)."""
    mode = "quick" if quick else "full"
    finished, failed = [], []
    interrupted = []

    def log(message: str) -> None:
        # A KeyboardInterrupt raised while Python runs a garbage-collector callback (JAX has one)
        # is printed and dropped: the run then stops at the next section, where it logs.
        if interrupted:
            raise KeyboardInterrupt
        _log(message)

    hook, sys.unraisablehook = sys.unraisablehook, _jobs.quiet_lost_interrupts(sys.unraisablehook)
    with _stop_signals(interrupted):
        try:
            if jobs > 1:
                print(f"{len(names)} experiments ({mode} mode), {jobs} at a time:", flush=True)
                for i, name in enumerate(names):
                    print(f"  {name} ({i + 1}/{len(names)}): {summary(name)}", flush=True)
                # The page too is written by a worker: one that has dynopt imported already.
                then = functools.partial(_jobs.page, page, sorted(EXPERIMENTS))
                written, finished, failed = run_parallel(
                    names, outs, quick=quick, seed=seed, jobs=jobs, then=then
                )
                _print_page(*written)
                return 1 if failed else 0
            for i, (name, out) in enumerate(zip(names, outs)):
                print(f"{name} ({i + 1}/{len(names)}, {mode} mode): {summary(name)}", flush=True)
                try:
                    out, elapsed = run_one(
                        name,
                        quick,
                        seed,
                        out,
                        # (a bar redrawn into a log file is thousands of lines of noise)
                        progress=not quick and sys.stderr.isatty(),
                        log=log,
                        run=run_experiment,  # this module's name for it (tests replace it)
                    )
                except OutError as e:  # --out changed during the run (the result saved beside it)
                    print(f"error: {e}", file=sys.stderr, flush=True)
                    failed.append(name)
                    continue
                finished.append(name)
                _report(name, out, elapsed)
                # One process running every experiment would otherwise near Linux's 65,530-mapping
                # limit (vm.max_map_count), where XLA's next compilation segfaults.
                _jobs.release_programs()
            if page is not None:
                write_page(page, sorted(EXPERIMENTS))
            return 1 if failed else 0
        except KeyboardInterrupt as e:
            finished = getattr(e, "finished", finished)  # (`_jobs.Interrupted` says which)
            print(
                f"{_stopped(interrupted)}; finished: {', '.join(finished) or 'none'}; results kept "
                f"in {where}",
                file=sys.stderr,
                flush=True,
            )
            if page is not None and page.is_dir():  # (none: nothing finished, nothing to show)
                with contextlib.suppress(KeyboardInterrupt):  # (a second Ctrl-C: no page)
                    write_page(page, sorted(EXPERIMENTS))
            return _stop_status(interrupted)
        finally:
            sys.unraisablehook = hook


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
        p.add_argument(
            "--seed",
            type=int,
            default=0,
            help="random seed, an integer in [0, 2**32) (default 0); the same seed gives the same "
            "numbers. Experiments that draw no random numbers ignore it and record seed: null",
        )
    p_run.add_argument("--out", default=None, help="results folder (default results/NAME)")
    p_all.add_argument(
        "--out", default=None, help="parent folder: results go to OUT/NAME (default results)"
    )
    p_fig = sub.add_parser("figures", help="redraw figures from saved results")
    p_fig.add_argument("names", nargs="*", metavar="NAME", help=names_help)
    p_fig.add_argument(
        "--out",
        default=None,
        help="the results folder of the one NAME given, as in run (default results/NAME)",
    )
    p_page = sub.add_parser("page", help="write PARENT/index.html over the saved results")
    p_page.add_argument("--out", default=None, help="parent folder (default results)")
    p_clean = sub.add_parser(
        "clean",
        help="remove the results dynopt wrote (result folders, the page), never other files",
    )
    p_clean.add_argument("--out", default=None, help="parent folder (default results)")
    args = parser.parse_args(argv)
    if args.command in ("clean", "page") and args.out is not None and not args.out.strip():
        return _error("--out is empty; give a folder.")  # (not the default folder: a typo)
    if getattr(args, "out", None):  # "~/x" quoted past the shell: every command reads it alike
        args.out = str(Path(args.out).expanduser())
    if args.command == "clean":
        from benchmarks.__main__ import is_report

        def ours(path: Path) -> bool:  # the results page, or a `make bench` report
            return (path.name == "index.html" and _page.written_by_dynopt(path)) or is_report(path)

        root = Path(args.out or DEFAULT_RESULTS)
        if not root.is_symlink() and is_result(root):
            print(
                f"left {root} alone: a result folder itself; clean removes the results in the "
                f"folder that holds them (--out {shell_path(root.parent)}).",
                flush=True,
            )
            return 0
        removed, kept = remove_results(root, ours)
        for path in removed:
            print(f"removed {path}", flush=True)
        for path in kept:  # (in root, or in a result: a user's notes; a copied result)
            print(f"kept {path}: {why_kept(path)}", flush=True)
        if not removed and not kept:  # say why nothing happened
            if root.is_symlink():
                print(f"left {root} alone: a link (clean never follows one)", flush=True)
            elif root.is_dir():
                print(f"nothing to remove: {root} is empty", flush=True)
            elif root.exists():
                print(f"left {root} alone: a file, not a results folder", flush=True)
            else:
                print(f"nothing to remove: there is no {root}", flush=True)
        return 0
    jobs = getattr(args, "jobs", 1)
    # (`figures` turns it on only where it runs an experiment: redrawing compiles nothing)
    if args.command in ("run", "run-all") and not (args.command == "run-all" and jobs > 1):
        enable_compilation_cache()  # (a parallel run's workers turn it on for themselves)

    if args.command == "list":
        width = max(map(len, EXPERIMENTS))
        for name in sorted(EXPERIMENTS):
            print(f"{name:{width}s}  {summary(name)}")
        return 0
    if args.command == "page":  # writing the page is its only job: not written is an error
        written, line = _jobs.page(Path(args.out or DEFAULT_RESULTS), sorted(EXPERIMENTS))
        if not written:
            return _error(line)
        print(line, flush=True)
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
            if args.command == "run-all" and (args.out is None or args.out.strip()):
                _refuse_a_result_as_parent(Path(args.out or DEFAULT_RESULTS))
            for name in names:
                check_name(name)
            refused = []  # (all of them in one line: e.g. every result of an older dynopt)
            for name, out in zip(names, outs):
                try:
                    check_out(out, experiment=name)
                except OutError as e:
                    refused.append((name, e))
            if refused:
                (_, first), *more = refused
                also = f" (also refused: {', '.join(n for n, _ in more)})" if more else ""
                raise OutError(f"{first}{also}")
        except ValueError as e:  # unknown experiment, or an --out that must not be touched
            return _error(str(e))
        if args.command == "run-all":
            page = where = Path(args.out or DEFAULT_RESULTS)
        else:  # the default results folder's page is kept current; another --out has none
            page, where = (DEFAULT_RESULTS if args.out is None else None), Path(outs[0])
        return _run(names, outs, args.quick, args.seed, jobs, page, where)
    if args.command == "figures":
        return _redraw_figures(args.names, args.out)
    return 2


if __name__ == "__main__":
    _jobs.collector_wanted = True  # (the command line's own process: `_jobs.collect_rarely`)
    sys.exit(main())
