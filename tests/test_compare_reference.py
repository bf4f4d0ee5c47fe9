"""`compare(..., keep_reference=True)`: the reference solve comes back as `Comparison.reference`,
the `Trajectory` `solve` gives, so checks along it (the Lyapunov identity, a closed form) need
no second solve (experiments/gd_flow.py compiled one per problem)."""

import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import _compare, flows, lyapunov, problems

from .helpers import optimized_compilation


def _sweep(problem, t1=0.5):
    hs = t1 / np.array([8.0, 16.0, 32.0])
    return dynopt.compare(flows.GradientFlow(), problem, hs, t1, keep_reference=True), t1


@pytest.mark.parametrize(
    "problem",
    [
        problems.quadratic(jnp.array([0.5, 2.0, 7.0]), rotate=True, seed=3),
        problems.logistic_regression(32, 3, seed=1),
    ],
    ids=["quadratic", "logistic"],
)
def test_the_kept_reference_is_the_solve_bit_for_bit(problem):
    """The same solver, tolerances and steps as `solve`: its dense output, the values and the
    Lyapunov rates along it equal `solve`'s bit for bit (optimized code, as users compile),
    and the comparison itself is that of a call without it."""
    with optimized_compilation():
        kept, t1 = _sweep(problem)
        plain = dynopt.compare(flows.GradientFlow(), problem, np.asarray(kept.step_sizes), t1)
        ts = jnp.linspace(0.0, t1, 11)
        ref = dynopt.solve(flows.GradientFlow(), problem, ts)
        ours, theirs = lyapunov.rates(kept.reference, problem, ts), lyapunov.rates(ref, problem, ts)
        on_kept = kept.reference.evaluate(ts)
    assert plain.reference is None
    for field in ("errors", "final_errors", "diverged_at", "order"):
        np.testing.assert_array_equal(getattr(kept, field), getattr(plain, field))
    assert kept.reference.solver == ref.solver == kept.solver
    assert kept.reference.stats["num_steps"] == ref.stats["num_steps"]
    np.testing.assert_array_equal(kept.reference.ts, [t1])
    np.testing.assert_array_equal(kept.reference.params, np.asarray(ref.params)[-1:])
    np.testing.assert_array_equal(kept.reference.loss, np.asarray(ref.loss)[-1:])
    np.testing.assert_array_equal(on_kept, ref.params)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


def test_a_reference_saved_at_the_runs_times_is_kept_at_those_times(monkeypatch):
    """Where the runs read the reference saved at their times (no dense output), the kept
    reference holds those saves, in order, up to t1 (the buffer's padding dropped), and says it
    has no dense output when evaluated."""
    monkeypatch.setattr(_compare, "DENSE_COMPARE_BYTES", -1)
    problem = problems.quadratic(jnp.array([0.5, 2.0]))
    kept, t1 = _sweep(problem)
    ts = np.asarray(kept.reference.ts)
    np.testing.assert_allclose(ts, np.arange(33) * t1 / 32, rtol=0, atol=1e-15)
    exact = problem.flow_solution(jnp.asarray(ts))
    np.testing.assert_allclose(kept.reference.params, exact, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="dense output"):
        kept.reference.evaluate(0.1)


def test_keep_reference_is_refused_for_a_per_step_reference_and_a_non_bool():
    problem = problems.quadratic(jnp.array([0.5, 2.0]))
    hs = 0.5 / np.array([8.0, 16.0, 32.0])
    with pytest.raises(ValueError, match="keep_reference=True keeps a single reference"):
        dynopt.compare(
            flows.GradientFlow(),
            problem,
            hs,
            0.5,
            reference=flows.ModifiedGradientFlow,
            keep_reference=True,
        )
    with pytest.raises(ValueError, match="keep_reference must be True or False"):
        dynopt.compare(flows.GradientFlow(), problem, hs, 0.5, keep_reference="yes")
