"""dynopt.characteristics, second probe: initial data that are not finite, the reference
functions' horizon and ordering, and the Hutchinson probe count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynopt import characteristics as ch, flows, problems


SS = np.array([0.0, 0.5])
SIG = np.linspace(-2.0, 2.0, 5)


def _transport(x, u):  # u_t + 0.5 u_x = 0
    del x, u
    return jnp.array([1.0, 0.5])


def _zero(x, u):
    del x
    return 0.0 * u


def _log_start(q):  # log(sigma): -inf at 0, NaN below
    return jnp.stack([jnp.zeros_like(q), q]), jnp.log(q)


def test_nonfinite_initial_data_are_named():
    """u0 = log(sigma) on sigma <= 0 failed the solve as a linear solver's 'nonfinite_input'
    (quasilinear) or read as 'no initial p0' (charpit): the initial data are named, with the
    first sigma where they are not finite."""
    with pytest.raises(ValueError, match=r"initial\(sigma\) is not finite at sigma=-2.0 \(3 of 5"):
        ch.quasilinear(_transport, _zero, _log_start, SIG, SS)
    eikonal = lambda x, u, p: 0.5 * (jnp.dot(p, p) - 1.0)
    with pytest.raises(ValueError, match=r"initial\(sigma\) is not finite at sigma=-2.0"):
        ch.charpit(eikonal, _log_start, SIG, SS, p_guess=jnp.array([1.0, 0.0]))
    # Where they are finite the solve runs, and transports log(sigma) exactly.
    sig = np.linspace(0.5, 2.0, 4)
    r = ch.quasilinear(_transport, _zero, _log_start, sig, SS)
    x = np.asarray(r.x)
    np.testing.assert_allclose(r.u, np.log(x[..., 1] - 0.5 * x[..., 0]), rtol=0, atol=1e-12)


def test_reference_horizon_and_order():
    """horizon = 0 divided by zero; a negative horizon counted every blow-up as inside it
    (1/g > 1/horizon < 0). density_chi2 with decreasing endpoints failed on an empty bin
    selection ('zero-size array'): both are named."""
    f = lambda y: 1.0 / (1.0 + y**2)
    for h in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="horizon must be > 0"):
            ch.riccati_blowup(f, np.array([0.0]), h)
        with pytest.raises(ValueError, match="horizon must be > 0"):
            ch.burgers_crossing(lambda y: -np.tanh(y), lambda y: -1 / np.cosh(y) ** 2, [0.0], h)
    t_star, _ = ch.riccati_blowup(f, np.array([0.0, 3.0]), 2.0)
    np.testing.assert_array_equal(t_star, [1.0, np.inf])  # t* = 1 + sigma^2 < 2 for sigma = 0
    x = np.linspace(-3.0, 3.0, 61)
    rho = np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi)
    samples = np.random.default_rng(0).normal(size=2000)
    edges = np.linspace(-3.0, 3.0, 13)
    with pytest.raises(ValueError, match="x must be increasing"):
        ch.density_chi2(x[::-1], rho[::-1], samples, edges)
    chi2, _, mass, _ = ch.density_chi2(x, rho, samples, edges)
    assert abs(mass - 0.9973) < 1e-3  # P(|z| < 3), trapezoid on h = 0.1
    assert chi2 < 1 + 5 * np.sqrt(2 / 12)


def test_num_probes_is_an_integer():
    """num_probes=2.5 ran with int(2.5) = 2 probes, silently."""
    prob = problems.quadratic(jnp.array([0.5, 2.0]))
    x0 = jnp.ones((2, 2))
    for bad in (2.5, 0, True):
        with pytest.raises(ValueError, match="num_probes must be a positive integer"):
            ch.transport_density(
                flows.GradientFlow(),
                prob,
                x0,
                jnp.zeros(2),
                [0.5],
                trace="hutchinson",
                key=jax.random.key(0),
                num_probes=bad,
            )


def test_density_chi2_refuses_mass_left_outside_0_1_and_min_expected_not_positive():
    """Before: mass_left = 2 returned mass 3.0 and a chi^2 as if valid, min_expected = -1 (or 0)
    kept bins with no expected count (0/0 where a bin's probability is 0), and a sample too
    small for every bin failed in numpy ('zero-size array to reduction operation')."""
    x = np.linspace(-3.0, 3.0, 61)
    rho = np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi)
    samples = np.random.default_rng(0).normal(size=200)
    edges = np.linspace(-3.0, 3.0, 13)
    for m in (2.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="mass_left must be in"):
            ch.density_chi2(x, rho, samples, edges, mass_left=m)
    for e in (-1.0, 0.0):
        with pytest.raises(ValueError, match="min_expected must be > 0"):
            ch.density_chi2(x, rho, samples, edges, min_expected=e)
    with pytest.raises(ValueError, match="no bin expects"):
        ch.density_chi2(x, rho, samples[:3], edges)


def test_reference_solutions_refuse_a_profile_that_is_not_callable():
    """Before: f=3 raised "'int' object is not callable" (a TypeError) in each of them."""
    sig = np.array([0.0, 1.0])
    with pytest.raises(ValueError, match="f must be callable"):
        ch.riccati_solution(3, 0.5, sig)
    with pytest.raises(ValueError, match="f must be callable"):
        ch.riccati_blowup(3, sig)
    with pytest.raises(ValueError, match="f_prime must be callable"):
        ch.burgers_crossing(np.tanh, 3, sig)
