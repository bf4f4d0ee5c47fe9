"""Non-smooth update maps (`dynopt._modified.smooth`, `dynopt._modified.branches`): a branch
chosen by the iterate (clipping, a `jnp.where` guard) is expanded on the side its run stays on,
and a run that crosses the switching surface is refused."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt._modified import modified_flow
from dynopt._modified.branches import first_switch
from dynopt._modified.smooth import branch_bits, classify, opaque

from .helpers import tree_max_abs_diff
from .test_modified import smooth_problem


def _clip_sgd(max_norm):
    return lambda h: optax.chain(optax.clip_by_global_norm(max_norm), optax.sgd(h))


def _clip_each_sgd(max_delta):
    return lambda h: optax.chain(optax.clip(max_delta), optax.sgd(h))


@eqx.filter_jit
def _fields(flow, state, problem):
    return flow.field_values(state, problem)


def test_branch_bits_record_the_iterate_dependent_predicates():
    @jax.jit
    def leaky(x):
        return jnp.where(x > 0, x, 0.1 * x)

    def fn(x, n):
        # `n` is an integer input: its select is smooth in x and not recorded.
        return leaky(x) + jnp.where(n > 0, 1.0, 0.0)

    for x, expect in ((jnp.asarray([1.0, -2.0]), [1, 0]), (jnp.asarray([-1.0, 3.0]), [0, 1])):
        out, bits = branch_bits(fn, x, jnp.asarray(1))
        np.testing.assert_array_equal(np.asarray(bits), expect)
        np.testing.assert_allclose(np.asarray(out), np.asarray(fn(x, 1)), rtol=0, atol=0)
    found = classify(fn, jnp.ones(2), jnp.asarray(1))
    assert found.branches and not found.kinks and not found.random
    # Inside a loop body a branch cannot be observed per step: a kink.
    looped = classify(lambda x: jax.lax.fori_loop(0, 2, lambda i, y: leaky(y), x), jnp.ones(2))
    assert looped.kinks and not looped.branches

    # A `cond` chosen by an integer sees its operands one for one: an integer select inside
    # (a counter, as in optax.MultiSteps) is smooth; an iterate's is a kink (nested).
    def counted(x, n, guard):
        def on(x, n):
            y = jnp.where(x > 0, x, 0.0) if guard else x
            return 2.0 * y, jnp.where(n > 3, n, n + 1)

        return jax.lax.cond(n % 2 == 0, on, lambda x, n: (x, n), x, n)

    found = classify(lambda x, n: counted(x, n, False), jnp.ones(2), jnp.asarray(1))
    assert not found.kinks and not found.branches
    found = classify(lambda x, n: counted(x, n, True), jnp.ones(2), jnp.asarray(1))
    assert found.kinks == {"select_n (a branch chosen by the iterate, e.g. clipping)"}


@pytest.mark.parametrize("clip", [_clip_sgd, _clip_each_sgd], ids=["global_norm", "each_entry"])
def test_inactive_clipping_is_plain_sgd(getkey, clip):
    """Clipping by the global norm (a `select`) or of each entry (`optax.clip`: `max`, `min`)
    that never acts: plain SGD's fields to every order, and SGD's measured order."""
    problem = smooth_problem(getkey())
    p0, h = problem.params0, 0.05
    clipped = modified_flow(clip(1e3), h, order=3)
    assert clipped.spec.branches
    plain = modified_flow(lambda h: optax.sgd(h), h, order=3)
    fields = (_fields(f, f.init(p0), problem) for f in (clipped, plain))
    for a, b in zip(*fields):
        assert tree_max_abs_diff(a.params, b.params) < 1e-13
    # Tsit5, the automatic choice here (measured): named, compare compiles no Jacobian of the
    # order-2 field to choose it (as in the comparisons below).
    cmp = dynopt.compare(clip(1e3), problem, (0.04, 0.02, 0.01), 0.8, order=2, solver="tsit5")
    assert cmp.verdict == "asymptotic" and abs(float(cmp.order) - 2) < 0.15


def test_active_clipping_is_normalised_descent(getkey):
    # Clipped throughout: Φ_h(θ) = θ - h c ∇L/‖∇L‖, so f1 = -c ∇L/‖∇L‖ (normalised descent).
    problem = smooth_problem(getkey())
    p0, c = problem.params0, 1e-3
    g = problem.grad(p0)
    assert float(optax.tree.norm(g)) > 10 * c
    flow = modified_flow(_clip_sgd(c), 0.05, order=2)
    f1 = _fields(flow, flow.init(p0), problem)[0].params
    expect = optax.tree.scale(-c / optax.tree.norm(g), g)
    assert tree_max_abs_diff(f1, expect) < 1e-15


def test_a_run_that_crosses_the_clipping_threshold_is_refused(getkey):
    problem = smooth_problem(getkey())
    g0 = float(optax.tree.norm(problem.grad(problem.params0)))
    t1 = 1.0
    end = dynopt.solve(dynopt.flows.GradientFlow(), problem, jnp.asarray([0.0, t1]))
    g1 = float(optax.tree.norm(problem.grad(jax.tree.map(lambda x: x[-1], end.params))))
    assert g1 < 0.95 * g0  # the gradient norm falls through the threshold below
    with pytest.raises(ValueError, match=r"switches branch at step \d+"):
        dynopt.compare(_clip_sgd(0.97 * g0), problem, (0.04, 0.02, 0.01), t1, order=2)


def test_a_run_that_blows_up_from_its_start_is_no_branch_switch():
    """clip_by_global_norm(1) never acts (‖∇L‖ = 0.2), but the order-2 slow-manifold start of
    scale_by_rms(0.99) has a negative second moment where a gradient coordinate is ~1e-4: the
    first step is NaN. The branch replay took the NaN predicate for a switch ("switches branch
    at step 1 ... clipping becoming active", before); it stops at the first non-finite iterate,
    and the start's own diagnosis speaks."""
    A = jnp.asarray([[5.0, -2.0], [-2.0, 1.0]])
    problem = dynopt.Problem(
        loss_fn=lambda x: 0.5 * x @ A @ x, params0=jnp.asarray([0.2, 0.4 + 1e-4])
    )
    assert float(optax.tree.norm(problem.grad(problem.params0))) < 0.5

    def opt(h):
        return optax.chain(
            optax.clip_by_global_norm(1.0), optax.scale_by_rms(decay=0.99), optax.scale(-h)
        )

    hs = (5e-4, 2.5e-4, 1.25e-4)
    flow = modified_flow(opt, hs[0], order=2, problem=problem)
    assert list(first_switch(flow, problem, hs, (10, 20, 40))) == [-1, -1, -1]
    with pytest.raises(ValueError, match=r"blew up at step\(s\) \[1\].*first step is not") as e:
        dynopt.compare(opt, problem, hs, t1=0.005, order=2, solver="tsit5")
    assert "switches branch" not in str(e.value)


def test_the_losss_own_branches_are_inputs_not_the_optimizers():
    """clip_by_global_norm(100) never acts (‖∇L‖ ≈ 0.53) on a loss written with
    `jnp.logaddexp(r, -r)` (= log cosh r + log 2, smooth; its internal `max` flips along the
    run): the replay records only the optimizer's predicates, so the run is not refused as
    switching branch (it was, at step 7 of h = 0.02), and it measures what log(cosh) does."""
    x = jax.random.normal(jax.random.key(0), (32, 3))
    y = jnp.sin(x @ jnp.array([1.0, -0.5, 0.3]))
    p0 = {"w": jnp.array([0.3, 0.2, -0.1]), "b": jnp.zeros(())}

    def problem(lc):
        return dynopt.Problem(lambda p: jnp.mean(lc(x @ p["w"] + p["b"] - y)), p0)

    by_addexp = problem(lambda r: jnp.logaddexp(r, -r) - jnp.log(2.0))
    by_cosh = problem(lambda r: jnp.log(jnp.cosh(r)))
    assert float(optax.tree.norm(by_addexp.grad(p0))) < 1.0
    hs, t1 = (0.02, 0.01, 0.005), 0.4
    got = dynopt.compare(_clip_sgd(100.0), by_addexp, hs, t1, order=2, solver="tsit5")
    assert got.verdict == "asymptotic" and abs(float(got.order) - 2) < 0.1, got
    ref = dynopt.compare(_clip_sgd(100.0), by_cosh, hs, t1, order=2, solver="tsit5")
    np.testing.assert_allclose(np.asarray(got.errors), np.asarray(ref.errors), rtol=1e-6)
    # an `opaque` evaluation's own predicates are not recorded; its outputs are dependent
    lse = lambda v: jnp.logaddexp(v, -v)
    v = jnp.asarray([0.5, -2.0])
    assert branch_bits(lse, v)[1].size > 0  # logaddexp compares its operands
    out, bits = branch_bits(lambda v: jnp.where(opaque(lse)(v) > 1.0, v, 0.0), v)
    np.testing.assert_array_equal(np.asarray(bits), [0, 1])
    np.testing.assert_array_equal(np.asarray(out), [0.0, -2.0])


def test_comparisons_are_branches_and_ties_are_reported():
    """`max`/`min`/`clamp` of iterate-dependent values are branches: their bits say which
    operand each entry takes, and a tie (equal operands: the kink) is reported apart."""

    def relu_step(x):
        return jnp.maximum(x, 0.0) + jax.lax.clamp(-0.5, x, 0.5)

    found = classify(relu_step, jnp.ones(3))
    assert not found.kinks and {b.split()[0] for b in found.branches} == {"max", "clamp"}
    _, bits, tie = branch_bits(relu_step, jnp.asarray([2.0, -1.0, 0.3]), with_ties=True)
    # max takes x (its first operand: -1) or 0 (+1); clamp puts x above (+1), below (-1) or
    # inside (0) its bounds
    np.testing.assert_array_equal(np.asarray(bits), [-1, 1, -1, 1, -1, 0])
    assert not bool(tie)
    _, _, tie = branch_bits(relu_step, jnp.asarray([2.0, 0.0, 0.3]), with_ties=True)
    assert bool(tie)  # max(0, 0)
    _, _, tie = branch_bits(relu_step, jnp.asarray([2.0, 1.0, 0.5]), with_ties=True)
    assert bool(tie)  # clamp at its upper bound


def test_elementwise_clipping_active_everywhere_is_sign_descent(getkey):
    """`optax.clip(c)` acting on every entry: the step is θ - h c sign(∇L), so f1 = -c sign(∇L)."""
    problem = smooth_problem(getkey())
    p0, c = problem.params0, 1e-3
    g = problem.grad(p0)
    assert min(float(jnp.min(jnp.abs(x))) for x in jax.tree.leaves(g)) > 10 * c
    tight = modified_flow(_clip_each_sgd(c), 0.05, order=2)
    f1 = _fields(tight, tight.init(p0), problem)[0].params
    assert tree_max_abs_diff(f1, jax.tree.map(lambda x: -c * jnp.sign(x), g)) < 1e-15


def test_a_run_on_or_across_a_comparisons_kink_is_refused():
    """L = ½(x₁² + 2x₂²): from (1, 1) the gradient is (1, 2); clipped at 1.5 the second entry
    is clipped and x₂ falls by 1.5 per unit time until 2x₂ = 1.5 at t = 1/6: the run switches.
    From (0.25, 0.75) the gradient (0.25, 1.5) has an entry at the threshold 0.25: a tie."""
    quad = dynopt.problems.quadratic(jnp.asarray([1.0, 2.0]), minimizer=jnp.zeros(2))
    across = dynopt.Problem(loss_fn=quad.loss_fn, params0=jnp.asarray([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"switches branch at step \d+"):
        dynopt.compare(_clip_each_sgd(1.5), across, (0.04, 0.02, 0.01), 0.48, order=2)
    # on one side while t < 1/6 (x₂ clipped, x₁ not): the order-2 field, measured (order 1 and
    # 3 give 1.00 and 2.98 on the same runs)
    cmp = dynopt.compare(
        _clip_each_sgd(1.5), across, (0.004, 0.002, 0.001), 0.12, order=2, solver="tsit5"
    )
    assert cmp.verdict == "asymptotic" and abs(float(cmp.order) - 2) < 0.1, cmp
    on = dynopt.Problem(loss_fn=quad.loss_fn, params0=jnp.asarray([0.25, 0.75]))
    with pytest.raises(ValueError, match="starts on its kink"):
        dynopt.compare(_clip_each_sgd(0.25), on, (0.04, 0.02, 0.01), 0.08, order=2)


def _quartic() -> dynopt.Problem:
    """L = ½(x - c)ᵀA(x - c) + 0.1 Σ(x - c)⁴ from x₀ = (1.5, 1): ∇L(x₀) ≈ (3.7, 2.5), and no
    coordinate of ∇L reaches 0 within t = 0.4 of the flows below (compare replays the runs,
    and refuses one that crosses a kink)."""
    A = jnp.asarray([[2.0, 0.5], [0.5, 1.0]])
    c = jnp.asarray([0.3, -0.2])
    return dynopt.Problem(
        lambda x: 0.5 * (x - c) @ A @ (x - c) + 0.1 * jnp.sum((x - c) ** 4),
        jnp.asarray([1.5, 1.0]),
    )


def test_sign_and_abs_are_branches_with_a_tie_at_zero():
    """`sign` and `abs` of iterate-dependent values are comparisons with 0: their bits are the
    operand's sign, x = 0 their tie (they were refused as kinks outright)."""

    def fn(x):
        return jnp.sign(x) + jnp.abs(x)

    found = classify(fn, jnp.ones(2))
    assert not found.kinks and {b.split()[0] for b in found.branches} == {"sign", "abs"}
    _, bits, tie = branch_bits(fn, jnp.asarray([2.0, -1.0]), with_ties=True)
    np.testing.assert_array_equal(np.asarray(bits), [1, -1, 1, -1])
    assert not bool(tie)
    assert bool(branch_bits(fn, jnp.asarray([2.0, 0.0]), with_ties=True)[2])


def test_adamax_is_adam_without_the_lag_of_its_second_moment():
    """Adamax's ν = max(|g| + ε, β₂ν) is |g| + ε on its slow manifold, with no lag: its fields
    are Adam's with D = |g| + ε and β₂ = 0 (`modified_flow`'s docstring):
    f1 = -g/D, f2 = -(H g/D)/D ⊙ [(1 + β₁)/(2(1 - β₁)) - ½|g|/D]."""
    problem = _quartic()
    b1, eps = 0.5, 0.3
    opt = lambda h: optax.adamax(h, b1=b1, b2=0.6, eps=eps)
    x = problem.params0
    g, hess = problem.grad(x), jax.hessian(problem.loss)(x)
    d = jnp.abs(g) + eps
    flow = modified_flow(opt, 0.01, order=2)
    f1, f2 = _fields(flow, x, problem)
    assert tree_max_abs_diff(f1, -g / d) < 1e-15
    expect = -(hess @ (g / d)) / d * ((1 + b1) / (2 * (1 - b1)) - 0.5 * jnp.abs(g) / d)
    assert tree_max_abs_diff(f2, expect) < 1e-14
    cmp = dynopt.compare(opt, problem, (0.02, 0.01, 0.005), 0.4, order=2, solver="tsit5")
    assert cmp.verdict == "asymptotic" and abs(float(cmp.order) - 2) < 0.1, cmp


def test_sign_descent_away_from_its_kinks():
    """signSGD: θ' = -sign(∇L) (f2 = 0), a constant field while no gradient coordinate
    crosses 0, which its steps follow exactly; Lion (momentum on its slow manifold m = g)
    adds its weight decay w: f1 = -(sign(∇L) + wθ), and f2 = -½f1'f1 = (w/2)f1. A run in
    which a coordinate of the gradient crosses 0 is refused."""
    problem = _quartic()
    x = problem.params0
    sign = jnp.sign(problem.grad(x))
    flow = modified_flow(lambda h: optax.sign_sgd(h), 0.01, order=2)
    f1, f2 = _fields(flow, flow.init(x), problem)
    assert tree_max_abs_diff(f1.params, -sign) == 0 and tree_max_abs_diff(f2.params, 0 * x) == 0
    cmp = dynopt.compare(
        lambda h: optax.sign_sgd(h), problem, (0.02, 0.01, 0.005), 0.4, solver="tsit5"
    )
    assert float(jnp.max(cmp.errors)) < 1e-13, cmp
    w = 0.1
    lion = modified_flow(lambda h: optax.lion(h, b1=0.5, b2=0.6, weight_decay=w), 0.01, 2)
    f1, f2 = _fields(lion, x, problem)
    assert tree_max_abs_diff(f1, -(sign + w * x)) < 1e-15
    assert tree_max_abs_diff(f2, 0.5 * w * f1) < 1e-15
    # from (1.5, -0.7): ∂₂L = 0.05, falling at a rate ≈ 1.8 along θ' = -sign(∇L) = (-1, -1):
    # it crosses 0 at t ≈ 0.03
    near = dynopt.Problem(problem.loss_fn, jnp.asarray([1.5, -0.7]))
    with pytest.raises(ValueError, match=r"switches branch at step \d+"):
        dynopt.compare(lambda h: optax.sign_sgd(h), near, (0.02, 0.01, 0.005), 0.4)


def test_a_guard_on_updates_scaled_by_the_step_is_refused(getkey):
    """optax.polyak_sgd(scaling=h) tests ‖h∇L‖² ≤ machine ε: at h = 0 its updates are exactly 0
    and take the "step = 0" branch, which no run with h > 0 takes (its f1 was 0, its steps'
    (Φ_h(θ) - θ)/h = -∇L). The learning rate after the guard, as the message says, gives Polyak's
    step h·min(L/‖∇L‖², M): f1 = -min(L/‖∇L‖², M)∇L."""
    for opt in (
        lambda h: optax.polyak_sgd(max_learning_rate=1.0, scaling=h),
        lambda h: optax.chain(optax.sgd(h), optax.scale_by_polyak()),
    ):
        with pytest.raises(ValueError, match=r"branch of its step at h = 0 is not the one"):
            modified_flow(opt, 0.01)
    problem, m = smooth_problem(getkey()), 0.5
    p0 = problem.params0
    polyak = modified_flow(
        lambda h: optax.chain(optax.scale_by_polyak(max_learning_rate=m), optax.scale(-h)), 0.01
    )
    g = problem.grad(p0)
    rate = jnp.minimum(problem.loss(p0) / optax.tree.norm(g, squared=True), m)
    f1 = _fields(polyak, polyak.init(p0), problem)[0].params
    assert tree_max_abs_diff(f1, optax.tree.scale(-rate, g)) < 1e-15

    # A guard that the probe problem's small gradient keeps closed at h = 1e-6 opens there on
    # the problem given (‖∇L‖ = 100): checked on it too, and named.
    def guard(u, p):
        closed = optax.tree.norm(u, squared=True) <= 1e-11
        return jax.tree.map(lambda x: jnp.where(closed, 0.0, x), u)

    opt = lambda h: optax.chain(optax.sgd(h), optax.stateless(guard))
    steep = dynopt.Problem(lambda x: 100.0 * x[0], jnp.zeros(1), name="steep")
    assert modified_flow(opt, 0.01).spec.branches
    with pytest.raises(ValueError, match=r"at h = 0 is not the one .* on the problem 'steep'"):
        modified_flow(opt, 0.01, problem=steep)


def test_a_run_on_another_branch_than_the_expansion_is_refused(getkey):
    """Clipping after the learning rate at c = 1e-3 never acts at h = 0 (the flow is gradient
    descent's) but clips every step at h ≥ 0.01 (h‖∇L‖ > c): the runs stay on one branch, the
    other one than the flow's (the replay took its reference from the first run step and let
    them through)."""
    problem = smooth_problem(getkey())
    assert float(optax.tree.norm(problem.grad(problem.params0))) > 0.2
    opt = lambda h: optax.chain(optax.sgd(h), optax.clip_by_global_norm(1e-3))
    with pytest.raises(ValueError, match=r"from its first step, another branch .* h = 0"):
        dynopt.compare(opt, problem, (0.04, 0.02, 0.01), 0.4, order=1)


def test_a_running_maximum_or_a_sign_step_has_no_slow_manifold():
    """AMSGrad's ν̂ = max(ν̂, ν) never forgets: its fixed states ν̂ = ν are the max's tie, and
    with decays 1 - a·h ν̂ jumps at h = 0. Yogi's v ← v - (1 - β₂)sign(v - g²)g² does not
    contract off its kink, and its target v = g² is the kink. The messages say so, not
    "use state='slow'" and back "use state='fast'"."""
    never = r"never forgets.*optax\.adam is AMSGrad without the maximum"
    with pytest.raises(ValueError, match=r"state='fast': on its slow manifold .*max.*" + never):
        modified_flow(lambda h: optax.amsgrad(h, b1=0.5, b2=0.6, eps=0.3), 0.01)
    with pytest.raises(ValueError, match=r"state='slow': .*nu_max changes .*" + never):
        modified_flow(
            lambda h: optax.amsgrad(h, b1=1 - 2 * h, b2=1 - 3 * h, eps=0.3), 0.01, state="slow"
        )
    with pytest.raises(ValueError, match=r"\.nu does not contract .*sign.*Yogi's"):
        modified_flow(lambda h: optax.yogi(h), 0.01)
    # Adamax's maximum forgets through β₂: fast with a fixed β₂ (the remedy said)
    with pytest.raises(ValueError, match=r"Adamax.*fix that decay and use state='fast'"):
        modified_flow(lambda h: optax.adamax(h, b2=1 - 3 * h), 0.01, state="slow")
    with pytest.raises(ValueError, match=r"state='slow': .*use state='fast'"):
        modified_flow(lambda h: optax.adamax(h, b1=0.5, b2=0.6), 0.01, state="slow")
    assert modified_flow(lambda h: optax.adamax(h, b1=0.5, b2=0.6), 0.01).spec.regime == "fast"
