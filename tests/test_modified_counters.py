"""Step counters as time in the slow regime (`dynopt._modified.counters`): Adam with exact bias
corrections from the automatic route."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt._flows.adaptive import AdamState
from dynopt._modified import modified_flow, ModifiedState
from dynopt._modified.counters import CountedState
from dynopt._modified.slow import slow_step
from dynopt.flows import AdamFlow

from .helpers import tree_max_abs_diff


A1, A2, EPS, T = 2.0, 3.0, 0.1, 0.7


def _adam(h):
    return optax.adam(h, b1=1 - A1 * h, b2=1 - A2 * h, eps=EPS)


def _is_adam(x):
    return isinstance(x, optax.ScaleByAdamState)


def _state(problem, flow=None):
    """A state at time T > 0: moments away from the manifold, products c_i = exp(-a_i T)."""
    th = problem.params0
    m = jax.tree.map(lambda x: 0.3 * jnp.sin(x + 1.0), th)
    v = jax.tree.map(lambda x: 0.2 + x * x, th)
    if flow is None:
        adam = (optax.ScaleByAdamState(None, m, v), optax.EmptyState())
    else:  # the flow's own optimizer-state structure, moments replaced
        adam = jax.tree.map(
            lambda s: s._replace(mu=m, nu=v) if _is_adam(s) else s,
            flow.init(th).state.state,
            is_leaf=_is_adam,
        )
    return ModifiedState(th, CountedState(adam, (jnp.exp(-A1 * T), jnp.exp(-A2 * T)))), (m, v)


def _moments(state):
    (adam,) = [s for s in jax.tree.leaves(state, is_leaf=_is_adam) if _is_adam(s)]
    return adam.mu, adam.nu


@pytest.mark.parametrize("form", ["optax", "AdamFlow.discretize"])
def test_order_one_field_is_adam_flow_with_exact_bias_corrections(form):
    """optax.adam(h, b1 = 1 - a1 h, b2 = 1 - a2 h), or AdamFlow's own discretization (dynopt's
    Adam with the corrections hoisted): its counter read as time, the order-1 field is
    AdamFlow's (m̂ = m/(1 - e^{-a1 t}), ...) on a pytree, and the products decay at -a_i."""
    problem = dynopt.problems.logcosh()
    optimizer = _adam if form == "optax" else AdamFlow(A1, A2, EPS).discretize
    flow = modified_flow(optimizer, 0.01, order=2)
    assert flow.spec.regime == "slow" and flow.spec.products == 2
    y, (m, v) = _state(problem, flow)
    f1 = flow.field_values(y, problem)[0]
    ref = AdamFlow(A1, A2, EPS).vector_field(T, AdamState(problem.params0, m, v), problem)
    assert tree_max_abs_diff(f1.params, ref.params) < 1e-14
    assert tree_max_abs_diff(_moments(f1.state.state), (ref.m, ref.v)) < 1e-14
    if form != "optax":  # the map's own check at a step size, as without modified_flow
        with pytest.raises(ValueError, match=r"1 - a1 \* step_size must be in \[0, 1\)"):
            flow.discretize(0.6)
    np.testing.assert_allclose(
        f1.state.products, (-A1 * np.exp(-A1 * T), -A2 * np.exp(-A2 * T)), rtol=1e-14
    )


@eqx.filter_jit
def _local_error(flow, problem, y):
    """|φ_h(y) - Φ_h(y)|: the order-p flow over one step against the optimizer's step."""
    h = flow.step_size
    term = diffrax.ODETerm(lambda s, z, args: flow.vector_field(s, z, problem))
    ctrl = diffrax.PIDController(rtol=1e-13, atol=1e-15)
    sol = diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, h, h / 10, y, stepsize_controller=ctrl)
    exact = jax.tree.map(lambda x: x[-1], sol.ys)
    return optax.tree.norm(optax.tree.sub(exact, slow_step(flow.spec, problem, h, y)), ord="inf")


@pytest.mark.parametrize("order", [1, 2, 3])
def test_local_error_of_the_order_p_flow_is_order_p_plus_one(order):
    """One step of the counted optimizer (the products carry b^k) against the exact flow of the
    order-p field from a state at t = 0.7 (the series is singular at t = 0: 1 - b^k = 0 at k = 0):
    the local error falls like h^(p+1) (measured slopes 2.00, 2.99, 3.98)."""
    problem = dynopt.problems.logcosh()
    y, _ = _state(problem)
    hs = np.array([0.04, 0.02, 0.01])
    errs = [float(_local_error(modified_flow(_adam, h, order=order), problem, y)) for h in hs]
    slopes = np.diff(np.log(errs)) / np.diff(np.log(hs))
    np.testing.assert_allclose(slopes, order + 1, atol=0.1)


def test_discretization_is_the_optimizer_itself():
    problem = dynopt.problems.logcosh()
    h, n = 0.01, 20
    flow = modified_flow(_adam, h, order=1)
    # `init` traced too (under the suite's strict promotion): the products c_i = b_i^0 = 1.
    y0 = eqx.filter_jit(flow.init)(problem.params0)
    assert [float(c) for c in y0.state.products] == [1.0, 1.0]
    ours = dynopt.run(flow.discretize(h), problem, n).params
    tx, params = _adam(h), problem.params0
    with jax.numpy_dtype_promotion("standard"):
        state = tx.init(params)
        for _ in range(n):
            updates, state = tx.update(problem.grad(params), state, params)
            params = optax.apply_updates(params, updates)
    assert tree_max_abs_diff(jax.tree.map(lambda x: x[-1], ours), params) < 1e-14


def test_a_counter_read_outside_the_bias_corrections_is_refused():
    def scheduled(h):
        return optax.chain(
            optax.scale_by_adam(b1=1 - A1 * h, b2=1 - A2 * h),
            optax.scale_by_schedule(lambda k: -h * 0.99**k),
        )

    with pytest.raises(ValueError, match="reads the integer step counter other than"):
        modified_flow(scheduled, 0.01)
    # A schedule that is constant for the first thousand steps is still a schedule.
    late = optax.piecewise_constant_schedule
    with pytest.raises(ValueError, match="reads the integer step counter other than"):
        modified_flow(lambda h: optax.adam(late(h, {1000: 0.1}), 1 - A1 * h, 1 - A2 * h), 0.01)
    # AdaBelief adds eps_root to its second moment every step: with a fixed eps_root that
    # state is not near identity at h = 0 (eps_root = c*h is slow: counted like Adam).
    with pytest.raises(ValueError, match=r"state leaf \[0\]\.nu still changes"):
        modified_flow(lambda h: optax.adabelief(h, 1 - A1 * h, 1 - A2 * h, 0.1, 0.1), 0.01)
    slow = modified_flow(lambda h: optax.adabelief(h, 1 - A1 * h, 1 - A2 * h, 0.1, 0.1 * h), 0.01)
    assert (slow.spec.regime, slow.spec.products) == ("slow", 2)


def test_compare_from_the_zero_start_says_why_not():
    problem = dynopt.problems.logcosh()
    with pytest.raises(ValueError, match=r"singular at k = 0 \(1 - b\*\*0 = 0\)"):
        dynopt.compare(_adam, problem, (0.02, 0.01), 0.2)


@pytest.mark.parametrize(
    "name, optimizer, products",
    [
        ("adamw", lambda h: optax.adamw(h, 1 - A1 * h, 1 - A2 * h, 0.1, weight_decay=0.1), 2),
        # Nadam reads b1**(k+2) too: three corrections, each its own product.
        ("nadam", lambda h: optax.nadam(h, 1 - A1 * h, 1 - A2 * h, 0.1), 3),
        (
            "rms_bias_corrected",
            lambda h: optax.chain(
                optax.scale_by_rms(decay=1 - A2 * h, eps=0.1, bias_correction=True),
                optax.scale(-h),
            ),
            1,
        ),
    ],
    ids=["adamw", "nadam", "rms_bias_corrected"],
)
def test_other_bias_corrected_optimizers_local_order(name, optimizer, products):
    """Every optimizer that reads its counter through optax's bias corrections: from a state
    40 steps (t = 0.4) into its own run, the order-2 flow's one-step error is O(h³)
    (measured slopes 2.97-3.00)."""
    problem = dynopt.problems.logcosh()
    flow = modified_flow(optimizer, 0.01)
    assert (flow.spec.regime, flow.spec.products) == ("slow", products), name
    y = flow.init(problem.params0)
    step = eqx.filter_jit(lambda y: slow_step(flow.spec, problem, jnp.asarray(0.01), y))
    for _ in range(40):
        y = step(y)
    hs = np.array([0.02, 0.01, 0.005])
    errs = [float(_local_error(modified_flow(optimizer, h, order=2), problem, y)) for h in hs]
    slopes = np.diff(np.log(errs)) / np.diff(np.log(hs))
    np.testing.assert_allclose(slopes, 3.0, atol=0.1, err_msg=name)


@eqx.filter_jit
def _fields(flow, state, problem):
    return flow.field_values(state, problem)


def _float64_logcosh() -> dynopt.Problem:
    return dynopt.problems.logcosh(
        params0={"a": jnp.asarray([0.9, -0.6, 0.3]), "b": jnp.asarray([0.5, -1.1])}
    )


def test_a_counter_the_update_never_reads_is_no_time():
    """A constant schedule keeps a step counter that the update never reads: an integer leaf
    like any other, not the step index k = t/h (refused in state='auto' and 'slow' before:
    "no autonomous modified flow exists"). Gradient descent's f1 = -∇L (with weight decay c:
    -(∇L + cθ)) and its measured order; a decaying schedule is still refused."""
    problem = _float64_logcosh()
    p0, g, c = problem.params0, problem.grad(problem.params0), 0.1
    constant = lambda h: optax.sgd(optax.constant_schedule(h))
    decayed = lambda h: optax.chain(
        optax.add_decayed_weights(c), optax.sgd(optax.constant_schedule(h))
    )
    cases = (
        (constant, optax.tree.scale(-1.0, g)),
        (lambda h: optax.sgd(lambda k: h), optax.tree.scale(-1.0, g)),
        (decayed, optax.tree.scale(-1.0, optax.tree.add_scale(g, c, p0))),
    )
    for opt, expect, state in (*[(*case, "auto") for case in cases], (*cases[0], "slow")):
        flow = modified_flow(opt, 0.01, state=state)
        assert flow.spec.regime == "slow"
        f1 = _fields(flow, flow.init(p0), problem)[0].params
        assert tree_max_abs_diff(f1, expect) < 1e-15
    # Tsit5, the automatic choice here (measured): named, no Jacobian of the field is compiled.
    cmp = dynopt.compare(constant, problem, (0.02, 0.01, 0.005), 0.4, order=2, solver="tsit5")
    assert cmp.verdict == "asymptotic" and abs(float(cmp.order) - 2) < 0.1, cmp
    with pytest.raises(ValueError, match="the update depends on the step index"):
        modified_flow(lambda h: optax.sgd(optax.exponential_decay(h, 10, 0.9)), 0.01)


def test_a_decay_that_tends_to_one_with_the_count_is_refused():
    """optax.adafactor's decay 1 - (k+1)^-0.8 reads the counter and tends to 1: at the saturated
    count its state never forgets (before: accepted, with f2 growing as the saturated count,
    3e8 at 2^30). Refused, the leaf named. Its remedy, no memory (decay_rate=0): v = g² + ε each
    step, f1 = -g/√(g² + ε)."""
    opts = dict(clipping_threshold=None, multiply_by_parameter_scale=False, eps=1e-3)
    with pytest.raises(ValueError, match=r"decay of the optimizer-state leaf \[0\]\.v reads the"):
        modified_flow(lambda h: optax.adafactor(h, **opts), 0.01)
    problem = _float64_logcosh()
    p0, g = problem.params0, problem.grad(problem.params0)
    flow = modified_flow(lambda h: optax.adafactor(h, decay_rate=0.0, **opts), 0.01)
    f1 = _fields(flow, p0, problem)[0]
    assert tree_max_abs_diff(f1, jax.tree.map(lambda x: -x / jnp.sqrt(x * x + 1e-3), g)) < 1e-15


def test_a_step_periodic_in_the_step_index_is_said():
    """optax.MultiSteps and optax.apply_every move the parameters every N-th step: refused for
    that cause (before: "acc_grads never forgotten", "vanishes once the step counter is
    large"), with the remedy, N steps as one, which is exact: N steps of
    chain(sgd(h), apply_every(N)) are one step of sgd(N·h)."""
    with pytest.raises(ValueError, match=r"got an optax\.MultiSteps .*\.gradient_transformation"):
        modified_flow(lambda h: optax.MultiSteps(optax.sgd(h), 2), 0.01)
    multi = lambda h: optax.MultiSteps(optax.sgd(h), 2).gradient_transformation()
    with pytest.raises(ValueError, match=r"modulo N = 2: .*Model N steps as one"):
        modified_flow(multi, 0.01)
    every = lambda h: optax.chain(optax.sgd(h), optax.apply_every(3))
    with pytest.raises(ValueError, match=r"modulo N = 3: .*Model N steps as one"):
        modified_flow(every, 0.01)
    problem = _float64_logcosh()
    params, state, h = problem.params0, every(0.1).init(problem.params0), 0.1
    with jax.numpy_dtype_promotion("standard"):  # optax's apply_every multiplies by a bool
        for _ in range(3):
            updates, state = every(h).update(problem.grad(params), state)
            params = optax.apply_updates(params, updates)
    one = optax.tree.add_scale(problem.params0, -3 * h, problem.grad(problem.params0))
    assert tree_max_abs_diff(params, one) < 1e-15
