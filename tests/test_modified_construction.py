"""The cost of `dynopt.modified_flow`'s construction checks on a network: compiled programs,
not eager op-by-op evaluation, and the problem's gradient traced once per signature."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import networks, problems
from dynopt._modified import modified_flow


_compiles = []


def _on_duration(name, duration, **kwargs):
    del duration, kwargs
    if _compiles and name.endswith("backend_compile_duration"):
        _compiles[-1] += 1


jax.monitoring.register_event_duration_secs_listener(_on_duration)


def _counting_network():
    """A digits MLP (64 -> 8 -> 10, gelu, cross-entropy on 32 samples) whose loss counts the
    runs of its Python (one per trace or eager evaluation)."""
    x, y = networks.digits()
    model = networks.mlp(64, 10, width=8, depth=1, activation=jax.nn.gelu, key=jax.random.key(3))
    net = networks.network_problem(model, (x[:32], y[:32]), loss="cross_entropy")
    runs = []

    def loss(params):
        runs.append(1)
        return net.loss(params)

    return dynopt.Problem(loss, net.params0, name="digits"), runs


def test_construction_on_a_network_traces_its_loss_a_few_times():
    """A user's optax chain (clipping and AdamW: a branch, bias corrections, a fast state) on a
    network: the checks compile a few dozen programs, run the loss's Python a few times and
    trace the optimizer's update a few dozen. They ran eagerly: 66 runs of the loss (each eager
    step re-traced its gradient) and 285 compiled programs (each primitive apart, per leaf
    shape); then 2 runs, 37 programs and 100 traces of the update (the contraction probe's one
    `jvp` of the step per state leaf, the branch check's eager initial state); now 2, 31, 68."""
    problem, runs = _counting_network()
    updates = []

    def opt(h):
        tx = optax.chain(
            optax.clip_by_global_norm(10.0), optax.adamw(h, b2=0.99, weight_decay=1e-2)
        )

        def update(*args, **kwargs):
            updates.append(1)
            return tx.update(*args, **kwargs)

        return optax.GradientTransformationExtraArgs(tx.init, update)

    _compiles.append(0)
    try:
        flow = modified_flow(opt, 0.004, order=1, problem=problem)
    finally:
        compiles = _compiles.pop()
    assert flow.spec.regime == "fast" and flow.spec.branches
    assert len(runs) <= 4, len(runs)
    assert len(updates) <= 80, len(updates)
    assert compiles <= 34, compiles


@pytest.mark.parametrize("order", [1, 2])
def test_construction_under_jit_is_concrete(order):
    """Called while a program is traced (as `compare`'s `reference`), the checks still compute
    values and find what they find outside it."""
    problem = dynopt.Problem(
        lambda p: jnp.sum(jnp.log(jnp.cosh(p - 0.3))), jnp.asarray([0.6, -0.4, 0.9])
    )
    opt = lambda h: optax.chain(optax.clip_by_global_norm(0.1), optax.adam(h))
    outside = modified_flow(opt, 0.01, order=order, problem=problem).spec

    @jax.jit
    def inside(h):
        flow = modified_flow(lambda h: opt(h), h, order=order, problem=problem)
        return flow.spec.regime == "fast", len(flow.spec.branches), flow.step_size

    fast, branches, _ = inside(0.01)
    assert (fast, branches) == (outside.regime == "fast", len(outside.branches))


@pytest.mark.parametrize("step_size", [-0.1, 0.0, float("nan")])
def test_a_bad_step_size_is_refused_before_the_checks(step_size):
    """The step size is checked before the construction checks build, step and compile the
    optimizer (they ran first: a negative step size cost the whole check, dozens of programs,
    before its one-line refusal). The optimizer is not even called."""
    calls = []

    def opt(h):
        calls.append(1)
        return optax.adam(h)

    with pytest.raises(ValueError, match="step_size"):
        modified_flow(opt, step_size)
    assert calls == []


def test_terms_of_a_state_of_another_shape_is_a_value_error_naming_state():
    flow = dynopt.modified_flow(lambda h: optax.sgd(h), 0.1)
    problem = problems.quadratic([1.0, 2.0])
    with pytest.raises(ValueError, match=r"state: .*params0"):
        flow.terms(jnp.ones(3), problem)
    with pytest.raises(ValueError, match=r"state: .*params0"):
        flow.terms({"w": jnp.ones(2)}, problem)
    assert flow.terms(jnp.ones(2), problem).rate == pytest.approx(1.0, abs=1e-12)


def test_vector_field_of_a_slow_flow_names_bare_parameters():
    """A slow-regime flow's state is `ModifiedState(params, optimizer state)`; bare parameters
    failed deep in the step with AttributeError "'dict' object has no attribute 'state'"."""
    problem = dynopt.Problem(lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.array([0.5, -1.0])})
    flow = dynopt.modified_flow(lambda h: optax.sgd(h), 0.1, 2, problem=problem)
    with pytest.raises(ValueError, match=r"state: .*slow regime.*flow\.init\(params\).*dict"):
        flow.vector_field(0.0, problem.params0, problem)
    field = flow.params(flow.vector_field(0.0, flow.init(problem.params0), problem))
    w = problem.params0["w"]  # GD's order-2 field -g - (h/2) H g, g = 2w, H = 2I
    np.testing.assert_allclose(field["w"], -2 * w - 0.05 * 4 * w, rtol=1e-14)
