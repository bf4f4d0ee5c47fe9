"""dynopt.densities: four routes to P(x, t | x0) against exact densities, with fitted orders;
the Onsager–Machlup action and its boundary form; Itô's lemma; GBM and Black–Scholes."""

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import densities as D


ALPHA, X0 = 0.5, 0.3
LIN = D.linear_sde(1.0, ALPHA)  # post 7, eq. (49)


def _exact(T, rate=1.0):
    return lambda x: D.linear_density(x, T, X0, rate=rate, alpha=ALPHA)


def test_mehler_identity():
    # Post 7 [note]: e^{-T/2} e^{(xb^2 - xa^2)/2α} K_Mehler is the exact density of
    # dx = x dt + √α dW.
    T, xb = 0.7, jnp.linspace(-3.0, 5.0, 17)
    lhs = (
        jnp.exp(-T / 2) * jnp.exp((xb**2 - X0**2) / (2 * ALPHA)) * D.mehler_kernel(xb, X0, T, ALPHA)
    )
    np.testing.assert_allclose(lhs, _exact(T)(xb), rtol=1e-12, atol=0)


def test_path_integral_conventions_orders():
    # Same shapes as the experiment's quick mode (shared compilations).
    T, grid, ns = 0.5, np.linspace(-4.0, 4.5, 341), np.array([8, 16, 32, 64])
    eps = T / ns
    err = {
        c: np.array(
            [
                float(D.path_integral(LIN, X0, T, grid, int(n), convention=c).error(_exact(T)))
                for n in ns
            ]
        )
        for c in ("ito", "midpoint")
    }
    # Itô (pre-point = Euler–Maruyama kernel, no Jacobian): order 1; midpoint with its Jacobian
    # (1 - ε p'/2): order 2 (its mean factor (1+ε/2)/(1-ε/2) = e^ε + O(ε³)).
    assert 0.9 < float(dynopt.fit_order(eps, err["ito"])) < 1.1
    assert 1.9 < float(dynopt.fit_order(eps, err["midpoint"])) < 2.1
    assert err["midpoint"][-1] < 5e-6
    # Each convention needs its own Jacobian: the midpoint rule without it carries exp(+∫p'/2 dt)
    # = e^{T/2} for p = x, at every ε.
    bad = D.path_integral(LIN, X0, T, grid, 64, jacobian=False, mass_tol=None)
    assert abs(float(bad.mass) - np.exp(T / 2)) < 2e-3
    np.testing.assert_allclose(bad.density / bad.mass, _exact(T)(bad.x), atol=5e-4)


def test_fokker_planck_order_and_mass():
    T, t0 = 1.0, 0.5
    hs, errs = [], []
    for m in (49, 65, 97, 129):
        g = np.linspace(-6.0, 8.0, m)
        res = D.fokker_planck(LIN, _exact(t0)(jnp.asarray(g)), g, t0, T, pad_to=129)
        hs.append(g[1] - g[0])
        errs.append(float(res.error(_exact(T))))
        assert float(res.mass_defect) < 1e-12  # mass in the grid + outflow is conserved
        assert 0 < float(res.lost_mass) < 1e-6  # the exact tails beyond [-6, 8] are ~1e-7
    assert 1.9 < float(dynopt.fit_order(np.array(hs), np.array(errs))) < 2.1
    # A grid that does not cover the mass: reported, or refused.
    g = np.linspace(-2.0, 3.0, 65)
    with pytest.raises(ValueError, match="lost mass"):
        D.fokker_planck(LIN, _exact(t0)(jnp.asarray(g)), g, t0, T, pad_to=129, mass_tol=1e-2)
    res = D.fokker_planck(LIN, _exact(t0)(jnp.asarray(g)), g, t0, T, pad_to=129, mass_tol=None)
    assert float(res.lost_mass) > 0.05 and float(res.mass_defect) < 1e-12


def test_random_walk_order():
    T, dts = 0.5, np.array([1 / 50, 1 / 100, 1 / 200, 1 / 400])
    errs = np.array(
        [float(D.random_walk(LIN, X0, T, dt, (-4.0, 4.5)).error(_exact(T))) for dt in dts]
    )
    assert 0.9 < float(dynopt.fit_order(dts, errs)) < 1.1
    assert errs[-1] < 2e-3
    with pytest.raises(ValueError, match=r"\|p_i\| ds / alpha"):
        D.random_walk(LIN, X0, T, 1 / 10, (-4.0, 4.5))  # q± leave [0, 1] at |x| > √(α/dt)
    with pytest.raises(ValueError, match="integer"):
        D.random_walk(LIN, X0, T, 0.3, (-4.0, 4.5))


def test_monte_carlo_matches_exact_within_sampling_error(getkey):
    T, edges = 0.5, np.linspace(-3.0, 4.0, 36)
    cdf = lambda x: D.linear_cdf(x, T, X0, rate=1.0, alpha=ALPHA)
    samples = D.monte_carlo_samples(LIN, X0, T, getkey(), 10_000, dt=T / 60)  # as the experiment
    pi = np.diff(np.asarray(cdf(jnp.asarray(edges))))
    ns = np.array([1000, 3000, 10_000])
    tv = np.array(
        [
            float(D.total_variation(D.histogram_density(samples[:n], edges, T), edges, cdf))
            for n in ns
        ]
    )
    # E|π̂ - π| ≈ sqrt(2π(1-π)/(πN)) per bin (ShARK's weak error at dt = T/60 is negligible).
    predicted = 0.5 * np.sum(np.sqrt(2 * pi * (1 - pi) / np.pi))[None] / np.sqrt(ns)
    assert np.all((tv / predicted > 0.5) & (tv / predicted < 2.0)), tv / predicted


def test_double_well_routes_agree_with_stationary_density():
    # p = x - x³ = -V', stationary law ∝ exp((2/α)∫p dx) = exp(-2V/α).
    sde = D.ScalarSDE(D.Polynomial([0.0, 1.0, 0.0, -1.0]), ALPHA)
    grid = np.linspace(-2.5, 2.5, 129)
    stat = D.stationary_density(sde, grid)
    xg = jnp.asarray(grid)
    V = xg**4 / 4 - xg**2 / 2
    closed = jnp.exp(-2 * V / ALPHA)
    np.testing.assert_allclose(stat, closed / (jnp.sum(closed) * (grid[1] - grid[0])), rtol=1e-12)
    T = 6.0  # from the barrier top x0 = 0: symmetric, so no slow Kramers inter-well mode
    fp = D.fokker_planck(sde, D.short_time_density(sde, 0.0, 0.05, grid), grid, 0.05, T, pad_to=129)
    peak = float(jnp.max(stat))
    assert float(jnp.max(jnp.abs(fp.density - stat))) < 5e-3 * peak
    # Path integral: for a nonlinear drift the Itô and midpoint kernels are first order (the
    # midpoint's second order above is special to linear p); the trapezoid rule (eq. 60) with its
    # Jacobian is far closer at the same ε.
    g = np.linspace(-2.5, 2.5, 341)
    stat_g = D.stationary_density(sde, g)

    def err(n, c):
        return float(
            jnp.max(jnp.abs(D.path_integral(sde, 0.0, T, g, n, convention=c).density - stat_g))
        )

    for c in ("ito", "midpoint"):
        e1, e2 = err(96, c), err(192, c)
        assert e1 < 0.06 * peak and 1.8 < e1 / e2 < 2.2, (c, e1, e2)
    assert err(96, "trapezoid") < 1e-3 * peak


def test_onsager_machlup_boundary_identity():
    # Time-dependent drift, so the ∫∂_t p dx part of V (eq. 69) is exercised.
    sde = D.ScalarSDE(lambda x, t: jnp.sin(t) * x - x**3 / 3 + 0.5, 0.7)

    def path(t):
        return jnp.cos(2 * t) + 0.3 * t

    s66 = D.action_eq66(sde, path, 0.0, 1.5)
    s68 = D.action_eq68(sde, path, 0.0, 1.5)
    assert abs(float(s66 - s68)) < 1e-12 * max(1.0, abs(float(s66)))
    assert abs(float(D.boundary_term(sde, path, 0.0, 1.5))) > 0.1  # the identity is not trivial
    # The discrete midpoint action of the sampled path converges to eq. (66) at order 2.
    ns = np.array([16, 32, 64, 128])
    errs = []
    for n in ns:
        ts = jnp.linspace(0.0, 1.5, int(n) + 1)
        errs.append(abs(float(D.onsager_machlup_action(sde, ts, jax.vmap(path)(ts)) - s66)))
    assert 1.9 < float(dynopt.fit_order(1.5 / ns, np.array(errs))) < 2.1


def test_ito_lemma_hand_derived():
    mu, sig, theta, s = 0.1, 0.3, 2.0, 0.4
    # ln S on GBM (post 8, eq. 71).
    d, g = D.ito_lemma(lambda t, x: jnp.log(x), lambda t, x: mu * x, lambda t, x: sig * x, 0.0, 1.7)
    assert abs(float(d) - (mu - sig**2 / 2)) < 1e-14 and abs(float(g) - sig) < 1e-14
    # x² on OU: drift -2θx² + s², diffusion 2sx.
    x = 0.8
    d, g = D.ito_lemma(lambda t, x: x**2, lambda t, x: -theta * x, lambda t, x: s, 0.0, x)
    assert abs(float(d) - (-2 * theta * x**2 + s**2)) < 1e-14 and abs(float(g) - 2 * s * x) < 1e-14
    # e^{θt} x on OU is a martingale: drift 0, diffusion s e^{θt}.
    d, g = D.ito_lemma(
        lambda t, x: jnp.exp(theta * t) * x, lambda t, x: -theta * x, lambda t, x: s, 0.5, x
    )
    assert abs(float(d)) < 1e-13 and abs(float(g) - s * np.exp(theta * 0.5)) < 1e-13
    # x1 x2 in 2-D with a full σ: drift x2 b1 + x1 b2 + (σσᵀ)_12, diffusion (x2, x1) σ.
    b = jnp.array([0.3, -0.2])
    S = jnp.array([[0.5, 0.1, 0.0], [0.2, 0.4, 0.3]])
    xv = jnp.array([1.5, -0.7])
    d, g = D.ito_lemma(lambda t, x: x[0] * x[1], lambda t, x: b, lambda t, x: S, 0.0, xv)
    assert abs(float(d) - float(xv[1] * b[0] + xv[0] * b[1] + (S @ S.T)[0, 1])) < 1e-14
    np.testing.assert_allclose(g, jnp.array([xv[1], xv[0]]) @ S, atol=1e-14)


def test_gbm_lognormal_and_black_scholes(getkey):
    mu, sig, T, s0 = 0.05, 0.4, 1.0, 100.0
    s = jnp.linspace(1e-3, 1500.0, 150_001)  # the tail beyond 1500 is ~1e-11
    ds = float(s[1] - s[0])
    assert abs(float(jnp.sum(D.lognormal_density(s, T, s0, mu=mu, sigma=sig))) * ds - 1) < 1e-6
    # ln S by Itô's lemma is additive-noise: ShARK on dx = (r - σ²/2)dt + σ dW is exact in law.
    gbm = D.GBM(mu, sig)
    x = D.monte_carlo_samples(gbm.log_sde(), np.log(s0), T, getkey(), 10_000, dt=T / 60)
    n = x.shape[0]
    mean, var = float(jnp.mean(x)) - np.log(s0), float(jnp.var(x))
    assert abs(mean - (mu - sig**2 / 2) * T) < 4 * np.sqrt(sig**2 * T / n)
    assert abs(var - sig**2 * T) < 4 * sig**2 * T * np.sqrt(2 / n)
    assert abs(var - sig * T) > 20 * sig**2 * T * np.sqrt(2 / n)  # the printed "σ" is not α
    # Black–Scholes: MC under μ = r against the closed form.
    r, K = 0.03, 110.0
    xr = D.monte_carlo_samples(D.GBM(r, sig).log_sde(), np.log(s0), T, getkey(), 10_000, dt=T / 60)
    pay = D.discounted_payoff(jnp.exp(xr), K, r, T)
    se = float(jnp.std(pay)) / np.sqrt(n)
    assert abs(float(jnp.mean(pay)) - float(D.black_scholes_call(s0, K, r, sig, T))) < 4 * se


def test_bad_input():
    with pytest.raises(ValueError, match="alpha must be > 0"):
        D.ScalarSDE(lambda x, t: x, 0.0)
    with pytest.raises(ValueError, match=r"^samples must be a non-empty 1-D array"):
        D.histogram_density(jnp.zeros((4, 2)), np.linspace(-1, 1, 5), 1.0)
    with pytest.raises(ValueError, match=r"^samples must be a non-empty 1-D array"):
        D.histogram_density(jnp.zeros(0), np.linspace(-1, 1, 5), 1.0)
    with pytest.raises(ValueError, match=r"^samples must have shape \(N, 2\) with N >= 1"):
        D.histogram_density_nd(jnp.zeros((0, 2)), (np.linspace(-1, 1, 5),) * 2, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        D.linear_sde(1.0, -1.0)
    with pytest.raises(ValueError, match="alpha"):
        D.linear_density(jnp.zeros(3), 1.0, 0.0, rate=1.0, alpha=0.0)
    with pytest.raises(ValueError, match="S0 must be > 0"):
        D.lognormal_density(jnp.ones(3), 1.0, 0.0, mu=0.1, sigma=0.2)
    with pytest.raises(ValueError, match="S0"):
        D.black_scholes_call(-1.0, 1.0, 0.0, 0.2, 1.0)
    with pytest.raises(ValueError, match="S0"):
        D.GBM(0.1, 0.2).init(-5.0)
    with pytest.raises(ValueError, match="sigma"):
        D.GBM(0.1, 0.0)
    with pytest.raises(ValueError, match="uniform"):
        D.path_integral(LIN, 0.0, 1.0, np.array([0.0, 1.0, 3.0]), 4)
    with pytest.raises(ValueError, match="convention"):
        D.path_integral(LIN, 0.0, 1.0, np.linspace(-1, 1, 5), 4, convention="stratonovich")
    with pytest.raises(ValueError, match="num_slices"):
        D.path_integral(LIN, 0.0, 1.0, np.linspace(-1, 1, 5), 0)
    with pytest.raises(ValueError, match="lost mass"):  # grid misses most of the mass
        D.path_integral(LIN, X0, 1.0, np.linspace(-0.5, 0.5, 41), 8)
    with pytest.raises(ValueError, match="x0"):
        D.random_walk(LIN, 5.0, 1.0, 0.01, (-1.0, 1.0))


def test_flows_with_noise_are_density_models():
    """Langevin(T) on L = λx²/2 is dx = -λx dt + √(2T) dW: every route takes the flow and its
    problem directly and gives the OU density; noise that is not isotropic and additive
    (Kramers: on the velocity only; SGDNoise: state-dependent) is refused, saying why."""
    lam, temp, T = 1.5, 0.25, 0.5
    well = dynopt.Problem(lambda x: 0.5 * lam * jnp.sum(x * x), jnp.zeros(1))
    flow, ou = dynopt.sde.Langevin(temp), D.linear_sde(-lam, 2 * temp)
    g = np.linspace(-2.0, 2.5, 91)
    a = D.path_integral(flow, X0, T, g, 8, problem=well)
    b = D.path_integral(ou, X0, T, g, 8)
    # alpha = (√(2T))² from the diffusion matrix: equal to 2T up to one rounding.
    np.testing.assert_allclose(a.density, b.density, rtol=1e-13, atol=1e-15)
    exact = lambda x: D.linear_density(x, T, X0, rate=-lam, alpha=2 * temp)
    assert float(a.error(exact)) < 1e-3 * float(jnp.max(b.density))
    # Every route converts through the same adapter.
    model = D.as_vector_sde(flow, well)
    np.testing.assert_allclose(model.alpha, 2 * temp, rtol=1e-15)
    np.testing.assert_array_equal(model.p(jnp.array([0.7]), 0.0), jnp.array([-lam * 0.7]))
    with pytest.raises(ValueError, match="isotropic additive noise"):
        D.path_integral(dynopt.sde.Kramers(1.0, temp), X0, T, g, 8, problem=well)
    with pytest.raises(ValueError, match="pass the problem"):
        D.path_integral(flow, X0, T, g, 8)
    # The stationary law and the one-slice start take the flow and its problem like the rest.
    np.testing.assert_allclose(
        D.stationary_density(flow, g, problem=well), D.stationary_density(ou, g), rtol=1e-12
    )
    np.testing.assert_allclose(
        D.short_time_density(flow, X0, 0.05, g, problem=well),
        D.short_time_density(ou, X0, 0.05, g),
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match="pass the problem"):
        D.stationary_density(flow, g)


def test_fokker_planck_failure_is_a_solve_error():
    """The implicit method of lines runs through dynopt's one diffrax entry point: a failed solve
    is a SolveError naming the fix, not an equinox runtime error."""
    g = np.linspace(-4.0, 4.5, 49)
    init = D.linear_density(jnp.asarray(g), 0.25, X0, rate=1.0, alpha=ALPHA)
    with pytest.raises(dynopt.SolveError, match=r"fokker_planck \(Kvaerno5\) failed.*max_steps"):
        D.fokker_planck(LIN, init, g, 0.25, 0.5, max_steps=2)
    # Bad options are named before any solve (they read as a budget exhausted, or passed).
    with pytest.raises(ValueError, match="t1 must be"):
        D.fokker_planck(LIN, init, g, 0.25, np.inf)
    with pytest.raises(ValueError, match="rtol must be > 0"):
        D.fokker_planck(LIN, init, g, 0.25, 0.5, rtol=-1.0)
    with pytest.raises(ValueError, match="max_steps must be a positive integer"):
        D.fokker_planck(LIN, init, g, 0.25, 0.5, max_steps=0)


def test_stationary_density_refuses_a_law_piled_on_the_grid_edge():
    """An unstable drift (p = +x: exp(x²/α) is not normalisable) or a grid that cuts a confined
    law off puts the normalised mass on the end points: named, not returned as a density;
    under `jit` (a traced drift) the same check is an `eqx.error_if` error."""
    grid = np.linspace(-3.0, 3.0, 61)
    with pytest.raises(ValueError, match="drift does not confine"):
        D.stationary_density(D.ScalarSDE(D.Polynomial([0.0, 1.0]), ALPHA), grid)
    ou = D.ScalarSDE(D.Polynomial([0.0, -1.0]), ALPHA)
    with pytest.raises(ValueError, match="edge points"):  # N(0, α/2) cut at ±0.2σ
        D.stationary_density(ou, np.linspace(-0.1, 0.1, 11))
    cut = D.stationary_density(ou, np.linspace(-0.1, 0.1, 11), edge_tol=None)
    np.testing.assert_allclose(float(jnp.sum(cut) * 0.02), 1.0, rtol=1e-12)  # still normalised
    D.stationary_density(ou, grid)  # N(0, α/2) on ±6σ: the edges hold ~e^{-18} of the mass

    @jax.jit
    def traced(c):
        return D.stationary_density(D.ScalarSDE(D.Polynomial([0.0, c]), ALPHA), grid)

    assert np.isfinite(traced(-1.0)).all()
    with pytest.raises(Exception, match="edge_tol"):  # the runtime error type varies by jax
        traced(1.0).block_until_ready()


def test_path_integral_refuses_mass_created_by_a_grid_too_coarse_for_the_slices():
    """h = 0.2 against the kernel width √(αε) = 0.088 (64 slices): each slice's trapezoid sum of
    its kernel exceeds 1 by ~2exp(-2π²αε/h²) = 4%, compounding to a mass of 14.5 (max error 15x
    the peak). It was returned as a lost mass of -13.5 under mass_tol; now it is named."""
    ou, g = D.linear_sde(-1.0, ALPHA), np.linspace(-3.0, 3.0, 31)
    created = r"^path_integral \(midpoint\): mass was created, not lost: the density's mass is 14"
    advice = r".*2\.26 times .* = 0\.0884.*at most 12 slices"
    with pytest.raises(ValueError, match=created + advice):
        D.path_integral(ou, X0, 1.0, g, 64)
    res = D.path_integral(ou, X0, 1.0, g, 64, mass_tol=None)  # accepted: reported, not refused
    assert float(res.lost_mass) < -13.0
    # The advice holds: 12 slices resolve the kernel (√(αε) = 0.204 ≥ h).
    exact = lambda x: D.linear_density(x, 1.0, X0, rate=-1.0, alpha=ALPHA)
    res = D.path_integral(ou, X0, 1.0, g, 12)
    assert abs(float(res.lost_mass)) < 1e-6 and float(res.error(exact)) < 0.01


def test_fokker_planck_refuses_a_non_monotone_scheme_naming_the_peclet_number():
    """p = -20x, α = 0.1, h = 0.1: cell Péclet |p|h/α up to 60 where the density starts, far past
    the central fluxes' monotone limit 1. By t = 0.3 the density went to -17.5% of its peak and
    18% of mass was created, and it was returned; on h = 0.2 the failure (at t = 1: lost mass
    +820) read as 'Widen the grid'."""
    sde = D.linear_sde(-20.0, 0.1)
    cases = (
        (61, 60, r"-1\.6 \(17\.5% of its peak, beyond 1%\) and mass was created"),
        (31, 120, ""),
    )
    for m, peclet, negative in cases:
        g = np.linspace(-3.0, 3.0, m)
        init = np.exp(-0.5 * (g - 2.0) ** 2 / 0.25)
        init /= init.sum() * (g[1] - g[0])
        with pytest.raises(
            ValueError,
            match=rf"^fokker_planck: the density turned negative, to {negative}.*Péclet number "
            rf"\|p_i\| h_i / alpha reaches {peclet} where .* <= alpha / \|p_i\| = 0\.00167",
        ):
            D.fokker_planck(sde, init, g, 0.0, 0.3, pad_to=61)
    res = D.fokker_planck(sde, init, g, 0.0, 0.3, pad_to=61, mass_tol=None)  # reported
    assert float(jnp.min(res.density)) < -float(jnp.max(res.density))
    assert float(res.lost_mass) < -0.5


class _CoolingLangevin(dynopt.sde.AbstractNoisyFlow):
    # Gradient flow with noise √(2T(t)) dW, T(t) = e^{-2t}/2: additive, but not constant in time.
    additive: ClassVar[bool] = True

    @property
    def deterministic(self):
        return dynopt.flows.GradientFlow()

    def diffusion(self, t, state, problem):
        return jnp.sqrt(jnp.exp(-2.0 * t)) * jnp.eye(state.shape[0])


class _DeclaredMultiplicative(_CoolingLangevin):
    # Declares state-dependent noise √(α(1 + x²)): its derivative vanishes at params0 = 0.
    additive: ClassVar[bool] = False

    def diffusion(self, t, state, problem):
        return jnp.diag(jnp.sqrt(0.5 * (1.0 + state**2)))


def test_routes_take_only_constant_isotropic_additive_noise(getkey):
    """The routes read a flow's noise as one α. A noise that cools in time was read at t = 0 (the
    path integral's variance at t = 1 came out 0.432, the exact e^{-2} = 0.135); a flow declaring
    state-dependent noise was taken where its derivative happened to vanish at params0. Both are
    refused, saying why; so are a flow without noise and a problem of another dimension."""
    well = dynopt.Problem(lambda x: 0.5 * jnp.sum(x * x), jnp.zeros(1))
    g = np.linspace(-4.0, 4.0, 41)
    need = "need constant isotropic additive noise"
    cooling = rf"{need}.*_CoolingLangevin's noise changes with time: g g\^T = 1 I at t = 0 but"
    with pytest.raises(ValueError, match=cooling + r" 0\.606531 I at t = 0\.25"):
        D.path_integral(_CoolingLangevin(), 0.0, 1.0, g, 8, problem=well)
    with pytest.raises(ValueError, match=cooling):
        D.monte_carlo_samples(_CoolingLangevin(), 0.0, 1.0, getkey(), 8, dt=0.1, problem=well)
    with pytest.raises(ValueError, match=rf"{need}.*declares state-dependent noise \(additive"):
        D.path_integral(_DeclaredMultiplicative(), 0.0, 1.0, g, 8, problem=well)
    with pytest.raises(ValueError, match=r"diffusion is 0 at t = 0 \(its temperature is 0\)"):
        D.path_integral(dynopt.sde.Langevin(0.0), 0.0, 1.0, g, 8, problem=well)
    plane = dynopt.Problem(lambda x: 0.5 * jnp.sum(x * x), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"^problem has a 2-dimensional state .* has 1 dimension"):
        D.path_integral(dynopt.sde.Langevin(0.25), 0.0, 1.0, g, 8, problem=plane)


def test_random_walk_ignores_the_drift_on_its_padding():
    """The walk's lattice is padded to a power-of-two size: a drift that is finite on the window
    but not beyond (√(4 - x) past x = 4) made it NaN through the padding ('lost mass nan'). The
    result equals that of the same drift made finite outside; a drift that is NaN on the window
    itself is named."""
    f = lambda x, t: jnp.sqrt(4.0 - x) - 2.0 - x
    tame = lambda x, t: jnp.where(x < 4.0, f(jnp.minimum(x, 4.0), t), 0.0)
    res = D.random_walk(D.ScalarSDE(f, ALPHA), 0.0, 1.0, 0.01, (-3.0, 3.0))
    ref = D.random_walk(D.ScalarSDE(tame, ALPHA), 0.0, 1.0, 0.01, (-3.0, 3.0))
    np.testing.assert_array_equal(res.density, ref.density)
    assert abs(float(res.mass) - 1.0) < 1e-6
    with pytest.raises(ValueError, match=r"^random_walk: the drift p\(x, t\) is not finite at"):
        D.random_walk(D.ScalarSDE(lambda x, t: -jnp.sqrt(x), ALPHA), 0.5, 0.5, 0.01, (-1.0, 1.0))


def test_bad_input_is_named():
    """A vector α (read by Monte Carlo as several Brownian motions, a TypeError elsewhere), a 1-D
    start that is not one number, a NaN start (read as 'lost mass nan'), and the SolveError of
    Fokker-Planck, which advised switching to the implicit solver it already uses."""
    scalar = r"^alpha must be a scalar, the one variance rate .* got shape \(2,\)"
    with pytest.raises(ValueError, match=scalar):
        D.ScalarSDE(lambda x, t: -x, np.array([0.5, 2.0]))
    with pytest.raises(ValueError, match=scalar):
        D.VectorSDE(lambda x, t: -x, np.array([0.5, 2.0]))
    g = np.linspace(-4.0, 4.5, 49)
    with pytest.raises(ValueError, match=r"^x0 must be a scalar .* got shape \(2,\)"):
        D.path_integral(LIN, [0.3, 0.2], 0.5, g, 4)
    with pytest.raises(ValueError, match=r"^t1 must be a finite real number, got 'abc'"):
        D.path_integral(LIN, 0.3, "abc", g, 4)  # was float()'s "could not convert"
    for route in (
        lambda: D.path_integral(LIN, np.nan, 0.5, g, 4),
        lambda: D.random_walk(LIN, np.nan, 0.5, 0.01, (-3.0, 3.0)),
        lambda: D.short_time_density(LIN, np.nan, 0.1, g),
    ):
        with pytest.raises(ValueError, match=r"^x0 must be finite, got nan"):
            route()
    init = D.linear_density(jnp.asarray(g), 0.25, X0, rate=1.0, alpha=ALPHA)
    with pytest.raises(dynopt.SolveError, match="max_steps") as err:
        D.fokker_planck(LIN, init, g, 0.25, 0.5, max_steps=2)
    assert "implicit" not in str(err.value)


def test_short_time_density_is_the_one_slice_ito_propagator():
    """N(x; x0 + p(x0) t, alpha t) on the grid, a nonlinear drift (the d = 1 case of
    short_time_density_nd)."""
    dw, x0, t = D.ScalarSDE(D.Polynomial([0.0, 1.0, 0.0, -1.0]), ALPHA), 0.7, 0.05
    g = np.linspace(-2.0, 3.0, 51)
    mean, var = x0 + (x0 - x0**3) * t, ALPHA * t
    exact = np.exp(-0.5 * (g - mean) ** 2 / var) / np.sqrt(2 * np.pi * var)
    np.testing.assert_allclose(D.short_time_density(dw, x0, t, g), exact, rtol=1e-12, atol=0)


def test_monte_carlo_refuses_bad_edges_before_simulating(monkeypatch):
    """Bad bin edges were refused by the histogram, after every path had been simulated: now
    before the first one."""

    def no_simulation(*args, **kwargs):
        raise AssertionError("simulated before the edges were checked")

    monkeypatch.setattr("dynopt._densities.monte_carlo.simulate", no_simulation)
    for edges in ([1.0, 0.0, -1.0], [0.0], np.zeros((2, 3)), [0.0, np.nan, 1.0]):
        with pytest.raises(ValueError, match=r"^edges must be a 1-D increasing array"):
            D.monte_carlo_density(LIN, X0, 0.5, edges, jax.random.key(0), 100, dt=0.05)
