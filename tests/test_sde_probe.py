"""dynopt.sde, found by probing as a user: the moments of the model actually asked for
(`covariance="diagonal"`), the censoring horizon of `first_passage`, and the validation of
schedules, long horizons and closed-form arguments.

References are independent of dynopt: scipy's Lyapunov solvers for stationary covariances, the
Euler recursion $\\theta_k = (1 - \\lambda\\,dt)^k\\theta_0$ for a noiseless first passage.
"""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from dynopt import problems, sde


# l_i(theta) = (1/2) theta^T H theta - q_i . theta: Sigma = Cov(q) is constant (additive noise),
# with correlated coordinates so that dropping the correlations changes the answer.
_H = np.array([1.0, 3.0])
_N, _B, _ETA = 8, 2, 0.1


def _sample_loss(theta, q):
    return 0.5 * jnp.sum(jnp.asarray(_H) * theta * theta) - jnp.dot(q, theta)


def _additive_problem():
    q = np.random.default_rng(0).normal(size=(_N, 2))
    q[:, 1] += 0.8 * q[:, 0]
    return problems.finite_sum(_sample_loss, jnp.asarray(q), jnp.ones(2), batch_size=_B), q


def _noise(q, covariance):
    """kappa * Sigma (or its diagonal): the diffusion matrix of SGDNoise(ETA, B)."""
    dq = q - q.mean(axis=0)
    sigma = dq.T @ dq / _N
    kappa = _ETA * (_N - _B) / (_N - 1) / _B
    return kappa * (np.diag(np.diag(sigma)) if covariance == "diagonal" else sigma)


@pytest.mark.parametrize("covariance", ["full", "samples", "diagonal"])
def test_stationary_covariance_is_the_one_of_the_models_own_noise(covariance):
    # SDE: H M + M H = D; Euler-Maruyama with step h: M = (I - hH) M (I - hH) + h D, with D the
    # model's diffusion matrix (for "diagonal", diag(kappa Sigma): the off-diagonal M vanishes
    # since H is diagonal). Before: "diagonal" returned the full-Sigma answer (off-diagonal
    # entries of 1e-3 where the model has none). Both solves are exact: float64 round-off.
    p, q = _additive_problem()
    model = sde.SGDNoise(_ETA, _B, covariance=covariance)
    d = _noise(q, covariance)
    sde_ref = scipy.linalg.solve_continuous_lyapunov(-np.diag(_H), -d)
    np.testing.assert_allclose(sde.quadratic_stationary_covariance(model, p), sde_ref, atol=1e-15)
    step = np.eye(2) - _ETA * np.diag(_H)
    em_ref = scipy.linalg.solve_discrete_lyapunov(step, _ETA * d)
    em = sde.quadratic_stationary_covariance(model, p, step=_ETA)
    np.testing.assert_allclose(em, em_ref, atol=1e-15)
    # The moments in time agree with the same equations (t = 50 is stationary to e^-100).
    mom = sde.quadratic_moments(model, p, jnp.array([0.0, 50.0]))
    np.testing.assert_allclose(mom.covariance[-1], sde_ref, atol=1e-15)


def test_lowrank_moments_are_refused():
    # The top-r projection of Sigma(theta) is not linear in theta theta^T: no closed equations.
    # Before: the full-Sigma moments were returned for a rank-1 model.
    p, _ = _additive_problem()
    model = sde.SGDNoise(_ETA, _B, covariance="lowrank", rank=1)
    with pytest.raises(ValueError, match="lowrank"):
        sde.quadratic_moments(model, p, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="lowrank"):
        sde.quadratic_stationary_covariance(model, p)


def test_quadratic_moments_refuse_horizons_the_binary_power_cannot_reach():
    # `_power` reads 40 bits of the step count: 2**41 steps returned the initial state.
    p, _ = _additive_problem()
    model = sde.SGDNoise(_ETA, _B)
    with pytest.raises(ValueError, match="2\\*\\*40"):
        sde.quadratic_moments(model, p, jnp.array([0.0, _ETA * 2.0**41]), step=_ETA)
    with pytest.raises(ValueError, match="finite"):
        sde.quadratic_moments(model, p, jnp.array([0.0, jnp.nan]))


@pytest.mark.parametrize(
    "phases, match",
    [
        ([(0.1, 2.5, 3)], "phases\\[0\\]'s batch"),  # was int(2.5) = 2: another schedule
        ([(0.1, 2, 3), (0.1, 0, 3)], "phases\\[1\\]'s batch"),
        ([(0.1, 2, -1)], "phases\\[0\\]'s steps"),  # was a raw IndexError
        ([(0.1, 2, 2.5)], "phases\\[0\\]'s steps"),
        ([], "non-empty"),  # was max() of an empty sequence
        ([(0.1, 2)], "triples"),
    ],
)
def test_scheduled_moments_validate_the_phases(phases, match):
    p, _ = _additive_problem()
    with pytest.raises(ValueError, match=match):
        sde.scheduled_moments(p, phases)


def test_scheduled_moments_take_numpy_integers():
    p, _ = _additive_problem()
    a = sde.scheduled_moments(p, [(0.1, np.int64(2), np.int64(3))])
    b = sde.scheduled_moments(p, [(0.1, 2, 3)])
    np.testing.assert_array_equal(a[0], b[0])


def test_first_passage_censors_at_t1():
    # Noiseless Euler on L = theta^2/2 from 1: theta_k = (1 - dt)^k. With dt = 0.6 the first
    # point below 0.33 is k = 2, t = 1.2 (theta = 0.16). With t1 = 1.0 it must be censored;
    # before, the grid ran to round(t1/dt)*dt = 1.2 and returned tau = 1.2 > t1.
    qp = problems.quadratic(jnp.array([1.0]))
    flow = sde.Langevin(0.0)

    def hit(y):
        return y[0] < 0.33

    def tau(t1, dt):
        return sde.first_passage(
            flow, qp, hit, t1, jax.random.key(0), 1, dt=dt, solver=diffrax.Euler()
        )

    assert float(tau(1.2, 0.6)[0]) == pytest.approx(1.2)  # on the grid: the last step counts
    with pytest.raises(ValueError, match="multiple of dt"):
        tau(1.0, 0.6)
    with pytest.raises(ValueError, match="multiple of dt"):
        tau(1.0, 0.4)  # was censored at 0.8, before t1
    with pytest.raises(ValueError, match="t1 must be > 0"):
        tau(float("inf"), 0.1)


@pytest.mark.parametrize(
    "args, match",
    [
        ((-1.0, -4.0), "curvature_min"),  # was NaN with a RuntimeWarning
        ((0.0, -4.0), "curvature_min"),
        ((8.0, 0.0), "curvature_saddle"),  # was inf
        ((8.0, float("nan")), "curvature_saddle"),
    ],
)
def test_eyring_kramers_prefactor_validates_the_curvatures(args, match):
    with pytest.raises(ValueError, match=match):
        sde.eyring_kramers_prefactor(*args)
    # The symmetric double well (x^2 - 1)^2: L''(+-1) = 8, L''(0) = -4: 2 pi / sqrt(32).
    assert sde.eyring_kramers_prefactor(8.0, -4.0) == pytest.approx(2 * np.pi / np.sqrt(32.0))


def test_sde_moments_of_a_float32_problem():
    # L = lam theta^2 / 2 with per-sample gradient variance sigma^2 (additive noise): the SDE's
    # mean is e^{-lam t} and its variance kappa sigma^2 (1 - e^{-2 lam t}) / (2 lam). Before: a
    # strict-promotion error (float64 times times a float32 generator). Computed in float32:
    # the mean to a few ulps (rtol 1e-5 is ~80 of them); the covariance is M - m^2 with the
    # second moment M <= 1, so its error is a few ulps of 1 (atol 1e-6 is ~8 of them).
    lam, sigma, n, b, eta = 2.0, 0.7, 10, 3, 0.1
    x = np.random.default_rng(0).normal(size=n)
    x = (x - x.mean()) / x.std() * sigma

    def sample_loss(theta, xi):
        return 0.5 * lam * jnp.sum(theta * theta) - jnp.sum(xi * theta)

    data = jnp.asarray(x, jnp.float32)[:, None]
    p = problems.finite_sum(sample_loss, data, jnp.ones(1, jnp.float32), batch_size=1)
    ts = np.array([0.0, 0.3, 1.0, 4.0])
    mom = sde.quadratic_moments(sde.SGDNoise(eta, b), p, jnp.asarray(ts))
    kappa = eta * (n - b) / (n - 1) / b
    assert mom.covariance.dtype == jnp.float32
    np.testing.assert_allclose(mom.mean[:, 0], np.exp(-lam * ts), rtol=1e-5)
    var = kappa * sigma**2 * (1 - np.exp(-2 * lam * ts)) / (2 * lam)
    np.testing.assert_allclose(mom.covariance[:, 0, 0], var, rtol=1e-5, atol=1e-6)


def test_histogram_tv_counts_the_mass_outside_finite_edges():
    # Exact N(0, 1) samples against the Gibbs law of x^2/2 at T = 1 on [-1.5, 1.5] (13% of the
    # mass outside). A perfect sampler's distance has mean (1/2) sum_b E|p_b_hat - p_b|
    # ~ (1/2) sum_b sqrt(2 p_b (1 - p_b) / (pi N)) over the bins and the outside one (normal
    # approximation: N p_b >= 800, error ~1/(N p_b)); 400 floor draws give it to ~1% (SE),
    # 5% is five SE. Before: numpy's multinomial handed the outside mass to the last bin and
    # the floor read 0.075 where it is 0.0096.
    n = 20_000
    x = np.random.default_rng(0).normal(size=n)
    edges = np.linspace(-1.5, 1.5, 13)
    probs = sde.gibbs_bin_probabilities(
        lambda z: 0.5 * z * z, 1.0, edges, support=(-10.0, 10.0), points=200_001
    )
    tv, floor, floor_sd = sde.histogram_tv(x, probs, edges, np.random.default_rng(1))
    p = np.append(probs, 1 - probs.sum())
    expected = 0.5 * np.sum(np.sqrt(2 * p * (1 - p) / (np.pi * n)))
    assert floor == pytest.approx(expected, rel=0.05)
    assert abs(tv - floor) < 4 * floor_sd  # the exact sampler scores like one
    with pytest.raises(ValueError, match="sum to at most 1"):
        sde.histogram_tv(x, probs * 1.2, edges, np.random.default_rng(1))
    with pytest.raises(ValueError, match="one finite probability"):
        sde.histogram_tv(x, probs[:-1], edges, np.random.default_rng(1))


def test_a_vector_hyper_parameter_is_refused_not_broadcast_per_coordinate():
    # Langevin([0.1, 0.4]) on a 2-D problem simulated per-coordinate temperatures (stationary
    # variances 0.097 and 0.416: another SDE, whose law is not exp(-L/T)); on 3-D it was a raw
    # broadcasting error. solve and compare refuse such a flow; so do simulate and the moments.
    qp = problems.quadratic(jnp.array([1.0, 1.0]), params0=jnp.zeros(2))
    key, ts = jax.random.key(0), jnp.array([0.0, 1.0])
    with pytest.raises(ValueError, match=r"simulate takes one flow: Langevin\.temperature"):
        sde.simulate(sde.Langevin(jnp.array([0.1, 0.4])), qp, ts, key, 4)
    with pytest.raises(ValueError, match=r"first_passage takes one flow: Kramers\.damping"):
        sde.first_passage(
            sde.Kramers(jnp.array([0.5, 1.0]), 0.1), qp, lambda y: y[0] > 9, 1.0, key, 2, dt=0.1
        )
    p, _ = _additive_problem()
    model = sde.SGDNoise(jnp.array([0.1, 0.2]), _B)
    with pytest.raises(ValueError, match=r"quadratic_moments takes one flow: SGDNoise"):
        sde.quadratic_moments(model, p, ts)
    with pytest.raises(ValueError, match=r"quadratic_stationary_covariance takes one flow"):
        sde.quadratic_stationary_covariance(model, p)
    # Traced values (a vmap over learning rates) are one value per program: still fine.
    etas = jnp.array([0.1, 0.4])
    covs = jax.vmap(lambda e: sde.quadratic_stationary_covariance(sde.SGDNoise(e, _B), p))(etas)
    assert covs.shape == (2, 2, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"edges": np.array([1.0, 0.0, -1.0])}, "strictly increasing"),  # was [-0.42, -0.42]
        ({"edges": np.array([-1.0, 0.0, 1.0]), "support": (3.0, -3.0)}, "support"),  # [0, 0]
        ({"edges": np.array([-1.0, 0.0, 1.0]), "points": 1}, "points"),  # was [nan, nan]
    ],
)
def test_gibbs_bin_probabilities_validate_the_grid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sde.gibbs_bin_probabilities(lambda x: x * x, 1.0, **kwargs)


def test_gibbs_bin_probabilities_of_a_gaussian():
    # x^2/2 at T = 1 is N(0, 1): bins against scipy's normal CDF; trapezoid rule on 200,001
    # nodes of [-10, 10] (h = 1e-4): error ~h^2 = 1e-8 relative; the tails beyond 10 are 1e-23.
    edges = np.array([-np.inf, -1.0, 0.0, 0.5, np.inf])
    got = sde.gibbs_bin_probabilities(
        lambda z: 0.5 * z * z, 1.0, edges, support=(-10.0, 10.0), points=200_001
    )
    np.testing.assert_allclose(got, np.diff(scipy.stats.norm.cdf(edges)), rtol=1e-7)


def test_default_grid_reports_the_smallest_save_gap_as_the_smallest_step():
    # The smallest step is the Brownian tree's resolution (`_simulate`): with uneven save times
    # already fine enough to be the grid, it is the smallest gap, not the first one.
    from dynopt._sde.simulate import _default_grid

    ts = np.array([0.0, 0.4, 0.5, 0.55, 1.0])
    grid, largest, smallest = _default_grid(ts, 0.1, "tree")  # steps <= 0.5
    np.testing.assert_array_equal(grid, ts)
    assert largest == pytest.approx(0.45) and smallest == pytest.approx(0.05)


def test_log_stationary_density_refuses_zero_temperature():
    # T = 0 is a valid (noiseless) flow, but its stationary law is a point mass: -L/0 was -inf
    # or NaN without a word. Refused on the host and inside jit.
    problem = problems.quadratic(jnp.array([1.0, 2.0]))
    theta = jnp.array([0.3, -0.2])
    for flow, state in ((sde.Langevin(0.0), theta), (sde.Kramers(1.0, 0.0), (theta, theta))):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            flow.log_stationary_density(state, problem)
        with pytest.raises(Exception, match="temperature must be > 0"):
            density = lambda T, f=flow, x=state: type(f)(*flow_args(f, T)).log_stationary_density(
                x, problem
            )
            jax.jit(density)(jnp.asarray(0.0))
    # T > 0: -L/T (the closed form), unchanged.
    assert float(sde.Langevin(0.5).log_stationary_density(theta, problem)) == pytest.approx(
        -float(problem.loss(theta)) / 0.5, rel=1e-15
    )


def flow_args(flow, temperature):
    return (temperature,) if isinstance(flow, sde.Langevin) else (flow.damping, temperature)


def test_sgd_noise_with_a_traced_batch_size():
    # B as a traced integer (a sweep built inside vmap): the noise scale eta (n - B)/((n - 1) B)
    # of each B, one program; B < 1 raises when it runs.
    problem = problems.linear_regression(num_samples=20, dim=3, batch_size=4, seed=0)
    scale = lambda b: sde.SGDNoise(0.1, b).noise_scale(problem)
    bs = jnp.array([1, 4, 20])
    expected = 0.1 * (20 - np.asarray(bs, float)) / (19 * np.asarray(bs, float))
    np.testing.assert_allclose(jax.vmap(scale)(bs), expected, rtol=1e-15)
    with pytest.raises(Exception, match="batch_size must be"):
        jax.block_until_ready(jax.jit(scale)(jnp.asarray(0)))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        jax.jit(scale)(jnp.asarray(2.0))
    with pytest.raises(ValueError, match="concrete batch_size"):
        jax.jit(lambda b: sde.SGDNoise(0.1, b).sgd_problem(problem).batch_size)(jnp.asarray(2))


def test_quadratic_moments_refuse_a_start_that_is_no_distribution():
    # A NaN mean, a NaN, asymmetric or indefinite covariance gave NaN or meaningless moments.
    problem = problems.linear_regression(num_samples=16, dim=2, batch_size=4, seed=0)
    model = sde.SGDNoise(0.05, 4)
    ts = jnp.array([0.0, 0.1])
    moments = lambda **kw: sde.quadratic_moments(model, problem, ts, **kw)
    good = jnp.array([[1.0, 0.2], [0.2, 0.5]])
    for kw, match in (
        ({"x0": jnp.array([jnp.nan, 0.0])}, "x0 must be finite"),
        ({"covariance0": good.at[0, 0].set(jnp.nan)}, "covariance0 must be finite"),
        ({"covariance0": good.at[0, 1].set(0.3)}, "covariance0 must be symmetric"),
        ({"covariance0": jnp.array([[1.0, 2.0], [2.0, 1.0]])}, "positive semi-definite"),
    ):
        with pytest.raises(ValueError, match=match):
            moments(**kw)
    # A valid start (and the covariance a previous phase ends with) is taken.
    end = moments(covariance0=good).covariance[-1]
    assert np.all(np.isfinite(np.asarray(moments(covariance0=end).covariance)))


def test_sgd_noise_default_factor_is_the_cheaper_exact_one():
    # The default was the d x d `eigh` factor whatever d: on the digits MLP (d = 1210, n = 1797)
    # 0.53 s of CPU per diffusion against 0.030 s for the n-column samples factor, the same law.
    # "auto" takes the one of fewer flops per step; both satisfy G G^T = eta c Sigma / B
    # (`minibatch_covariance`, from the per-sample gradients directly).
    small = problems.linear_regression(256, 3, batch_size=8, seed=0)
    wide = problems.linear_regression(32, 12, batch_size=8, seed=1)
    for problem, expected in ((small, "full"), (wide, "samples")):
        auto = sde.SGDNoise(0.1, 8)
        chosen = sde.SGDNoise(0.1, 8, covariance=expected)
        theta = jax.tree.map(lambda x: x + 0.3, problem.params0)
        g = auto.diffusion(0.0, theta, problem)
        assert g.shape == chosen.diffusion(0.0, theta, problem).shape
        np.testing.assert_array_equal(g, chosen.diffusion(0.0, theta, problem))
        cov = auto.minibatch_covariance(theta, problem) * auto.learning_rate
        np.testing.assert_allclose(g @ g.T, cov, rtol=1e-12, atol=1e-15)
    assert sde.SGDNoise(0.1, 8).diffusion(0.0, wide.params0, wide).shape == (12, 32)


@pytest.mark.parametrize(
    "samples, kwargs, match",
    [
        (np.array([]), {}, "samples must be a non-empty"),
        (np.array([0.1, np.nan]), {}, "samples must be .* finite"),
        (np.array([0.1, 0.2]), {"draws": 0}, "draws must be a positive integer"),
        (np.array([0.1, 0.2]), {"rng": None}, "rng must be a numpy.random.Generator"),
    ],
)
def test_histogram_tv_refuses_empty_or_nan_samples_and_bad_draws(samples, kwargs, match):
    """Before: an empty sample or draws=0 returned NaN, a NaN sample counted as mass outside
    every bin (tv 0.5), rng=None failed with an AttributeError."""
    rng = kwargs.pop("rng", np.random.default_rng(0))
    with pytest.raises(ValueError, match=match):
        sde.histogram_tv(samples, [0.5, 0.5], [-1.0, 0.0, 1.0], rng, **kwargs)


@pytest.mark.parametrize(
    "fn", [sde.variance_with_se, sde.mean_with_se], ids=["variance_with_se", "mean_with_se"]
)
@pytest.mark.parametrize("samples", [np.array([]), np.zeros((0, 3)), "ab"])
def test_estimators_refuse_samples_without_draws(fn, samples):
    """Before: no draw gave (nan, nan) with a RuntimeWarning; a string a numpy error."""
    with pytest.raises(ValueError, match="samples must"):
        fn(samples)


def test_mean_with_se_refuses_an_axis_the_samples_lack():
    """Before: numpy's AxisError (not a ValueError naming the argument)."""
    with pytest.raises(ValueError, match="axis 5"):
        sde.mean_with_se(np.ones((3, 2)), axis=5)


@pytest.mark.parametrize("seed", ["a", 1.5, None, True, -1])
def test_noisy_quadratic_refuses_a_seed_that_is_not_a_non_negative_integer(seed):
    """Before: 'a' and 1.5 failed in NumPy with a TypeError, -1 with NumPy's message, None drew
    fresh entropy (a problem that differs on every call), True seeded 1."""
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
        sde.noisy_quadratic(4, 1.0, 0.5, seed)


@pytest.mark.parametrize("sigma", [float("nan"), float("inf"), "a"])
def test_temperature_of_refuses_a_sigma_that_is_not_finite(sigma):
    """Before: NaN returned T = NaN, inf T = inf, 'a' a JAX TypeError."""
    with pytest.raises(ValueError, match="sigma must be"):
        sde.temperature_of(sigma)
    if isinstance(sigma, float):
        with pytest.raises(Exception, match="sigma must be"):  # traced: eqx.error_if
            jax.jit(sde.temperature_of)(sigma)
    assert float(sde.temperature_of(0.4)) == pytest.approx(0.08, rel=1e-15)


def test_gibbs_bin_probabilities_refuses_a_non_callable_potential_and_an_infinite_temperature():
    """Before: potential=3 raised 'int object is not callable' (TypeError), temperature=inf
    returned the uniform law on the support as if it were a Gibbs law, 'a' a TypeError."""
    edges = np.array([-1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="potential must be callable"):
        sde.gibbs_bin_probabilities(3, 1.0, edges)
    for t in (float("inf"), "a"):
        with pytest.raises(ValueError, match="temperature must be"):
            sde.gibbs_bin_probabilities(lambda x: x**2, t, edges)
