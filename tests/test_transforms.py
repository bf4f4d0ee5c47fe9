"""dynopt.transforms (momentum family): identities against optax and against direct implementations
of the published recursions, the extra-argument protocol (`grad_fn`), and the implicit midpoint
solve. Conformance (dtype, retraces, chain, inject_hyperparams) is the registry battery
(tests/test_correspondences.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import problems, transforms


def _rosenbrock_run(tx, n=60):
    problem = problems.rosenbrock(params0=jnp.array([-1.2, 1.0]))
    return dynopt.run(tx, problem, n).params


def test_standard_nesterov_equals_optax():
    ours = _rosenbrock_run(transforms.nesterov_momentum(1e-3, 0.9))
    ref = _rosenbrock_run(optax.sgd(1e-3, momentum=0.9, nesterov=True))
    assert np.max(np.abs(ours - ref)) < 1e-12
    # lookahead 0 is heavy ball, i.e. optax.sgd with momentum.
    ours0 = _rosenbrock_run(transforms.nesterov_momentum(1e-3, 0.9, 0.0))
    ref0 = _rosenbrock_run(optax.sgd(1e-3, momentum=0.9))
    assert np.max(np.abs(ours0 - ref0)) < 1e-12


@pytest.mark.parametrize("lookahead", [1.0, 0.5])
def test_theta_reparametrization_identity(lookahead):
    """Θ_n - cβ v_n = θ_n: the framework form and the look-ahead form give the same iterates."""
    alpha, beta = 1e-3, 0.9
    big = _rosenbrock_run(transforms.nesterov_momentum(alpha, beta, lookahead))
    theta = _rosenbrock_run(
        transforms.nesterov_momentum(alpha, beta, lookahead, reparametrize=False)
    )
    v = np.diff(theta, axis=0, prepend=theta[:1])  # v_n = θ_n - θ_{n-1}, v_0 = 0
    assert np.max(np.abs(big - lookahead * beta * v - theta)) < 1e-12
    # ... and θ follows Su's eq. (20) directly (numpy oracle).
    grad = jax.jit(jax.grad(problems.rosenbrock().loss))
    th, vv = np.array([-1.2, 1.0]), np.zeros(2)
    for n in range(theta.shape[0] - 1):
        vv = beta * vv - alpha * np.asarray(grad(jnp.asarray(th + lookahead * beta * vv)))
        th = th + vv
        assert np.max(np.abs(th - theta[n + 1])) < 1e-12


def test_implicit_midpoint_solves_its_equation():
    alpha, beta = 1e-3, 0.9
    theta = _rosenbrock_run(transforms.implicit_midpoint_momentum(alpha, beta))
    grad = jax.vmap(jax.grad(problems.rosenbrock().loss))
    v = np.diff(theta, axis=0)
    v_prev = np.concatenate([np.zeros((1, 2)), v[:-1]])
    residual = v - (beta * v_prev - alpha * np.asarray(grad(jnp.asarray(theta[:-1] + v / 2))))
    # tol = 16 eps relative to |v|; the contraction factor here is alpha*lambda/2 < 0.6.
    assert np.max(np.abs(residual)) < 1e-13


def test_nag_matches_su_boyd_candes_recursion():
    s, r = 1e-3, 3.0
    x_form = _rosenbrock_run(transforms.nag(s, r, reparametrize=False))
    y_form = _rosenbrock_run(transforms.nag(s, r))
    grad = jax.jit(jax.grad(problems.rosenbrock().loss))
    x_prev = y = x = np.array([-1.2, 1.0])
    for k in range(1, x_form.shape[0]):
        x = y - s * np.asarray(grad(jnp.asarray(y)))
        y = x + (k - 1) / (k + r - 1) * (x - x_prev)
        x_prev = x
        assert np.max(np.abs(x - x_form[k])) < 1e-12
        assert np.max(np.abs(y - y_form[k])) < 1e-12


def test_theta_form_needs_a_gradient_oracle():
    tx = transforms.nag(0.1, reparametrize=False)
    params = jnp.ones(2)
    with pytest.raises(ValueError, match="grad_fn"):
        tx.update(params, tx.init(params), params)


@pytest.mark.parametrize(
    "tx",
    [
        transforms.nag(0.01, reparametrize=False),
        transforms.nesterov_momentum(0.01, 0.9, 0.5, reparametrize=False),
        transforms.implicit_midpoint_momentum(0.01, 0.9),
    ],
    ids=["nag", "midpoint_lookahead", "implicit_midpoint"],
)
def test_grad_fn_is_the_oracle(tx):
    """The extra gradients come from `grad_fn` (a minibatch's oracle), not from `value_fn`."""
    loss = problems.rosenbrock().loss
    params = jnp.array([-1.2, 1.0])
    state = tx.init(params)
    g = jax.grad(loss)(params)
    a = tx.update(g, state, params, grad_fn=jax.grad(loss))[0]
    b = tx.update(g, state, params, value_fn=loss)[0]  # optax's name, as a fallback
    c = tx.update(g, state, params, grad_fn=jax.grad(loss), value_fn=lambda p: 2 * loss(p))[0]
    np.testing.assert_allclose(a, b, rtol=1e-15)
    np.testing.assert_allclose(a, c, rtol=1e-15)
