import jax.numpy as jnp
import numpy as np
import pytest

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


def test_rates_compile_once_for_new_times_and_references():
    """The rates are module-level programs: new save times (same count) and a new reference of
    the same shapes, from a new problem with the same loss, reuse the compiled program (the loss
    is traced once, not per call)."""
    traces = []

    def loss(theta):
        traces.append(None)  # runs only while tracing
        return jnp.sum(jnp.cosh(theta))

    p = dynopt.Problem(loss, jnp.array([1.0, -0.5]))
    flow = flows.GradientFlow()
    ref = dynopt.solve(flow, p, jnp.linspace(0.0, 1.0, 5))
    first = lyapunov.gradient_l1_norm(ref, p, jnp.linspace(0.0, 1.0, 11))
    after_first = len(traces)
    again = lyapunov.gradient_l1_norm(ref, p, jnp.linspace(0.1, 0.9, 11))
    q = dynopt.Problem(loss, jnp.array([0.3, 0.2]))  # a new problem with the same loss
    other = dynopt.solve(flow, q, jnp.linspace(0.0, 1.0, 5))
    lyapunov.gradient_l1_norm(other, q, jnp.linspace(0.0, 1.0, 11))
    assert len(traces) == after_first
    # and the numbers are the closed form |sinh(theta(t))|_1 on the reference
    ts = jnp.linspace(0.1, 0.9, 11)
    expected = jnp.stack([jnp.sum(jnp.abs(jnp.sinh(ref.evaluate(t)))) for t in ts])
    np.testing.assert_allclose(again, expected, rtol=1e-12)
    assert first.shape == (11,)


def test_rates_are_both_sides_of_the_identity_in_one_program():
    """`rates` gives `loss_rate` and `predicted_rate` (to rounding: another fused program), for a
    flow with a closed-form rate and for the chain rule; new times reuse its program."""
    traces = []

    def loss(theta):
        traces.append(None)  # runs only while tracing
        return jnp.sum(jnp.cosh(theta)) + theta[0] * theta[1]

    p = dynopt.Problem(loss, jnp.array([1.0, -0.5]))
    ts = jnp.linspace(0.0, 0.5, 21)
    for flow in (flows.GradientFlow(), flows.AdamWFlow(2.0, 5.0, 1e-8, 0.1)):
        ref = dynopt.solve(flow, p, ts)
        before = len(traces)
        measured, predicted = lyapunov.rates(ref, p, ts)
        traced = len(traces) - before
        lyapunov.rates(ref, p, ts[::-1])  # new times: the same program
        assert len(traces) - before == traced
        np.testing.assert_allclose(measured, lyapunov.loss_rate(ref, p, ts), rtol=1e-13)
        np.testing.assert_allclose(predicted, lyapunov.predicted_rate(ref, p, ts), rtol=1e-13)
        assert float(lyapunov.max_relative_deviation(measured, predicted)) < 1e-6


def test_the_identities_are_for_a_loss_and_say_what_they_need():
    """On a game the oracle's gradient is the simultaneous gradient ξ, not ∇H (its value):
    the predicted rate −‖ξ‖² = −2H is no dL/dt (a 100% "deviation" on an exact solve), so the
    identities refuse it; the chain rule ⟨∇H, ż⟩ still equals the measured rate. Bad `ts` and a
    solve without dense output are named."""
    from dynopt import games

    game = games.dirac_gan()
    ts = jnp.linspace(0.0, 1.0, 5)
    ref = dynopt.solve(games.GameFlow(), game, ts)
    for fn in (lyapunov.predicted_rate, lyapunov.rates, lyapunov.identity_deviation):
        with pytest.raises(ValueError, match=f"{fn.__name__} is for a loss"):
            fn(ref, game, ts)
    measured = lyapunov.loss_rate(ref, game, ts)
    chain = lyapunov.chain_rule_rate(ref, game, ts)
    np.testing.assert_allclose(chain, measured, atol=1e-9 * float(jnp.max(jnp.abs(measured))))
    q = problems.quadratic([1.0, 3.0])
    r = dynopt.solve(flows.GradientFlow(), q, ts)
    for bad in (0.5, jnp.full((2, 2), 0.5)):
        with pytest.raises(ValueError, match="ts must be a 1-D array of times"):
            lyapunov.rates(r, q, bad)
    with pytest.raises(ValueError, match="solve with dense=True"):
        lyapunov.rates(dynopt.solve(flows.GradientFlow(), q, ts, dense=False), q, ts)
