"""HeavyBall and its maps: Su's leapfrog map (identity with eqs. 13-16), optax's heavy ball as
conformal-symplectic Euler, the closed form, stability limits (closed forms vs Schur–Cohn on a
grid vs measured), the inverse maps and the tuning rule, and bad input. Orders of every map are
rows of `dynopt.correspondences` (tests/test_correspondences.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

import dynopt
from dynopt import flows, maps, problems


def test_closed_form_matches_diffrax_in_every_regime():
    """`HeavyBall.closed_form` (per eigenmode) against diffrax, under-, critically and
    over-damped modes at once, and the 1-D `oscillator_solution`."""
    problem = problems.quadratic([0.25, 1.0, 9.0], params0=jnp.array([1.0, -2.0, 0.5]), rotate=True)
    ts = jnp.linspace(0.0, 5.0, 26)
    flow = flows.HeavyBall(2.0)  # a = 2: modes with λ = 0.25, 1, 9 are over, critical, under
    exact = jax.vmap(flow.closed_form(problem))(ts)
    ref = dynopt.solve(flow, problem, ts)
    assert np.max(np.abs(np.asarray(ref.params) - np.asarray(exact[0]))) < 1e-8
    osc = problems.quadratic(jnp.array([1.0]))
    x = jax.vmap(flows.HeavyBall(0.5).closed_form(osc))(ts)[0][:, 0]
    np.testing.assert_allclose(x, flows.oscillator_solution(np.asarray(ts), 0.5), atol=1e-14)


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
    flow, h = maps.ConformalEuler().inverse(alpha, mu)
    disc = maps.ConformalEuler()(flow, h)
    assert np.allclose(float(disc.hyperparams["learning_rate"]), alpha, rtol=1e-14)
    assert np.allclose(float(disc.hyperparams["momentum"]), mu, rtol=1e-14)
    xs = dynopt.run(optax.sgd(alpha, momentum=mu), problem, n).params
    grad = jax.jit(jax.grad(problem.loss))
    gamma, q, p = -np.log(mu) / h, np.array([-1.2, 1.0]), np.zeros(2)
    for k in range(n):
        p = np.exp(-gamma * h) * p - h * np.asarray(grad(jnp.asarray(q)))
        q = q + h * p
        assert np.max(np.abs(q - np.asarray(xs[k + 1]))) < 1e-12


@pytest.mark.parametrize("map", [maps.Leapfrog(), maps.NaiveEuler(), maps.ConformalEuler()])
@settings(max_examples=50, deadline=None)
@given(
    learning_rate=st.floats(1e-6, 1.0),
    momentum=st.floats(0.0, 0.999),
)
def test_inverse_round_trip(map, learning_rate, momentum):
    if isinstance(map, maps.ConformalEuler):
        momentum = max(momentum, 1e-3)
    flow, h = map.inverse(learning_rate, momentum)
    hp = map.hyperparams(flow, h)
    assert np.isclose(float(hp["learning_rate"]), learning_rate, rtol=1e-12, atol=0)
    assert np.isclose(float(hp["momentum"]), momentum, rtol=1e-12, atol=1e-15)
    # and the other way: (a, h) -> (α, β) -> (a, h)
    flow2, h2 = map.inverse(hp["learning_rate"], hp["momentum"])
    assert np.isclose(float(h2), float(h), rtol=1e-12)
    assert np.isclose(float(flow2.damping), float(flow.damping), rtol=1e-9, atol=1e-12)


def test_tuning_rule_keeps_damping():
    beta, alpha = 0.9, 0.01
    assert np.isclose(float(flows.rescale_momentum(beta, 0.1)), 0.968377223398, atol=1e-12)
    for r in (0.1, 0.5, 2.0, 4.0):
        new = flows.rescale_momentum(beta, r)
        # Exact for the Euler map: a = (1 - β)/√α is invariant.
        a0 = maps.NaiveEuler().inverse(alpha, beta)[0].damping
        a1 = maps.NaiveEuler().inverse(alpha * r, new)[0].damping
        assert np.isclose(float(a1), float(a0), rtol=1e-12)
        # Leapfrog: changes by sqrt((1+β)/(1+β')) = 1 + O(ah), nothing else.
        b0 = flows.HeavyBall.from_hyperparams(alpha, beta)[0].damping
        b1 = flows.HeavyBall.from_hyperparams(alpha * r, new)[0].damping
        assert np.isclose(float(b1 / b0), np.sqrt((1 + beta) / (1 + float(new))), rtol=1e-12)
    with pytest.raises(ValueError, match="lr_ratio"):
        flows.rescale_momentum(0.5, 10.0)


def _schur_cohn_limit(map, damping, lam):
    """Largest stable z = h sqrt(lam) on a fine grid, from the recurrence's own coefficients:
    one step of the map on x'' with theta_{n+1} = T theta_n - D theta_{n-1} (D, T measured by
    running the transform on the 1-D quadratic from two independent starts)."""
    flow = flows.HeavyBall(damping)
    b = damping / np.sqrt(lam)
    # The maps with beta = 1 - a h are defined for a h <= 1 only (z <= 1/b).
    top = 3.0 if isinstance(map, maps.Leapfrog | maps.ConformalEuler) or b == 0 else 1 / b
    zs = np.linspace(1e-3, min(3.0, top), 3001)
    hp = jax.vmap(lambda h: map.hyperparams(flow, h))(jnp.asarray(zs / np.sqrt(lam)))
    al, beta = np.asarray(hp["learning_rate"]) * lam, np.asarray(hp["momentum"])
    c = {maps.Lookahead: getattr(map, "lookahead", 0.0)}.get(type(map), 0.0)
    d = beta * (1 - c * al)
    t = 1 + d - al
    if isinstance(map, maps.ImplicitMidpoint):
        stable = al < 2
    else:
        stable = (np.abs(d) <= 1) & (np.abs(t) < 1 + d)
    return zs[np.argmin(stable) - 1] if not stable.all() else np.inf


@pytest.mark.parametrize(
    "map",
    [
        maps.Leapfrog(),
        maps.NaiveEuler(),
        maps.ConformalEuler(),
        maps.Lookahead(1.0),
        maps.Lookahead(0.5),
        maps.ImplicitMidpoint(),
    ],
)
@pytest.mark.parametrize("damping", [0.0, 1.0, 5.0])
def test_stability_limit_closed_forms_vs_schur_cohn_grid(map, damping):
    """Each map's closed-form (or optimistix) limit against the Schur–Cohn conditions on a grid
    of z with spacing 1e-3 (no bisection anywhere)."""
    lam = 100.0
    predicted = map.stability_limit(flows.HeavyBall(damping), lam) * np.sqrt(lam)
    assert abs(predicted - _schur_cohn_limit(map, damping, lam)) <= 1.5e-3


def test_stability_limits_measured_vs_predicted():
    """Largest stable h·√λmax: leapfrog exactly 2 for any damping; the others per Schur–Cohn."""
    lf = maps.Leapfrog()
    assert lf.stability_limit(flows.HeavyBall(0.0), 100.0) * 10 == pytest.approx(2.0, abs=1e-12)
    assert lf.stability_limit(flows.HeavyBall(5.0), 100.0) * 10 == pytest.approx(2.0, abs=1e-12)
    mid = maps.Lookahead(0.5).stability_limit(flows.HeavyBall(1.0), 100.0) * 10
    assert mid == pytest.approx(np.sqrt(2.0), abs=1e-12)
    for map in (maps.Leapfrog(), maps.Lookahead(1.0)):  # all six: experiments/momentum.py (full)
        flow = flows.HeavyBall(1.0)
        lo, hi = maps.measure_stability_limit(map, flow, 100.0, num_steps=2000, grid=16, rounds=2)
        predicted = map.stability_limit(flow, 100.0) * 10
        # Bracket width ~0.013; 2000 steps resolve a growth rate of ~1e-3 per step.
        assert lo - 0.01 <= predicted <= hi + 0.01, (map, lo, hi, predicted)


def test_divergence_reported_with_step():
    problem = problems.quadratic(jnp.array([100.0]))
    traj = dynopt.run(flows.HeavyBall(1.0).discretize(2.2 / 10.0), problem, 5000)
    assert int(traj.diverged_at) > 0
    assert np.all(np.isfinite(np.asarray(traj.params)))


def test_bad_input():
    with pytest.raises(ValueError, match="damping"):
        flows.HeavyBall(-1.0)
    with pytest.raises(ValueError, match="step_size"):
        flows.HeavyBall(1.0).discretize(0.0)
    with pytest.raises(ValueError, match="step_size"):
        flows.HeavyBall(1.0).discretize(3.0)  # a h > 2: negative momentum
    with pytest.raises(ValueError, match="step_size <= 1/damping"):
        maps.NaiveEuler()(flows.HeavyBall(1.0), 1.5)
    with pytest.raises(ValueError, match="momentum"):
        flows.HeavyBall.from_hyperparams(0.1, 1.0)
    with pytest.raises(ValueError, match="momentum"):
        flows.HeavyBall.from_hyperparams(0.1, -0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        flows.HeavyBall.from_hyperparams(0.0, 0.9)
    with pytest.raises(ValueError, match="momentum"):
        flows.RescaledGradientFlow(1.0)
