"""dynopt.lyapunov probed as a user would: the rates under `jax.jit`/`jax.vmap`/`jax.grad` (traced
times, a traced reference), float32 times, mixed-dtype deviations and bad arguments."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import flows, lyapunov, problems


LAMS = np.array([1.0, 3.0])


def _reference():
    problem = problems.quadratic(jnp.asarray(LAMS))  # x0 = (1, 1), minimizer 0
    return problem, dynopt.solve(flows.GradientFlow(), problem, jnp.linspace(0.0, 1.0, 5))


def test_rates_under_jit_vmap_and_grad():
    """Traced times (jit, vmap, grad) and a traced reference raised TracerArrayConversionError /
    ConcretizationTypeError from the host-side range check; now the check runs inside the
    program. Closed form on gradient flow: L(t) = sum λ e^{-2λt}/2, so dL/dt = -sum λ² e^{-2λt}
    and its t-derivative 2 sum λ³ e^{-2λt}. Tolerances: the solve's rtol 1e-10 bounds the state,
    so values and gradients are checked to 1e-8 (measured 3e-11); the t-derivative of the rate
    is the second derivative of the dense Tsit5 polynomial, one order less accurate per
    derivative: 1e-6 (measured 1.9e-7)."""
    problem, ref = _reference()
    ts = jnp.linspace(0.05, 0.95, 7)
    e = np.exp(-2 * LAMS[None, :] * np.asarray(ts)[:, None])
    loss = (LAMS * e).sum(1) / 2
    host = lyapunov.loss_values(ref, problem, ts)
    np.testing.assert_allclose(host, loss, rtol=1e-8)
    jitted = jax.jit(lambda s: lyapunov.loss_values(ref, problem, s))(ts)
    np.testing.assert_allclose(jitted, host, rtol=1e-14)
    vmapped = jax.vmap(lambda s: lyapunov.loss_values(ref, problem, s[None])[0])(ts)
    np.testing.assert_allclose(vmapped, host, rtol=1e-14)
    traced_ref = eqx.filter_jit(lambda r: lyapunov.gradient_norm_sq(r, problem, ts))(ref)
    np.testing.assert_allclose(traced_ref, (LAMS**2 * e).sum(1), rtol=1e-8)
    curvature = jax.grad(lambda s: jnp.sum(lyapunov.loss_rate(ref, problem, s)))(ts)
    np.testing.assert_allclose(curvature, 2 * (LAMS**3 * e).sum(1), rtol=1e-6)
    ends = jnp.array([0.0, 1.0])  # the ends themselves: a full derivative, not clip's half
    at_ends = jax.grad(lambda s: jnp.sum(lyapunov.loss_rate(ref, problem, s)))(ends)
    e_ends = np.exp(-2 * LAMS[None, :] * np.asarray(ends)[:, None])
    np.testing.assert_allclose(at_ends, 2 * (LAMS**3 * e_ends).sum(1), rtol=1e-6)
    with pytest.raises(Exception, match=r"ts must be in the reference's interval"):
        jax.block_until_ready(
            jax.jit(lambda s: lyapunov.loss_values(ref, problem, s))(jnp.array([0.5, 1.5]))
        )


def test_float32_times_against_a_float64_reference():
    """float32 times raised a strict-promotion error inside the interpolation; they are taken in
    the reference's time dtype (the values a float64 cast gives)."""
    problem, ref = _reference()
    ts32 = jnp.linspace(0.0, 1.0, 6, dtype=jnp.float32)
    got = lyapunov.rates(ref, problem, ts32)
    want = lyapunov.rates(ref, problem, ts32.astype(jnp.float64))
    for g, w in zip(got, want):
        assert g.dtype == jnp.float64
        np.testing.assert_array_equal(g, w)


def test_max_relative_deviation_mixed_dtypes_and_shapes():
    """A float32 measurement against a float64 prediction raised a strict-promotion error; a
    shape mismatch a TypeError from `sub`, empty inputs a reduction error."""
    measured = jnp.array([1.0, 2.5], jnp.float32)
    predicted = jnp.array([1.0, 2.0])
    dev = lyapunov.max_relative_deviation(measured, predicted)
    assert dev.dtype == jnp.float64 and float(dev) == 0.25
    with pytest.raises(ValueError, match=r"one shape .* got \(3,\) and \(4,\)"):
        lyapunov.max_relative_deviation(jnp.zeros(3), jnp.ones(4))
    with pytest.raises(ValueError, match="at least one entry"):
        lyapunov.max_relative_deviation(jnp.zeros(0), jnp.zeros(0))


def test_max_relative_deviation_of_vanishing_rates():
    """NaN where both vanish identically, inf where only the prediction does (as documented,
    without a warning), and the same number under `jit` as on the host."""
    assert np.isnan(float(lyapunov.max_relative_deviation(jnp.zeros(3), jnp.zeros(3))))
    assert float(lyapunov.max_relative_deviation(jnp.ones(3), jnp.zeros(3))) == np.inf
    measured, predicted = jnp.array([0.3, -1.7, 2.2]), jnp.array([0.1, -1.9, 2.0])
    host = lyapunov.max_relative_deviation(measured, predicted)
    traced = jax.jit(lyapunov.max_relative_deviation)(measured, predicted)
    assert host.dtype == traced.dtype == jnp.float64
    assert float(host) == float(traced) == pytest.approx(0.1, rel=1e-14)


def test_bad_arguments_are_named():
    """A non-callable P raised `'NoneType' object is not callable` while tracing; a wrong
    problem or reference an AttributeError."""
    problem, ref = _reference()
    ts = jnp.linspace(0.0, 1.0, 3)
    with pytest.raises(ValueError, match="P must be callable"):
        lyapunov.preconditioned_norm_sq(ref, problem, ts, None)
    with pytest.raises(ValueError, match=r"problem must be a dynopt\.Problem"):
        lyapunov.loss_values(ref, "rosenbrock", ts)
    with pytest.raises(ValueError, match=r"reference must be a dynopt\.Trajectory"):
        lyapunov.loss_values(ref.params, problem, ts)


def test_float32_times_at_the_end_of_the_interval():
    """float32(0.1) = 0.10000000149 > t1 = 0.1 was refused with "ts must be in [0, 0.1], got
    [0. 0.025 0.05 0.075 0.1]"; a time narrower than the reference's names the end it rounds
    (accepted within its own rounding, evaluated at the end), on the host and under jit."""
    problem = problems.quadratic(jnp.asarray(LAMS))
    ref = dynopt.solve(flows.GradientFlow(), problem, jnp.linspace(0.0, 0.1, 3))
    ts32 = jnp.linspace(0.0, 0.1, 5, dtype=jnp.float32)
    assert float(ts32[-1]) > 0.1
    want = lyapunov.loss_values(ref, problem, np.minimum(np.asarray(ts32, np.float64), 0.1))
    np.testing.assert_array_equal(lyapunov.loss_values(ref, problem, ts32), want)
    jitted = jax.jit(lambda s: lyapunov.loss_values(ref, problem, s))(ts32)
    np.testing.assert_allclose(jitted, want, rtol=1e-14)
    with pytest.raises(ValueError, match="ts must be in"):
        lyapunov.loss_values(ref, problem, jnp.array([0.0, 0.1001], jnp.float32))


def test_a_reference_of_another_problem_is_refused():
    """A reference solved on a 2-parameter quadratic, measured on a 3-parameter one, was JAX's
    TypeError "incompatible shapes for broadcasting"; now a ValueError naming reference and
    problem."""
    two = dynopt.problems.quadratic(jnp.array([2.0, 1.0]))
    three = dynopt.problems.quadratic(jnp.array([2.0, 1.0, 3.0]))
    reference = dynopt.solve(dynopt.flows.GradientFlow(), two, jnp.linspace(0.0, 1.0, 3))
    ts = jnp.array([0.5])
    for fn in (lyapunov.loss_rate, lyapunov.predicted_rate, lyapunov.gradient_norm_sq):
        with pytest.raises(ValueError, match="reference and problem must match"):
            fn(reference, three, ts)
    assert np.isfinite(lyapunov.loss_rate(reference, two, ts)).all()
