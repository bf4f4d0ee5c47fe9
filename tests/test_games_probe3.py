"""dynopt.games as a researcher writes their own games (a bilinear game with a non-square A, a
strongly-convex-strongly-concave quadratic game with a closed-form saddle, players as dict
pytrees): the defects found, each with the test that failed before its fix."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import games


_A = np.array([[1.0, 0.5], [-0.3, 2.0], [0.2, 0.1]])  # 3 x 2: phi in R^3, theta in R^2


def _bilinear(phi, theta):
    return phi @ jnp.asarray(_A) @ theta


@pytest.mark.parametrize(
    "equilibrium, match",
    [
        ((jnp.full(3, jnp.nan), jnp.zeros(2)), r"equilibrium's phi\* contains NaN or inf"),
        ((jnp.zeros(3), jnp.array([jnp.inf, 0.0])), r"equilibrium's theta\* contains NaN or inf"),
    ],
)
def test_an_equilibrium_that_is_not_finite_is_refused(equilibrium, match):
    """A NaN phi* passed as an equilibrium of x^T A y (the stationarity test took max |xi| over
    the leaves with Python's `max`, which keeps the finite theta-block value 0 before a NaN),
    and `eigenvalues()` then linearized the game at a NaN point."""
    with pytest.raises(ValueError, match=match):
        games.minmax(_bilinear, jnp.ones(3), jnp.ones(2), equilibrium=equilibrium)


def test_an_equilibrium_where_the_field_is_not_defined_is_refused():
    """L = phi.theta + |theta|: at the origin xi_phi = 0 but xi_theta = phi + theta/|theta| is
    NaN; the origin was accepted as a stationary point."""
    with pytest.raises(ValueError, match=r"game gradient there is NaN \(not defined there\)"):
        games.minmax(
            lambda p, t: p @ t + jnp.linalg.norm(t),
            jnp.ones(2),
            jnp.ones(2),
            equilibrium=(jnp.zeros(2), jnp.zeros(2)),
        )


@pytest.mark.parametrize(
    "center, match",
    [
        ("1", r"GradientPenalty center must be a real number >= 0 and finite, got '1' \(a str\)"),
        (np.inf, "GradientPenalty center must be >= 0 and finite, got inf"),
        (np.array([0.0, 1.0]), r"GradientPenalty center must be one real number .* shape \(2,\)"),
    ],
)
def test_a_gradient_penalty_center_is_one_finite_number(center, match):
    """A string center was a raw TypeError ('>=' between str and int); c = inf was accepted and
    made every penalty inf; an array failed on its ambiguous truth value. The Dirac GAN's
    `center` (float("x") was a raw conversion error) is checked the same way."""
    with pytest.raises(ValueError, match=match):
        games.GradientPenalty(1.0, center=center)
    with pytest.raises(ValueError, match=match):
        games.dirac_gan("wgan-gp", weight=0.1, center=center)
    # A finite c >= 0 keeps its closed form (eq. 15 on the Dirac critic: lambda (|phi| - c)^2).
    phi = jnp.array([0.3, -0.4])
    pen = games.GradientPenalty(0.5, center=2)(
        games.linear_critic, phi, jnp.zeros((1, 2)), jnp.zeros((1, 2))
    )
    np.testing.assert_allclose(pen, 0.5 * (0.5 - 2.0) ** 2, rtol=1e-15)


def _bilinear_game():
    return games.minmax(
        _bilinear, jnp.ones(3), jnp.ones(2), equilibrium=(jnp.zeros(3), jnp.zeros(2))
    )


def test_a_scheme_with_a_batch_of_gammas_is_one_run_per_gamma_and_not_one_flow():
    """`Consensus(jnp.array([0.1, 0.2]))` is a sweep for `run`; `compare`, `solve` and the growth
    predictions take one scheme, and failed with a raw broadcasting TypeError (the batch sat in
    the flow's scheme, where `check_unbatched` did not look)."""
    game = _bilinear_game()
    batched = games.Consensus(jnp.array([0.1, 0.2]))
    jac = np.asarray(game.jacobian(game.equilibrium))
    match = r"takes one (flow|scheme): (GameFlow\.scheme|Consensus)\.gamma has shape \(2,\)"
    for call in (
        lambda: dynopt.compare(games.GameFlow(batched), game, [0.1, 0.05, 0.025], 1.0),
        lambda: dynopt.solve(games.GameFlow(batched), game, [1.0]),
        lambda: games.modified_flow_growth(batched, game, 0.1),
        lambda: batched.growth(jac, 0.1, 3),
    ):
        with pytest.raises(ValueError, match=match):
            call()
    # `run` sweeps it: each entry is the run of its own gamma.
    sweep = dynopt.run(batched.discretize(0.1), game, 3)
    one = dynopt.run(games.Consensus(0.2).discretize(0.1), game, 3)
    np.testing.assert_array_equal(sweep.loss[1], one.loss)
    with pytest.raises(ValueError, match="jac must be finite"):  # was numpy's LinAlgError
        games.Simultaneous().growth(np.full((5, 5), np.nan), 0.1, 3)


@pytest.mark.parametrize(
    "norms, ceiling, match",
    [
        (1e-6 * 1.01 ** np.arange(100), -1.0, "ceiling must be > 0 and finite, got -1.0"),
        (1e-6 * 1.01 ** np.arange(100), np.nan, "ceiling must be > 0 and finite, got nan"),
        (1e-6 * np.cos(np.arange(100)), 1e-4, r"norms must be distances >= 0 .* norms\[2\] ="),
    ],
)
def test_measured_growth_checks_its_ceiling_and_distances(norms, ceiling, match):
    """A bad ceiling was reported as 'norms has 0 step(s) ... raise ceiling'; signed coordinates
    passed as norms were fitted on their positive entries alone (a factor from every other
    step)."""
    with pytest.raises(ValueError, match=match):
        games.measured_growth(norms, ceiling=ceiling)


def _damped_final_value(weight):
    """The Hamiltonian after 20 alternating steps on x^T A y with weight decay `weight` on D,
    written as a researcher does: the losses close over the weight."""
    game = games.Game(
        lambda p, t: -_bilinear(p, t) + 0.5 * weight * p @ p,
        _bilinear,
        jnp.array([0.3, -0.2, 0.5]),
        jnp.array([0.1, 0.4]),
        equilibrium=(jnp.zeros(3), jnp.zeros(2)),
    )
    return dynopt.run(games.Alternating().discretize(0.1), game, 20).loss[-1]


def test_a_game_whose_losses_close_over_a_vmapped_weight_builds_with_its_equilibrium():
    """The stationarity test of `equilibrium` is skipped for a traced field; it looked for
    traced leaves of the game only, so a loss closing over the vmapped weight failed with
    TracerArrayConversionError (np.asarray of the traced game gradient)."""
    weights = jnp.array([0.1, 0.5])
    swept = jax.vmap(_damped_final_value)(weights)
    for i, w in enumerate((0.1, 0.5)):
        np.testing.assert_allclose(swept[i], _damped_final_value(w), rtol=1e-14)


def _noisy_bilinear(phi, theta, key):
    return _bilinear(phi, theta) * (1.0 + 0.5 * jax.random.normal(key))


@pytest.mark.parametrize("batch_size", [None, 1])
def test_a_step_size_sweep_with_one_key_draws_the_minibatches_of_that_key(batch_size):
    """`run(scheme.discretize(hs), game, n, key=key)`: every step size of the sweep sees the
    minibatches of `key`, as its single run does. The key was dropped for a sweep of step sizes
    with one key: a stochastic game failed ('its losses need a key'), and a stochastic `Problem`
    silently ran full-batch GD."""
    game = games.minmax(_noisy_bilinear, jnp.array([0.3, -0.2, 0.5]), jnp.ones(2), stochastic=True)
    key = jax.random.key(3)
    hs = (0.05, 0.1, 0.2)
    disc = games.Extragradient().discretize(jnp.asarray(hs))
    sweep = dynopt.run(disc, game, 12, key=key, every=4, batch_size=batch_size)
    for i, h in enumerate(hs):
        single = dynopt.run(games.Extragradient().discretize(h), game, 12, key=key, every=4)
        for a, b in zip(sweep.params, single.params):
            np.testing.assert_allclose(a[i], b, rtol=1e-14, atol=1e-15)
    problem = dynopt.Problem(
        lambda x: 0.5 * jnp.sum(x**2),
        jnp.ones(2),
        stochastic_loss_fn=lambda x, k: 0.5 * jnp.sum((x - jax.random.normal(k, (2,))) ** 2),
    )
    sgd = dynopt.Discretization(
        optax.sgd, {"learning_rate": jnp.array([0.1, 0.2])}, dt=jnp.array([0.1, 0.2])
    )
    sweep = dynopt.run(sgd, problem, 5, key=key, batch_size=batch_size)
    single = dynopt.run(
        dynopt.Discretization(optax.sgd, {"learning_rate": 0.2}, dt=0.2), problem, 5, key=key
    )
    np.testing.assert_allclose(sweep.params[1], single.params, rtol=1e-14)


def test_a_non_square_bilinear_game_has_the_singular_values_of_its_matrix():
    """x^T A y with A 3 x 2: flow eigenvalues +-i sigma_i and one 0 (the null space of A^T);
    simultaneous GDA grows by sqrt(1 + h^2 sigma_max^2) per step and its modified flow
    z' = (J - h J^2 / 2) z by exp(h^2 sigma_max^2 / 2) (numpy's SVD as the truth)."""
    game = _bilinear_game()
    sigma = np.linalg.svd(_A, compute_uv=False)
    eig = game.eigenvalues()
    np.testing.assert_allclose(np.sort(eig.imag), np.sort(np.r_[sigma, -sigma, 0.0]), atol=1e-14)
    np.testing.assert_allclose(eig.real, 0.0, atol=1e-14)
    jac = np.asarray(game.jacobian(game.equilibrium))
    for h in (0.05, 0.2, 0.7):
        growth = games.Simultaneous().growth(jac, h, game.num_phi)
        np.testing.assert_allclose(growth, np.sqrt(1 + h**2 * sigma.max() ** 2), rtol=1e-14)
        modified = games.modified_flow_growth(games.Simultaneous(), game, h)
        np.testing.assert_allclose(modified, np.exp(h**2 * sigma.max() ** 2 / 2), rtol=1e-13)
