"""Strict numerics for the whole test run (as diffrax's test suite): float64, strict dtype
promotion, rank promotion raises; fresh PRNG keys from a fixture; figures on the Agg backend."""

import os


os.environ.setdefault("MPLBACKEND", "Agg")
# Test workers fill the cores already; a multi-threaded BLAS inside each fights the others.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# JAX's persistent compilation cache (as `make test` sets it): a rerun, and the other xdist worker,
# reuse compiled programs. `make clean` removes the folder.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "jax"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

import jax
import pytest


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """`getkey()` returns a new PRNG key each call (deterministic per test)."""
    counter = iter(range(10**9))
    base = jax.random.key(5678)
    return lambda: jax.random.fold_in(base, next(counter))


# Experiments whose quick run a test reuses besides the experiment's own quick-mode test (the
# `quick_results` fixture of tests/test_experiments.py runs each at most once per worker).
_REUSES_QUICK_RUN = {"test_figures_are_redrawn_from_the_saved_results_alone": "gd_flow"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Scheduling under `make test` (`-n 2 --dist loadgroup`: one unit at a time per free worker).
    The experiments' quick runs, the longest tests by far (40-110 s each), go first, so that no
    worker is left running one alone at the end; a test that reads an experiment's quick run is
    grouped with that experiment's test, so the run is not repeated on the other worker."""
    quick = [item for item in items if "quick_results" in getattr(item, "fixturenames", ())]
    for item in quick:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("name") if callspec else None
        name = _REUSES_QUICK_RUN.get(item.originalname, name)
        if name is not None:
            item.add_marker(pytest.mark.xdist_group(f"quick-{name}"))
    first = set(quick)
    items[:] = quick + [item for item in items if item not in first]
