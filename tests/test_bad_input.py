"""Bad input that earlier probes found and that reached Python's or JAX's `TypeError`, or was
accepted silently (a NaN result, a negative action, a rank-deficient block): each is now a
one-line `ValueError` naming the argument and the valid range, and valid calls give the same
numbers as before."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import densities as D, games, lyapunov, networks, problems, rnn, sde, sharpness
from dynopt._validation import function, one_key, seed


# --- the shared validators --------------------------------------------------------------------


def test_one_key_accepts_typed_and_legacy_keys_concrete_or_traced():
    typed, legacy = jax.random.key(0), jax.random.PRNGKey(0)
    assert one_key("key", typed) is typed and one_key("key", legacy) is legacy
    jax.vmap(lambda k: one_key("key", k))(jax.random.split(typed, 3))  # one key per member
    for bad, shown in (
        (0, "int 0"),
        (None, "None"),
        (jax.random.split(typed, 2), r"key<fry>\[2\]"),
        (jnp.zeros(2), r"float64\[2\]"),
    ):
        with pytest.raises(
            ValueError, match=rf"^key must be one jax\.random\.key .*got {shown}\.$"
        ):
            one_key("key", bad)


def test_function_names_the_argument_and_what_to_pass():
    assert function("f", len) is len and function("f", None, allow_none=True) is None
    with pytest.raises(ValueError, match=r"^f must be callable, got int 3\.$"):
        function("f", 3)
    with pytest.raises(ValueError, match=r"^g must be callable x -> y, got str 'relu'\.$"):
        function("g", "relu", "callable x -> y")
    with pytest.raises(ValueError, match=r"^f must be callable, got None\.$"):
        function("f", None)


# --- 1. PRNG keys ------------------------------------------------------------------------------


def test_random_start_refuses_an_int_key_and_more_columns_than_parameters():
    """`random_start(0, 5, 2)` was JAX's TypeError 'invalid PRNG key data'; k > n drew a
    block of more columns than dimensions (rank-deficient), accepted."""
    with pytest.raises(ValueError, match=r"^key must be one jax\.random\.key .*got int 0\.$"):
        sharpness.random_start(0, 5, 2)
    with pytest.raises(ValueError, match=r"^k must be in \[1, 5\] .*got k=6\.$"):
        sharpness.random_start(jax.random.key(0), 5, 6)
    # Valid calls: the same draw as jax.random.normal's.
    key = jax.random.key(3)
    np.testing.assert_array_equal(
        sharpness.random_start(key, 5, 5), jax.random.normal(key, (5, 5), jnp.float64)
    )


def test_networks_and_mixture_gan_share_the_key_check():
    for make in (
        lambda k: networks.mlp(2, 1, key=k),
        lambda k: games.mixture_gan(k, hidden=4, depth=1),
        lambda k: games.sample_mixture(k, 4),
    ):
        with pytest.raises(ValueError, match=r"^key must be one jax\.random\.key .*got int 0\.$"):
            make(0)
    x = games.sample_mixture(jax.random.key(1), 4)
    k_mode, k_noise = jax.random.split(jax.random.key(1))
    modes = games.mixture_modes()
    idx = jax.random.randint(k_mode, (4,), 0, 8)
    np.testing.assert_array_equal(x, modes[idx] + 0.02 * jax.random.normal(k_noise, (4, 2)))


# --- 2. densities.total_variation --------------------------------------------------------------


def _histogram():
    edges = jnp.linspace(-1.0, 1.0, 5)
    return D.histogram_density(jnp.linspace(-0.9, 0.9, 50), edges, 1.0), edges


def test_total_variation_refuses_a_non_callable_cdf_and_mismatched_edges():
    """`total_variation(dens, edges, 3)` was Python's TypeError "'int' object is not
    callable"; edges of another histogram broadcast or failed in `sub`."""
    dens, edges = _histogram()
    with pytest.raises(ValueError, match=r"^cdf must be callable .*got int 3\.$"):
        D.total_variation(dens, edges, 3)
    cdf = jax.scipy.stats.norm.cdf
    with pytest.raises(ValueError, match=r"^edges must be the histogram's 5 bin edges"):
        D.total_variation(dens, jnp.linspace(-1.0, 1.0, 7), cdf)
    with pytest.raises(ValueError, match=r"^edges must be a 1-D increasing array of >= 2 finite"):
        D.total_variation(dens, jnp.array([-1.0, 0.0, jnp.nan, 0.5, 1.0]), cdf)
    with pytest.raises(ValueError, match=r"^dens must be a GridDensity"):
        D.total_variation(dens.density, edges, cdf)
    with pytest.raises(ValueError, match=r"^cdf must map the edges \(shape \(5,\)\)"):
        D.total_variation(dens, edges, lambda e: cdf(e)[:3])
    # The valid call's number, by hand.
    exact = jnp.diff(cdf(edges))
    want = 0.5 * jnp.sum(jnp.abs(dens.density * jnp.diff(edges) - exact))
    assert float(D.total_variation(dens, edges, cdf)) == float(want)


# --- 3. the path-integral actions --------------------------------------------------------------


def _sde():
    return D.ScalarSDE(lambda x, t: jnp.sin(t) * x - x**3 / 3 + 0.5, 0.7)


def _path(t):
    return jnp.cos(2 * t) + 0.3 * t


@pytest.mark.parametrize("action", [D.action_eq66, D.action_eq68, D.boundary_term])
def test_actions_refuse_a_non_path_reversed_or_nan_times(action):
    """A non-callable path was JAX's TypeError; ta > tb returned the oriented integral -S (a
    path weight e^{-S} above 1 for the transition backwards in time), accepted."""
    model = _sde()
    with pytest.raises(ValueError, match=r"^path must be callable t -> x\(t\).*got int 3\.$"):
        action(model, 3, 0.0, 1.0)
    for ta, tb in ((1.5, 0.0), (1.0, 1.0)):
        with pytest.raises(ValueError, match=rf"^tb must be > ta .*got ta={ta:g}, tb={tb:g}\.$"):
            action(model, _path, ta, tb)
    with pytest.raises(ValueError, match=r"^ta must be finite, got nan"):
        action(model, _path, float("nan"), 1.0)
    with pytest.raises(ValueError, match=r"^path must map a time t to a scalar x\(t\)"):
        action(model, lambda t: jnp.stack([t, t]), 0.0, 1.0)
    with pytest.raises(ValueError, match=r"^sde must be a dynopt\.densities\.ScalarSDE"):
        action(lambda x, t: -x, _path, 0.0, 1.0)


def test_reversed_times_are_refused_inside_jit():
    model = _sde()
    f = jax.jit(lambda ta, tb: D.action_eq66(model, _path, ta, tb))
    assert np.isfinite(float(f(0.0, 1.5)))
    with pytest.raises(Exception, match="tb must be > ta"):
        f(1.5, 0.0).block_until_ready()


def test_onsager_machlup_action_refuses_nan_and_unordered_times():
    """A NaN time returned S = NaN, accepted."""
    model, xs = _sde(), jnp.array([0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match=r"^ts must be finite, got \[ *0\. +nan +1\.\]"):
        D.onsager_machlup_action(model, jnp.array([0.0, jnp.nan, 1.0]), xs)
    with pytest.raises(ValueError, match=r"^ts must be strictly increasing"):
        D.onsager_machlup_action(model, jnp.array([0.0, 1.0, 0.5]), xs)
    with pytest.raises(ValueError, match=r"^xs must be finite"):
        D.onsager_machlup_action(model, jnp.array([0.0, 0.5, 1.0]), jnp.array([0.0, jnp.inf, 1.0]))
    with pytest.raises(ValueError, match=r"^xs must hold one point per time, shape \(3,\)"):
        D.onsager_machlup_action(model, jnp.array([0.0, 0.5, 1.0]), jnp.zeros(4))


def test_potential_V_refuses_a_nan_time_or_point():
    """`potential_V(sde, 0.1, nan)` returned a number for a time-independent drift (the NaN
    time dropped silently) and NaN for a time-dependent one."""
    model = D.linear_sde(1.0, 0.5)
    with pytest.raises(ValueError, match=r"^t must be finite, got nan\.$"):
        D.potential_V(model, 0.1, float("nan"))
    with pytest.raises(ValueError, match=r"^x must be finite, got inf\.$"):
        D.potential_V(model, float("inf"), 0.0)
    with pytest.raises(ValueError, match=r"^x must be a scalar, got shape \(2,\)"):
        D.potential_V(model, jnp.ones(2), 0.0)
    # Eq. (69) for p = x (no t dependence): V = -(alpha + x^2) / 2.
    assert float(D.potential_V(model, 0.1, 0.3)) == pytest.approx(-0.5 * (0.5 + 0.01), rel=1e-14)


def test_mesh_points_refuses_nan_and_non_axes():
    """A NaN coordinate made NaN points; a bare 1-D array meshed its scalars."""
    with pytest.raises(ValueError, match=r"^axes\[0\] must be finite, got \[ *0\. +nan\]"):
        D.mesh_points([jnp.array([0.0, jnp.nan])])
    with pytest.raises(ValueError, match=r"^axes\[0\] must be a 1-D array of coordinates"):
        D.mesh_points(jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"^axes must be a non-empty sequence of 1-D arrays"):
        D.mesh_points([])
    pts = D.mesh_points((np.array([0.0, 1.0]), np.array([2.0, 3.0, 4.0])))
    assert pts.shape == (2, 3, 2) and float(pts[1, 2, 0]) == 1.0 and float(pts[1, 2, 1]) == 4.0


# --- 4. rnn.ODECell ----------------------------------------------------------------------------


def _decay(t, y, p):
    return -p * y


def test_odecell_refuses_a_string_step_and_bad_params():
    """`ODECell(f, p, 'a')` (the method given positionally) was JAX's TypeError."""
    with pytest.raises(ValueError, match=r"^step_size must be a real number > 0 .*method="):
        rnn.ODECell(_decay, 1.0, "rk4")
    with pytest.raises(ValueError, match=r"^params\['k'\] must be finite, got nan\.$"):
        rnn.ODECell(_decay, {"k": float("nan")}, 0.1)
    with pytest.raises(ValueError, match=r"^params must be a finite real number, got 'a'"):
        rnn.ODECell(_decay, "a", 0.1)
    with pytest.raises(ValueError, match=r"^clip must be a real number > 0"):
        rnn.ODECell(_decay, 1.0, 0.1, clip="big")


def test_odecell_times_refuses_a_nan_start_and_non_integer_steps():
    """`cell.times(3, nan)` was a grid of NaN; `times(0.0)` passed as the 0-step grid."""
    cell = rnn.ODECell(_decay, 1.0, 0.1)
    with pytest.raises(ValueError, match=r"^t0 must be finite, got nan\.$"):
        cell.times(3, float("nan"))
    with pytest.raises(ValueError, match=r"^num_steps must be a non-negative integer, got 0\.0"):
        cell.times(0.0)
    with pytest.raises(ValueError, match=r"^dtype must be None or a floating dtype"):
        cell.times(3, dtype=jnp.int32)
    np.testing.assert_array_equal(cell.times(2, 0.5), 0.5 + 0.1 * np.arange(3.0))


# --- 5. lyapunov.max_relative_deviation --------------------------------------------------------


def test_max_relative_deviation_refuses_nan_and_strings():
    """A NaN rate returned NaN, a string was JAX's TypeError."""
    with pytest.raises(ValueError, match=r"^measured must be finite, got \[nan\]\.$"):
        lyapunov.max_relative_deviation(jnp.array([jnp.nan]), jnp.array([1.0]))
    with pytest.raises(ValueError, match=r"^predicted must be finite, got \[ *1\. +inf\]\.$"):
        lyapunov.max_relative_deviation(jnp.ones(2), jnp.array([1.0, jnp.inf]))
    with pytest.raises(ValueError, match=r"^measured must be a finite real number, got 'a'"):
        lyapunov.max_relative_deviation("a", "b")
    f = jax.jit(lyapunov.max_relative_deviation)
    with pytest.raises(Exception, match="measured and predicted must be finite"):
        f(jnp.array([jnp.nan, 1.0]), jnp.ones(2)).block_until_ready()
    assert float(f(jnp.array([1.0, 2.5]), jnp.array([1.0, 2.0]))) == 0.25


# --- 6. games ----------------------------------------------------------------------------------


def _bilinear(phi, theta):
    return jnp.dot(phi, theta)


def test_minmax_refuses_a_non_stationary_equilibrium():
    """Any pair of the right shapes was taken as the equilibrium, stationary or not (the
    eigenvalues and the distance-to-equilibrium metrics then described another point)."""
    ones, zeros = jnp.ones(2), jnp.zeros(2)
    with pytest.raises(ValueError, match=r"^equilibrium must be a stationary point .*= 1,"):
        games.minmax(_bilinear, ones, ones, equilibrium=(ones, ones))
    # Stationary: exactly, and to about half the working precision (sqrt(eps) ~ 1.5e-8 times
    # the field's scale at the start, here |xi(z0)| = 1).
    games.minmax(_bilinear, ones, ones, equilibrium=(zeros, zeros))
    games.minmax(_bilinear, ones, ones, equilibrium=(zeros, jnp.full(2, 1e-9)))
    with pytest.raises(ValueError, match=r"max \|xi\| = 1e-06, above .* = 1\.49e-08"):
        games.minmax(_bilinear, ones, ones, equilibrium=(zeros, jnp.full(2, 1e-6)))
    # The scale is the field's own: the same game with its loss scaled by 1e6.
    games.minmax(
        lambda p, t: 1e6 * _bilinear(p, t), ones, ones, equilibrium=(zeros, jnp.full(2, 1e-9))
    )
    # float32 players: sqrt(eps32) ~ 3.5e-4.
    f32 = jnp.ones(2, jnp.float32)
    games.minmax(_bilinear, f32, f32, equilibrium=(jnp.zeros(2, jnp.float32), 1e-4 * f32))
    with pytest.raises(ValueError, match=r"above .* = 0\.000345 \(float32\)"):
        games.minmax(_bilinear, f32, f32, equilibrium=(jnp.zeros(2, jnp.float32), 1e-3 * f32))
    # A game built under vmap (a sweep of a penalty weight, an equilibrium at the origin) has
    # traced losses: the check is the host's, skipped there.
    sweep = jax.vmap(lambda w: games.dirac_gan("wgan-gp", weight=w).gradient((ones, ones))[0])
    np.testing.assert_allclose(sweep(jnp.array([0.1, 0.2])), [[1.2, 1.2], [1.4, 1.4]], rtol=1e-15)


def test_minmax_refuses_a_name_that_is_not_a_string_and_a_string_flag():
    with pytest.raises(ValueError, match=r"^name must be a string, got 3\.$"):
        games.minmax(_bilinear, jnp.ones(2), jnp.ones(2), name=3)
    with pytest.raises(ValueError, match=r"^stochastic must be True or False, got 'no'\.$"):
        games.minmax(_bilinear, jnp.ones(2), jnp.ones(2), stochastic="no")


def test_game_gradient_refuses_a_point_that_is_not_a_pair_like_the_players():
    """`game.gradient(1.0)` was Python's TypeError ('float' object is not subscriptable), and
    players of other shapes were differentiated silently."""
    game = games.minmax(_bilinear, jnp.ones(2), jnp.ones(2))
    with pytest.raises(ValueError, match=r"^z must be a pair \(phi, theta\) .*type float\.$"):
        game.gradient(1.0)
    with pytest.raises(ValueError, match=r"^z's phi must be like phi0: .*\(2,\), got \(3,\)"):
        game.gradient((jnp.ones(3), jnp.ones(3)))
    with pytest.raises(ValueError, match=r"^z's theta must be like theta0"):
        jax.jit(lambda z: game.gradient(z))((jnp.ones(2), jnp.ones((2, 1))))
    g_phi, g_theta = game.gradient([jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0])])
    np.testing.assert_array_equal(g_phi, [-3.0, -4.0])  # the D loss is -phi . theta
    np.testing.assert_array_equal(g_theta, [1.0, 2.0])


# --- 7. seeds ----------------------------------------------------------------------------------

_SEEDED = {
    "digits": lambda s: networks.digits(20, seed=s),
    "gaussian_classes": lambda s: networks.gaussian_classes(8, seed=s),
    "gaussian_regression": lambda s: networks.gaussian_regression(8, seed=s),
    "linear_regression": lambda s: problems.linear_regression(8, 2, batch_size=4, seed=s),
    "logistic_regression": lambda s: problems.logistic_regression(8, 2, batch_size=4, seed=s),
    "mlp_regression": lambda s: problems.mlp_regression(
        8, 2, width=2, depth=1, batch_size=4, seed=s
    ),
    "quadratic": lambda s: problems.quadratic([1.0, 2.0], rotate=True, seed=s),
    "noisy_quadratic": lambda s: sde.noisy_quadratic(4, 1.0, 0.5, s),
}


@pytest.mark.parametrize("make", _SEEDED.values(), ids=_SEEDED.keys())
def test_every_data_constructor_takes_seeds_in_0_to_2_to_the_32(make):
    """`digits` refused a negative seed (NumPy does) where `gaussian_*` and the problems took
    it (JAX does): one rule now, the seeds both accept, [0, 2**32) (as the experiments'
    `--seed`)."""
    for bad in (-1, 2**32, 1.5, True, "0", None):
        with pytest.raises(ValueError, match=r"^seed must be an integer in \[0, 2\*\*32\)"):
            make(bad)
    make(2**32 - 1)
    make(np.uint32(7))


def test_seed_validator():
    assert seed("seed", np.int64(5)) == 5 and type(seed("seed", np.int64(5))) is int
    with pytest.raises(ValueError, match=r"^s must be an integer in \[0, 2\*\*32\), got -1\.$"):
        seed("s", -1)
    with pytest.raises(ValueError, match=r"^s must be an integer .*got float 1\.5\.$"):
        seed("s", 1.5)


# --- 8. callables ------------------------------------------------------------------------------

_NOT_CALLABLE = {
    "loss_fn": lambda f: dynopt.Problem(f, jnp.ones(2)),
    "stochastic_loss_fn": lambda f: dynopt.Problem(_sum, jnp.ones(2), stochastic_loss_fn=f),
    "P": lambda f: dynopt.flows.PreconditionedFlow(f),
    "factory": lambda f: dynopt.Discretization(f, {"learning_rate": 0.1}, dt=0.1),
    "precondition": lambda f: dynopt.transforms.scale_by_preconditioner(f),
    "f": lambda f: D.ito_lemma(f, _drift, _drift, 0.0, 1.0),
    "drift": lambda f: D.ScalarSDE(f, 1.0),
    "potential": lambda f: sde.gibbs_bin_probabilities(f, 1.0, np.linspace(-1.0, 1.0, 4)),
    "F": lambda f: dynopt.characteristics.charpit(f, _initial, np.zeros((3, 1)), 1.0),
    "sample_loss_fn": lambda f: problems.finite_sum(f, jnp.ones((4, 2)), jnp.ones(2), batch_size=2),
    "g_loss_fn": lambda f: games.Game(_bilinear, f, jnp.ones(2), jnp.ones(2)),
    "activation": lambda f: networks.mlp(2, 1, activation=f, key=jax.random.key(0)),
    "vector_field": lambda f: rnn.ODECell(f, 1.0, 0.1),
    "grad_fn": lambda f: sharpness.top_eigenpairs(f, jnp.ones(2), jnp.ones((2, 1))),
}


def _sum(p, *args):
    return jnp.sum(p**2)


def _drift(t, x):
    return x


def _initial(s):
    return s, s[0]


@pytest.mark.parametrize("name", _NOT_CALLABLE)
def test_every_callable_argument_is_checked_by_one_helper(name):
    """~20 copies of "must be callable" across dynopt, each showing the type alone ('got int')
    or the value alone: one helper (`validation.function`) now, naming the argument, what to
    pass and the value given with its type."""
    with pytest.raises(ValueError, match=rf"^{name} must be .*, got int 3\.$"):
        _NOT_CALLABLE[name](3)


# --- 9. further probes of the same kind --------------------------------------------------------


def test_sharpness_refuses_nan_or_non_numeric_params_and_a_bad_krylov_start():
    """NaN parameters gave NaN eigenpairs or a NaN Hessian without a word, a string JAX's
    TypeError; krylov_start(..., 0) was an AttributeError ('int' has no 'shape')."""
    nan_params = jnp.array([jnp.nan, 1.0])
    with pytest.raises(ValueError, match=r"^params must be finite, got \[nan +1\.\]\.$"):
        sharpness.dense_hessian(_sum, nan_params)
    with pytest.raises(ValueError, match=r"^params must be a finite real number, got 'a'"):
        sharpness.dense_hessian(_sum, "a")
    # (top_eigenpairs' own `checked` decides what a NaN point does: no host check of it.)
    with pytest.raises(ValueError, match=r"^params\['w'\] must be an array of real numbers"):
        sharpness.top_eigenpairs(lambda p: p, {"w": "ab"}, jnp.ones((2, 1)))
    with pytest.raises(ValueError, match=r"^start must be an \(n, k\) block with n = 2 .*\(\)\.$"):
        sharpness.krylov_start(lambda p: p, jnp.ones(2), 0)
    np.testing.assert_array_equal(sharpness.dense_hessian(_sum, jnp.ones(2)), 2 * jnp.eye(2))


def test_mixture_gan_metrics_refuse_an_int_key_and_nan_samples():
    """sliced_wasserstein(0, ...) was JAX's TypeError; a NaN sample made the distance NaN, and
    mode_statistics counted it as a low-quality sample."""
    x = jnp.ones((4, 2))
    with pytest.raises(ValueError, match=r"^key must be one jax\.random\.key .*got int 0\.$"):
        games.sliced_wasserstein(0, x, x)
    with pytest.raises(ValueError, match=r"^x must be finite"):
        games.sliced_wasserstein(jax.random.key(0), x.at[0, 0].set(jnp.nan), x)
    with pytest.raises(ValueError, match=r"^samples must be finite"):
        games.mode_statistics(x.at[0, 0].set(jnp.inf))
    with pytest.raises(ValueError, match=r"^key must be one jax\.random\.key"):
        games.generate(games.mixture_gan(jax.random.key(0), hidden=4, depth=1).theta0, 0, 3)
    assert float(games.sliced_wasserstein(jax.random.key(0), x, x)) == 0.0


def test_game_jacobian_and_dirac_solution_refuse_bad_points():
    game = games.minmax(_bilinear, jnp.ones(2), jnp.ones(2))
    with pytest.raises(ValueError, match=r"^z must be a pair \(phi, theta\)"):
        game.eigenvalues("a")
    with pytest.raises(ValueError, match=r"^t must be finite, got nan\.$"):
        games.dirac_linear_solution(float("nan"))
    phi, theta = games.dirac_linear_solution(jnp.pi, jnp.array([1.0]), jnp.array([0.0]))
    np.testing.assert_allclose([phi[0], theta[0]], [0.0, 1.0], atol=1e-15)


def test_densities_refuse_nan_points_coefficients_and_a_non_definite_covariance():
    """Each returned NaN (or a silently wrong number) before."""
    with pytest.raises(ValueError, match=r"^xb must be finite, got nan\.$"):
        D.mehler_kernel(float("nan"), 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"^coeffs must be finite, got \[nan +1\.\]\.$"):
        D.Polynomial(jnp.array([jnp.nan, 1.0]))
    with pytest.raises(ValueError, match=r"^x must be finite, got nan\.$"):
        D.ito_lemma(_drift, _drift, _drift, 0.0, float("nan"))
    with pytest.raises(ValueError, match=r"^x must be finite, got inf\.$"):
        D.antiderivative(jnp.sin, float("inf"))
    pts = jnp.zeros((3, 1))
    with pytest.raises(ValueError, match=r"^mean must be finite, got \[nan\]\.$"):
        D.gaussian_density(pts, jnp.array([jnp.nan]), jnp.eye(1))
    with pytest.raises(ValueError, match=r"^cov must be symmetric positive definite"):
        D.gaussian_density(pts, jnp.zeros(1), -jnp.eye(1))
    with pytest.raises(ValueError, match=r"^cov must have shape \(d, d\) and x \(\.\.\., d\)"):
        D.gaussian_density(jnp.zeros((3, 2)), jnp.zeros(1), jnp.eye(1))
    with pytest.raises(ValueError, match=r"^density must be callable .*got int 3\.$"):
        D.bin_probabilities(3, (np.linspace(0.0, 1.0, 3),))
    with pytest.raises(ValueError, match=r"^nodes must be a positive integer, got 0\.$"):
        D.bin_probabilities(lambda x: 1.0, (np.linspace(0.0, 1.0, 3),), nodes=0)
    want = jnp.exp(-0.5 * 0.25) / jnp.sqrt(2 * jnp.pi)
    assert float(D.gaussian_density(jnp.array([[0.5]]), jnp.zeros(1), jnp.eye(1))[0]) == float(want)


def test_odecell_and_its_models_refuse_a_nan_start():
    """A NaN or inf y0 was a NaN unroll (and a NaN loss to fit)."""
    cell = rnn.ODECell(_decay, 1.0, 0.1)
    with pytest.raises(ValueError, match=r"^y0 must be finite, got \[ *1\. +nan\]\.$"):
        cell(jnp.array([1.0, jnp.nan]), 3)
    obs = rnn.Observations(jnp.array([0.1, 0.2]), jnp.ones((2, 1)))
    with pytest.raises(ValueError, match=r"^y0 must be finite, got \[nan\]\.$"):
        rnn.unrolled_model(cell, jnp.array([jnp.nan]), obs)
    with pytest.raises(ValueError, match=r"^t0 must be a finite real number, got 'a'"):
        rnn.unrolled_model(cell, jnp.ones(1), obs, t0="a")


def test_reparametrize_is_a_bool_not_any_truthy_value():
    """`nag`/`nesterov_momentum` read `reparametrize` with a Python `if`: the string "no" was
    the framework form (truthy), silently."""
    from dynopt import transforms

    for make in (
        lambda v: transforms.nag(0.1, reparametrize=v),
        lambda v: transforms.nesterov_momentum(0.1, 0.9, reparametrize=v),
    ):
        with pytest.raises(ValueError, match=r"^reparametrize must be True or False"):
            make("no")
        make(False), make(True)


def test_a_short_time_kernel_of_another_dimension_is_named():
    """A 2-D linear SDE's kernel at a 1-D point failed with JAX's dot_general TypeError."""
    two_d = D.linear_vector_sde(-jnp.eye(2), 0.5)
    with pytest.raises(ValueError, match=r"^the drift cannot take a state of shape \(1,\)"):
        D.short_time_propagator(two_d, 0.1, 0.0, 0.0, 0.01)
    with pytest.raises(ValueError, match=r"^the drift cannot take a state of shape \(3,\)"):
        D.short_time_propagator_nd(two_d, jnp.zeros(3), jnp.zeros(3), 0.0, 0.01)
    # The right dimension: the kernel as before (an OU slice, midpoint rule, by hand).
    k = D.short_time_propagator_nd(two_d, jnp.array([0.1, 0.0]), jnp.zeros(2), 0.0, 0.01)
    eps, a = 0.01, 0.5
    xb = jnp.array([0.05, 0.0])
    r = jnp.array([0.1, 0.0]) - eps * (-xb)
    want = (1 + 0.5 * eps) ** 2 * jnp.exp(-0.5 * r @ r / (a * eps)) / (2 * jnp.pi * a * eps)
    assert abs(float(k) / float(want) - 1) < 1e-13
