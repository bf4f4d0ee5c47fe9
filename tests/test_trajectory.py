import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import flows, problems


def _quadratic():
    return problems.quadratic([1.0, 10.0], rotate=True, seed=2)


def test_evaluate_is_the_dense_reference_between_save_times():
    """`evaluate(t)` of a reference solve is diffrax's dense output: the closed-form gradient flow
    at any t in [t0, t1] (not only at `ts`), to the solve's tolerance."""
    p = _quadratic()
    ts = jnp.linspace(0.0, 2.0, 5)
    ref = dynopt.solve(flows.GradientFlow(), p, ts)
    for t in (0.0, 0.137, 0.5, 1.9, 2.0):
        np.testing.assert_allclose(ref.evaluate(t), p.flow_solution(jnp.asarray(t)), atol=1e-9)
    np.testing.assert_allclose(ref.params, jnp.stack([p.flow_solution(t) for t in ts]), atol=1e-9)
    times = jnp.asarray([0.137, 1.9])  # several times at once: stacked
    np.testing.assert_allclose(ref.evaluate(times), jax.vmap(p.flow_solution)(times), atol=1e-9)
    assert ref.steps is None and ref.solver == "tsit5" and ref.stats["num_steps"] > 0
    assert int(ref.diverged_at) == -1 and not bool(ref.diverged)
    assert bool(jnp.all(ref.valid))


def test_evaluate_maps_the_flow_state_to_parameters():
    """For a flow with extra state (heavy ball: position and velocity) `evaluate` returns the
    parameters only, as `params` does."""
    p = _quadratic()
    ts = jnp.linspace(0.0, 1.0, 3)
    ref = dynopt.solve(flows.HeavyBall(1.0), p, ts)
    np.testing.assert_allclose(ref.evaluate(1.0), ref.params[-1], atol=1e-9)
    assert ref.evaluate(0.5).shape == p.params0.shape


def test_run_fields_mask_and_final_params():
    """A discrete run: times k·dt at the saved steps, the loss at them, `valid` masks the saved
    points before divergence, `final_params` is the last saved iterate (per batch entry)."""
    p = problems.quadratic([1.0, 100.0], rotate=True)
    hs = jnp.asarray([0.01, 0.05])  # the second is above 2/100 and diverges
    traj = dynopt.run(flows.GradientFlow().discretize(hs), p, 400, every=40)
    np.testing.assert_array_equal(traj.steps[0], np.arange(0, 401, 40))
    np.testing.assert_allclose(
        traj.ts, np.asarray(hs)[:, None] * np.asarray(traj.steps), rtol=1e-15
    )
    np.testing.assert_allclose(
        traj.loss[0], np.asarray([p.loss(x) for x in traj.params[0]]), rtol=1e-14
    )
    div = int(traj.diverged_at[1])
    assert int(traj.diverged_at[0]) == -1 and div > 0
    np.testing.assert_array_equal(traj.diverged, [False, True])
    np.testing.assert_array_equal(traj.valid[1], traj.steps[1] < div)
    assert bool(jnp.all(traj.valid[0]))
    np.testing.assert_array_equal(traj.final_params, traj.params[:, -1])
    assert traj.observations is None and traj.interpolation is None


def test_evaluate_on_a_discrete_run_raises():
    p = _quadratic()
    traj = dynopt.run(flows.GradientFlow().discretize(0.1), p, 10)
    with pytest.raises(ValueError, match="dense output of a reference solve"):
        traj.evaluate(0.5)


def test_evaluate_outside_the_interval_raises_naming_it():
    ref = dynopt.solve(flows.GradientFlow(), _quadratic(), jnp.linspace(0.5, 2.0, 4), t0=0.5)
    for t in (2.5, 0.0, float("nan")):
        with pytest.raises(ValueError, match=r"t must be in \[0.5, 2\]"):
            ref.evaluate(t)
    np.testing.assert_allclose(ref.evaluate(2.0), ref.params[-1], atol=1e-12)
