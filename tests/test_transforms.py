"""dynopt.transforms (momentum family): identities against optax and against direct implementations
of the published recursions, plus the optax conformance battery (converges, no recompilation,
dtype kept, pytree params, inside optax.chain and under optax.inject_hyperparams)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import problems, transforms

from .helpers import tree_allclose, tree_max_abs_diff


# (name, factory, kwargs): every transform of this family is one row.
BATTERY = [
    ("nesterov", transforms.nesterov_momentum, dict(learning_rate=0.05, momentum=0.9)),
    (
        "nesterov_midpoint_theta_form",
        transforms.nesterov_momentum,
        dict(learning_rate=0.05, momentum=0.9, lookahead=0.5, reparametrize=False),
    ),
    (
        "implicit_midpoint",
        transforms.implicit_midpoint_momentum,
        dict(learning_rate=0.05, momentum=0.9),
    ),
    ("nag", transforms.nag, dict(learning_rate=0.05, r=3.0)),
    ("nag_x_form", transforms.nag, dict(learning_rate=0.05, r=3.0, reparametrize=False)),
]
IDS = [row[0] for row in BATTERY]


def _loss(params):
    # A pytree quadratic with minimizer w = 1, b = -2 (Hessian eigenvalues 1 and 4).
    return 0.5 * jnp.sum((params["w"] - 1.0) ** 2) + 2.0 * jnp.sum((params["b"] + 2.0) ** 2)


def _params(dtype):
    return {"w": jnp.zeros((2, 3), dtype), "b": jnp.ones((3,), dtype)}


def _step(tx, params, state):
    value, grad = jax.value_and_grad(_loss)(params)
    updates, state = tx.update(grad, state, params, value=value, value_fn=_loss)
    return optax.apply_updates(params, updates), state


@pytest.mark.parametrize("name,factory,kwargs", BATTERY, ids=IDS)
def test_battery(name, factory, kwargs):
    tx = factory(**kwargs)
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(1)
        return _step(tx, params, state)

    # Converges on the pytree parabola, and the second call does not recompile.
    params = _params(jnp.float64)
    state = tx.init(params)
    for _ in range(400):
        params, state = step(params, state)
    assert len(traces) == 1
    target = {"w": jnp.ones((2, 3)), "b": jnp.full((3,), -2.0)}
    assert tree_allclose(params, target, atol=1e-6), (name, params)

    # dtype kept: float32 params (hyper-parameters given as float64 arrays, strict promotion).
    kw32 = {k: jnp.asarray(v) if isinstance(v, float) else v for k, v in kwargs.items()}
    tx32 = factory(**kw32)
    p32 = _params(jnp.float32)
    s32 = tx32.init(p32)
    new_p, new_s = jax.jit(lambda p, s: _step(tx32, p, s))(p32, s32)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new_p))
    assert jax.tree.map(lambda a: (a.shape, a.dtype), new_s) == jax.tree.map(
        lambda a: (a.shape, a.dtype), s32
    )

    # Inside optax.chain (extra args pass through) it gives the same iterates.
    chained = optax.chain(optax.identity(), factory(**kwargs))
    p_a, s_a = _params(jnp.float64), tx.init(_params(jnp.float64))
    p_b, s_b = _params(jnp.float64), chained.init(_params(jnp.float64))
    for _ in range(5):
        p_a, s_a = _step(tx, p_a, s_a)
        p_b, s_b = _step(chained, p_b, s_b)
    assert tree_max_abs_diff(p_a, p_b) == 0.0

    # Under inject_hyperparams: same iterates, and a new learning rate does not recompile.
    static = tuple(k for k, v in kwargs.items() if isinstance(v, bool))
    injected = optax.inject_hyperparams(factory, static_args=static)(**kwargs)
    p_c, s_c = _params(jnp.float64), injected.init(_params(jnp.float64))
    count = []

    @jax.jit
    def inj_step(p, s):
        count.append(1)
        return _step(injected, p, s)

    for _ in range(5):
        p_c, s_c = inj_step(p_c, s_c)
    assert tree_allclose(p_a, p_c, rtol=1e-14, atol=1e-14)
    # (jnp.asarray(0.01) would be weakly typed: a different abstract value, hence a new trace.)
    s_c.hyperparams["learning_rate"] = jnp.full_like(s_c.hyperparams["learning_rate"], 0.01)
    inj_step(p_c, s_c)
    assert len(count) == 1


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


def test_theta_form_needs_value_fn():
    tx = transforms.nag(0.1, reparametrize=False)
    params = jnp.ones(2)
    with pytest.raises(ValueError, match="value_fn"):
        tx.update(params, tx.init(params), params)
