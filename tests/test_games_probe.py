"""dynopt.games, found by probing as a user: options of the wrong scheme, bad keys and sizes in
the mixture GAN's helpers, and the sliced Wasserstein distance's inputs (checked against scipy's
one-dimensional Wasserstein distance on the same projections)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dynopt import games


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("simultaneous", {"gamma": 1.0}, "takes no options; got gamma"),  # was a TypeError
        ("consensus", {"gama": 1.0}, "takes gamma; got gama"),
        ("alternating", {"gamma": 0.5}, "takes d_first; got gamma"),
    ],
)
def test_scheme_names_the_options_a_scheme_takes(name, options, match):
    with pytest.raises(ValueError, match=match):
        games.scheme(name, **options)


def test_scheme_passes_its_own_options():
    assert float(games.scheme("consensus", gamma=0.5).gamma) == 0.5
    assert games.scheme("alternating", d_first=False).d_first is False


def test_mixture_gan_refuses_a_seed_for_a_key():
    # An int seed failed inside jax.random.split with a TypeError about key data.
    with pytest.raises(ValueError, match=r"key must be one jax\.random\.key"):
        games.mixture_gan(0, hidden=4)
    with pytest.raises(ValueError, match=r"key must be one jax\.random\.key"):
        games.mixture_gan(jax.random.split(jax.random.key(0), 2), hidden=4)
    games.mixture_gan(jax.random.PRNGKey(0), hidden=4)  # a legacy uint32[2] key is one key


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: games.mixture_modes(0), "num_modes"),  # was an empty array
        (lambda: games.mixture_modes(8, radius=-1.0), "radius"),
        (lambda: games.sample_mixture(jax.random.key(0), 0), "n must be"),  # was (0, 2)
        (lambda: games.sample_mixture(jax.random.key(0), 4, std=-1.0), "std"),  # was |std|
        (lambda: games.sample_mixture(jax.random.key(0), 4, num_modes=0), "num_modes"),
    ],
)
def test_mixture_helpers_validate_their_sizes(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_sample_mixture_keeps_its_numbers():
    x = games.sample_mixture(jax.random.key(3), 4000, num_modes=4, radius=1.5, std=0.1)
    modes = np.asarray(games.mixture_modes(4, 1.5))
    dist = np.linalg.norm(np.asarray(x)[:, None] - modes[None], axis=-1)
    # Every point is within 6 std of a mode, and the residuals have std 0.1 (4000 x 2 draws:
    # relative standard error 1/sqrt(2 * 8000) = 0.8 %; 4 % is five of them).
    assert dist.min(axis=1).max() < 0.6
    resid = np.asarray(x) - modes[dist.argmin(axis=1)]
    assert resid.std() == pytest.approx(0.1, rel=0.04)


@pytest.mark.parametrize(
    "x, y, num, match",
    [
        (jnp.ones((3,)), jnp.ones((3,)), 8, "\\(n, d\\) arrays"),  # was an IndexError
        (jnp.ones((3, 2)), jnp.ones((4, 2)), 8, "\\(n, d\\) arrays"),
        (jnp.ones((0, 2)), jnp.ones((0, 2)), 8, "\\(n, d\\) arrays"),
        (jnp.ones((3, 2)), jnp.ones((3, 2)), 0, "num_projections"),  # was NaN
    ],
)
def test_sliced_wasserstein_validates_its_inputs(x, y, num, match):
    with pytest.raises(ValueError, match=match):
        games.sliced_wasserstein(jax.random.key(0), x, y, num)


def test_sliced_wasserstein_is_the_mean_of_scipy_distances_on_its_directions():
    # Reference: the same directions (drawn as the function draws them), scipy's W1 of the
    # projected samples; both are exact for empirical laws, so they agree to round-off.
    kx, ky, key = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(kx, (50, 3))
    y = 0.5 + 2.0 * jax.random.normal(ky, (50, 3))
    u = np.asarray(jax.random.normal(key, (16, 3), x.dtype))
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    ref = np.mean([stats.wasserstein_distance(np.asarray(x) @ d, np.asarray(y) @ d) for d in u])
    got = float(games.sliced_wasserstein(key, x, y, 16))
    assert got == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("where", ["phi0", "theta0"])
def test_game_refuses_a_start_that_is_not_finite(where):
    # As Problem.params0 does; before, run() iterated a NaN trajectory without a word.
    def loss(phi, theta):
        return jnp.dot(phi, theta)

    start = {"phi0": jnp.array([0.1, 0.2]), "theta0": jnp.array([0.3, 0.4])}
    start[where] = jnp.array([jnp.nan, 0.2])
    with pytest.raises(ValueError, match=f"{where} contains NaN or inf"):
        games.minmax(loss, start["phi0"], start["theta0"])
    with pytest.raises(ValueError, match=f"{where} contains NaN or inf"):
        games.dirac_gan(**{where: [0.1, float("inf")]})


def test_sliced_wasserstein_of_mixed_precisions_is_the_wider_ones():
    # float32 generator samples against float64 data raised a strict-promotion error; the
    # distance is the float64 one of the float32 points (exactly representable in float64).
    key = jax.random.key(0)
    x = jax.random.normal(jax.random.key(1), (50, 2), jnp.float32)
    y = jax.random.normal(jax.random.key(2), (50, 2), jnp.float64)
    mixed = games.sliced_wasserstein(key, x, y)
    assert mixed.dtype == jnp.float64
    ref = games.sliced_wasserstein(key, x.astype(jnp.float64), y)
    assert float(mixed) == float(ref)
    # Integer points are measured in the default float dtype.
    ints = jnp.arange(10).reshape(5, 2)
    assert games.sliced_wasserstein(key, ints, ints + 1).dtype == jnp.float64


@pytest.mark.parametrize("rate", [0.0, -0.1, float("nan"), float("inf")])
@pytest.mark.parametrize(
    "make",
    [
        games.simultaneous_gda,
        games.alternating_gda,
        games.extragradient,
        games.optimistic_gda,
        lambda lr: games.consensus_optimization(lr, 1.0),
    ],
)
def test_gda_transforms_check_learning_rate(make, rate):
    """The GDA transforms took a zero, negative, NaN or infinite learning rate without a word
    (standing still, ascending, or NaN iterates); now a ValueError naming learning_rate."""
    with pytest.raises(ValueError, match="learning_rate must be > 0 and finite"):
        make(rate)


def test_gda_transforms_check_gamma_and_d_first():
    """consensus_optimization(h, gamma=-1) (anti-consensus) and alternating_gda(h, d_first="no")
    (a truthy string: the discriminator first) were accepted silently."""
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        games.consensus_optimization(0.1, -1.0)
    with pytest.raises(ValueError, match="d_first must be True or False"):
        games.alternating_gda(0.1, d_first="no")


def test_gda_transforms_valid_rates_unchanged():
    """A valid rate, concrete or traced (vmapped), steps as before: one GDA step on the
    bilinear game phi * theta from (1, 1) is (1 + h, 1 - h)."""
    game = games.minmax(lambda phi, theta: phi * theta, 1.0, 1.0)
    z = game.params0

    def one_step(h):
        tx = games.simultaneous_gda(h)
        updates, _ = tx.update(game.gradient(z), tx.init(z), z)
        return jnp.stack([z[0] + updates[0], z[1] + updates[1]])

    hs = jnp.array([0.1, 0.25])
    # phi (the max-player) ascends phi * theta, theta descends it: xi = (-theta, phi).
    expected = jnp.stack([1.0 + hs, 1.0 - hs], axis=1)
    np.testing.assert_allclose(jax.vmap(one_step)(hs), expected, rtol=1e-15)
    np.testing.assert_allclose(one_step(0.1), expected[0], rtol=1e-15)
