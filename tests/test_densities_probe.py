"""dynopt.densities, second probe: float32 grids and steps (uniform to their own precision),
tolerances that are not tolerances, and checks that must survive `jit`/`vmap` (a discarded check
let a negative volatility price a negative call)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from dynopt import densities as D


OU = D.linear_sde(-1.0, 0.5)


def _ou_start(grid, t0=0.1):
    g = np.asarray(grid, dtype=np.float64)
    p = np.asarray(D.linear_density(g, t0, 0.2, rate=-1.0, alpha=0.5))
    return p / (p.sum() * (g[1] - g[0]))


def test_float32_grid_is_uniform_to_its_precision():
    """np.linspace(-3, 3, 101) cast to float32 has spacings that differ by 6e-6 of h (each point
    rounded to float32): it was refused as 'not uniform'. Its density agrees with the float64
    grid's to the grid's float32 rounding (3e-7 of the points; the solution moves by that times
    its slope, ~1e-6 of the peak)."""
    g64 = np.linspace(-3.0, 3.0, 101)
    g32 = g64.astype(np.float32)
    init = _ou_start(g64)
    r32 = D.fokker_planck(OU, init, g32, 0.1, 0.8)
    r64 = D.fokker_planck(OU, init, g64, 0.1, 0.8)
    np.testing.assert_allclose(r32.density, r64.density, rtol=0, atol=1e-5)
    pi = D.path_integral(OU, 0.2, 0.8, g32, 8)
    exact = scipy.stats.norm.pdf(g64, 0.2 * np.exp(-0.8), np.sqrt(0.25 * (1 - np.exp(-1.6))))
    assert np.max(np.abs(np.asarray(pi.density) - exact)) < 1e-3  # O(eps^2) at 8 slices
    stat = D.stationary_density(OU, g32)
    np.testing.assert_allclose(stat, scipy.stats.norm.pdf(g64, 0.0, 0.5), atol=1e-5)
    e32 = np.linspace(-2.0, 2.0, 11).astype(np.float32)
    hist = D.histogram_density_nd(np.zeros((4, 2)), (e32, e32), 1.0)
    assert float(hist.mass) == 1.0
    # The bins are the float32 edges as given: widths 0.4 to float32 rounding (1.2e-7).
    probs = D.bin_probabilities(lambda x: jnp.ones(()), (e32, e32))
    np.testing.assert_allclose(probs, 0.16, rtol=5e-7)
    # Large offsets in float64 too: spacings of linspace(1e6 - 3, 1e6 + 3, 101) vary by 4e-9 of
    # h (ulp(1e6) = 1.2e-10), beyond the 1e-9 allowed before. OU about 1e6: N(1e6, alpha/2).
    far = np.linspace(1e6 - 3.0, 1e6 + 3.0, 101)
    shifted = D.ScalarSDE(D.Polynomial([1e6, -1.0]), 0.5)
    np.testing.assert_allclose(
        D.stationary_density(shifted, far), scipy.stats.norm.pdf(far, 1e6, 0.5), atol=1e-5
    )
    # A grid that is not uniform is still refused.
    with pytest.raises(ValueError, match="grid must be uniform"):
        D.stationary_density(OU, np.r_[np.linspace(-3.0, 0.0, 50), np.linspace(0.07, 3.0, 51)])


def test_float32_step_of_the_walk():
    """dt = np.float32(0.01) is 0.01 (1 - 2.2e-8): t1/dt = 100 to float32's precision, refused as
    'not an integer'. The walk's density agrees with dt = 0.01's to that relative 2e-8."""
    r32 = D.random_walk(OU, 0.2, 1.0, np.float32(0.01), (-3.0, 3.0))
    r64 = D.random_walk(OU, 0.2, 1.0, 0.01, (-3.0, 3.0))
    np.testing.assert_allclose(r32.density, r64.density, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="t1/dt must be a positive integer"):
        D.random_walk(OU, 0.2, 1.0, 0.3, (-3.0, 3.0))


@pytest.mark.parametrize("tol", [-1.0, float("nan")])
def test_tolerances_are_checked(tol):
    """A negative or NaN mass_tol refused every result as 'the grid does not cover the mass' (or
    'initial mass not 1 within mass_tol=-1'): it is named, with its range."""
    g = np.linspace(-3.0, 3.0, 41)
    match = r"mass_tol must be >= 0 and finite"
    with pytest.raises(ValueError, match=match):
        D.fokker_planck(OU, _ou_start(g), g, 0.1, 0.5, mass_tol=tol)
    with pytest.raises(ValueError, match=match):
        D.path_integral(OU, 0.2, 0.5, g, 4, mass_tol=tol)
    with pytest.raises(ValueError, match=match):
        D.random_walk(OU, 0.2, 0.5, 0.05, (-3.0, 3.0), mass_tol=tol)
    with pytest.raises(ValueError, match=r"edge_tol must be >= 0 and finite"):
        D.stationary_density(OU, g, edge_tol=tol)
    with pytest.raises(ValueError, match=r"edge_tol must be >= 0 and finite"):
        D.stationary_density_nd(D.linear_vector_sde(-jnp.eye(2), 0.5), (g, g), edge_tol=tol)
    with pytest.raises(ValueError, match=r"curl_tol must be >= 0 and finite"):
        D.stationary_density_nd(D.linear_vector_sde(-jnp.eye(2), 0.5), (g, g), curl_tol=tol)


def test_linear_density_checks_rate_and_start():
    """A NaN rate or start gave a NaN density (an infinite start: 0) without a word."""
    with pytest.raises(ValueError, match="rate must be finite"):
        D.linear_density(0.0, 1.0, 0.0, rate=float("nan"), alpha=0.5)
    with pytest.raises(ValueError, match="x0 must be finite"):
        D.linear_cdf(0.0, 1.0, float("inf"), rate=-1.0, alpha=0.5)
    with pytest.raises(ValueError, match="rate must be finite"):
        D.linear_sde(float("nan"), 0.5)
    with pytest.raises(ValueError, match="x0 must be finite"):
        D.linear_moments(-jnp.eye(2), 1.0, jnp.array([jnp.nan, 0.0]), alpha=0.5)
    with pytest.raises(ValueError, match="T must be > 0"):
        D.mehler_kernel(0.1, 0.2, -1.0, 0.5)  # was NaN: sqrt(sinh(T) < 0)
    with pytest.raises(ValueError, match="mu must be finite"):
        D.lognormal_density(1.0, 0.5, 1.0, mu=float("nan"), sigma=0.3)
    with pytest.raises(ValueError, match="rate must be finite"):
        D.black_scholes_call(100.0, 95.0, float("nan"), 0.2, 1.0)


_UNDER_JIT = [
    ("black_scholes_call", lambda v: D.black_scholes_call(100.0, 95.0, 0.05, v, 1.0), -0.2),
    ("black_scholes_call", lambda v: D.black_scholes_call(100.0, 95.0, 0.05, 0.2, v), -1.0),
    ("black_scholes_call", lambda v: D.black_scholes_call(100.0, v, 0.05, 0.2, 1.0), -95.0),
    ("lognormal_density", lambda v: D.lognormal_density(1.0, 0.5, 1.0, mu=0.1, sigma=v), -0.3),
    ("lognormal_density", lambda v: D.lognormal_density(1.0, v, 1.0, mu=0.1, sigma=0.3), -0.5),
    ("lognormal_density", lambda v: D.lognormal_density(1.0, 0.5, v, mu=0.1, sigma=0.3), -1.0),
    ("linear_moments", lambda v: D.linear_moments(-jnp.eye(2), 1.0, jnp.zeros(2), alpha=v), -0.5),
    ("linear_moments", lambda v: D.linear_moments(-jnp.eye(2), v, jnp.zeros(2), alpha=0.5), -0.5),
    ("linear_density", lambda v: D.linear_density(0.0, 1.0, 0.0, rate=v, alpha=0.5), jnp.nan),
    ("mehler_kernel", lambda v: D.mehler_kernel(0.1, 0.2, 0.5, v), -1.0),
    ("mehler_kernel", lambda v: D.mehler_kernel(0.1, 0.2, v, 1.0), -1.0),
]


@pytest.mark.parametrize("name, fn, bad", _UNDER_JIT)
def test_checks_hold_under_jit(name, fn, bad):
    """Traced arguments were checked and the check's returned value discarded: under jit a
    negative sigma priced the call at -3.71 and gave a log-normal density of 1.86, a negative
    alpha a negative covariance. Each now carries its check into the program."""
    del name
    good = {-0.2: 0.2, -1.0: 1.0, -95.0: 95.0, -0.3: 0.3, -0.5: 0.5}.get(bad, -1.0)
    jitted = eqx.filter_jit(fn)
    assert np.all(np.isfinite(jax_leaves(jitted(jnp.asarray(good)))))
    with pytest.raises(Exception, match="must be"):
        jitted(jnp.asarray(bad))


def jax_leaves(tree):
    return np.concatenate([np.ravel(np.asarray(v)) for v in jax.tree.leaves(tree)])


def test_discounted_payoff_checks_its_terms():
    # As black_scholes_call: a negative strike or T, a NaN rate priced without a word.
    s = jnp.array([0.5, 1.0, 1.5])
    np.testing.assert_allclose(
        D.discounted_payoff(s, 1.0, 0.05, 2.0), np.exp(-0.1) * np.array([0.0, 0.0, 0.5]), rtol=1e-15
    )
    for kw, name in (
        ({"strike": -1.0}, "strike"),
        ({"rate": float("nan")}, "rate"),
        ({"T": 0.0}, "T"),
    ):
        args = {"strike": 1.0, "rate": 0.05, "T": 2.0, **kw}
        with pytest.raises(ValueError, match=name):
            D.discounted_payoff(s, **args)


@pytest.mark.parametrize("eps", [0.0, -0.1, float("nan")])
def test_short_time_propagator_refuses_a_slice_length_not_positive(eps):
    """Before: eps <= 0 or NaN returned NaN (the Gaussian's variance alpha*eps <= 0)."""
    sde = D.linear_sde(1.0, 0.5)
    with pytest.raises(ValueError, match="eps must be > 0"):
        D.short_time_propagator(sde, 0.1, 0.0, 0.0, eps)
    with pytest.raises(ValueError, match="eps must be > 0"):
        D.short_time_propagator_nd(
            D.as_vector_sde(sde), jnp.array([0.1]), jnp.array([0.0]), 0.0, eps
        )
    with pytest.raises(Exception, match="eps must be > 0"):  # traced: eqx.error_if
        jax.jit(lambda e: D.short_time_propagator(sde, 0.1, 0.0, 0.0, e))(eps)


def test_short_time_propagator_refuses_points_of_different_shapes_and_a_non_bool_jacobian():
    """Before: x_new of shape (2,) against x_old of shape (1,) broadcast into a number, and
    jacobian="no" read as True."""
    sde = D.as_vector_sde(D.linear_sde(1.0, 0.5))
    with pytest.raises(ValueError, match="x_new and x_old"):
        D.short_time_propagator_nd(sde, jnp.array([0.1, 0.2]), jnp.array([0.0]), 0.0, 0.1)
    with pytest.raises(ValueError, match="jacobian must be True or False"):
        D.short_time_propagator_nd(sde, jnp.array([0.1]), jnp.array([0.0]), 0.0, 0.1, jacobian="no")


def test_short_time_propagator_valid_calls_unchanged():
    """The Itô kernel without Jacobian is the Gaussian N(x_old + eps*p(x_old), alpha*eps)."""
    sde = D.linear_sde(-1.0, 0.5)  # p(x) = -x
    eps, xo, xn = 0.1, 0.3, 0.2
    mean, var = xo - eps * xo, 0.5 * eps
    want = np.exp(-((xn - mean) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var)
    got = D.short_time_propagator(sde, xn, xo, 0.0, eps, "ito", False)
    np.testing.assert_allclose(float(got), want, rtol=1e-13)


def test_ito_lemma_and_antiderivative_refuse_a_non_callable():
    """Before: a number in place of a function raised a TypeError ('int' object is not
    callable, or JAX's 'Expected a callable value')."""
    fn = lambda t, x: x
    for args, name in (((3, fn, fn), "f"), ((fn, 3, fn), "drift"), ((fn, fn, 3), "diffusion")):
        with pytest.raises(ValueError, match=f"{name} must be callable"):
            D.ito_lemma(*args, 0.0, jnp.array(1.0))
    with pytest.raises(ValueError, match="f must be callable"):
        D.antiderivative(3, 1.0)


def test_histogram_density_refuses_nan_samples_and_a_nan_time():
    """Before: a NaN sample fell in no bin and counted as lost mass (mass 0.5 for [nan, 0.1]),
    silently; t = NaN labelled the density with no time."""
    edges = jnp.linspace(-1.0, 1.0, 5)
    with pytest.raises(ValueError, match="samples must be"):
        D.histogram_density(jnp.array([jnp.nan, 0.1]), edges, 0.5)
    with pytest.raises(ValueError, match="t must be finite"):
        D.histogram_density(jnp.array([0.1, 0.2]), edges, float("nan"))
    with pytest.raises(ValueError, match="samples must"):
        D.histogram_density_nd(jnp.array([[jnp.nan, 0.1]]), (edges, edges), 0.5)
    with pytest.raises(ValueError, match="t must be finite"):
        D.histogram_density_nd(jnp.array([[0.1, 0.1]]), (edges, edges), float("nan"))
    dens = D.histogram_density(jnp.array([jnp.inf, 0.1]), edges, 0.5)  # inf: outside, lost
    assert float(dens.lost_mass) == 0.5
