"""Optax as researchers write it, through `modified_flow` and `compare`: the loss's own
branches are not the optimizer's (a logistic loss's `jnp.logaddexp`), SAM on such a loss, and
the construction checks of the transforms, `time_unit` and `networks.mlp`."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import dynopt
from dynopt import networks


def logistic_tree() -> dynopt.Problem:
    """Logistic regression on `{"w": (4,), "b": ()}`: `jnp.logaddexp` holds a `max`, an `abs`
    and `select_n`s, smooth as a whole (the loss's branches, not an optimizer's)."""
    x = jax.random.normal(jax.random.key(0), (32, 4))
    w_star = jnp.asarray([1.0, -2.0, 0.5, 1.5])
    noise = 0.5 * jax.random.normal(jax.random.key(1), (32,))
    y = jnp.sign(x @ w_star + 0.3 + noise)

    def loss(p):
        return jnp.mean(jnp.logaddexp(0.0, -y * (x @ p["w"] + p["b"])))

    p0 = {"w": jnp.asarray([0.3, -0.2, 0.1, 0.4]), "b": jnp.asarray(0.1)}
    return dynopt.Problem(loss, p0, name="logistic tree")


def test_the_loss_branches_are_not_the_optimizers():
    # Before: every optimizer on this loss had branches ('abs', 'max', 'select_n') from
    # logaddexp, and AdaGrad's refusal named Yogi's sign as the cause.
    problem = logistic_tree()
    flow = dynopt.modified_flow(lambda h: optax.adam(h), 0.01, problem=problem)
    assert flow.spec.branches == ()
    clipped = dynopt.modified_flow(
        lambda h: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(h)), 0.01, problem=problem
    )
    assert [b.split()[0] for b in clipped.spec.branches] == ["select_n"]
    with pytest.raises(ValueError, match="never forgotten") as err:
        dynopt.modified_flow(lambda h: optax.adagrad(h), 0.01, problem=problem)
    assert "Yogi" not in str(err.value)


def test_sam_on_a_logistic_loss_has_its_orders():
    # SAM's grad_fn evaluations inside the update were inlined where its square roots were
    # made zero-safe, so the loss's logaddexp branches were read as SAM's own (branches abs,
    # max, select_n; a run crossing logaddexp's max was refused as switching branch). Its own
    # branch here is the clipping's.
    problem = logistic_tree()

    def sam(h):
        outer = optax.chain(optax.clip_by_global_norm(10.0), optax.sgd(h))
        return optax.contrib.sam(outer, optax.sgd(0.05), opaque_mode=True)

    flow = dynopt.modified_flow(sam, 0.01, problem=problem)
    assert [b.split()[0] for b in flow.spec.branches] == ["select_n"]
    # Tsit5, the automatic choice here (measured): named, no Jacobian of the field is compiled.
    hs = jnp.asarray([0.04, 0.02, 0.01])
    result = dynopt.compare(sam, problem, hs, 0.4, order=2, solver="tsit5")
    assert result.verdict == "asymptotic", result.reason
    assert abs(float(result.order) - 2.0) < 0.05


@pytest.mark.parametrize("factory", ["adam", "adamw", "nesterov_momentum", "global_rmsprop"])
def test_a_list_hyper_parameter_is_a_value_error(factory):
    # Before: adam(b1=[0.9, 0.8]) passed the range check entry by entry and raised
    # TypeError: unsupported operand type(s) for -: 'int' and 'list' inside the update.
    make = getattr(dynopt.transforms, factory)
    name, kwargs = {
        "adam": ("b1", dict(learning_rate=0.1, b1=[0.9, 0.8])),
        "adamw": ("weight_decay", dict(learning_rate=0.1, weight_decay=(0.1, 0.2))),
        "nesterov_momentum": ("momentum", dict(learning_rate=0.1, momentum=[0.9, 0.8])),
        "global_rmsprop": ("learning_rate", dict(learning_rate=[0.1, 0.2])),
    }[factory]
    with pytest.raises(ValueError, match=f"{name} must be a number"):
        make(**kwargs)


def test_an_array_hyper_parameter_broadcasts_as_in_optax():
    # What an array means is optax's reading, kept: broadcast against every leaf.
    params = jnp.asarray([1.0, -2.0])
    grad = jnp.asarray([0.5, 0.25])
    b1 = jnp.asarray([0.9, 0.5])
    ours = dynopt.transforms.adam(0.1, b1=b1)
    theirs = optax.adam(0.1, b1=b1)
    u1, _ = ours.update(grad, ours.init(params), params)
    with jax.numpy_dtype_promotion("standard"):  # (optax's b1**count: float64 and int32)
        u2, _ = theirs.update(grad, theirs.init(params), params)
    np.testing.assert_allclose(u1, u2, rtol=1e-14)


@pytest.mark.parametrize("time_unit", ["0.5", True, [0.5], 0.3, 0.0])
def test_time_unit_must_be_a_number(time_unit):
    # Before: "0.5" (a string) was read by float() and accepted; True was read as 1.
    with pytest.raises(ValueError, match="time_unit must be q in"):
        dynopt.modified_flow(lambda h: optax.sgd(h), 0.01, time_unit=time_unit)


def test_time_unit_accepts_numbers():
    for q in (0.5, np.float64(0.5), jnp.asarray(0.5), 1):
        flow = dynopt.modified_flow(lambda a: optax.sgd(a), 0.01, time_unit=q)
        assert flow.spec.power == round(1 / float(q))


def test_mlp_of_depth_zero_is_a_linear_model():
    # Before: depth=0 was refused, which eqx.nn.MLP allows (no hidden layer).
    model = networks.mlp(3, 2, width=8, depth=0, key=jax.random.key(0))
    assert len(model.layers) == 1
    x = jnp.asarray([0.5, -1.0, 2.0])
    layer = model.layers[0]
    np.testing.assert_allclose(model(x), layer.weight @ x + layer.bias, rtol=1e-6)
    params = eqx.filter(model, eqx.is_inexact_array)
    assert sum(p.size for p in jax.tree.leaves(params)) == 3 * 2 + 2
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="depth must be an integer >= 0"):
            networks.mlp(3, 2, depth=bad, key=jax.random.key(0))


def test_nesterov_momentum_order_three_says_the_equivalent():
    # dynopt.transforms.nesterov_momentum holds the velocity in parameter units (an update
    # already scaled by h): the flow exists to every order (its iterates are optax's
    # nesterov), but the lagged manifold is refused past order 2 for its compile time; the
    # refusal names optax's spelling of the same iterates, which goes to order 3.
    def ours(h):
        return dynopt.transforms.nesterov_momentum(h, 0.9)

    def theirs(h):
        return optax.sgd(h, momentum=0.9, nesterov=True)

    problem = dynopt.Problem(
        lambda x: jnp.sum(jnp.cos(x) + 0.5 * x**2) + 0.1 * x[0] ** 3, jnp.asarray([0.3, -0.5])
    )
    a = dynopt.modified_flow(ours, 0.01, 2).field_values(problem.params0, problem)
    b = dynopt.modified_flow(theirs, 0.01, 2).field_values(problem.params0, problem)
    for fa, fb in zip(a, b):
        np.testing.assert_allclose(fa, fb, rtol=1e-12)
    with pytest.raises(ValueError, match=r"optax\.sgd\(h, momentum=b, nesterov=True\)"):
        dynopt.modified_flow(ours, 0.01, 3)
    assert dynopt.modified_flow(theirs, 0.01, 3).order == 3


def test_lion_at_a_zero_gradient_entry_says_why():
    # On the digits (3 blank pixels: 30 weights whose gradient is exactly 0) Lion was refused
    # with a message about AMSGrad's running maximum; the tie is sign(0) at those entries. An
    # entry the loss never reads stays 0 along the step: its sign is 0, its field only Lion's
    # weight decay (session 36); an entry 0 by accident is refused, named.
    problem = dynopt.Problem(
        lambda w: jnp.sum(jnp.cosh(w[:2] - 2.0)), jnp.asarray([0.3, 0.1, 0.5]), name="unread"
    )
    flow = dynopt.modified_flow(lambda h: optax.lion(h), 0.01, problem=problem)
    f1 = flow.terms(flow.init(problem.params0), problem).fields[0]
    assert float(f1[2]) == -1e-3 * 0.5  # sign(0) = 0: only Lion's default weight decay
    accidental = dynopt.Problem(
        lambda w: jnp.sum(jnp.cosh(w[:2] - 2.0)) + 0.5 * (w[2] - w[0] - 0.2) ** 2,
        jnp.asarray([0.3, 0.1, 0.5]),
        name="accidental",
    )
    with pytest.raises(ValueError, match=r"gradient entry θ\[2\] exactly 0"):
        dynopt.modified_flow(lambda h: optax.lion(h), 0.01, problem=accidental)
    far = dynopt.Problem(lambda w: jnp.sum(jnp.cosh(w - 2.0)), jnp.asarray([0.3, 0.1, 0.5]))
    assert dynopt.modified_flow(lambda h: optax.lion(h), 0.01, problem=far).order == 1
