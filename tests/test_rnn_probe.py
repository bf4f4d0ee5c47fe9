"""dynopt.rnn probed on settings the main tests do not use: a float32 cell fitted to
observations (both routes), a NaN `t0`, and log-parameters checked inside `jit`."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dynopt import rnn


def _decay(t, y, p):
    """$\\dot y = -k y$: $y(t) = y_0 e^{-kt}$, and RK4 with step h is $y_0 R(-kh)^n$."""
    return -p["k"] * y


K, H, Y0 = 0.7, 0.5, 2.0
TS = np.array([0.5, 1.0, 2.0])
YS = Y0 * np.exp(-K * TS)[:, None]  # float64 observations, as a user loads them


@pytest.mark.parametrize("route", [rnn.unrolled_model, rnn.diffrax_model])
def test_float32_cell_fits_float64_observations_in_float32(route):
    """A float32 cell's predictions, residuals, loss and fit stay float32 (the observations are
    stored in float64). Before: a TypePromotionError under strict promotion (float64 under
    standard promotion), on both routes.

    Tolerance: float32 rounding of O(1) values over at most a few dozen stages/steps,
    100 * eps32 ≈ 1.2e-5 (the float64 reference's own error is ~1e-13)."""
    obs = rnn.Observations(TS, YS)
    c64 = rnn.ODECell(_decay, {"k": jnp.asarray(K)}, H, method="rk4")
    c32 = rnn.ODECell(_decay, {"k": jnp.float32(K)}, jnp.float32(H), method="rk4")
    m64 = route(c64, jnp.asarray([Y0]), obs)
    m32 = route(c32, jnp.float32([Y0]), obs)
    p32 = m32.predict(c32.params)
    assert p32.dtype == jnp.float32
    assert m32.residuals(c32.params).dtype == jnp.float32
    assert m32.loss(c32.params).dtype == jnp.float32
    tol = 100 * float(jnp.finfo(jnp.float32).eps)
    np.testing.assert_allclose(
        np.asarray(p32, np.float64), np.asarray(m64.predict(c64.params)), rtol=tol, atol=0
    )
    with jax.numpy_dtype_promotion("standard"):  # optax.adam internals are not strict-clean
        fitted = rnn.fit(m32, optax.adam(1e-2), 3)
    assert fitted.loss.dtype == jnp.float32
    assert fitted.cell.parameters["k"].dtype == jnp.float32
    ident = rnn.identifiability(m32)
    ref = rnn.identifiability(m64)
    assert ident.std_errors.dtype == jnp.float32
    # se = σ/‖S‖ for one parameter; S is a derivative of the predictions, same tolerance ×10
    np.testing.assert_allclose(
        np.asarray(ident.std_errors, np.float64), np.asarray(ref.std_errors), rtol=10 * tol
    )


def test_float32_state_with_float64_parameters_solves_as_the_unrolled_cell():
    """diffrax_model takes the state the cell unrolls (float32 y0 with float64 θ: float64),
    instead of a float32 y0 whose field returns float64 (before: a diffrax dtype error)."""
    obs = rnn.Observations(TS, YS)
    # a strong float64 (jnp.asarray(K) would be weakly typed and follow y0 to float32)
    cell = rnn.ODECell(_decay, {"k": jnp.asarray(K, jnp.float64)}, H, method="rk4")
    assert cell(jnp.float32([Y0]), 2).dtype == jnp.float64
    model = rnn.diffrax_model(cell, jnp.float32([Y0]), obs, rtol=1e-12, atol=1e-12)
    pred = model.predict(cell.params)
    assert pred.dtype == jnp.float64
    # a 1e-12 tolerance solve of the closed form (Y0 = 2 is exact in float32)
    np.testing.assert_allclose(np.asarray(pred), YS, rtol=1e-10, atol=0)


def test_nan_t0_is_refused():
    """t0 = NaN passed the horizon check (NaN < ts[0] is False) and solved from NaN."""
    obs = rnn.Observations(TS, YS)
    cell = rnn.ODECell(_decay, {"k": jnp.asarray(K)}, H)
    for route in (rnn.diffrax_model, rnn.unrolled_model):
        for t0 in (np.nan, np.inf):
            with pytest.raises(ValueError, match="t0 must be finite"):
                route(cell, jnp.asarray([Y0]), obs, t0=t0)


def test_log_params_checked_inside_jit():
    """A traced non-positive parameter with log_params=True raised nothing: its log was a
    silent NaN. Now the check runs inside the program (eqx.error_if)."""

    @eqx.filter_jit
    def stored(p):
        return rnn.ODECell(_decay, {"k": p}, H, log_params=True).params["k"]

    np.testing.assert_allclose(float(stored(jnp.asarray(2.0))), np.log(2.0), rtol=1e-15)
    for bad in (-2.0, 0.0, np.nan):
        with pytest.raises(Exception, match="log_params=True needs every parameter finite"):
            jax.block_until_ready(stored(jnp.asarray(bad)))


def test_cell_refuses_nan_t0():
    """`cell(y0, n, t0=nan)` unrolled a non-autonomous field on NaN times without a word."""
    cell = rnn.ODECell(
        lambda t, y, p: p * jnp.cos(t) * jnp.ones_like(y), jnp.asarray(1.0), 0.1, method="rk4"
    )
    for t0 in (np.nan, -np.inf):
        with pytest.raises(ValueError, match="t0 must be finite"):
            cell(jnp.zeros(1), 3, t0=t0)
    # y(t) = sin(t) - sin(t0): RK4 on a quadrature is Simpson's rule, error <= T h^4 max|f^(4)|
    # / 2880 = 1e-4 / 2880 ≈ 3.5e-8 over T = 1
    ys = cell(jnp.zeros(1), 10, t0=0.5)
    np.testing.assert_allclose(float(ys[-1, 0]), np.sin(1.5) - np.sin(0.5), rtol=0, atol=4e-8)


def test_unrolled_model_float32_step_grid():
    """A float32 step 0.1 (0.10000000149) refused observations at 0.3, 0.7, 1.1 as "off the
    grid": the grid tolerance was float64's. It now scales with the step's dtype; the readouts
    are steps 3, 7, 11 of Euler, (1 - 0.1 k)^n exactly up to float32 rounding."""
    ts = np.array([0.3, 0.7, 1.1])
    obs = rnn.Observations(ts, np.exp(-K * ts)[:, None])
    cell = rnn.ODECell(_decay, {"k": jnp.float32(K)}, jnp.float32(0.1))
    model = rnn.unrolled_model(cell, jnp.float32([1.0]), obs)
    np.testing.assert_array_equal(np.asarray(model.indices), [3, 7, 11])
    ref = (1 - 0.1 * K) ** np.array([3.0, 7.0, 11.0])
    tol = 100 * float(jnp.finfo(jnp.float32).eps)  # a dozen float32 multiply-adds
    np.testing.assert_allclose(
        np.asarray(model.predict(cell.params), np.float64)[:, 0], ref, rtol=tol
    )
    # off the grid is still refused, and an integer step still works
    with pytest.raises(ValueError, match="must lie on the cell's grid"):
        rnn.unrolled_model(cell, jnp.float32([1.0]), rnn.Observations([0.35], [[1.0]]))
    int_cell = rnn.ODECell(_decay, {"k": jnp.asarray(K)}, 1)
    int_model = rnn.unrolled_model(int_cell, jnp.asarray([1.0]), rnn.Observations([2.0], [[1.0]]))
    assert int_model.num_steps == 2


@pytest.mark.parametrize("num_params", [5, 7])
def test_lotka_volterra_refuses_wrong_parameter_count(num_params):
    """5 parameters ran with 1/N2 read as params[4] (JAX clamps the index), 7 ignored the last:
    both silently different trajectories."""
    params = jnp.asarray((rnn.POST5_PARAMS * 2)[:num_params])
    with pytest.raises(ValueError, match="params must be the 6 values"):
        rnn.competitive_lotka_volterra(0.0, jnp.asarray(rnn.POST5_Y0), params)
    cell = rnn.ODECell(rnn.competitive_lotka_volterra, params, 0.1)
    with pytest.raises(ValueError, match="params must be the 6 values"):
        cell(jnp.asarray(rnn.POST5_Y0), 2)
    # the tuple form of the post's values still works
    x = rnn.competitive_lotka_volterra(0.0, jnp.asarray([375.0, 250.0]), rnn.POST5_PARAMS)
    np.testing.assert_allclose(np.asarray(x), 0.0, atol=1e-12)  # the coexistence equilibrium


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(solver="tsit5"), "solver must be an adaptive diffrax solver"),
        (dict(solver=diffrax.Euler()), "solver must be an adaptive diffrax solver"),
        (dict(adjoint="checkpoint"), "adjoint must be a diffrax.AbstractAdjoint"),
    ],
)
def test_diffrax_model_checks_solver_and_adjoint(kwargs, match):
    """These failed only at the first loss evaluation, with an AttributeError or diffrax's
    "Cannot use adaptive step sizes" RuntimeError."""
    obs = rnn.Observations(TS, YS)
    cell = rnn.ODECell(_decay, {"k": jnp.asarray(K)}, H)
    with pytest.raises(ValueError, match=match):
        rnn.diffrax_model(cell, jnp.asarray([Y0]), obs, **kwargs)
    # HalfSolver gives Euler an error estimate: accepted, and it solves the ODE
    model = rnn.diffrax_model(
        cell,
        jnp.asarray([Y0]),
        obs,
        solver=diffrax.HalfSolver(diffrax.Euler()),
        rtol=1e-6,
        atol=1e-6,
    )
    # Euler controlled to a local error tol ≈ rtol|y| + atol ≤ 3e-6 per step: C h² = tol with
    # C = k²|y|/2 ≤ 0.5 gives h ≥ 2.4e-3, so N ≤ T/h ≈ 800 steps and a global error ≤ N tol
    # ≈ 2.4e-3 (measured: 4.5e-4)
    np.testing.assert_allclose(np.asarray(model.predict(cell.params)), YS, rtol=0, atol=2.4e-3)


def test_times_needs_a_nonnegative_integer():
    cell = rnn.ODECell(_decay, {"k": jnp.asarray(K)}, H, method="rk4")
    np.testing.assert_allclose(cell.times(3, 1.0), 1.0 + H * np.arange(4), rtol=1e-15)
    assert cell.times(0).shape == (1,)
    for bad in (-2, 2.5):  # -2 was an empty grid, 2.5 a TypeError
        with pytest.raises(ValueError, match="num_steps"):
            cell.times(bad)


def test_a_new_clip_reuses_the_compiled_unroll_and_is_checked_inside_jit():
    """`clip` was a static field: every new M compiled the unroll again. It is a leaf now, so a
    clip sweep is one program (and `vmap`pable); a traced M <= 0 is an error, not a field
    clipped to an empty interval."""
    traces = []

    @eqx.filter_jit
    def unroll(cell):
        traces.append(None)
        return cell(jnp.array([1.0]), 20)

    ends = [unroll(rnn.ODECell(_decay, {"k": jnp.array(3.0)}, 0.1, clip=m))[-1] for m in (0.5, 2.0)]
    assert len(traces) == 1
    # |f| = 3 y starts at 3: M = 0.5 clips the first steps, M = 2 fewer (the two ends differ).
    assert float(ends[0][0]) > float(ends[1][0])
    many = jax.vmap(
        lambda m: rnn.ODECell(_decay, {"k": jnp.array(3.0)}, 0.1, clip=m)(jnp.ones(1), 5)
    )
    assert many(jnp.array([0.5, 2.0])).shape == (2, 6, 1)
    with pytest.raises(Exception, match="clip must be > 0"):
        jax.block_until_ready(many(jnp.array([0.5, -1.0])))
    with pytest.raises(ValueError, match="clip must be a scalar"):
        rnn.ODECell(_decay, {"k": jnp.array(3.0)}, 0.1, clip=jnp.ones(2))


@pytest.mark.parametrize("log_params", ["no", 0, None])
def test_cell_log_params_flag_checked(log_params):
    """`ODECell(..., log_params="no")` stored log θ without a word (any truthy value did); now a
    ValueError naming log_params."""
    with pytest.raises(ValueError, match="log_params must be True or False"):
        rnn.ODECell(rnn.competitive_lotka_volterra, rnn.POST5_PARAMS, 0.1, log_params=log_params)
    cell = rnn.ODECell(
        rnn.competitive_lotka_volterra, rnn.POST5_PARAMS, 0.1, log_params=np.bool_(True)
    )
    assert cell.log_params is True


@pytest.mark.parametrize("method", [["euler"], [1]])
def test_cell_method_not_a_name(method):
    """A list as method was Python's TypeError 'unhashable type'; now the ValueError listing the
    methods."""
    with pytest.raises(ValueError, match="method must be one of"):
        rnn.ODECell(rnn.competitive_lotka_volterra, rnn.POST5_PARAMS, 0.1, method=method)


def test_loss_profile_refuses_empty_or_non_finite_alphas():
    """A NaN or inf alpha returned a NaN loss in the profile without a word, and an empty
    `alphas` an empty profile; now a ValueError naming alphas (traced: at run time)."""
    model = rnn.unrolled_model(
        rnn.ODECell(rnn.competitive_lotka_volterra, rnn.POST5_PARAMS, 0.5),
        rnn.POST5_Y0,
        rnn.Observations(jnp.array([0.5, 1.0]), jnp.ones((2, 2))),
    )
    raw, v = model.cell.params, jnp.ones(6)
    for alphas in (jnp.array([0.0, jnp.nan]), jnp.array([jnp.inf]), jnp.array([])):
        with pytest.raises(ValueError, match="alphas must be"):
            rnn.loss_profile(model, raw, v, alphas)
    ok = rnn.loss_profile(model, raw, v, jnp.array([0.0]))
    assert np.isfinite(ok).all()


def test_fit_and_identifiability_check_the_model():
    """`fit(3, ...)`, `identifiability(3)` and `loss_profile(3, ...)` were AttributeErrors
    ("'int' object has no attribute 'problem'" / "'cell'"); now a ValueError naming model."""
    with pytest.raises(ValueError, match="model must be an ObservationModel"):
        rnn.fit(3, optax.adam(1e-2), 5)
    with pytest.raises(ValueError, match="model must be an ObservationModel"):
        rnn.identifiability(3)
    with pytest.raises(ValueError, match="model must be an ObservationModel"):
        rnn.loss_profile(3, jnp.ones(2), jnp.ones(2), jnp.array([0.0]))
