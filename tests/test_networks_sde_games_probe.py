"""dynopt.sde, dynopt.games, dynopt.maps and dynopt.lyapunov used on equinox networks (the
digits MLP, a small GAN), each number against an independent reference: exhaustive minibatch
enumeration, hand-written recursions, dense `eigh`."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import dynopt
from dynopt import games, networks, problems, sde
from dynopt._sde import moments


def _digits_mlp(num_samples, width, batch_size, loss="cross_entropy", seed=1):
    x, y = networks.digits(num_samples)
    model = networks.mlp(64, 10, width=width, depth=1, key=jax.random.key(seed))
    return networks.network_problem(model, (x, y), loss=loss, batch_size=batch_size), model, x, y


def test_minibatch_covariance_of_a_network_is_the_exhaustive_one():
    """`SGDNoise.minibatch_covariance` and every diffusion factor on a digits MLP against the
    covariance of the gradients of all C(8, 3) = 56 minibatches of a hand-written loss (the
    48-ish weights of constant pixels have zero gradients: rows and columns of zeros).

    Tolerance: one float64 covariance of 56 gradients, summed two ways: 1e-12 relative."""
    n, b, eta = 8, 3, 0.2
    problem, model, x, y = _digits_mlp(n, 2, b)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)

    def loss(w, idx):
        out = jax.vmap(eqx.combine(unravel(w), static))(x[idx])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y[idx]))

    batches = itertools.combinations(range(n), b)
    grads = np.array([np.asarray(jax.grad(loss)(flat, np.array(s))) for s in batches])
    exact = np.cov(grads.T, bias=True)
    assert np.sum(np.all(grads == 0, axis=0)) > 0  # dead weights: exactly zero gradients
    model_ = sde.SGDNoise(eta, b)
    scale = np.max(np.abs(exact))
    np.testing.assert_allclose(
        model_.minibatch_covariance(params, problem), exact, atol=1e-12 * scale
    )
    w, v = np.linalg.eigh(eta * exact)
    top3 = (v[:, -3:] * w[-3:]) @ v[:, -3:].T
    for kind, ref in [
        ("full", eta * exact),
        ("samples", eta * exact),
        ("diagonal", np.diag(np.diag(eta * exact))),
        ("lowrank", top3),
    ]:
        g = sde.SGDNoise(eta, b, covariance=kind, rank=3 if kind == "lowrank" else None)
        g = g.diffusion(0.0, params, problem)
        g = np.asarray(g.as_matrix() if hasattr(g, "as_matrix") else g)
        np.testing.assert_allclose(g @ g.T, ref, atol=1e-12 * eta * scale, err_msg=kind)


# --- quadratic_moments: the size of the system --------------------------------------------------


def test_quadratic_moments_refuse_a_network_past_the_dense_system():
    """On a 160-parameter digits MLP `quadratic_moments` asked XLA for 127 GB (out of memory);
    its system has d^2 + d + 1 = 25,761 unknowns. It is refused,
    naming the limit and the Monte-Carlo routes."""
    problem, *_ = _digits_mlp(8, 2, 3)
    assert problem.num_params == 160
    model = sde.SGDNoise(0.2, 3)
    with pytest.raises(ValueError, match=r"d = 160 .* d <= 32.*Monte Carlo"):
        sde.quadratic_moments(model, problem, jnp.array([0.0, 0.2]))
    with pytest.raises(ValueError, match=r"d = 160 .* d <= 32"):
        sde.quadratic_stationary_covariance(model, problem)


def _regression(num, dim, seed, dead=()):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num, dim))
    x[:, list(dead)] = 0.0  # a constant (standardised) input: its weight gets no gradient
    y = x @ rng.normal(size=dim) + 0.5 * rng.normal(size=num)
    return x, y


def _sample_loss(w, sample):
    x, y = sample
    return 0.5 * (jnp.dot(x, w) - y) ** 2


def _linear_regression(x, y, w0, batch_size):
    data = (jnp.asarray(x), jnp.asarray(y))
    return problems.finite_sum(_sample_loss, data, jnp.asarray(w0), batch_size=batch_size)


def test_moment_system_costs_n_d4_not_n_d5():
    """The system was the `jacfwd` of the one-step update: d^2 + d tangents of an O(n d^3)
    update, O(n d^5) flops (1.08e9 by XLA's count at d = 24, n = 30). It is assembled from its
    Kronecker blocks, O(n d^4). XLA's own flop count, bounded by 12 n d^4 (the two einsums of
    the S blocks are 4 n d^4)."""
    num, dim = 30, 24
    x, y = _regression(num, dim, 0)
    problem = _linear_regression(x, y, np.zeros(dim), 5)
    model = sde.SGDNoise(0.05, 5)
    flat0 = ravel_pytree(problem.params0)[0]
    data = moments._quadratic_data(problem, flat0)
    h = jnp.asarray(0.05)
    system = jax.jit(lambda data, h: moments._linear_system(model, problem, h, False, data))
    cost = system.lower(data, h).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    assert cost["flops"] < 12 * num * dim**4, cost["flops"]


def _moments_by_recursion(x, y, w0, eta, batch, steps):
    """Exact mean and covariance of SGD without replacement on the least squares
    1/(2n) sum (x_i.w - y_i)^2, from the law of one step (enumerating its C(n, B)
    minibatches): m+ = E[w - eta g_B(w)], and the second moment by the same expectation,
    M+ = E[(w - eta g_B)(w - eta g_B)^T], exact because g_B is affine in w."""
    n, d = x.shape
    subsets = [np.array(s) for s in itertools.combinations(range(n), batch)]
    # g_B(w) = A_B w - r_B; w+ = (I - eta A_B) w + eta r_B
    maps = [(np.eye(d) - eta * x[s].T @ x[s] / batch, eta * x[s].T @ y[s] / batch) for s in subsets]
    mean, second = np.asarray(w0, float), np.outer(w0, w0)
    out = [(mean, second - np.outer(mean, mean))]
    for _ in range(steps):
        new_mean = sum(p @ mean + r for p, r in maps) / len(maps)
        second = sum(
            p @ second @ p.T + np.outer(p @ mean, r) + np.outer(r, p @ mean) + np.outer(r, r)
            for p, r in maps
        ) / len(maps)
        mean = new_mean
        out.append((mean, second - np.outer(mean, mean)))
    return out


def test_sgd_moments_with_a_dead_input_match_minibatch_enumeration():
    """A constant input (three of the digits' 64 pixels) makes the least-squares Hessian
    singular: `quadratic_moments` returned NaN moments and `quadratic_stationary_covariance` a
    NaN matrix, without a word (`solve` of a singular Hessian). Now the least-norm Newton step;
    the moments of SGD equal those of every one of its C(7, 2) = 21 minibatches enumerated
    (`_moments_by_recursion`), and the stationary covariance equals the one of the problem
    without the dead input (zero in its row and column).

    Tolerance: float64 recursions of 6 steps: 1e-12 relative."""
    x, y = _regression(7, 3, 1, dead=[2])
    w0 = np.array([0.3, -0.2, 0.7])
    eta, batch = 0.2, 2
    problem = _linear_regression(x, y, w0, batch)
    model = sde.SGDNoise(eta, batch)
    ts = eta * np.arange(7)
    got = sde.quadratic_moments(model, problem, ts, step=eta)
    ref = _moments_by_recursion(x, y, w0, eta, batch, 6)
    for k, (mean, cov) in enumerate(ref):
        np.testing.assert_allclose(got.mean[k], mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(
            got.covariance[k], cov, rtol=0, atol=1e-12 * np.max(np.abs(ref[-1][1]))
        )
    assert np.all(np.asarray(got.mean[:, 2]) == 0.7)  # the dead weight never moves
    live = sde.quadratic_stationary_covariance(
        model, _linear_regression(x[:, :2], y, w0[:2], batch), step=eta
    )
    full = sde.quadratic_stationary_covariance(model, problem, step=eta)
    np.testing.assert_allclose(full[:2, :2], live, rtol=1e-10)
    np.testing.assert_array_equal(np.asarray(full)[2], 0.0)
    sde_full = sde.quadratic_stationary_covariance(model, problem)
    sde_live = sde.quadratic_stationary_covariance(
        model, _linear_regression(x[:, :2], y, w0[:2], batch)
    )
    np.testing.assert_allclose(sde_full[:2, :2], sde_live, rtol=1e-10)


def _tilted_loss(w, sample):
    x, y, u = sample
    return 0.5 * (jnp.dot(x[:2], w[:2]) - y) ** 2 + u * w[2]


def test_singular_quadratics_without_a_stationary_law_are_named():
    """A quadratic with a singular Hessian and (a) a mean linear term along the null direction
    is unbounded below, (b) a zero-mean one there is a random walk along it. Both ran to NaN
    without a word (`solve` of the singular Hessian; the check of a quadratic model passed, a
    quadratic's Hessian being the same at a NaN point). Now (a) is refused as unbounded, (b)'s
    stationary covariance as driven, and (b)'s moments at finite times are exact: the variance
    of w_3 grows as kappa var(u) t (the SDE) and eta^2 c var(u)/B per step (SGD)."""
    x, y = _regression(6, 2, 2)
    u = np.array([1.0, -1.0, 2.0, -2.0, 0.5, -0.5])
    w0 = jnp.array([0.1, 0.2, 0.3])
    model = sde.SGDNoise(0.1, 2)
    shifted = problems.finite_sum(
        _tilted_loss,
        (jnp.asarray(np.c_[x, 0 * u]), jnp.asarray(y), jnp.asarray(u + 1.0)),
        w0,
        batch_size=2,
    )
    for call in (
        lambda: sde.quadratic_moments(model, shifted, jnp.array([0.0, 1.0])),
        lambda: sde.quadratic_stationary_covariance(model, shifted),
    ):
        with pytest.raises(ValueError, match="decreases linearly"):
            call()
    driven = problems.finite_sum(
        _tilted_loss,
        (jnp.asarray(np.c_[x, 0 * u]), jnp.asarray(y), jnp.asarray(u)),
        w0,
        batch_size=2,
    )
    with pytest.raises(ValueError, match="drives its null directions"):
        sde.quadratic_stationary_covariance(model, driven)
    kappa = float(model.noise_scale(driven))
    var_u = float(np.mean(u**2))
    got = sde.quadratic_moments(model, driven, jnp.array([0.0, 1.0, 2.0]))
    np.testing.assert_allclose(
        got.covariance[:, 2, 2], kappa * var_u * np.array([0, 1, 2]), rtol=1e-10, atol=1e-15
    )
    sgd = sde.quadratic_moments(model, driven, 0.1 * np.arange(4), step=0.1)
    np.testing.assert_allclose(
        sgd.covariance[:, 2, 2], 0.1 * kappa * var_u * np.arange(4), rtol=1e-10, atol=1e-15
    )


def test_default_sde_step_resolves_the_gap_between_sgd_and_its_sde():
    """The decision behind `simulate`'s default step for `SGDNoise` (0.05/rho, 12 steps per
    eta on a digits MLP at eta lambda_max = 0.6), not dt = eta: Euler-Maruyama at dt = eta is
    SGD with Gaussian noise, stationary variance 2/(2 - eta lambda) times the SDE's (1.43
    here), the O(eta) gap that the SDE is there to be compared with; at the default step the
    scheme is within 2/(2 - 0.05) = 1.026 of the SDE. Exact moments of Euler-Maruyama
    (`quadratic_stationary_covariance(step=h)`), on the noisy quadratic.

    Tolerance: closed forms evaluated in float64, 1e-12 relative."""
    lam, eta = 1.2, 0.5
    problem = sde.noisy_quadratic(16, lam, 1.0, 0)
    model = sde.SGDNoise(eta, 1)
    default = 0.05 / lam  # STEP_MARGIN / lambda_max
    paths = sde.simulate(model, problem, jnp.array([0.0, 2 * eta]), jax.random.key(0), 1)
    np.testing.assert_allclose(float(paths.dt), default, rtol=1e-12)
    exact = float(sde.quadratic_stationary_covariance(model, problem)[0, 0])
    at_eta = float(sde.quadratic_stationary_covariance(model, problem, step=eta)[0, 0])
    at_default = float(sde.quadratic_stationary_covariance(model, problem, step=default)[0, 0])
    np.testing.assert_allclose(at_eta / exact, 2 / (2 - eta * lam), rtol=1e-12)
    np.testing.assert_allclose(at_default / exact, 2 / (2 - default * lam), rtol=1e-12)


# --- games: equinox networks as players ---------------------------------------------------------


def _gan(dtype=jnp.float64):
    kd, kg = jax.random.split(jax.random.key(0))
    cast = lambda m: jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, m)
    disc, gen = cast(eqx.nn.MLP(2, 1, 8, 1, key=kd)), cast(eqx.nn.MLP(2, 2, 8, 1, key=kg))
    real = (jax.random.normal(jax.random.key(3), (32, 2)) + 1.0).astype(dtype)
    z = jax.random.normal(jax.random.key(4), (32, 2)).astype(dtype)
    phi, d_static = eqx.partition(disc, eqx.is_inexact_array)
    theta, g_static = eqx.partition(gen, eqx.is_inexact_array)

    def d_loss(phi, theta):
        d, g = eqx.combine(phi, d_static), eqx.combine(theta, g_static)
        fake = jax.vmap(g)(z)
        return jnp.mean(jax.nn.softplus(-jax.vmap(d)(real))) + jnp.mean(
            jax.nn.softplus(jax.vmap(d)(fake))
        )

    def g_loss(phi, theta):
        d, g = eqx.combine(phi, d_static), eqx.combine(theta, g_static)
        return jnp.mean(jax.nn.softplus(-jax.vmap(d)(jax.vmap(g)(z))))

    return disc, gen, phi, theta, d_loss, g_loss


def test_a_game_of_equinox_networks_names_what_to_pass():
    """Whole `eqx.nn.MLP`s as players were refused with "phi0 must be a non-empty pytree of
    real floating arrays", naming neither the leaf (the activation function) nor the way out.
    The message names both; the partitioned players run, and simultaneous and alternating GDA
    equal hand-written loops (float64, 20 steps: 1e-14)."""
    disc, gen, phi, theta, d_loss, g_loss = _gan()
    with pytest.raises(ValueError, match=r"at \.activation .*eqx\.partition\(model"):
        games.Game(d_loss, g_loss, disc, gen)
    with pytest.raises(ValueError, match=r"1 of its leaves is not, the first at \['n'\]"):
        games.Game(d_loss, g_loss, {"w": jnp.ones(2), "n": jnp.array(3)}, theta)
    game = games.Game(d_loss, g_loss, phi, theta)
    h, steps = 0.05, 20
    step = lambda p, g: jax.tree.map(lambda a, b: a - h * b, p, g)
    for alternating in (False, True):
        p, t = phi, theta
        for _ in range(steps):
            p_new = step(p, jax.grad(d_loss, 0)(p, t))
            t = step(t, jax.grad(g_loss, 1)(p_new if alternating else p, t))
            p = p_new
        scheme = games.Alternating() if alternating else games.Simultaneous()
        traj = dynopt.run(scheme.discretize(h), game, steps)
        last = jax.tree.map(lambda a: a[-1], traj.params)
        for a, b in zip(jax.tree.leaves(last), jax.tree.leaves((p, t))):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-14)
