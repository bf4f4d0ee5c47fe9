"""Closed forms the experiments read from the library: the noisy quadratic's stationary laws,
Gibbs bin probabilities, the Eyring–Kramers prefactor, RMSprop's period-2 orbit."""

import numpy as np
import pytest
import scipy.stats

from dynopt import maps, sde


def test_noisy_quadratic_has_the_stated_noise_and_the_2_over_2_minus_eta_lambda_ratio():
    lam, sigma, eta = 2.0, 0.7, 0.3
    problem = sde.noisy_quadratic(64, lam, sigma, seed=3)
    x = np.asarray(problem.data)[:, 0]
    assert abs(x.mean()) < 1e-14 and np.isclose(x.std(), sigma, rtol=1e-14)
    model = sde.SGDNoise(eta, 4)
    var_sgd = float(sde.quadratic_stationary_covariance(model, problem, step=eta)[0, 0])
    var_sde = float(sde.quadratic_stationary_covariance(model, problem)[0, 0])
    c = (64 - 4) / (64 - 1)  # sampling without replacement
    assert np.isclose(var_sde, eta * c * sigma**2 / (2 * 4 * lam), rtol=1e-12)
    assert np.isclose(var_sgd / var_sde, 2 / (2 - eta * lam), rtol=1e-12)
    with pytest.raises(ValueError, match="n must be >= 2"):
        sde.noisy_quadratic(1, lam, sigma, seed=0)


def test_gibbs_bins_of_a_quadratic_are_gaussian_bins():
    edges = np.concatenate([[-np.inf], np.linspace(-2.0, 2.0, 9), [np.inf]])
    temp = 0.5  # exp(-x²/(2T)): a normal law of variance T
    probs = sde.gibbs_bin_probabilities(lambda x: 0.5 * x * x, temp, edges, support=(-8.0, 8.0))
    exact = np.diff(scipy.stats.norm.cdf(edges, scale=np.sqrt(temp)))
    assert np.isclose(probs.sum(), 1.0, rtol=1e-14)
    np.testing.assert_allclose(probs, exact, atol=1e-9)  # trapezoid error O(Δx²) = O(1e-8)·f''
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sde.gibbs_bin_probabilities(np.abs, 0.0, edges)


def test_eyring_kramers_prefactor_of_the_double_well():
    # (x² - 1)²: L''(±1) = 8, L''(0) = -4.
    assert sde.eyring_kramers_prefactor(8.0, -4.0) == pytest.approx(2 * np.pi / np.sqrt(32.0))


def test_rmsprop_orbit_distance_and_crossover():
    lams = np.array([1.0, 10.0])
    gamma = 0.01
    assert np.isclose(maps.rmsprop_orbit_distance(gamma, 0.0, lams), gamma / np.sqrt(2))
    eps_star = maps.rmsprop_crossover_eps(gamma, lams)  # coordinate i stops above its ε*
    between, above = 10 * eps_star[0], 2 * eps_star[1]
    only_second = np.sqrt((gamma / 2) ** 2 - between / lams[1] ** 2)
    distance = maps.rmsprop_orbit_distance(gamma, np.array([between, above]), lams)
    np.testing.assert_allclose(distance, [only_second, 0.0], rtol=1e-14)


def test_noisy_quadratic_bad_arguments_are_value_errors_naming_them():
    """n = 2.5 was a TypeError from NumPy; a NaN lam or sigma gave a NaN problem."""
    with pytest.raises(ValueError, match="n must be a positive integer"):
        sde.noisy_quadratic(2.5, 1.0, 1.0, seed=0)
    with pytest.raises(ValueError, match="lam must be finite"):
        sde.noisy_quadratic(8, float("nan"), 1.0, seed=0)
    with pytest.raises(ValueError, match="sigma must be >= 0 and finite"):
        sde.noisy_quadratic(8, 1.0, float("inf"), seed=0)
