"""dynopt.densities in d dimensions: the four routes on tensor grids against the exact density of
a linear SDE with a non-normal A, with fitted orders; Van Loan's covariance against independent
computations; a 2-D double well's long-time law; the d = 1 reduction to the 1-D routes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg

import dynopt
from dynopt import densities as D


# Non-normal, non-diagonal, stable (eigenvalues -1 ± i): the rotation shears the Gaussian.
A = np.array([[-1.0, 2.0], [-0.5, -1.0]])
ALPHA, X0, T = 0.5, np.array([0.5, -0.3]), 0.5
SDE = D.linear_vector_sde(A, ALPHA)
MEAN, COV = D.linear_moments(A, T, X0, alpha=ALPHA)


def EXACT(x):
    return D.gaussian_density(x, MEAN, COV)


PEAK = float(EXACT(MEAN))


def test_linear_moments_van_loan():
    # Non-normal A: Σ(t) = α ∫ e^{As} e^{Aᵀs} ds by scipy quadrature; mean e^{At} x0.
    def integrand(s):
        E = scipy.linalg.expm(A * s)
        return ALPHA * E @ E.T

    cov_quad = scipy.integrate.quad_vec(integrand, 0.0, T, epsabs=1e-14, epsrel=1e-13)[0]
    np.testing.assert_allclose(COV, cov_quad, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(MEAN, scipy.linalg.expm(A * T) @ X0, rtol=1e-13)
    # The Lyapunov equation dΣ/dt = AΣ + ΣAᵀ + αI (dΣ/dt by autodiff through expm).
    dcov = jax.jit(jax.jacfwd(lambda t: D.linear_moments(A, t, X0, alpha=ALPHA)[1]))(T)
    np.testing.assert_allclose(dcov, A @ COV + COV @ A.T + ALPHA * np.eye(2), atol=1e-12)
    # Diagonal A in d = 3: the product of the 1-D exact densities.
    rates, x0, t = np.array([1.0, -0.5, 0.0]), np.array([0.3, -1.0, 2.0]), 0.7
    x = jax.random.normal(jax.random.key(0), (20, 3))
    prod = np.prod(
        [D.linear_density(x[:, i], t, x0[i], rate=rates[i], alpha=ALPHA) for i in range(3)], 0
    )
    np.testing.assert_allclose(
        D.linear_density_nd(x, t, x0, A=np.diag(rates), alpha=ALPHA), prod, rtol=1e-12
    )


def test_fokker_planck_nd_order_and_mass():
    # 2-D finite volumes, Kvaerno5 on a (25² + 1)-dim state (one compiled program, padded).
    t0, hs, errs = 0.2, [], []
    m0, c0 = D.linear_moments(A, t0, X0, alpha=ALPHA)
    for m in (17, 21, 25, 29):
        axes = (np.linspace(-2.1, 2.5, m), np.linspace(-2.3, 1.9, m))
        init = D.gaussian_density(D.mesh_points(axes), m0, c0)
        res = D.fokker_planck_nd(SDE, init, axes, t0, T, pad_to=29, rtol=1e-6, atol=1e-9)
        hs.append(axes[0][1] - axes[0][0])
        errs.append(float(res.error(EXACT)))
        assert float(res.mass_defect) < 1e-12  # mass on the grid + outflow is conserved
        assert abs(float(res.lost_mass)) < 1e-6
    # Second order in h (h_y/h_x fixed); the finest error is ~2.5% of the peak at h = 0.16.
    assert 1.9 < float(dynopt.fit_order(np.array(hs), np.array(errs))) < 2.1, errs
    assert errs[-1] < 0.03 * PEAK
    # A grid that does not cover the mass: reported, conservation intact (refused by default
    # through the same check_lost_mass as every route; see test_bad_input_nd).
    axes = (np.linspace(-0.3, 1.3, 13), np.linspace(-1.1, 0.5, 13))
    init = D.gaussian_density(D.mesh_points(axes), m0, c0)
    res = D.fokker_planck_nd(SDE, init, axes, t0, T, pad_to=29, rtol=1e-6, atol=1e-9, mass_tol=None)
    assert float(res.lost_mass) > 0.05 and float(res.mass_defect) < 1e-12


def test_path_integral_nd_conventions_orders():
    # h ≈ 0.09 ≤ √(αε) at the finest ε = T/32: the grid sums are spectrally accurate.
    axes = (np.linspace(-2.3, 2.5, 53), np.linspace(-2.4, 2.0, 49))
    ns = np.array([4, 8, 16, 32])
    err = {
        c: np.array(
            [
                float(D.path_integral_nd(SDE, X0, T, axes, int(n), convention=c).error(EXACT))
                for n in ns
            ]
        )
        for c in ("ito", "midpoint")
    }
    # Itô = the Euler–Maruyama kernel: order 1. Midpoint with |det(I - ε∇p/2)|: order 2 (Cayley
    # mean map e^{εA} + O(ε³), per-slice covariance α∫e^{As}e^{Aᵀs}ds + O(ε³)).
    assert 0.9 < float(dynopt.fit_order(T / ns, err["ito"])) < 1.1, err["ito"]
    assert 1.9 < float(dynopt.fit_order(T / ns, err["midpoint"])) < 2.1, err["midpoint"]
    assert err["midpoint"][-1] < 1e-4 * PEAK
    # Without its Jacobian the midpoint rule carries Π|det(I - εA/2)|⁻¹ → exp(T tr A / 2)
    # (= e^{-1/2} here): the wrong density, by a factor, at every ε.
    bad = D.path_integral_nd(SDE, X0, T, axes, 32, jacobian=False, mass_tol=None)
    assert abs(float(bad.mass) - np.exp(T * np.trace(A) / 2)) < 1e-4
    assert float(jnp.max(jnp.abs(bad.density / bad.mass - bad.exact_on_grid(EXACT)))) < 2e-4


def test_random_walk_nd_order():
    window = [(-2.3, 2.5), (-2.4, 2.0)]
    dts = T / np.array([64, 128, 256, 512])
    errs = []
    for dt in dts:
        res = D.random_walk_nd(SDE, X0, T, dt, window)
        errs.append(float(res.error(EXACT)))
        assert float(res.mass_defect) < 1e-12 and float(res.lost_mass) < 1e-6
    assert 0.9 < float(dynopt.fit_order(dts, np.array(errs))) < 1.1, errs
    assert errs[-1] < 2e-3 * PEAK
    with pytest.raises(ValueError, match=r"\|p_i\| ds / alpha"):  # |Ax| Δs/α > 1 at the corners
        D.random_walk_nd(SDE, X0, T, T / 25, window)
    with pytest.raises(ValueError, match="integer"):
        D.random_walk_nd(SDE, X0, T, 0.3, window)
    with pytest.raises(ValueError, match="inside window"):
        D.random_walk_nd(SDE, np.array([3.0, 0.0]), T, T / 64, window)
    with pytest.raises(ValueError, match="one \\(lo, hi\\) pair"):
        D.random_walk_nd(SDE, X0, T, T / 64, [(-2.0, 2.0)])


def test_monte_carlo_nd_matches_exact_within_sampling_error():
    # 20 000 paths at dt = T/20: the experiment's quick shapes (one compilation when shared).
    samples = D.monte_carlo_samples_nd(SDE, X0, T, jax.random.key(1), 20_000, dt=T / 20)
    edges = (np.linspace(-1.5, 1.7, 17), np.linspace(-1.6, 1.2, 15))
    pi = D.bin_probabilities(EXACT, edges)  # 8×8 Gauss–Legendre per bin
    ns = np.array([1250, 2500, 5000, 10_000, 20_000])
    tv = np.array(
        [float(D.total_variation_nd(D.histogram_density_nd(samples[:n], edges, T), pi)) for n in ns]
    )
    # E|π̂_b - π_b| ≈ sqrt(2π_b(1-π_b)/(πN)) per bin; ShARK's weak error at dt = T/20 is O(dt²).
    p = np.asarray(pi)
    predicted = 0.5 * np.sum(np.sqrt(2 * p * (1 - p) / np.pi)) / np.sqrt(ns)
    assert np.all((tv / predicted > 0.7) & (tv / predicted < 1.4)), tv / predicted
    assert -0.65 < float(dynopt.fit_order(ns.astype(float), tv)) < -0.35


def test_double_well_2d_long_time_fokker_planck():
    # U = (x² - 1)²/4 + y²/2, p = -∇U: stationary law ∝ exp(-2U/α).
    sde = D.VectorSDE(lambda x, t: jnp.stack([x[0] - x[0] ** 3, -x[1]]), ALPHA)
    # Cell Péclet |p_i| h_i / α reaches 1.7 at |x| = 2 (h = 0.14), past the central fluxes'
    # monotone limit 1: the absorbing faces there feed back 7.7e-4 of mass and the tails dip to
    # -5.5e-4 of the peak, below the 1% that Fokker–Planck refuses (at |x| = 2.2 with h = 0.18
    # it would be 3).
    axes = (np.linspace(-2.0, 2.0, 29), np.linspace(-2.2, 2.2, 23))
    stat = D.stationary_density_nd(sde, axes)
    pts = D.mesh_points(axes)
    U = (pts[..., 0] ** 2 - 1) ** 2 / 4 + pts[..., 1] ** 2 / 2
    closed = jnp.exp(-2 * U / ALPHA)
    vol = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
    np.testing.assert_allclose(stat, closed / (jnp.sum(closed) * vol), rtol=1e-12)
    # From a Gaussian at the saddle (symmetric: the slow inter-well mode is not excited), T = 4
    # (slowest excited mode e^{-2t}); what remains is the scheme's O(h²) stationary error, ~2%.
    init = D.short_time_density_nd(sde, np.zeros(2), 0.25, axes)
    fp = D.fokker_planck_nd(sde, init, axes, 0.25, 4.0, rtol=1e-6, atol=1e-9)
    peak = float(jnp.max(stat))
    assert float(jnp.max(jnp.abs(fp.density - stat))) < 0.03 * peak
    assert float(fp.mass_defect) < 1e-12


def test_d1_reduces_to_the_1d_routes():
    # The 1-D routes are the d-dim code at d = 1: a ScalarSDE (polynomial drift) through a 1-D
    # route against a VectorSDE (matrix drift) through the d-dim route (same settings as
    # tests/test_densities.py: shared compilations).
    lin1, linv = D.linear_sde(1.0, ALPHA), D.linear_vector_sde([[1.0]], ALPHA)
    x0, t1, g = 0.3, 0.5, np.linspace(-4.0, 4.5, 341)
    a = D.path_integral(lin1, x0, t1, g, 8, convention="midpoint")
    b = D.path_integral_nd(linv, [x0], t1, (g,), 8, convention="midpoint")
    np.testing.assert_allclose(b.density, a.density, rtol=1e-12, atol=1e-14)
    a = D.random_walk(lin1, x0, t1, 1 / 50, (-4.0, 4.5))
    b = D.random_walk_nd(linv, [x0], t1, 1 / 50, [(-4.0, 4.5)])
    np.testing.assert_allclose(b.axes[0], a.x, rtol=1e-14)
    np.testing.assert_allclose(b.density, a.density, rtol=1e-12, atol=1e-14)
    g = np.linspace(-6.0, 8.0, 49)
    init = D.linear_density(jnp.asarray(g), 0.5, x0, rate=1.0, alpha=ALPHA)
    a = D.fokker_planck(lin1, init, g, 0.5, 1.0, pad_to=129)
    b = D.fokker_planck_nd(linv, init, (g,), 0.5, 1.0, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b.density, a.density, rtol=0, atol=1e-10)
    # Same scheme, same adaptive steps: equal up to the solver tolerance (rtol 1e-9 of 7e-7).
    np.testing.assert_allclose(b.lost_mass, a.lost_mass, rtol=1e-5, atol=0)
    # The stationary law and the short-time start: one computation (OU: N(0, alpha / 2)).
    ou1, ouv = D.linear_sde(-1.0, ALPHA), D.linear_vector_sde([[-1.0]], ALPHA)
    a, b = D.stationary_density(ou1, g), D.stationary_density_nd(ouv, (g,))
    np.testing.assert_allclose(b, a, rtol=1e-12, atol=0)
    a, b = D.short_time_density(lin1, x0, 0.05, g), D.short_time_density_nd(linv, [x0], 0.05, (g,))
    np.testing.assert_allclose(b, a, rtol=1e-12, atol=0)


def test_three_dimensions_coarse():
    # d = 3 on coarse grids: the random walk (order 1) and the path integral against the exact
    # 3-D Gaussian of a non-normal A.
    A3 = np.array([[-1.0, 1.0, 0.0], [0.0, -1.0, 0.5], [0.3, 0.0, -1.5]])
    x0, t1, alpha = np.array([0.2, -0.1, 0.3]), 0.3, 1.0
    sde = D.linear_vector_sde(A3, alpha)
    mean, cov = D.linear_moments(A3, t1, x0, alpha=alpha)
    exact = lambda x: D.gaussian_density(x, mean, cov)
    peak = float(exact(mean))
    win = [(c - 2.6, c + 2.6) for c in x0]
    e = [float(D.random_walk_nd(sde, x0, t1, t1 / n, win).error(exact)) for n in (16, 32)]
    assert 1.8 < e[0] / e[1] < 2.2 and e[1] < 0.03 * peak, e  # first order: 4.4% → 2.2%
    # h = 0.4, √(αε) = 0.32: grid-sum error ~ exp(-2π²(0.32/0.4)²) ≈ 5e-6.
    axes = tuple(np.linspace(c - 2.4, c + 2.4, 13) for c in x0)
    pi = D.path_integral_nd(sde, x0, t1, axes, 3, mass_tol=1e-4)
    assert float(pi.error(exact)) < 0.01 * peak


def test_bad_input_nd():
    with pytest.raises(ValueError, match="alpha must be > 0"):
        D.VectorSDE(lambda x, t: -x, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        D.linear_vector_sde(A, -1.0)
    with pytest.raises(ValueError, match="drift must be callable"):
        D.VectorSDE(3.0, 1.0)
    with pytest.raises(ValueError, match="square"):
        D.linear_vector_sde(np.ones((2, 3)), 1.0)
    wrong = D.VectorSDE(lambda x, t: x[:1], 1.0)
    axes = (np.linspace(-1, 1, 5), np.linspace(-1, 1, 5))
    with pytest.raises(ValueError, match=r"drift must map shape \(2,\) to \(2,\)"):
        D.path_integral_nd(wrong, [0.0, 0.0], 1.0, axes, 2)
    with pytest.raises(ValueError, match="drift must map"):
        dynopt.sde.simulate(
            wrong, None, jnp.asarray([0.0, 1.0]), jax.random.key(0), 2, x0=jnp.zeros(2)
        )
    with pytest.raises(ValueError, match="x0 must have shape"):
        D.path_integral_nd(SDE, [0.0, 0.0, 0.0], 1.0, axes, 2)
    # A drift that cannot even take the grid's dimension (a 2-D linear drift on a 1-D grid): a
    # ValueError naming the shape, not the matmul's TypeError.
    g = np.linspace(-1, 1, 5)
    with pytest.raises(ValueError, match=r"cannot take a state of shape \(1,\)"):
        D.path_integral(SDE, 0.0, 1.0, g, 2)
    with pytest.raises(ValueError, match=r"cannot take a state of shape \(1,\)"):
        D.stationary_density(SDE, g)
    with pytest.raises(ValueError, match="uniform"):
        D.path_integral_nd(SDE, X0, 1.0, (np.array([0.0, 1.0, 3.0]), axes[1]), 2)
    with pytest.raises(ValueError, match="tuple of 1-D uniform grids"):
        D.path_integral_nd(SDE, X0, 1.0, np.linspace(-1, 1, 5), 2)
    with pytest.raises(ValueError, match="initial must have the grid's shape"):
        D.fokker_planck_nd(SDE, jnp.ones((5, 4)), axes, 0.1, 0.5)
    with pytest.raises(ValueError, match="pad_to"):
        D.fokker_planck_nd(SDE, jnp.full((5, 5), 0.16), axes, 0.1, 0.5, pad_to=4)
    with pytest.raises(ValueError, match="lost mass"):  # the grid misses most of the mass
        D.path_integral_nd(SDE, X0, T, (np.linspace(0, 0.4, 9), np.linspace(-0.4, 0, 9)), 2)
    with pytest.raises(ValueError, match="not a gradient field"):
        D.stationary_density_nd(SDE, axes)
    repelling = D.VectorSDE(lambda x, t: x * jnp.array([-1.0, 1.0]), 0.5)  # a saddle: no law
    with pytest.raises(ValueError, match="drift does not confine"):
        D.stationary_density_nd(repelling, axes)
    with pytest.raises(ValueError, match="edges"):
        D.histogram_density_nd(jnp.zeros((4, 2)), (np.array([0.0, 1.0, 3.0]), axes[1]), 1.0)
    # A drift that is NaN on part of the grid is named as such (it read as a step budget
    # exhausted, or as lost mass NaN > mass_tol).
    root = D.VectorSDE(lambda x, t: -jnp.sqrt(x), 0.5)
    line = (np.linspace(-1.0, 2.0, 31),)
    bump = jnp.asarray(np.exp(-((line[0] - 1) ** 2) / 0.02) / np.sqrt(0.02 * np.pi))
    nan_drift = r"the drift p\(x, t\) is not finite at 1\d of the 3\d points .* at t = 0 \(e.g."
    with pytest.raises(ValueError, match=r"^fokker_planck_nd: " + nan_drift):
        D.fokker_planck_nd(root, bump, line, 0.0, 0.5, max_steps=200)
    with pytest.raises(ValueError, match=r"^path_integral_nd: " + nan_drift):
        D.path_integral_nd(root, [1.0], 0.5, line, 4)
    with pytest.raises(ValueError, match=r"^x0 must have shape \(d,\) = \(2,\) like A, got \(3,\)"):
        D.linear_moments(A, 1.0, jnp.zeros(3), alpha=1.0)
    with pytest.raises(ValueError, match=r"^x must have shape \(\.\.\., d\) with d = 2"):
        D.linear_density_nd(jnp.zeros((4, 3)), 1.0, jnp.zeros(2), A=A, alpha=1.0)


def test_grid_routes_check_their_time_window_alike():
    # One check for both grid routes (the path integral said "t1 - t0 must be > 0").
    axes = (np.linspace(-1, 1, 5), np.linspace(-1, 1, 5))
    with pytest.raises(ValueError, match=r"^need t1 > t0, got t0=0.5, t1=0.5\.$"):
        D.path_integral_nd(SDE, X0, 0.5, axes, 2, t0=0.5)
    with pytest.raises(ValueError, match=r"^need t1 > t0, got t0=0.5, t1=0.25\.$"):
        D.fokker_planck_nd(SDE, jnp.full((5, 5), 0.25), axes, 0.5, 0.25)


def test_results_hold_jax_arrays():
    # The result types convert what a route computed on the host (NumPy axes, a Python t1).
    g, g2 = np.linspace(-1.0, 1.0, 3), np.linspace(0.0, 2.0, 5)
    fields = dict(t=1, mass=np.float64(1.0), lost_mass=0.0, mass_defect=0.0, method="by hand")
    tensor = D.TensorDensity(axes=(g, g2), density=np.ones((3, 5)), **fields)
    grid = D.GridDensity(x=g, density=np.ones(3), **fields)
    for dens in (tensor, grid):
        assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(dens)), dens
        assert dens.t.dtype == jnp.result_type(float)
    np.testing.assert_array_equal(tensor.points[2, 4], [1.0, 2.0])


def test_routes_agree_on_a_nonlinear_non_gradient_drift():
    """No closed form: a cubic, rotating drift (∇p not symmetric). The random walk (first order in
    Δt) and the trapezoid path integral meet on the walk's lattice (every 2nd/3rd site, so that
    h ≲ √(αε) for the quadrature), their gap halving with Δt and ε; Fokker–Planck, started at
    t0 = 0.1 from the path integral, converges onto the path integral at T as h shrinks."""
    sde = D.VectorSDE(
        lambda x, t: jnp.stack([-0.5 * x[0] ** 3 - 0.3 * x[0] + 0.8 * x[1], -0.8 * x[0] - x[1]]),
        ALPHA,
    )
    x0, window = np.array([0.3, -0.2]), [(-2.2, 2.4), (-2.4, 2.2)]
    gaps = []
    for steps, slices, stride in ((256, 8, 2), (512, 16, 3)):
        rw = D.random_walk_nd(sde, x0, T, T / steps, window)
        axes = tuple(np.asarray(a)[::stride] for a in rw.axes)
        pi = D.path_integral_nd(sde, x0, T, axes, slices, convention="trapezoid")
        peak = float(jnp.max(pi.density))
        gaps.append(float(jnp.max(jnp.abs(rw.density[::stride, ::stride] - pi.density))) / peak)
    # Measured 2.2e-3 and 1.05e-3 of the peak: first order (the walk's O(Δt) dominates).
    assert gaps[1] < 1.5e-3 and 1.6 < gaps[0] / gaps[1] < 2.6
    # Fokker–Planck, started at t0 = 0.1 from the path integral, against the path integral at T
    # on two grids: the gap is FP's O(h²) error (plus the path integral's few 1e-3), so it must
    # shrink by about (h1/h2)² = 1.36 from h = 0.128 to h = 0.110 (measured 1.7e-2 → 1.1e-2).
    # Both grids run on a 43 x 43 state (`pad_to`: the coarse grid's extra cells inactive), so
    # that one program serves both: one trace and compilation fewer (1.7 s of CPU). Padding
    # moves the coarse gap by 2e-7 relative, the solver's rtol (its error norm also counts the
    # padded cells); the fine grid's is unchanged.
    fp_gaps = []
    for m in (37, 43):
        axes = (np.linspace(-2.2, 2.4, m), np.linspace(-2.4, 2.2, m))
        pi = D.path_integral_nd(sde, x0, T, axes, 8, convention="trapezoid")
        start = D.path_integral_nd(sde, x0, 0.1, axes, 8, convention="trapezoid")
        fp = D.fokker_planck_nd(
            sde, start.density / start.mass, axes, 0.1, T, rtol=1e-7, atol=1e-10, pad_to=43
        )
        fp_gaps.append(float(jnp.max(jnp.abs(fp.density - pi.density)) / jnp.max(pi.density)))
    assert fp_gaps[1] < fp_gaps[0] / 1.3 and fp_gaps[1] < 1.5e-2
    assert float(fp.mass_defect) < 1e-12


def test_fokker_planck_nd_large_grids_solve_matrix_free_as_the_dense_solve(monkeypatch):
    """Above `DENSE_MAX_CELLS` cells the implicit stages are solved by Newton on matrix-free
    GMRES instead of a dense LU: the same density to rounding, the mass kept as well."""
    from dynopt._densities import fokker_planck as F

    sde = D.VectorSDE(lambda x, t: jnp.stack([-x[0] + 0.8 * x[1], -0.8 * x[0] - x[1] ** 3]), ALPHA)
    axes = (np.linspace(-2.0, 2.0, 19), np.linspace(-2.1, 1.9, 17))  # 323 cells
    assert 19 * 17 > F.DENSE_MAX_CELLS
    start = D.gaussian_density(D.mesh_points(axes), jnp.array([0.3, -0.2]), 0.2 * jnp.eye(2))
    start = start / (jnp.sum(start) * (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0]))
    matrix_free = D.fokker_planck_nd(sde, start, axes, 0.0, 0.4, mass_tol=None)
    monkeypatch.setattr(F, "DENSE_MAX_CELLS", 19 * 17)
    dense = D.fokker_planck_nd(sde, start, axes, 0.0, 0.4, mass_tol=None)
    peak = float(jnp.max(dense.density))
    assert float(jnp.max(jnp.abs(matrix_free.density - dense.density))) < 1e-10 * peak
    assert float(matrix_free.mass_defect) < 1e-12 and float(dense.mass_defect) < 1e-12


def test_fokker_planck_nd_ignores_the_drift_on_its_padding():
    """`pad_to` cells are inactive, but the drift was evaluated on their faces: log(4.6 - x - y),
    finite on the grid's cells and faces (x + y <= 4.33) and not beyond, reached the outflow sums
    as NaN * 0 and the solve failed (max_steps). Masked there, the padding changes the result only
    through the adaptive steps (the error norm counts the padded zeros): to the solver's rtol."""
    sde = D.VectorSDE(lambda x, t: -x + 0.1 * jnp.log(4.6 - x[0] - x[1]), ALPHA)
    axes = (np.linspace(-2.0, 2.0, 7),) * 2  # padded to 9 points, up to 3.33
    h = axes[0][1] - axes[0][0]
    init = D.short_time_density_nd(sde, np.zeros(2), 0.2, axes)
    init = init / (jnp.sum(init) * h**2)
    kw = dict(rtol=1e-7, max_steps=500, mass_tol=None)
    ref = D.fokker_planck_nd(sde, init, axes, 0.2, 0.5, **kw)
    res = D.fokker_planck_nd(sde, init, axes, 0.2, 0.5, pad_to=9, **kw)
    peak = float(jnp.max(ref.density))
    np.testing.assert_allclose(res.density, ref.density, rtol=0, atol=1e-7 * peak)
    with pytest.raises(ValueError, match=r"^x0 must be finite, got \[nan, 0\.0\]"):
        D.path_integral_nd(SDE, [np.nan, 0.0], T, axes, 2)


def test_fokker_planck_nd_refuses_a_non_monotone_scheme():
    """The 1-D check in d dimensions: p = (-20x, -y), α = 0.1, h_x = 0.6, cell Péclet up to 360
    on axis 0. The absorbing faces fed in mass up to 13.9 and the density dipped to -23% of its
    peak; it was returned as a lost mass of -12.9."""
    sde = D.linear_vector_sde(np.diag([-20.0, -1.0]), 0.1)
    axes = (np.linspace(-3.0, 3.0, 11), np.linspace(-3.0, 3.0, 7))
    init = D.gaussian_density(D.mesh_points(axes), jnp.array([2.0, 0.0]), 0.25 * jnp.eye(2))
    init = init / (jnp.sum(init) * 0.6 * 1.0)
    with pytest.raises(
        ValueError,
        match=r"^fokker_planck_nd: the density turned negative, .* mass was created, not lost "
        r".* reaches 360 on axis 0 where the density lives",
    ):
        D.fokker_planck_nd(sde, init, axes, 0.0, 0.3)


def test_stationary_density_nd_under_jit():
    """A traced drift: the gradient check, which read the curl on the host (a concretization
    error under jit), is an `eqx.error_if` error there, as the edge check."""
    axes = (np.linspace(-2.5, 2.5, 21), np.linspace(-2.0, 2.0, 17))

    @jax.jit
    def traced(c):
        A = jnp.array([[-1.0, c], [0.0, -1.0]])  # a gradient field only for c = 0
        return D.stationary_density_nd(D.linear_vector_sde(A, 0.5), axes)

    np.testing.assert_allclose(
        traced(0.0), D.stationary_density_nd(D.linear_vector_sde(-jnp.eye(2), 0.5), axes)
    )
    with pytest.raises(Exception, match="not a gradient field"):  # the error type varies by jax
        traced(1.0).block_until_ready()


def test_short_time_density_nd_is_the_one_slice_ito_propagator():
    """N(x; x0 + p(x0) t, alpha t I) on the tensor grid."""
    axes, t = (np.linspace(-1.5, 2.0, 15), np.linspace(-2.0, 1.0, 13)), 0.1
    exact = D.gaussian_density(
        D.mesh_points(axes), jnp.asarray(X0 + A @ X0 * t), ALPHA * t * jnp.eye(2)
    )
    np.testing.assert_allclose(D.short_time_density_nd(SDE, X0, t, axes), exact, rtol=1e-12)


def test_monte_carlo_nd_refuses_bad_edges_before_simulating(monkeypatch):
    """Bad bin edges, or edges of another dimension than x0 (refused as 'samples must have
    shape (N, 1)'), were refused by the histogram after every path had been simulated."""

    def no_simulation(*args, **kwargs):
        raise AssertionError("simulated before the edges were checked")

    monkeypatch.setattr("dynopt._densities.monte_carlo.simulate", no_simulation)
    good = np.linspace(-2.0, 2.0, 9)
    for edges, match in (
        ((np.array([0.0, 1.0, 3.0]), good), r"^edges\[0\] must be uniform increasing"),
        ((good,), r"^edges must hold one bin-edge array per coordinate of x0 \(2\), got 1"),
        (np.stack([good, good]), r"^edges must be a tuple"),
    ):
        with pytest.raises(ValueError, match=match):
            D.monte_carlo_density_nd(SDE, X0, T, edges, jax.random.key(0), 100, dt=T / 20)
