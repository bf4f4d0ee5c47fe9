"""Automatic backward error analysis (`dynopt.modified_flow`): exact coefficient identities,
the slow and fast regimes against the hand-derived flows, bad input. The fitted orders of every
automatic row are the registry battery's (`tests/test_correspondences.py`)."""

import functools as ft
import warnings
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt._flows.adaptive import RMSPropState
from dynopt._modified import modified_flow, ModifiedState
from dynopt.correspondences import BY_NAME, heavy_ball_velocity
from dynopt.flows import HeavyBall, ModifiedGradientFlow, RMSPropFlow

from .helpers import tree_max_abs_diff


def smooth_problem(key) -> dynopt.Problem:
    """The registry's smooth non-quadratic loss with random coefficients and start."""
    k1, k2, k3 = jax.random.split(key, 3)
    return dynopt.problems.logcosh(
        c=jax.random.normal(k1, (3,)),
        A=jax.random.normal(k2, (3, 2)) / 2,
        params0={"a": jax.random.normal(k3, (3,)), "b": jnp.asarray([0.5, -1.1])},
    )


@eqx.filter_jit
def _fields(flow, state, problem):
    return flow.field_values(state, problem)


def test_gradient_descent_identities(getkey):
    problem = smooth_problem(getkey())
    p0, h = problem.params0, 0.07
    flow = modified_flow(lambda h: optax.sgd(h), h, order=3)
    f1, f2, f3 = (f.params for f in _fields(flow, flow.init(p0), problem))
    g = problem.grad(p0)

    def hvp(x, v):
        return jax.jvp(problem.grad, (x,), (v,))[1]

    Hg = hvp(p0, g)
    H2g = hvp(p0, Hg)
    D3gg = jax.jvp(lambda x: hvp(x, g), (p0,), (g,))[1]  # D³L[∇L, ∇L, ·]
    assert tree_max_abs_diff(f1, jax.tree.map(jnp.negative, g)) < 1e-13
    assert tree_max_abs_diff(f2, jax.tree.map(lambda x: -0.5 * x, Hg)) < 1e-12
    f3_exact = jax.tree.map(lambda a, b: -a / 3 - b / 12, H2g, D3gg)
    assert tree_max_abs_diff(f3, f3_exact) < 1e-12
    # order 2 is the hand-written modified gradient flow
    flow2 = modified_flow(lambda h: optax.sgd(h), h, order=2)
    mg = ModifiedGradientFlow(h).vector_field(0.0, p0, problem)
    v2 = eqx.filter_jit(flow2.vector_field)(0.0, flow2.init(p0), problem)
    assert tree_max_abs_diff(v2.params, mg) < 1e-12
    terms = eqx.filter_jit(flow2.terms)(flow2.init(p0), problem)
    assert abs(float(terms.rate) - 1) < 1e-12 and abs(float(terms.regularizer) - 0.25) < 1e-12
    # An h -> Discretization optimizer: its own checks (dt = h > 0) would refuse h = 0, where
    # the expansion is taken; checked at positive h, expanded unchecked at 0: the same fields.
    flow_d = modified_flow(
        lambda h: dynopt.Discretization(optax.sgd, {"learning_rate": h}, dt=h), h, order=3
    )
    fd = [f.params for f in _fields(flow_d, flow_d.init(p0), problem)]
    assert tree_max_abs_diff(fd, [f1, f2, f3]) < 1e-15
    with pytest.raises(ValueError, match="dt must be > 0"):
        modified_flow(lambda h: dynopt.Discretization(optax.sgd, {"learning_rate": h}, dt=-h), h)


def test_heavy_ball_ghosh(getkey):
    """optax.sgd(h, momentum=β): θ' = -(1-β)⁻¹∇[L + h(1+β)/(4(1-β)²)‖∇L‖²] (Ghosh et al.)."""
    problem = smooth_problem(getkey())
    p0, h, beta = problem.params0, 0.03, 0.8
    flow = modified_flow(lambda h: optax.sgd(h, momentum=beta), h, order=2)
    assert flow.spec.regime == "fast"
    v = eqx.filter_jit(flow.vector_field)(0.0, p0, problem)
    sq = jax.grad(lambda x: optax.tree.norm(problem.grad(x), squared=True))(p0)
    lam = h * (1 + beta) / (4 * (1 - beta) ** 2)
    exact = jax.tree.map(lambda g, s: -(g + lam * s) / (1 - beta), problem.grad(p0), sq)
    assert tree_max_abs_diff(v, exact) < 1e-12
    terms = eqx.filter_jit(flow.terms)(p0, problem)
    np.testing.assert_allclose(float(terms.rate), 1 / (1 - beta), rtol=1e-12)
    np.testing.assert_allclose(float(terms.regularizer), lam / h, rtol=1e-12)
    # discretize(h) is the optimizer, started on its slow manifold trace = ∇L/(1-β) + O(h)
    disc = flow.discretize(h)
    state = disc.init(p0, problem)
    # optax's stored trace lags one step: trace_k = Σ_{j≥1} β^{j-1} g(θ_{k-j})
    # = g/(1-β) - h/(1-β)²·dg/dt + O(h²), with dg/dt = Hθ' = -Hg/(1-β).
    g = problem.grad(p0)
    Hg = jax.jvp(problem.grad, (p0,), (g,))[1]
    m0 = jax.tree.map(lambda a, b: a / (1 - beta) + h * b / (1 - beta) ** 3, g, Hg)
    assert tree_max_abs_diff(state[0].trace, m0) < 1e-11
    ref = optax.sgd(h, momentum=beta).update(problem.grad(p0), state, p0)[0]
    assert tree_max_abs_diff(disc.transform.update(problem.grad(p0), state, p0)[0], ref) == 0


def test_rmsprop_slow_row(getkey):
    problem = smooth_problem(getkey())
    p0, kappa, eps = problem.params0, 3.0, 1e-3

    def opt(h):
        return optax.rmsprop(h, decay=1 - kappa * h, eps=eps)

    flow = modified_flow(opt, 0.01, order=1)
    assert flow.spec.regime == "slow"
    y = flow.init(p0)
    nu = jax.tree.map(lambda x: 0.2 + jnp.abs(jax.random.normal(getkey(), x.shape)), p0)
    y = ModifiedState(p0, (y.state[0]._replace(nu=nu), *y.state[1:]))
    v = eqx.filter_jit(flow.vector_field)(0.0, y, problem)
    ref = RMSPropFlow(kappa, eps).vector_field(0.0, RMSPropState(p0, nu), problem)
    assert tree_max_abs_diff(v.params, ref.params) < 1e-13
    assert tree_max_abs_diff(v.state[0].nu, ref.G) < 1e-13


def test_heavy_ball_in_sqrt_alpha_time(getkey):
    """A slow state whose continuum limit is `HeavyBall(a)`: θ' = v, v' = -av - ∇L (v = -trace).
    The same map through `jnp.sqrt(α)` with `time_unit=0.5` and a state map dividing by τ is
    smooth in τ but not differentiable at τ = 0 by autodiff: an error, not a flow of NaNs."""
    problem = smooth_problem(getkey())
    p0, a, tau = problem.params0, 1.5, 0.05
    flow = modified_flow(ft.partial(heavy_ball_velocity, damping=a), tau)
    assert flow.spec.regime == "slow"
    trace = jax.tree.map(lambda x: jax.random.normal(getkey(), x.shape), p0)
    y0 = flow.init(p0)  # the chain's state: (empty, TraceState, empty)
    y = ModifiedState(p0, (y0.state[0], optax.TraceState(trace), y0.state[2]))
    v = eqx.filter_jit(flow.vector_field)(0.0, y, problem)
    theta_dot, v_dot = HeavyBall(a).vector_field(
        0.0, (p0, jax.tree.map(jnp.negative, trace)), problem
    )
    assert tree_max_abs_diff(v.params, theta_dot) < 1e-13
    assert tree_max_abs_diff(jax.tree.map(jnp.negative, v.state[1].trace), v_dot) < 1e-13
    sgd = dynopt.run(optax.sgd(tau**2, momentum=1 - a * tau), problem, 50)
    ours = dynopt.run(flow.discretize(tau), problem, 50)
    assert tree_max_abs_diff(sgd.params, ours.params) < 1e-13
    with pytest.raises(ValueError, match=r"f1 is not finite"):
        modified_flow(
            lambda alpha: optax.sgd(alpha, momentum=1 - a * jnp.sqrt(alpha)),
            tau**2,
            time_unit=0.5,
            state="slow",
            state_map=(
                lambda s, t: jax.tree.map(lambda x: -t * x, s),
                lambda z, t: jax.tree.map(lambda x: -x / t, z),
            ),
        )


class _TwoLeaves(NamedTuple):
    a: jax.Array
    b: jax.Array


def _two_leaf_state(coupling, cycle, square=0.0):
    r"""$a' = a/2 + g + c\,b$ (when `cycle`) $+ q a^2$, $b' = b/2 + g + c\,a$; update
    $-h(a + b)$: a fast state for the structure checks."""

    def factory(h):
        def init(params):
            return _TwoLeaves(jnp.zeros_like(params), jnp.zeros_like(params))

        def update(g, s, params=None):
            a = 0.5 * s.a + g + (coupling * s.b if cycle else 0.0) + square * s.a**2
            b = 0.5 * s.b + g + coupling * s.a
            return -h * (a + b), _TwoLeaves(a, b)

        return optax.GradientTransformation(init, update)

    return factory


def test_coupled_fast_state(getkey):
    r"""A trace of RMS-scaled gradients: the trace reads the new second moment (a chain of two
    leaves, solved leaf after leaf). On the manifold ν = g², trace = g/((1-b)√(g² + ε)):
    $f_1 = -g/((1-b)\sqrt{g^2+\epsilon})$."""
    problem = smooth_problem(getkey())
    b, eps = 0.5, 0.3

    def opt(h):
        return optax.chain(optax.scale_by_rms(decay=0.6, eps=eps), optax.trace(b), optax.scale(-h))

    flow = modified_flow(opt, 0.02, order=2)
    assert flow.spec.regime == "fast" and flow.spec.sweeps == 2
    g = problem.grad(problem.params0)
    f1 = _fields(flow, problem.params0, problem)[0]
    expect = jax.tree.map(lambda x: -x / ((1 - b) * jnp.sqrt(x * x + eps)), g)
    assert tree_max_abs_diff(f1, expect) < 1e-14
    mlp = dynopt.problems.mlp_regression(
        num_samples=16, dim=2, width=4, depth=1, batch_size=16, seed=3
    )
    # Tsit5, the automatic choice here (measured): named, compare compiles no Jacobian of the
    # order-2 field to choose it (as in the comparisons below).
    cmp = dynopt.compare(opt, mlp, (0.02, 0.01, 0.005), 0.4, order=2, solver="tsit5")
    assert cmp.verdict == "asymptotic" and abs(float(cmp.order) - 2) < 0.15, cmp


def test_centered_rmsprop_with_momentum():
    r"""Centered RMSprop with momentum, a trace after the scaling: on the slow manifold
    $\mu = g$, $\nu = g^2$, so $\nu - \mu^2 = 0$ and $f_1 = -g/((1-\beta)\sqrt\epsilon)$.
    The contraction probe, which sets every state leaf at once, left the optimizer's domain
    ($\nu - \mu^2 + \epsilon < 0$ under its square root, read by the trace through $0\cdot$NaN
    at h = 0): it was refused as moving the parameters at h = 0. Its flows track the optimizer
    on a non-quadratic loss at orders 1 and 2 (order 1 from below: its $h^2$ term is large,
    so its local orders rise toward 1 as h halves). With eps = 0 the update on the manifold is
    $0\cdot\infty$: said so."""
    problem = dynopt.problems.logcosh()
    beta, eps = 0.4, 0.3

    def opt(h):
        return optax.rmsprop(h, decay=0.6, eps=eps, centered=True, momentum=beta)

    def chained(h):
        return optax.chain(
            optax.scale_by_stddev(decay=0.6, eps=eps), optax.scale(-h), optax.trace(beta)
        )

    g = problem.grad(problem.params0)
    expect = jax.tree.map(lambda x: -x / ((1 - beta) * np.sqrt(eps)), g)
    for tx in (opt, chained):
        flow = modified_flow(tx, 0.01, order=2, problem=problem)
        assert flow.spec.regime == "fast"
        f1 = _fields(flow, problem.params0, problem)[0]
        assert tree_max_abs_diff(f1, expect) < 1e-14
    cmp = dynopt.compare(opt, problem, (0.01, 0.005, 0.0025), 0.2, order=2, solver="tsit5")
    assert cmp.verdict == "asymptotic" and abs(float(cmp.order) - 2) < 0.1, cmp
    cmp = dynopt.compare(opt, problem, (0.0025, 0.00125, 0.000625), 0.2, order=1, solver="tsit5")
    local = np.asarray(cmp.local_orders)
    assert cmp.verdict == "asymptotic" and abs(float(cmp.order) - 1) < 0.1, cmp
    assert local[0] < local[1] < 1 + 0.02 and local[1] > 0.95, cmp
    with pytest.raises(ValueError, match=r"slow manifold is not finite .*eps=0"):
        modified_flow(
            lambda h: optax.rmsprop(h, decay=0.6, eps=0.0, centered=True, momentum=beta), 0.01
        )


def test_optimistic_gradient_descent_settles_its_first_step_flag(getkey):
    r"""`optax.optimistic_gradient_descent` keeps a boolean `is_initial_step` (its first step
    uses the current gradient twice): on the slow manifold it is False. The previous gradient is
    $g(\theta_{k-1}) = g + h\alpha Hg + O(h^2)$, so $d_1 = -\alpha g$, $d_2 = \alpha\beta Hg$
    and $f_2 = \alpha(\beta - \alpha/2)Hg$; at $\alpha = \beta = 1$ the implicit regulariser is
    $-\tfrac h4\|\nabla L\|^2$, GD's with the sign reversed."""
    problem = smooth_problem(getkey())
    p0 = problem.params0
    g = problem.grad(p0)
    Hg = jax.jvp(problem.grad, (p0,), (g,))[1]
    alpha, beta = 0.7, 0.4
    flow = modified_flow(
        lambda h: optax.optimistic_gradient_descent(h, alpha=alpha, beta=beta), 0.02, order=2
    )
    f1, f2 = _fields(flow, p0, problem)
    assert tree_max_abs_diff(f1, jax.tree.map(lambda x: -alpha * x, g)) < 1e-14
    assert tree_max_abs_diff(f2, jax.tree.map(lambda x: alpha * (beta - alpha / 2) * x, Hg)) < 1e-12
    default = modified_flow(lambda h: optax.optimistic_gradient_descent(h), 0.02, order=2)
    terms = eqx.filter_jit(default.terms)(p0, problem)
    assert abs(float(terms.regularizer) + 0.25) < 1e-12
    cmp = dynopt.compare(
        lambda h: optax.optimistic_gradient_descent(h),
        problem,
        (0.02, 0.01, 0.005),
        0.4,
        order=2,
        solver="tsit5",
    )
    assert cmp.verdict == "asymptotic" and abs(float(cmp.order) - 2) < 0.15, cmp


def test_a_series_outside_its_asymptotic_regime_is_named():
    """optax.adam's defaults at h = 0.02: the O(h) term carries (1+β₂)/(2(1-β₂)) ≈ 1000 and
    1/√ε, so the order-2 flow is stiff and its solve fails; the error says why.

    The same defaults on another draw of the data: the order-2 references solve, but the
    runs start on the order-2 slow manifold, the same series outside its regime (a negative
    second moment), and blow up at step 1. That is not the optimizer's instability: the error
    says so, with the series' diagnosis (before: a Comparison "unstable, no order").

    One test, one optimizer and the same options: both draws run the one compiled comparison
    (same shapes). Tsit5 is what the automatic choice takes for both references (measured);
    named, the Jacobian of the order-2 field it reads is not compiled."""
    adam = lambda h: optax.adam(h)
    # The stiff reference runs out of steps at the default budget (16,384) and at 1,024 alike
    # (measured; 8.2 s -> 2.6 s here): the same failure, the same diagnosis. The other draw's
    # references solve within 1,024 steps.
    options = dict(order=2, solver="tsit5", max_steps=1024)
    hs = (0.02, 0.01, 0.005)
    problem = dynopt.problems.mlp_regression(
        num_samples=16, dim=2, width=4, depth=1, batch_size=16, seed=3
    )
    with pytest.raises(dynopt.SolveError, match=r"Likely cause: the order-2 .* τ‖f2‖/‖f1‖ = "):
        dynopt.compare(adam, problem, hs, 0.4, **options)
    problem = dynopt.problems.mlp_regression(
        num_samples=16, dim=2, width=4, depth=1, batch_size=16, seed=1
    )
    with pytest.raises(ValueError, match=r"blew up at step\(s\) \[1\], started on the order-2 "
                       r"slow manifold.*Likely cause: the order-2 .* τ‖f2‖/‖f1‖ = "):  # fmt: skip
        dynopt.compare(adam, problem, hs, 0.4, **options)


def _near_zero_gradient_coordinate(A, params0) -> dynopt.Problem:
    """A quadratic ½θᵀAθ whose second gradient coordinate is ~1e-4 at θ0 and grows in
    magnitude along the flow: the order-2 slow manifold of a slow second moment lags it, its
    ν₂ = g₂² - O(τ)·d(g₂²)/dt is negative at θ0 for any τ ≳ 1e-5."""
    A = jnp.asarray(A)
    return dynopt.Problem(loss_fn=lambda x: 0.5 * x @ A @ x, params0=jnp.asarray(params0))


def test_a_start_with_a_negative_second_moment_is_not_called_unstable():
    """AdamW/Adam at these step sizes is stable (optax's own runs), but the order-2 slow-manifold
    start has ν < 0 in the coordinate whose gradient is near 0: the first step takes the square
    root of a negative number. The global τ‖f2‖/‖f1‖ = 0.13 is small (the large coordinate
    carries the norms), so the series diagnosis stayed silent and the comparison read
    "unstable", diverged_at [1 1 1] (before). Now: a `ValueError` naming the invalid start and
    the per-coordinate ratio max_i τ|f2_i|/|f1_i|."""
    problem = _near_zero_gradient_coordinate([[1.0, 2.0], [2.0, 5.0]], [1.0, -0.4 - 1e-4])
    opt = lambda h: optax.adam(h, b1=0.9, b2=0.99, eps=0.1)
    hs = (5e-4, 2.5e-4, 1.25e-4)
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam is not strict-clean
        run = dynopt.run(opt(hs[0]), problem, 10, every=10)
    assert int(run.diverged_at) == -1  # the optimizer itself is fine
    with pytest.raises(
        ValueError,
        match=r"blew up at step\(s\) \[1\], started on the order-2 slow manifold.*first step is "
        r"not: 1 non-finite.*negative in \S*nu \(1\).*max_i τ\|f2_i\|/\|f1_i\| = .*"
        r"τ‖f2‖/‖f1‖ = 0\.1.*order=1",
    ):
        dynopt.compare(opt, problem, hs, t1=0.005, order=2, solver="tsit5")


def test_a_transform_built_for_the_parameter_structure():
    """`optax.masked` cannot step on the probe problem's parameters: the checks run on the
    user's problem (given, or `compare`'s). Weight decay on the weights only:
    f1 = -(g + c·θ) on the masked leaves, -g on the others."""
    problem = dynopt.problems.mlp_regression(
        num_samples=16, dim=2, width=4, depth=1, batch_size=16, seed=3
    )
    p0, c = problem.params0, 0.1
    mask = jax.tree.map(lambda x: x.ndim > 1, p0)

    def opt(h):
        return optax.chain(optax.masked(optax.add_decayed_weights(c), mask), optax.sgd(h))

    with pytest.raises(ValueError, match=r"one step on the probe problem .* Pass problem="):
        modified_flow(opt, 0.02)
    flow = modified_flow(opt, 0.02, order=2, problem=problem)
    f1 = _fields(flow, flow.init(p0), problem)[0].params
    g = problem.grad(p0)
    expect = jax.tree.map(lambda gi, x, m: -(gi + c * x) if m else -gi, g, p0, mask)
    assert tree_max_abs_diff(f1, expect) < 1e-15
    cmp = dynopt.compare(opt, problem, (0.02, 0.01, 0.005), 0.4, order=2, solver="tsit5")
    assert cmp.verdict == "asymptotic" and abs(float(cmp.order) - 2) < 0.15, cmp


def test_bad_input():
    with pytest.raises(ValueError, match="optimizer must be a callable"):
        modified_flow(optax.sgd(0.1), 0.1)
    with pytest.raises(ValueError, match="order must be an integer"):
        modified_flow(lambda h: optax.sgd(h), 0.1, order=5)
    # Rounding is a kink inside the primitive (sign and abs are branches: test_modified_smooth)
    rounded = optax.stateless(lambda u, p: jax.tree.map(lambda x: jnp.round(100 * x) / 100, u))
    with pytest.raises(ValueError, match=r"not smooth.*round"):
        modified_flow(lambda h: optax.chain(optax.sgd(h), rounded), 0.1)
    # AMSGrad's running maximum ν̂ = max(ν̂, ν) is a branch whose fixed states ν̂ = ν are its
    # tie: no slow manifold, in either regime (test_modified_smooth)
    with pytest.raises(ValueError, match=r"slow manifold .* kink of its max.*never forgets"):
        modified_flow(lambda h: optax.amsgrad(h), 0.1)
    # A line search (it reads `value_fn`, to which optax hands the extra arguments it does not
    # consume, dynopt's `grad_fn` among them): the iterate picks its branches and trip counts.
    with pytest.raises(ValueError, match=r"not smooth.*while \(a loop whose trip count"):
        modified_flow(lambda h: optax.lbfgs(h), 0.1)
    with pytest.raises(ValueError, match=r"random \(random_bits"):
        modified_flow(lambda h: optax.noisy_sgd(h, key=jax.random.key(0)), 0.1)
    with pytest.raises(ValueError, match="integer step counter"):
        modified_flow(lambda h: optax.sgd(optax.exponential_decay(h, 10, 0.9)), 0.1)
    with pytest.raises(ValueError, match="vanishes once the step counter is large"):
        modified_flow(lambda h: optax.adam(optax.exponential_decay(h, 10, 0.9)), 0.1)
    with pytest.raises(ValueError, match="inject_hyperparams keeps"):
        modified_flow(lambda h: optax.inject_hyperparams(optax.sgd)(learning_rate=h), 0.1)
    with pytest.raises(ValueError, match="moves the parameters"):
        modified_flow(lambda h: optax.sgd(0.1), 0.1)
    # A fast state moves θ at h = 0 from a generic state; on its slow manifold too when the
    # learning rate is a constant (with `h` it does not: AUTOMATIC's rmsprop momentum row).
    with pytest.raises(ValueError, match=r"moves the parameters by .* from a state on its slow"):
        modified_flow(lambda h: optax.sgd(0.1, momentum=0.5), 0.1)
    with pytest.raises(ValueError, match=r"moves the parameters by .*; it must vanish"):
        modified_flow(lambda h: optax.rmsprop(0.1, momentum=0.5), 0.1)
    # Where no slow manifold can be built, the message says why (it was swallowed).
    with pytest.raises(ValueError, match=r"; it must vanish .*could be built: .*Adadelta"):
        modified_flow(lambda h: optax.adadelta(0.1, rho=0.9), 0.1)
    with pytest.raises(ValueError, match="order must be 1 or 2 for an optimizer whose state"):
        modified_flow(lambda h: optax.rmsprop(h, momentum=0.5), 0.1, order=3)
    # Fast states the leaf-after-leaf manifold cannot solve: leaves in a cycle, a leaf
    # nonlinear in itself.
    with pytest.raises(ValueError, match=r"read each other in a cycle"):
        modified_flow(_two_leaf_state(coupling=0.1, cycle=True), 0.1)
    with pytest.raises(ValueError, match=r"not affine in each leaf"):
        modified_flow(_two_leaf_state(coupling=0.0, cycle=False, square=0.1), 0.1)
    with pytest.raises(ValueError, match=r"state='slow'.*\.trace changes"):
        modified_flow(lambda h: optax.sgd(h, momentum=0.9), 0.1, state="slow")
    # Slow Adam's bias corrections are carried as products (tests/test_modified_counters.py); a
    # schedule on top reads the counter itself.
    with pytest.raises(ValueError, match="reads the integer step counter other than"):
        modified_flow(
            lambda h: optax.adam(optax.exponential_decay(h, 10, 0.9), b1=1 - h, b2=1 - h), 0.1
        )
    with pytest.raises(ValueError, match=r"does not .*contract"):
        modified_flow(lambda h: optax.rmsprop(h, decay=1 - h), 0.1, state="fast")
    # AdaGrad's accumulator is neither regime's: the message says what it is, without sending
    # the user from state='fast' to 'slow' and back.
    with pytest.raises(ValueError, match=r"never forgotten.*accumulator .*AdaGrad"):
        modified_flow(lambda h: optax.adagrad(h), 0.1)
    with pytest.raises(ValueError, match="state_map: inverse"):
        modified_flow(
            lambda h: optax.rmsprop(h, decay=1 - h),
            0.1,
            state_map=(lambda s, t: s, lambda z, t: jax.tree.map(lambda x: 2 * x, z)),
        )
    with pytest.raises(ValueError, match="step_size"):
        modified_flow(lambda h: optax.sgd(h), -0.1)
    with pytest.raises(ValueError, match=r"traced step size failed .*must stay a JAX value"):
        modified_flow(lambda h: optax.sgd(float(h)), 0.1)


def test_a_trace_after_the_learning_rate_reads_one_manifold_term_more(getkey):
    """`optax.rmsprop(h, momentum=β)` keeps the trace in step-scaled units (its manifold starts
    at 0): f₁ = -g/((1-β)√(g² + ε)), which needs the manifold's O(h) term. Without the extra
    term f₁ would be -g/√(g² + ε) (the test can fail)."""
    problem = smooth_problem(getkey())
    beta, decay, eps = 0.5, 0.6, 0.3
    flow = modified_flow(lambda h: optax.rmsprop(h, decay=decay, eps=eps, momentum=beta), 0.01)
    f1 = flow.field_values(flow.init(problem.params0), problem)[0]
    g = problem.grad(problem.params0)
    want = jax.tree.map(lambda g: -g / ((1 - beta) * jnp.sqrt(g**2 + eps)), g)
    np.testing.assert_allclose(tree_max_abs_diff(f1, want), 0.0, atol=1e-13)


@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_adaptive_fast_coefficient(name, getkey):
    """Adam/RMSprop with fixed β on their slow manifold: f₁ = -g/D and the O(h) term
    f₂ = -(H P₀/D)·[(1+β₁)/(2(1-β₁)) - (1+β₂)/(2(1-β₂))·u/D] (Cattaneo et al. 2024), with
    D = |g| + ε, u = |g| (Adam; ε outside the root) or D = √(g² + ε), u = g²/D (optax.rmsprop)."""
    problem = smooth_problem(getkey())
    p0, b1, b2, eps = problem.params0, 0.5, 0.6, 0.3
    if name == "adam":

        def opt(h):
            return optax.adam(h, b1=b1, b2=b2, eps=eps)

        def denom(g):
            return jnp.abs(g) + eps, jnp.abs(g)
    else:
        b1 = 0.0

        def opt(h):
            return optax.rmsprop(h, decay=b2, eps=eps)

        def denom(g):
            d = jnp.sqrt(g**2 + eps)
            return d, g**2 / d

    flow = modified_flow(opt, 0.01, order=2)
    assert flow.spec.regime == "fast"
    f1, f2 = _fields(flow, p0, problem)

    def P0(x):
        return jax.tree.map(lambda g: g / denom(g)[0], problem.grad(x))

    HP = jax.jvp(problem.grad, (p0,), (P0(p0),))[1]
    B1, B2 = (1 + b1) / (2 * (1 - b1)), (1 + b2) / (2 * (1 - b2))

    def closed(hp, g):
        d, u = denom(g)
        return -hp / d * (B1 - B2 * u / d)

    assert tree_max_abs_diff(f1, jax.tree.map(jnp.negative, P0(p0))) < 1e-14
    assert tree_max_abs_diff(f2, jax.tree.map(closed, HP, problem.grad(p0))) < 1e-12


def test_no_retrace_across_step_sizes(getkey):
    """The step size is a traced leaf: a flow at a new h reuses the compiled field, and so does
    its discretization."""
    problem = smooth_problem(getkey())
    traces = []

    @eqx.filter_jit
    def field(flow, y):
        traces.append(None)
        return flow.vector_field(0.0, y, problem)

    opt = BY_NAME["auto_heavy_ball"].optimizer
    for h in (0.01, 0.02, 0.04):
        flow = modified_flow(opt, h, order=2)
        field(flow, flow.init(problem.params0))
    assert len(traces) == 1
    disc = [modified_flow(opt, h, order=2).discretize(h) for h in (0.01, 0.02)]
    # equal static parts (jit caches on equality and hash)
    assert disc[0].factory == disc[1].factory and disc[0].init_fn is disc[1].init_fn
    assert hash(disc[0].factory) == hash(disc[1].factory)


def test_a_fit_below_the_expansions_order_is_not_called_asymptotic():
    """optax.rmsprop's defaults: g/sqrt(g² + 1e-8) bends on the scale 1e-4 in g, far below
    what h = 0.02 to 0.005 resolve near a coordinate's minimum, and the errors against the
    order-1 flow fall like h^0.44 with agreeing local orders (0.34, 0.53). The optimizer against
    its own order-p flow has global error O(h^p), so such a fit is not the limit: pre-asymptotic,
    said, instead of "asymptotic 0.44"."""
    cmp = dynopt.compare(
        lambda h: optax.rmsprop(h),
        dynopt.problems.logcosh(),
        (0.02, 0.01, 0.005),
        0.4,
        solver="tsit5",
    )
    assert cmp.verdict == "pre-asymptotic" and np.isnan(cmp.order), cmp.reason
    assert "below the order 1 the errors must reach" in cmp.reason, cmp.reason


def test_state_leaves_that_are_flags_or_counters(getkey):
    """optax.zero_nans keeps a boolean flag per leaf: piecewise constant in h, its Taylor
    coefficients are zero (a float0 tangent before). The chain's fields are sgd's."""
    problem = dynopt.problems.logcosh()
    x = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(getkey(), p.shape), problem.params0)
    for opt in (lambda h: optax.sgd(h), lambda h: optax.sgd(h, momentum=0.5)):
        plain = modified_flow(opt, 0.01, 2)
        flagged = modified_flow(lambda h, opt=opt: optax.chain(optax.zero_nans(), opt(h)), 0.01, 2)
        ours = [plain.params(f) for f in plain.field_values(plain.init(x), problem)]
        theirs = [flagged.params(f) for f in flagged.field_values(flagged.init(x), problem)]
        assert tree_max_abs_diff(ours, theirs) < 1e-14


def test_a_parameter_the_loss_does_not_read_has_field_zero():
    """Adam with a parameter the loss does not read: its gradient is exactly 0, the second
    moment on the slow manifold is 0, and autodiff through its square root gave 0·∞ = NaN,
    which `terms` refused. The optimizer never moves it: its fields are 0, and the other
    leaves' are those of the problem without it (tests/test_modified_roots.py)."""
    base = dynopt.problems.logcosh()
    problem = dynopt.Problem(
        lambda x: base.loss_fn({"a": x["a"], "b": x["b"]}),
        {**base.params0, "unused": jnp.zeros(2)},
    )
    opt = lambda h: optax.adam(h, 0.5, 0.6, 0.3)
    flow = modified_flow(opt, 0.01, 2, problem=problem)
    fields = flow.terms(flow.init(problem.params0), problem).fields
    alone = modified_flow(opt, 0.01, 2, problem=base)
    theirs = alone.terms(alone.init(base.params0), base).fields
    for f, g in zip(fields, theirs, strict=True):
        assert np.all(np.asarray(f["unused"]) == 0.0)
        assert tree_max_abs_diff({"a": f["a"], "b": f["b"]}, g) < 1e-14


def test_terms_take_bare_parameters_where_they_fix_the_state():
    """`terms(params0, problem)` as the README writes it for AdamW (fast regime: the state is
    the parameters) works for plain SGD too (slow regime, no optimizer state: the state is
    `init(params)`); it raised a raw AttributeError ('... has no attribute state') before. A
    slow-regime optimizer with a state needs it: a ValueError naming `flow.init(params)`."""
    problem = smooth_problem(jax.random.key(0))
    p0 = problem.params0
    sgd = modified_flow(optax.sgd, 0.01, order=2, problem=problem)
    assert sgd.spec.regime == "slow"
    bare, full = sgd.terms(p0, problem), sgd.terms(sgd.init(p0), problem)
    assert float(bare.regularizer) == float(full.regularizer) == pytest.approx(0.25)
    rms = modified_flow(lambda h: optax.rmsprop(h, decay=1 - 3.0 * h, eps=1e-3), 0.01, order=2)
    assert rms.spec.regime == "slow"
    with pytest.raises(ValueError, match=r"slow regime.*bare parameters.*flow\.init\(params\)"):
        rms.terms(p0, problem)
    assert np.isfinite(float(rms.terms(rms.init(p0), problem).rate))


def test_a_schedule_in_steps_of_a_fast_state_is_frozen_and_said():
    """A fast state's counter is taken at k -> oo (bias corrections 1): right for Adam, and for
    a schedule in steps the h -> 0 limit at any t > 0, but not the schedule from step 0. A
    warning says so; a first-step rule (novograd's count == 0) is not a schedule."""
    warm_up = optax.linear_schedule
    with pytest.warns(UserWarning, match="reads the integer step counter other than"):
        modified_flow(lambda h: optax.sgd(warm_up(h, 0.5 * h, 100), momentum=0.5), 0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        modified_flow(lambda h: optax.adam(h, 0.5, 0.6, 0.3), 0.01)


def test_no_float64_requests_without_x64():
    """With x64 off (a float32 model, JAX's default), the series' internal scalars are JAX's
    default float: no "float64 requested, truncated" warning (34 before, on a float32 MLP)."""
    with jax.enable_x64(False), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        problem = dynopt.Problem(
            lambda p: jnp.sum(jnp.log(jnp.cosh(p["w"]))), {"w": jnp.ones(3, jnp.float32)}
        )
        opt = lambda h: optax.sgd(h, momentum=0.5)
        flow = dynopt.modified_flow(opt, 0.01, order=2, problem=problem)
        terms = flow.terms(flow.init(problem.params0), problem)
        assert jnp.isfinite(terms.regularizer)


def test_refusals_name_their_cause_and_a_remedy_that_builds():
    """Each refusal says why, and its remedy is checked here to build: a state that is fast is
    sent to state='fast' (and one that is neither says why); Adadelta's fast state is affine in
    itself with a coefficient that reads another leaf (not "nonlinear in itself") and slow
    with rho = 1 - a·h; a normalization after the learning rate does not scale with h (not a
    singularity at τ = 0), and before it is normalized descent, f1 = -∇L/(‖∇L‖ + ε)."""
    with pytest.raises(ValueError, match=r"state='slow'.*\.trace changes.*use state='fast'"):
        modified_flow(lambda h: optax.sgd(h, momentum=0.9), 0.1, state="slow")
    assert modified_flow(lambda h: optax.sgd(h, momentum=0.9), 0.1, state="fast")
    with pytest.raises(ValueError, match=r"Nor is the state fast: .*never forgotten.*AdaGrad"):
        modified_flow(lambda h: optax.adagrad(h), 0.1, state="slow")
    with pytest.raises(ValueError, match=r"affine in each leaf.*coefficient .*depends.*Adadelta"):
        modified_flow(lambda h: optax.adadelta(h, rho=0.6, eps=0.3), 0.01)
    slow = modified_flow(lambda h: optax.adadelta(h, rho=1 - 2 * h, eps=0.3), 0.01, state="slow")
    assert slow.spec.regime == "slow"
    after = lambda h: optax.chain(optax.sgd(h), optax.normalize_by_update_norm())
    with pytest.raises(ValueError, match=r"step length does not scale with the step size"):
        modified_flow(after, 0.01)
    problem = dynopt.problems.quadratic(jnp.asarray([1.0, 4.0]), params0=jnp.asarray([1.0, -1.5]))
    before = modified_flow(
        lambda h: optax.chain(optax.normalize_by_update_norm(), optax.sgd(h)), 0.01
    )
    g = problem.grad(problem.params0)
    f1 = _fields(before, before.init(problem.params0), problem)[0].params
    assert tree_max_abs_diff(f1, -g / (jnp.linalg.norm(g) + 1e-6)) < 1e-15


def test_a_transform_that_fails_on_the_users_problem_says_how():
    """optax.lookahead fails on the probe problem (no LookaheadParams) and on the user's (it
    takes the gradient of the fast parameters alone): the user's own failure is said (before:
    the probe's AttributeError, and "it failed on your problem too")."""
    rosen = dynopt.problems.rosenbrock(b=2.0, params0=jnp.asarray([-0.5, 0.5]))
    params0 = optax.LookaheadParams.init_synced(rosen.params0)
    problem = dynopt.Problem(lambda p: rosen.loss(p.fast), params0, name="lookahead")
    opt = lambda h: optax.lookahead(optax.sgd(h), 2, 0.5)
    with pytest.raises(ValueError, match=r"on your problem \(lookahead\) failed with TypeError"):
        modified_flow(opt, 0.01, problem=problem)
