"""optax's schedules and injected hyper-parameters inside float64 runs (x64 and strict dtype
promotion, the suite's settings).

optax counts steps in int32 (`ScaleByScheduleState.count`), and JAX divides int32 by int32 in
float32 even with x64 on: `optax.exponential_decay`, `linear_schedule`, `polynomial_schedule`
evaluated at optax's own counter return float32 learning rates (the float64 map's value rounded,
relative error up to 2^-24). Others mix the counter with Python floats
(`cosine_decay_schedule`, `piecewise_constant_schedule`, Adam's bias correction), which strict
promotion refuses. `run` runs both, warns about the first (naming the fix: the schedule at a
float64 count) and never rounds silently."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt


STEPS = 20
EPS32 = float(jnp.finfo(jnp.float32).eps)


def _problem(dtype=jnp.float64):
    return dynopt.Problem(
        lambda p: 0.5 * jnp.sum(jnp.array([1.0, 3.0], dtype) * p**2), jnp.array([1.0, -1.0], dtype)
    )


def _float64_count(schedule):
    """The fix the warning names: the schedule evaluated at a float64 count."""
    return lambda k: schedule(jnp.asarray(k, jnp.float64))


def _hand_loop(tx, problem, steps=STEPS):
    """The run written by hand, eagerly, under JAX's default promotion."""
    with jax.numpy_dtype_promotion("standard"):
        params, state = problem.params0, tx.init(problem.params0)
        for _ in range(steps):
            updates, state = tx.update(jax.grad(problem.loss)(params), state, params)
            params = optax.apply_updates(params, updates)
    return params


def _no_warning(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args)


ROUNDED = {
    "exponential_decay": optax.exponential_decay(0.1, 10, 0.9),
    "linear_schedule": optax.linear_schedule(0.1, 0.01, 50),
    "polynomial_schedule": optax.polynomial_schedule(0.1, 0.01, 2, 50),
}


@pytest.mark.parametrize("name", ROUNDED)
def test_optax_evaluates_these_schedules_in_float32_at_its_int32_counter(name):
    """optax's behaviour, pinned (optax 0.2.8): at its int32 counter the value is float32,
    computed in float32 (a division, a power or a product and a sum: each rounds by eps32/2,
    the power to within an ulp, so at most 3 eps32 relative, and at least once nonzero); at a
    Python int or a float64 count it is float64."""
    schedule = ROUNDED[name]
    state = optax.sgd(schedule).init(jnp.zeros(2))
    assert state[-1].count.dtype == jnp.int32
    ks = range(1, 30)
    at_int32 = np.array([schedule(jnp.asarray(k, jnp.int32)) for k in ks])
    exact = np.array([_float64_count(schedule)(k) for k in ks])
    assert at_int32.dtype == np.float32 and exact.dtype == np.float64
    rel = np.abs(at_int32.astype(np.float64) - exact) / exact
    assert np.all(rel <= 3 * EPS32) and np.any(rel > 0)


@pytest.mark.parametrize("name", ROUNDED)
def test_run_warns_that_a_schedule_rounds_to_float32_and_the_named_fix_is_the_float64_map(name):
    schedule, problem = ROUNDED[name], _problem()
    with pytest.warns(UserWarning, match=r"float32 inside a float64 run.*int32 step counter"):
        rounded = dynopt.run(optax.sgd(schedule), problem, STEPS)
    fixed = _no_warning(dynopt.run, optax.sgd(_float64_count(schedule)), problem, STEPS)
    # The fix is the float64 map: a hand loop at Python-int counts, to float64 rounding.
    exact = _hand_loop(optax.sgd(lambda k: schedule(int(k))), problem)
    np.testing.assert_allclose(fixed.params[-1], exact, rtol=1e-14)
    # The rounded run is off by about eps32: on the quadratic each step multiplies theta_i by
    # 1 - lr_k lambda_i, and an lr off by 3 eps32 relative (above) moves that factor by
    # 3 eps32 lr lambda/(1 - lr lambda) < 3 eps32 (lr <= 0.1, lambda <= 3): after STEPS steps
    # the iterates differ by at most 3 STEPS eps32 relative.
    gap = np.max(np.abs(np.asarray(rounded.params[-1] - exact)) / np.abs(np.asarray(exact)))
    assert 1e-12 < gap <= 3 * STEPS * EPS32


def test_a_float32_run_with_a_schedule_does_not_warn():
    """In a float32 (or mixed) run float32 is the user's choice: no warning."""
    schedule = ROUNDED["exponential_decay"]
    for problem in (
        _problem(jnp.float32),
        dynopt.Problem(
            lambda p: jnp.sum(p["a"].astype(jnp.float64) ** 2) + jnp.sum(p["b"] ** 2),
            {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(2)},
        ),
    ):
        traj = _no_warning(dynopt.run, optax.sgd(schedule), problem, STEPS)
        assert jax.tree.map(lambda x: x.dtype, traj.params) == jax.tree.map(
            lambda x: x.dtype, problem.params0
        )


STRICT_UNCLEAN = {
    "cosine_decay_schedule": optax.sgd(optax.cosine_decay_schedule(0.1, 50)),
    "piecewise_constant_schedule": optax.sgd(optax.piecewise_constant_schedule(0.1, {10: 0.5})),
    "adam": optax.adam(0.05),
    # (its init evaluates the schedule at the int32 counter)
    "inject_hyperparams(sgd)(cosine_decay_schedule)": optax.inject_hyperparams(optax.sgd)(
        optax.cosine_decay_schedule(0.1, 50)
    ),
}


@pytest.mark.parametrize("name", STRICT_UNCLEAN)
def test_optax_code_that_strict_promotion_refuses_runs_as_a_hand_loop(name):
    """optax mixes its int32 counter with Python floats (`float * count`, `b1 ** count`):
    strict promotion refused it inside `run` (TypePromotionError); optax's update now runs
    under standard promotion there, the hand loop's numbers (float64, no warning)."""
    tx, problem = STRICT_UNCLEAN[name], _problem()
    assert jax.config.jax_numpy_dtype_promotion == "strict"
    with pytest.raises(jax.dtypes.TypePromotionError):
        tx.update(problem.params0, tx.init(problem.params0), problem.params0)
    traj = _no_warning(dynopt.run, tx, problem, STEPS)
    np.testing.assert_allclose(traj.params[-1], _hand_loop(tx, problem), rtol=1e-14)


def test_a_promotion_error_outside_optax_is_raised_as_it_is():
    """Only optax's own code is run under standard promotion: a transform that mixes float32
    into float64 updates still fails under strict promotion."""

    def update(updates, state, params=None):
        return jax.tree.map(lambda g: jnp.float32(0.1) * g, updates), state

    tx = optax.GradientTransformation(lambda p: optax.EmptyState(), update)
    with pytest.raises(jax.dtypes.TypePromotionError):
        dynopt.run(tx, _problem(), STEPS)


def test_inject_hyperparams_adam_under_x64_and_strict_promotion():
    """`inject_hyperparams(optax.adam)`: without `hyperparam_dtype` (or with float64) the
    hyper-parameters take the parameters' float64 and the run is optax.adam's, bit for bit;
    with `hyperparam_dtype=jnp.float32` they are float32 (b1 = 0.9 rounded) and the run says so;
    `compare` refuses it with its reason (the expansion would differentiate the state's
    hyper-parameters)."""
    problem = _problem()
    adam = dynopt.run(optax.adam(0.05, b1=0.9, b2=0.999), problem, STEPS)
    for dtype in (None, jnp.float64):
        tx = optax.inject_hyperparams(optax.adam, hyperparam_dtype=dtype)(0.05, b1=0.9, b2=0.999)
        traj = _no_warning(dynopt.run, tx, problem, STEPS)
        np.testing.assert_array_equal(traj.params, adam.params)
    tx32 = optax.inject_hyperparams(optax.adam, hyperparam_dtype=jnp.float32)(0.05, b1=0.9)
    with pytest.warns(UserWarning, match=r"hyperparams\['b1'\] is float32.*hyperparam_dtype"):
        traj = dynopt.run(tx32, problem, STEPS)
    assert 0 < np.max(np.abs(np.asarray(traj.params - adam.params)))
    sched = optax.inject_hyperparams(optax.adam)(ROUNDED["exponential_decay"])
    with pytest.warns(UserWarning, match="int32 step counter"):
        dynopt.run(sched, problem, STEPS)
    for dtype in (None, jnp.float32):
        factory = optax.inject_hyperparams(optax.adam, hyperparam_dtype=dtype)
        with pytest.raises(ValueError, match="inject_hyperparams keeps the hyper-parameters"):
            dynopt.compare(factory, problem, [0.02, 0.01], 0.2)


def test_compare_warns_that_a_maps_schedule_rounds_to_float32():
    """`compare`'s runs are `run`'s steps: a map whose sgd evaluates `exponential_decay` at
    optax's int32 counter warns there too (its float32 rounding, ~1e-7 relative, would be read
    as the method's error), and the float64-count version does not."""

    def mapped(schedule):
        return lambda flow, h: dynopt.Discretization(
            lambda learning_rate: optax.sgd(schedule(learning_rate)), {"learning_rate": h}, dt=h
        )

    def decay(lr):
        return optax.exponential_decay(lr, 10, 0.9)

    args = (dynopt.flows.GradientFlow(), _problem(), [0.02, 0.01], 0.2)
    with pytest.warns(UserWarning, match="int32 step counter"):
        dynopt.compare(*args, map=mapped(decay))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dynopt.compare(*args, map=mapped(lambda lr: _float64_count(decay(lr))))
