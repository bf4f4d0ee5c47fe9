"""`run-all --jobs J`: experiments run J at a time, each in a spawned worker process (most of a
quick run is XLA compiling on one thread, so two processes use two cores). The workers live in
this module, not in `__main__`, so that a spawned process can import them.

The parent of a parallel run imports neither JAX nor dynopt (over a second of one core, before
the workers could start): the workers return what is printed, and one of them writes the page.
Ctrl-C (or SIGTERM, SIGHUP) stops the whole run: what has not started is cancelled, the running
experiments stop (their temporary folders removed, no result half swapped in) and the workers
exit; a worker whose parent was killed outright stops and exits by itself."""

import atexit
import concurrent.futures
import contextlib
import functools
import gc
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import _card, _headline, get, run_experiment
from ._io import _recover, is_result, OutError


def enable_compilation_cache() -> str:
    """Turn on JAX's persistent compilation cache for this process and return its folder: most of
    an experiment's wall time is compilation, and a second run reuses it.
    `JAX_COMPILATION_CACHE_DIR` (the Makefile sets `.cache/jax`) wins; otherwise
    `$XDG_CACHE_HOME/dynopt/jax`. Turn it off with `JAX_ENABLE_COMPILATION_CACHE=false`."""
    import jax

    folder = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "dynopt", "jax")
        jax.config.update("jax_compilation_cache_dir", folder)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder


# Python's cyclic garbage collector during an experiment: tracing and lowering allocate millions
# of small objects, and with the default thresholds (700, 10, 10) a young-generation collection
# ran every 700 of them, each full collection scanning every object of JAX, dynopt and
# matplotlib. Measured on warm quick runs (gd_flow, holistic; 2-core VM, load 6-8, alternated):
# 5% less CPU with these thresholds and the imported modules frozen out of the collector
# (`gc.freeze`). Cyclic garbage is still collected: `release_programs` collects everything
# after each experiment (so that the compiled programs it frees are counted, and go).
# Only in processes the command line owns (`python -m experiments`, a `run-all` worker): a
# library caller's process (a test worker) keeps its own collector settings.
GC_THRESHOLDS = (50_000, 50, 1_000)
collector_wanted = False
_collector_tuned = False


def collect_rarely() -> None:
    """Freeze what this process imported so far out of the garbage collector and collect its
    young objects `GC_THRESHOLDS` apart, once per process (after JAX and dynopt are imported)
    and only where `collector_wanted`. Changes no result: only when unreachable cycles are
    freed."""
    global _collector_tuned
    if collector_wanted and not _collector_tuned:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        _collector_tuned = True


def run_one(
    name: str, quick: bool, seed: int, out, *, progress: bool, log, run=run_experiment
) -> tuple[Path, float]:
    """One experiment in this process (`run`: the runner, `run_experiment`), timed:
    `(results folder, wall seconds)`. In the command line's processes the garbage collector
    runs rarely (`collect_rarely`)."""
    import dynopt

    collect_rarely()
    start = time.perf_counter()
    # Progress bars only for full runs: a bar is a host callback inside the compiled program,
    # which JAX's persistent cache will not store, and quick runs take seconds.
    with dynopt.show_progress(progress):
        out = run(name, quick=quick, seed=seed, out=out, log=log)
    return out, time.perf_counter() - start


def report(module, name: str, out: Path, elapsed: float) -> str:
    """What the CLI prints when `module`'s run finishes: where its results went, its headline
    numbers against the card's predictions, and its tables, all read from the saved result."""
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    lines = [f"{name}: done in {elapsed:.1f} s; results and figures in {out}/"]
    if head := _headline.text(_headline.read(getattr(module, "HEADLINES", ()), metrics)):
        lines.append(head)
    lines += [_card.table_text(table) for table in _card.tables(module, out)]
    return "\n".join(lines)


def page(parent, names) -> tuple[bool, str]:
    """Write the results page over every result in `parent`: `(written, the line to print)`;
    where it is not written (a user's index.html, a folder that cannot be written), the line
    says why."""
    from . import _page

    parent = Path(parent)
    names = [n for n in names if is_result(parent / n)]  # (importing only what the page shows)
    try:
        written = _page.write_page(parent, {n: get(n) for n in names}, names)
    except ValueError as e:
        return False, f"results page not written: {e}"
    except OSError as e:  # no such folder, a file, no permission
        why = e.strerror or e
        return False, f"results page not written: cannot write {parent / 'index.html'} ({why})."
    shown = [n for n in names if (parent / n / "metrics.json").exists()]  # (as the page does)
    empty = "" if shown else f" (no results in {parent} yet: an empty page)"
    return True, f"results page: {written.resolve().as_uri()}{empty}"


def _show(text: str) -> None:
    print(text, flush=True)


def _warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _tagged_log(name: str, message: str) -> None:
    if _running and _told_to_stop():  # a Ctrl-C whose KeyboardInterrupt was lost (see below)
        raise KeyboardInterrupt
    print(f"[{name}] {message}", flush=True)


# A worker's state for Ctrl-C: SIGINT stops the experiment running (once: a second SIGINT, e.g.
# the parent's after the terminal's, must not cut its cleanup short), and the worker starts no
# other; so does the parent's `_stop_event` (a worker still starting ignores SIGINT). A
# KeyboardInterrupt raised while Python runs a garbage-collector callback (JAX has one) is
# printed and dropped; the experiment then stops at its next section, where it logs.
_interrupted = False
_running = False
_stop_event = None


def _told_to_stop() -> bool:
    return _interrupted or (_stop_event is not None and _stop_event.is_set())


def _on_interrupt(signum, frame) -> None:
    global _interrupted
    first, _interrupted = not _interrupted, True
    if first and _running:
        raise KeyboardInterrupt


def quiet_lost_interrupts(hook):
    """`sys.unraisablehook` that drops a KeyboardInterrupt raised where Python cannot raise it
    (a garbage-collector callback): the run acts on that Ctrl-C at its next section, and the
    traceback Python would print says nothing the user needs. Anything else goes to `hook`."""

    def unraisable(info) -> None:
        if not isinstance(info.exc_value, KeyboardInterrupt):
            hook(info)

    return unraisable


def _worker_init(stop=None, parent: int | None = None) -> None:
    """A worker's start: SIGINT (ignored while it started), SIGTERM, SIGHUP (unless ignored:
    `nohup`), or the parent setting `stop` (an event), now stops its experiment; so does the end
    of the process `parent`, watched from a thread (`_watch_parent`)."""
    global _stop_event
    _stop_event = stop
    signal.signal(signal.SIGINT, _on_interrupt)
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _on_interrupt)
    sys.unraisablehook = quiet_lost_interrupts(sys.unraisablehook)
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


# How often a worker looks whether its parent is still there (`_watch_parent`).
PARENT_POLL_S = 0.5


def _watch_parent(parent: int) -> None:
    """Once the worker's `parent` process is gone (killed by a signal it cannot catch, SIGKILL;
    the out-of-memory killer), stop the experiment running as Ctrl-C does (its temporary folder
    removed), wait for it up to `STOP_GRACE_S`, and end the worker: the pool's queue would
    keep it waiting for work forever, and the experiment would write a result nobody asked for
    any more."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    while _running and time.monotonic() < deadline:
        time.sleep(0.05)
    os._exit(1)


def _run_in_worker(name: str, quick: bool, seed: int, out) -> tuple[str, str]:
    """`run_one` in a `run-all --jobs` worker process: the compilation cache as in the parent,
    each log line tagged with the experiment, no progress bars (two processes' bars would
    overwrite each other), and the compiled programs released once they hold many memory
    mappings (`release_programs`). Returns `(status, text)`: `("done", the report to print)`,
    `("error", the error line)` where `--out` became a place dynopt must not write during the
    run (the result saved beside it, or nowhere), `("interrupted", "")` after Ctrl-C."""
    global _running, collector_wanted
    try:
        _running = True
        if _told_to_stop():
            return "interrupted", ""
        enable_compilation_cache()
        _exit_at_once_when_done()
        collector_wanted = True  # (this process is the run's own)
        try:
            out, elapsed = run_one(
                name, quick, seed, out, progress=False, log=functools.partial(_tagged_log, name)
            )
        except OutError as e:
            return "error", f"error: {e}"
        finally:
            if not _told_to_stop():  # (stopping: the programs go with the process)
                release_programs()
        return "done", report(get(name), name, out, elapsed)
    except KeyboardInterrupt:
        return "interrupted", ""
    finally:
        _running = False


def _exit_at_once() -> None:
    """End this worker now, skipping the rest of Python's shutdown: the `atexit` handlers
    registered before this one (JAX's: releasing its backends and caches) and the teardown of
    every module's objects, about a second of CPU in each worker of every `make run`, spent
    while the parent waits for its workers to exit. Nothing is lost: each result was written,
    and its compiled programs stored in the persistent cache, before its report was sent; output
    not yet flushed is flushed, and pending JAX effects are waited for."""
    import jax

    jax.effects_barrier()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # (a stream already closed, or gone)
            stream.flush()
    os._exit(0)  # (the pool reads no worker's exit status)


_exit_registered = False


def _exit_at_once_when_done() -> None:
    """Register `_exit_at_once` to run when this worker exits, once, after JAX was imported:
    `atexit` runs handlers last registered first, so it runs before JAX's."""
    global _exit_registered
    if not _exit_registered:
        import jax  # noqa: F401  (its handlers first, so that ours precedes them)

        atexit.register(_exit_at_once)
        _exit_registered = True


# Memory mappings past which a process releases its compiled programs: a third of Linux's
# default limit (vm.max_map_count = 65,530), where XLA's next compilation segfaults. One quick
# experiment adds 2,200-3,600 (measured: six of them in one process, 15,098 in all).
MAPPINGS_BEFORE_RELEASE = 20_000


def release_programs() -> None:
    """Collect this process's garbage, then `jax.clear_caches()` once it holds more than
    `MAPPINGS_BEFORE_RELEASE` memory mappings (each compiled program holds ~3 for as long as a
    jit cache keeps it), or always where they cannot be counted (no /proc/self/maps). Releasing
    costs ~0.25 s after a quick experiment; kept, the programs go when the process exits."""
    import jax

    gc.collect()  # (cycles holding compiled programs: `collect_rarely` leaves them to here)
    try:
        with open("/proc/self/maps", "rb") as maps:
            count = sum(1 for _ in maps)
    except OSError:
        count = None
    if count is None or count > MAPPINGS_BEFORE_RELEASE:
        jax.clear_caches()


# Quick modes' wall times in a cold first `make run` (fresh clone at 3c9d0a6, quiet, 2 processes,
# 2026-12-07): the order of a first run, which has no previous results to go by. Only an order:
# a stale value costs at most some idle time at the end, never a result (the 2026-12-05 values,
# path_integral then 18.8 s where it now takes 28.4, ordered that run 1.6 s longer: simulated).
_FIRST_RUN_SECONDS = {
    "gd_flow": 28.9, "path_integral": 28.4, "rnn_ode": 27.6, "characteristics": 26.0,
    "sgd_sde": 22.8, "gan_dynamics": 19.8, "adaptive": 19.3, "holistic": 18.9,
    "edge_of_stability": 18.4, "continuum": 14.5, "momentum": 13.2, "nesterov": 7.4,
}  # fmt: skip


def _previous_wall_time(out, name: str | None = None, quick: bool = False) -> float:
    """The wall time of the result already in `out`; else, in quick mode, `name`'s typical
    first-run time; else infinity (unknown: scheduled first)."""
    try:
        return float(json.loads((Path(out) / "metrics.json").read_text())["wall_time_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return _FIRST_RUN_SECONDS.get(name, float("inf")) if quick else float("inf")


# How long the running experiments get, after Ctrl-C, to stop by themselves (their temporary
# folders removed) before their workers are killed: Python sees the signal only between two
# calls into XLA, and one compilation can take seconds.
STOP_GRACE_S = 10.0


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a parallel run; `finished`: the experiments whose results were written."""

    def __init__(self, finished):
        super().__init__()
        self.finished = list(finished)


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored in the block, and by the processes it starts (the disposition survives
    `exec`, and Python keeps it): a Ctrl-C while a worker imports would print its traceback."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to ignore it with
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_parallel(
    names,
    outs,
    *,
    quick: bool,
    seed: int,
    jobs: int,
    show: Callable[[str], None] = _show,
    warn: Callable[[str], None] = _warn,
    then: Callable | None = None,
):
    """Run the experiments `jobs` at a time in fresh (spawned: JAX is not fork-safe) processes;
    `show` each one's `report` as it finishes (`warn` its error line where its `--out` changed
    during the run). The first failure cancels what has not started and is raised once the
    running ones end. Then `then()` (a picklable callable, e.g. writing the page) runs in a
    worker, which has imported what it needs already. Returns `(then's value, finished, failed)`
    (experiment names); Ctrl-C stops every worker and raises `Interrupted`."""
    # Longest first (by the previous run's wall time, or a first run's typical one), so that no
    # process is left running a long experiment alone at the end.
    order = sorted(zip(names, outs), key=lambda pair: -_previous_wall_time(pair[1], pair[0], quick))
    context = multiprocessing.get_context("spawn")
    workers = min(jobs, len(names))
    stop = context.Event()
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_worker_init, initargs=(stop, os.getpid())
    )
    futures: dict = {}
    finished, failed, seen = [], [], set()

    def collect(future) -> None:
        seen.add(future)
        status, text = future.result()
        if status == "interrupted":  # (a worker alone got SIGINT: the run stops all the same)
            raise KeyboardInterrupt
        (finished if status == "done" else failed).append(futures[future])
        (show if status == "done" else warn)(text)

    try:
        with _sigint_ignored():  # (the workers start here)
            for name, out in order:
                futures[pool.submit(_run_in_worker, name, quick, seed, out)] = name
        for future in concurrent.futures.as_completed(futures):
            if (error := future.exception()) is not None:
                for other in futures:
                    other.cancel()
                raise error
            collect(future)
        value = None if then is None else pool.submit(then).result()
    except KeyboardInterrupt:
        _stop(pool, stop, futures, seen, collect)
        for name, out in order:  # a killed worker's temporary folder, or a result moved aside
            if name not in finished:
                with contextlib.suppress(OSError):
                    _recover(Path(out))
        raise Interrupted(finished) from None
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return value, finished, failed


def _stop(pool, stop, futures, seen, collect) -> None:
    """After Ctrl-C: cancel what has not started, tell the workers (`stop`, and SIGINT: the
    terminal sent them one too, `kill -INT` of the parent did not), let the running experiments
    stop for `STOP_GRACE_S`, collecting any that finished meanwhile, then kill the workers still
    there."""
    with _sigint_ignored():  # a second Ctrl-C changes nothing now
        stop.set()
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for future in futures:  # (here, not in the pool's thread: `wait` below skips them)
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(OSError):
                os.kill(process.pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        running = [f for f in futures if f not in seen and not f.cancelled()]
        done, _ = concurrent.futures.wait(running, timeout=STOP_GRACE_S)
        for future in done:
            with contextlib.suppress(BaseException):  # (failed, interrupted: not finished)
                collect(future)
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(5)
