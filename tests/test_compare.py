import equinox as eqx
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import _compare, flows, problems

from .helpers import optimized_compilation, TraceCounter


HS = 1.0 / jnp.array([40.0, 80.0, 160.0, 320.0])


def _quadratic():
    return problems.quadratic([1.0, 10.0], rotate=True, seed=2)


def test_gd_is_first_order_against_gradient_flow():
    c = dynopt.compare(flows.GradientFlow(), _quadratic(), HS, 1.0)
    assert abs(float(c.order) - 1.0) <= 0.1
    assert np.all(np.diff(np.asarray(c.errors)) < 0)
    assert not bool(jnp.any(c.diverged))


def test_gd_is_second_order_against_modified_flow():
    c = dynopt.compare(
        flows.GradientFlow(), _quadratic(), HS, 1.0, reference=flows.ModifiedGradientFlow
    )
    assert abs(float(c.order) - 2.0) <= 0.1
    assert abs(float(c.final_order) - 2.0) <= 0.1


def test_gd_error_matches_closed_form_on_quadratic():
    """The error compare reports equals |(I - hH)^k x0 - exp(-kh H) x0| maximised over k."""
    p = _quadratic()
    c = dynopt.compare(flows.GradientFlow(), p, HS, 1.0)
    hess = np.asarray(p.hessian)
    lam, q = np.linalg.eigh(hess)
    x0 = np.ones(2)
    for h, err in zip(np.asarray(HS), np.asarray(c.errors)):
        n = round(1.0 / h)
        ks = np.arange(n + 1)[:, None]
        gd = ((1 - h * lam)[None, :] ** ks) * (q.T @ x0)[None, :]
        flow = np.exp(-h * ks * lam[None, :]) * (q.T @ x0)[None, :]
        assert err == pytest.approx(np.max(np.linalg.norm(gd - flow, axis=1)), rel=1e-7)


def test_orders_on_rosenbrock_and_logistic():
    hs = 1.0 / jnp.array([4000.0, 8000.0, 16000.0, 32000.0])
    c = dynopt.compare(flows.GradientFlow(), problems.rosenbrock(), hs, 0.5)
    assert abs(float(c.order) - 1.0) <= 0.1
    p = problems.logistic_regression(num_samples=64, dim=4)
    hs = 1.0 / jnp.array([4.0, 8.0, 16.0, 32.0])
    c = dynopt.compare(flows.GradientFlow(), p, hs, 2.0, reference=flows.ModifiedGradientFlow)
    assert abs(float(c.order) - 2.0) <= 0.1


def test_no_recompilation_for_new_step_sizes():
    counter = TraceCounter(lambda x: jnp.sum(x**2) + 0.1 * jnp.sum(x**4))
    p = dynopt.Problem(counter, jnp.array([1.0, -1.0]))
    dynopt.compare(flows.GradientFlow(), p, [0.1, 0.05, 0.025], 1.0)
    traced = counter.count
    dynopt.compare(flows.GradientFlow(), p, [0.2, 0.1, 0.05], 1.0)
    dynopt.compare(flows.GradientFlow(), p, [0.25, 0.125, 0.0625], 1.0)
    assert counter.count == traced


def test_diverged_step_size_is_flagged_and_never_silently_dropped():
    """A sweep with an unstable step size has no order (it used to be fitted over the others,
    silently): the verdict is unstable and names it; the local orders of the rest remain."""
    p = problems.quadratic([1.0, 20.0])
    # 0.25 > 2/20: the stiff mode grows 4x per step.
    hs = [0.25, 0.01, 0.005, 0.0025, 0.00125]
    c = dynopt.compare(flows.GradientFlow(), p, hs, 80.0)
    assert bool(c.diverged[0]) and not bool(jnp.any(c.diverged[1:]))
    assert np.isinf(float(c.errors[0]))
    assert c.verdict == "unstable" and "[0.25] diverged" in c.reason
    assert np.isnan(float(c.order))
    assert np.isnan(float(c.local_orders[0]))
    assert np.all(np.abs(np.asarray(c.local_orders[1:]) - 1.0) <= 0.1)


def _while_operands(jaxpr) -> list[list[tuple[int, ...]]]:
    """The operand shapes of every while loop in `jaxpr`, nested ones included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "while":
            found.append([v.aval.shape for v in eqn.invars])
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += _while_operands(sub)
    return found


def test_step_sizes_run_one_after_another_on_a_cpu(monkeypatch):
    """On a CPU the runs go one step size after another (`map_batch`: a `lax.map`): each run's
    loop carries its own parameters and stops at its own step count. They ran batched (`vmap`),
    one loop over the whole batch of parameters, traced through vmap's while rule, computing
    every step size's step until the slowest one's count (here h = 0.25, diverged at step 7,
    was stepped 1,600 times, h = 0.0025's count). On an accelerator they still run batched:
    the same numbers to rounding."""
    p = problems.quadratic([1.0, 20.0])  # 0.25 > 2/20: diverges
    hs = jnp.array([0.25, 0.02, 0.01, 0.005, 0.0025])
    batch = (hs.size, 2)  # the parameters of every run at once
    calls = []
    program = _compare._compare_jit
    monkeypatch.setattr(_compare, "_compare_jit", lambda *a: calls.append(a) or program(*a))

    def compare():
        c = dynopt.compare(flows.GradientFlow(), p, hs, 4.0)
        jaxpr = eqx.filter_make_jaxpr(_compare._compare_program)(*calls.pop())[0]
        return c, [batch in shapes for shapes in _while_operands(jaxpr.jaxpr)]

    one_by_one, batched_loops = compare()
    assert batched_loops and not any(batched_loops)
    assert int(one_by_one.diverged_at[0]) > 0 and not np.any(one_by_one.diverged[1:])
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    jax.clear_caches()  # traced anew, batched
    try:
        batched, batched_loops = compare()
    finally:
        monkeypatch.undo()
        jax.clear_caches()  # no batched program left for the tests after this one
    assert any(batched_loops)
    for name in ("errors", "final_errors", "scales"):
        np.testing.assert_allclose(
            getattr(one_by_one, name), getattr(batched, name), rtol=1e-13, err_msg=name
        )
    np.testing.assert_array_equal(one_by_one.diverged_at, batched.diverged_at)


def test_compare_bad_input():
    p = _quadratic()
    with pytest.raises(ValueError, match="step_sizes must be a non-empty 1-D array"):
        dynopt.compare(flows.GradientFlow(), p, "abc", 1.0)
    with pytest.raises(ValueError, match="step_sizes must be > 0"):
        dynopt.compare(flows.GradientFlow(), p, [0.1, -0.1], 1.0)
    with pytest.raises(ValueError, match="step_sizes must be distinct"):
        dynopt.compare(flows.GradientFlow(), p, [0.1, 0.1, 0.05], 1.0)
    with pytest.raises(ValueError, match="t1 must be > 0"):
        dynopt.compare(flows.GradientFlow(), p, [0.1], 0.0)
    with pytest.raises(ValueError, match="integer multiple"):
        dynopt.compare(flows.GradientFlow(), p, [0.3], 1.0)
    with pytest.raises(ValueError, match="reference must be"):
        dynopt.compare(flows.GradientFlow(), p, [0.1], 1.0, reference=3)
    with pytest.raises(ValueError, match="map must be None or a callable"):
        dynopt.compare(flows.GradientFlow(), p, [0.1], 1.0, map=3)
    with pytest.raises(ValueError, match=r"must return a dynopt\.Discretization"):
        dynopt.compare(flows.GradientFlow(), p, [0.1], 1.0, map=lambda f, h: optax.sgd(h))


def test_fit_order_recovers_slope():
    h = jnp.array([0.1, 0.05, 0.025, 0.0125])
    assert float(dynopt.fit_order(h, 3.0 * h**1.5)) == pytest.approx(1.5, abs=1e-12)
    assert np.isnan(float(dynopt.fit_order(h, jnp.array([jnp.inf] * 3 + [1.0]))))


def _sqrt_map(flow, h):
    """A map whose time step is not the step size: GD with learning rate and dt = sqrt(h)."""
    del flow
    dt = jnp.sqrt(h)
    return dynopt.Discretization(optax.sgd, {"learning_rate": dt}, dt=dt)


def test_orders_are_fitted_against_the_time_step_of_the_map():
    """With dt = sqrt(h), GD's error is O(dt) = O(h^(1/2)): `compare` reports order 1 (the
    slope in dt) and the same errors as the default map at step sizes dt (two programs: bit for
    bit where they are optimized, `optimized_compilation`)."""
    p = _quadratic()
    dts = 1.0 / jnp.array([40.0, 80.0, 160.0, 320.0])
    jax.clear_caches()  # both compiled here (the plain one was, unoptimized, by earlier tests)
    with optimized_compilation():
        c = dynopt.compare(flows.GradientFlow(), p, dts**2, 1.0, map=_sqrt_map)
        plain = dynopt.compare(flows.GradientFlow(), p, dts, 1.0)
    np.testing.assert_allclose(c.dts, dts, rtol=1e-15)
    np.testing.assert_allclose(c.step_sizes, dts**2, rtol=1e-15)
    assert abs(float(c.order) - 1.0) <= 0.1
    np.testing.assert_array_equal(c.errors, plain.errors)
    np.testing.assert_array_equal(plain.dts, plain.step_sizes)
    np.testing.assert_allclose(float(c.order), float(plain.order), rtol=1e-12)


def test_memory_advice_names_arguments_compare_has():
    """compare has no `dense` argument: a reference too big even saved at the runs' times only
    is refused with advice on t1 and the step sizes, compare's own arguments."""
    big = dynopt.Problem(lambda x: jnp.sum(x**2), jnp.zeros(200_000))
    with pytest.raises(ValueError, match="Shorten t1") as info:
        dynopt.compare(flows.GradientFlow(), big, [1e-3, 5e-4, 2.5e-4], 1.0, solver="tsit5")
    assert "dense=False" not in str(info.value)


def test_an_optimizer_callable_is_compared_with_its_automatic_modified_flow():
    """`compare(h -> optax transform, ..., order=2)`: heavy ball with fixed β against its
    automatic order-2 modified flow (fast regime, started on the slow manifold): order 2."""

    def loss(p):
        return jnp.sum(jnp.log(jnp.cosh(p["w"] - 1.0))) + 0.5 * jnp.sum(
            (p["b"] - jnp.tanh(p["w"][:2])) ** 2
        )

    counter = TraceCounter(loss)
    problem = dynopt.Problem(counter, {"w": jnp.zeros(4), "b": jnp.ones(2)})
    c = dynopt.compare(_heavy_ball_half, problem, [0.02, 0.01, 0.005, 0.0025], 1.0, order=2)
    assert c.verdict == "asymptotic", c.reason
    assert abs(c.order - 2.0) < 0.1, c.local_orders
    # Called again (new step sizes), it reuses the compiled comparison: the order-2 reference
    # is one object per (optimizer, order, problem), not a new static argument per call.
    traced = counter.count
    again = dynopt.compare(_heavy_ball_half, problem, [0.04, 0.02, 0.01, 0.005], 1.0, order=2)
    assert counter.count == traced
    assert abs(again.order - 2.0) < 0.15, again.local_orders
    with pytest.raises(ValueError, match="order= is for an optimizer callable"):
        dynopt.compare(flows.GradientFlow(), problem, [0.02, 0.01, 0.005], 1.0, order=2)


def _heavy_ball_half(h):
    return optax.sgd(h, momentum=0.5)


def test_a_failed_reference_says_where_it_stopped_and_why():
    """optax.novograd normalises each parameter leaf's gradient (smoothed by eps = 1e-6): its
    continuum flow reaches the minimum of one leaf in finite time and then switches on that
    scale, so the reference solve spends its budget there. The error says where (t = 0.1115 of
    0.4) and why (the flow's Jacobian there against t0's), not only 'max_steps reached'."""
    with pytest.raises(dynopt.SolveError) as info:
        dynopt.compare(lambda h: optax.novograd(h), problems.logcosh(), (0.02, 0.01, 0.005), 0.4)
    msg = str(info.value)
    assert "It reached t = 0.111" in msg and "of [0, 0.4]" in msg, msg
    assert "Jacobian there has spectral radius" in msg and "novograd" in msg, msg


def _default_map_rows():
    """The registry rows whose map is their flow's default map (`flow.discretize`)."""
    from dynopt.correspondences import REGISTRY

    rows = []
    for row in REGISTRY:
        default = getattr(type(row.flow()), "default_map", None)
        if default is not None and row.map == default():
            rows.append(row)
    return rows


@pytest.mark.parametrize("row", _default_map_rows(), ids=lambda row: row.name)
def test_compare_with_the_default_map_of_every_registry_flow(row):
    """`compare(flow, ...)` without `map=` reads the default map's claimed order from the map
    `flow.discretize` builds (an instance: `Leapfrog.order` is a property of its half-step
    field; read on the class it was a `property` object, and `compare(HeavyBall(a), ...)`
    raised a TypeError). Short runs (4, 8, 16 steps): no exception, a verdict, and an order
    only where asymptotic."""
    m = row.measurements[0]
    flow, problem = row.flow(), m.problem()
    t1 = 4 * float(flow.discretize(m.step_sizes[0]).dt)
    c = dynopt.compare(flow, problem, m.step_sizes, t1)
    assert c.verdict in ("asymptotic", "pre-asymptotic", "unstable"), (c.verdict, c.reason)
    assert np.all(np.isfinite(np.asarray(c.errors))), c
    if c.verdict == "asymptotic":
        assert np.isfinite(float(c.order)), c


def test_a_map_class_is_refused_with_the_instance_to_pass():
    with pytest.raises(ValueError, match=r"map=Leapfrog\(\)"):
        dynopt.compare(
            flows.HeavyBall(1.0), _quadratic(), [0.04, 0.02, 0.01], 1.0, map=dynopt.maps.Leapfrog
        )


def test_scattered_local_orders_above_the_claimed_order_name_a_non_smooth_loss():
    """GD against its order-2 flow on a Huber loss (the Hessian jumps where |r| = δ; errors as
    `compare(lambda h: optax.sgd(h), huber, [0.04, ..., 0.005], 2.0, order=2)` measures them):
    local orders 2.72, 1.54, 1.61. Pre-asymptotic as before, and the reason also names the
    loss's smoothness; no such note without a claimed order or with orders below it."""
    from dynopt._order import assess_order

    hs = [0.04, 0.02, 0.01, 0.005]
    errs = [1.20057089e-05, 1.81976592e-06, 6.25323128e-07, 2.05260012e-07]
    a = assess_order(hs, errs, at_least=2)
    assert a.verdict == "pre-asymptotic" and np.isnan(a.order)
    assert "take smaller step sizes" in a.reason
    assert "loss may lack the 3 derivatives" in a.reason and "Huber" in a.reason
    assert "derivatives" not in assess_order(hs, errs).reason
    assert "derivatives" not in assess_order(hs, errs, at_least=3).reason


def test_heavy_ball_beta_09_of_the_readme_is_asymptotic_only_at_smaller_steps():
    """The README's `heavy_ball` (β = 0.9; θ' ≈ -10∇L): against its order-2 flow the step
    sizes that suit β = 0.5 are pre-asymptotic (errors up to 7.7x the solution's scale),
    ten times smaller ones fit 2.04."""

    def loss(p):
        return jnp.sum(jnp.log(jnp.cosh(p["w"] - 1.0))) + 0.5 * jnp.sum(
            (p["b"] - jnp.tanh(p["w"][:2])) ** 2
        )

    problem = dynopt.Problem(loss, {"w": jnp.zeros(4), "b": jnp.ones(2)})
    coarse = dynopt.compare(_heavy_ball_09, problem, [0.02, 0.01, 0.005, 0.0025], 1.0, order=2)
    assert coarse.verdict == "pre-asymptotic" and "solution's scale" in coarse.reason, coarse
    fine = dynopt.compare(_heavy_ball_09, problem, [0.002, 0.001, 0.0005, 0.00025], 1.0, order=2)
    assert fine.verdict == "asymptotic" and abs(float(fine.order) - 2.04) < 0.01, fine


def _heavy_ball_09(h):
    return optax.sgd(h, momentum=0.9)


def test_start_optax_runs_the_optimizer_from_its_own_init_as_a_users_loop_does():
    """`start="optax"`: the discrete runs start from `tx.init` (zero momentum), not from the
    order-2 slow manifold. The errors then equal those of a hand-written optax loop from zero
    against the same reference, and the start-up layer makes them first order (the manifold
    start fits 2). A map without a start of its own (GD) gives the same numbers either way."""
    p = problems.logistic_regression(64, 3, seed=0)
    hs, t1 = np.array([0.02, 0.01, 0.005, 0.0025]), 1.0

    def opt(h):
        return optax.sgd(h, momentum=0.5)

    on_manifold = dynopt.compare(opt, p, hs, t1, order=2)
    from_zero = dynopt.compare(opt, p, hs, t1, order=2, start="optax")
    assert on_manifold.start == "map" and from_zero.start == "optax"
    assert on_manifold.verdict == "asymptotic" and abs(float(on_manifold.order) - 2.0) < 0.1
    assert from_zero.verdict == "asymptotic" and abs(float(from_zero.order) - 1.0) < 0.1
    assert np.all(np.asarray(from_zero.errors) > 10 * np.asarray(on_manifold.errors))
    # the hand-written loop from optax's zero state, against the order-2 flow solved alone
    h, n = float(hs[2]), round(t1 / float(hs[2]))
    ref = dynopt.solve(dynopt.modified_flow(opt, h, 2), p, jnp.asarray(np.arange(n + 1) * h)).params
    tx = opt(h)

    def step(carry, _):
        theta, state = carry
        updates, state = tx.update(jax.grad(p.loss)(theta), state, theta)
        theta = optax.apply_updates(theta, updates)
        return (theta, state), theta

    _, thetas = jax.lax.scan(step, (p.params0, tx.init(p.params0)), length=n)
    loop_err = float(jnp.max(jnp.linalg.norm(thetas - ref[1:], axis=-1)))
    # both references at compare's rtol 1e-10 on errors of ~4e-3
    np.testing.assert_allclose(float(from_zero.errors[2]), loop_err, rtol=1e-6)
    gd = [dynopt.compare(flows.GradientFlow(), p, hs, t1, start=s) for s in ("map", "optax")]
    np.testing.assert_array_equal(np.asarray(gd[0].errors), np.asarray(gd[1].errors))
    with pytest.raises(ValueError, match=r"start must be 'map'.*or 'optax'"):
        dynopt.compare(opt, p, hs, t1, start="zero")


def test_adam_with_a_leaf_the_loss_never_reads_fits_its_order():
    """Adam on a problem with a leaf the loss never reads: sqrt'(0)·0 = NaN in f1 there, and
    the comparison refused the flow. The leaf never moves, in optax's run as in the flow (its
    field is 0): the order-1 errors are the problem's without it, to the references' own
    tolerance (rtol 1e-10 on O(1) parameters: the step controller's norm has two more entries,
    so the two adaptive solves take other steps)."""

    def loss(p):
        return jnp.sum(jnp.log(jnp.cosh(p["w"] - 0.7)))

    opt = lambda h: optax.adam(h, b1=0.5, b2=0.6, eps=0.3)
    p = dynopt.Problem(loss, {"w": jnp.array([0.3, -0.4]), "unused": jnp.array([1.0, 2.0])})
    alone = dynopt.Problem(loss, {"w": jnp.array([0.3, -0.4])})
    with_leaf, without = (dynopt.compare(opt, q, HS[:3], 0.4) for q in (p, alone))
    np.testing.assert_allclose(with_leaf.errors, without.errors, rtol=0, atol=1e-10)
    assert with_leaf.verdict == without.verdict


def test_the_reference_of_a_very_stiff_quadratic_solves_at_defaults():
    """Stiffness 1e8 over t1 = 10: the automatic Kvaerno5 reference ran to max_steps (its stage
    solves asked for F = T f(y) below its rounding; see `test_solve.py`'s stiff quadratic), so
    compare raised a SolveError instead of saying that GD diverged at these step sizes."""
    p = problems.quadratic(jnp.array([1e-3, 1.0, 1e5]), rotate=True)
    comp = dynopt.compare(flows.GradientFlow(), p, [0.1, 0.05], t1=10.0)
    assert comp.solver == "kvaerno5"
    np.testing.assert_array_equal(comp.diverged_at, [2, 2])
