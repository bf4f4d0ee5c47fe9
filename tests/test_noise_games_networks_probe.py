"""Probes of SGD noise, flows with noise and game maps against independent computations: the
minibatch covariance by enumerating every batch, the stationary variances of the noisy quadratic
in closed form, and hand recursions of the game schemes' one-step maps."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import dynopt
from dynopt import densities, games, networks, problems, sde, sharpness


def _exhaustive_minibatch_covariance(problem, theta, batch_size):
    """The covariance of the mean gradient of a uniform `batch_size`-subset, by enumeration."""
    x, y = (np.asarray(a) for a in problem.data)
    g = (x @ np.asarray(theta) - y)[:, None] * x  # least squares: per-sample gradients
    batches = itertools.combinations(range(len(y)), batch_size)
    means = np.array([g[list(b)].mean(axis=0) for b in batches])
    return np.cov(means.T, bias=True)


LOW_PRECISION_RATES = [
    pytest.param(jnp.asarray(0.1, jnp.float32), id="float32"),
    pytest.param(jnp.asarray(0.125, jnp.bfloat16), id="bfloat16"),
]


@pytest.mark.parametrize("learning_rate", LOW_PRECISION_RATES)
def test_sgd_noise_of_a_low_precision_learning_rate_is_exact(learning_rate):
    """The finite-population factor c = (n - B)/(n - 1) and kappa = eta c/B were computed in the
    learning rate's dtype: on float64 data a bfloat16 eta = 0.125 (exact) rounded c = 7/9, so
    `minibatch_covariance` (which does not involve eta) was 5.6e-4 off the enumeration of every
    batch, the diffusion 2e-3 off, and a float32 eta = 0.1 (its float32 value) left 1e-8."""
    problem = problems.linear_regression(10, 2, batch_size=3)
    theta = jnp.array([0.3, -0.7])
    model = sde.SGDNoise(learning_rate, 3)
    ref = _exhaustive_minibatch_covariance(problem, theta, 3)
    eta = float(learning_rate)
    np.testing.assert_allclose(model.finite_population_factor(problem), 7 / 9, rtol=1e-15)
    np.testing.assert_allclose(model.minibatch_covariance(theta, problem), ref, rtol=1e-13)
    for covariance in ("full", "samples"):
        g = sde.SGDNoise(learning_rate, 3, covariance=covariance).diffusion(0.0, theta, problem)
        np.testing.assert_allclose(g @ g.T, eta * ref, rtol=1e-13)


@pytest.mark.parametrize("learning_rate", LOW_PRECISION_RATES)
@pytest.mark.parametrize("replace", [False, True])
def test_stationary_variance_of_a_low_precision_learning_rate(learning_rate, replace):
    """On the noisy quadratic the stationary variances are eta c s2/(2 B lam) (SDE) and
    eta c s2/(B lam (2 - eta lam)) (SGD), s2 the per-sample gradient variance:
    `quadratic_stationary_covariance` missed both by 2e-3 (bfloat16 eta = 0.125, exact; 1e-3 with
    replacement, kappa = eta/B rounded) and 9e-8 (float32 eta)."""
    n, batch, lam = 20, 5, 1.5
    problem = sde.noisy_quadratic(n, lam, 0.7, 0)
    x = np.asarray(jax.tree.leaves(problem.data)[0]).ravel()
    s2 = np.mean((x - x.mean()) ** 2)
    eta = float(learning_rate)
    c = 1.0 if replace else (n - batch) / (n - 1)
    model = sde.SGDNoise(learning_rate, batch, replace=replace)
    got_sde = sde.quadratic_stationary_covariance(model, problem)
    got_sgd = sde.quadratic_stationary_covariance(model, problem, step=eta)
    np.testing.assert_allclose(got_sde[0, 0], eta * c * s2 / (2 * batch * lam), rtol=1e-13)
    np.testing.assert_allclose(
        got_sgd[0, 0], eta * c * s2 / (batch * lam * (2 - eta * lam)), rtol=1e-13
    )


def test_sgd_noise_covariance_against_every_batch_with_and_without_replacement():
    """c Sigma/B against an enumeration of every ordered batch (with replacement) or subset
    (without), on float64 and on float32 data under x64 (the float32 problem's own precision)."""
    problem = problems.linear_regression(7, 3, batch_size=2)
    theta = jnp.array([0.2, -0.4, 0.9])
    x, y = (np.asarray(a) for a in problem.data)
    g = (x @ np.asarray(theta) - y)[:, None] * x
    ordered = np.array([g[list(b)].mean(0) for b in itertools.product(range(7), repeat=2)])
    with_replacement = np.cov(ordered.T, bias=True)
    without = _exhaustive_minibatch_covariance(problem, theta, 2)
    for replace, ref in ((True, with_replacement), (False, without)):
        got = sde.SGDNoise(0.1, 2, replace=replace).minibatch_covariance(theta, problem)
        np.testing.assert_allclose(got, ref, rtol=1e-13)
    data32 = jax.tree.map(lambda a: a.astype(jnp.float32), problem.data)
    p32 = problems.finite_sum(
        problem.sample_loss_fn, data32, jnp.zeros(3, jnp.float32), batch_size=2
    )
    got = sde.SGDNoise(0.1, 2).minibatch_covariance(theta.astype(jnp.float32), p32)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, without, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("temperature", [jnp.asarray(0.1, jnp.bfloat16)])
def test_langevin_noise_of_a_low_precision_temperature(temperature):
    """sqrt(2T) was taken in T's dtype: a bfloat16 T on float64 parameters gave a noise scale
    3.7e-4 off sqrt(2T) (of T's exact value), and `Kramers` sqrt(2 gamma T) 7.6e-5 off."""
    theta = jnp.zeros(3)
    t = float(temperature)
    diag = sde.Langevin(temperature).diffusion(0.0, theta, None).diagonal
    np.testing.assert_allclose(diag, np.sqrt(2 * t), rtol=1e-15)
    gamma = jnp.asarray(0.5, jnp.bfloat16)
    diag = sde.Kramers(gamma, temperature).diffusion(0.0, (theta, theta), None).diagonal
    np.testing.assert_allclose(diag[3:], np.sqrt(2 * 0.5 * t), rtol=1e-15)


def test_kramers_of_mixed_precision_hyperparameters():
    """A float32 damping with a float64 temperature raised JAX's TypePromotionError (strict
    promotion) in `diffusion`."""
    theta = jnp.zeros(2)
    model = sde.Kramers(jnp.asarray(0.5, jnp.float32), jnp.asarray(0.1, jnp.float64))
    diag = model.diffusion(0.0, (theta, theta), None).diagonal
    np.testing.assert_allclose(diag[2:], np.sqrt(2 * float(np.float32(0.5)) * 0.1), rtol=1e-15)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_game_schemes_are_their_step_matrices_on_a_bilinear_game(dtype):
    """Five steps of every scheme on L = phi^T A theta against its `step_matrix` iterated by
    hand (optimistic: the first step plain GDA, then the two-step recursion)."""
    a = np.array([[1.0, 0.5], [-0.3, 2.0]])
    game = games.minmax(
        lambda phi, theta: phi @ jnp.asarray(a, phi.dtype) @ theta,
        jnp.array([0.3, -0.2], dtype),
        jnp.array([0.5, 0.1], dtype),
    )
    jac = np.asarray(game.jacobian(game.params0), float)
    a = a.astype(dtype).astype(float)  # the game's own A
    np.testing.assert_array_equal(jac, np.block([[np.zeros((2, 2)), a], [-a.T, np.zeros((2, 2))]]))
    h, steps = 0.1, 5
    z0 = np.concatenate([np.asarray(p, float) for p in game.params0])
    rtol = 1e-14 if dtype == jnp.float64 else 1e-6
    for name in games.SCHEMES:
        scheme = games.scheme(name)
        trajectory = dynopt.run(scheme.discretize(h), game, steps)
        got = np.concatenate([np.asarray(p) for p in trajectory.params], axis=-1)
        m = scheme.step_matrix(jac, h, 2)
        zs, previous = [z0], z0
        for k in range(steps):
            if name == "optimistic":
                z = (np.eye(4) + h * jac) @ zs[-1] if k == 0 else m[:4] @ np.r_[zs[-1], previous]
                previous = zs[-1]
            else:
                z = m @ zs[-1]
            zs.append(z)
        np.testing.assert_allclose(got, np.array(zs), rtol=rtol, atol=rtol, err_msg=name)


@pytest.mark.parametrize("promotion", ["strict", "standard"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("method", ["lobpcg", "lanczos"])
def test_preconditioned_sharpness_of_a_low_precision_diagonal(dtype, method, promotion):
    """The top eigenvalues of D^{-1/2} H D^{-1/2} against `eigh` of the matrix formed here, for a
    D given in float32 or bfloat16 on float64 parameters (D's own values, exact in float64):
    D^{-1/2} was taken in D's dtype, so the eigenvalues were 7e-4 off for bfloat16 (2.5e-8 for
    float32) under standard promotion, and strict promotion raised a TypePromotionError."""
    with jax.numpy_dtype_promotion(promotion):
        _check_preconditioned_sharpness(dtype, method)


def _check_preconditioned_sharpness(dtype, method):
    x = jax.random.normal(jax.random.key(0), (40, 3))
    model = eqx.nn.MLP(3, 2, 8, 2, activation=jnp.tanh, key=jax.random.key(1))
    problem = networks.network_problem(model, (x, jnp.arange(40) % 2), loss="cross_entropy")
    flat, unravel = ravel_pytree(problem.params0)
    n = flat.size
    hess = np.asarray(sharpness.dense_hessian(problem.loss, problem.params0))
    d = jnp.exp(jax.random.normal(jax.random.key(3), (n,))).astype(dtype)
    exact = np.asarray(d, float)
    ref = np.linalg.eigvalsh(hess / np.sqrt(np.outer(exact, exact)))[::-1]
    for k in (2, n - 1):
        start = sharpness.random_start(jax.random.key(2), n, k, jnp.float64)
        got = sharpness.top_eigenpairs(
            problem.grad, problem.params0, start, diag=unravel(d), method=method, max_iters=n
        )
        np.testing.assert_allclose(got.values, ref[:k], rtol=0, atol=1e-12 * ref[0])
    got = sharpness.top_eigenpairs(problem.grad, problem.params0, start, diag=d[0], max_iters=n)
    ref = np.linalg.eigvalsh(hess / exact[0])[::-1]
    np.testing.assert_allclose(got.values, ref[: n - 1], rtol=0, atol=1e-12 * ref[0])


def test_vector_sde_noise_of_a_bfloat16_alpha():
    """`VectorSDE.diffusion` took sqrt(alpha) in alpha's dtype: a bfloat16 alpha = 0.3 gave a
    noise scale 2.8e-3 off sqrt of its own value on the (float64) state."""
    alpha = jnp.asarray(0.3, jnp.bfloat16)
    model = densities.VectorSDE(lambda x, t: -x, alpha)
    g = model.diffusion(0.0, model.init(jnp.zeros(2)), None)
    np.testing.assert_allclose(g, np.sqrt(float(alpha)) * np.eye(2), rtol=1e-15)
