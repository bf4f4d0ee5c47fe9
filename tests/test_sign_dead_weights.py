"""Sign descent (signSGD, signum, Lion) with gradient entries exactly 0 at the start: where the
entry vanishes identically near the start (a parameter the loss does not read, the weights of
a dead ReLU unit) the sign is 0 along the whole run and the field is 0 there; where it is 0
only by accident, the run leaves it at once and the flow is refused, the entry named."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt._modified import modified_flow


_A = jnp.asarray([[2.0, 0.5], [0.5, 1.0]])
_C = jnp.asarray([0.3, -0.2])
# Data of the dead unit: |d| <= 1, its weights 0.3 and bias -3, so w.d + b <= -2.5 < 0.
_D = jnp.asarray([[1.0, -0.5], [0.2, 0.9], [-0.7, 0.4], [0.5, 0.5]])
_Y = jnp.asarray([0.3, -0.1, 0.2, 0.4])


def _quartic(x):
    # ∇L(1.5, 1) ≈ (3.7, 2.5): no entry reaches 0 within t = 0.2 of the flows below.
    return 0.5 * (x - _C) @ _A @ (x - _C) + 0.1 * jnp.sum((x - _C) ** 4)


def _unused() -> dynopt.Problem:
    """θ[2] is never read: its gradient is 0 everywhere."""
    return dynopt.Problem(lambda t: _quartic(t[:2]), jnp.asarray([1.5, 1.0, 0.7]), name="unused")


def _dead_relu() -> dynopt.Problem:
    """A hidden ReLU unit that no data point activates (pre-activations <= -2.5): its input
    weights, bias and output weight have gradient exactly 0, though the loss reads them."""

    def loss(p):
        hidden = jax.nn.relu(_D @ p["w"] + p["b"])
        out = p["a"] * hidden + 0.1 * jnp.tanh(p["x"][0] + _D[:, 0])
        return _quartic(p["x"]) + 0.5 * jnp.mean((out - _Y) ** 2)

    p0 = {
        "x": jnp.asarray([1.5, 1.0]),
        "w": jnp.asarray([0.3, -0.3]),
        "b": jnp.asarray(-3.0),
        "a": jnp.asarray(0.7),
    }
    return dynopt.Problem(loss, p0, name="dead relu")


def _accidental() -> dynopt.Problem:
    """θ[2]'s gradient θ[2] - θ[0] + 1.5 is 0 at the start only: θ[0] moves at once."""
    return dynopt.Problem(
        lambda t: _quartic(t[:2]) + 0.5 * (t[2] - t[0] + 1.5) ** 2,
        jnp.asarray([1.5, 1.0, 0.0]),
        name="accidental",
    )


_W = 0.1  # weight decay: a field -wθ besides the sign, so the orders are not exact
_LION = lambda h: optax.lion(h, b1=0.5, b2=0.6, weight_decay=_W)
_SIGNUM_WD = lambda h: optax.chain(
    optax.trace(decay=0.5),
    optax.scale_by_sign(),
    optax.add_decayed_weights(_W),
    optax.scale(-h),
)
_EXACT = {
    "sign_sgd": lambda h: optax.sign_sgd(h),
    "signum": lambda h: optax.signum(h, beta=0.5),
}
_HS = (0.02, 0.01, 0.005)


@pytest.mark.parametrize("make", [_unused, _dead_relu], ids=["unused", "dead_relu"])
def test_an_identically_zero_gradient_entry_has_sign_field_zero(make):
    """Lion's f1 = -(sign ∇L + wθ) with sign 0 where ∇L is 0 (those entries decay, the others
    as on the problem without them) and f2 = (w/2) f1. The flow was refused: "on its slow
    manifold the step sits on the kink of its sign"."""
    problem = make()
    x = problem.params0
    g = problem.grad(x)
    assert any(bool(jnp.any(leaf == 0)) for leaf in jax.tree.leaves(g))
    flow = modified_flow(_LION, 0.01, order=2, problem=problem)
    f1, f2 = flow.terms(flow.init(x), problem).fields
    want = jax.tree.map(lambda gi, xi: -(jnp.sign(gi) + _W * xi), g, x)
    for a, b in zip(jax.tree.leaves(f1), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-15, atol=0)
    for a, b in zip(jax.tree.leaves(f2), jax.tree.leaves(f1), strict=True):
        np.testing.assert_allclose(a, 0.5 * _W * b, rtol=1e-14, atol=0)


@pytest.mark.parametrize("make", [_unused, _dead_relu], ids=["unused", "dead_relu"])
@pytest.mark.parametrize("optimizer", [_LION, _SIGNUM_WD], ids=["lion", "signum_wd"])
@pytest.mark.parametrize("order", [1, 2])
def test_sign_descent_with_dead_weights_has_its_order(make, optimizer, order):
    """`compare` over t = 0.2 at h = 0.02, 0.01, 0.005: the fitted slope is the flow's order
    (the sign part of the field is constant, the weight decay's is not: errors O(h^p)). It was
    refused at construction (Lion, signum on their slow manifold m = g, at the tie sign(0))."""
    problem = make()
    cmp = dynopt.compare(optimizer, problem, _HS, 0.2, order=order)
    slopes = np.diff(np.log(np.asarray(cmp.errors))) / np.diff(np.log(np.asarray(_HS)))
    assert cmp.verdict == "asymptotic", cmp
    assert np.all(np.abs(slopes - order) < 0.1), (slopes, cmp)
    assert abs(float(cmp.order) - order) < 0.1, cmp


@pytest.mark.parametrize("make", [_unused, _dead_relu], ids=["unused", "dead_relu"])
@pytest.mark.parametrize("name", sorted(_EXACT))
def test_sign_descent_without_decay_is_exact_with_dead_weights(make, name):
    """signSGD and signum follow θ' = -sign ∇L exactly while no entry changes sign, the dead
    entries not at all: errors at rounding (signSGD's run was refused as starting on its
    kink, signum's flow at construction)."""
    problem = make()
    cmp = dynopt.compare(_EXACT[name], problem, _HS, 0.2)
    assert float(np.max(np.asarray(cmp.errors))) < 1e-13, cmp


def test_an_accidental_zero_is_refused_and_named():
    """θ[2]'s gradient is 0 at the start only: the run leaves the sign's kink at its first step,
    so no flow describes it; refused at construction (Lion: on its manifold) or by the replay
    (signSGD, no state), naming θ[2]."""
    problem = _accidental()
    with pytest.raises(ValueError, match=r"manifold at θ0 it has the gradient entry θ\[2\]"):
        modified_flow(_LION, 0.01, order=2, problem=problem)
    with pytest.raises(ValueError, match=r"starts with the gradient entry θ\[2\] exactly 0"):
        dynopt.compare(_EXACT["sign_sgd"], problem, _HS, 0.2)
