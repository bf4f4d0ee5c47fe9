r"""SGD's moments (Li, Tai & E's SME setting) against references computed without dynopt, on
settings the other SDE tests do not use: a rotated (non-diagonal) Hessian, pytree parameters,
sampling with and without replacement, and state-dependent noise at its stationary law.

- Additive noise ($\ell_i = \frac12\theta^\top H\theta - q_i^\top\theta$): the SDE's
  stationary covariance solves $HM + MH = \kappa\Sigma$ (`solve_continuous_lyapunov`), SGD's
  $M = (I - \eta H)M(I - \eta H) + \eta\kappa\Sigma$ (`solve_discrete_lyapunov`), with
  $\kappa = \eta c/B$, $c = (n-B)/(n-1)$ without replacement and $1$ with; the finite-time
  moments are $M_\infty - E M_\infty E^\top$ with $E = e^{-Ht}$ (SDE) or $(I-\eta H)^k$ (SGD).
  Both routes are exact: agreement to float64 rounding.
- State-dependent noise (linear regression, per-sample Hessians $x_ix_i^\top$): SGD's exact
  stationary covariance against a Monte Carlo of SGD written here (index draws in JAX, no dynopt),
  to 4 standard errors per entry; the SDE's covariance is 30-40% away, many standard errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import dynopt
from dynopt.sde import quadratic_moments, quadratic_stationary_covariance, SGDNoise


_H = np.array([[2.0, 0.6, -0.3], [0.6, 1.2, 0.4], [-0.3, 0.4, 0.8]])
_N, _B, _ETA = 20, 4, 0.3
# The raveled order of {"w": (2,), "b": ()} is (b, w0, w1) (dict keys sorted).
_ORDER = [2, 0, 1]


def _additive_sample_loss(p, q):
    theta = jnp.concatenate([p["w"], p["b"][None]])
    return 0.5 * theta @ jnp.asarray(_H) @ theta - q @ theta


def _additive_problem(replace: bool):
    q = np.random.default_rng(0).normal(size=(_N, 3))
    q = q @ np.array([[1.0, 0.5, 0.0], [0.0, 0.7, -0.2], [0.0, 0.0, 0.4]])
    p0 = {"w": jnp.array([0.5, -0.5]), "b": jnp.array(0.2)}
    problem = dynopt.problems.finite_sum(
        _additive_sample_loss, jnp.asarray(q), p0, batch_size=_B, replace=replace
    )
    return problem, q


def _permuted(m):
    return m[np.ix_(_ORDER, _ORDER)] if m.ndim == 2 else m[_ORDER]


@pytest.mark.parametrize("replace", [False, True])
def test_additive_noise_moments_are_the_lyapunov_solutions(replace):
    problem, q = _additive_problem(replace)
    model = SGDNoise(_ETA, _B, replace=replace)
    c = 1.0 if replace else (_N - _B) / (_N - 1)
    dq = q - q.mean(axis=0)
    noise = _ETA * c / _B * (dq.T @ dq / _N)  # kappa * Sigma
    step = np.eye(3) - _ETA * _H
    sgd_inf = scipy.linalg.solve_discrete_lyapunov(step, _ETA * noise)
    sde_inf = scipy.linalg.solve_continuous_lyapunov(_H, noise)
    scale = np.max(np.abs(sgd_inf))
    np.testing.assert_allclose(
        quadratic_stationary_covariance(model, problem, step=_ETA),
        _permuted(sgd_inf),
        rtol=0,
        atol=1e-13 * scale,
    )
    np.testing.assert_allclose(
        quadratic_stationary_covariance(model, problem),
        _permuted(sde_inf),
        rtol=0,
        atol=1e-13 * scale,
    )
    # The O(eta) gap the comparison resolves (SGD vs its SDE): 51% here.
    assert np.max(np.abs(sgd_inf - sde_inf)) > 0.3 * scale

    xstar = np.linalg.solve(_H, q.mean(axis=0))
    e0 = np.array([0.5, -0.5, 0.2]) - xstar
    ts = np.array([0.9, 2.1])  # 3 and 7 steps of eta
    sde = quadratic_moments(model, problem, jnp.asarray(ts))
    sgd = quadratic_moments(model, problem, jnp.asarray(ts), step=_ETA)
    for i, t in enumerate(ts):
        e_sde = scipy.linalg.expm(-_H * t)
        e_sgd = np.linalg.matrix_power(step, round(t / _ETA))
        for got, e, inf in ((sde, e_sde, sde_inf), (sgd, e_sgd, sgd_inf)):
            np.testing.assert_allclose(got.mean[i], _permuted(xstar + e @ e0), rtol=0, atol=1e-14)
            np.testing.assert_allclose(
                got.covariance[i], _permuted(inf - e @ inf @ e.T), rtol=0, atol=1e-13 * scale
            )


@pytest.mark.parametrize("replace", [False, True])
def test_state_dependent_stationary_covariance_against_a_monte_carlo_of_sgd(replace):
    n, d, b = 12, 3, 3
    problem = dynopt.problems.linear_regression(n, d, batch_size=b, noise=0.5, seed=4)
    x, y = (jnp.asarray(a) for a in problem.data)
    eta = 0.8 / float(np.max(np.linalg.eigvalsh(np.asarray(x.T @ x) / n)))
    model = SGDNoise(eta, b, replace=replace)
    exact = np.asarray(quadratic_stationary_covariance(model, problem, step=eta))
    sde = np.asarray(quadratic_stationary_covariance(model, problem))

    def chain(key):
        def step(w, k):
            if replace:
                idx = jax.random.randint(k, (b,), 0, n)
            else:
                idx = jnp.argsort(jax.random.uniform(k, (n,)))[:b]
            xb, yb = x[idx], y[idx]
            return w - eta * (xb.T @ (xb @ w - yb)) / b, None

        # 100 steps: the slowest mode (1 - eta*lambda_min = 0.75) is at 4e-13 of its start.
        return jax.lax.scan(step, jnp.zeros(d), jax.random.split(key, 100))[0]

    num = 6000
    ws = np.asarray(jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(1), num)))
    dev = ws - ws.mean(axis=0)
    products = dev[:, :, None] * dev[:, None, :]
    se = products.std(axis=0) / np.sqrt(num)
    mc = products.mean(axis=0)
    assert np.max(np.abs(mc - exact) / se) < 4.0
    assert np.max(np.abs(mc - sde) / se) > 10.0
