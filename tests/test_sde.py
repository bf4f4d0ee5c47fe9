"""dynopt.sde: Gibbs laws with the right constants, SGD's noise model, exact moments, simulation.

Monte-Carlo checks use fixed keys and a tolerance of 3 standard errors (computed from the sample);
each time-discretisation bias is either computed exactly or shown to be far below one SE.
"""

import itertools

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import dynopt
from dynopt import flows, problems, sde
from dynopt._sde import simulate as sde_simulate

from .helpers import assert_programs_cacheable, backend_compiles


LAM = 2.0


def _quadratic(x):
    return 0.5 * LAM * jnp.sum(x * x)


def _double_well(x):
    return jnp.sum((x * x - 1.0) ** 2)


def _sample_quadratic(theta, x, lam):
    # l(theta; x) = lam theta^2 / 2 - x theta: gradient lam theta - x, variance of x per sample.
    return 0.5 * lam * jnp.sum(theta * theta) - jnp.sum(x * theta)


def _noisy_quadratic(n=64, lam=1.0, sigma=1.0, batch_size=4):
    x = np.random.default_rng(0).normal(size=n)
    x = (x - x.mean()) / x.std() * sigma  # per-sample gradient variance exactly sigma^2
    loss = eqx.Partial(_sample_quadratic, lam=jnp.asarray(lam))
    return problems.finite_sum(
        loss, jnp.asarray(x)[:, None], jnp.array([1.0]), batch_size=batch_size
    )


def _variance_and_se(x):
    """Sample variance and its standard error sqrt((m4 - s^4)/N)."""
    x = np.asarray(x, float)
    d = x - x.mean()
    v = np.mean(d**2)
    return v, np.sqrt((np.mean(d**4) - v**2) / x.size)


def test_gibbs_convention_langevin_and_kramers():
    """d theta = -grad L dt + sigma dW has Var = sigma^2/(2 lam) on L = lam theta^2/2, i.e. the law
    exp(-2L/sigma^2) = exp(-L/T) with T = sigma^2/2 (post 1's eq. (9) would give sigma^2/lam)."""
    sigma = 1.2
    temp = sde.temperature_of(sigma)
    assert float(temp) == pytest.approx(0.72, rel=1e-15)
    ts = jnp.array([0.0, 4.0])  # 8 relaxation times of exp(-2 lam t)
    quad = dynopt.Problem(_quadratic, jnp.array([1.0]))
    paths = sde.simulate(sde.Langevin(temp), quad, ts, jax.random.key(0), 4000, dt=0.02)
    assert paths.solver == "ShARK" and paths.ys.shape == (4000, 2, 1)
    v, se = _variance_and_se(paths.ys[:, -1, 0])
    expected = sigma**2 / (2 * LAM)  # the ShARK bias at dt = 0.02 is O(dt^2) ~ 1e-3 SE
    assert abs(v - expected) < 3 * se
    assert abs(v - sigma**2 / LAM) > 20 * se  # the convention without the 2 is far off

    kramers = sde.Kramers(damping=1.0, temperature=temp)
    # Second moments relax as e^{-γt} (eigenvalues -1/2 ± 1.32i): at t = 8 the transient is
    # e^{-8} ~ 3e-4 of the stationary 0.36, far below one SE (2%).
    kp = sde.simulate(kramers, quad, jnp.array([0.0, 8.0]), jax.random.key(1), 4000, dt=0.02)
    vx, sex = _variance_and_se(kp.ys[:, -1, 0])
    vv, sev = _variance_and_se(kp.ys[:, -1, 1])
    assert abs(vx - float(temp) / LAM) < 3 * sex  # theta-marginal: the same Gibbs law
    assert abs(vv - float(temp)) < 3 * sev  # Maxwell: v ~ N(0, T)
    assert kp.params.shape == (4000, 2, 1)
    y = (jnp.array([0.3]), jnp.array([-0.4]))
    np.testing.assert_allclose(
        kramers.log_stationary_density(y, quad),
        -(0.08 + 0.5 * LAM * 0.09) / float(temp),
        rtol=1e-14,
    )


def test_simulate_is_deterministic_bit_for_bit():
    model, quad = sde.Langevin(0.5), dynopt.Problem(_quadratic, jnp.array([1.0]))
    ts = jnp.array([0.0, 4.0])
    a = sde.simulate(model, quad, ts, jax.random.key(0), 4000, dt=0.02)
    b = sde.simulate(model, quad, ts, jax.random.key(0), 4000, dt=0.02)
    c = sde.simulate(model, quad, ts, jax.random.key(1), 4000, dt=0.02)
    np.testing.assert_array_equal(a.ys, b.ys)
    assert not np.array_equal(a.ys[:, -1], c.ys[:, -1])


def test_common_random_numbers_hold_within_one_levy_area_kind():
    """The same key and grid give the same Brownian path only to solvers of one Lévy-area kind
    (`simulate`'s docstring): ShARK and SRA1 draw the space-time Lévy area and share the path
    (their final states differ by their strong errors), Euler draws plain increments and gets an
    independent one (over N paths its sample correlation has standard deviation 1/√N: 4 allowed)."""
    ou, ts, n = dynopt.densities.linear_vector_sde(-jnp.eye(1), 1.0), jnp.array([0.0, 1.0]), 256
    final = {
        type(solver).__name__: np.asarray(
            sde.simulate(ou, None, ts, jax.random.key(0), n, x0=jnp.zeros(1), dt=1 / 16,
                         solver=solver).ys[:, -1, 0]
        )
        for solver in (diffrax.ShARK(), diffrax.SRA1(), diffrax.Euler())
    }  # fmt: skip
    corr = lambda a, b: np.corrcoef(final[a], final[b])[0, 1]
    assert corr("ShARK", "SRA1") > 0.999
    assert abs(corr("ShARK", "Euler")) < 4 / np.sqrt(n)


@pytest.mark.parametrize("ts, dt", [([0.0, 6.0], 0.01), ([0.0, 3.0, 6.0], None)])
def test_gibbs_histogram_double_well(ts, dt):
    """Langevin on (x^2 - 1)^2 at T = 0.4, started at the saddle (the symmetric start never
    excites the slow well-to-well mode, so t = 6 is stationary): chi-square against exp(-L/T).

    With the default step and a coarse save gap (3): the step resolves the drift's rate
    rho = |L''(0)| = 4 as 0.05/rho = 0.0125, not the gap (which made every path blow up)."""
    temp, num = 0.4, 4000
    paths = sde.simulate(
        sde.Langevin(temp),
        dynopt.Problem(_double_well, jnp.array([0.0])),
        jnp.array(ts),
        jax.random.key(2),
        num,
        dt=dt,
    )
    assert float(paths.dt) == (0.0125 if dt is None else dt) and paths.num_diverged == 0
    x = np.asarray(paths.ys[:, -1, 0])
    edges = np.concatenate([[-np.inf], np.linspace(-1.8, 1.8, 19), [np.inf]])
    counts = np.histogram(x, edges)[0]
    grid = np.linspace(-4.0, 4.0, 200_001)

    def probs(log_p):
        w = np.exp(log_p - log_p.max())
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(grid))])
        cdf /= cdf[-1]
        return np.diff(np.interp(np.clip(edges, grid[0], grid[-1]), grid, cdf))

    loss = (grid**2 - 1) ** 2
    dof = len(counts) - 1
    chi2 = np.sum((counts - num * probs(-loss / temp)) ** 2 / (num * probs(-loss / temp)))
    assert chi2 < stats.chi2.ppf(0.999, dof)
    # exp(-L/sigma^2) with sigma^2 = 2T (post 1's eq. (9) read literally) is rejected.
    wrong = probs(-loss / (2 * temp))
    assert np.sum((counts - num * wrong) ** 2 / (num * wrong)) > 10 * stats.chi2.ppf(0.999, dof)


def test_minibatch_covariance_is_exact_by_enumeration():
    p = problems.linear_regression(num_samples=6, dim=2, batch_size=2)
    theta = jnp.array([0.3, -0.7])
    per_sample = jax.vmap(jax.grad(p.sample_loss_fn), in_axes=(None, 0))(theta, p.data)
    for replace in (False, True):
        model = sde.SGDNoise(0.1, 2, replace=replace)
        pairs = (
            itertools.product(range(6), repeat=2)
            if replace
            else itertools.combinations(range(6), 2)
        )
        grads = np.asarray(per_sample)[np.array(list(pairs))].mean(axis=1)  # every minibatch
        exact = np.cov(grads.T, bias=True)
        np.testing.assert_allclose(
            model.minibatch_covariance(theta, p), exact, rtol=1e-12, atol=1e-14
        )
    assert float(sde.SGDNoise(0.1, 2).finite_population_factor(p)) == pytest.approx(0.8)
    assert float(sde.SGDNoise(0.1, 6).finite_population_factor(p)) == 0.0  # B = n: plain GD


def test_diffusion_factorisations():
    p = problems.linear_regression(num_samples=20, dim=3, batch_size=4)
    y = jnp.array([0.2, -0.1, 0.5])
    full = sde.SGDNoise(0.05, 4)
    target = np.asarray(full.noise_scale(p) * full.gradient_covariance(y, p))
    for kind, rank, m in (("full", None, 3), ("samples", None, 20), ("lowrank", 3, 3)):
        model = sde.SGDNoise(0.05, 4, covariance=kind, rank=rank)
        g = np.asarray(model.diffusion(0.0, y, p))
        assert g.shape == (3, m)
        np.testing.assert_allclose(g @ g.T, target, rtol=1e-11, atol=1e-15)
    low = sde.SGDNoise(0.05, 4, covariance="lowrank", rank=1)
    g = np.asarray(low.diffusion(0.0, y, p))
    w = np.linalg.eigvalsh(target)
    np.testing.assert_allclose(np.linalg.eigvalsh(g @ g.T)[-1], w[-1], rtol=1e-11)
    diag = sde.SGDNoise(0.05, 4, covariance="diagonal").diffusion(0.0, y, p)
    np.testing.assert_allclose(diag.as_matrix() ** 2, np.diag(np.diag(target)), rtol=1e-11)


def test_sgd_problem_samples_as_the_model_assumes():
    p = problems.linear_regression(num_samples=10, dim=2, batch_size=5)
    theta = jnp.array([0.4, 0.1])
    keys = jax.random.split(jax.random.key(3), 10_000)
    for replace in (False, True):
        model = sde.SGDNoise(0.1, 3, replace=replace)
        q = model.sgd_problem(p)
        assert q.batch_size == 3
        grads = jax.jit(jax.vmap(jax.grad(q.stochastic_loss), in_axes=(None, 0)))
        g = np.asarray(grads(theta, keys))
        v, se = _variance_and_se(g[:, 0])
        assert abs(v - float(model.minibatch_covariance(theta, p)[0, 0])) < 3 * se
    assert sde.SGDNoise(0.1, 5).sgd_problem(p) is p


def test_stationary_variance_closed_forms_and_monte_carlo():
    """1-D: SGD eta c s^2/(B lam (2 - eta lam)) vs SDE eta c s^2/(2 B lam), exact; then SGD (optax
    via dynopt.run) and Euler-Maruyama (diffrax) Monte Carlo against their exact laws."""
    n, lam, sigma, b = 64, 1.0, 1.0, 4
    p = _noisy_quadratic(n, lam, sigma, b)
    c = (n - b) / (n - 1)
    for eta in (0.5, 0.1):
        model = sde.SGDNoise(eta, b)
        sgd_v = float(sde.quadratic_stationary_covariance(model, p, step=eta)[0, 0])
        sde_v = float(sde.quadratic_stationary_covariance(model, p)[0, 0])
        assert sgd_v == pytest.approx(eta * c * sigma**2 / (b * lam * (2 - eta * lam)), rel=1e-12)
        assert sde_v == pytest.approx(eta * c * sigma**2 / (2 * b * lam), rel=1e-12)
        ts = jnp.array([0.0, 1.0, 3.0])
        mom = sde.quadratic_moments(model, p, ts, step=eta)
        k = np.asarray(ts) / eta
        np.testing.assert_allclose(mom.mean[:, 0], (1 - eta * lam) ** k, rtol=1e-12)
        np.testing.assert_allclose(
            mom.covariance[:, 0, 0],
            sgd_v * (1 - (1 - eta * lam) ** (2 * k)),
            rtol=1e-12,
            atol=1e-16,
        )
        cont = sde.quadratic_moments(model, p, ts)
        np.testing.assert_allclose(cont.mean[:, 0], np.exp(-lam * np.asarray(ts)), rtol=1e-12)
        np.testing.assert_allclose(
            cont.covariance[:, 0, 0], sde_v * (1 - np.exp(-2 * lam * np.asarray(ts))), rtol=1e-10
        )

    eta, steps = 0.5, 24  # stationary: (1 - eta lam)^(2 * 24) ~ 4e-15
    model = sde.SGDNoise(eta, b)
    keys = jax.random.split(jax.random.key(4), 4000)
    traj = dynopt.run(model.discretize(), model.sgd_problem(p), steps, key=keys, every=steps)
    v, se = _variance_and_se(traj.params[:, -1, 0])
    assert abs(v - float(sde.quadratic_stationary_covariance(model, p, step=eta)[0, 0])) < 3 * se
    assert abs(v - float(sde.quadratic_stationary_covariance(model, p)[0, 0])) > 5 * se
    h = eta / 4
    paths = sde.simulate(model, p, jnp.array([0.0, 12.0]), jax.random.key(5), 4000, dt=h)
    assert paths.solver == "Euler"
    v, se = _variance_and_se(paths.ys[:, -1, 0])
    assert abs(v - float(sde.quadratic_stationary_covariance(model, p, step=h)[0, 0])) < 3 * se


def test_quadratic_moments_match_monte_carlo_on_linear_regression():
    """E L(theta_t) from the exact moment recursion vs SGD runs (d = 3, state-dependent noise)."""
    p = problems.linear_regression(num_samples=32, dim=3, batch_size=4, noise=0.5)
    eta = 0.1
    model = sde.SGDNoise(eta, 4)
    ts = jnp.array([0.0, 1.0, 2.0, 4.0])
    exact = sde.quadratic_moments(model, p, ts, step=eta)
    keys = jax.random.split(jax.random.key(6), 2000)
    traj = dynopt.run(model.discretize(), model.sgd_problem(p), 40, key=keys, every=10)
    loss = np.asarray(traj.loss)[:, [0, 1, 2, 4]]
    mc, se = loss.mean(0), loss.std(0) / np.sqrt(loss.shape[0])
    assert np.all(np.abs(mc - np.asarray(exact.expected_loss)) <= 3 * se + 1e-12)
    np.testing.assert_allclose(
        exact.mean[-1],
        traj.params[:, -1].mean(0),
        atol=3 * float(np.max(traj.params[:, -1].std(0))) / np.sqrt(2000),
    )


def _unstable(x):
    return jnp.sum(0.5 * x * x - 0.25 * x**4)  # wells edge at |x| = 1; beyond it, blow-up


def test_blowup_raises_unless_kept_and_is_averaged_only_on_request():
    """Paths of an SDE that explodes (escape over the edge of -x^4): simulate raises with the
    count unless told to keep them ('warn' also warns); the mean over all paths does not exist,
    so `expectation` refuses it unless told to drop them."""
    args = (
        sde.Langevin(0.3),
        dynopt.Problem(_unstable, jnp.array([0.0])),
        jnp.linspace(0.0, 20.0, 21),
        jax.random.key(7),
        200,
    )
    kw = dict(dt=0.01, solver=diffrax.Euler())
    with pytest.raises(dynopt.SolveError, match=r"simulate: \d+ of 200 paths blew up"):
        sde.simulate(*args, **kw)
    with pytest.warns(RuntimeWarning, match=r"of 200 paths blew up"):
        sde.simulate(*args, **kw, on_blowup="warn")
    paths = sde.simulate(*args, **kw, on_blowup="keep")
    bad = np.asarray(paths.diverged)
    assert 0 < bad.sum() < 200 and paths.num_diverged == bad.sum()
    blow = np.asarray(paths.blowup_time)
    first_nan = np.argmin(np.all(np.isfinite(np.asarray(paths.ys)), axis=-1), axis=1)
    np.testing.assert_array_equal(blow[bad], np.asarray(paths.ts)[first_nan[bad]])
    assert np.all(np.isinf(blow[~bad]))
    with pytest.raises(ValueError, match=rf"^{bad.sum()} of 200 paths blew up, so the mean"):
        paths.expectation(lambda th: th[0] ** 2)
    mean, se = paths.expectation(lambda th: th[0] ** 2, drop_diverged=True)
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(se))
    np.testing.assert_allclose(
        mean, np.mean(np.asarray(paths.ys)[~bad, :, 0] ** 2, axis=0), rtol=1e-13
    )


def test_the_mean_over_no_surviving_path_is_nan_not_zero(getkey):
    """x' = 4x³ from x = 1 blows up at t = 1/8: every path diverges before t = 0.5, so the mean
    over the surviving paths (whole paths) does not exist at any save time: NaN, where the sum
    over no path divided by max(count, 1) gave 0 ± 0."""
    blowup = dynopt.Problem(lambda x: -jnp.sum(x**4), jnp.array([1.0]))
    paths = sde.simulate(
        sde.Langevin(0.1), blowup, [0.0, 0.5], getkey(), 4, dt=0.01, on_blowup="keep"
    )
    assert paths.num_diverged == 4
    mean, se = paths.expectation(lambda q: q[0], drop_diverged=True)
    np.testing.assert_array_equal(np.asarray(mean), [np.nan, np.nan])
    np.testing.assert_array_equal(np.asarray(se), [np.nan, np.nan])


def test_default_step_resolves_the_drift():
    """The default step is 0.05/rho, rho the drift's fastest rate at the start (LAM = 2 here;
    Kramers(damping 3): the eigenvalues of [[0, 1], [-2, -3]] are -1 and -2): each save
    interval is split into equal steps no longer than that. A save gap already finer is the
    step, and the paths are those of that explicit dt, bit for bit."""
    quad = dynopt.Problem(_quadratic, jnp.array([1.0]))
    key = jax.random.key(3)
    assert sde_simulate.drift_rate(sde.Langevin(0.5), quad, quad.params0, 0.0) == pytest.approx(
        LAM, rel=1e-14
    )
    kramers = sde.Kramers(3.0, 0.5)
    assert sde_simulate.drift_rate(kramers, quad, quad.params0, 0.0) == pytest.approx(2.0, 1e-12)
    coarse = sde.simulate(sde.Langevin(0.5), quad, jnp.array([0.0, 0.1, 1.0]), key, 4)
    assert float(coarse.dt) == pytest.approx(0.025, rel=1e-12)
    fine_ts = jnp.linspace(0.0, 0.1, 11)
    a = sde.simulate(sde.Langevin(0.5), quad, fine_ts, key, 4)
    b = sde.simulate(sde.Langevin(0.5), quad, fine_ts, key, 4, dt=0.01)
    assert float(a.dt) == pytest.approx(0.01, rel=1e-12)
    np.testing.assert_array_equal(a.ys, b.ys)


def _zero(x):
    return jnp.zeros((), x.dtype) * jnp.sum(x)


def test_first_passage_of_brownian_motion():
    """sqrt(2T) W exits (-a, a) at E tau = a^2/(2T). Monitoring on a grid of step dt overshoots the
    level by beta sqrt(2T dt), beta = -zeta(1/2)/sqrt(2 pi) = 0.5826 (Broadie-Glasserman-Kou)."""
    temp, a, dt = 0.5, 1.0, 1e-3
    tau = sde.first_passage(
        sde.Langevin(temp),
        dynopt.Problem(_zero, jnp.array([0.0])),
        lambda y: jnp.abs(y[0]) >= a,
        20.0,
        jax.random.key(8),
        1000,
        dt=dt,
        solver=diffrax.Euler(),  # exact in law for Brownian motion
    )
    tau = np.asarray(tau)
    assert np.all(np.isfinite(tau))
    level = a + 0.5826 * np.sqrt(2 * temp * dt)
    assert abs(tau.mean() - level**2 / (2 * temp)) < 3 * tau.std() / np.sqrt(tau.size)


def test_bad_input():
    p = problems.linear_regression(num_samples=8, dim=2, batch_size=2)
    quad = dynopt.Problem(_quadratic, jnp.array([1.0]))
    ts = jnp.array([0.0, 1.0])
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        sde.SGDNoise(0.1, 0)
    with pytest.raises(ValueError, match=r"batch_size must be an integer in \[1, 8\]"):
        sde.simulate(sde.SGDNoise(0.1, 9), p, ts, key, 2)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        sde.SGDNoise(-0.1, 2)
    with pytest.raises(ValueError, match="problem must be a finite-sum"):
        sde.quadratic_moments(sde.SGDNoise(0.1, 2), problems.rosenbrock(), ts)
    with pytest.raises(ValueError, match=r"^x0 must have the structure and shapes of problem"):
        sde.quadratic_moments(sde.SGDNoise(0.1, 2), p, ts, x0=jnp.zeros(3))
    with pytest.raises(ValueError, match=r"^covariance0 must be a \(d, d\) matrix with d = 2"):
        sde.quadratic_moments(sde.SGDNoise(0.1, 2), p, ts, covariance0=jnp.eye(3))
    with pytest.raises(ValueError, match="covariance must be one of"):
        sde.SGDNoise(0.1, 2, covariance="cholesky")
    with pytest.raises(ValueError, match=r"rank must be an integer in \[1, 2\]"):
        sde.SGDNoise(0.1, 2, covariance="lowrank", rank=3).sgd_problem(p)
    with pytest.raises(ValueError, match="rank is only used"):
        sde.SGDNoise(0.1, 2, rank=1)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        sde.Langevin(-1.0)
    with pytest.raises(ValueError, match="damping must be >= 0"):
        sde.Kramers(-0.5, 1.0)
    with pytest.raises(ValueError, match="declares no diffusion"):
        sde.simulate(dynopt.flows.GradientFlow(), quad, ts, key, 2)
    with pytest.raises(ValueError, match="x0 contains NaN or inf"):
        sde.simulate(sde.Langevin(1.0), quad, ts, key, 2, x0=jnp.array([jnp.nan]))
    with pytest.raises(
        ValueError, match=r"step must be > 0 and finite, got 0.0. step=None is the SDE"
    ):
        sde.quadratic_stationary_covariance(sde.SGDNoise(0.1, 2), p, step=0.0)
    with pytest.raises(ValueError, match="x0 is required when problem is None"):
        sde.simulate(sde.Langevin(1.0), None, ts, key, 2)
    with pytest.raises(ValueError, match="num_paths must be a positive integer"):
        sde.simulate(sde.Langevin(1.0), quad, ts, key, 0)
    with pytest.raises(ValueError, match=r"ts must be strictly increasing, got ts\[0\]=1"):
        sde.simulate(sde.Langevin(1.0), quad, jnp.array([1.0, 0.0]), key, 2)
    with pytest.raises(ValueError, match="ts must be a 1-D array of at least 2"):
        sde.simulate(sde.Langevin(1.0), quad, jnp.array([1.0]), key, 2)
    with pytest.raises(ValueError, match=r"^key must be one jax.random.key .* got int 0"):
        sde.simulate(sde.Langevin(1.0), quad, ts, 0, 2)
    with pytest.raises(ValueError, match=r"^key must be one jax.random.key"):
        sde.first_passage(sde.Langevin(1.0), quad, lambda y: y[0] > 2, 1.0, 0, 2, dt=0.1)
    with pytest.raises(ValueError, match=r"^x0 must have the structure and shapes of problem"):
        sde.simulate(sde.Langevin(1.0), quad, ts, key, 2, x0=jnp.zeros(3))
    with pytest.raises(ValueError, match=r"^x0 does not fit VectorSDE"):
        sde.simulate(dynopt.densities.linear_vector_sde(-jnp.eye(2), 1.0), None, ts, key, 2,
                     x0=jnp.zeros(3))  # fmt: skip
    with pytest.raises(ValueError, match="on_blowup must be 'raise', 'warn' or 'keep'"):
        sde.simulate(sde.Langevin(1.0), quad, ts, key, 2, on_blowup="ignore")
    with pytest.raises(ValueError, match="every save time must be t0"):
        sde.simulate(sde.Langevin(1.0), quad, jnp.array([0.0, 0.25, 1.0]), key, 2, dt=0.1)
    with pytest.raises(ValueError, match="below float32 resolution"):
        sde.simulate(sde.Langevin(1.0), quad, jnp.array([1e5, 1e5 + 0.01]), key, 2, dt=1e-3)
    with pytest.raises(ValueError, match="below float64 resolution"):
        sde.simulate(sde.Langevin(1.0), quad, jnp.array([1e12, 1e12 + 1.0]), key, 2, dt=1e-5,
                     brownian="tree")  # fmt: skip
    with pytest.raises(ValueError, match="additive noise only"):
        sde.simulate(sde.SGDNoise(0.1, 2), p, ts, key, 2, solver=diffrax.ShARK())
    with pytest.raises(ValueError, match="S0 must be > 0"):  # `init`'s check, on the host
        sde.simulate(dynopt.densities.GBM(0.1, 0.2), None, ts, key, 2, x0=jnp.array([-1.0]),
                     dt=0.5)  # fmt: skip


def test_drifts_are_the_deterministic_flows():
    """Langevin and SGDNoise step with gradient flow's vector field, Kramers with heavy ball's (the
    same function, bit for bit), which is what `solve` integrates."""
    p = problems.linear_regression(num_samples=8, dim=2, batch_size=2)
    theta, v = jnp.array([0.3, -0.2]), jnp.array([0.1, 0.4])
    gf = flows.GradientFlow().vector_field(0.0, theta, p)
    for model in (sde.Langevin(0.7), sde.SGDNoise(0.1, 2)):
        np.testing.assert_array_equal(model.vector_field(0.0, theta, p), gf)
    hb = flows.HeavyBall(0.5).vector_field(0.0, (theta, v), p)
    for a, b in zip(sde.Kramers(0.5, 0.3).vector_field(0.0, (theta, v), p), hb):
        np.testing.assert_array_equal(a, b)


class _TraceCounter(eqx.Module):
    """A per-sample loss that counts how often it is traced (a Python side effect)."""

    count: list = eqx.field(static=True)

    def __call__(self, theta, x):
        self.count.append(1)
        return _sample_quadratic(theta, x, 1.0)


def test_new_hyperparameters_reuse_the_compiled_simulation():
    """Temperature, friction, learning rate and batch size are array leaves: new values reuse
    the compiled program (no retrace), and the result changes with them."""
    counter = _TraceCounter([])
    x = jnp.asarray(np.random.default_rng(1).normal(size=16))[:, None]
    p = problems.finite_sum(counter, x, jnp.array([1.0]), batch_size=2)
    ts, key = jnp.array([0.0, 0.5]), jax.random.key(0)
    # Kramers (ShARK) covers the temperature and the friction, SGDNoise (Euler) the learning rate.
    cases = (lambda v: sde.Kramers(2 * v, v), lambda v: sde.SGDNoise(v, 2))
    for make in cases:
        ends = [sde.simulate(make(0.2), p, ts, key, 4, dt=0.25).ys[:, -1]]
        first = len(counter.count)
        for value in (0.4, 0.8):
            ends.append(sde.simulate(make(value), p, ts, key, 4, dt=0.25).ys[:, -1])
        assert len(counter.count) == first
        assert not np.array_equal(ends[0], ends[1])
    first = len(counter.count)
    for b in (4, 8):
        sde.simulate(sde.SGDNoise(0.8, b), p, ts, key, 4, dt=0.25)
    assert len(counter.count) == first


def test_variance_with_se_is_the_plug_in_variance_and_its_standard_error():
    v, se = sde.variance_with_se(np.array([[0.0, 1.0], [2.0, 1.0]]))
    np.testing.assert_array_equal(v, [1.0, 0.0])  # two points ±1 around 1: m4 = v² exactly
    np.testing.assert_array_equal(se, [0.0, 0.0])
    x = np.random.default_rng(0).normal(scale=2.0, size=(200_000, 3))
    v, se = sde.variance_with_se(x)
    np.testing.assert_allclose(se, np.sqrt(2 * 16 / x.shape[0]), rtol=0.02)  # m4 - v² = 2σ⁴
    assert np.all(np.abs(v - 4.0) < 4 * se)


def test_histogram_tv_and_its_monte_carlo_floor():
    edges, probs = np.array([-np.inf, 0.0, np.inf]), np.array([0.5, 0.5])
    tv, floor, sd = sde.histogram_tv(np.full(100, -1.0), probs, edges, np.random.default_rng(0))
    assert tv == 0.5 and 0 < floor < 0.1 and sd > 0
    rng = np.random.default_rng(1)
    tv, floor, sd = sde.histogram_tv(rng.normal(size=4000), probs, edges, rng)
    assert abs(tv - floor) < 4 * sd  # exact samples score at their own floor


def test_arrhenius_fit_recovers_barrier_and_prefactor():
    temps = np.array([0.5, 0.4, 0.3, 0.25])
    slope, prefactor = sde.arrhenius_fit(temps, 2.0 * np.exp(1.5 / temps))
    assert slope == pytest.approx(1.5, rel=1e-12) and prefactor == pytest.approx(2.0, rel=1e-12)


def test_mean_with_se_along_an_axis():
    x = np.array([[1.0, 3.0], [2.0, 6.0]])
    mean, se = sde.mean_with_se(x, axis=1)
    np.testing.assert_array_equal(mean, [2.0, 4.0])
    np.testing.assert_allclose(se, [1.0 / np.sqrt(2), 2.0 / np.sqrt(2)], rtol=1e-15)


def test_scheduled_moments_chain_the_phases_of_a_schedule():
    """One phase is `quadratic_moments` itself; two phases are the first followed by the second
    phase's recursion started from the first's final mean and covariance."""
    p = problems.linear_regression(num_samples=32, dim=3, batch_size=4, noise=0.5)
    loss, mean, cov = sde.scheduled_moments(p, [(0.1, 4, 20)], replace=True)
    ref = sde.quadratic_moments(
        sde.SGDNoise(0.1, 4, replace=True), p, 0.1 * np.arange(21), step=0.1
    )
    np.testing.assert_allclose(loss, ref.expected_loss, rtol=1e-14)
    np.testing.assert_allclose(cov, ref.covariance[-1], rtol=1e-14)
    loss2, mean2, cov2 = sde.scheduled_moments(p, [(0.1, 4, 20), (0.05, 16, 10)], replace=True)
    model = sde.SGDNoise(0.05, 16, replace=True)
    ts = 0.05 * np.arange(11)
    second = sde.quadratic_moments(model, p, ts, step=0.05, x0=mean, covariance0=cov)
    assert loss2.shape == (31,)
    np.testing.assert_allclose(loss2[:21], loss, rtol=1e-14)
    np.testing.assert_allclose(loss2[20:], second.expected_loss, rtol=1e-12)
    np.testing.assert_allclose(cov2, second.covariance[-1], rtol=1e-12)
    np.testing.assert_allclose(mean2, second.mean[-1], rtol=1e-12)


def test_both_sampling_schemes_share_the_moment_programs():
    """`replace` is static in `SGDNoise` (it picks how `sgd_problem` samples) and keyed the
    moment programs: with replacement compiled each program again (the quick `sgd_sde` run's
    linear-scaling section, two programs). They read the noise scale only now: the second scheme
    compiles nothing and each keeps its own factor c, (n - B)/(n - 1) or 1."""
    n, b, eta = 64, 4, 0.1
    p = sde.noisy_quadratic(n, 1.0, 1.0, 0)
    ts = eta * np.arange(5)

    def moments(model):
        return [
            *(sde.quadratic_stationary_covariance(model, p, step=s) for s in (None, eta)),
            *(sde.quadratic_moments(model, p, ts, step=s).covariance for s in (None, eta)),
        ]

    without = moments(sde.SGDNoise(eta, b))
    with backend_compiles() as compiled:
        with_ = moments(sde.SGDNoise(eta, b, replace=True))
    assert compiled == []
    for a, c in zip(without, with_):  # every moment here is linear in the noise scale
        np.testing.assert_allclose(np.asarray(a) * (n - 1) / (n - b), c, rtol=1e-12, atol=0)
    # The SDE's stationary variance eta c sigma^2 / (2 B lambda), c = 1 with replacement.
    np.testing.assert_allclose(with_[0][0, 0], eta / (2 * b), rtol=1e-12)


_NO_CALLBACKS_SCRIPT = """
import diffrax
import dynopt
from dynopt import densities as D, problems, sde
quad = dynopt.Problem(lambda x: jnp.sum((x * x - 1.0) ** 2), jnp.array([0.1]))
ts, key = jnp.array([0.0, 0.5, 1.0]), jax.random.key(0)
sde.simulate(sde.Langevin(0.4), quad, ts, key, 8)  # ShARK, the default step grid
sde.simulate(sde.Kramers(2.0, 0.4), quad, ts, key, 8, dt=0.1, solver=diffrax.Heun())
lr = problems.linear_regression(num_samples=16, dim=2, batch_size=4)
sde.simulate(sde.SGDNoise(0.1, 4), lr, ts, key, 8, dt=0.1)  # Euler
sde.simulate(D.GBM(0.1, 0.3), None, ts, key, 8, x0=jnp.array([1.0]), dt=0.1)
sde.first_passage(sde.Langevin(0.4), quad, lambda y: y[0] > 1.0, 1.0, key, 8, dt=0.1)
D.monte_carlo_density_nd(
    D.linear_vector_sde(-jnp.eye(2), 1.0), jnp.zeros(2), 0.5,
    (jnp.linspace(-2.0, 2.0, 5), jnp.linspace(-2.0, 2.0, 5)), key, 64, dt=0.05,
)
D.monte_carlo_samples(D.linear_sde(-1.0, 1.0), 0.0, 0.5, key, 64, dt=0.05)
"""


def test_programs_hold_no_host_callbacks(tmp_path_factory):
    """JAX's persistent compilation cache stores no program with a host callback: `simulate`
    and `first_passage` step on the host-built grid without `StepTo`'s runtime checks, save
    through the solver (`SaveAtTimes`) instead of diffrax's checked `SaveAt(ts=...)`, and trace
    inside `host_validated()` (no `eqx.error_if` for hyper-parameters or GBM's S0, checked on
    the host), so a second process reuses the compiled simulations, the Monte Carlo density
    routes' too. A program with an `eqx.error_if` is the control. (`brownian="tree"` keeps
    `VirtualBrownianTree`'s own range checks, so it is left out.)"""
    assert_programs_cacheable(__name__, tmp_path_factory)


def test_sgd_noise_replace_must_be_a_bool():
    """`SGDNoise(η, B, replace="no")` stored `bool("no") = True`: c = 1 instead of (n-B)/(n-1)."""
    for bad in ("no", 1, None):
        with pytest.raises(ValueError, match="replace must be True or False"):
            sde.SGDNoise(0.1, 4, replace=bad)
    assert sde.SGDNoise(0.1, 4, replace=np.bool_(True)).replace is True
    p = problems.linear_regression(num_samples=10, dim=2, batch_size=2)
    with pytest.raises(ValueError, match="replace must be True or False"):
        sde.scheduled_moments(p, [(0.1, 2, 3)], replace="no")


def test_sgd_noise_refuses_a_batch_larger_than_the_data_wherever_it_meets_a_problem():
    """B > n made c = (n-B)/(n-1) negative: a negative 'covariance', a NaN diffusion."""
    p = problems.linear_regression(num_samples=10, dim=3, batch_size=2)
    model, theta = sde.SGDNoise(0.1, 11), jnp.ones(3)
    for call in (
        lambda: model.finite_population_factor(p),
        lambda: model.noise_scale(p),
        lambda: model.minibatch_covariance(theta, p),
        lambda: model.diffusion(0.0, theta, p),
    ):
        with pytest.raises(ValueError, match=r"batch_size must be an integer in \[1, 10\]"):
            call()
    c = sde.SGDNoise(0.1, 10).finite_population_factor(p)
    assert float(c) == 0.0  # B = n: full batch, noiseless


def test_scheduled_moments_default_to_the_problems_own_sampling():
    """`replace=None` (default) reads the problem's scheme, as `finite_sum` and `SGDNoise`
    default to without replacement (the old default, True, was off by 38 % on such a problem)."""
    p = problems.linear_regression(5, 2, batch_size=2, seed=4, noise=0.5)
    phases = [(0.3, 2, 2), (0.1, 3, 1)]
    q = sde.SGDNoise(0.3, 2, replace=True).sgd_problem(p)  # the same data, with replacement
    for prob, replace in ((p, False), (q, True)):
        default = sde.scheduled_moments(prob, phases)
        explicit = sde.scheduled_moments(prob, phases, replace=replace)
        for a, b in zip(default, explicit):
            np.testing.assert_array_equal(a, b)
    without = sde.scheduled_moments(p, phases)[2]
    assert float(jnp.abs(default[2] - without).max()) > 0.1 * float(jnp.abs(without).max())


@pytest.mark.parametrize(
    "temperatures, mean_times, name",
    [
        ([0.1, 0.2, 0.3], [5.0, 3.0], "length"),
        ([0.1, -0.2, 0.3], [5.0, 3.0, 2.0], "temperatures"),
        ([0.1, 0.2, 0.3], [5.0, 0.0, 2.0], "mean_times"),
        ([0.1, 0.2, np.nan], [5.0, 3.0, 2.0], "temperatures"),
        ([0.2], [3.0], "temperatures"),
        ([0.2, 0.2], [3.0, 4.0], "distinct"),
    ],
)
def test_arrhenius_fit_refuses_what_it_cannot_fit(temperatures, mean_times, name):
    with pytest.raises(ValueError, match=name):
        sde.arrhenius_fit(temperatures, mean_times)
