"""Strict numerics for the whole test run (as diffrax's test suite): float64, strict dtype
promotion, rank promotion raises; fresh PRNG keys from a fixture; figures on the Agg backend."""

import gc
import os

from experiments._xla import use_elemental_emitter


os.environ.setdefault("MPLBACKEND", "Agg")
# The suite's exact comparisons (bit for bit, rtol 1e-14) and golden values are those of XLA's
# CPU programs: on a GPU (an H100, jax 0.11.2, 2026-12-06) 7 of 197 tests of the core files
# differed at 1e-13 to 1e-11 relative (GPU eigh and reductions round otherwise, and the host-device
# sharding tests compare a CPU child with a GPU parent). So it runs on the CPU unless the caller
# chooses: `JAX_PLATFORMS=cuda make test` runs it on a GPU, where those comparisons can fail.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Test workers fill the cores already; a multi-threaded BLAS inside each fights the others.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# The suite is compile-bound: XLA's backend compilation was 62% of its worker time
# (jax.monitoring over a whole run, 2 cores). It compiles with XLA:CPU's cheaper settings, the
# same operations: the elemental emitter instead of the fusion emitters (which build one
# MLIR -> LLVM module per fusion: 1,173 for the order-3 AdaBelief comparison) and
# `jax_disable_most_optimizations` (no LLVM optimization). 1,049 s -> 555 s on 2 cores, every
# golden value within its tolerance. Bit-for-bit comparisons of two different programs hold
# for optimized code: they turn LLVM's optimizations back on (`optimized_compilation`). Set
# before JAX starts its backend and in the environment, so that child processes compile as the
# parent. Either is the caller's where given: `JAX_DISABLE_MOST_OPTIMIZATIONS=0
# XLA_FLAGS=--xla_cpu_use_fusion_emitters=true` runs the suite as XLA compiles by default.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# (Only where this jaxlib knows the flag: XLA aborts the process on an unknown one.)
use_elemental_emitter()
# JAX's persistent compilation cache is used where JAX_COMPILATION_CACHE_DIR names a folder:
# `make test` points it at .cache/jax (`make clean` removes it), so a second run loads the
# programs the first compiled. A plain `pytest` runs without it.

import jax
import pytest


# (JAX may be imported already by a pytest plugin, before the environment above was read.)
jax.config.update(
    "jax_disable_most_optimizations",
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"].lower() in ("1", "true", "t", "yes", "y", "on"),
)
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """`getkey()` returns a new PRNG key each call (deterministic per test)."""
    counter = iter(range(10**9))
    base = jax.random.key(5678)
    return lambda: jax.random.fold_in(base, next(counter))


def _mappings() -> int:
    """This process's memory mappings (0 where /proc is absent)."""
    try:
        with open("/proc/self/maps") as maps:
            return sum(1 for _ in maps)
    except OSError:
        return 0


def _release_compiled_programs() -> None:
    jax.clear_caches()
    gc.collect()


# Every compiled XLA program holds ~3 memory mappings for as long as a jit cache keeps it (the
# library's `filter_jit` entry points keep one per problem, flow and static option). A test worker
# that lives through ~300 tests reaches Linux's limit of 65,530 mappings (vm.max_map_count), and
# XLA's next compilation segfaults: that crashed two workers in each of three CI runs. So the
# caches are emptied after every module, and after any test that leaves the worker above 20,000.
@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs_per_module():
    yield
    _release_compiled_programs()


@pytest.fixture(autouse=True)
def _release_compiled_programs_when_many():
    yield
    if _mappings() > 20_000:
        _release_compiled_programs()


# Fixtures that compute a child-process result once per run under a file lock
# (`tests.helpers.once_per_run`).
_ONCE_PER_RUN = ("workers", "sharded")
# The tests after the experiments' quick runs that took longest (`--durations`, 2026-12-06,
# 4-25 s each on a quiet 2-core machine).
_SLOW = (
    "tests/test_central.py::test_central_solve_holds_the_edge_with_either_solver",
    "tests/test_characteristics.py::test_programs_hold_no_host_callbacks",
    "tests/test_sharpness.py::test_lanczos_tracks_along_a_run_as_closely_as_lobpcg",
    "tests/test_games_float32.py::test_compare_of_a_float32_game_is_the_float64_games_to_float32_rounding",
    "tests/test_saving.py::test_saving_at_times_is_diffraxs_save_at_ts_for_sdes",
    "tests/test_central.py::test_scalar_rmsprop_central_flow_is_the_stable_flow_below_the_edge",
    "tests/test_correspondences.py::test_automatic_order[auto_adabelief-logcosh-p3]",
    "tests/test_characteristics.py::test_point_focus_is_a_crossing",
    "tests/test_central.py::test_more_directions_at_the_edge_than_k_are_said",
    "tests/test_correspondences.py::test_automatic_order[auto_rmsprop_momentum-logcosh-p2]",
    "tests/test_readme.py::test_every_python_snippet_in_the_readme_runs",
    "tests/test_mixed_dtype.py::test_strict_promotion_compare_and_automatic_solver",
    "tests/test_sharpness.py::test_tracking_inside_run_records_the_saved_iterates_eigenvalues",
    "tests/test_densities_nd.py::test_routes_agree_on_a_nonlinear_non_gradient_drift",
    "tests/test_experiments.py::test_run_all_jobs_runs_each_experiment_in_its_own_process",
    "tests/test_solve.py::test_dense_memory_guard_counts_the_solver_values_per_step",
    "tests/test_central_probe.py::test_cnn_cross_entropy_field_against_a_dense_reference",
    "tests/test_modified_optax_contrib.py::test_a_transform_acting_by_shape_is_checked_on_the_users_parameters",
    "tests/test_modifying.py::test_target_flow_at_order_two_on_logistic_regression",
    # (the next two wait on spawned workers: 10 and 11 s of wall time)
    "tests/test_experiments.py::test_continuum_order_cells_give_their_own_numbers_in_worker_processes",
    "tests/test_experiments.py::test_ctrl_c_stops_a_parallel_run_all_and_its_workers",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under `make test` (`-n 2`, `--dist worksteal`: each worker starts with one contiguous half
    of this order and takes half of the other's remaining tests when it runs out) the
    experiments' quick runs, the longest tests by far (10-20 s each), go first, so that no
    worker is left running one alone at the end. Then one test of each once-per-run fixture,
    and that fixture's other tests where the second worker starts, halfway through the rest:
    one worker computes the result while the other runs the quick runs, and neither waits on
    the lock (8 s) for the other. (Each quick run is
    made once per run, by whichever worker first asks, `once_per_run`: the figure-redraw test
    reads gd_flow's where the other worker made it. xdist_group could not pin it to that
    worker: xdist 3.8 renames `item._nodeid`, which pytest 9 no longer reads.)"""

    def uses(item, name):
        return name in getattr(item, "fixturenames", ())

    quick = [item for item in items if uses(item, "quick_results")]
    once = [item for item in items if any(uses(item, name) for name in _ONCE_PER_RUN)]
    early = [next(i for i in once if uses(i, name)) for name in _ONCE_PER_RUN if any(
        uses(i, name) for i in once)]  # fmt: skip
    late = [item for item in once if item not in early]
    placed = set(quick) | set(once)
    rest = [item for item in items if item not in placed]
    # The longest of the rest next (a stable sort keeps their order): collected in file order,
    # the ones in test_s*.py came last, and a worker ran one alone while the other idled.
    rest.sort(key=lambda item: not item.nodeid.startswith(_SLOW))
    # The second worker's first tests (worksteal hands the first worker len(items) // 2); not at
    # the very end: their own calls take 1-9 s.
    half = min(max(len(items) // 2 - len(quick) - len(early), 0), len(rest))
    items[:] = quick + early + rest[:half] + late + rest[half:]
