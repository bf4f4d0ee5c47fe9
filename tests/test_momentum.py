"""HeavyBall: Su's leapfrog map (identity with eqs. 13-16, second order), the naive and conformal
maps (first order), the Nesterov variants (first order), stability limits, the inverse map and the
tuning rule, the fixed-momentum limit, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

import dynopt
from dynopt import flows, problems
from experiments.momentum import measure_stability_limit, oscillator_solution


DAMPING = 0.5
OSC = problems.quadratic(jnp.array([1.0]), name="oscillator")


def _oscillator_errors(flow, t1, ns):
    """Max error over [0, t1] against the closed form, for h = t1/n: one batched run."""
    hs = t1 / np.asarray(ns, dtype=float)
    traj = dynopt.run(flow.discretize(jnp.asarray(hs)), OSC, int(max(ns)))
    assert not np.any(np.asarray(traj.diverged))
    errs = []
    for i, n in enumerate(ns):
        t = np.arange(n + 1) * hs[i]
        exact = oscillator_solution(t, float(flow.damping))
        errs.append(np.max(np.abs(np.asarray(traj.params)[i, : n + 1, 0] - exact)))
    return hs, np.asarray(errs)


@pytest.mark.parametrize(
    "scheme,half_step,order",
    [
        ("leapfrog", True, 2.0),
        ("leapfrog", False, 1.0),  # optax's zero trace: the start costs one order
        ("euler", True, 1.0),
        ("conformal", True, 1.0),
        ("nesterov", True, 1.0),
        ("nesterov_midpoint", True, 1.0),
        ("implicit_midpoint", True, 1.0),
    ],
)
def test_orders_on_damped_oscillator(scheme, half_step, order):
    flow = flows.HeavyBall(DAMPING, scheme=scheme, half_step=half_step)
    hs, errs = _oscillator_errors(flow, 8.0, (80, 160, 320, 640))
    assert abs(float(dynopt.fit_order(jnp.asarray(hs), jnp.asarray(errs))) - order) < 0.1


def test_leapfrog_second_order_on_rosenbrock():
    c = dynopt.compare(
        flows.HeavyBall(2.0), problems.rosenbrock(), 1.0 / np.array([400, 800, 1600, 3200]), 1.0
    )
    assert abs(float(c.order) - 2.0) < 0.1


def test_leapfrog_is_su_eqs_13_to_16():
    """optax.sgd with the leapfrog map and the half-step start = Su's (13)-(14) with θ on integer
    and η on half-integer steps, η_{-1/2} = (h/2)∇L(θ_0)."""
    a, h, n = 0.7, 0.05, 200
    problem = problems.rosenbrock(params0=jnp.array([-1.2, 1.0]))
    traj = dynopt.run(flows.HeavyBall(a).discretize(h), problem, n)
    grad = jax.jit(jax.grad(problem.loss))
    theta = np.array([-1.2, 1.0])
    eta = h / 2 * np.asarray(grad(jnp.asarray(theta)))
    for k in range(n):
        g = np.asarray(grad(jnp.asarray(theta)))
        # (14): (η+ - η)/h = -a(η+ + η)/2 - g, solved for η+; (13): θ+ = θ + h η+.
        eta = ((1 - a * h / 2) * eta - h * g) / (1 + a * h / 2)
        theta = theta + h * eta
        assert np.max(np.abs(theta - np.asarray(traj.params[k + 1]))) < 1e-12


def test_optax_heavy_ball_is_conformal_symplectic_euler():
    """sgd(α, μ) = conformal-symplectic Euler with h = √α, γ = -ln μ/√α, p = -√α·trace."""
    alpha, mu, n = 1e-4, 0.9, 300
    problem = problems.rosenbrock(params0=jnp.array([-1.2, 1.0]))
    flow, h = flows.HeavyBall.from_hyperparams(alpha, mu, scheme="conformal")
    disc = flow.discretize(h)
    assert np.allclose(float(disc.hyperparams["learning_rate"]), alpha, rtol=1e-14)
    assert np.allclose(float(disc.hyperparams["momentum"]), mu, rtol=1e-14)
    xs = dynopt.run(optax.sgd(alpha, momentum=mu), problem, n).params
    grad = jax.jit(jax.grad(problem.loss))
    gamma, q, p = -np.log(mu) / h, np.array([-1.2, 1.0]), np.zeros(2)
    for k in range(n):
        p = np.exp(-gamma * h) * p - h * np.asarray(grad(jnp.asarray(q)))
        q = q + h * p
        assert np.max(np.abs(q - np.asarray(xs[k + 1]))) < 1e-12


@pytest.mark.parametrize("scheme", ["leapfrog", "euler", "conformal"])
@settings(max_examples=50, deadline=None)
@given(
    learning_rate=st.floats(1e-6, 1.0),
    momentum=st.floats(0.0, 0.999),
)
def test_from_hyperparams_round_trip(scheme, learning_rate, momentum):
    if scheme == "conformal":
        momentum = max(momentum, 1e-3)
    flow, h = flows.HeavyBall.from_hyperparams(learning_rate, momentum, scheme=scheme)
    hp = flow.hyperparams(h)
    assert np.isclose(float(hp["learning_rate"]), learning_rate, rtol=1e-12, atol=0)
    assert np.isclose(float(hp["momentum"]), momentum, rtol=1e-12, atol=1e-15)
    # and the other way: (a, h) -> (α, β) -> (a, h)
    flow2, h2 = flows.HeavyBall.from_hyperparams(hp["learning_rate"], hp["momentum"], scheme)
    assert np.isclose(float(h2), float(h), rtol=1e-12)
    assert np.isclose(float(flow2.damping), float(flow.damping), rtol=1e-9, atol=1e-12)


def test_tuning_rule_keeps_damping():
    beta, alpha = 0.9, 0.01
    assert np.isclose(float(flows.rescale_momentum(beta, 0.1)), 0.968377223398, atol=1e-12)
    for r in (0.1, 0.5, 2.0, 4.0):
        new = flows.rescale_momentum(beta, r)
        # Exact for the Euler map: a = (1 - β)/√α is invariant.
        a0 = flows.HeavyBall.from_hyperparams(alpha, beta, "euler")[0].damping
        a1 = flows.HeavyBall.from_hyperparams(alpha * r, new, "euler")[0].damping
        assert np.isclose(float(a1), float(a0), rtol=1e-12)
        # Leapfrog: changes by sqrt((1+β)/(1+β')) = 1 + O(ah), nothing else.
        b0 = flows.HeavyBall.from_hyperparams(alpha, beta)[0].damping
        b1 = flows.HeavyBall.from_hyperparams(alpha * r, new)[0].damping
        assert np.isclose(float(b1 / b0), np.sqrt((1 + beta) / (1 + float(new))), rtol=1e-12)
    with pytest.raises(ValueError, match="lr_ratio"):
        flows.rescale_momentum(0.5, 10.0)


def test_stability_limits_measured_vs_predicted():
    """Largest stable h·√λmax: leapfrog exactly 2 for any damping; the others per Schur–Cohn."""
    assert flows.HeavyBall(0.0).stability_limit(100.0) == pytest.approx(2.0, abs=1e-9)
    assert flows.HeavyBall(5.0).stability_limit(100.0) == pytest.approx(2.0, abs=1e-9)
    flow = flows.HeavyBall(1.0, scheme="nesterov_midpoint")
    assert flow.stability_limit(100.0) == pytest.approx(np.sqrt(2.0), abs=1e-9)
    for scheme in ("leapfrog", "nesterov"):  # all six: experiments/momentum.py (full)
        flow = flows.HeavyBall(1.0, scheme=scheme)
        lo, hi = measure_stability_limit(flow, 100.0, num_steps=2000, grid=16, rounds=2)
        predicted = flow.stability_limit(100.0)
        # Bracket width ~0.013; 2000 steps resolve a growth rate of ~1e-3 per step.
        assert lo - 0.01 <= predicted <= hi + 0.01, (scheme, lo, hi, predicted)


def test_fixed_momentum_regime_first_order():
    beta = 0.9
    flow = flows.RescaledGradientFlow(beta)
    t1, ns = 1.0, np.array([200, 400, 800, 1600])
    hs = t1 / ns
    traj = dynopt.run(flow.discretize(jnp.asarray(hs)), OSC, int(ns.max()))
    errs = [
        np.max(
            np.abs(
                np.asarray(traj.params)[i, : n + 1, 0]
                - np.exp(-np.arange(n + 1) * hs[i] / (1 - beta))
            )
        )
        for i, n in enumerate(ns)
    ]
    assert abs(float(dynopt.fit_order(jnp.asarray(hs), jnp.asarray(errs))) - 1.0) < 0.1


def test_divergence_reported_with_step():
    problem = problems.quadratic(jnp.array([100.0]))
    traj = dynopt.run(flows.HeavyBall(1.0).discretize(2.2 / 10.0), problem, 5000)
    assert int(traj.diverged_at) > 0
    assert np.all(np.isfinite(np.asarray(traj.params)))


def test_bad_input():
    with pytest.raises(ValueError, match="damping"):
        flows.HeavyBall(-1.0)
    with pytest.raises(ValueError, match="scheme"):
        flows.HeavyBall(1.0, scheme="verlet")
    with pytest.raises(ValueError, match="step_size"):
        flows.HeavyBall(1.0).discretize(0.0)
    with pytest.raises(ValueError, match="step_size"):
        flows.HeavyBall(1.0).discretize(3.0)  # a h > 2: negative momentum
    with pytest.raises(ValueError, match="momentum"):
        flows.HeavyBall.from_hyperparams(0.1, 1.0)
    with pytest.raises(ValueError, match="momentum"):
        flows.HeavyBall.from_hyperparams(0.1, -0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        flows.HeavyBall.from_hyperparams(0.0, 0.9)
    with pytest.raises(ValueError, match="momentum"):
        flows.RescaledGradientFlow(1.0)
