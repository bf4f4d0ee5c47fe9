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


def _burgers(x, u):  # u_t + u u_x = 0
    del x
    return jnp.stack([jnp.ones_like(u), u])


def _tanh_front(q):  # u0 = 0.3 - tanh(sigma): the first shock at t = 1, x = 0.3
    return jnp.stack([jnp.zeros_like(q), q]), 0.3 - jnp.tanh(q)


def _steep_front(q):  # u0 = -tanh(10 sigma)
    return jnp.stack([jnp.zeros_like(q), q]), -jnp.tanh(10.0 * q)


def test_grid_values_past_a_shock_are_nan_and_before_it_the_solution():
    """Burgers past its first shock (`on_blowup="stop"`): the characteristics that have not
    crossed yet overlap, so the mesh folds. `on_grid` interpolated all of it (matplotlib's
    "Triangulation is invalid"); now it interpolates the saves up to the first crossing, which
    give the classical solution u = f(x - u t) there, and NaN after."""
    r = ch.quasilinear(
        _burgers, _zero, _tanh_front, np.linspace(-3.0, 3.0, 61), np.linspace(0.0, 1.5, 7),
        on_blowup="stop",
    )  # fmt: skip
    assert r.blowup.first()["s"] == pytest.approx(1.0, abs=1e-9)
    t = 0.5  # a saved s: the interpolation runs along the save line, between characteristics
    xs = np.linspace(-2.0, 2.0, 41)
    u = 0.3 - np.tanh(xs)
    for _ in range(100):  # Newton on u - f(x - u t) = 0 (1 + f' t >= 1/2 > 0 for t <= 1/2)
        y = xs - u * t
        u = u - (u - (0.3 - np.tanh(y))) / (1.0 - t / np.cosh(y) ** 2)
    grid = r.on_grid(np.stack([np.full_like(xs, t), xs], -1))
    # Linear interpolation between characteristics dx = 0.1 |1 + f' t| <= 0.1 apart: error
    # <= dx^2/8 max|u_xx|, u_xx = f''/(1 + f' t)^3, |f''| <= 4/(3 sqrt 3), 1 + f' t >= 1/2.
    bound = 0.1**2 / 8 * (4 / (3 * np.sqrt(3))) * 2**3
    assert np.max(np.abs(grid - u)) < bound
    late = r.on_grid(np.stack([np.full_like(xs, 1.25), xs], -1))
    assert np.all(np.isnan(late))


def test_grid_of_characteristics_crossing_between_samples_is_an_error():
    """Neighbouring samples sigma = +-0.25 of u0 = -tanh(10 sigma) meet at t = 0.25/tanh(2.5)
    while neither reaches its own crossing (t = 1/(10 sech^2 2.5) = 3.8) before s = 1: the mesh
    overlaps with no blow-up reported. A ValueError that says so, not matplotlib's RuntimeError."""
    r = ch.quasilinear(
        _burgers, _zero, _steep_front, np.linspace(-1.75, 1.75, 8), np.linspace(0.0, 1.0, 5),
        on_blowup="stop",
    )  # fmt: skip
    assert r.blowup.first() is None
    with pytest.raises(ValueError, match="overlaps itself"):
        r.on_grid(np.array([[0.1, 0.0]]))


def _fast_transport(x, u):  # u_t + (1 + x^2) u_x = 0: x = tan(t + arctan sigma)
    del u
    return jnp.stack([jnp.ones_like(x[1]), 1.0 + x[1] ** 2])


def _sine(q):
    return jnp.stack([jnp.zeros_like(q), q]), jnp.sin(3.0 * q)


def test_a_characteristic_escaping_to_infinity_is_a_blowup():
    """The characteristic from sigma leaves to infinity at t* = pi/2 - arctan(sigma): with
    `on_blowup="stop"` it stops there (kind 3, t* to 1e-6) and the others, and the solution
    before, are as they were (u(t, x) = sin(3 tan(arctan x - t))); with "raise" a BlowUpError
    gives the time. (The solver shrank its steps onto the pole until max_steps: a SolveError
    telling to raise max_steps.)"""
    sig = np.linspace(-1.0, 1.0, 9)
    r = ch.quasilinear(
        _fast_transport, _zero, _sine, sig, np.linspace(0.0, 1.2, 7), on_blowup="stop"
    )
    t_star = np.pi / 2 - np.arctan(sig)
    hit = t_star < 1.2
    b = r.blowup
    assert np.array_equal(np.asarray(b.kind), np.where(hit, 3, 0))
    # s* from |x| = u_max = 1e8 by one Newton step on 1/|x|: error O(u_max^-2), far below
    # the solve's rtol 1e-10.
    assert np.max(np.abs(np.asarray(b.s)[hit] - t_star[hit])) < 1e-6
    assert np.all(np.abs(np.asarray(b.x)[hit, 1]) >= 1e8 * (1 - 1e-6))
    assert b.first()["kind"].startswith("the characteristic escapes")
    t, x, u = (np.asarray(a) for a in (r.x[..., 0], r.x[..., 1], r.u))
    ok = np.isfinite(u)
    assert ok.sum() > 40
    # |du/dx| = 3|cos(3 sigma)|(1 + sigma^2)/(1 + x^2) <= 6: x's error (rtol 1e-10 relative)
    # barely moves the closed form.
    exact = np.sin(3.0 * np.tan(np.arctan(x[ok]) - t[ok]))
    assert np.max(np.abs(u[ok] - exact)) < 1e-8
    assert np.all(np.isnan(x[~ok]))
    with pytest.raises(ch.BlowUpError, match=r"escapes to infinity .* at s=0\.785398"):
        ch.quasilinear(_fast_transport, _zero, _sine, sig, np.linspace(0.0, 1.2, 7))
