"""Polyak and preconditioned flows: post 3's escape, exp(-t) decay, the discretizations, Newton's
closed form, validation, and the Lyapunov identities of the adaptive flows. Conformance and
orders are the registry battery (tests/test_correspondences.py)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import flows, lyapunov, problems


def _post3_loss(x):
    x = x[0]
    return x * (x - 1) * (x - 3) ** 2 + 1.62276


def _polyak_end(problem):
    traj = dynopt.run(flows.PolyakFlow(M=1000.0).discretize(0.01), problem, 2500, every=2500)
    return traj.final_params[0], traj.loss[-1]


def test_post3_example_truncated_polyak_escapes_gd_does_not():
    """Post 3: x0 = 4, h = 0.01, 2500 steps, M = 1000 ends near the global minimum x ≈ 0.407;
    GD ends in the local minimum x = 3. Also: the run is Su's update formula, step by step."""
    p = dynopt.Problem(_post3_loss, jnp.array([4.0]), name="post3")
    polyak = dynopt.run(flows.PolyakFlow(M=1000.0).discretize(0.01), p, 2500)
    gd = dynopt.run(flows.GradientFlow().discretize(0.01), p, 2500)
    assert abs(float(gd.final_params[0]) - 3.0) < 1e-9
    # The escape is chaotic (jumps of up to h*M*L ≈ 16: perturbing x0 by 1e-9, or the rounding
    # of one operation, changes where step 2500 lands; 5 starts all ending in the global basin
    # on one build failed on another), so the statement is about many starts near 4: most end
    # in the global minimum's basin (left of the barrier x ≈ 1.84), GD's none. Measured: 84%
    # and 86% of 201 starts under two XLA optimization levels (13% have not escaped by step
    # 2500); 70% is 5 standard errors of a 201-run share below.
    starts = jnp.asarray(4.0 + np.linspace(-1e-2, 1e-2, 201))[:, None]
    ends = jax.vmap(lambda x0: _polyak_end(eqx.tree_at(lambda q: q.params0, p, x0)))(starts)
    barrier = float(np.sort(np.roots(np.polyder(np.poly([0.0, 1.0, 3.0, 3.0]))).real)[1])
    assert 1.8 < barrier < 1.9
    share = float(np.mean(np.asarray(ends[0]) < barrier))
    assert share >= 0.7, share
    gd_ends = jax.vmap(
        lambda x0: dynopt.run(
            flows.GradientFlow().discretize(0.01), eqx.tree_at(lambda q: q.params0, p, x0), 2500
        ).final_params[0]
    )(starts)
    np.testing.assert_allclose(np.asarray(gd_ends), 3.0, atol=1e-6)
    g = jax.jit(jax.grad(lambda x: _post3_loss(jnp.atleast_1d(x))))
    x, xs = 4.0, [4.0]
    for _ in range(200):  # before the chaotic phase
        gx = float(g(x))
        x += 0.01 * -np.sign(gx) * min(abs(gx) / gx**2, 1000) * float(_post3_loss(jnp.array([x])))
        xs.append(x)
    np.testing.assert_allclose(np.asarray(polyak.params[:201, 0]), xs, rtol=1e-12)


def test_polyak_flow_loss_decays_exactly_as_exp_minus_t():
    p = problems.rosenbrock()
    ts = jnp.linspace(0.0, 8.0, 81)
    ref = dynopt.solve(flows.PolyakFlow(), p, ts)
    rel = np.asarray(ref.loss) / (float(ref.loss[0]) * np.exp(-np.asarray(ts))) - 1.0
    assert np.max(np.abs(rel)) < 1e-7  # rtol 1e-10 per step, 8 time units
    assert float(lyapunov.identity_deviation(ref, p, ts)) < 1e-6


def test_polyak_discretizations():
    g, L, h = jnp.array([3.0, 4.0]), 10.0, 0.1
    untrunc = flows.PolyakFlow().discretize(h).transform
    u, _ = untrunc.update(g, untrunc.init(g), g, value=L)
    np.testing.assert_allclose(u, -h * L * g / 25.0, rtol=1e-15)
    trunc = flows.PolyakFlow(M=0.1).discretize(h).transform  # min(1/|g|, M) = M = 0.1
    u, _ = trunc.update(g, trunc.init(g), g, value=L)
    np.testing.assert_allclose(u, -h * L * 0.1 * g / 5.0, rtol=1e-15)
    big = flows.PolyakFlow(M=1e6).discretize(h).transform  # truncation inactive: untruncated
    np.testing.assert_allclose(big.update(g, big.init(g), g, value=L)[0], -h * L * g / 25.0)
    # Why not optax.polyak_sgd(scaling=h): optax 0.2.8 divides by |h g|^2, so steps scale as 1/h.
    tx = optax.polyak_sgd(max_learning_rate=jnp.inf, scaling=h)
    np.testing.assert_allclose(tx.update(g, tx.init(g), g, value=L)[0], -L * g / (h * 25.0))


def _newton_problem():
    return problems.quadratic([1.0, 100.0], params0=jnp.array([1.0, -2.0]), rotate=True)


def test_newton_flow_closed_form_and_solvers_agree():
    """P = H^{-1} on a quadratic: θ(t) = θ* + e^{-t}(θ0 - θ*), every direction at rate 1."""
    p = _newton_problem()
    ts = jnp.linspace(0.0, 3.0, 31)
    flow = flows.PreconditionedFlow(flows.NewtonPreconditioner(), check_on=p)
    ref = dynopt.solve(flow, p, ts)
    exact = np.exp(-np.asarray(ts))[:, None] * np.asarray(p.params0)
    assert np.max(np.abs(np.asarray(ref.params) - exact)) < 1e-8
    assert float(lyapunov.identity_deviation(ref, p, ts)) < 1e-6
    v = jnp.array([0.3, -1.0])
    via_cg = flows.NewtonPreconditioner(linear_solver="cg")(p.params0, v, p.loss)
    np.testing.assert_allclose(via_cg, jnp.linalg.solve(p.hessian, v), rtol=1e-10)
    # Preconditioned GD with Newton's P: damped Newton, θ_{k+1} = (1 - h) θ_k on a quadratic.
    traj = dynopt.run(flow.discretize(0.25), p, 8)
    np.testing.assert_allclose(traj.final_params, 0.75**8 * p.params0, rtol=1e-12)


def _diag(params):
    return jax.tree.map(lambda x: 1.0 / (1.0 + x**2), params)


def test_diagonal_preconditioner_lyapunov_and_euler():
    p = problems.rosenbrock()
    flow = flows.PreconditionedFlow(flows.DiagonalPreconditioner(_diag), check_on=p)
    ts = jnp.linspace(0.0, 0.5, 51)
    ref = dynopt.solve(flow, p, ts)
    measured = lyapunov.loss_rate(ref, p, ts)
    predicted = -lyapunov.preconditioned_norm_sq(ref, p, ts, flow.P)
    assert float(lyapunov.max_relative_deviation(measured, predicted)) < 1e-6
    assert np.all(np.asarray(measured) < 0)
    traj = dynopt.run(flow.discretize(1e-3), p, 3)
    x = p.params0
    for _ in range(3):
        x = x - 1e-3 * _diag(x) * p.grad(x)
    np.testing.assert_allclose(traj.final_params, x, rtol=1e-14)


def _nonsymmetric(params, v, loss_fn):
    return jnp.array([[1.0, 2.0], [0.0, 1.0]]) @ v


def _indefinite(params, v, loss_fn):
    return jnp.array([1.0, -1.0]) * v


def test_preconditioner_validation():
    p = problems.quadratic([1.0, 2.0])
    with pytest.raises(ValueError, match="P must be symmetric"):
        flows.PreconditionedFlow(_nonsymmetric, check_on=p)
    with pytest.raises(ValueError, match="P must be positive definite"):
        flows.PreconditionedFlow(_indefinite, check_on=p)
    saddle = problems.quadratic([1.0, -2.0])
    with pytest.raises(ValueError, match="P must be positive definite"):
        flows.PreconditionedFlow(flows.NewtonPreconditioner(), check_on=saddle)
    flows.PreconditionedFlow(flows.NewtonPreconditioner(damping=3.0), check_on=saddle)
    with pytest.raises(ValueError, match="P must be hashable"):
        flows.PreconditionedFlow(eqx.Partial(_indefinite, loss_fn=None, v=jnp.ones(2)))
    with pytest.raises(ValueError, match="damping"):
        flows.NewtonPreconditioner(damping=-1.0)
    with pytest.raises(ValueError, match="linear_solver"):
        flows.NewtonPreconditioner(linear_solver="qr")
    with pytest.raises(ValueError, match="M must be > 0"):
        flows.PolyakFlow(M=0.0)


@pytest.mark.parametrize(
    "flow, tol",
    [
        (flows.PolyakFlow(M=0.05), 1e-6),
        (flows.RMSPropFlow(3.0, 1e-4), 1e-6),
        (flows.AdamFlow(2.0, 5.0, 1e-8), 1e-6),
    ],
    ids=["polyak-truncated", "rmsprop", "adam"],
)
def test_lyapunov_identities(flow, tol):
    """dL/dt measured on the solved trajectory vs the flow's closed-form rate, to solver accuracy;
    for all but Adam the rate is <= 0 (L is a Lyapunov function)."""
    p = problems.rosenbrock()
    ts = jnp.linspace(0.0, 0.5, 51)
    ref = dynopt.solve(flow, p, ts)
    assert float(lyapunov.identity_deviation(ref, p, ts)) < tol
    if not isinstance(flow, flows.AdamFlow):
        assert np.all(np.asarray(lyapunov.predicted_rate(ref, p, ts)) <= 0)
