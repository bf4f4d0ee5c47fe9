import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

import dynopt
from dynopt import flows, games

from .helpers import check_keyed_runs, TraceCounter, tree_max_abs_diff


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
        assert eqx.tree_equal(got, field, rtol=1e-14, atol=1e-15), (variant, c, norm)
    # The minmax convention: phi ascends L, theta descends it (eq. 3).
    lin = _linear_game()
    assert eqx.tree_equal(lin.vector_field((phi, theta)), (-theta / 2, phi / 2), rtol=1e-15)
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


# Jitted: eager `jax.grad` retraces the game's losses at every call.
@eqx.filter_jit
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


_field = eqx.filter_jit(lambda game, z: game.vector_field(z))


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_scheme_transforms_match_their_update_formulas(name):
    """Battery: each scheme's discretization is the hand-written update (20 steps, nonlinear
    vanilla Dirac GAN) when `dynopt.run` steps the game, is a valid optax transform, and a new
    step size does not recompile."""
    base = games.dirac_gan()
    counter = TraceCounter(base.g_loss_fn)  # counts traces, i.e. compilations
    game = games.Game(base.d_loss_fn, counter, base.phi0, base.theta0)
    sch = games.scheme(name, gamma=0.5) if name == "consensus" else games.scheme(name)
    h, n = 0.3, 20
    traj = dynopt.run(sch.discretize(h), game, n)
    z, prev = game.params0, None
    for k in range(n):
        z_new = _manual_step(name, base, z, h, prev)
        prev = _field(base, z)
        z = z_new
        assert tree_max_abs_diff(jax.tree.map(lambda x, i=k + 1: x[i], traj.params), z) < 1e-14
    np.testing.assert_allclose(traj.ts[-1], n * h, rtol=1e-15)
    assert int(traj.diverged_at) == -1
    # No recompilation for another step size (hyper-parameters are traced).
    first = counter.count
    dynopt.run(sch.discretize(0.1), game, n)
    assert counter.count == first


def test_simultaneous_and_optimistic_are_optax_transforms():
    game = games.dirac_gan()
    assert games.Simultaneous().discretize(0.1).factory is games.simultaneous_gda
    # optax.sgd on the game gradient is simultaneous GDA; optax's optimistic GD is OGDA.
    for tx, name in (
        (optax.sgd(0.25), "simultaneous"),
        (optax.optimistic_gradient_descent(0.25), "optimistic"),
    ):
        traj = dynopt.run(tx, game, 40)
        z, prev = game.params0, None
        for _ in range(40):
            z, prev = _manual_step(name, game, z, 0.25, prev), _field(game, z)
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
    traj = dynopt.run(sch.discretize(h), game, n)
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
    """`run` stops a game once its value, the Hamiltonian H = |ξ|²/2, passes the growth
    criterion L0 + 1e8 max(|L0|, 1): here ξ is linear in z and the step matrix is normal, so
    H_k = H_0 growth^(2k) exactly and the first flagged step is the first k with H_k above the
    limit, long before anything overflows."""
    game = _linear_game()
    h = 1.0
    traj = dynopt.run(games.Simultaneous().discretize(h), game, 8000, every=100)
    growth = np.sqrt(1 + h**2 / 4)  # exact per step (normal step matrix)
    value0 = float(game.value(game.params0))
    limit = value0 + 1e8 * max(abs(value0), 1.0)
    k_pred = np.log(limit / value0) / (2 * np.log(growth))
    assert int(traj.diverged_at) == int(np.ceil(k_pred))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(traj.params))
    assert bool(jnp.all(jnp.isfinite(traj.loss[traj.valid])))


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_drift_terms_match_the_one_step_expansion(name):
    """The modified flow z' = w + h w1 reproduces one step of the scheme to O(h^3) (its Taylor
    expansion z + h(w + h w1) + (h^2/2) J_w w), the plain limit z' = w only to O(h^2)."""
    game = games.dirac_gan()
    sch = games.scheme(name, gamma=0.5) if name == "consensus" else games.scheme(name)
    flat = lambda t: jax.flatten_util.ravel_pytree(t)[0]
    hs = np.array([4e-3, 2e-3, 1e-3, 5e-4])
    for h in hs:
        traj = dynopt.run(sch.discretize(h), game, 2 if name == "optimistic" else 1)
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
    """Global check through `dynopt.compare` (the game is the problem): alternating GDA vs its
    modified flow, fitted order 2; vs the plain flow, order 1."""
    game = games.dirac_gan()
    flow = games.GameFlow(games.Alternating())
    hs = np.array([0.2, 0.1, 0.05, 0.025])
    second = dynopt.compare(flow, game, hs, 2.0, reference=flow.modified)
    assert abs(float(second.order) - 2.0) < 0.1
    assert second.solver == "tsit5"  # the stiffness choice, on the Hamiltonian's Hessian
    np.testing.assert_array_equal(second.dts, hs)  # game schemes: t = k h
    # Against the plain flow the error at h = 0.2 is ~0.01 (anchor: experiment orders.png).
    assert float(second.errors[0]) < 1e-3
    first = dynopt.compare(flow, game, hs, 2.0)
    assert abs(float(first.order) - 1.0) < 0.1
    assert 3e-3 < float(first.errors[0]) < 3e-2


def test_references_wgan_invariant_and_linearization():
    # WGAN (eq. 12): |phi| is conserved exactly by the flow.
    wgan = games.dirac_gan("wgan")
    ts = jnp.linspace(0.0, 10.0, 101)
    ref = dynopt.solve(games.GameFlow(), wgan, ts, solver="tsit5")
    drift = np.abs(np.linalg.norm(ref.params[0], axis=-1) - np.sqrt(0.05))
    assert drift.max() < 1e-8
    # Vanilla: from eps * z0 the flow is the rotation of eq. 8 up to O(eps^2) relative error.
    errs = []
    for eps in (1e-1, 1e-2, 1e-3):
        g = games.dirac_gan(phi0=eps * np.array([0.1, 0.2]), theta0=eps * np.array([0.2, 0.1]))
        ts = jnp.linspace(0.0, 4 * np.pi, 64)
        sol = dynopt.solve(games.GameFlow(), g, ts, solver="tsit5")
        lin = jax.vmap(games.dirac_linear_solution, in_axes=(0, None, None))(ts, *g.params0)
        errs.append(tree_max_abs_diff(sol.params, lin) / eps)
    slope = np.polyfit(np.log([1e-1, 1e-2, 1e-3]), np.log(errs), 1)[0]
    assert abs(slope - 2.0) < 0.1


def test_ema_is_tracked_beside_the_run():
    """`weight_averages` carries the EMAs in the optimizer state without changing the run;
    `run(..., observe=averages)` records them at the saved points."""
    game = games.dirac_gan()
    disc = games.Alternating().discretize(0.1)
    decays = (0.9, 0.99)
    plain = dynopt.run(disc, game, 300)
    tracked = dynopt.run(
        games.weight_averages(disc, decays), game, 300, every=20, observe=games.averages
    )
    assert plain.observations is None
    assert eqx.tree_equal(jax.tree.map(lambda x: x[::20], plain.params), tracked.params)
    assert eqx.tree_equal(plain.loss[::20], tracked.loss)
    theta_avg = tracked.observations[1]
    assert theta_avg.shape == (16, 2, 2)
    theta_path = np.asarray(plain.params[1])  # one transfer, not one JAX slice per step
    for i, a in enumerate(decays):
        ema = np.asarray(game.theta0)
        for k in range(1, 301):
            ema = a * ema + (1 - a) * theta_path[k]
            if k % 20 == 0:
                np.testing.assert_allclose(theta_avg[k // 20, i], ema, rtol=1e-13)
    # The same wrapper on a plain optax transform, and on a batch of step sizes.
    tx = games.weight_averages(optax.sgd(0.1), 0.9)
    one = dynopt.run(tx, game, 10, observe=games.averages)
    assert one.observations[0].shape == (11, 1, 2)
    batch = dynopt.run(
        games.weight_averages(games.Alternating().discretize(jnp.array([0.05, 0.1])), decays),
        game,
        300,
        every=20,
        observe=games.averages,
    )
    np.testing.assert_array_equal(batch.observations[1][1], theta_avg)


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
    assert eqx.tree_equal(reg, (base[0] - 0.4 * phi, base[1]), rtol=1e-14)
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
        with pytest.raises(ValueError, match="weight must be >= 0"):
            bad()
    with pytest.raises(ValueError, match="weight must be > 0"):
        games.dirac_gan("gan-qp", weight=0.0)
    with pytest.raises(ValueError, match="weight applies to variants 'wgan-gp' and 'gan-qp'"):
        games.dirac_gan("vanilla", weight=5.0)
    # The origin is an equilibrium only where the field is defined there.
    for variant, kwargs in (("wgan", {}), ("gan-qp", {}), ("wgan-gp", {"center": 1.0})):
        game = games.dirac_gan(variant, **kwargs)
        assert game.equilibrium is None
        with pytest.raises(ValueError, match="has no equilibrium"):
            game.eigenvalues()
    assert games.dirac_gan("wgan-gp").equilibrium is not None
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        games.Consensus(-1.0)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        games.ModifiedGameFlow(games.Simultaneous(), 0.0)
    with pytest.raises(ValueError, match="points must be"):
        games.GradientPenalty(1.0, points="everywhere")
    with pytest.raises(ValueError, match="normalization must be"):
        games.dirac_gan("gan-qp", normalization="paper")
    with pytest.raises(ValueError, match="step_size must be > 0"):
        games.Simultaneous().discretize(-0.1)
    with pytest.raises(ValueError, match=r"decays must be in \[0, 1\)"):
        games.weight_averages(games.Simultaneous().discretize(0.1), [0.5, 1.0])
    with pytest.raises(ValueError, match="observe=averages needs a transform wrapped"):
        dynopt.run(optax.sgd(0.1), games.dirac_gan(), 5, observe=games.averages)
    with pytest.raises(ValueError, match="must return a scalar"):
        games.Game(lambda p, t: p, lambda p, t: jnp.sum(t), jnp.zeros(2), jnp.zeros(2))
    no_equilibrium = games.Game(
        lambda p, t: jnp.sum(p * t), lambda p, t: -jnp.sum(p * t), jnp.ones(1), jnp.ones(1)
    )
    with pytest.raises(ValueError, match=r"^game .* has no equilibrium: give one"):
        games.modified_flow_growth(games.Simultaneous(), no_equilibrium, 0.1)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        games.modified_flow_growth(games.Simultaneous(), games.dirac_gan(), 0.0)
    with pytest.raises(ValueError, match=r"^norms has 0 step\(s\) past the first tenth"):
        games.measured_growth(np.ones(50))  # never below the ceiling
    with pytest.raises(ValueError, match=r"^norms must be a 1-D array"):
        games.measured_growth(np.ones((5, 2)) * 1e-6)
    with pytest.raises(ValueError, match="key must be given iff the game is stochastic"):
        dynopt.run(optax.sgd(0.1), games.dirac_gan(), 5, key=jax.random.key(0))
    mix = games.mixture_gan(jax.random.key(0), hidden=4, batch_size=4)
    with pytest.raises(ValueError, match="key must be given iff the game is stochastic"):
        dynopt.run(optax.sgd(0.1), mix, 5)


def test_mixture_gan_is_seeded_and_metrics_are_sane():
    game = games.mixture_gan(jax.random.key(0), hidden=8, batch_size=16)
    disc = games.Alternating().discretize(0.05)
    a, c = check_keyed_runs(disc, game, 20, jax.random.key(1), jax.random.key(2))
    # Seed batches come from `run`: each entry is the single run with its key.
    keys = jnp.stack([jax.random.key(2), jax.random.key(1)])
    batch = dynopt.run(disc, game, 20, key=keys)
    for i, single in enumerate((c, a)):
        assert eqx.tree_equal(
            jax.tree.map(lambda x, i=i: x[i], batch.params), single.params, rtol=1e-12, atol=1e-14
        )
    # The recorded value: the Hamiltonian on the fixed evaluation minibatch of key(0).
    z = jax.tree.map(lambda x: x[-1], a.params)
    # Jitted: op-by-op dispatch of the MLP gradient costs twice its compile (and the norm of
    # its pytree, eagerly, 39 programs).
    hamiltonian = eqx.filter_jit(
        lambda z, k: 0.5 * optax.tree.norm(game.gradient(z, k), squared=True)
    )
    np.testing.assert_allclose(a.loss[-1], hamiltonian(z, jax.random.key(0)), rtol=1e-12)
    data = games.sample_mixture(jax.random.key(3), 4000)
    covered, good = games.mode_statistics(data)
    assert int(covered) == 8 and float(good) > 0.99  # 3σ holds 98.9% of a 2-D Gaussian
    assert float(games.sliced_wasserstein(jax.random.key(4), data, data)) == 0.0
    one_mode = jnp.tile(games.mixture_modes()[:1], (4000, 1))
    assert int(games.mode_statistics(one_mode)[0]) == 1


def test_a_game_is_a_problem_whose_oracle_is_the_simultaneous_gradient():
    """The oracle protocol: (value, grad) = (H, ξ); a transform's `grad_fn` is ξ on the same
    minibatch; the gradient flow of a game is its game flow."""
    game = games.dirac_gan("wgan-gp", weight=0.1)
    z = _point()
    value, xi = game.value_and_grad(z)
    assert eqx.tree_equal(xi, game.gradient(z))
    assert eqx.tree_equal(game.grad(z), xi)
    np.testing.assert_allclose(value, 0.5 * sum(float(jnp.sum(x**2)) for x in xi), rtol=1e-15)
    assert float(game.loss(z)) == float(value) == float(game.hamiltonian(z))
    ts = jnp.linspace(0.0, 5.0, 11)
    a = dynopt.solve(flows.GradientFlow(), game, ts, solver="tsit5")
    b = dynopt.solve(games.GameFlow(), game, ts, solver="tsit5")
    assert eqx.tree_equal(a.params, b.params, rtol=1e-14, atol=1e-15)

    # A transform that reads the extra arguments sees the oracle's H and ξ, at θ_k and elsewhere
    # (it keeps them in its state; an observer records the state).
    def update(updates, state, params=None, *, value, grad, value_fn, grad_fn):
        seen = dict(value=value, grad=grad, grad_fn=grad_fn(params), value_fn=value_fn(params))
        return optax.tree.scale(-0.1, updates), seen

    def init(params):
        zeros = optax.tree.zeros_like(params)
        return dict(value=jnp.zeros(()), grad=zeros, grad_fn=zeros, value_fn=jnp.zeros(()))

    tx = optax.GradientTransformationExtraArgs(init, update)
    v0, xi0 = game.value_and_grad(game.params0)
    traj = dynopt.run(tx, game, 2, observe=_state)
    seen = jax.tree.map(lambda x: x[1], traj.observations)  # after step 0, at z_0
    want = dict(value=v0, grad=xi0, grad_fn=xi0, value_fn=v0)
    assert eqx.tree_equal(seen, want, rtol=1e-15)
    z1 = jax.tree.map(lambda x: x[1], traj.params)
    assert eqx.tree_equal(jax.tree.map(lambda x: x[2], traj.observations)["grad"], game.grad(z1))


def _state(params, opt_state, problem):
    return opt_state


def test_batched_step_sizes_of_a_game_match_single_runs():
    game = _linear_game()
    sch = games.Consensus(0.5)
    hs = jnp.array([0.1, 0.2, 0.4])
    batch = dynopt.run(sch.discretize(hs), game, 50, every=10)
    for i, h in enumerate([0.1, 0.2, 0.4]):
        single = dynopt.run(sch.discretize(h), game, 50, every=10)
        assert eqx.tree_equal(
            jax.tree.map(lambda x, i=i: x[i], batch.params), single.params, rtol=1e-14
        )
        np.testing.assert_allclose(batch.ts[i], single.ts, rtol=1e-15)


def test_new_game_hyperparameters_do_not_recompile():
    """Consensus's weight, a modified flow's step size and a penalty's weight are array leaves:
    solving again with new values reuses the compiled program (zero retraces)."""
    base = games.dirac_gan()
    counter = TraceCounter(base.g_loss_fn)
    game = games.Game(base.d_loss_fn, counter, base.phi0, base.theta0)
    ts = jnp.linspace(0.0, 1.0, 5)
    cases = (
        lambda v: (games.GameFlow(games.Consensus(v)), game),
        lambda v: (games.ModifiedGameFlow(games.Alternating(), v), game),
    )
    for make in cases:
        dynopt.solve(*make(0.3), ts, solver="tsit5")
        first = counter.count
        for v in (0.1, 0.2):
            dynopt.solve(*make(v), ts, solver="tsit5")
        assert counter.count == first

    def gp_game(weight):
        g = games.dirac_gan("wgan-gp", weight=weight)
        return games.Game(g.d_loss_fn, counter, g.phi0, g.theta0)

    dynopt.solve(games.GameFlow(), gp_game(0.1), ts, solver="tsit5")
    first = counter.count
    dynopt.solve(games.GameFlow(), gp_game(0.3), ts, solver="tsit5")
    assert counter.count == first


def _warm_start(disc, params, problem):
    # Heavy ball started on the slow manifold: trace = grad / (1 - momentum).
    g = problem.grad(params)
    return (optax.TraceState(trace=g / (1 - disc.hyperparams["momentum"])), optax.EmptyState())


def test_weight_averages_keep_the_wrapped_initial_state():
    """Wrapping a `Discretization` keeps its own initial state (`init_fn`), hence its run."""
    p = dynopt.problems.quadratic([1.0, 2.0])
    disc = dynopt.Discretization(
        optax.sgd, {"learning_rate": 0.1, "momentum": 0.5}, dt=0.1, init_fn=_warm_start
    )
    plain = dynopt.run(disc, p, 5)
    wrapped = dynopt.run(games.weight_averages(disc, 0.5), p, 5, observe=games.averages)
    np.testing.assert_array_equal(wrapped.params, plain.params)
    ema = np.asarray(p.params0)
    for k in range(1, 6):
        ema = 0.5 * ema + 0.5 * np.asarray(plain.params[k])
    np.testing.assert_allclose(wrapped.observations[-1, 0], ema, rtol=1e-14)


def test_post4_game_builds_the_posts_cases_from_a_scaled_start():
    z = (jnp.array([0.3, -0.2]), jnp.array([0.1, 0.4]))
    for case, spec in games.POST4_CASES.items():
        game = games.post4_game(case, 1e-2)
        kwargs = {k: spec[k] for k in ("weight", "center") if k in spec}
        phi0, theta0 = (1e-2 * np.asarray(v) for v in (games.PHI0, games.THETA0))
        ref = games.dirac_gan(spec["variant"], **kwargs, phi0=phi0, theta0=theta0)
        assert game.name == ref.name
        assert tree_max_abs_diff(game.params0, ref.params0) == 0
        assert tree_max_abs_diff(game.vector_field(z), ref.vector_field(z)) == 0
    code = games.post4_game("gan-qp (code)")
    ref = games.dirac_gan("gan-qp", weight=1.0, normalization="code")
    assert tree_max_abs_diff(code.vector_field(z), ref.vector_field(z)) == 0
    for bad in ("vanilla (code)", "wgan-gp", "nope"):
        with pytest.raises(ValueError, match="unknown post 4 case"):
            games.post4_game(bad)
    for bad in (0.0, -1.0, float("nan")):  # scale 0 is the equilibrium itself: a NaN gradient
        with pytest.raises(ValueError, match="scale must be > 0"):
            games.post4_game("wgan", scale=bad)


def test_orbit_verdict_tells_convergence_a_circle_and_oscillation_apart():
    t = np.linspace(0.0, 50.0, 501)
    assert games.orbit_verdict(0.2 * np.exp(-t)) == "converges to the equilibrium"
    circle = games.orbit_verdict(0.3 + 1e-3 * np.sin(t))
    assert circle.startswith("settles on a circle |θ| = 0.300")
    assert games.orbit_verdict(0.2 * (1 + 0.5 * np.sin(t))) == "oscillates, no convergence"


def test_modified_flow_growth_of_simultaneous_gda_on_the_linear_game():
    """On the linearization J² = -I/4, so the modified flow is (J + h/8 I)z: growth e^{h²/8}."""
    game = _linear_game()
    for h in (0.05, 0.2, 0.4):
        growth = games.modified_flow_growth(games.Simultaneous(), game, h)
        assert growth == pytest.approx(np.exp(h**2 / 8), rel=1e-12)
        assert (
            abs(
                growth
                - games.Simultaneous().growth(np.asarray(game.jacobian(game.equilibrium)), h, 2)
            )
            < h**4
        )


def test_measured_growth_fits_a_geometric_sequence_in_the_linear_regime():
    k = np.arange(501)
    norms = 1e-6 * 1.01**k
    assert games.measured_growth(norms) == pytest.approx(1.01, rel=1e-12)
    assert games.measured_growth(norms, ceiling=1e-5) == pytest.approx(1.01, rel=1e-12)
    bent = np.where(norms < 1e-5, norms, 1e-5 * 1.001 ** (k - 231))  # saturates past 1e-5
    assert games.measured_growth(bent, ceiling=1e-5) == pytest.approx(1.01, rel=1e-12)


def test_a_games_stiffness_is_read_off_its_jacobian():
    """Two rotations at rates 1 and c = 110 are oscillatory, not stiff: the automatic solver is
    Tsit5 (the Hamiltonian's Hessian JᵀJ gave the ratio c² = 12,100 and chose Kvaerno5, 4×
    slower and 20× less accurate), and the solve matches the closed-form rotation. A damped
    game keeps its real rates."""
    c = 110.0
    game = games.minmax(
        lambda p, t: p[0] * t[0] + c * p[1] * t[1], jnp.array([1.0, 1.0]), jnp.array([0.5, 0.5])
    )
    assert dynopt.stiffness_ratio(game, game.params0, 2.0) == 0.0
    ts = jnp.linspace(0.0, 2.0, 5)
    sol = dynopt.solve(games.GameFlow(), game, ts)
    assert sol.solver == "tsit5"
    # The linear flow z' = J z in closed form: exp(J t) z0.
    z0 = np.concatenate([np.ones(2), np.full(2, 0.5)])
    exact = scipy.linalg.expm(np.asarray(game.jacobian(game.params0)) * 2.0) @ z0
    np.testing.assert_allclose(
        np.concatenate([sol.params[0][-1], sol.params[1][-1]]), exact, atol=1e-7
    )
    damped = games.minmax(lambda p, t: 0.5 * p @ p - 0.5 * t @ t * 1e3, jnp.ones(2), jnp.ones(2))
    assert dynopt.stiffness_ratio(damped, damped.params0, 2.0) == pytest.approx(1e3 / 1.0)


def test_a_games_equilibrium_is_checked_against_its_initial_point():
    """A wrong shape or tree failed only in `eigenvalues` (a raw TypeError or LinAlgError)."""
    loss = lambda p, t: -0.5 * jnp.dot(t, p)
    with pytest.raises(ValueError, match=r"equilibrium's phi\* must be like phi0: expected leaf"):
        games.minmax(loss, jnp.ones(2), jnp.ones(2), equilibrium=(jnp.zeros(3), jnp.zeros(2)))
    with pytest.raises(ValueError, match=r"equilibrium must be a pair \(phi\*, theta\*\)"):
        games.minmax(loss, jnp.ones(2), jnp.ones(2), equilibrium=jnp.zeros(4))
    with pytest.raises(ValueError, match=r"equilibrium's theta\* must be like theta0: expected "):
        games.minmax(loss, jnp.ones(2), jnp.ones(2), equilibrium=(jnp.zeros(2), [0.0, 0.0]))
    with pytest.raises(ValueError, match=r"theta\* must hold real floating arrays"):
        games.minmax(loss, jnp.ones(2), jnp.ones(2), equilibrium=(jnp.zeros(2), jnp.zeros(2, int)))
    # A list pair is a pair.
    game = games.minmax(loss, jnp.ones(2), jnp.ones(2), equilibrium=[jnp.zeros(2), jnp.zeros(2)])
    np.testing.assert_allclose(game.eigenvalues(), [-0.5j, -0.5j, 0.5j, 0.5j], atol=1e-15)


def test_d_grad_fn_is_checked_against_phi0_at_construction():
    """It replaces ∇_φ ℓ_D: a wrong shape or tree failed only inside `run`."""
    loss = lambda p, t: jnp.sum(p * t)
    for bad, match in (
        (lambda p, t: jnp.ones(3), r"expected leaf shapes \(2,\), got \(3,\)"),
        (lambda p, t: (p,), "expected the tree structure"),
    ):
        with pytest.raises(ValueError, match="d_grad_fn must return a pytree like phi0.*" + match):
            games.Game(loss, loss, jnp.ones(2), jnp.ones(2), d_grad_fn=bad)


def test_a_stochastic_games_losses_must_take_a_key():
    loss = lambda p, t: jnp.sum(p * t)
    with pytest.raises(ValueError, match=r"d_loss_fn must take \(phi, theta, key\): a stochastic"):
        games.Game(loss, loss, jnp.ones(2), jnp.ones(2), stochastic=True)
    with pytest.raises(ValueError, match=r"must take \(phi, theta\) \(a loss that draws .* needs"):
        games.Game(lambda p, t, k: loss(p, t), loss, jnp.ones(2), jnp.ones(2))


def test_a_loss_that_fails_on_the_initial_point_is_named():
    with pytest.raises(
        ValueError,
        match=r"^d_loss_fn \(minmax's -loss_fn\) failed on the initial point \(phi of shape "
        r"\(2,\), theta of shape \(3,\)\): TypeError: dot_general",
    ) as info:
        games.minmax(lambda p, t: p @ t, jnp.ones(2), jnp.ones(3))
    assert isinstance(info.value.__cause__, TypeError)
    with pytest.raises(ValueError, match="g_loss_fn must be callable, got float"):
        games.Game(lambda p, t: jnp.sum(p), 1.0, jnp.ones(2), jnp.ones(2))


def test_game_flows_take_a_scheme_object():
    """A scheme's name failed inside `solve` with an AttributeError."""
    with pytest.raises(ValueError, match=r"got the name 'simultaneous': pass games.scheme\("):
        games.GameFlow("simultaneous")
    with pytest.raises(ValueError, match=r"scheme must be a dynopt\.games scheme"):
        games.ModifiedGameFlow(optax.sgd(0.1), 0.1)
    with pytest.raises(ValueError, match=r"scheme must be a dynopt\.games scheme"):
        games.modified_flow_growth("simultaneous", _linear_game(), 0.1)


def test_game_flows_and_schemes_on_a_plain_problem_ask_for_a_game():
    quad = dynopt.problems.quadratic([1.0, 2.0])
    with pytest.raises(ValueError, match=r"^GameFlow needs a dynopt.games.Game .* got a Problem"):
        dynopt.solve(games.GameFlow(), quad, [1.0])
    with pytest.raises(ValueError, match=r"^ModifiedGameFlow needs a dynopt.games.Game"):
        dynopt.solve(games.ModifiedGameFlow(games.Simultaneous(), 0.1), quad, [1.0])
    for sch in (games.Alternating(), games.Consensus()):
        with pytest.raises(ValueError, match=r"scheme's discretization \(\w+\) needs a dynopt"):
            dynopt.run(sch.discretize(0.1), quad, 2)
    # A plain gradient scheme is GD on a loss: it runs.
    gd = dynopt.run(optax.sgd(0.1), quad, 2).loss
    np.testing.assert_array_equal(
        dynopt.run(games.Simultaneous().discretize(0.1), quad, 2).loss, gd
    )
    with pytest.raises(ValueError, match="scheme's discretization"):
        dynopt.run(games.weight_averages(games.Alternating().discretize(0.1), 0.5), quad, 2)
    with pytest.raises(ValueError, match=r"^modified_flow_growth needs a dynopt\.games\.Game"):
        games.modified_flow_growth(games.Simultaneous(), quad, 0.1)


def test_alternating_d_first_must_be_a_bool():
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match=r"d_first must be a bool \(True: the discriminator"):
            games.Alternating(d_first=bad)
    assert games.Alternating(d_first=np.bool_(False)).d_first is False


def test_growth_predictions_take_one_positive_step_size():
    game = _linear_game()
    jac = np.asarray(game.jacobian(game.equilibrium))
    with pytest.raises(ValueError, match=r"step_size must be a scalar > 0 .* got shape \(2,\)"):
        games.modified_flow_growth(games.Simultaneous(), game, jnp.array([0.1, 0.2]))
    for bad in (-0.1, 0.0, np.array([0.1, 0.2])):
        with pytest.raises(ValueError, match="step_size must be"):
            games.Simultaneous().growth(jac, bad, 2)
    with pytest.raises(ValueError, match=r"num_phi must be in \[1, 3\]"):
        games.Alternating().growth(jac, 0.1, 4)
    with pytest.raises(ValueError, match=r"jac must be a square n x n Jacobian"):
        games.Simultaneous().growth(jac[:3], 0.1, 2)


def test_a_stochastic_game_in_compare_or_solve_asks_for_a_deterministic_one():
    game = games.minmax(
        lambda p, t, k: jnp.sum(p * t) * (1 + 0.1 * jax.random.normal(k)),
        jnp.ones(1),
        jnp.ones(1),
        stochastic=True,
    )
    need = "`compare` and `solve` take no key and need a deterministic game"
    with pytest.raises(ValueError, match=f"key must be given iff the game is stochastic.*{need}"):
        dynopt.compare(games.GameFlow(), game, [0.1, 0.05], 1.0)
    with pytest.raises(ValueError, match="`solve` and `compare` take none and need a determin"):
        dynopt.solve(games.GameFlow(), game, [1.0])


def test_mixture_helpers_check_their_sizes():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"hidden must be a positive integer, got 2\.5"):
        games.mixture_gan(key, hidden=2.5)
    with pytest.raises(ValueError, match="latent_dim must be a positive integer, got 0"):
        games.mixture_gan(key, latent_dim=0)
    with pytest.raises(ValueError, match="std must be > 0"):
        games.mixture_gan(key, std=-1.0)
    game = games.mixture_gan(key, hidden=4, latent_dim=5, batch_size=4)
    assert games.generate(game.theta0, key, 7).shape == (7, 2)  # latent size read off theta
    with pytest.raises(ValueError, match=r"latent_dim must be the generator's input size 5"):
        games.generate(game.theta0, key, 7, latent_dim=2)
    with pytest.raises(ValueError, match="theta must be a mixture_gan generator's parameters"):
        games.generate(jnp.ones(3), key, 7)
    with pytest.raises(ValueError, match="num_modes must be a positive integer, got 0"):
        games.mode_statistics(jnp.ones((5, 2)), num_modes=0)
    with pytest.raises(ValueError, match=r"samples must be an \(n, 2\) array"):
        games.mode_statistics(jnp.ones((5, 3)))


def test_orbit_verdict_and_measured_growth_on_empty_or_diverged_runs():
    with pytest.raises(ValueError, match="theta_norms must be a non-empty 1-D array"):
        games.orbit_verdict([])
    with pytest.raises(ValueError, match=r"theta_norms\[2\] = nan: the run diverged at save 2"):
        games.orbit_verdict([0.2, 0.3, np.nan, 0.1])
    k = np.arange(501)
    norms = 1e-6 * 1.01**k
    broken = np.where(k < 300, norms, np.nan)  # NaN while still in the linear regime
    assert np.isnan(games.measured_growth(broken))
    # A NaN after the run left the regime (an overflow) leaves the fit alone.
    overflow = np.where(k < 480, norms, np.nan)
    assert games.measured_growth(overflow, ceiling=1e-5) == pytest.approx(1.01, rel=1e-12)


def test_a_weight_averaged_scheme_with_its_own_init_holds_no_host_callback():
    """Alternating GDA (an `init_fn` that checks the problem is a game) under
    `weight_averages`: the run's program holds no runtime check (an `eqx.error_if` is a host
    callback, which keeps the program out of JAX's persistent cache; the mixture GAN's run
    recompiled on every `make run`)."""
    game = games.mixture_gan(jax.random.key(0), hidden=4, batch_size=4, dtype=jnp.float32)
    for scheme in (games.Alternating(), games.Consensus(0.1)):
        disc = games.weight_averages(scheme.discretize(0.01), 0.99)
        program = jax.make_jaxpr(lambda k, d=disc: dynopt.run(d, game, 2, key=k).loss)
        assert "callback" not in str(program(jax.random.key(1)))
