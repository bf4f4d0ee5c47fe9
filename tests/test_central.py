"""The GD central flow: the complementarity solver's conditions on random instances, the
one-direction closed form, gradient flow below the threshold, vmap over learning rates."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from dynopt import networks, sharpness
from dynopt._flows.central import (
    central_path,
    CentralFlow,
    solve_complementarity,
    third_derivatives,
)


@pytest.fixture(scope="module")
def net():
    x, y = networks.gaussian_regression(32, 4, 1)
    model = networks.mlp(4, 1, width=12, depth=2, activation=jax.nn.swish, key=jax.random.key(0))
    return networks.network_problem(model, (x, y))


def test_complementarity_conditions_on_random_instances():
    k, n, batch = 4, 12, 16
    keys = jax.random.split(jax.random.key(0), batch)

    def instance(key):
        kg, kc = jax.random.split(key)
        G = jax.random.normal(kg, (k, k, n))
        G = 0.5 * (G + jnp.swapaxes(G, 0, 1))  # G_ij = G_ji, as third derivatives
        c = jax.random.normal(kc, (k, k))
        return 0.5 * (c + c.T), jnp.einsum("ijn,abn->ijab", G, G)

    c, gram = jax.vmap(instance)(keys)
    sol = jax.jit(jax.vmap(solve_complementarity))(c, gram)
    tol = 1e-8
    for i in range(batch):
        X, K = np.asarray(sol.X[i]), np.asarray(sol.K[i])
        scale = np.linalg.norm(c[i]) + 1.0
        assert sol.residual[i] <= 1e-10
        assert np.linalg.eigvalsh(X).min() >= -tol * scale  # Σ ⪰ 0
        assert np.linalg.eigvalsh(K).min() >= -tol * scale  # no eigenvalue pushed over
        assert abs(np.sum(X * K)) <= tol * scale * (1 + np.linalg.norm(X))  # complementarity
    # Not all trivial: some instances have several active directions.
    ranks = [np.sum(np.linalg.eigvalsh(np.asarray(x)) > 1e-8) for x in sol.X]
    assert max(ranks) >= 2


def test_one_direction_closed_form():
    """At a point where η = 2/λ_max exactly (B = 0) and the sharpness rises, the solver's σ²
    equals 2⟨-∇L, ∇S⟩/‖∇S‖² with ∇S = D³L[u, u]. (The central-flow reference example's
    network: 8 → 16 → 16 → 1, swish, 128 Gaussian points; it sharpens from the start.)"""
    x, y = networks.gaussian_regression(128, 8, 1)
    model = networks.mlp(8, 1, width=16, depth=2, activation=jax.nn.swish, key=jax.random.key(0))
    net = networks.network_problem(model, (x, y))
    w = net.params0
    start = sharpness.random_start(jax.random.key(0), net.num_params, 1)
    eig = sharpness.top_eigenpairs(net.grad, w, start)
    grad_S = third_derivatives(net, w, eig.vectors)[0, 0]
    grad_L = ravel_pytree(net.grad(w))[0]
    norm2 = jnp.vdot(grad_S, grad_S)
    central = eqx.filter_jit(lambda f: f.central(w, net, refresh=True))
    # (a) At the threshold, B = 0: σ² = max(0, 2<-∇L, ∇S>/|∇S|²).
    eta = 2.0 / eig.values[0]
    state = central(CentralFlow(eta, k=1, basis=eig.vectors))
    sigma2 = 2.0 * jnp.vdot(-grad_L, grad_S) / norm2
    np.testing.assert_allclose(state.X[0, 0], jnp.maximum(sigma2, 0.0), rtol=1e-7, atol=1e-12)
    # (b) 10% above it (B < 0), the stabilized closed form σ² = max(0, -2(g + rB)/|∇S|²) > 0,
    # and dS/dt = <∇S, ẇ> = rB < 0: the sharpness returns to the threshold at rate r.
    eta = 2.0 * 1.1 / eig.values[0]
    flow = CentralFlow(eta, k=1, basis=eig.vectors, stabilization=2.0)
    state = central(flow)
    rate, gap = 2.0 / eta, 2.0 / eta - eig.values[0]
    sigma2 = -2.0 * (jnp.vdot(grad_S, grad_L) + rate * gap) / norm2
    assert sigma2 > 0
    np.testing.assert_allclose(state.X[0, 0], sigma2, rtol=1e-7)
    np.testing.assert_allclose(jnp.vdot(grad_S, state.velocity), rate * gap, rtol=1e-6)
    # The predicted loss is L + σ²λ/2.
    np.testing.assert_allclose(
        state.predicted_loss, net.loss(w) + 0.5 * sigma2 * eig.values[0], rtol=1e-7
    )


def test_below_the_threshold_it_is_gradient_flow_and_it_vmaps_over_learning_rates(net):
    ts = jnp.asarray([0.0, 0.5, 1.0])
    etas = jnp.asarray([0.01, 0.02])  # 2/η far above λ_max ≈ 1.2: no direction active

    def path(eta):
        return central_path(CentralFlow(eta, k=2), net, ts)[0]

    out = eqx.filter_jit(jax.vmap(path))(etas)
    assert np.all(np.asarray(out.X) == 0.0)
    np.testing.assert_allclose(out.loss[0], out.loss[1], rtol=1e-13)  # the same flow, any η
    np.testing.assert_allclose(out.predicted_loss, out.loss, rtol=0, atol=0)
    # Gradient flow: the loss decreases at the rate ‖∇L‖².
    assert np.all(np.diff(np.asarray(out.loss[0])) < 0)


def test_bad_input(net):
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        CentralFlow(0.0)
    with pytest.raises(ValueError, match="k must be in"):
        CentralFlow(0.1, k=100).central(net.params0, net)
