"""dynopt.rnn probed off the beaten path: a step size narrower than the state (float32,
bfloat16) or an integer one, a float32 noise level in the identifiability analysis, and eager
unrolls at new step sizes."""

import jax.numpy as jnp
import numpy as np
import pytest

from dynopt import rnn

from .helpers import count_backend_compiles


def _clock(t, y, params):
    del params
    return t * jnp.ones_like(y)


def _decay(t, y, params):
    del t
    return -params["k"] * y


@pytest.mark.parametrize("step", [np.float32(0.1), jnp.bfloat16(0.125)])
@pytest.mark.parametrize("t0", [0.1, 1000.3])
def test_a_narrow_step_does_not_round_a_float64_grid(step, t0):
    """The unroll's times were formed in the step's dtype (t0 rounded to it, then t0 + n h):
    a float64 unroll of y' = t with a bfloat16 h = 0.125 was 1e-3 off (t_1000 = 125.1 rounded to
    bfloat16's 8 bits), a float32 h = 0.1 1.6e-8 off. The midpoint rule integrates a field
    linear in t exactly, so y_n = (t_n^2 - t0^2)/2 with t_n = t0 + n h (h the step's own value,
    exact in float64); the unroll's rounding is N = 1000 additions of relative eps64: 1e-12."""
    cell = rnn.ODECell(_clock, {}, step, method="midpoint")
    n = 1000
    ys = np.asarray(cell(jnp.zeros(1, jnp.float64), n, t0=t0))[:, 0]
    ts = t0 + float(np.asarray(step, np.float64)) * np.arange(n + 1)
    exact = (ts**2 - t0**2) / 2
    assert ys.dtype == np.float64
    np.testing.assert_allclose(ys, exact, rtol=0, atol=1e-12 * np.max(np.abs(exact)))
    grid = cell.times(n, t0, dtype=jnp.float64)
    np.testing.assert_allclose(grid, ts, rtol=4 * np.finfo(np.float64).eps)


def test_an_integer_step_keeps_a_fractional_start():
    """An integer step size made the grid integer: t0 = 0.5 was truncated to 0 (times 0, 1, 2,
    3), and a non-autonomous field was evaluated at the wrong times. Euler on y' = t from
    t0 = 0.5, h = 1: y_n = sum_{k<n} t_k = 0, 0.5, 2, 4.5 exactly."""
    cell = rnn.ODECell(_clock, {}, 1)
    np.testing.assert_array_equal(cell.times(3, 0.5), [0.5, 1.5, 2.5, 3.5])
    np.testing.assert_array_equal(cell(jnp.zeros(1), 3, t0=0.5)[:, 0], [0.0, 0.5, 2.0, 4.5])


@pytest.mark.parametrize("sigma", [np.float32(0.1), jnp.float32(0.1)])
def test_identifiability_takes_a_float32_noise_level(sigma):
    """A float32 noise_std on a float64 model raised a strict-promotion error. Closed form for
    y' = -k y, y(0) = 1 observed at t_j: S_j = -t_j e^{-k t_j}, one parameter, so
    se = sigma/|S| and the singular value |S| (sigma the float32 value itself, exact in
    float64). The forward sensitivities of a solve at rtol = atol = 1e-12 carry about 1e-12
    relative error (measured 1.6e-12): 1e-9."""
    k, ts = 0.7, np.array([0.5, 1.0, 2.0, 3.0])
    obs = rnn.Observations(ts, np.exp(-k * ts)[:, None])
    cell = rnn.ODECell(_decay, {"k": jnp.asarray(k)}, 0.5, method="rk4")
    model = rnn.diffrax_model(cell, jnp.ones(1), obs, rtol=1e-12, atol=1e-12)
    found = rnn.identifiability(model, noise_std=sigma)
    s = np.linalg.norm(ts * np.exp(-k * ts))
    sigma64 = float(np.asarray(sigma, np.float64))
    assert found.std_errors.dtype == np.float64
    np.testing.assert_allclose(found.std_errors, [sigma64 / s], rtol=1e-9)
    np.testing.assert_allclose(found.singular_values, [s], rtol=1e-9)
    same = rnn.identifiability(model, noise_std=sigma64)
    np.testing.assert_allclose(found.std_errors, same.std_errors, rtol=1e-15)


def test_an_eager_unroll_compiles_once_for_new_step_sizes_and_parameters():
    """`cell(y0, n)` called eagerly ran a `lax.scan` closing over the cell: a new compiled
    program for every new step size or parameter value. Now one program serves them all, and
    each unroll is still its cell's: y_n = R(-k h)^n for RK4 on y' = -k y (R the degree-4
    Taylor polynomial of exp), to a few ulps."""
    y0 = jnp.ones(1)
    rnn.ODECell(_decay, {"k": jnp.asarray(0.7)}, 0.5, method="rk4")(y0, 5)
    for k, h in ((0.8, 0.25), (1.3, 0.1)):
        cell = rnn.ODECell(_decay, {"k": jnp.asarray(k)}, h, method="rk4")
        compiles, ys = count_backend_compiles(cell, y0, 5)
        assert compiles == 0
        z = -k * h
        r = 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24
        np.testing.assert_allclose(ys[:, 0], r ** np.arange(6), rtol=1e-14)
