"""A `Problem`'s `stochastic_loss_fn` is checked at construction as its `loss_fn` is: one
that does not take `(params, key)` or returns no scalar failed only inside the first
`run(..., key=...)`, with a `TypeError` from the call or from `jax.grad`."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt


def _loss(p):
    return jnp.sum(p**2)


@pytest.mark.parametrize(
    "stochastic, match",
    [
        (lambda p: jnp.sum(p), r"stochastic_loss_fn must take \(params, key\)"),
        (lambda p, k: p * jax.random.normal(k), "stochastic_loss_fn must return a scalar"),
        (lambda p, k: jnp.sum(p > 0), "stochastic_loss_fn must return a real floating scalar"),
    ],
)
def test_a_bad_stochastic_loss_is_a_value_error_at_construction(stochastic, match):
    with pytest.raises(ValueError, match=match):
        dynopt.Problem(_loss, jnp.ones(2), stochastic_loss_fn=stochastic)


def test_a_good_stochastic_loss_runs():
    def stochastic(p, key):
        return _loss(p + 0.1 * jax.random.normal(key, p.shape))

    problem = dynopt.Problem(_loss, jnp.ones(2), stochastic_loss_fn=stochastic)
    traj = dynopt.run(optax.sgd(0.1), problem, 4, key=jax.random.key(0))
    assert traj.params.shape == (5, 2) and traj.diverged_at == -1


def test_a_finite_sum_of_numpy_data_is_still_built():
    x = np.ones((10, 3))

    def sample(w, s):
        return 0.5 * (s[0] @ w - s[1]) ** 2

    p = dynopt.problems.finite_sum(sample, (x, np.ones(10)), jnp.zeros(3), batch_size=2)
    traj = dynopt.run(optax.sgd(0.1), p, 3, key=jax.random.key(0))
    assert float(traj.loss[0]) == 0.5
