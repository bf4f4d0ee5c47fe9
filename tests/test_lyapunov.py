import jax.numpy as jnp
import numpy as np

import dynopt
from dynopt import flows, lyapunov, problems


def test_gradient_flow_loss_rate_identity_on_rosenbrock():
    p = problems.rosenbrock()
    ref = dynopt.solve(flows.GradientFlow(), p, jnp.array([3.0]))
    ts = jnp.linspace(0.0, 3.0, 301)
    measured = lyapunov.loss_rate(ref, p, ts)
    predicted = -lyapunov.gradient_norm_sq(ref, p, ts)
    assert float(lyapunov.max_relative_deviation(measured, predicted)) < 1e-6
    assert np.all(np.asarray(measured) <= 0)


def test_loss_rate_detects_a_wrong_prediction():
    p = problems.quadratic([1.0, 4.0])
    ref = dynopt.solve(flows.GradientFlow(), p, jnp.array([1.0]))
    ts = jnp.linspace(0.0, 1.0, 11)
    measured = lyapunov.loss_rate(ref, p, ts)
    wrong = -0.5 * lyapunov.gradient_norm_sq(ref, p, ts)
    assert float(lyapunov.max_relative_deviation(measured, wrong)) > 0.5


def test_predicted_rate_uses_the_flow_hook_and_the_chain_rule_by_default():
    """A flow without a closed-form rate (AdamW) gets the chain rule; the identity holds."""
    p = problems.rosenbrock()
    ts = jnp.linspace(0.0, 0.5, 51)
    ref = dynopt.solve(flows.AdamWFlow(2.0, 5.0, 1e-8, 0.1), p, ts)
    predicted = lyapunov.predicted_rate(ref, p, ts)
    np.testing.assert_allclose(predicted, lyapunov.chain_rule_rate(ref, p, ts), rtol=1e-14)
    assert float(lyapunov.identity_deviation(ref, p, ts)) < 1e-6
