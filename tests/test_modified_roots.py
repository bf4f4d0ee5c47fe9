"""Square roots at zero in an optimizer's update (`dynopt._modified.roots`): the modified flow of
Adam on a problem with parameters whose gradient vanishes identically (an unused leaf, the
weights of an always-zero input), against the same problem without them."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import networks
from dynopt._modified import modified_flow
from dynopt._modified.roots import sqrt0, zero_safe_roots


_ADAM = lambda h: optax.adam(h, b1=0.5, b2=0.6, eps=0.3)  # eps_root = 0: sqrt(v) itself


def _f(w):
    return jnp.log(jnp.cosh(w - 1.0)) + 0.1 * w**3


def _fields(optimizer, problem, order):
    flow = modified_flow(optimizer, 0.01, order)
    return [np.asarray(f) for f in flow.terms(flow.init(problem.params0), problem).fields]


@pytest.mark.parametrize("order", [1, 2, 3])
def test_an_unused_parameter_has_field_zero_and_leaves_the_others_exact(order):
    """theta[1] never enters the loss: Adam never moves it (v = 0 there on the slow manifold).
    JAX's derivative of sqrt at 0 times the zero tangent was NaN and `terms` refused the whole
    flow. Now its fields are exactly 0 and theta[0]'s equal the one-parameter problem's,
    computed where no root meets 0, to rounding (1e-14: other array shapes, other fusions)."""
    two = dynopt.Problem(lambda t: _f(t[0]), jnp.array([0.3, 0.7]))
    one = dynopt.Problem(lambda t: _f(t[0]), jnp.array([0.3]))
    for f2, f1 in zip(_fields(_ADAM, two, order), _fields(_ADAM, one, order), strict=True):
        assert f2[1] == 0.0
        np.testing.assert_allclose(f2[0], f1[0], rtol=1e-14)


def test_a_network_with_an_always_zero_input_has_a_finite_adam_flow():
    """A tanh MLP on data whose first input is always 0 (as digits' border pixels): the weights
    reading it have gradient 0 identically. The order-2 Adam field is finite, 0 on those
    weights, and on the others equal to the field of the same network without that input."""
    x, y = networks.gaussian_regression(24, 3, seed=0)
    x0 = jnp.concatenate([jnp.zeros((x.shape[0], 1)), x], axis=1)
    key = jax.random.key(1)
    small = eqx.nn.MLP(3, 1, 4, 1, activation=jnp.tanh, key=key)
    # The same network with one more input whose weights are arbitrary (never read: x = 0).
    w0 = small.layers[0].weight
    wide_w = jnp.concatenate([jnp.full((w0.shape[0], 1), 0.5), w0], axis=1)
    wide = eqx.tree_at(
        lambda m: m.layers[0].weight, eqx.nn.MLP(4, 1, 4, 1, jnp.tanh, key=key), wide_w
    )
    wide = eqx.tree_at(lambda m: m.layers[0].bias, wide, small.layers[0].bias)
    wide = eqx.tree_at(lambda m: m.layers[1], wide, small.layers[1])
    p_small = networks.network_problem(small, (x, y), loss="mse")
    p_wide = networks.network_problem(wide, (x0, y), loss="mse")
    flow = modified_flow(_ADAM, 0.01, 2)
    fw = flow.terms(flow.init(p_wide.params0), p_wide).fields
    fs = flow.terms(flow.init(p_small.params0), p_small).fields
    for a, b in zip(fw, fs, strict=True):
        wa = a.layers[0].weight
        assert np.all(np.asarray(wa[:, 0]) == 0.0)
        np.testing.assert_allclose(wa[:, 1:], b.layers[0].weight, rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose(a.layers[1].weight, b.layers[1].weight, rtol=1e-13, atol=1e-16)


def test_a_gradient_entry_crossing_zero_keeps_orders_one_and_two():
    """At theta0 = 1, log-cosh's gradient is 0 with curvature 1: sqrt(v) = |g| is C^1 there.
    Adam's f1 = -g/(|g| + eps) and f2 = -(H P0/D)[B1 - B2 u/D] (P0 = g/D, D = |g| + eps,
    u = |g|, Cattaneo et al.) are both 0 at g = 0 (they were NaN); the other entry, where g != 0,
    is f1's closed form to rounding."""
    problem = dynopt.Problem(lambda t: jnp.sum(jnp.log(jnp.cosh(t - 1.0))), jnp.array([1.0, 0.2]))
    f1, f2 = _fields(_ADAM, problem, 2)
    assert f1[0] == 0.0 and f2[0] == 0.0
    g = np.tanh(0.2 - 1.0)
    np.testing.assert_allclose(f1[1], -g / (abs(g) + 0.3), rtol=1e-14)


def test_sqrt0_is_sqrt_with_derivative_zero_at_zero_and_transposes():
    """Unchanged where x > 0 (value and derivative bit for bit, forward and reverse); at x = 0
    the derivative is 0 (JAX's is +inf, and 0 * inf = NaN for the zero tangent that a second
    moment has at its minimum); linear in the tangent, so `grad` and `linearize` work."""
    x = jnp.array([0.0, 0.25, 2.0])
    np.testing.assert_array_equal(sqrt0(x), jnp.sqrt(x))
    _, t = jax.jvp(sqrt0, (x,), (jnp.ones(3),))
    _, ref = jax.jvp(jnp.sqrt, (x,), (jnp.ones(3),))
    assert t[0] == 0.0 and np.isinf(ref[0])  # and 0 * inf = NaN for a zero tangent
    np.testing.assert_array_equal(t[1:], ref[1:])
    g = jax.grad(lambda x: jnp.sum(sqrt0(x)))(x)
    np.testing.assert_array_equal(g[1:], jax.grad(lambda x: jnp.sum(jnp.sqrt(x)))(x)[1:])
    assert g[0] == 0.0
    # Inside a jitted call (jnp.linalg.norm) and nested jvps.
    norm = zero_safe_roots(lambda v: jnp.linalg.norm(v))
    h = jax.jacfwd(jax.jacfwd(norm))(jnp.zeros(2))
    assert np.all(np.isfinite(h))


def test_a_root_at_its_floor_on_the_manifold_refuses_orders_above_one():
    """AdaBelief's second moment is an EMA of (g - m)², which its slow manifold makes O(h²): at
    optax's eps_root = 1e-16 the root sqrt(s + eps_root) is |O(h)| for every usable h but
    smooth at h = 0, so the derivatives at h = 0 miss the step's O(h) terms. The order-2 flow
    was returned silently and the run tracked it to order 1.02 (errors 0.025, 0.012, 0.0062 at
    h = 0.02, 0.01, 0.005 on a log-sum-exp dict problem, twice the order-1 flow's). Order 1
    holds, and a floor at the scale of the step (the registry row's eps_root = 0.2) expands."""
    tiny = lambda h: optax.adabelief(h, b1=0.5, b2=0.6, eps=0.3)  # eps_root = 1e-16
    with pytest.raises(ValueError, match=r"order=2: .*square root.*eps_root"):
        modified_flow(tiny, 0.01, 2)
    with pytest.raises(ValueError, match=r"order=3: .*square root"):
        modified_flow(tiny, 0.01, 3)
    modified_flow(tiny, 0.01, 1)
    modified_flow(lambda h: optax.adabelief(h, b1=0.5, b2=0.6, eps=0.3, eps_root=0.2), 0.01, 2)
    modified_flow(_ADAM, 0.01, 2)  # sqrt(v), v = g² + O(h) on the manifold: no floor
