"""End-to-end workflows of a researcher on real networks (`dynopt.networks`): what gave no answer,
a wrong one or a slow one, each against an independent computation."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynopt import networks, problems, sde


def _to(dtype, tree):
    return jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree)


def _digits_mlp(dtype):
    x, labels = networks.digits(40)
    model = _to(dtype, networks.mlp(64, 10, width=3, depth=1, key=jax.random.key(0)))
    return networks.network_problem(model, (x, labels), loss="cross_entropy", batch_size=8)


@pytest.mark.parametrize("model", ["sgd", "langevin"])
def test_simulate_a_float32_network(model):
    """`sde.simulate` on a float32 network (the SGD noise of a float32 digits MLP): under strict
    promotion a `TypePromotionError` (the float32 drift times diffrax's float64 step); under
    standard promotion it ran, in float64. (`Langevin` ran, but drew its Brownian increments
    in float32: other paths than the float64 model's from the same key.) It runs as `solve`
    does: the state in the times' dtype (float64), the field evaluated in the model's float32.
    Against the float64 model with the same weights and the same Brownian path (the same key,
    dtype and grid).

    Tolerance: the two differ only by the field's float32 evaluation, a relative error of a few
    eps32 (1.2e-7) per step, over 5 steps of dt = 0.1 (Euler-Maruyama; ShARK for Langevin) on
    weights of size O(1) and a noise of size sqrt(dt): 1e-5 is ~80 eps32."""
    flow = sde.SGDNoise(0.1, 8) if model == "sgd" else sde.Langevin(0.01)
    ts = jnp.array([0.0, 0.2, 0.5])
    key = jax.random.key(3)
    paths32 = sde.simulate(flow, _digits_mlp(jnp.float32), ts, key, 3, dt=0.1)
    paths64 = sde.simulate(flow, _digits_mlp(jnp.float64), ts, key, 3, dt=0.1)
    assert paths32.ys.dtype == jnp.float64
    assert paths32.num_diverged == 0
    assert float(jnp.max(jnp.abs(paths32.ys[:, -1] - paths32.ys[:, 0]))) > 1e-3  # it moved
    np.testing.assert_allclose(paths32.ys, paths64.ys, rtol=0, atol=1e-5)


def test_network_problem_names_a_stateful_layer():
    """A model with `eqx.nn.BatchNorm` (called as `model(x, state)`) was refused with "inputs of
    shape (4,) do not fit the model Sequential: AttributeError: 'object' object has no attribute
    'get'": a shape the model fits, blamed for the missing state. The error now names it."""
    key = jax.random.key(0)
    x, labels = networks.gaussian_classes(20, 4, 3)
    model = eqx.nn.Sequential(
        [eqx.nn.Linear(4, 3, key=key), eqx.nn.BatchNorm(3, "batch", mode="batch")]
    )
    with pytest.raises(ValueError, match=r"stateful layers.*BatchNorm.*model\(x\)"):
        networks.network_problem(model, (x, labels), loss="cross_entropy")


def test_quadratic_moments_refuse_a_network_at_a_saddle():
    """`quadratic_moments` on a tanh network at its initialization (Hessian eigenvalues from
    -0.79 to 1.33) returned E L = -19.3 at t = 5 for a squared loss: the moments of the quadratic
    model at a saddle, which has no minimizer. Refused now, naming the smallest eigenvalue; a
    quadratic with the same indefinite curvature is still exact and accepted."""
    x, y = networks.gaussian_regression(64, 3, 1, seed=2)
    model = networks.mlp(3, 1, width=3, depth=1, key=jax.random.key(1))
    problem = networks.network_problem(model, (x, y), loss="mse", batch_size=8)
    model = sde.SGDNoise(0.1, 8)
    with pytest.raises(ValueError, match=r"positive-definite Hessian at x0; its smallest"):
        sde.quadratic_moments(model, problem, jnp.array([0.0, 5.0]))
    with pytest.raises(ValueError, match=r"positive-definite Hessian"):
        sde.quadratic_stationary_covariance(model, problem)

    # L = theta^T A theta / 2 - mean(x) . theta with A = diag(1, -1/2): exact at a saddle. The
    # mean is x* + exp(-A t)(theta0 - x*), x* = A^-1 mean(x); rtol 1e-12 is the rounding of
    # the matrix exponential of the (d + d^2 + 1)-dimensional moment system.
    curvature = jnp.array([1.0, -0.5])
    data = jnp.asarray(np.random.default_rng(0).normal(size=(10, 2)))

    def sample_loss(theta, xi):
        return 0.5 * jnp.sum(curvature * theta * theta) - jnp.sum(xi * theta)

    saddle = problems.finite_sum(sample_loss, data, jnp.ones(2), batch_size=3)
    mom = sde.quadratic_moments(sde.SGDNoise(0.1, 3), saddle, jnp.array([0.0, 1.0]))
    xstar = jnp.mean(data, axis=0) / curvature
    expected = xstar + jnp.exp(-curvature * 1.0) * (1.0 - xstar)
    np.testing.assert_allclose(mom.mean[-1], expected, rtol=1e-12)


def test_network_problem_samples_with_replacement():
    """A minibatch larger than the data set was refused with "replace=True draws any number of
    samples with replacement", an argument `network_problem` did not take (a `TypeError`). It
    does now, as `problems.finite_sum`; `SGDNoise(..., replace=True)` then models the problem
    as built (`sgd_problem` returns it unchanged) and SGD runs on it."""
    x, labels = networks.gaussian_classes(20, 4, 3)
    model = networks.mlp(4, 3, width=4, depth=1, key=jax.random.key(0))
    problem = networks.network_problem(
        model, (x, labels), loss="cross_entropy", batch_size=32, replace=True
    )
    assert sde.SGDNoise(0.1, 32, replace=True).sgd_problem(problem) is problem
    value = problem.stochastic_loss(problem.params0, jax.random.key(1))
    assert np.isfinite(float(value))
