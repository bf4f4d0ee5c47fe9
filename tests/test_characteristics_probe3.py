"""Session 49's probe of dynopt.characteristics on equations of its own: variable-speed advection,
Burgers with its implicit closed form, u_x u_y = u, the eikonal caustic of an ellipse, the
continuity equation of gradient flow on x^4/4; and the defects found (on_grid's order of sigma
and empty meshes, to_grid's flat scatter, transport_density's t0 and params0)."""

import jax.numpy as jnp
import numpy as np
import pytest

from dynopt import characteristics as ch, flows
from dynopt._problem import Problem

from .helpers import backend_compiles


def _zero(x, u):
    del x
    return jnp.zeros_like(u)


def _speed(x, u):  # u_t + sqrt(1 + x^2) u_x = 0: x = sinh(asinh(sigma) + t)
    del u
    return jnp.stack([jnp.ones_like(x[0]), jnp.sqrt(1.0 + x[1] ** 2)])


def _bump(s):
    return jnp.exp(-(s**2)) * jnp.cos(3.0 * s)


def _initial_bump(s):
    return jnp.stack([jnp.zeros_like(s), s]), _bump(s)


def _advected(t, x):
    foot = np.sinh(np.arcsinh(x) - t)
    return np.exp(-(foot**2)) * np.cos(3.0 * foot)


def _burgers(x, u):
    return jnp.stack([jnp.ones_like(x[0]), u])


def _initial_tanh(s):  # u0 = -tanh(x): the first crossing at t = 1, x = 0 (sigma = 0)
    return jnp.stack([jnp.zeros_like(s), s]), -jnp.tanh(s)


def test_variable_speed_advection_against_its_characteristic_curves():
    """x(t) = sinh(asinh(sigma) + t) and u = u0(sinh(asinh(x) - t)) to the solve's tolerance;
    on_grid within the piecewise-linear bound h^2/8 max|u''| (h = 0.15 in sigma: 0.03 for
    |u''| <= 10)."""
    sigma, s = np.linspace(-3.0, 3.0, 41), np.linspace(0.0, 1.5, 16)
    r = ch.quasilinear(_speed, _zero, _initial_bump, sigma, s)
    t, x, u = (np.asarray(a) for a in (r.x[..., 0], r.x[..., 1], r.u))
    exact_x = np.sinh(np.arcsinh(sigma)[:, None] + s[None, :])
    assert np.max(np.abs(x - exact_x) / (1 + np.abs(exact_x))) < 1e-9
    assert np.max(np.abs(u - _advected(t, x))) < 1e-9
    assert r.blowup.first() is None
    tt, xx = np.meshgrid(np.linspace(0.0, 1.5, 16), np.linspace(-0.3, 0.3, 13), indexing="ij")
    grid = r.on_grid(np.stack([tt, xx], -1))
    assert np.all(np.isfinite(grid))
    assert np.max(np.abs(grid - _advected(tt, xx))) < 0.15**2 / 8 * 10


def test_burgers_implicit_closed_form_and_the_crossing_at_t_1():
    """u = -tanh(x - u t) (solved by Newton) before the shock; the fold 1 + f'(sigma) t = 0 at
    t_c(sigma) = cosh^2(sigma), first at (t, x) = (1, 0); a horizon past it raises, one at it
    does not."""
    sigma = np.linspace(-3.0, 3.0, 61)
    r = ch.quasilinear(_burgers, _zero, _initial_tanh, sigma, np.linspace(0.0, 0.9, 10))
    t, x, u = (np.asarray(a) for a in (r.x[..., 0], r.x[..., 1], r.u))
    w = -np.tanh(x)
    for _ in range(50):
        w -= (w + np.tanh(x - w * t)) / (1 - t / np.cosh(x - w * t) ** 2)
    assert np.max(np.abs(u - w)) < 1e-12
    stop = ch.quasilinear(
        _burgers, _zero, _initial_tanh, sigma, np.linspace(0.0, 1.5, 16), on_blowup="stop"
    )
    kind, s_b = np.asarray(stop.blowup.kind), np.asarray(stop.blowup.s)
    t_c = np.cosh(sigma) ** 2
    assert np.array_equal(kind, np.where(t_c < 1.5, 1, 0))
    assert np.max(np.abs(s_b - t_c)[kind == 1]) < 1e-9
    first = stop.blowup.first()
    assert first["s"] == pytest.approx(1.0, abs=1e-9) and first["x"][1] == pytest.approx(0.0)
    # Past the first crossing no grid value (the fold carries several); before it, the solution.
    assert np.all(np.isnan(stop.on_grid(np.array([[1.2, -0.5], [1.2, 0.5]]))))
    with pytest.raises(ch.BlowUpError, match=r"characteristics cross .* at s=1,"):
        ch.quasilinear(_burgers, _zero, _initial_tanh, sigma, np.linspace(0.0, 1.2, 5))


def _F_product(x, u, p):  # u_x u_y = u
    del x
    return p[0] * p[1] - u


def _initial_product(s):  # u(0, y) = 1.5 (y + 0.5): u = (x + 1.5)(y + 0.5)
    return jnp.stack([jnp.zeros_like(s), s]), 1.5 * (s + 0.5)


def test_charpit_product_equation_against_its_closed_form():
    r = ch.charpit(_F_product, _initial_product, np.linspace(-1.0, 1.0, 21), np.linspace(0, 1, 11))
    x, u, p = np.asarray(r.x), np.asarray(r.u), np.asarray(r.p)
    exact = (x[..., 0] + 1.5) * (x[..., 1] + 0.5)
    assert np.max(np.abs(u - exact) / (1 + np.abs(exact))) < 1e-8
    assert np.max(np.abs(p - np.stack([x[..., 1] + 0.5, x[..., 0] + 1.5], -1))) < 1e-8
    assert np.max(np.abs(np.asarray(r.residual))) < 1e-7


def _F_eikonal(x, u, p):
    del x, u
    return 0.5 * (jnp.dot(p, p) - 1.0)


def _ellipse(s):
    return jnp.stack([2.0 * jnp.cos(s), jnp.sin(s)]), jnp.zeros_like(s)


def _inward(s):
    n = -jnp.stack([jnp.cos(s), 2.0 * jnp.sin(s)])
    return n / jnp.linalg.norm(n)


def test_eikonal_inside_an_ellipse_crosses_at_the_radius_of_curvature():
    """The inward normals of x = (a cos s, b sin s) meet their neighbours on the evolute, at the
    distance rho = (a^2 sin^2 + b^2 cos^2)^{3/2} / (ab); the first caustic at b^2/a = 0.5."""
    sigma = np.linspace(0.0, 2 * np.pi, 73)[:-1]
    r = ch.charpit(
        _F_eikonal, _ellipse, sigma, np.linspace(0.0, 2.5, 26), p_guess=_inward, on_blowup="stop"
    )
    rho = (4.0 * np.sin(sigma) ** 2 + np.cos(sigma) ** 2) ** 1.5 / 2.0
    kind, s_b = np.asarray(r.blowup.kind), np.asarray(r.blowup.s)
    assert np.array_equal(kind, np.where(rho < 2.5, 1, 0))
    assert np.max(np.abs(s_b - rho)[kind == 1]) < 1e-9
    assert r.blowup.first()["s"] == pytest.approx(0.5, abs=1e-9)
    # u is the distance travelled: u = s along every characteristic before its caustic.
    ok = np.asarray(r.valid)
    assert np.max(np.abs(np.asarray(r.u) - np.asarray(r.s)[None, :])[ok]) < 1e-9


def test_continuity_equation_of_gradient_flow_on_a_quartic():
    """x' = -x^3: x = x0 / sqrt(1 + 2 x0^2 t), dx/dx0 = (1 + 2 x0^2 t)^{-3/2}, so
    log rho = log rho0 + (3/2) log(1 + 2 x0^2 t); the mass the samples carry stays
    erf(3/sqrt 2) to the trapezoid's error."""
    problem = Problem(lambda x: jnp.sum(x**4) / 4, jnp.array([0.3]))
    x0 = np.linspace(-3.0, 3.0, 401)
    logp0 = -0.5 * x0**2 - 0.5 * np.log(2 * np.pi)
    ts = np.array([0.0, 0.5, 2.0])
    r = ch.transport_density(flows.GradientFlow(), problem, x0[:, None], logp0, ts)
    for j, t in enumerate(ts):
        y, logp = np.asarray(r.states[:, j, 0]), np.asarray(r.log_density[:, j])
        assert np.max(np.abs(y - x0 / np.sqrt(1 + 2 * x0**2 * t))) < 1e-9
        assert np.max(np.abs(logp - logp0 - 1.5 * np.log1p(2 * x0**2 * t))) < 1e-8
        mass = np.sum(0.5 * (np.exp(logp[1:]) + np.exp(logp[:-1])) * np.diff(y))
        assert mass == pytest.approx(0.9973002039367398, abs=2e-4)


# Defects.


def test_on_grid_joins_characteristics_in_the_order_of_sigma():
    """A shuffled sigma was meshed in the order given: distant characteristics joined, refused
    as a crossing between samples. Sorted, the mesh (and every value) is the sorted solve's."""
    sigma, s = np.linspace(-2.0, 2.0, 21), np.linspace(0.0, 1.0, 6)
    tt, xx = np.meshgrid(np.linspace(0.0, 1.0, 5), np.linspace(-0.5, 0.5, 7), indexing="ij")
    points = np.stack([tt, xx], -1)
    base = ch.quasilinear(_speed, _zero, _initial_bump, sigma, s).on_grid(points)
    for order in (np.random.default_rng(0).permutation(21), np.arange(21)[::-1]):
        r = ch.quasilinear(_speed, _zero, _initial_bump, sigma[order], s)
        np.testing.assert_array_equal(r.on_grid(points), base)


def test_on_grid_needs_a_cell_and_is_nan_where_none_is_valid():
    """One characteristic or one save: no cell (NumPy's 'zero-size array' error before). A
    crossing before the second save leaves no valid cell: every point NaN (the same error)."""
    s = np.linspace(0.0, 1.0, 3)
    for sigma, ss in ((np.array([0.0]), s), (np.linspace(-1.0, 1.0, 5), np.array([0.5]))):
        r = ch.quasilinear(_speed, _zero, _initial_bump, sigma, ss)
        with pytest.raises(ValueError, match="needs at least 2 of each"):
            r.on_grid(np.zeros((2, 2)))

    def steep(q):  # u0 = -tanh(10 x): first crossing at t = 0.1
        return jnp.stack([jnp.zeros_like(q), q]), -jnp.tanh(10.0 * q)

    r = ch.quasilinear(_burgers, _zero, steep, np.linspace(-1, 1, 21), s, on_blowup="stop")
    assert r.blowup.first()["s"] == pytest.approx(0.1, abs=1e-9)
    out = r.on_grid(np.array([[0.0, 0.5], [0.05, 0.0], [0.5, 0.2]]))
    assert out.shape == (3,) and np.all(np.isnan(out))


def test_to_grid_refuses_a_scatter_that_spans_no_cell():
    """Too few or collinear points in 2-D were Qhull's error (not a ValueError), all-NaN ones
    SciPy's 'No points given'; a complex u lost its imaginary part with a warning."""
    line = np.stack([np.arange(5.0), 2 * np.arange(5.0)], -1)
    cases = [
        (line, np.arange(5.0), "span 1 of n=2"),
        (line[:2], np.arange(2.0), "span 1 of n=2"),
        (np.full((4, 2), np.nan), np.arange(4.0), "the 0 points"),
        (np.full((4, 1), np.nan), np.arange(4.0), "the 0 points"),
    ]
    for x, u, match in cases:
        with pytest.raises(ValueError, match=match):
            ch.to_grid(x, u, np.ones((3, x.shape[-1])))
    x = np.random.default_rng(1).uniform(size=(10, 2))
    with pytest.raises(ValueError, match="u must be an array of real numbers"):
        ch.to_grid(x, np.ones(10) + 1j, np.ones((3, 2)))


def test_transport_density_refuses_a_nan_t0_and_non_finite_samples():
    """A NaN t0 passed every horizon check (NaN compares False) and ran; a NaN sample was a
    SolveError after every solve had spent its step budget."""
    problem = Problem(lambda x: jnp.sum(x**4) / 4, jnp.array([0.3]))
    x0, logp0 = np.linspace(-1.0, 1.0, 3)[:, None], np.zeros(3)
    ts = np.array([1.0, 2.0])
    with pytest.raises(ValueError, match="t0 must be finite, got nan"):
        ch.transport_density(flows.GradientFlow(), problem, x0, logp0, ts, t0=np.nan)
    x0[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"params0 must be finite"):
        ch.transport_density(flows.GradientFlow(), problem, x0, logp0, ts)


def test_transport_density_reuses_its_program_for_new_t0_and_tolerances():
    """t0, rtol and atol reached the compiled transport as Python floats, static: each new value
    compiled it again. Now traced (as quasilinear's), with the same results bit for bit."""
    problem = Problem(lambda x: jnp.sum(x**4) / 4, jnp.array([0.3]))
    x0, logp0, ts = np.linspace(-1.0, 1.0, 5)[:, None], np.zeros(5), np.array([1.0, 2.0])

    def transport(**options):
        return ch.transport_density(flows.GradientFlow(), problem, x0, logp0, ts, **options)

    first = transport()
    with backend_compiles() as compiled:
        shifted = transport(t0=0.5)
        loose = transport(rtol=1e-6, atol=1e-8)
    assert compiled == []
    # t0 was used: the quartic's closed form from t0 = 0.5.
    t = ts - 0.5
    exact = x0 / np.sqrt(1 + 2 * x0**2 * t[None, :])
    assert np.max(np.abs(np.asarray(shifted.states[..., 0]) - exact)) < 1e-9
    assert not np.array_equal(np.asarray(loose.states), np.asarray(first.states))
    np.testing.assert_allclose(loose.states, first.states, rtol=1e-5)


def test_reference_arguments_are_named():
    """A string horizon was `float`'s error; a NaN density read as 'no bin expects enough'."""
    with pytest.raises(ValueError, match="horizon must be a real number > 0"):
        ch.burgers_crossing(np.sin, np.cos, np.ones(2), horizon="a")
    with pytest.raises(ValueError, match="horizon must be a scalar"):
        ch.riccati_blowup(np.sin, np.ones(2), horizon=[1.0, 2.0])
    samples = np.random.default_rng(0).uniform(0, 4, 100)
    for bad in (np.nan, -1.0):
        rho = np.array([0.25, bad, 0.25, 0.25, 0.25])
        with pytest.raises(ValueError, match="rho must be finite and >= 0"):
            ch.density_chi2(np.arange(5.0), rho, samples, np.linspace(0, 4, 3))
