"""dynopt.rnn: the ODE cell is the integrator it names, gradients are right, inference recovers
parameters on a well-posed case, identifiability identities, and bad input is rejected."""

from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optimistix as optx
import pytest
from scipy.integrate import solve_ivp

import dynopt
from dynopt import rnn

from .helpers import assert_programs_cacheable, count_backend_compiles


# Classic RK4 expressed with diffrax's own machinery (diffrax ships no solver with this tableau):
# an independent implementation of the step the cell calls "rk4".
_RK4 = diffrax.ButcherTableau(
    a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
    b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    b_error=np.array([1 / 6, 1 / 3, 1 / 3, -5 / 6]),
    c=np.array([0.5, 0.5, 1.0]),
)


class _DiffraxRK4(diffrax.AbstractERK):
    tableau: ClassVar[diffrax.ButcherTableau] = _RK4
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 4


DIFFRAX_SOLVERS = {
    "euler": diffrax.Euler(),
    "heun": diffrax.Heun(),
    "midpoint": diffrax.Midpoint(),
    "ralston": diffrax.Ralston(),
    "bosh3": diffrax.Bosh3(),
    "rk4": _DiffraxRK4(),
}
LV = rnn.competitive_lotka_volterra
TRUE = jnp.asarray(rnn.POST5_PARAMS)
Y0 = jnp.asarray(rnn.POST5_Y0)
POST_TS = np.array([10.0, 15.0, 30.0, 36.0, 40.0, 42.0])
POST_TABLE = np.array(
    [[165, 283], [197, 290], [280, 276], [305, 269], [318, 266], [324, 264]], dtype=float
)


def forced_oscillator(t, y, p):
    """Non-autonomous, so a wrong stage time c_i would show."""
    return jnp.stack([y[1], -p[0] * y[0] - p[1] * y[1] + jnp.sin(3.0 * t)])


def test_all_methods_have_a_reference():
    assert set(rnn.TABLEAUS) == set(DIFFRAX_SOLVERS)


@pytest.mark.parametrize(
    "method, clip",
    [("euler", 0.5), ("heun", None), ("ralston", None), ("bosh3", None), ("rk4", None)],
)
def test_cell_is_the_integrator_it_names(method, clip):
    """Unrolled cell = diffeqsolve with the same solver on the same fixed grid, to round-off.
    The clip (active for clip=0.5: |f| reaches ~2) is part of the integrated field."""
    p, h, n, t0 = jnp.array([4.0, 0.3]), 0.05, 60, 0.2
    cell = rnn.ODECell(forced_oscillator, p, h, method=method, clip=clip)
    y0 = jnp.array([1.0, -0.5])
    ys = cell(y0, n, t0=t0)
    ts = cell.times(n, t0)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: cell.field(t, y)),
        DIFFRAX_SOLVERS[method],
        t0,
        ts[-1],
        None,
        y0,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.StepTo(ts),
    )
    assert ys.shape == (n + 1, 2)
    # Same arithmetic up to the order of additions: a few ulps per step on O(1) values.
    np.testing.assert_allclose(ys, sol.ys, rtol=0, atol=1e-12)
    if clip is not None:
        raw = jax.vmap(lambda t, y: forced_oscillator(t, y, p))(ts, ys)
        assert float(jnp.max(jnp.abs(raw))) > clip  # the clip really acted


def test_post5_forward_table_is_eulers_h01():
    """Post 5's observation table comes from its Euler RNN (h = 0.1, 1000 steps): it matches to
    the table's rounding (<= 0.5), whereas the exact solution misses one entry by 0.53."""
    cell = rnn.ODECell(LV, TRUE, 0.1)
    ys = cell(Y0, 1000)
    idx = np.rint(POST_TS / 0.1).astype(int)
    assert float(jnp.max(jnp.abs(ys[idx] - POST_TABLE))) <= 0.5
    np.testing.assert_allclose(ys[-1], [375.0, 250.0], atol=1.5)  # near the equilibrium


def test_masked_loss_equals_post5_dense_formulation():
    """The gather-based loss equals the post's Keras loss: a zero-padded target sequence with the
    mask sum|y| > 1e-3 over the whole output sequence (output n = state at t = (n+1)h)."""
    p0 = jnp.array([0.1, 0.1, 1e-3, 1e-3, 1e-3, 1e-3])
    cell = rnn.ODECell(LV, p0, 1.0, clip=1e5)
    model = rnn.unrolled_model(cell, Y0, rnn.Observations(POST_TS, POST_TABLE), num_steps=50)
    y_true = np.zeros((50, 2))
    y_true[POST_TS.astype(int) - 1] = POST_TABLE
    t_mask = (np.sum(np.abs(y_true), axis=1) > 1e-3)[:, None]
    y_pred = cell(Y0, 50)[1:]
    keras = jnp.sum(jnp.asarray(t_mask, float) * (jnp.asarray(y_true) - y_pred) ** 2)
    np.testing.assert_allclose(model.loss(cell.params), keras, rtol=1e-14)


def _central_differences(f, x, eps):
    basis = jnp.eye(x.shape[0], dtype=x.dtype)
    return jnp.stack([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in basis])


# Jitted: op-by-op, the reverse pass through diffrax's solve compiled 17 programs (3.2 s of the
# test's 7 s on 2 cores), jitted 3; the values agree to rounding, far inside the tolerances.
_jit_grad = eqx.filter_jit(lambda model, raw: jax.grad(model.loss)(raw))
_jit_residuals = eqx.filter_jit(lambda model, raw: model.residuals(raw))


def test_gradients_match_finite_differences():
    """Reverse mode through the unrolled RK4 cell and through diffrax's RecursiveCheckpointAdjoint
    vs central differences (error O(eps^2 L''') + O(ulp L / eps) ~ 1e-8 relative here); and the
    chain rule grad L = 2 J^T r ties the reverse-mode gradient to identifiability's forward-mode
    sensitivity matrix (jax.jacfwd; for diffrax through ForwardMode)."""
    obs = rnn.Observations(POST_TS, POST_TABLE)
    raw = jnp.log(TRUE * jnp.array([1.1, 0.9, 1.2, 0.8, 1.05, 0.95]))
    cell = rnn.ODECell(LV, jnp.exp(raw), 1.0, method="rk4", log_params=True)
    models = {
        "unrolled": rnn.unrolled_model(cell, Y0, obs),
        "diffrax": rnn.diffrax_model(cell, Y0, obs, rtol=1e-12, atol=1e-12),
    }
    for model in models.values():
        grad = _jit_grad(model, raw)
        scale = float(jnp.max(jnp.abs(grad)))
        fd = _central_differences(eqx.filter_jit(model.loss), raw, 1e-5)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6 * scale)
        jac = rnn.identifiability(model).sensitivity  # noise_std = 1: S itself
        chain = 2 * jac.T @ _jit_residuals(model, raw).ravel()
        np.testing.assert_allclose(grad, chain, rtol=1e-9, atol=1e-9 * scale)


def test_fisher_and_profile_identities():
    """Fisher eigenvalues are s²/σ², standard errors are sqrt(diag F⁻¹), and the loss along a
    singular direction at a zero-residual point rises as α²s² (Gauss–Newton) up to O(α³):
    relative deviation ~ α·(third/second derivative) < 1e-2 at α = 1e-3."""
    ts = np.arange(4.0, 44.0, 4.0)
    cell = rnn.ODECell(LV, TRUE, 1.0, method="rk4", log_params=True)
    probe = rnn.unrolled_model(cell, Y0, rnn.Observations(ts, np.zeros((10, 2))))
    data = np.asarray(probe.predict(cell.params))
    model = rnn.unrolled_model(cell, Y0, rnn.Observations(ts, data))
    sigma = 0.3
    ident = rnn.identifiability(model, noise_std=sigma)
    s = ident.singular_values
    assert s.shape == (6,) and bool(jnp.all(jnp.diff(s) <= 0))
    np.testing.assert_allclose(
        np.sort(np.linalg.eigvalsh(np.asarray(ident.fisher))), np.sort(s**2) / sigma**2, rtol=1e-8
    )
    cov = np.linalg.inv(np.asarray(ident.fisher))
    np.testing.assert_allclose(ident.std_errors, np.sqrt(np.diag(cov)), rtol=1e-6)
    alphas = jnp.array([-1e-3, 1e-3])
    for k in (0, 5):
        prof = rnn.loss_profile(model, model.cell.params, ident.directions[:, k], alphas)
        np.testing.assert_allclose(prof, alphas**2 * s[k] ** 2, rtol=1e-2)


def test_recovery_on_a_well_posed_synthetic_case():
    """Noise-free data at 12 times on [0, 60] from the exact ODE, start 20-30% off. Route (b)
    (diffrax + Levenberg–Marquardt) recovers θ to the solver tolerance; route (a) (an RK4 cell,
    h = 0.5) recovers it up to its O(h⁴) step bias; Adam through `dynopt.run` decreases the loss."""
    ts = np.linspace(5.0, 60.0, 12)
    # Data from an independent oracle (scipy's DOP853), not from the code under test.
    exact = solve_ivp(
        lambda t, y: np.asarray(LV(t, jnp.asarray(y), TRUE)),
        (0.0, 60.0),
        np.asarray(Y0),
        method="DOP853",
        t_eval=ts,
        rtol=1e-13,
        atol=1e-10,
    )
    obs = rnn.Observations(ts, exact.y.T)
    start = TRUE * jnp.array([1.2, 0.8, 1.3, 0.7, 0.8, 1.25])
    cell = rnn.ODECell(LV, start, 0.5, method="rk4", log_params=True)
    lm = optx.LevenbergMarquardt(rtol=1e-12, atol=1e-12)
    fit_b = rnn.fit(rnn.diffrax_model(cell, Y0, obs, rtol=1e-12, atol=1e-12), lm, 100)
    assert bool(fit_b.ok)
    np.testing.assert_allclose(fit_b.cell.parameters, TRUE, rtol=1e-6)
    fit_a = rnn.fit(rnn.unrolled_model(cell, Y0, obs), lm, 100)
    rel_a = jnp.abs(fit_a.cell.parameters / TRUE - 1)
    assert float(jnp.max(rel_a)) < 1e-2  # step bias, not optimisation error
    assert float(fit_a.loss) < 1e-3 * float(fit_a.losses[0])
    with jax.numpy_dtype_promotion("standard"):  # optax.adam internals are not strict-clean
        fit_adam = rnn.fit(rnn.unrolled_model(cell, Y0, obs), optax.adam(1e-2), 200, every=50)
    assert bool(fit_adam.ok) and fit_adam.losses.shape == (5,)
    assert float(fit_adam.loss) < 0.1 * float(fit_adam.losses[0])


def test_adam_history_tested_every_step_is_the_every_10_history():
    """experiments/rnn_ode.py fits its diffrax route with `run` testing every step (`every=1`:
    one gradient site in the program instead of two, half the compilation) and thins the
    history to every 10th step: the same fit, losses and steps as `every=10`, bit for bit."""
    from experiments.rnn_ode import _adam_fit

    obs = rnn.Observations([10.0, 15.0, 30.0], [[165.0, 283.0], [197.0, 290.0], [280.0, 276.0]])
    model = rnn.unrolled_model(rnn.ODECell(LV, TRUE * 1.1, 1.0, log_params=True), Y0, obs)
    blocks = _adam_fit(model, optax.adam(1e-2), 40)
    steps = _adam_fit(model, optax.adam(1e-2), 40, test_every_step=True)
    assert blocks.losses.shape == (5,)
    for a, b in zip(jax.tree.leaves(blocks), jax.tree.leaves(steps), strict=True):
        np.testing.assert_array_equal(a, b)


def test_fits_and_identifiability_compile_no_eager_programs():
    """What `fit` and `identifiability` do around their compiled programs is on the host or
    inside them (experiments/rnn_ode.py, quick: 83 -> 30 programs compiled). Before, indexing an
    optax fit's last iterate and loss and testing its status were programs of their own; an LM
    fit's initial and final predictions were one more program (for a diffrax model, the solve
    compiled once more); and each operation of the sensitivity analysis after the Jacobian was
    one (29 programs)."""
    jax.clear_caches()  # counts from a cold start, whatever ran before
    obs = rnn.Observations(
        [4.0, 8.0, 12.0, 20.0, 28.0],
        [[130.0, 190.0], [160.0, 220.0], [190.0, 240.0], [240.0, 260.0], [280.0, 262.0]],
    )
    cell = rnn.ODECell(LV, TRUE, 0.5, log_params=True)
    unrolled, solved = rnn.unrolled_model(cell, Y0, obs), rnn.diffrax_model(cell, Y0, obs)
    with jax.numpy_dtype_promotion("standard"):  # optax.adam internals are not strict-clean
        compiled, _ = count_backend_compiles(rnn.fit, unrolled, optax.adam(1e-3), 20)
    assert compiled <= 3  # the run, the epilogue, one of `run`'s own (before: 8)
    lm = optx.LevenbergMarquardt(rtol=1e-8, atol=1e-8)
    fit = rnn.fit(unrolled, lm, 20)  # compiles the loss's eager operations, optimistix's own
    losses = [unrolled.loss(raw) for raw in (cell.params, fit.cell.params)]
    np.testing.assert_allclose(fit.losses, losses, rtol=1e-13)
    compiled, _ = count_backend_compiles(rnn.fit, solved, lm, 20)
    assert compiled <= 2  # the solve (before: 3, the prediction apart)
    compiled, _ = count_backend_compiles(rnn.identifiability, unrolled, noise_std=0.5)
    assert compiled <= 2  # the Jacobian and the analysis (before: 29)


def test_integer_initial_state_is_read_as_real():
    """`y0` given as integers (e.g. counts) unrolls as the same real numbers: the integer dtype
    would truncate every step (before, a scan carry dtype error)."""
    cell = rnn.ODECell(LV, TRUE, 0.1)
    y0 = jnp.asarray([3, 1])
    ys = cell(y0, 5)
    assert ys.dtype == cell.step_size.dtype
    np.testing.assert_array_equal(ys, cell(y0.astype(float), 5))


def test_log_params_and_parameters():
    cell = rnn.ODECell(LV, TRUE, 1.0, log_params=True)
    np.testing.assert_allclose(cell.params, jnp.log(TRUE))
    np.testing.assert_allclose(cell.parameters, TRUE, rtol=1e-15)
    assert dynopt.rnn is rnn


def test_bad_input_raises():
    obs = rnn.Observations(POST_TS, POST_TABLE)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        rnn.ODECell(LV, TRUE, -0.1)
    # A traced step is checked inside jit/vmap too (a negative one integrated backwards).
    steps = jax.vmap(lambda h: rnn.ODECell(LV, TRUE, h)(Y0, 3)[-1])
    with pytest.raises(Exception, match="step_size must be > 0"):
        jax.block_until_ready(steps(jnp.asarray([0.1, -0.2])))
    with pytest.raises(ValueError, match="method must be one of"):
        rnn.ODECell(LV, TRUE, 0.1, method="rk45")
    with pytest.raises(ValueError, match="clip must be > 0"):
        rnn.ODECell(LV, TRUE, 0.1, clip=0.0)
    with pytest.raises(ValueError, match="log_params=True needs every parameter finite and > 0"):
        rnn.ODECell(LV, -TRUE, 0.1, log_params=True)
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        rnn.ODECell(LV, TRUE, 0.1)(Y0, 0)
    with pytest.raises(ValueError, match="ts must be strictly increasing"):
        rnn.Observations(POST_TS[::-1], POST_TABLE)
    with pytest.raises(ValueError, match=r"ys must have shape \(len\(ts\), \*state_shape\)"):
        rnn.Observations(POST_TS, POST_TABLE[:5])
    with pytest.raises(ValueError, match="mask must have the shape of ys"):
        rnn.Observations(POST_TS, POST_TABLE, mask=np.ones(6, bool))
    cell = rnn.ODECell(LV, TRUE, 1.0)
    with pytest.raises(ValueError, match="outside the horizon"):
        rnn.unrolled_model(cell, Y0, obs, num_steps=40)
    with pytest.raises(ValueError, match="must lie on the cell's grid"):
        rnn.unrolled_model(rnn.ODECell(LV, TRUE, 0.7), Y0, obs)
    with pytest.raises(ValueError, match=r"must lie in the horizon \[t0, ...\]"):
        rnn.diffrax_model(cell, Y0, obs, t0=12.0)
    with pytest.raises(ValueError, match="observations have state shape"):
        rnn.diffrax_model(cell, jnp.ones(3), obs)
    with pytest.raises(ValueError, match="rtol and atol must be > 0"):
        rnn.diffrax_model(cell, Y0, obs, rtol=0.0)
    model = rnn.unrolled_model(cell, Y0, obs)
    with pytest.raises(ValueError, match="num_iterations must be a positive integer"):
        rnn.fit(model, optax.sgd(1e-3), 0)
    with pytest.raises(ValueError, match=r"optimizer must be an optax\.GradientTransformation"):
        rnn.fit(model, "adam", 10)
    with pytest.raises(ValueError, match="noise_std must be > 0"):
        rnn.identifiability(model, noise_std=0.0)


def test_sensitivity_analysis_agrees_with_identifiability_and_flags_too_few_rows():
    """On all rows it is `identifiability`'s singular values, standard errors (and directions up
    to sign); with fewer rows than parameters the missing singular values are 0 and the
    standard errors infinite."""
    ts = np.arange(4.0, 44.0, 4.0)
    cell = rnn.ODECell(LV, TRUE, 1.0, method="rk4", log_params=True)
    model = rnn.unrolled_model(cell, Y0, rnn.Observations(ts, np.zeros((10, 2))))
    sigma = 0.3
    ident = rnn.identifiability(model, noise_std=sigma)
    s, v, se = rnn.sensitivity_analysis(sigma * np.asarray(ident.sensitivity), sigma)
    np.testing.assert_allclose(s, ident.singular_values, rtol=1e-12)
    np.testing.assert_allclose(se, ident.std_errors, rtol=1e-10)
    np.testing.assert_allclose(np.abs(v), np.abs(np.asarray(ident.directions)), atol=1e-10)
    s, v, se = rnn.sensitivity_analysis(sigma * np.asarray(ident.sensitivity)[:4], sigma)
    assert s.shape == (6,) and np.all(s[4:] == 0) and np.all(np.isinf(se))
    np.testing.assert_allclose(v.T @ v, np.eye(6), atol=1e-12)


def test_failed_solve_reads_as_nan_and_backsolve_still_saves():
    """A diffrax solve that runs out of steps predicts NaN (so `run` flags divergence), and
    `BacksolveAdjoint` (which differentiates no solver step) still gets the observations."""
    obs = rnn.Observations(POST_TS, POST_TABLE)
    cell = rnn.ODECell(LV, TRUE, 1.0, log_params=True)
    assert np.isnan(
        np.asarray(rnn.diffrax_model(cell, Y0, obs, max_steps=3).predict(cell.params))
    ).all()
    model = rnn.diffrax_model(cell, Y0, obs)
    back = rnn.diffrax_model(cell, Y0, obs, adjoint=diffrax.BacksolveAdjoint())
    np.testing.assert_allclose(back.predict(cell.params), model.predict(cell.params), rtol=1e-12)


_NO_CALLBACKS_SCRIPT = """
import optax, optimistix as optx
from dynopt import rnn
cell = rnn.ODECell(rnn.competitive_lotka_volterra, rnn.POST5_PARAMS, 1.0, log_params=True)
obs = rnn.Observations([10.0, 15.0, 30.0], [[165.0, 283.0], [197.0, 290.0], [280.0, 276.0]])
model = rnn.diffrax_model(cell, rnn.POST5_Y0, obs)
model.predict(cell.params)
rnn.fit(model, optx.LevenbergMarquardt(rtol=1e-6, atol=1e-6), 3)
rnn.fit(model, optax.adam(1e-3), 4)
rnn.identifiability(model)
"""


def test_diffrax_model_programs_hold_no_host_callbacks(tmp_path_factory):
    """JAX's persistent compilation cache stores no program with a host callback, and diffrax's
    `SaveAt(ts=...)` checks traced save times with one: the observation model saves at its
    (host-checked) times through the solver, so `predict`, both kinds of `fit` and
    `identifiability` compile programs a second process reuses. A program with an
    `eqx.error_if` is the control. (In a child process with its own cache folder:
    `assert_programs_cacheable`.)"""
    assert_programs_cacheable(__name__, tmp_path_factory)


def _linear(t, y, a):
    return a @ y


def _product_decay(t, y, p):
    """ẏ = -(a·b) y: the data determine a·b only, so (a, b) is structurally non-identifiable."""
    return -(p[0] * p[1]) * y


def _widening(t, y, p):
    return (p * y).astype(jnp.float64)


def _tiny_decay_model():
    """A scalar decay seen at two grid times: the cheapest model for argument checks."""
    cell = rnn.ODECell(_product_decay, jnp.array([0.7, 1.3]), 0.25)
    ts = np.array([0.5, 1.0, 1.5, 2.0])
    probe = rnn.unrolled_model(cell, jnp.array(1.0), rnn.Observations(ts, np.zeros(4)))
    data = np.asarray(probe.predict(cell.params))
    return rnn.unrolled_model(cell, jnp.array(1.0), rnn.Observations(ts, data))


def test_float32_state_with_float64_parameters_unrolls_in_their_promoted_dtype():
    """The state is promoted to the result dtype of y0 and θ (before, a scan carry TypeError);
    equal dtypes stay as they are, and a field that returns a wider dtype is refused clearly."""
    a64 = jnp.array([[-1.0, 0.2], [0.0, -0.5]])
    y32 = jnp.array([1.0, 0.5], jnp.float32)  # exactly representable: the same initial state
    ys = rnn.ODECell(_linear, a64, 0.1)(y32, 5)
    assert ys.dtype == jnp.float64
    np.testing.assert_array_equal(ys, rnn.ODECell(_linear, a64, 0.1)(y32.astype(float), 5))
    assert rnn.ODECell(_linear, a64.astype(jnp.float32), 0.1)(y32, 5).dtype == jnp.float32
    with pytest.raises(ValueError, match="returns dtype float64 for a state of dtype float32"):
        rnn.ODECell(_widening, jnp.float32(2.0), 0.1)(jnp.float32(1.0), 3)


def test_non_scalar_step_size_is_refused_at_construction():
    """Before, accepted, and failed only when unrolled ("mul got incompatible shapes")."""
    with pytest.raises(ValueError, match=r"step_size must be a scalar, got shape \(2,\)"):
        rnn.ODECell(LV, TRUE, jnp.array([0.1, 0.2]))


def test_numpy_integers_count_as_integers_and_bools_do_not():
    """`fit` took a NumPy integer as no integer while `ODECell.__call__` did; a bool is refused
    by both (before, `cell(y0, True)` took one step)."""
    model = _tiny_decay_model()
    fitted = rnn.fit(model, optax.sgd(1e-3), np.int64(3))
    assert int(fitted.num_iterations) == 3 and bool(fitted.ok)
    assert model.cell(jnp.array(1.0), np.int32(4)).shape == (5,)
    with pytest.raises(ValueError, match="num_iterations must be a positive integer"):
        rnn.fit(model, optax.sgd(1e-3), True)
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        model.cell(jnp.array(1.0), True)


def test_sensitivity_analysis_refuses_a_nonpositive_noise_std():
    """σ divides S and multiplies the singular values back: σ < 0 returned negative singular
    values, σ = 0 NaN; refused as in `identifiability`."""
    for sigma in (-1.0, 0.0, np.inf):
        with pytest.raises(ValueError, match="noise_std must be > 0"):
            rnn.sensitivity_analysis(np.eye(2), sigma)
    with pytest.raises(ValueError, match="noise_std must be a scalar"):
        rnn.sensitivity_analysis(np.eye(2), np.ones(2))
    with pytest.raises(ValueError, match=r"sensitivity must be a finite, nonempty 2-D array"):
        rnn.sensitivity_analysis(np.ones(3), 1.0)


def test_loss_profile_refuses_a_zero_or_misshapen_direction():
    """A zero direction normalised to a NaN profile; a wrong length raised a TypeError."""
    model = _tiny_decay_model()
    raw, alphas = model.cell.params, jnp.array([-0.1, 0.1])
    with pytest.raises(ValueError, match="direction must be finite and nonzero"):
        rnn.loss_profile(model, raw, jnp.zeros(2), alphas)
    with pytest.raises(ValueError, match=r"direction must have shape \(p,\) = \(2,\)"):
        rnn.loss_profile(model, raw, jnp.ones(3), alphas)
    with pytest.raises(ValueError, match="alphas must be 1-D"):
        rnn.loss_profile(model, raw, jnp.ones(2), 0.1)


def test_exactly_flat_direction_gives_infinite_std_errors():
    """ẏ = -(a·b)y: S has rank 1, but its second singular value is round-off (~1e-16 s_1), not 0;
    before, std_errors were finite (~1e15). With the rank tolerance max(n, p)·eps·s_1 both are
    inf, and `sensitivity_analysis` agrees. A parameter orthogonal to an exactly flat direction
    keeps a finite error (before, 0/0 = NaN)."""
    ident = rnn.identifiability(_tiny_decay_model())
    s = np.asarray(ident.singular_values)
    assert 0 <= s[1] <= 8 * np.finfo(float).eps * s[0]  # reported as computed
    assert np.all(np.isinf(ident.std_errors))
    _, _, se = rnn.sensitivity_analysis(np.asarray(ident.sensitivity), 1.0)
    assert np.all(np.isinf(se))
    _, _, se = rnn.sensitivity_analysis(np.array([[2.0, 0.0], [0.0, 0.0]]), 1.0)
    np.testing.assert_array_equal(se, [0.5, np.inf])


def test_y0_the_vector_field_cannot_take_is_a_value_error():
    """Checked by tracing the field once, abstractly, at the start of the unroll (before, a raw
    dot_general TypeError from inside the scan)."""
    cell = rnn.ODECell(_linear, jnp.eye(2), 0.1)
    with pytest.raises(ValueError, match=r"fails for y0 of shape \(3,\)"):
        cell(jnp.ones(3), 5)
    with pytest.raises(ValueError, match=r"has shape \(2,\); it must match y0's \(\)"):
        rnn.ODECell(lambda t, y, p: jnp.stack([y, y]), jnp.ones(1), 0.1)(jnp.array(1.0), 3)
