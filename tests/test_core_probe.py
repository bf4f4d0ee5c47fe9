"""The core probed a second time (`Problem`, `dynopt.problems`, `Trajectory`, `compare`,
`dynopt.order`): numbers against closed forms, and each defect found, fixed with a test."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

import dynopt
from dynopt import flows, problems


def test_compare_errors_on_a_pytree_quadratic_are_the_matrix_power_against_expm():
    r"""GD on $\frac12 x^\top H x$ (a dict of two leaves, rotated $H$): $x_k = (I - hH)^k x_0$,
    the flow $e^{-tH}x_0$; `compare`'s errors are $\max_k\|x_k - e^{-khH}x_0\|$ to the
    reference's accuracy (rtol 1e-10, atol 1e-12 on a solution of norm <= 2: below 1e-9)."""
    params0 = {"a": jnp.array([1.0, -0.5]), "b": jnp.array([[0.25]])}
    problem = problems.quadratic([0.5, 2.0, 7.0], params0=params0, rotate=True, seed=3)
    hess = np.asarray(problem.hessian)
    x0 = np.array([1.0, -0.5, 0.25])
    hs = [0.04, 0.02, 0.01]
    c = dynopt.compare(flows.GradientFlow(), problem, hs, t1=1.0)
    exact = []
    for h in hs:
        step = np.eye(3) - h * hess
        xs = [np.linalg.matrix_power(step, k) @ x0 for k in range(1, round(1.0 / h) + 1)]
        exact.append(
            max(
                np.linalg.norm(x - scipy.linalg.expm(-(k + 1) * h * hess) @ x0)
                for k, x in enumerate(xs)
            )
        )
    np.testing.assert_allclose(np.asarray(c.errors), exact, rtol=0, atol=1e-9)
    assert c.verdict == "asymptotic"
    assert float(c.order) == pytest.approx(np.polyfit(np.log(hs), np.log(exact), 1)[0], abs=1e-6)


def test_assess_order_refuses_a_flag_that_is_not_one_per_step_size():
    """`diverged=[True]` (one flag for four step sizes) was broadcast: every step size was
    reported diverged, verdict "unstable"."""
    h = np.array([0.04, 0.02, 0.01, 0.005])
    e = 3.0 * h**1.5
    for name in ("diverged", "unstable"):
        with pytest.raises(ValueError, match=rf"{name} must be one boolean per step size"):
            dynopt.assess_order(h, e, **{name: [True]})
        with pytest.raises(ValueError, match=rf"{name} must be one boolean per step size"):
            dynopt.assess_order(h, e, **{name: [1, 0, 0, 0]})
    a = dynopt.assess_order(h, e, diverged=[False, False, False, True])
    assert a.verdict == "unstable" and "[0.005] diverged" in a.reason


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(step_sizes=[0.04, 0.02, 0.01], errors=[1.0, 0.5]), "one length"),
        (dict(step_sizes=[[0.04, 0.02, 0.01]], errors=[[1.0, 0.5, 0.25]]), "1-D"),
        (dict(step_sizes=[-0.04, -0.02, -0.01], errors=[1.0, 0.5, 0.25]), "step_sizes must be > 0"),
        (dict(step_sizes=[0.0, 0.02, 0.01], errors=[1.0, 0.5, 0.25]), "step_sizes must be > 0"),
        (
            dict(step_sizes=[0.02, 0.02, 0.01], errors=[1.0, 0.5, 0.25]),
            "step_sizes must be distinct",
        ),
        (dict(step_sizes=[0.04, 0.02, 0.01], errors=[-1.0, -0.5, -0.25]), "errors must be >= 0"),
        (dict(step_sizes="abc", errors="def"), "step_sizes must be"),
        (
            dict(step_sizes=[0.04, 0.02, 0.01], errors=[1.0, 0.5, 0.25], scales=[1.0, 2.0]),
            "scales must be one number or one per step size",
        ),
        (
            dict(step_sizes=[0.04, 0.02, 0.01], errors=[1.0, 0.5, 0.25], scales=-1.0),
            "scales must be >= 0",
        ),
        (dict(step_sizes=[0.04, 0.02, 0.01], errors=[1.0, 0.5, 0.25], at_least="1"), "at_least"),
        (
            dict(step_sizes=[0.04, 0.02, 0.01], errors=[1.0, 0.5, 0.25], at_least=np.nan),
            "at_least must be > 0 and finite",
        ),
    ],
)
def test_assess_order_names_the_bad_argument(kwargs, match):
    """Before: NumPy's broadcast error, a `TypeError`, or a verdict ("errors do not decrease",
    "some errors are zero") for a sweep that was never valid."""
    with pytest.raises(ValueError, match=match):
        dynopt.assess_order(**kwargs)


def test_fit_order_and_local_orders_refuse_mismatched_lengths():
    h, e = np.array([0.04, 0.02, 0.01]), np.array([1.0, 0.5])
    for fn in (dynopt.fit_order, dynopt.local_orders):
        with pytest.raises(ValueError, match="one error per step size"):
            fn(h, e)
    assert float(jax.jit(dynopt.fit_order)(h, 2.0 * h**1.5)) == pytest.approx(1.5, abs=1e-12)


def test_compare_refuses_a_map_whose_time_step_does_not_depend_on_h():
    """Step sizes with one time step have no slope against it: "errors do not decrease" with
    nan local orders before."""

    def fixed_dt(flow, h):
        return dynopt.Discretization(optax.sgd, {"learning_rate": h}, dt=0.01)

    with pytest.raises(ValueError, match="distinct time steps dt"):
        dynopt.compare(
            flows.GradientFlow(),
            problems.quadratic([1.0, 3.0]),
            [0.04, 0.02, 0.01],
            1.0,
            map=fixed_dt,
        )


def test_a_smooth_loss_too_coarse_is_not_said_to_lack_derivatives():
    """GD on a quadratic at steps up to 0.25 (λ = 7: not yet asymptotic) has local orders 1.72,
    1.28, one-way toward its order 1: "take smaller step sizes", without the note that the loss
    may lack derivatives and smaller steps do not help (said before)."""
    problem = problems.quadratic([0.5, 2.0, 7.0], rotate=True, seed=1)
    c = dynopt.compare(flows.GradientFlow(), problem, [0.25, 0.125, 0.0625], t1=1.0)
    assert c.verdict == "pre-asymptotic" and "take smaller step sizes" in c.reason
    assert "derivatives" not in c.reason, c.reason


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=2.5), "batch_size must be a positive integer"),
        (dict(batch_size=True), "batch_size must be a positive integer"),
        (dict(batch_size="3"), "batch_size must be a positive integer"),
        (dict(hessian=jnp.eye(3)), r"hessian must have shape \(2, 2\)"),
        (dict(hessian=jnp.array([[1.0, 1.0], [0.0, 1.0]])), "hessian must be symmetric"),
        (dict(hessian=jnp.array([[1.0, np.nan], [np.nan, 1.0]])), "hessian contains NaN"),
        (dict(flow_solution=3), "flow_solution must be None or a function"),
        (dict(stochastic_loss_fn=3), "stochastic_loss_fn must be None or a function"),
        (dict(name=3), "name must be a string"),
        (dict(minimizer=jnp.array([np.nan, 0.0])), "minimizer contains NaN"),
        (dict(minimizer=jnp.array([0, 0])), r"minimizer must be a real floating array"),
    ],
)
def test_problem_validates_its_optional_fields(kwargs, match):
    """Each was accepted before (a `TypeError` for `batch_size="3"`) and failed later, or gave
    wrong numbers (`HeavyBall.closed_form` diagonalizes `hessian` with `eigh`, which reads one
    triangle of a non-symmetric matrix)."""
    with pytest.raises(ValueError, match=match):
        dynopt.Problem(lambda p: jnp.sum(p**2), jnp.ones(2), **kwargs)


def test_problem_takes_an_autodiff_hessian_and_a_traced_one():
    """The symmetry test leaves rounding alone (an autodiff Hessian), and a Hessian inside
    `vmap` is checked for its shape only."""
    loss = lambda p: jnp.sum(jnp.cosh(p)) + p[0] * p[1] ** 2
    x0 = jnp.array([0.3, -1.7])
    dynopt.Problem(loss, x0, hessian=jax.hessian(loss)(x0))
    out = jax.vmap(lambda s: dynopt.Problem(loss, x0, hessian=s * jnp.eye(2)).loss(x0))(
        jnp.arange(1.0, 3.0)
    )
    assert out.shape == (2,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(eigenvalues=[1.0, 2.0], minimizer=jnp.zeros(3)), "minimizer has 3 scalars"),
        (dict(eigenvalues=[1.0, 2.0], rotate=True, seed=1.5), "seed must be an integer"),
        (dict(eigenvalues=[1.0, 2.0], rotate="yes"), "rotate must be True or False"),
        (dict(eigenvalues=[1.0, 2.0], diagonal=1), "diagonal must be True or False"),
        (dict(eigenvalues=[]), "non-empty"),
    ],
)
def test_quadratic_names_the_bad_argument(kwargs, match):
    """Before: a `TypeError` from broadcasting or from `jax.random.key`, a string taken as
    true, and "eigenvalues must be finite, got []"."""
    with pytest.raises(ValueError, match=match):
        problems.quadratic(**kwargs)


def test_quadratics_of_other_spectra_share_their_compiled_programs():
    """The default name said "quadratic(d=2, cond=4)": a name is static under `filter_jit`, so
    each new conditioning of a sweep compiled `solve`, `run` and `compare` anew (3.7 s against
    8 ms a call). Two spectra now differ only in array leaves (equal static parts: one
    compiled program), and an own `name` is kept."""
    a, b = problems.quadratic([1.0, 2.0]), problems.quadratic([1.0, 300.0], rotate=True)
    assert a.name == b.name == "quadratic(d=2)"
    static = [eqx.partition(p, eqx.is_array)[1] for p in (a, b, problems.quadratic([0.0, 1.0]))]
    assert jax.tree.structure(static[0]) == jax.tree.structure(static[1])
    assert eqx.tree_equal(static[0], static[1]) is True
    assert problems.quadratic([0.5, 2.0], name="mine").name == "mine"


def test_finite_sum_names_a_bad_loss_or_regularizer():
    x, y = jnp.ones((5, 2)), jnp.ones(5)

    def sample_loss(w, s):
        return 0.5 * (s[0] @ w - s[1]) ** 2

    def build(**kwargs):
        kw = dict(sample_loss_fn=sample_loss, data=(x, y), params0=jnp.zeros(2), batch_size=2)
        return problems.finite_sum(**{**kw, **kwargs})

    with pytest.raises(ValueError, match="sample_loss_fn must be a function"):
        build(sample_loss_fn=3)
    with pytest.raises(ValueError, match="regularizer must be None or a function"):
        build(regularizer=1.0)
    with pytest.raises(ValueError, match="regularizer must return a scalar"):
        build(regularizer=lambda w: w**2)  # was "loss_fn must return a scalar"
    reg = build(regularizer=lambda w: 0.5 * jnp.sum(w**2))
    w = jnp.array([0.3, -0.2])
    expected = np.mean((np.ones((5, 2)) @ np.asarray(w) - 1.0) ** 2) / 2 + 0.5 * 0.13
    assert float(reg.loss(w)) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize(
    "factory", [problems.linear_regression, problems.logistic_regression, problems.mlp_regression]
)
def test_finite_sum_factories_need_an_integer_seed(factory):
    """`seed=1.5` raised JAX's `TypeError` about a tracer."""
    with pytest.raises(ValueError, match="seed must be an integer"):
        factory(8, 2, batch_size=2, seed=1.5)
    with pytest.raises(ValueError, match="seed must be an integer"):
        factory(8, 2, batch_size=2, seed=True)


def test_evaluate_before_the_start_points_to_an_earlier_start():
    """A time before t0 was told to "solve to a later horizon"."""
    ref = dynopt.solve(flows.GradientFlow(), problems.quadratic([1.0, 3.0]), [0.5, 1.0], t0=0.25)
    with pytest.raises(ValueError, match=r"earlier start \(t0\)"):
        ref.evaluate(0.1)
    with pytest.raises(ValueError, match="later horizon"):
        ref.evaluate(1.5)


def test_evaluate_of_a_solve_without_dense_output_says_dense_true():
    """A `solve(..., dense=False)` was told it was a discrete run."""
    ref = dynopt.solve(flows.GradientFlow(), problems.quadratic([1.0, 3.0]), [0.5], dense=False)
    with pytest.raises(ValueError, match="dense=True"):
        ref.evaluate(0.2)


def test_docstrings_of_the_core_hold_no_control_characters():
    r"""`Problem.grad`'s docstring was not raw: the `\t` of `$g(\theta)$` read as a tab."""
    import dynopt._compare
    import dynopt._order
    import dynopt._problem
    import dynopt._problems.finite_sum
    import dynopt._problems.landscapes
    import dynopt._problems.quadratic
    import dynopt._trajectory

    assert r"$g(\theta)$" in dynopt.Problem.grad.__doc__
    modules = (
        dynopt._compare,
        dynopt._order,
        dynopt._problem,
        dynopt._trajectory,
        dynopt._problems.finite_sum,
        dynopt._problems.landscapes,
        dynopt._problems.quadratic,
    )
    for module in modules:
        objects = [module] + [v for v in vars(module).values() if callable(v)]
        objects += [
            m for v in vars(module).values() if isinstance(v, type) for m in vars(v).values()
        ]
        for obj in objects:
            doc = getattr(obj, "__doc__", None) or ""
            assert not any(c in doc for c in "\t\b\f\a\v"), (module.__name__, obj)


def test_rosenbrock_minimizer_is_a_zero_of_the_gradient_as_documented():
    """The docstring promised $(a, a^2, a^4, \\dots)$; the code gives $(a, a^2)$ for $d = 2$,
    $(1, \\dots, 1)$ for $a = 1$ and `None` otherwise (no closed form)."""
    for dim, a in ((2, 2.0), (2, -0.5), (5, 1.0)):
        p = problems.rosenbrock(dim, a=a)
        np.testing.assert_allclose(p.grad(p.minimizer), 0.0, atol=1e-12)
        assert float(p.loss(p.minimizer)) == 0.0
    assert problems.rosenbrock(3, a=2.0).minimizer is None
    assert "a^4" not in problems.rosenbrock.__doc__


def test_quadratic_of_a_mixed_tree_under_strict_promotion():
    r"""A float32 leaf beside a float64 one (the mixed trees dynopt keeps leaf by leaf), and
    float32 parameters with a float64 minimizer, raised JAX's `TypePromotionError` under strict
    promotion (`ravel_pytree` has no promotion path). Now: each leaf keeps its dtype and the
    numbers are the closed form's, $\theta(t) = \theta^* + e^{-\Lambda t}(\theta_0 - \theta^*)$
    and GD's $(1 - h\lambda)^k$ (to float32 rounding, 1e-6 on values of size 1)."""
    lam = np.array([1.0, 2.0])
    params0 = {"a": jnp.ones(1, jnp.float32), "b": jnp.ones(1)}
    p = problems.quadratic(lam, params0=params0)
    at1 = p.flow_solution(1.0)
    assert at1["a"].dtype == jnp.float32 and at1["b"].dtype == jnp.float64
    np.testing.assert_allclose([at1["a"][0], at1["b"][0]], np.exp(-lam), rtol=1e-6)
    assert float(p.loss(params0)) == pytest.approx(1.5, rel=1e-7)
    c = dynopt.compare(flows.GradientFlow(), p, [0.04, 0.02, 0.01], 1.0)
    exact = [
        max(
            np.linalg.norm((1 - h * lam) ** k - np.exp(-k * h * lam))
            for k in range(1, round(1 / h) + 1)
        )
        for h in (0.04, 0.02, 0.01)
    ]
    np.testing.assert_allclose(np.asarray(c.errors), exact, rtol=0, atol=1e-6)

    xstar = jnp.array([0.5, -0.25])  # float64 by default, of float32 parameters
    p32 = problems.quadratic(lam, params0=jnp.ones(2, jnp.float32), minimizer=xstar, rotate=True)
    got = p32.flow_solution(0.7)
    assert got.dtype == jnp.float32
    hess = np.asarray(p32.hessian, np.float64)
    expected = np.asarray(xstar) + scipy.linalg.expm(-0.7 * hess) @ (1.0 - np.asarray(xstar))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "build",
    [
        lambda x: problems.rosenbrock(params0=jnp.asarray([-1.2, 1.0], x)),
        lambda x: problems.double_well(params0=jnp.asarray([1.5], x)),
        lambda x: problems.logcosh(
            params0={"a": jnp.asarray([0.9, -0.6, 0.3], x), "b": jnp.asarray([0.5, -1.1], x)}
        ),
    ],
    ids=["rosenbrock", "double_well", "logcosh"],
)
def test_landscapes_keep_float32_parameters(build):
    """A float32 `params0` was cast to float64: the runs were float64 where float32 was asked.
    Now float32 throughout (strict promotion: the landscape's constants follow the parameters),
    and the loss equals the float64 one to float32 rounding (rel 1e-6)."""
    p32, p64 = build(jnp.float32), build(jnp.float64)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(p32.params0))
    loss32 = p32.loss(p32.params0)
    assert loss32.dtype == jnp.float32
    assert float(loss32) == pytest.approx(float(p64.loss(p64.params0)), rel=1e-6)
    tr = dynopt.run(optax.sgd(1e-3), p32, 4)
    assert tr.loss.dtype == jnp.float32 and int(tr.diverged_at) == -1
    assert problems.rosenbrock(params0=[-1.2, 1.0]).params0.dtype == jnp.float64  # a list
    if p32.minimizer is not None:
        assert p32.minimizer.dtype == jnp.float32


def test_finite_sum_takes_float32_data_at_float64_parameters_under_strict_promotion():
    """The construction check evaluated the per-sample loss on the raw float32 sample, a
    `TypePromotionError` under strict promotion, although the loss it builds widens the data
    to the parameters' float64 (`data_like_params`). Loss: mean of ½(x·w - y)² = ½(3 - 1)²."""
    x, y = jnp.ones((6, 3), jnp.float32), jnp.ones(6, jnp.float32)

    def sample_loss(w, s):
        return 0.5 * (s[0] @ w - s[1]) ** 2

    p = problems.finite_sum(sample_loss, (x, y), jnp.zeros(3), batch_size=2)
    w = jnp.ones(3)
    assert p.loss(w).dtype == jnp.float64 and float(p.loss(w)) == 2.0
    assert float(p.stochastic_loss(w, jax.random.key(0))) == 2.0


def test_finite_sum_of_a_mixed_tree_without_regularizer():
    """No regularizer added a zero in the first leaf's dtype: float32 beside a float64 loss, a
    `TypePromotionError` under strict promotion. Loss at 0: mean of ½(0 - 1)² = 0.5."""
    x, y = jnp.ones((6, 3)), jnp.ones(6)

    def sample_loss(p, s):
        return 0.5 * (s[0] @ p["w"] + p["b"][0].astype(jnp.float64) - s[1]) ** 2

    params0 = {"b": jnp.zeros(1, jnp.float32), "w": jnp.zeros(3)}
    p = problems.finite_sum(sample_loss, (x, y), params0, batch_size=2)
    assert float(p.loss(params0)) == 0.5
    assert float(p.stochastic_loss(params0, jax.random.key(0))) == 0.5
    tr = dynopt.run(optax.sgd(0.1), p, 3, key=jax.random.key(1))
    assert tr.params["b"].dtype == jnp.float32 and int(tr.diverged_at) == -1


def test_compare_names_a_flow_class_given_as_reference():
    """`reference=flows.GradientFlow` (the class) raised Python's `TypeError` about positional
    arguments from `GradientFlow(h)`."""
    with pytest.raises(ValueError, match=r"reference=GradientFlow is a flow class.*instance"):
        dynopt.compare(
            flows.GradientFlow(),
            problems.quadratic([1.0, 3.0]),
            [0.04, 0.02, 0.01],
            1.0,
            reference=flows.GradientFlow,
        )


def test_compare_names_a_flow_class_given_as_flow():
    """`compare(flows.GradientFlow, ...)` said "got _ModuleMeta" (equinox's metaclass)."""
    with pytest.raises(ValueError, match=r"flow must be a flow instance.*GradientFlow\(\.\.\.\)"):
        dynopt.compare(flows.GradientFlow, problems.quadratic([1.0, 3.0]), [0.04, 0.02, 0.01], 1.0)


def test_quadratic_takes_a_traced_integer_seed():
    """A sweep over rotations (`vmap` over seeds) keeps working with the seed check."""
    hs = jax.vmap(lambda s: problems.quadratic([1.0, 2.0], rotate=True, seed=s).hessian)(
        jnp.arange(2)
    )
    for s in range(2):
        np.testing.assert_allclose(
            hs[s], problems.quadratic([1.0, 2.0], rotate=True, seed=s).hessian
        )


def test_quadratic_flow_solution_at_several_times_and_a_float64_time():
    r"""`flow_solution` of a 1-D array of times raised a broadcasting `TypeError`, and a
    float64 time of float32 parameters a `TypePromotionError` (strict promotion). Now stacked
    along a leading axis, as `Trajectory.evaluate`, and equal to $e^{-\lambda t}$ (float32
    rounding: 1e-6)."""
    lam = np.array([1.0, 2.0])
    p32 = problems.quadratic(lam, params0=jnp.ones(2, jnp.float32))
    got = p32.flow_solution(jnp.asarray(1.0, jnp.float64))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, np.exp(-lam), rtol=1e-6)
    ts = jnp.array([0.0, 0.5, 1.0])
    for diagonal in (False, True):
        p = problems.quadratic(lam, diagonal=diagonal)
        np.testing.assert_allclose(p.flow_solution(ts), np.exp(-np.outer(ts, lam)), rtol=1e-15)
    with pytest.raises(ValueError, match="1-D array of times"):
        p.flow_solution(jnp.ones((2, 2)))


def test_compare_of_an_optimizer_names_its_step_sizes():
    """With an optimizer callable, bad step sizes were named `step_size` (the automatic
    flow's own argument, at the largest of them) instead of `step_sizes`, as given."""
    problem = problems.quadratic([1.0, 3.0])
    for hs in ([-0.04, -0.02, -0.01], [np.nan, 0.02, 0.01]):
        with pytest.raises(ValueError, match=r"step_sizes must be > 0"):
            dynopt.compare(lambda h: optax.sgd(h), problem, hs, 1.0)
    with pytest.raises(ValueError, match=r"step_sizes must be a non-empty 1-D array"):
        dynopt.compare(lambda h: optax.sgd(h), problem, [], 1.0)


def test_compare_against_the_modified_flow_is_its_closed_form():
    r"""Against `ModifiedGradientFlow` (a reference per step size), the errors are
    $\max_k\|(I - hH)^k x_0 - e^{-kh(H + hH^2/2)}x_0\|$ to the reference's accuracy (below
    1e-9 on a solution of norm <= 2), and the fitted order 2."""
    problem = problems.quadratic([0.5, 2.0, 7.0], rotate=True, seed=1)
    hess, x0 = np.asarray(problem.hessian), np.ones(3)
    hs = [0.04, 0.02, 0.01]
    c = dynopt.compare(
        flows.GradientFlow(), problem, hs, t1=1.0, reference=flows.ModifiedGradientFlow
    )
    exact = []
    for h in hs:
        modified = hess + 0.5 * h * hess @ hess
        exact.append(
            max(
                np.linalg.norm(
                    np.linalg.matrix_power(np.eye(3) - h * hess, k) @ x0
                    - scipy.linalg.expm(-k * h * modified) @ x0
                )
                for k in range(1, round(1.0 / h) + 1)
            )
        )
    np.testing.assert_allclose(np.asarray(c.errors), exact, rtol=0, atol=1e-9)
    assert c.verdict == "asymptotic" and abs(float(c.order) - 2.0) < 0.1
