"""`solve`'s dense output on a network: sized to the steps the solve takes (a first solve
without dense output counts them), not preallocated for `max_steps` (helper C, session 36)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import _solve, flows, networks, problems

from .helpers import optimized_compilation


jax.config.update("jax_enable_x64", True)


def _digits_mlp(width: int):
    x, y = networks.digits(100)
    model = networks.mlp(64, 10, width=width, depth=1, key=jax.random.key(0))
    return networks.network_problem(model, (x, y), loss="cross_entropy")


def test_the_lyapunov_view_works_on_a_network_too_large_for_the_old_dense_buffer():
    """A 3,010-parameter MLP on digits: dense output for max_steps = 16,384 steps would be
    3.3 GiB, refused by the 2 GiB guard (so `dynopt.lyapunov` had no reference to read); the
    solve takes 58 steps, and the dense output now holds 64 (0.01 GiB). The gradient flow's
    identity dL/dt = -|grad L|^2 holds on it to the solver's and interpolation's accuracy
    (2.8e-9 measured; the rates are O(1))."""
    problem = _digits_mlp(40)
    assert problem.num_params == 3010
    ts = jnp.linspace(0.0, 5.0, 6)
    traj = dynopt.solve(flows.GradientFlow(), problem, ts, solver="tsit5")
    steps = int(traj.stats["num_steps"])
    assert traj.interpolation.ts.shape[0] - 1 <= 2 * steps < 16_384
    deviation = float(dynopt.lyapunov.identity_deviation(traj, problem, jnp.linspace(0, 5, 11)))
    assert deviation < 1e-6


# Solves small enough to run both ways: forced through the count (threshold 0), and the plain
# dense solve preallocated for max_steps.
_CASES = {
    "rosenbrock tsit5": (
        flows.GradientFlow(),
        dynopt.Problem(
            lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2, jnp.asarray([-1.0, 1.0])
        ),
        "tsit5",
    ),
    "heavy ball automatic": (flows.HeavyBall(0.5), problems.quadratic([1.0, 4.0, 9.0]), None),
    "stiff kvaerno5": (flows.GradientFlow(), problems.quadratic([1.0, 1e5]), "kvaerno5"),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_the_counted_dense_solve_is_the_plain_one_to_the_bit(monkeypatch, case):
    """The same controller and tolerances take the same steps: the dense solve sized by the
    count holds the plain dense solve's path, bit for bit, at the saved times, on its
    interpolation between them and in its statistics; only its buffers are shorter. (Compiled
    as users compile, with LLVM's optimizations: unoptimized, two programs may round one
    operation an ulp apart, `tests.helpers.optimized_compilation`.)"""
    flow, problem, solver = _CASES[case]
    ts = jnp.linspace(0.0, 2.0, 5)
    with optimized_compilation():
        plain = dynopt.solve(flow, problem, ts, solver=solver)
        monkeypatch.setattr(_solve, "DENSE_COUNTED_BYTES", 0)
        counted = dynopt.solve(flow, problem, ts, solver=solver)
    assert counted.interpolation.ts.shape[0] < plain.interpolation.ts.shape[0] == 16_385
    np.testing.assert_array_equal(counted.params, plain.params)
    np.testing.assert_array_equal(counted.loss, plain.loss)
    between = jnp.linspace(0.0, 2.0, 37)
    for t in between:
        np.testing.assert_array_equal(
            jax.flatten_util.ravel_pytree(counted.evaluate(t))[0],
            jax.flatten_util.ravel_pytree(plain.evaluate(t))[0],
        )
    assert {k: int(v) for k, v in counted.stats.items()} == {
        k: int(v) for k, v in plain.stats.items()
    }


def test_a_network_counted_without_forcing_matches_the_plain_solve(monkeypatch):
    """A 310-parameter MLP: 0.34 GiB of dense output for max_steps, over the 256 MiB threshold,
    so counted by default; the same values as the plain (preallocated) solve, bit for bit as
    users compile (unoptimized, as the suite compiles, they differed by an ulp, 2.8e-17)."""
    problem = _digits_mlp(4)
    ts = jnp.linspace(0.0, 3.0, 4)
    with optimized_compilation():
        counted = dynopt.solve(flows.GradientFlow(), problem, ts, solver="tsit5")
        monkeypatch.setattr(_solve, "DENSE_COUNTED_BYTES", float("inf"))
        plain = dynopt.solve(flows.GradientFlow(), problem, ts, solver="tsit5")
    assert counted.interpolation.ts.shape[0] <= 2 * int(counted.stats["num_steps"]) + 1
    assert plain.interpolation.ts.shape[0] == 16_385
    np.testing.assert_array_equal(
        jax.flatten_util.ravel_pytree(counted.params)[0],
        jax.flatten_util.ravel_pytree(plain.params)[0],
    )


def test_max_steps_stays_a_bound_and_the_guard_names_what_is_still_too_big(monkeypatch):
    """The caller's max_steps bounds the counting solve (its failure is the usual one, naming
    max_steps); a solve whose steps taken still need more than the guard's limit is refused
    with its message, now naming the steps it takes and what lowers them."""
    monkeypatch.setattr(_solve, "DENSE_COUNTED_BYTES", 0)
    p = problems.quadratic([1.0, 100.0])
    with pytest.raises(dynopt.SolveError, match=r"max_steps_reached.*\(now 40\)"):
        dynopt.solve(flows.GradientFlow(), p, [10.0], solver="tsit5", max_steps=40)
    monkeypatch.setattr(_solve, "DENSE_MEMORY_LIMIT", 1000)
    with pytest.raises(
        ValueError,
        match=r"dense output would preallocate about .* GiB \(\d+ steps for the \d+ it takes x 2 "
        r"state entries x 9 values per step\)\. Pass dense=False .* loosen rtol/atol",
    ):
        dynopt.solve(flows.GradientFlow(), p, [10.0], solver="tsit5")


def test_a_repeated_counted_solve_compiles_nothing_new(monkeypatch):
    """A new count rounds up to a power of 2 (with 1/16 to spare): a second solve from a nearby
    start reuses both programs."""
    monkeypatch.setattr(_solve, "DENSE_COUNTED_BYTES", 0)
    flow = flows.GradientFlow()
    p = problems.quadratic([1.0, 3.0], rotate=True)
    dynopt.solve(flow, p, [1.0], solver="tsit5")
    sizes = len(_solve._COMPILED)
    moved = problems.quadratic([1.0, 3.0], rotate=True, params0=jnp.array([0.9, -1.1]))
    dynopt.solve(flow, moved, [1.0], solver="tsit5")
    assert len(_solve._COMPILED) == sizes
    assert _solve._counted_budget(61, 16_384) == 64 and _solve._counted_budget(62, 16_384) == 128
    assert _solve._counted_budget(5000, 4096) == 4096


def test_compare_and_solve_switch_at_one_dense_size():
    """`compare` saves its reference at the runs' times above the size at which `solve` counts
    its steps first: one trade-off (memory and repeat-call time against a compile), one constant."""
    import dynopt._compare as _compare
    import dynopt._solve as _solve

    assert _compare.DENSE_COMPARE_BYTES == _solve.DENSE_COUNTED_BYTES
