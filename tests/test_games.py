import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import games

from .helpers import TraceCounter, tree_allclose, tree_max_abs_diff


SCHEME_NAMES = ("simultaneous", "alternating", "consensus", "extragradient", "optimistic")


def _point():
    return (jnp.array([0.3, -0.7]), jnp.array([0.5, 0.2]))


def _linear_game(phi0=(0.1, 0.2), theta0=(0.2, 0.1)):
    """The Dirac GAN's linearization (eq. 8) as min_θ max_φ -θ·φ/2."""
    return games.minmax(
        lambda phi, theta: -0.5 * jnp.dot(theta, phi),
        jnp.asarray(phi0),
        jnp.asarray(theta0),
        equilibrium=(jnp.zeros(2), jnp.zeros(2)),
    )


def test_dirac_vector_fields_match_the_posts_equations():
    phi, theta = _point()
    s = jnp.dot(theta, phi)
    sig = jax.nn.sigmoid(s)
    nphi, ntheta = jnp.linalg.norm(phi), jnp.linalg.norm(theta)
    lam = 0.3
    expected = {
        ("vanilla", 0.0, "article"): (-sig * theta, (1 - sig) * phi),  # eq. 7
        ("wgan", 0.0, "article"): (-theta / nphi + s * phi / nphi**3, phi / nphi),  # eq. 12
        ("wgan-gp", 0.0, "article"): (-theta - 2 * lam * phi, phi),  # eq. 16, c = 0
        ("wgan-gp", 1.0, "article"): (-theta - 2 * lam * (1 - 1 / nphi) * phi, phi),  # c = 1
        ("gan-qp", 0.0, "article"): (-theta - s * theta / (lam * ntheta), phi),  # eq. 19
        ("gan-qp", 0.0, "code"): (-theta - s * theta / (lam * nphi), phi),  # gan_numeric.py
    }
    for (variant, c, norm), field in expected.items():
        w = None if variant in ("vanilla", "wgan") else lam
        game = games.dirac_gan(variant, weight=w, center=c, normalization=norm)
        got = game.vector_field((phi, theta))
        assert tree_allclose(got, field, rtol=1e-14, atol=1e-15), (variant, c, norm)
    # The minmax convention: phi ascends L, theta descends it (eq. 3).
    lin = _linear_game()
    assert tree_allclose(lin.vector_field((phi, theta)), (-theta / 2, phi / 2), rtol=1e-15)
    # Post's initial point.
    z0 = games.dirac_gan().params0
    np.testing.assert_array_equal(np.concatenate(z0), [0.1, 0.2, 0.2, 0.1])


def test_eigenvalues_match_closed_forms():
    lam, gamma = 0.1, 0.7
    np.testing.assert_allclose(
        games.dirac_gan().eigenvalues(), [-0.5j, -0.5j, 0.5j, 0.5j], atol=1e-15
    )
    root = np.sqrt(1 - lam**2)
    gp = games.dirac_gan("wgan-gp", weight=lam, center=0.0)
    np.testing.assert_allclose(
        gp.eigenvalues(), [-lam - 1j * root] * 2 + [-lam + 1j * root] * 2, atol=1e-14
    )
    # R1 (= L2 on D here) adds -γφ: λ² + γλ + 1/4 = 0.
    r1 = games.dirac_gan(penalties=(games.R1(gamma),))
    pred = np.roots([1.0, gamma, 0.25])
    np.testing.assert_allclose(
        np.sort_complex(r1.eigenvalues()), np.sort_complex(np.repeat(pred, 2)), atol=1e-14
    )
    # Consensus optimization: -γ/4 ± i/2 (ANCHORS §3.10).
    game = games.dirac_gan()
    flat, unravel = jax.flatten_util.ravel_pytree(game.equilibrium)
    cons = games.Consensus(gamma)
    jac = jax.jacfwd(lambda x: jax.flatten_util.ravel_pytree(cons.field(game, unravel(x)))[0])(flat)
    eig = np.sort_complex(np.linalg.eigvals(np.asarray(jac)))
    np.testing.assert_allclose(eig, [-gamma / 4 - 0.5j] * 2 + [-gamma / 4 + 0.5j] * 2, atol=1e-14)


def _manual_step(name, game, z, h, prev_v=None):
    v = lambda x: game.vector_field(x)
    add = lambda a, b, c=1.0: jax.tree.map(lambda x, y: x + c * y, a, b)
    if name == "simultaneous":
        return add(z, v(z), h)
    if name == "alternating":
        phi = z[0] + h * v(z)[0]
        return (phi, z[1] + h * v((phi, z[1]))[1])
    if name == "consensus":
        vz, pull = jax.vjp(v, z)
        return add(z, add(vz, pull(vz)[0], -0.5), h)
    if name == "extragradient":
        return add(z, v(add(z, v(z), h)), h)
    if name == "optimistic":
        prev = v(z) if prev_v is None else prev_v
        return add(z, add(jax.tree.map(lambda x: 2 * x, v(z)), prev, -1.0), h)
    raise AssertionError(name)


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_scheme_transforms_match_their_update_formulas(name):
    """Battery: each scheme's discretization is the hand-written update (20 steps, nonlinear
    vanilla Dirac GAN), is a valid optax transform, and a new step size does not recompile."""
    base = games.dirac_gan()
    counter = TraceCounter(base.g_loss_fn)  # counts traces, i.e. compilations
    game = games.Game(base.d_loss_fn, counter, base.phi0, base.theta0)
    sch = games.scheme(name, gamma=0.5) if name == "consensus" else games.scheme(name)
    h, n = 0.3, 20
    traj = games.run_game(sch.discretize(h), game, n)
    z, prev = game.params0, None
    for k in range(n):
        z_new = _manual_step(name, base, z, h, prev)
        prev = base.vector_field(z)
        z = z_new
        assert tree_max_abs_diff(jax.tree.map(lambda x, i=k + 1: x[i], traj.params), z) < 1e-14
    np.testing.assert_allclose(traj.ts[-1], n * h, rtol=1e-15)
    assert int(traj.diverged_at) == -1
    # No recompilation for another step size (hyper-parameters are traced).
    first = counter.count
    games.run_game(sch.discretize(0.1), game, n)
    assert counter.count == first


def test_simultaneous_and_optimistic_are_optax_transforms():
    game = games.dirac_gan()
    assert games.Simultaneous().discretize(0.1).factory is games.simultaneous_gda
    # optax.sgd on the game gradient is simultaneous GDA; optax's optimistic GD is OGDA.
    for tx, name in (
        (optax.sgd(0.25), "simultaneous"),
        (optax.optimistic_gradient_descent(0.25), "optimistic"),
    ):
        traj = games.run_game(tx, game, 40)
        z, prev = game.params0, None
        for _ in range(40):
            z, prev = _manual_step(name, game, z, 0.25, prev), game.vector_field(z)
        assert tree_max_abs_diff(jax.tree.map(lambda x: x[-1], traj.params), z) < 1e-14


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_measured_growth_matches_step_matrix_on_the_linear_game(name):
    """On the Dirac GAN's linearization every step matrix is exact; for the normal ones
    (all but alternating and optimistic) |z_k| grows by exactly the spectral radius per step,
    e.g. sqrt(1 + h²/4) for simultaneous GDA."""
    game = _linear_game()
    sch = games.scheme(name)
    h, n = 0.2, 400
    jac = np.asarray(game.jacobian(game.equilibrium))
    rho = sch.growth(jac, h, game.num_phi)
    traj = games.run_game(sch.discretize(h), game, n)
    norms = np.linalg.norm(np.concatenate(traj.params, axis=-1), axis=-1)
    if name == "simultaneous":
        np.testing.assert_allclose(rho, np.sqrt(1 + h**2 / 4), rtol=1e-14)
    if name in ("simultaneous", "consensus", "extragradient"):
        np.testing.assert_allclose(norms[1:] / norms[:-1], rho, rtol=1e-12)
    elif name == "alternating":
        assert rho == pytest.approx(1.0, abs=1e-14)  # det = 1, |trace| < 2: bounded orbits
        assert norms.max() < 1.2 * norms[0] and norms[-100:].min() > 0.8 * norms[0]
    else:  # optimistic: two-step recurrence, growth of the principal root
        fitted = np.exp(np.polyfit(np.arange(100, n + 1), np.log(norms[100:]), 1)[0])
        assert fitted == pytest.approx(rho, abs=2e-5)
        assert rho < 1


def test_divergence_step_predicted_and_no_nan_flood():
    game = _linear_game()
    h = 1.0
    traj = games.run_game(games.Simultaneous().discretize(h), game, 8000, every=100)
    growth = np.sqrt(1 + h**2 / 4)  # exact per step (normal step matrix)
    r0 = float(np.linalg.norm(np.concatenate(game.params0)))
    # The iterate first overflows when a component passes the float64 maximum.
    k_pred = (np.log(np.finfo(np.float64).max) - np.log(r0 / np.sqrt(2))) / np.log(growth)
    assert abs(int(traj.diverged_at) - k_pred) <= 3
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(traj.params))


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_drift_terms_match_the_one_step_expansion(name):
    """The modified flow z' = w + h w1 reproduces one step of the scheme to O(h^3) (its Taylor
    expansion z + h(w + h w1) + (h^2/2) J_w w), the plain limit z' = w only to O(h^2)."""
    game = games.dirac_gan()
    sch = games.scheme(name, gamma=0.5) if name == "consensus" else games.scheme(name)
    flat = lambda t: jax.flatten_util.ravel_pytree(t)[0]
    hs = np.array([4e-3, 2e-3, 1e-3, 5e-4])
    for h in hs:
        traj = games.run_game(sch.discretize(h), game, 2 if name == "optimistic" else 1)
        z = game.params0
        if name == "optimistic":  # its first step is plain GDA; the second is the scheme's own
            z = jax.tree.map(lambda x: x[1], traj.params)
        w, w1 = sch.field(game, z), sch.drift(game, z)
        jw_w = jax.jvp(lambda x: sch.field(game, x), (z,), (w,))[1]
        z1 = flat(jax.tree.map(lambda x: x[-1], traj.params))
        taylor = flat(z) + h * flat(w) + 0.5 * h**2 * flat(jw_w)  # the flow z' = w
        r_flow = np.linalg.norm(z1 - taylor)
        r_modified = np.linalg.norm(z1 - taylor - h**2 * flat(w1))
        # Fields are O(0.1) here: the O(h^3) remainder is far below h^3.
        assert r_modified < 0.1 * h**3, (name, h, r_modified)
        np.testing.assert_allclose(r_flow / h**2, np.linalg.norm(flat(w1)), rtol=0.02)
        assert np.linalg.norm(flat(w1)) > 1e-3


def test_modified_flow_tracks_alternating_gda_to_second_order():
    """Global check of compare_game: alternating GDA vs its modified flow, fitted order 2 (the
    plain flow's order 1 follows from the one-step expansion test above: r_flow ~ |w1| h^2)."""
    flow = games.GameFlow(games.dirac_gan(), games.Alternating())
    hs = np.array([0.2, 0.1, 0.05, 0.025])
    second = games.compare_game(flow, hs, 2.0, reference="modified")
    assert abs(float(second.order) - 2.0) < 0.1
    # Against the plain flow the error at h = 0.2 is ~0.01 (anchor: experiment orders.png).
    assert float(second.errors[0]) < 1e-3


def test_references_wgan_invariant_and_linearization():
    # WGAN (eq. 12): |phi| is conserved exactly by the flow.
    wgan = games.dirac_gan("wgan")
    ts = jnp.linspace(0.0, 10.0, 101)
    ref = dynopt.solve(games.GameFlow(wgan), wgan.problem, ts, solver="tsit5")
    drift = np.abs(np.linalg.norm(ref.params[0], axis=-1) - np.sqrt(0.05))
    assert drift.max() < 1e-8
    # Vanilla: from eps * z0 the flow is the rotation of eq. 8 up to O(eps^2) relative error.
    errs = []
    for eps in (1e-1, 1e-2, 1e-3):
        g = games.dirac_gan(phi0=eps * np.array([0.1, 0.2]), theta0=eps * np.array([0.2, 0.1]))
        ts = jnp.linspace(0.0, 4 * np.pi, 64)
        sol = dynopt.solve(games.GameFlow(g), g.problem, ts, solver="tsit5")
        lin = jax.vmap(games.dirac_linear_solution, in_axes=(0, None, None))(ts, *g.params0)
        errs.append(tree_max_abs_diff(sol.params, lin) / eps)
    slope = np.polyfit(np.log([1e-1, 1e-2, 1e-3]), np.log(errs), 1)[0]
    assert abs(slope - 2.0) < 0.1


def test_ema_is_tracked_beside_the_run():
    game = games.dirac_gan()
    disc = games.Alternating().discretize(0.1)
    decays = [0.9, 0.99]
    plain = games.run_game(disc, game, 300)
    tracked = games.run_game(disc, game, 300, ema_decays=decays)
    assert tree_allclose(plain.params, tracked.params)  # bit-identical trajectory
    for i, a in enumerate(decays):
        ema = np.asarray(game.theta0)
        for k in range(1, 301):
            ema = a * ema + (1 - a) * np.asarray(plain.theta[k])
        np.testing.assert_allclose(tracked.ema_theta[-1, i], ema, rtol=1e-13)


def test_penalties_compose_and_match_the_dirac_closed_forms():
    phi, theta = _point()
    x_r, x_f = jnp.zeros((1, 2)), theta[None]
    crit = games.linear_critic
    np.testing.assert_allclose(
        games.GradientPenalty(0.3, center=1.0)(crit, phi, x_r, x_f),
        0.3 * (jnp.linalg.norm(phi) - 1) ** 2,
        rtol=1e-14,
    )
    r1 = games.R1(0.4)(crit, phi, x_r, x_f)
    l2 = games.WeightDecay(0.4)(crit, phi, x_r, x_f)
    np.testing.assert_allclose(r1, 0.2 * jnp.sum(phi**2), rtol=1e-14)
    np.testing.assert_allclose(l2, r1, rtol=1e-14)
    # Penalties add to the Dirac GAN's D loss: L2 adds -γφ to φ'.
    base = games.dirac_gan("gan-qp").vector_field((phi, theta))
    reg = games.dirac_gan("gan-qp", penalties=(games.WeightDecay(0.4),)).vector_field((phi, theta))
    assert tree_allclose(reg, (base[0] - 0.4 * phi, base[1]), rtol=1e-14)
    # A nonlinear critic: the interpolate penalty differentiates through x.
    crit2 = lambda p, x: jnp.sum(jnp.tanh(p * x))
    gp = games.GradientPenalty(1.0, center=1.0)(crit2, phi, x_r, x_f)
    x_mid = 0.5 * theta
    expect = (jnp.linalg.norm(phi * (1 - jnp.tanh(phi * x_mid) ** 2)) - 1) ** 2
    np.testing.assert_allclose(gp, expect, rtol=1e-14)


def test_bad_input_raises():
    with pytest.raises(
        ValueError, match="unknown Dirac GAN variant 'lsgan'; valid variants: vanilla, wgan"
    ):
        games.dirac_gan("lsgan")
    with pytest.raises(
        ValueError, match="unknown scheme 'adam'; valid schemes: simultaneous, alternating"
    ):
        games.scheme("adam")
    for bad in (
        lambda: games.R1(-1.0),
        lambda: games.WeightDecay(-0.1),
        lambda: games.GradientPenalty(-0.5),
        lambda: games.dirac_gan("wgan-gp", weight=-0.1),
    ):
        with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
            bad()
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        games.Consensus(-1.0)
    with pytest.raises(ValueError, match="points must be"):
        games.GradientPenalty(1.0, points="everywhere")
    with pytest.raises(ValueError, match="normalization must be"):
        games.dirac_gan("gan-qp", normalization="paper")
    with pytest.raises(ValueError, match="step_size must be finite and > 0"):
        games.Simultaneous().discretize(-0.1)
    with pytest.raises(ValueError, match="ema_decays must lie in"):
        games.run_game(games.Simultaneous().discretize(0.1), games.dirac_gan(), 5, ema_decays=[1.0])
    with pytest.raises(ValueError, match="must return a scalar"):
        games.Game(lambda p, t: p, lambda p, t: jnp.sum(t), jnp.zeros(2), jnp.zeros(2))
    with pytest.raises(ValueError, match="key must be given iff the game is stochastic"):
        games.run_game(optax.sgd(0.1), games.dirac_gan(), 5, key=jax.random.key(0))


def test_mixture_gan_is_seeded_and_metrics_are_sane():
    game = games.mixture_gan(jax.random.key(0), hidden=8, batch_size=16)
    disc = games.Alternating().discretize(0.05)
    a = games.run_game(disc, game, 20, key=jax.random.key(1))
    b = games.run_game(disc, game, 20, key=jax.random.key(1))
    c = games.run_game(disc, game, 20, key=jax.random.key(2))
    assert tree_allclose(a.params, b.params)
    assert not tree_allclose(c.params, a.params)
    data = games.sample_mixture(jax.random.key(3), 4000)
    covered, good = games.mode_statistics(data)
    assert int(covered) == 8 and float(good) > 0.99  # 3σ holds 98.9% of a 2-D Gaussian
    assert float(games.sliced_wasserstein(jax.random.key(4), data, data)) == 0.0
    one_mode = jnp.tile(games.mixture_modes()[:1], (4000, 1))
    assert int(games.mode_statistics(one_mode)[0]) == 1
