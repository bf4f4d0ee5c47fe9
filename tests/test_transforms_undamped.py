"""The undamped limit β = 1 of dynopt's momentum transforms: `HeavyBall(0.0)` is a valid flow,
and the maps that discretize it with β = 1 − ah must build and run (they raised inside jit)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import flows, maps, problems, transforms


def test_nesterov_momentum_one_is_optax_nesterov():
    # reparametrize=True with look-ahead 1 is optax.sgd(α, momentum=β, nesterov=True), β = 1 too.
    problem = problems.quadratic(jnp.array([0.5, 2.0]))
    ours = dynopt.run(transforms.nesterov_momentum(0.1, 1.0), problem, 40)
    ref = dynopt.run(optax.sgd(0.1, momentum=1.0, nesterov=True), problem, 40)
    assert not ours.diverged.any()
    np.testing.assert_allclose(ours.params, ref.params, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("scheme", [maps.Lookahead(), maps.Lookahead(0.5), maps.ImplicitMidpoint()])
def test_undamped_heavy_ball_maps_run(scheme):
    # On λ/2 x² the undamped schemes are stable below their limit: |x| stays bounded by its
    # start's energy scale, and the run neither raises nor diverges.
    problem = problems.quadratic(jnp.array([1.0]))
    h = 0.5 * scheme.stability_limit(flows.HeavyBall(0.0), 1.0)
    traj = dynopt.run(scheme(flows.HeavyBall(0.0), h), problem, 200)
    assert not bool(traj.diverged)
    assert np.all(np.isfinite(np.asarray(traj.params)))
    assert np.max(np.abs(np.asarray(traj.params))) < 10.0


@pytest.mark.parametrize(
    "factory", [transforms.nesterov_momentum, transforms.implicit_midpoint_momentum]
)
def test_momentum_above_one_is_refused(factory):
    with pytest.raises(ValueError, match="momentum"):
        factory(0.1, 1.5)
