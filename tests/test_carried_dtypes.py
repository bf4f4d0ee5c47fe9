"""Mixed precisions in the GBM model, Black–Scholes and Fokker–Planck (strict promotion, x64):
a float32 input is a value like any other, priced and evolved in float64 exactly as the float64
number it equals."""

import jax.numpy as jnp
import numpy as np
import pytest

from dynopt import densities


SIGMA32 = np.float32(0.3)  # 0.30000001192092896 in float64
SIGMA = float(SIGMA32)


@pytest.mark.parametrize("as32", [np.float32, jnp.float32])
def test_log_sde_of_a_float32_gbm_is_the_float64_model_of_its_values(as32):
    for mu, mu64 in ((as32(0.05), float(np.float32(0.05))), (0.05, 0.05)):
        sde = densities.GBM(mu=mu, sigma=as32(SIGMA32)).log_sde()
        exact = densities.GBM(mu=mu64, sigma=SIGMA).log_sde()
        assert sde.alpha.dtype == jnp.float64
        assert float(sde.alpha) == SIGMA**2
        np.testing.assert_array_equal(sde.drift_fn.coeffs, exact.drift_fn.coeffs)


@pytest.mark.parametrize("as32", [np.float32, jnp.float32])
@pytest.mark.parametrize("which", range(5))
def test_black_scholes_takes_a_float32_argument_as_its_float64_value(as32, which):
    args = [100.0, 95.0, 0.01, SIGMA, 2.0]
    exact = densities.black_scholes_call(*args)
    args[which] = as32(np.float32(args[which]))
    args64 = [float(a) for a in args]
    price = densities.black_scholes_call(*args)
    assert price.dtype == jnp.float64
    assert float(price) == float(densities.black_scholes_call(*args64))
    np.testing.assert_allclose(price, exact, rtol=1e-6)  # the float32 rounding of one input


def test_lognormal_density_and_payoff_of_float32_inputs_are_those_of_their_values():
    s = jnp.linspace(50.0, 150.0, 9)
    got = densities.lognormal_density(s, 1.0, 100.0, mu=0.05, sigma=SIGMA32)
    # sigma^2 was formed in float32 (1.1e-7 relative off the float64 density of the same sigma).
    np.testing.assert_array_equal(
        got, densities.lognormal_density(s, 1.0, 100.0, mu=0.05, sigma=SIGMA)
    )
    s32 = s.astype(jnp.float32)
    pay = densities.discounted_payoff(s32, 100.0, 0.01, jnp.float32(1.0))
    assert pay.dtype == jnp.float64
    np.testing.assert_array_equal(pay, densities.discounted_payoff(s, 100.0, 0.01, 1.0))


def test_fokker_planck_with_a_float32_alpha_is_the_float64_solve_of_its_value():
    grid = jnp.linspace(-4.0, 4.0, 41)
    p0 = jnp.exp(-(grid**2)) / jnp.sqrt(jnp.pi)
    p0 = p0 / (jnp.sum(p0) * (grid[1] - grid[0]))
    drift = densities.Polynomial(jnp.array([0.0, -1.0]))
    alpha32 = jnp.float32(0.7)
    got = densities.fokker_planck(densities.ScalarSDE(drift, alpha32), p0, grid, 0.0, 0.3)
    ref = densities.fokker_planck(densities.ScalarSDE(drift, float(alpha32)), p0, grid, 0.0, 0.3)
    np.testing.assert_array_equal(got.density, ref.density)
