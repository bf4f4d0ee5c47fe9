"""`run-all --jobs J`: experiments run J at a time, each in a spawned worker process (most of a
quick run is XLA compiling on one thread, so two processes use two cores). The workers live in
this module, not in `__main__`, so that a spawned process can import them."""

import concurrent.futures
import functools
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path

import jax

import dynopt

from . import run_experiment


def enable_compilation_cache() -> str:
    """Turn on JAX's persistent compilation cache for this process and return its folder: most of
    an experiment's wall time is compilation, and a second run reuses it.
    `JAX_COMPILATION_CACHE_DIR` (the Makefile sets `.cache/jax`) wins; otherwise
    `$XDG_CACHE_HOME/dynopt/jax`. Turn it off with `JAX_ENABLE_COMPILATION_CACHE=false`."""
    folder = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "dynopt", "jax")
        jax.config.update("jax_compilation_cache_dir", folder)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder


def run_one(
    name: str, quick: bool, seed: int, out, *, progress: bool, log, run=run_experiment
) -> tuple[Path, float]:
    """One experiment in this process (`run`: the runner, `run_experiment`), timed:
    `(results folder, wall seconds)`."""
    start = time.perf_counter()
    # Progress bars only for full runs: a bar is a host callback inside the compiled program,
    # which JAX's persistent cache will not store, and quick runs take seconds.
    with dynopt.show_progress(progress):
        out = run(name, quick=quick, seed=seed, out=out, log=log)
    return out, time.perf_counter() - start


def _tagged_log(name: str, message: str) -> None:
    print(f"[{name}] {message}", flush=True)


def _run_in_worker(name: str, quick: bool, seed: int, out) -> tuple[Path, float]:
    """`run_one` in a `run-all --jobs` worker process: the compilation cache as in the parent,
    each log line tagged with the experiment, no progress bars (two processes' bars would
    overwrite each other), and the compiled programs released afterwards (each holds memory
    mappings; a worker that keeps every experiment's nears Linux's limit, as in `main`)."""
    enable_compilation_cache()
    try:
        return run_one(
            name, quick, seed, out, progress=False, log=functools.partial(_tagged_log, name)
        )
    finally:
        jax.clear_caches()


# Quick modes' wall times in a cold first `make run` (fresh clone, 2 processes, 2026-12-05):
# the order of a first run, which has no previous results to go by. Only an order: a stale
# value costs at most some idle time at the end, never a result.
_FIRST_RUN_SECONDS = {
    "gd_flow": 29.8, "characteristics": 27.6, "rnn_ode": 27.0, "adaptive": 22.7,
    "gan_dynamics": 21.4, "path_integral": 18.8, "edge_of_stability": 18.1, "sgd_sde": 16.8,
    "holistic": 15.2, "continuum": 12.7, "momentum": 10.5, "nesterov": 7.9,
}  # fmt: skip


def _previous_wall_time(out, name: str | None = None, quick: bool = False) -> float:
    """The wall time of the result already in `out`; else, in quick mode, `name`'s typical
    first-run time; else infinity (unknown: scheduled first)."""
    try:
        return float(json.loads((Path(out) / "metrics.json").read_text())["wall_time_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return _FIRST_RUN_SECONDS.get(name, float("inf")) if quick else float("inf")


def run_parallel(
    names, outs, *, quick: bool, seed: int, jobs: int, report: Callable[[str, Path, float], None]
) -> None:
    """Run the experiments `jobs` at a time in fresh (spawned: JAX is not fork-safe) processes;
    report each as it finishes. The first failure cancels what has not started and is raised
    once the running ones end."""
    # Longest first (by the previous run's wall time, or a first run's typical one), so that no
    # process is left running a long experiment alone at the end.
    order = sorted(zip(names, outs), key=lambda pair: -_previous_wall_time(pair[1], pair[0], quick))
    context = multiprocessing.get_context("spawn")
    workers = min(jobs, len(names))
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {pool.submit(_run_in_worker, name, quick, seed, out): name for name, out in order}
        for future in concurrent.futures.as_completed(futures):
            if (error := future.exception()) is not None:
                for other in futures:
                    other.cancel()
                raise error
            report(futures[future], *future.result())
