r"""dynopt.densities with constant anisotropic noise $dx = Ax\,dt + B\,dW$, $D = BB^\top$ (a
matrix `alpha`): every route against the OU closed form, the d = 1 and isotropic reductions, and
the refusals (singular or non-symmetric D, correlated noise for the random walk, D^-1 p not a
gradient, Kramers' degenerate noise).

References are independent of dynopt: the mean e^{At} x0, and the covariance
Σ(t) = Σ∞ - e^{At} Σ∞ e^{Aᵀt} with AΣ∞ + Σ∞Aᵀ + D = 0 (scipy's Lyapunov solver)."""

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

import dynopt
from dynopt import densities as D, sde


# Non-normal, stable; D diagonal with unequal rates, or correlated.
A = np.array([[-1.0, 0.4], [-0.2, -1.5]])
X0, T = np.array([0.5, -0.3]), 0.6
NOISES = {"diag": np.diag([0.5, 1.5]), "full": np.array([[1.0, 0.4], [0.4, 0.8]])}
AXES = (np.linspace(-3.0, 3.0, 45), np.linspace(-3.6, 3.6, 45))


def ou_moments(Dm, t, x0=X0, a=A):
    """Mean and covariance of dx = a x dt + B dW, B Bᵀ = Dm, x(0) = x0 (scipy only)."""
    cinf = scipy.linalg.solve_continuous_lyapunov(a, -Dm)
    E = scipy.linalg.expm(a * t)
    return E @ x0, cinf - E @ cinf @ E.T


def exact(Dm, t=T):
    """N(x; mean, cov) of the closed form, in jnp (the routes evaluate it under vmap)."""
    mean, cov = ou_moments(Dm, t)
    prec, norm = np.linalg.inv(cov), 1.0 / np.sqrt(np.linalg.det(2 * np.pi * cov))
    return lambda x: norm * jnp.exp(-0.5 * (x - mean) @ prec @ (x - mean))


def peak(Dm, t=T):
    mean, cov = ou_moments(Dm, t)
    return float(scipy.stats.multivariate_normal(mean, cov).pdf(mean))


@pytest.mark.parametrize("kind", NOISES)
def test_linear_moments_take_a_diffusion_matrix(kind):
    # Van Loan's block with D in place of αI: the Lyapunov closed form to rounding.
    Dm = NOISES[kind]
    mean, cov = D.linear_moments(A, T, X0, alpha=Dm)
    ref_mean, ref_cov = ou_moments(Dm, T)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-12, atol=1e-14)
    pts = np.array([[0.1, -0.2], [0.7, 0.3]])
    ref = scipy.stats.multivariate_normal(ref_mean, ref_cov).pdf(pts)
    np.testing.assert_allclose(D.linear_density_nd(pts, T, X0, A=A, alpha=Dm), ref, rtol=1e-11)


@pytest.mark.parametrize("kind", NOISES)
def test_path_integral_and_short_time_match_the_closed_form(kind):
    # Midpoint slices with the kernel N(r; 0, D eps): measured 1.4e-4 of the peak (diag and
    # full) at 12 slices on h = 0.14, 0.16 (h / sqrt(λmin(D) eps) <= 0.8: the quadrature is
    # spectral), so 1e-3 leaves room for nothing but the slicing error.
    Dm = NOISES[kind]
    sde_ = D.linear_vector_sde(A, Dm)
    res = D.path_integral_nd(sde_, X0, T, AXES, 12, mass_tol=1e-4)
    assert float(res.error(exact(Dm))) < 1e-3 * peak(Dm)
    assert abs(float(res.mass) - 1.0) < 1e-4
    # The one-slice start N(x0 + p t, D t) is the exact law to O(t): at t = 0.05 its error is
    # 6.0% of the peak (~t |A|; diag and full), and at t = 0.0125 a quarter of it (1.5%).
    errs = []
    for t in (0.05, 0.0125):
        ax = tuple(np.linspace(c - 1.0, c + 1.0, 81) for c in X0)
        st = D.short_time_density_nd(sde_, X0, t, ax)
        pts = jnp.stack(jnp.meshgrid(*map(jnp.asarray, ax), indexing="ij"), axis=-1)
        ref = scipy.stats.multivariate_normal(*ou_moments(Dm, t)).pdf(np.asarray(pts))
        errs.append(float(np.max(np.abs(np.asarray(st) - ref))) / peak(Dm, t))
    assert errs[0] < 0.1
    assert 3.0 < errs[0] / errs[1] < 5.0  # first order in t


@pytest.mark.parametrize("kind", NOISES)
def test_fokker_planck_mixed_derivatives_converge_at_second_order(kind):
    # Finite volumes with J_i = p_i P - ½ Σ_j D_ij ∂_j P: O(h²), so halving h quarters the error
    # (without the mixed term the full D's error is 14% at 45²). Measured: diag 4.5% -> 1.2%,
    # full 4.9% -> 1.3% of the peak (ratios 3.6, 3.7); mass defects <= 6.7e-16.
    Dm = NOISES[kind]
    sde_ = D.linear_vector_sde(A, Dm)
    t0 = 0.2
    mean0, cov0 = ou_moments(Dm, t0)
    errs = []
    for m in (23, 45):
        ax = (np.linspace(-3.0, 3.0, m), np.linspace(-3.6, 3.6, m))
        pts = jnp.stack(jnp.meshgrid(*map(jnp.asarray, ax), indexing="ij"), axis=-1)
        init = D.gaussian_density(pts, mean0, cov0)
        init = init / (jnp.sum(init) * (ax[0][1] - ax[0][0]) * (ax[1][1] - ax[1][0]))
        res = D.fokker_planck_nd(sde_, init, ax, t0, T, mass_tol=1e-3)
        assert float(res.mass_defect) < 1e-12
        errs.append(float(res.error(exact(Dm))) / peak(Dm))
    assert errs[1] < 0.03
    assert 3.0 < errs[0] / errs[1] < 5.5


@pytest.mark.parametrize("kind", NOISES)
def test_monte_carlo_samples_have_the_ou_moments(kind):
    # ShARK paths with B = chol(D): the sample mean and covariance within 5 standard errors of
    # the exact ones (the time step's weak error, O(dt²) for additive noise, is far below).
    Dm = NOISES[kind]
    n = 20_000
    xs = np.asarray(
        D.monte_carlo_samples_nd(D.linear_vector_sde(A, Dm), X0, T, jax.random.key(0), n, dt=0.01)
    )
    mean, cov = ou_moments(Dm, T)
    se_mean = np.sqrt(np.diag(cov) / n)
    se_cov = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / n)
    assert np.all(np.abs(xs.mean(axis=0) - mean) < 5 * se_mean)
    assert np.all(np.abs(np.cov(xs.T) - cov) < 5 * se_cov)


def test_random_walk_takes_diagonal_noise_and_refuses_correlated_noise():
    # Per-axis spacings sqrt(D_ii dt): first order in dt (3.2e-3 -> 1.6e-3 of the peak).
    Dm = NOISES["diag"]
    sde_ = D.linear_vector_sde(A, Dm)
    window = [(-3.0, 3.0), (-4.0, 4.0)]
    errs = []
    for dt in (0.004, 0.002):
        res = D.random_walk_nd(sde_, X0, T, dt, window)
        hs = [float(a[1] - a[0]) for a in res.axes]
        np.testing.assert_allclose(hs, 2 * np.sqrt(np.diag(Dm) * dt), rtol=1e-12)
        errs.append(float(res.error(exact(Dm))) / peak(Dm))
    assert errs[1] < 3e-3
    assert 1.6 < errs[0] / errs[1] < 2.5
    with pytest.raises(ValueError, match=r"^random_walk_nd: .*diagonal diffusion matrix only.*"):
        D.random_walk_nd(D.linear_vector_sde(A, NOISES["full"]), X0, T, 0.002, window)


def test_stationary_law_needs_detailed_balance():
    # p = -D ∇V / 2 with V = xᵀKx/2 (i.e. A = -DK/2): D⁻¹p = -∇(V/2) and P∞ = N(0, K⁻¹), the
    # Lyapunov solution of AΣ + ΣAᵀ + D = 0. U is exact (a linear drift's line integral), and
    # the closed form is normalised on the grid as the route is (the tails the grid cuts off
    # moved both by 1.1e-7).
    Dm = NOISES["full"]
    K = np.array([[2.0, 0.5], [0.5, 1.5]])
    a = -0.5 * Dm @ K
    cinf = scipy.linalg.solve_continuous_lyapunov(a, -Dm)
    np.testing.assert_allclose(cinf, np.linalg.inv(K), rtol=1e-12)
    ax = (np.linspace(-4.0, 4.0, 61), np.linspace(-4.5, 4.5, 61))
    dens = D.stationary_density_nd(D.linear_vector_sde(a, Dm), ax)
    pts = np.stack(np.meshgrid(*ax, indexing="ij"), axis=-1)
    ref = scipy.stats.multivariate_normal(np.zeros(2), cinf).pdf(pts)
    ref = ref / (ref.sum() * (ax[0][1] - ax[0][0]) * (ax[1][1] - ax[1][0]))  # as the route
    np.testing.assert_allclose(dens, ref, rtol=0, atol=1e-12 * ref.max())
    # p = -Kx is a gradient, but D⁻¹K is not symmetric with the correlated D: no detailed
    # balance, no closed form: refused.
    with pytest.raises(ValueError, match=r"^D\^-1 p is not a gradient field.*detailed balance"):
        D.stationary_density_nd(D.linear_vector_sde(-K, Dm), ax)


def test_d1_and_isotropic_reductions():
    # alpha = [[a]] in d = 1 and a I in d = 2 give the scalar routes' densities to rounding.
    a, g = 0.7, np.linspace(-3.0, 3.5, 61)
    scalar, matrix = D.linear_sde(-1.2, a), D.linear_vector_sde([[-1.2]], [[a]])
    for route in (
        lambda s: D.path_integral(s, 0.4, 0.5, g, 8).density,
        lambda s: D.short_time_density(s, 0.4, 0.1, g),
        lambda s: D.stationary_density(s, g),
        lambda s: D.random_walk(s, 0.4, 0.5, 0.01, (-3.0, 3.5)).density,
    ):
        np.testing.assert_allclose(route(matrix), route(scalar), rtol=1e-12, atol=1e-15)
    init = D.short_time_density(scalar, 0.4, 0.1, g)
    np.testing.assert_allclose(
        D.fokker_planck(matrix, init, g, 0.1, 0.5, pad_to=64).density,
        D.fokker_planck(scalar, init, g, 0.1, 0.5, pad_to=64).density,
        rtol=1e-9,
        atol=1e-12,
    )
    iso, mat = D.linear_vector_sde(A, a), D.linear_vector_sde(A, a * np.eye(2))
    np.testing.assert_allclose(
        D.path_integral_nd(mat, X0, T, AXES, 6).density,
        D.path_integral_nd(iso, X0, T, AXES, 6).density,
        rtol=1e-12,
        atol=1e-14,
    )
    assert iso.isotropic and not mat.isotropic
    np.testing.assert_array_equal(iso.diffusion_matrix(2), a * np.eye(2))


class _DiagonalNoise(sde.AbstractNoisyFlow):
    # Gradient flow with constant noise G dW, G given (a flow a user writes).
    G: jax.Array
    additive: ClassVar[bool] = True

    @property
    def deterministic(self):
        return dynopt.flows.GradientFlow()

    def diffusion(self, t, state, problem):
        return self.G


def test_from_flow_reads_a_constant_noise_matrix():
    # Gradient flow on L = xᵀKx/2 with noise G dW: dx = -Kx dt + G dW, D = G Gᵀ.
    K = np.array([[1.0, 0.2], [0.2, 1.5]])
    well = dynopt.Problem(lambda x: 0.5 * x @ jnp.asarray(K) @ x, jnp.zeros(2))
    G = jnp.array([[0.8, 0.0], [0.5, 1.1]])
    model = D.as_vector_sde(_DiagonalNoise(G), well)
    np.testing.assert_allclose(model.alpha, G @ G.T, rtol=1e-15)
    ax = (np.linspace(-2.5, 2.5, 41), np.linspace(-3.0, 3.0, 41))
    a = D.path_integral_nd(_DiagonalNoise(G), X0, 0.5, ax, 8, problem=well, mass_tol=1e-4)
    b = D.path_integral_nd(D.linear_vector_sde(-K, G @ G.T), X0, 0.5, ax, 8, mass_tol=1e-4)
    np.testing.assert_allclose(a.density, b.density, rtol=1e-12, atol=1e-15)
    # Isotropic noise still gives the scalar alpha (the old path, bit for bit).
    iso = D.as_vector_sde(_DiagonalNoise(0.6 * jnp.eye(2)), well)
    g = 0.6 * jnp.eye(2)
    assert iso.isotropic and float(iso.alpha) == float((g @ g.T)[0, 0])
    # Kramers: noise on the velocity only, D singular: no density on the whole state.
    singular = r"Kramers's diffusion matrix g g\^T is singular \(rank 2 of 4"
    with pytest.raises(ValueError, match=singular):
        D.as_vector_sde(sde.Kramers(1.0, 0.25), well)


def test_bad_diffusion_matrices_are_named():
    drift = lambda x, t: -x
    with pytest.raises(ValueError, match=r"^alpha must be symmetric"):
        D.VectorSDE(drift, np.array([[1.0, 0.3], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"^alpha must be positive definite .* eigenvalues"):
        D.VectorSDE(drift, np.array([[1.0, 1.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"^alpha must be positive definite"):
        D.VectorSDE(drift, np.diag([1.0, -0.5]))
    with pytest.raises(ValueError, match=r"^alpha must be a square \(d, d\) matrix"):
        D.VectorSDE(drift, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"^alpha must be finite"):
        D.VectorSDE(drift, np.array([[1.0, np.nan], [np.nan, 1.0]]))
    for call in (
        lambda: D.linear_vector_sde(A, np.eye(3)),
        lambda: D.linear_moments(A, T, X0, alpha=np.eye(3)),
    ):
        with pytest.raises(ValueError, match=r"^alpha \(the .*D\) must have A's shape \(2, 2\)"):
            call()
    cube = (np.linspace(-1.0, 1.0, 5),) * 3
    with pytest.raises(ValueError, match=r"^alpha, the diffusion matrix D, must have shape \(3, 3"):
        D.path_integral_nd(D.VectorSDE(drift, np.eye(2)), np.zeros(3), 0.5, cube, 2)
    with pytest.raises(ValueError, match=r"^alpha must be a scalar, .* or a \(d, d\) diffusion"):
        D.VectorSDE(drift, np.array([0.5, 1.5]))
