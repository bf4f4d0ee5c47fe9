"""Probe of `run`'s saved points under divergence: a sweep whose runs
fail at different steps (a square root whose argument GD drives negative: NaN loss, then NaN
gradients), with an observer, saved every `every` steps and run in chunks, is `every = 1`'s run
read at the saved steps: the same `diverged_at`, parameters, losses and observations (the
block replay finds each first failing step; a frozen run's observer sees its frozen state).
Passed before this session; kept as a guard of the replay."""

import jax.numpy as jnp
import numpy as np
import pytest

import dynopt


def _sqrt_loss(x):
    return jnp.sum(jnp.sqrt(x))


def _observe(params, opt_state, problem):
    return {"params": params, "loss": problem.loss(params)}


PROBLEM = dynopt.Problem(_sqrt_loss, jnp.array([9.0, 16.0]))
STEPS = jnp.array([1.0, 3.0, 6.0, 10.0, 20.0, 50.0])


@pytest.mark.parametrize("every, batch_size", [(3, None), (8, 4), (24, 1)])
def test_a_diverging_sweep_saved_every_k_steps_is_every_1s_run_read_there(every, batch_size):
    disc = dynopt.flows.GradientFlow().discretize(STEPS)
    each = dynopt.run(disc, PROBLEM, 24, observe=_observe)
    # GD from (9, 16): the first coordinate passes 0 at a step that shrinks with h.
    assert each.diverged_at.tolist() == [-1, 13, 7, 5, 3, 2]
    assert np.all(np.isnan(np.asarray(each.loss)[1:, -1]))  # reported, and masked by `valid`
    assert not np.any(np.asarray(each.valid)[1:, -1])
    traj = dynopt.run(disc, PROBLEM, 24, every=every, observe=_observe, batch_size=batch_size)
    assert traj.diverged_at.tolist() == each.diverged_at.tolist()
    assert traj.steps.tolist() == [list(range(0, 25, every))] * len(STEPS)
    for a, b in zip(
        (traj.params, traj.loss, traj.observations["params"], traj.observations["loss"]),
        (each.params, each.loss, each.observations["params"], each.observations["loss"]),
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[:, ::every])
