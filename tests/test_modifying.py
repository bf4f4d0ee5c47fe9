"""`dynopt.transforms.modifying`: the corrected input gradient, its measured order gain against
the target flow, other targets, bad input; and `usam`."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import pytest

import dynopt
from dynopt._modified import modified_flow
from dynopt.flows import GradientFlow
from dynopt.transforms import modifying, nesterov_momentum, usam

from .helpers import tree_max_abs_diff
from .test_modified import smooth_problem


def _hvp(problem, x, v):
    return jax.jvp(problem.grad, (x,), (v,))[1]


def test_corrected_gradient(getkey):
    """GD is fed ∇L - (h/2)H∇L; heavy ball β is fed ∇L - h(1+β)/(2(1-β)²)H∇L (Ghosh's
    regulariser cancelled), exactly."""
    problem = smooth_problem(getkey())
    p0, h, beta = problem.params0, 0.1, 0.5
    g = problem.grad(p0)
    Hg = _hvp(problem, p0, g)
    extra = dict(value_fn=problem.loss, grad_fn=problem.grad)
    tx = modifying(lambda h: optax.sgd(h), order=2, step_size=h)
    u = eqx.filter_jit(lambda g, p: tx.update(g, tx.init(p), p, **extra)[0])(g, p0)
    assert tree_max_abs_diff(u, jax.tree.map(lambda a, b: -h * (a - h / 2 * b), g, Hg)) < 1e-14
    tx = modifying(lambda h: optax.sgd(h, momentum=beta), order=2, step_size=h)
    u = eqx.filter_jit(lambda g, p: tx.update(g, tx.init(p), p, **extra)[0])(g, p0)  # zero trace
    c = h * (1 + beta) / (2 * (1 - beta) ** 2)
    assert tree_max_abs_diff(u, jax.tree.map(lambda a, b: -h * (a - c * b), g, Hg)) < 1e-13


def test_order_gain():
    """GD fed the order-2 correction tracks gradient flow with a fitted global order 2 (plain GD:
    1, tests/test_flows). The run is `modified_flow(modifying(sgd), h).discretize(h)`."""
    problem = smooth_problem(jax.random.key(5))
    hs = (0.04, 0.02, 0.01)
    flow = modified_flow(modifying(lambda h: optax.sgd(h), order=2), hs[0], order=1)
    cmp = dynopt.compare(flow, problem, hs, 0.8, reference=GradientFlow(), solver="tsit5")
    assert cmp.verdict == "asymptotic" and abs(float(cmp.order) - 2) < 0.15, cmp


def test_other_target(getkey):
    """Heavy ball towards gradient flow in its own time (not its continuum limit -∇L/(1-β)):
    c₀ = (f₁ - f*)/r rescales the input, so the automatic leading field is -∇L."""
    problem = smooth_problem(getkey())
    p0 = problem.params0
    opt = modifying(lambda h: optax.sgd(h, momentum=0.6), GradientFlow(), order=1)
    flow = modified_flow(opt, 0.05)
    v = eqx.filter_jit(flow.vector_field)(0.0, p0, problem)
    assert tree_max_abs_diff(v, jax.tree.map(jnp.negative, problem.grad(p0))) < 1e-13


def test_usam_regulariser(getkey):
    """USAM: f₁ + h f₂ = -∇[L + (h/4 + ρ/2)‖∇L‖²] + O(ρ², ρh): the deviation vanishes with ρ
    at a rate between 1 and 2 (exact at ρ = 0: GD's order-2 field)."""
    problem = smooth_problem(getkey())
    p0, h = problem.params0, 0.02
    g = problem.grad(p0)
    Hg = _hvp(problem, p0, g)

    def deviation(rho):
        flow = modified_flow(lambda h: usam(h, rho), h, order=2)
        v = eqx.filter_jit(flow.vector_field)(0.0, flow.init(p0), problem).params
        mu = h / 4 + rho / 2
        return tree_max_abs_diff(v, jax.tree.map(lambda a, b: -(a + 2 * mu * b), g, Hg))

    d1, d2 = deviation(1e-3), deviation(5e-4)
    scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(Hg))
    assert d1 < 1e-3 * scale  # vs the ρ/2 term itself, ~ρ|Hg|
    assert 1.8 < d1 / d2 < 4.2, (d1, d2)


def test_bad_input():
    with pytest.raises(ValueError, match="optimizer must be a callable"):
        modifying(optax.sgd(0.1))
    with pytest.raises(ValueError, match="order must be an integer"):
        modifying(lambda h: optax.sgd(h), order=0)
    with pytest.raises(ValueError, match="target_flow must be"):
        modifying(lambda h: optax.sgd(h), target_flow="gradient")
    with pytest.raises(ValueError, match="not affine in the gradient"):
        modifying(lambda h: optax.adam(h, b1=0.5, b2=0.6, eps=0.3))
    with pytest.raises(ValueError, match="state is slow"):
        modifying(lambda h: optax.rmsprop(h, decay=1 - h))
    tx = modifying(lambda h: optax.sgd(h), step_size=0.1)
    x = jnp.ones(2)
    with pytest.raises(ValueError, match="grad_fn"):
        tx.update(x, tx.init(x), x)


def test_target_flow_at_order_two_on_logistic_regression():
    """A target flow with order >= 2 steps the optimizer on the oracle built from its own extra
    arguments (nested: the correction c₁ expands the optimizer fed c₀): GD and heavy ball
    β = 0.5 corrected towards gradient flow in their own time track it with global order 2 on
    a logistic regression (errors ~ 2e-6 at h = 0.02; every local slope within 0.05 of 2).
    Before, every target flow with order >= 2 was refused (the inner oracle had no `value`)."""
    problem = dynopt.problems.logistic_regression(50, 3)
    hs = (0.02, 0.01, 0.005)
    for opt in (lambda h: optax.sgd(h), lambda h: optax.sgd(h, momentum=0.5)):
        flow = modified_flow(modifying(opt, GradientFlow(), order=2), hs[0])
        cmp = dynopt.compare(flow, problem, hs, 0.5, reference=GradientFlow(), solver="tsit5")
        assert cmp.verdict == "asymptotic", cmp
        assert max(abs(float(s) - 2) for s in cmp.local_orders) < 0.05, cmp.local_orders


def test_velocity_state_optimizers(getkey):
    """dynopt's momentum transforms hold the velocity in parameter units (a state already scaled
    by h: `modified_flow` finds lag = 1). The corrections are expanded with that spec: heavy
    ball as `nesterov_momentum(h, β, lookahead=0)` is fed exactly optax's heavy-ball correction
    ∇L - h(1+β)/(2(1-β)²)H∇L (before: slope r = 1 read instead of 1/(1-β) = 2, a correction
    twice too large; Nesterov corrected towards gradient flow kept an O(1) error, 0.27 at
    h = 1e-3 on Rosenbrock against optax's 0.018)."""
    problem = smooth_problem(getkey())
    p0, h, beta = problem.params0, 0.1, 0.5
    g = problem.grad(p0)
    Hg = _hvp(problem, p0, g)
    extra = dict(value_fn=problem.loss, grad_fn=problem.grad)
    tx = modifying(lambda h: nesterov_momentum(h, beta, 0.0), order=2, step_size=h)
    u = eqx.filter_jit(lambda g, p: tx.update(g, tx.init(p), p, **extra)[0])(g, p0)
    c = h * (1 + beta) / (2 * (1 - beta) ** 2)
    assert tree_max_abs_diff(u, jax.tree.map(lambda a, b: -h * (a - c * b), g, Hg)) < 1e-13


class _CountingFlow(GradientFlow):
    """Gradient flow that counts the Python evaluations of its field (one per trace of c₀)."""

    calls: list = eqx.field(static=True, default_factory=list)

    def vector_field(self, t, y, args):
        self.calls.append(None)
        return super().vector_field(t, y, args)


@pytest.mark.parametrize("order", [2, 3])
def test_c0_traced_once(order):
    """The corrections are functions of θ alone, traced once each inside `jit` however deep the
    expansion nests them: evaluating the order-1 field of GD corrected to order 2 or 3 runs
    c₀'s Python once (before: once per nested step of every higher correction, 3 and 12; heavy
    ball at order 2: 44, now 12, 10 of them the eager shape probe `_modified.step.passthrough`,
    once per optimizer and shapes)."""
    problem = smooth_problem(jax.random.key(0))
    target = _CountingFlow()
    opt = modifying(lambda h: optax.sgd(h), target, order=order)
    flow = modified_flow(opt, 0.02)
    del target.calls[:]
    v = flow.vector_field(0.0, flow.init(problem.params0), problem)
    assert len(target.calls) == 1
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(v))
