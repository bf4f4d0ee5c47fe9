"""dynopt.characteristics against closed forms: post 6's examples, Burgers, the eikonal equation, a
shared-operator system, and density transport under gradient flow on a quadratic."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.special

from dynopt import characteristics as ch, flows, problems
from dynopt._characteristics import integrate
from dynopt._characteristics.integrate import _integrate

from .helpers import assert_programs_cacheable, backend_compiles, count_backend_compiles


# Module-level PDEs: a solve of the same PDE with the same shapes reuses the compiled solver.
def _alpha1(x, u):  # u_t + x u_x = u^2 (post 6, eq. 8), x = (t, x)
    del u
    return jnp.stack([jnp.ones_like(x[0]), x[1]])


def _beta1(x, u):
    del x
    return u**2


def _initial1(s):
    return jnp.stack([jnp.zeros_like(s), s]), jnp.sin(s)


def _F_heat(x, u, p):  # u_t = u_x^2 (eq. 19)
    del x, u
    return p[0] - p[1] ** 2


def _initial_heat(s):
    return jnp.stack([jnp.zeros_like(s), s]), s**2


SIG1 = jnp.linspace(-3.0, 3.0, 25)


def test_quasilinear_closed_form_blowup_and_grid():
    """Eq. 12 before blow-up; blow-up at t = 1/f(sigma) (where t f(x e^-t) = 1) to 1e-6."""
    r = ch.quasilinear(
        _alpha1, _beta1, _initial1, SIG1, jnp.linspace(0.0, 1.5, 16), on_blowup="stop"
    )
    f = np.sin(np.asarray(SIG1))
    t_star = np.where(f > 0, 1.0 / np.where(f > 0, f, 1.0), np.inf)
    hit = t_star < 1.5
    b = r.blowup
    assert np.array_equal(np.asarray(b.kind), np.where(hit, 2, 0))
    assert np.max(np.abs(np.asarray(b.s)[hit] - t_star[hit])) < 1e-6
    # The place: the characteristic x = sigma e^t at t*.
    x_star = np.asarray(SIG1)[hit] * np.exp(t_star[hit])
    assert np.max(np.abs(np.asarray(b.x)[hit, 1] - x_star) / np.abs(x_star)) < 1e-6
    assert np.all(np.isinf(np.asarray(b.s)[~hit]))
    first = b.first()
    assert first["count"] == int(hit.sum()) and first["s"] == pytest.approx(t_star.min(), abs=1e-6)
    # The surface against eq. 12 where |u| is moderate (the closed form evaluated at a computed x
    # amplifies the x error by |du/dx| ~ u^2 near the pole).
    t, x, u = (np.asarray(a) for a in (r.x[..., 0], r.x[..., 1], r.u))
    fx = np.sin(x * np.exp(-t))
    exact = fx / (1.0 - t * fx)
    ok = np.isfinite(u) & (np.abs(u) < 100.0)
    assert ok.sum() > 0.8 * u.size
    assert np.max(np.abs(u - exact)[ok] / (1.0 + np.abs(exact[ok]))) < 1e-8
    assert np.all(np.isnan(u[~np.asarray(r.valid)]))
    # Scattered points onto a grid: piecewise-linear interpolation error O(h^2).
    tt, xx = np.meshgrid(np.linspace(0.0, 0.5, 11), np.linspace(-1.0, 1.0, 21), indexing="ij")
    grid = r.on_grid(np.stack([tt, xx], -1))
    fg = np.sin(xx * np.exp(-tt))
    assert np.nanmax(np.abs(grid - fg / (1 - tt * fg))) < 2e-2
    assert np.all(np.isfinite(grid))
    # A horizon past the first blow-up is an error that gives its time and place.
    with pytest.raises(ch.BlowUpError, match=r"u diverges at s=1\.00") as info:
        ch.quasilinear(_alpha1, _beta1, _initial1, SIG1, jnp.linspace(0.0, 1.5, 16))
    assert info.value.blowup.first()["index"] == first["index"]


def test_charpit_reduces_to_quasilinear():
    """F = alpha . p - beta in the Charpit system gives the quasilinear characteristics (eq. 27)."""
    ss = jnp.linspace(0.0, 0.95, 16)
    q = ch.quasilinear(_alpha1, _beta1, _initial1, SIG1, ss)
    c = ch.charpit(lambda x, u, p: jnp.dot(_alpha1(x, u), p) - _beta1(x, u), _initial1, SIG1, ss)
    assert np.max(np.abs(np.asarray(c.x - q.x))) < 1e-8
    assert np.max(np.abs(np.asarray(c.u - q.u)) / (1 + np.abs(np.asarray(q.u)))) < 1e-8
    # F = 0 kept to the solver's relative tolerance of its terms p_t, x p_x and u^2.
    p, x, u = np.asarray(c.p), np.asarray(c.x), np.asarray(c.u)
    scale = 1.0 + np.abs(p[..., 0]) + np.abs(x[..., 1] * p[..., 1]) + u**2
    assert np.max(np.abs(np.asarray(c.residual)) / scale) < 1e-10
    # p_x = u_x of eq. 12 at t = 0 is f'(sigma); p_t = -x u_x + u^2 from the PDE.
    assert np.allclose(np.asarray(c.p[:, 0, 1]), np.cos(np.asarray(SIG1)), atol=1e-12)


def test_charpit_ut_equals_ux_squared():
    """u_t = u_x^2, u(x,0) = x^2: u = x^2/(1-4t) (eq. 26), characteristics meet at t = 1/4."""
    sig = jnp.linspace(-1.0, 1.0, 11)
    r = ch.charpit(_F_heat, _initial_heat, sig, jnp.linspace(0.0, 0.3, 16), on_blowup="stop")
    t, x, u = (np.asarray(a) for a in (r.x[..., 0], r.x[..., 1], r.u))
    ok = np.isfinite(u)
    assert np.max(np.abs(u - x**2 / (1 - 4 * t))[ok]) < 1e-10
    assert np.max(np.abs(np.asarray(r.p[..., 1]) - 2 * x / (1 - 4 * t))[ok]) < 1e-9
    assert np.nanmax(np.abs(np.asarray(r.residual))) < 1e-10  # F = 0 preserved
    b = r.blowup
    assert np.all(np.asarray(b.kind) == 1)  # a crossing, not a divergence
    assert np.max(np.abs(np.asarray(b.s) - 0.25)) < 1e-6
    assert np.max(np.abs(np.asarray(b.x)[:, 1])) < 1e-6  # all meet at x = 0
    assert np.nanmax(np.abs(np.asarray(r.det) - (1 - 4 * np.asarray(r.s)))) < 1e-9
    with pytest.raises(ch.BlowUpError, match=r"characteristics cross.*s=0\.25"):
        ch.charpit(_F_heat, _initial_heat, sig, jnp.linspace(0.0, 0.3, 16))


def test_burgers_shock_time():
    """u_t + u u_x = 0, u(x,0) = exp(-x^2): characteristic sigma meets its neighbours at
    t = -1/f'(sigma); the first shock is at t = sqrt(e/2), x = sqrt(2)."""
    sig = jnp.linspace(-1.0, 2.5, 36)
    r = ch.quasilinear(
        lambda x, u: jnp.stack([jnp.ones_like(u), u]),
        lambda x, u: jnp.zeros_like(u),
        lambda s: (jnp.stack([jnp.zeros_like(s), s]), jnp.exp(-(s**2))),
        sig,
        jnp.linspace(0.0, 2.0, 5),
        on_blowup="stop",
    )
    s_ = np.asarray(sig)
    df = -2 * s_ * np.exp(-(s_**2))
    t_c = np.where(df < -0.5, -1.0 / np.where(df < 0, df, -1.0), np.inf)
    hit = np.asarray(r.blowup.kind) == 1
    assert np.array_equal(hit, np.isfinite(t_c))
    assert np.max(np.abs(np.asarray(r.blowup.s)[hit] - t_c[hit])) < 1e-6
    x_c = s_ + np.exp(-(s_**2)) * t_c
    assert np.max(np.abs(np.asarray(r.blowup.x)[hit, 1] - x_c[hit])) < 1e-6
    first = r.blowup.first()
    assert first["s"] >= np.sqrt(np.e / 2) - 1e-9 and first["s"] < np.sqrt(np.e / 2) + 1e-3


def test_shared_operator_system():
    """(d_t + c d_x) u = A u for u in R^2 (eq. 29): u(t, x) = expm(A t) u0(x - c t)."""
    A = jnp.array([[0.0, 1.0], [-1.0, -0.2]])
    c = 0.7
    r = ch.quasilinear(
        lambda x, u: jnp.array([1.0, c]),
        lambda x, u: A @ u,
        lambda s: (jnp.stack([jnp.zeros_like(s), s]), jnp.stack([jnp.cos(s), jnp.exp(-(s**2))])),
        jnp.linspace(-2.0, 2.0, 9),
        jnp.linspace(0.0, 3.0, 7),
    )
    t, x = np.asarray(r.x[..., 0]), np.asarray(r.x[..., 1])
    y = x - c * t
    for j, tj in enumerate(np.asarray(r.s)):
        u0 = np.stack([np.cos(y[:, j]), np.exp(-(y[:, j] ** 2))], -1)
        exact = u0 @ scipy.linalg.expm(np.asarray(A) * tj).T
        assert np.max(np.abs(np.asarray(r.u[:, j]) - exact)) < 1e-9
    assert r.u.shape == (9, 7, 2)


def test_eikonal_from_a_circle():
    """|grad u| = 1, u = 0 on the circle of radius R: outward u = |x| - R; inward characteristics
    meet at the centre at s = R (a caustic)."""
    R = 1.5

    def F(x, u, p):
        return 0.5 * (jnp.dot(p, p) - 1.0)

    def circle(a):
        return R * jnp.stack([jnp.cos(a), jnp.sin(a)]), jnp.zeros_like(a)

    sig = jnp.linspace(0.0, 2 * jnp.pi, 12, endpoint=False)
    normals = jax.vmap(lambda a: circle(a)[0])(sig)
    # Both branches of F = 0 in one solve: outward (+normal) and inward (-normal) guesses.
    r = ch.charpit(
        F,
        circle,
        jnp.concatenate([sig, sig]),
        jnp.linspace(0.0, 2.0, 5),
        p_guess=jnp.concatenate([normals, -normals]),
        on_blowup="stop",
    )
    out, inward = slice(0, 12), slice(12, 24)
    dist = np.linalg.norm(np.asarray(r.x[out]), axis=-1)
    assert np.max(np.abs(np.asarray(r.u[out]) - (dist - R))) < 1e-10
    assert np.nanmax(np.abs(np.asarray(r.residual))) < 1e-10
    assert np.all(np.asarray(r.blowup.kind[out]) == 0)
    assert np.all(np.asarray(r.blowup.kind[inward]) == 1)
    assert np.max(np.abs(np.asarray(r.blowup.s[inward]) - R)) < 1e-6
    assert np.max(np.abs(np.asarray(r.blowup.x[inward]))) < 1e-6
    # Without a guess Newton starts at p = 0, where F's Jacobian is singular: a clear error.
    with pytest.raises(ValueError, match=r"no initial p0 .* Pass p_guess="):
        ch.charpit(F, circle, jnp.concatenate([sig, sig]), jnp.linspace(0.0, 2.0, 5))


def _eikonal(x, u, p):
    return 0.5 * (jnp.dot(p, p) - 1.0)


def test_point_focus_is_a_crossing():
    """Inward from a sphere of radius R every characteristic of |grad u| = 1 meets the centre at
    s = R, where det ~ (R - s)^2 has a double zero (no sign change): still a crossing, as for the
    circle. Likewise the 2-D pressureless gas u0 = -(y, z) (det = (1 - t)^2), and an astigmatic
    focus whose two simple zeros (t = 1, 1/0.99) a step could span; a det with a minimum well
    away from 0 (e^(-2 sin t) >= e^-2) is no crossing."""
    R = 1.5

    def sphere(a):
        th, ph = a[0], a[1]
        n = jnp.stack([jnp.sin(th) * jnp.cos(ph), jnp.sin(th) * jnp.sin(ph), jnp.cos(th)])
        return R * n, jnp.zeros_like(th)

    th, ph = np.meshgrid(np.linspace(0.4, 2.7, 4), np.linspace(0, 2 * np.pi, 3, endpoint=False))
    sig = jnp.asarray(np.stack([th.ravel(), ph.ravel()], 1))
    inward = jax.vmap(lambda a: -sphere(a)[0] / R)(sig)
    ss = jnp.linspace(0.0, 2.5, 6)
    with pytest.raises(ch.BlowUpError, match=r"characteristics cross.* at s=1\.5"):
        ch.charpit(_eikonal, sphere, sig, ss, p_guess=inward)
    r = ch.charpit(_eikonal, sphere, sig, ss, p_guess=inward, on_blowup="stop")
    b = r.blowup
    assert np.all(np.asarray(b.kind) == 1)
    assert np.max(np.abs(np.asarray(b.s) - R)) < 1e-6
    assert np.max(np.abs(np.asarray(b.x))) < 1e-6
    assert np.max(np.abs(np.asarray(b.u) - R)) < 1e-6  # u = distance travelled
    assert np.all(np.isnan(np.asarray(r.u[:, 3:])))

    g = np.meshgrid(np.linspace(-1.0, 1.0, 3), np.linspace(-1.0, 1.0, 3))
    sg = jnp.asarray(np.stack([g[0].ravel(), g[1].ravel()], 1))[jnp.array([0, 1, 2, 3, 5, 6, 7, 8])]

    # One PDE for both foci, c an array (traced): the second solve reuses the compiled one.
    def gas_initial(c, a):
        return jnp.stack([jnp.zeros_like(a[0]), a[0], a[1]]), -jnp.stack([a[0], c * a[1]])

    def gas_alpha(x, u):
        return jnp.concatenate([jnp.ones(1), u])

    def gas_beta(x, u):
        return jnp.zeros_like(u)

    def gas(c):
        return ch.quasilinear(
            gas_alpha,
            gas_beta,
            jax.tree_util.Partial(gas_initial, jnp.asarray(c)),
            sg,
            jnp.linspace(0.0, 2.0, 5),
            on_blowup="stop",
        ).blowup

    for c in (1.0, 0.99):
        b = gas(c)
        assert np.all(np.asarray(b.kind) == 1)
        assert np.max(np.abs(np.asarray(b.s) - 1.0)) < 1e-6
        assert np.max(np.abs(np.asarray(b.x)[:, 1])) < 1e-6
    # In 3-D (where the focus margin applies): dy/dsigma = dz/dsigma = e^(-sin t).
    r = ch.quasilinear(
        lambda x, u: jnp.stack([jnp.ones_like(x[0]), *(-jnp.cos(x[0]) * x[1:])]),
        lambda x, u: jnp.zeros_like(u),
        lambda a: (jnp.stack([jnp.zeros_like(a[0]), a[0], a[1]]), a[0]),
        sg,
        jnp.linspace(0.0, 6.0, 7),
    )
    assert np.all(np.asarray(r.blowup.kind) == 0)
    assert np.max(np.abs(np.asarray(r.det) - np.exp(-2 * np.sin(np.asarray(r.s))))) < 1e-8


def test_charpit_initial_p0_check_is_scale_free():
    """F and 1e-9 F are the same PDE: |p| = 2 along the line has no eikonal p0 for either, and
    |p_x| = 1/2 has one for both."""
    # The scale and the slope as arrays (traced, one function each): one compiled launch for
    # the three solves.
    eikonal = lambda c, x, u, p: c * _eikonal(x, u, p)
    initial = lambda k, s: (jnp.stack([s, jnp.zeros_like(s)]), k * s)
    scaled = lambda c: jax.tree_util.Partial(eikonal, c)
    sloped = lambda k: jax.tree_util.Partial(initial, k)
    line, small = sloped(jnp.asarray(2.0)), scaled(jnp.asarray(1e-9))
    ss = jnp.linspace(0.0, 1.0, 3)
    for F in (scaled(jnp.asarray(1.0)), small):
        with pytest.raises(ValueError, match=r"no initial p0"):
            ch.charpit(F, line, SIG1, ss, p_guess=jnp.array([2.0, 1.0]))
    r = ch.charpit(small, sloped(jnp.asarray(0.5)), SIG1, ss, p_guess=jnp.array([0.5, 1.0]))
    assert np.allclose(np.asarray(r.p[:, 0]), [0.5, np.sqrt(0.75)], atol=1e-12)


def test_density_transport_gaussian_on_quadratic(getkey):
    """Gradient flow on 1/2 x^T H x carries N(0, I) to N(0, e^{-Ht} e^{-Ht}): along a
    characteristic log rho grows at the rate tr H. Hutchinson is unbiased for it."""
    prob = problems.quadratic(jnp.array([0.5, 1.0, 3.0]), rotate=True, seed=2)
    H = np.asarray(prob.hessian)
    x0 = jax.random.normal(getkey(), (64, 3))
    logp0 = -0.5 * jnp.sum(x0**2, 1) - 1.5 * jnp.log(2 * jnp.pi)
    ts = jnp.linspace(0.0, 1.0, 3)
    exact = ch.transport_density(flows.GradientFlow(), prob, x0, logp0, ts)
    for j, t in enumerate(np.asarray(ts)):
        E = scipy.linalg.expm(-H * t)
        cov = E @ E.T
        y = np.asarray(exact.states[:, j])
        assert np.allclose(y, np.asarray(x0) @ E.T, atol=1e-10)
        logpdf = scipy.stats.multivariate_normal(np.zeros(3), cov).logpdf(y)
        assert np.max(np.abs(np.asarray(exact.log_density[:, j]) - logpdf)) < 1e-9
    hutch = ch.transport_density(
        flows.GradientFlow(), prob, x0, logp0, ts, trace="hutchinson", key=getkey(), num_probes=2
    )
    assert np.allclose(np.asarray(hutch.states), np.asarray(exact.states), atol=1e-12)
    # Per sample the estimate of tr H is v^T H v averaged over 2 probes: unbiased, not exact.
    est = np.asarray(hutch.log_density[:, -1] - logp0)
    assert np.std(est) > 1e-3
    assert abs(est.mean() - np.trace(H)) < 4 * est.std() / np.sqrt(est.size)


def test_bad_input():
    ss = jnp.linspace(0.0, 1.0, 3)
    with pytest.raises(ValueError, match=r"F.*must return a scalar"):
        ch.charpit(lambda x, u, p: p, _initial_heat, SIG1, ss)
    with pytest.raises(ValueError, match=r"alpha\(x, u\) must return shape \(2,\)"):
        ch.quasilinear(lambda x, u: x[:1], _beta1, _initial1, SIG1, ss)
    with pytest.raises(ValueError, match=r"beta\(x, u\) must return the shape of u"):
        ch.quasilinear(_alpha1, lambda x, u: jnp.stack([u, u]), _initial1, SIG1, ss)
    with pytest.raises(ValueError, match="initial manifold must have dimension n-1 = 1"):
        ch.quasilinear(_alpha1, _beta1, lambda s: _initial1(s[0]), jnp.ones((4, 2)), ss)
    with pytest.raises(ValueError, match=r"x0\) must be a 1-D array of n >= 2"):
        ch.quasilinear(_alpha1, _beta1, lambda s: (s, s), SIG1, ss)
    with pytest.raises(ValueError, match="u0\\) must be a scalar"):
        ch.charpit(_F_heat, lambda s: (jnp.stack([s, s]), jnp.stack([s, s])), SIG1, ss)
    with pytest.raises(ValueError, match="on_blowup must be 'raise' or 'stop'"):
        ch.quasilinear(_alpha1, _beta1, _initial1, SIG1, ss, on_blowup="ignore")
    with pytest.raises(ValueError, match="u_max must be finite and > 0"):
        ch.quasilinear(_alpha1, _beta1, _initial1, SIG1, ss, u_max=-1.0)
    with pytest.raises(ValueError, match=r"max_steps must be a positive integer, got 10\.5"):
        ch.quasilinear(_alpha1, _beta1, _initial1, SIG1, ss, max_steps=10.5)
    with pytest.raises(ValueError, match="strictly increasing"):
        ch.quasilinear(_alpha1, _beta1, _initial1, SIG1, jnp.array([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match=r"p_guess must have shape \(2,\) or \(25, 2\)"):
        ch.charpit(_F_heat, _initial_heat, SIG1, ss, p_guess=jnp.ones(3))
    with pytest.raises(ValueError, match="p_guess must be None, a real array"):
        ch.charpit(_F_heat, _initial_heat, SIG1, ss, p_guess="up")
    with pytest.raises(ValueError, match="sigma must be a real array"):
        ch.charpit(_F_heat, _initial_heat, np.asarray(SIG1) + 0j, ss)
    with pytest.raises(ValueError, match="its u0 is a dict, not an array"):
        ch.quasilinear(_alpha1, _beta1, lambda s: (_initial1(s)[0], {"a": s}), SIG1, ss)
    with pytest.raises(ValueError, match="its x0 is a dict, not an array"):
        ch.charpit(_F_heat, lambda s: ({"t": s, "x": s}, s), SIG1, ss)
    # The initial line t = x is characteristic for u_t + u_x = 0 (alpha = (1, 1) along it).
    with pytest.raises(ValueError, match="initial curve is characteristic"):
        ch.quasilinear(
            lambda x, u: jnp.ones(2), lambda x, u: u, lambda s: (jnp.stack([s, s]), s), SIG1, ss
        )
    prob = problems.double_well()
    with pytest.raises(ValueError, match="key="):
        ch.transport_density(
            flows.GradientFlow(), prob, jnp.ones((3, 1)), jnp.zeros(3), ss, trace="hutchinson"
        )
    with pytest.raises(ValueError, match=r"params0 leaves must have shape \(m"):
        ch.transport_density(flows.GradientFlow(), prob, jnp.ones((3, 2)), jnp.zeros(3), ss)
    with pytest.raises(ValueError, match=r"one value per sample, shape \(3,\)"):
        ch.transport_density(flows.GradientFlow(), prob, jnp.ones((3, 1)), jnp.zeros(4), ss)
    with pytest.raises(ValueError, match="trace must be 'exact' or 'hutchinson'"):
        ch.transport_density(
            flows.GradientFlow(), prob, jnp.ones((3, 1)), jnp.zeros(3), ss, trace="x"
        )


def test_to_grid_is_exact_for_linear_data(getkey):
    """Piecewise-linear interpolation reproduces a linear function; NaN outside the hull."""
    pts = np.asarray(jax.random.uniform(getkey(), (200, 2)))
    u = 1.5 * pts[:, 0] - 2.0 * pts[:, 1] + 0.3
    q = np.array([[0.5, 0.5], [0.2, 0.7], [2.0, 2.0]])
    out = ch.to_grid(pts, u, q)
    assert np.allclose(out[:2], 1.5 * q[:2, 0] - 2.0 * q[:2, 1] + 0.3, atol=1e-12)
    assert np.isnan(out[2])
    line = ch.to_grid(pts[:, :1], np.stack([u, -u], -1), np.array([[0.5]]))
    assert line.shape == (1, 2)
    with pytest.raises(ValueError, match="points must have last dimension n=2"):
        ch.to_grid(pts, u, np.zeros((3, 3)))


def test_grid_values_on_the_closed_domain():
    """u = x - 0.7 t advected by (1, 0.7): exact on the closed mesh, its last time row t = 3
    (saved as 3 - 4e-15) and its side edge included."""
    r = ch.quasilinear(
        lambda x, u: jnp.array([1.0, 0.7]),
        lambda x, u: jnp.zeros_like(u),
        lambda s: (jnp.stack([jnp.zeros_like(s), s]), s),
        jnp.linspace(-4.0, 4.0, 81),
        jnp.linspace(0.0, 3.0, 31),
    )
    tt, xx = np.meshgrid([0.0, 1.5, 3.0], np.linspace(-1.0, 1.0, 5), indexing="ij")
    pts = np.stack([tt, xx], -1)
    for out in (r.on_grid(pts), ch.to_grid(r.x, r.u, pts)):
        assert np.max(np.abs(out - (xx - 0.7 * tt))) < 1e-12
    edge = np.array([1.5, -4.0 + 0.7 * 1.5])  # on the characteristic sigma = -4
    assert r.on_grid(edge) == pytest.approx(-4.0, abs=1e-12)
    assert ch.to_grid(r.x, r.u, edge) == pytest.approx(-4.0, abs=1e-12)
    assert np.isnan(r.on_grid(np.array([3.0 + 1e-6, 0.0])))  # outside by more than round-off
    line = ch.to_grid(
        np.array([[0.0], [1.0]]), np.array([0.0, 1.0]), np.array([[1 + 1e-12], [1.1]])
    )
    assert line[0] == 1.0 and np.isnan(line[1])


def test_riccati_closed_form_solves_the_pde_and_blows_up_where_predicted():
    """Eq. 12 satisfies u_t + x u_x = u² (central differences, 1e-6) and u(0, x) = f(x); the
    blow-up (t*, x*) of each characteristic lies on t f(x e^-t) = 1, none past the horizon."""
    t, x, d = np.linspace(0.0, 0.8, 9), np.linspace(-2.0, 2.0, 11)[:, None], 1e-5
    u = lambda t, x: ch.riccati_solution(np.sin, t, x)
    u_t = (u(t + d, x) - u(t - d, x)) / (2 * d)
    u_x = (u(t, x + d) - u(t, x - d)) / (2 * d)
    assert np.max(np.abs(u_t + x * u_x - u(t, x) ** 2)) < 1e-6
    assert np.array_equal(u(0.0, x), np.sin(x))
    sig = np.linspace(-3.0, 3.0, 25)
    t_star, x_star = ch.riccati_blowup(np.sin, sig)
    assert np.array_equal(np.isfinite(t_star), np.sin(sig) > 0)
    hit = np.isfinite(t_star)
    assert np.allclose(t_star[hit] * np.sin(x_star[hit] * np.exp(-t_star[hit])), 1.0, atol=1e-12)
    t_h, x_h = ch.riccati_blowup(np.sin, sig, horizon=1.5)
    assert np.all(t_h[np.isfinite(t_h)] < 1.5) and np.all(np.isnan(x_h[~np.isfinite(t_h)]))
    assert np.isfinite(t_h).sum() == np.sum(t_star < 1.5)


def test_burgers_crossing_is_where_neighbouring_characteristics_meet():
    """At t_c the map σ ↦ σ + f(σ)t has zero slope (finite differences), and the earliest
    crossing of f = exp(-x²) is the first shock (√(e/2), √2)."""
    f = lambda s: np.exp(-(s**2))
    fp = lambda s: -2 * s * f(s)
    sig, d = np.linspace(-1.0, 2.5, 3501), 1e-6
    t_c, x_c = ch.burgers_crossing(f, fp, sig)
    assert np.array_equal(np.isfinite(t_c), sig > 0)
    hit = np.isfinite(t_c)
    s, t = sig[hit], t_c[hit]
    slope = (s + d + f(s + d) * t - (s - d + f(s - d) * t)) / (2 * d)
    assert np.max(np.abs(slope)) < 1e-6
    i = np.argmin(t_c)
    assert abs(t_c[i] - np.sqrt(np.e / 2)) < 1e-6 and abs(x_c[i] - np.sqrt(2.0)) < 1e-3
    t_h, _ = ch.burgers_crossing(f, fp, sig, horizon=2.0)
    assert np.array_equal(np.isfinite(t_h), -fp(sig) > 0.5)


def test_density_chi2_accepts_samples_of_the_law_and_rejects_a_shifted_one(getkey):
    """A standard normal density on sorted points against its own samples: χ²/dof within 4σ of
    1 (σ = √(2/J)) and mass 1 to the trapezoid error; a 0.1 shift is rejected (χ²/dof ≫ 1)."""
    x = np.linspace(-4.0, 4.0, 2001)
    rho = np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi)
    left = 0.5 * (1 + scipy.special.erf(-4.0 / np.sqrt(2)))
    edges = np.linspace(-2.5, 2.5, 41)
    samples = np.asarray(jax.random.normal(getkey(), (50_000,)))
    chi2, max_z, mass, hist = ch.density_chi2(x, rho, samples, edges, left)
    assert abs(chi2 - 1.0) < 4 * np.sqrt(2 / 40) and max_z < 5.0
    assert abs(mass - (1 - left)) < 1e-5
    assert np.isclose(np.sum(hist * np.diff(edges)), np.mean(np.abs(samples) < 2.5))
    assert ch.density_chi2(x, rho, samples + 0.1, edges, left)[0] > 10.0


def test_solver_failures_are_reported():
    """A step budget too small is a SolveError saying what to change, not partial values."""
    from dynopt import SolveError

    ss = jnp.linspace(0.0, 1.0, 3)
    with pytest.raises(SolveError, match=r"characteristics solve \(tsit5\) failed.*max_steps"):
        ch.quasilinear(_alpha1, _beta1, _initial1, SIG1, ss, max_steps=2, on_blowup="stop")
    with pytest.raises(SolveError, match=r"density transport \(tsit5\) failed.*max_steps"):
        ch.transport_density(
            flows.GradientFlow(),
            problems.double_well(),
            jnp.ones((3, 1)),
            jnp.zeros(3),
            ss,
            max_steps=2,
        )


_NO_CALLBACKS_SCRIPT = """
from dynopt import characteristics as ch, flows, problems
sig = jnp.linspace(-3.0, 3.0, 9)
alpha = lambda x, u: jnp.stack([jnp.ones_like(x[0]), x[1]])
initial = lambda s: (jnp.stack([jnp.zeros_like(s), s]), jnp.sin(s))
ch.quasilinear(alpha, lambda x, u: u**2, initial, sig, jnp.linspace(0.0, 1.5, 4), on_blowup="stop")
F = lambda x, u, p: p[0] - p[1] ** 2
ch.charpit(F, lambda s: (jnp.stack([jnp.zeros_like(s), s]), s**2), sig, jnp.linspace(0.0, 0.2, 4))
x0 = jnp.linspace(-1.0, 1.0, 5)[:, None]
ch.transport_density(flows.GradientFlow(), problems.double_well(), x0, jnp.zeros(5), [0.0, 0.5])
"""


def test_programs_hold_no_host_callbacks(tmp_path_factory):
    """JAX's persistent compilation cache stores no program with a host callback, and diffrax's
    `SaveAt(ts=...)` checks traced save times with one: the characteristics and density
    transport check their times on the host and save them through the solver (`SaveAtTimes`),
    so a second process reuses the compiled solves. A program with an `eqx.error_if` is the
    control. (In a child process with its own cache folder: `assert_programs_cacheable`.)"""
    assert_programs_cacheable(__name__, tmp_path_factory)


def _integrate_jaxpr(monkeypatch, solve):
    """The jaxpr of the characteristics program that `solve()` compiles."""
    calls = []
    program = _integrate.__wrapped__
    monkeypatch.setattr(integrate, "_integrate", lambda *a: calls.append(a) or _integrate(*a))
    solve()
    monkeypatch.setattr(integrate, "_integrate", _integrate)
    return eqx.filter_make_jaxpr(program)(*calls[0])[0]


def test_characteristics_are_solved_one_after_another_on_a_cpu(monkeypatch):
    """On a CPU each characteristic's adaptive solve runs on its own: the program is one scan
    over the characteristics (`lax.map`), not a batched `while_loop` (`vmap`), which took ~40 %
    longer to trace and compile (`dynopt._batching.map_batch`). On an accelerator they run at once;
    both give the same solution to rounding."""
    ss = jnp.linspace(0.0, 1.5, 4)

    def solve():
        return ch.quasilinear(_alpha1, _beta1, _initial1, SIG1[:7], ss, on_blowup="stop")

    jaxpr = _integrate_jaxpr(monkeypatch, solve)
    assert [e.primitive.name for e in jaxpr.eqns] == ["scan"]
    assert jaxpr.eqns[0].params["length"] == 7
    one_by_one = solve()
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    jax.clear_caches()  # the program is traced anew, batched
    batched = solve()
    assert [e.primitive.name for e in _integrate_jaxpr(monkeypatch, solve).eqns] != ["scan"]
    for a, b in ((one_by_one.u, batched.u), (one_by_one.blowup.s, batched.blowup.s)):
        np.testing.assert_allclose(a, b, rtol=1e-13)
    np.testing.assert_array_equal(one_by_one.blowup.kind, batched.blowup.kind)


def test_new_tolerances_reuse_the_compiled_solve():
    """rtol, atol and u_max reached the compiled solve as Python floats, static: each new value
    compiled the whole characteristics solve again (`solve` traces its own). Now traced: the
    calls after the first compile nothing, each with its own result."""
    ss = jnp.linspace(0.0, 0.5, 4)

    def solve(**options):
        return ch.quasilinear(_alpha1, _beta1, _initial1, SIG1, ss, on_blowup="stop", **options)

    first = solve()
    with backend_compiles() as compiled:
        others = [solve(**o) for o in ({"rtol": 1e-6, "atol": 1e-8}, {"u_max": 1e5})]
    assert compiled == []
    assert not np.array_equal(np.asarray(others[0].u), np.asarray(first.u))  # rtol was used
    np.testing.assert_allclose(others[0].u, first.u, rtol=1e-5)
    np.testing.assert_array_equal(others[1].u, first.u)


def test_a_solve_compiles_its_own_programs_only():
    """Each solve of a new shape compiled about twenty small programs besides its own, 0.5–1 s
    of a cold run each: eager operations on the host (`jnp.asarray` of NumPy arrays, JAX arrays
    sliced, the solve's outcome mapped, a function `p_guess` vmapped), one program per shape.
    Now a solver compiles its launch and its solve (charpit also its residual), the blow-up
    report nothing, and density transport its solve."""
    ss = np.linspace(0.0, 1.5, 4)

    def riccati(m):
        sig = np.linspace(-3.0, 3.0, m)
        return ch.quasilinear(_alpha1, _beta1, _initial1, sig, ss, on_blowup="stop")

    riccati(5)  # diffrax's constants, made once per process
    count, r = count_backend_compiles(riccati, 6)
    assert count == 2  # launch, solve
    assert count_backend_compiles(r.blowup.first)[0] == 0
    sig = np.linspace(-1.0, 1.0, 7)
    # u = x^2/(1 - 4t): p0 = (4 sigma^2, 2 sigma), as a function and as an array.
    guesses = {"array": np.stack([4 * sig**2, 2 * sig], -1), "function": _heat_p0}
    heat = {}
    # The array: launch, solve, residual; then the function: its launch (solve and residual
    # reused).
    for (name, guess), programs in zip(guesses.items(), (3, 1)):
        count, heat[name] = count_backend_compiles(
            ch.charpit, _F_heat, _initial_heat, sig, ss / 10, p_guess=guess
        )
        assert count == programs, name
    for a, b in zip(*(jax.tree.leaves(heat[name]) for name in guesses)):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-14)  # NaN past the horizon
    t, x = np.moveaxis(np.asarray(heat["array"].x), -1, 0)
    np.testing.assert_allclose(heat["array"].u, x**2 / (1 - 4 * t), rtol=1e-9, atol=1e-12)

    def transport(m, ts):
        x0, well = np.linspace(-1.0, 1.0, m)[:, None], problems.double_well()
        return ch.transport_density(flows.GradientFlow(), well, x0, np.zeros(m), ts)

    transport(3, [0.0, 0.5])
    assert count_backend_compiles(transport, 4, [0.0, 0.25, 0.5])[0] == 1


def _heat_p0(s):
    return jnp.stack([4 * s**2, 2 * s])
