"""Strict numerics for the whole test run (as diffrax's test suite): float64, strict dtype
promotion, rank promotion raises; fresh PRNG keys from a fixture; figures on the Agg backend."""

import os


os.environ.setdefault("MPLBACKEND", "Agg")
# Test workers fill the cores already; a multi-threaded BLAS inside each fights the others.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# No persistent compilation cache in the test suite: CI starts from an empty cache (nothing to
# reuse), and jaxlib 0.10.2's `executable.serialize()` crashed two long-lived xdist workers
# (segfault, abort) while writing entries. `make run` and the CLI keep the cache;
# tests/test_validation.py checks, in a child process, that their programs can enter it.
os.environ.setdefault("JAX_ENABLE_COMPILATION_CACHE", "false")

import jax
import pytest


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_enable_compilation_cache", False)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """`getkey()` returns a new PRNG key each call (deterministic per test)."""
    counter = iter(range(10**9))
    base = jax.random.key(5678)
    return lambda: jax.random.fold_in(base, next(counter))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under `make test` (`-n 2`, `--maxschedchunk 1`: one test at a time to each free worker)
    the experiments' quick runs, the longest tests by far (40-110 s each), go first, so that no
    worker is left running one alone at the end. (xdist_group cannot pin the figure-redraw test
    to gd_flow's worker: xdist 3.8 renames `item._nodeid`, which pytest 9 no longer reads.)"""
    quick = [item for item in items if "quick_results" in getattr(item, "fixturenames", ())]
    first = set(quick)
    items[:] = quick + [item for item in items if item not in first]
