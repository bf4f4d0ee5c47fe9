"""Probes of `dynopt.flows` on settings the other flow tests do not use (edge regimes, mixed
float32/float64 pytrees, batched and traced hyper-parameters), each against an independent
reference."""

import decimal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import flows, problems


def _overdamped_reference(t, damping, stiffness):
    """$x(t)$, $x'(t)$ of $x'' + ax' + \\lambda x = 0$ from $(1, 0)$ for $a^2 > 4\\lambda$, from
    the two real roots in 40-digit decimal arithmetic (independent of `damped_mode`'s formula)."""
    decimal.getcontext().prec = 40
    d = decimal.Decimal
    t, a, lam = d(repr(t)), d(repr(damping)), d(repr(stiffness))
    w = (a * a / 4 - lam).sqrt()
    r1, r2 = -lam / (w + a / 2), -(w + a / 2)  # the slow root without cancellation
    x = (r2 * (r1 * t).exp() - r1 * (r2 * t).exp()) / (r2 - r1)
    v = r1 * r2 * ((r1 * t).exp() - (r2 * t).exp()) / (r2 - r1)
    return float(x), float(v)


def test_damped_mode_overdamped_at_long_times_is_finite_and_exact():
    # cosh(ωt) overflows once ωt > 710 while e^{-at/2} underflows: the product was NaN (a = 200,
    # λ = 1 at t = 10; a soft mode λ = 1e-10 at t = 1e3; λ = 0, a = 10 at t = 200), though the
    # slow mode has barely moved. Reference: 40-digit decimals; the float64 evaluation of
    # e^{rt} (|rt| <= 1) and of the two terms is good to a few ulps, hence 1e-13 relative.
    cases = [(200.0, 1.0, 10.0), (2.0, 1e-10, 1e3), (2.0, 1e-10, 1e7), (10.0, 1e-3, 2000.0)]
    cases += [(10.0, 1.0, 300.0), (3.0, 1.0, 2.0)]
    for a, lam, t in cases:
        x, v = flows.damped_mode(t, a, jnp.asarray(lam), jnp.asarray(1.0))
        rx, rv = _overdamped_reference(t, a, lam)
        np.testing.assert_allclose(float(x), rx, rtol=1e-13, err_msg=f"x at {(a, lam, t)}")
        np.testing.assert_allclose(float(v), rv, rtol=1e-12, err_msg=f"x' at {(a, lam, t)}")
    # A flat direction (λ = 0) stays where it started, at every time.
    x, v = flows.damped_mode(200.0, 10.0, jnp.asarray(0.0), jnp.asarray(2.5))
    assert float(x) == 2.5 and float(v) == 0.0


def test_damped_mode_at_critical_damping_has_finite_exact_gradients():
    # The optimal damping a = 2√λ is where ω = sqrt(a²/4 - λ) = 0, whose derivative is infinite:
    # jax.grad of the closed form in a or λ was NaN there (and at a = λ = 0). At ω = 0,
    # x = e^{-at/2}(1 + at/2), so ∂x/∂a = e^{-at/2} a²t³/24 and ∂x/∂λ = -e^{-at/2} t²(1/2 + at/12)
    # (differentiating cosh ωt + (a/2)t sinh(ωt)/ωt in z = ω²t²); float64 evaluation, 1e-13.
    def x(a, lam, t):
        return flows.damped_mode(t, a, jnp.asarray(lam), jnp.asarray(1.0))[0]

    for a, t in [(2.0, 1.5), (0.2, 30.0), (20.0, 0.05)]:
        lam, decay = a**2 / 4, np.exp(-a * t / 2)
        np.testing.assert_allclose(float(x(a, lam, t)), decay * (1 + a * t / 2), rtol=1e-14)
        da, dlam = jax.grad(x, argnums=(0, 1))(a, lam, t)
        np.testing.assert_allclose(float(da), decay * a**2 * t**3 / 24, rtol=1e-13)
        np.testing.assert_allclose(float(dlam), -decay * t**2 * (0.5 + a * t / 12), rtol=1e-13)
    # The undamped flat mode: x = cos(√λ t) = 1 - λt²/2 + ..., so ∂x/∂λ = -t²/2 at λ = 0.
    assert float(jax.grad(x, argnums=1)(0.0, 0.0, 1.5)) == -1.125
    # Either side of the series' threshold |ω t|² = 1e-2, against 40-digit decimals.
    for z in (1e-8, 9.9e-3, 1.01e-2, 0.3):
        lam, t = 1.0, 2.0
        a = float(2 * np.sqrt(lam + z / t**2))
        rx, rv = _overdamped_reference(t, a, lam)
        xv, vv = flows.damped_mode(t, a, jnp.asarray(lam), jnp.asarray(1.0))
        np.testing.assert_allclose(float(xv), rx, rtol=1e-13, err_msg=f"x at z = {z}")
        np.testing.assert_allclose(float(vv), rv, rtol=1e-12, err_msg=f"x' at z = {z}")


def test_heavy_ball_closed_form_strong_damping_is_finite():
    # A quadratic with a soft direction under strong damping: the closed form was NaN at t = 10.
    problem = dynopt.problems.quadratic([1e-2, 1.0], rotate=True)
    flow = flows.HeavyBall(200.0)
    theta, v = flow.closed_form(problem)(10.0)
    # diffrax at solve's rtol 1e-10 over a few hundred steps: agreement to 1e-8 (as in
    # tests/test_momentum.py).
    ref = dynopt.solve(flow, problem, jnp.array([10.0]))
    assert np.max(np.abs(np.asarray(ref.params)[-1] - np.asarray(theta))) < 1e-8
    assert np.all(np.isfinite(np.asarray(v)))


def test_newton_preconditioner_validates_its_numbers():
    # rtol/atol were not checked: a negative or NaN tolerance was accepted and CG misbehaved.
    for name in ("rtol", "atol"):
        for bad in (-1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match=f"{name} must be >= 0"):
                flows.NewtonPreconditioner(0.0, "cg", **{name: bad})
    with pytest.raises(ValueError, match=r"damping must be a scalar, got shape \(2,\)"):
        flows.NewtonPreconditioner(np.array([0.1, 0.2]))


def test_newton_preconditioner_takes_an_array_damping():
    # A jax scalar damping was stored as is: unhashable, so PreconditionedFlow said "P must be
    # hashable", naming the wrong thing. It is a number: a weakly typed scalar array leaf, the
    # same leaf as a Python float's (one compiled program for both).
    problem = dynopt.problems.quadratic([1.0, 4.0], rotate=True)
    P = flows.NewtonPreconditioner(jnp.asarray(0.5, jnp.float32))
    for x in (P.damping, flows.NewtonPreconditioner(0.5).damping):
        assert x.shape == () and x.dtype == jnp.float64 and x.weak_type and float(x) == 0.5
    flow = flows.PreconditionedFlow(P, check_on=problem)
    # (H + μI)^{-1} H (θ - θ*) per eigenmode: λ/(λ + μ) times the gradient-flow direction in the
    # eigenbasis; checked against numpy's solve.
    hess = np.asarray(problem.hessian)
    theta = np.asarray(problem.params0)
    grad = hess @ (theta - np.asarray(problem.minimizer))
    expected = -np.linalg.solve(hess + 0.5 * np.eye(2), grad)
    got = flow.vector_field(0.0, problem.params0, problem)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12)


def _mixed_problem():
    # A float32 leaf beside a float64 one (e.g. a float32 network with a float64 head).
    def loss(p):
        return 0.5 * jnp.sum(p[0] ** 2).astype(jnp.float64) + jnp.sum((p[1] - 1.0) ** 2)

    params0 = (jnp.array([0.5, -1.0], jnp.float32), jnp.array([0.3, 1.2, -0.7]))
    return dynopt.Problem(loss, params0, name="mixed")


@pytest.mark.parametrize(
    "flow", [flows.GlobalRMSPropFlow(2.0, 1e-6, 0.5), flows.PolyakFlow(), flows.PolyakFlow(2.0)]
)
def test_vector_field_keeps_each_leafs_dtype(flow):
    # The scalar speed has the highest dtype (float64): multiplied into the float32 leaf it
    # promoted that leaf's derivative to float64. The derivative of each leaf has the leaf's
    # dtype, and its float64 value rounds to it. (Mixed dtypes meet under JAX's default,
    # standard, promotion; optax.tree.dtype refuses them under strict.)
    problem = _mixed_problem()
    with jax.numpy_dtype_promotion("standard"):
        state = flow.init(problem.params0)
        field = flow.vector_field(0.3, state, problem)
        wide = jax.tree.map(lambda x: x.astype(jnp.float64), state)
        reference = flow.vector_field(0.3, wide, problem)
    assert [x.dtype for x in jax.tree.leaves(field)] == [x.dtype for x in jax.tree.leaves(state)]
    # Against the same field with the float32 leaf held in float64: equal to float32 rounding.
    for got, ref in zip(jax.tree.leaves(field), jax.tree.leaves(reference)):
        eps = np.finfo(got.dtype).eps
        np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(ref), rtol=2 * eps)


def test_sign_flow_closed_form_of_a_batch_is_none():
    # A batch of widths (a sweep) is not the one exact-sign flow: `None`, as documented for
    # "otherwise" (it raised a TypeError from float() of the array).
    problem = dynopt.problems.quadratic([1.0, 2.0])
    assert flows.SignFlow(jnp.array([0.0, 0.1])).closed_form(problem) is None
    assert flows.SignFlow(0.0).closed_form(problem) is not None


def test_sign_flow_lyapunov_gap_bound():
    # The docstring's bound: |g| - g²/sqrt(g² + w²) <= 0.3003 w for every g (it said 0.3 w; the
    # maximum is 0.30028 w at |g| = 0.786 w). Checked on the rate itself, one coordinate of the
    # linear loss g·θ. (A docstring fix: this passes before and after.)
    w = 0.5
    g = np.linspace(0.0, 5.0, 200001) * w
    rate = jax.vmap(
        lambda gi: flows.SignFlow(w).loss_rate(
            0.0, jnp.zeros(1), dynopt.Problem(lambda p: gi * jnp.sum(p), jnp.zeros(1))
        )
    )(jnp.asarray(g))
    gap = np.abs(g) + np.asarray(rate)
    assert gap.max() <= 0.3003 * w and gap.max() > 0.3 * w


def test_nesterov_lyapunov_energy_needs_r_above_one():
    # E(t) divides by r - 1: r = 1 returned NaN (r < 1 a meaningless number) without a word.
    problem = dynopt.problems.quadratic([1.0, 2.0])
    state = (jnp.array([1.0, 1.0]), jnp.array([0.5, 0.0]))
    for r in (1.0, 0.5):
        with pytest.raises(ValueError, match="r must be > 1"):
            flows.NesterovODE(r).lyapunov_energy(1.0, state, problem)
    # r = 3 at t = 1 on ½(x² + 2y²), x* = 0: t²f + 2‖x + tv/2‖² = 1.5 + 2·(1.25² + 1) = 6.625
    # (every term exact in binary).
    assert float(flows.NesterovODE(3.0).lyapunov_energy(1.0, state, problem)) == 6.625


def test_heavy_ball_closed_form_against_matrix_exponential():
    # Under-, critically and over-damped modes at once (λ = 4, 1, 0.01 with a = 2) on a rotated
    # quadratic, against scipy's expm of the first-order system [[0, I], [-H, -aI]] (float64,
    # ‖At‖ <= 10 here, accurate to ~1e-14; 1e-12 absolute leaves room for the eigh of H).
    import scipy.linalg

    problem = dynopt.problems.quadratic([4.0, 1.0, 0.01], rotate=True)
    hess, x_star = np.asarray(problem.hessian), np.asarray(problem.minimizer)
    a = 2.0
    system = np.block([[np.zeros((3, 3)), np.eye(3)], [-hess, -a * np.eye(3)]])
    y0 = np.concatenate([np.asarray(problem.params0) - x_star, np.zeros(3)])
    solution = flows.HeavyBall(a).closed_form(problem)
    for t in (0.0, 0.3, 2.0, 5.0):
        y = scipy.linalg.expm(system * t) @ y0
        theta, v = solution(t)
        np.testing.assert_allclose(np.asarray(theta), y[:3] + x_star, rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(v), y[3:], rtol=0, atol=1e-12)


def test_oscillator_solution_refuses_damping_outside_its_regime():
    # Documented for 0 <= a < 2; a = 2 (ω = 0: 0·inf) and a > 2 (ω = NaN) returned NaN silently.
    for bad in (2.0, 3.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match=r"damping must be in \[0, 2\)"):
            flows.oscillator_solution(np.array([0.0, 1.0]), bad)
    # Inside the regime it is damped_mode's x at stiffness 1.
    ts = np.array([0.0, 0.7, 3.0])
    x = flows.damped_mode(jnp.asarray(ts), 1.5, jnp.asarray(1.0), jnp.asarray(2.0))[0]
    np.testing.assert_allclose(flows.oscillator_solution(ts, 1.5, 2.0), np.asarray(x), rtol=1e-14)


def test_rescale_momentum_traced_error_names_no_tracer():
    # Inside jit the hint printed "lr_ratio=JitTracer(~float64[]) is too large for
    # momentum=JitTracer(...)": the values are unknown there, so they are not named.
    with pytest.raises(ValueError, match=r"lr_ratio=9.0 is too large for momentum=0.5"):
        flows.rescale_momentum(0.5, 9.0)
    with pytest.raises(eqx.EquinoxRuntimeError) as info:
        eqx.filter_jit(flows.rescale_momentum)(jnp.asarray(0.5), jnp.asarray(9.0))
    message = str(info.value)
    assert "lr_ratio is too large for momentum;" in message and "Tracer" not in message
    assert float(jax.jit(flows.rescale_momentum)(0.5, 4.0)) == 0.0  # 1 - 0.5·2, in range


def test_modified_flow_discretizes_only_at_its_own_step():
    # ModifiedGradientFlow(0.1).discretize(0.2) was GD(0.2), which follows the modified flow of
    # 0.2: as h -> 0 GD tends to the gradient flow, O(h0) away from ModifiedGradientFlow(h0).
    # Measured here: GD(h) at t = 1 against ModifiedGradientFlow(0.1) stalls at an error of
    # ~h0·|∇²L∇L|/2 while against its own modified flow it falls like h².
    problem = dynopt.problems.quadratic([1.0, 3.0], rotate=True)
    flow = flows.ModifiedGradientFlow(0.1)
    with pytest.raises(ValueError, match="step_size must equal the flow's step_size"):
        flow.discretize(0.2)
    assert float(flow.discretize(0.1).dt) == 0.1
    assert float(flow.discretize(jnp.float32(0.1)).dt) == np.float32(0.1)  # a float32 copy
    batch = flows.ModifiedGradientFlow(jnp.array([0.1, 0.05]))
    assert batch.discretize(jnp.array([0.1, 0.05])).dt.shape == (2,)
    with pytest.raises(ValueError, match="step_size must equal"):
        batch.discretize(jnp.array([0.05, 0.1]))

    def error_at_1(h, h_flow):
        traj = dynopt.run(flows.GradientFlow().discretize(h), problem, round(1.0 / h))
        ref = dynopt.solve(flows.ModifiedGradientFlow(h_flow), problem, jnp.array([1.0]))
        return float(np.max(np.abs(np.asarray(traj.params)[-1] - np.asarray(ref.params)[-1])))

    own = [error_at_1(h, h) for h in (0.02, 0.01)]
    fixed = [error_at_1(h, 0.1) for h in (0.02, 0.01)]
    assert own[1] < own[0] / 3.5  # order 2: a factor ~4
    assert fixed[1] > fixed[0] * 0.9  # no convergence to the fixed flow


def test_heavy_ball_closed_form_in_the_parameters_dtype():
    # GradientFlow's closed form of a float32 quadratic is float32; HeavyBall's raised a
    # strict-promotion error (float64 modes against the float32 eigenvectors).
    problem = problems.quadratic(jnp.array([1.0, 4.0]), params0=jnp.ones(2, jnp.float32))
    theta, v = flows.HeavyBall(1.0).closed_form(problem)(0.5)
    assert theta.dtype == v.dtype == jnp.float32
    theta64, v64 = flows.HeavyBall(1.0).closed_form(problems.quadratic(jnp.array([1.0, 4.0])))(0.5)
    np.testing.assert_array_equal(theta, theta64.astype(jnp.float32))
    np.testing.assert_array_equal(v, v64.astype(jnp.float32))


def test_global_rmsprop_init_of_a_mixed_precision_tree():
    # optax.tree.dtype(params, "highest") refuses float32 with float64 under strict promotion.
    params = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(3, jnp.float64)}
    state = flows.GlobalRMSPropFlow(1.0, initial_scale=0.5).init(params)
    assert state.G.dtype == jnp.float64 and float(state.G) == 0.5
