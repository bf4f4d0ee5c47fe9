"""Central flows off the experiment's own setting: against independent references (a dense
`eigh` and scipy's DOP853 of the field written from the formulas; autodiff through `eigh` for
RMSProp), k above the number of unstable directions, a CNN with cross-entropy, float32
parameters, a start past the edge, and inputs that must be refused or said."""

import functools
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from scipy.integrate import solve_ivp

import dynopt
from dynopt import networks
from dynopt._flows import central as central_module
from dynopt._flows.adaptive import RMSPropState
from dynopt._flows.central import central_solve, CentralFlow, DECOUPLING
from dynopt._flows.central_rmsprop import RMSPropCentralFlow, ScalarRMSPropCentralFlow

from .helpers import TraceCounter


@pytest.fixture(scope="module")
def tiny():
    """A 2 → 3 → 1 tanh MLP on 8 Gaussian points (13 parameters in 4 leaves), and a
    point 40 GD steps in (η = 0.5) where gradient flow sharpens slowly: λ₁ ≈ 1.60 (the next
    eigenvalue is below 0.5)."""
    x, y = networks.gaussian_regression(8, 2, 1, seed=3)
    model = networks.mlp(2, 1, width=3, depth=1, key=jax.random.key(1))
    problem = networks.network_problem(model, (x, y))
    w = jax.tree.map(lambda a: a[-1], dynopt.run(optax.sgd(0.5), problem, 40, every=40).params)
    flat, unravel = ravel_pytree(w)
    loss = jax.jit(lambda f: problem.loss(unravel(f)))
    return problem, w, flat, unravel, loss, model


@functools.partial(jax.jit, static_argnums=0)
def _hessian_and_grad(loss, flat):
    # One program per loss (op by op, the CNN's Hessian took 6.6 s of CPU, jitted 0.8 s).
    return jax.hessian(loss)(flat), jax.grad(loss)(flat)


def _dense(loss, flat):
    """Eigenvalues (largest first) and eigenvectors of the dense Hessian, and the gradient: an
    independent reference."""
    hess, grad = map(np.asarray, _hessian_and_grad(loss, flat))
    lam, V = np.linalg.eigh(0.5 * (hess + hess.T))
    return lam[::-1], V[:, ::-1], grad


_central = eqx.filter_jit(lambda flow, w, problem: flow.central(w, problem, refresh=True))


def test_tracked_directions_far_below_the_edge_do_not_tilt_sigma(tiny):
    """One direction 2% past the edge, the other four 80-98% below it: k = 5 gives k = 1's Σ,
    drift and predicted loss (measured 1.3e-7, 1.2e-7, 6e-8 relative). The unweighted matrix
    Baumgarte condition tilted X towards the far directions (|X_1j| = 8.3e-3 X_11, X_11 1.8%,
    the drift 0.85%, the predicted loss 0.5% off k = 1's) and moved a path 1e-3 away from the
    unstabilized flow that k = 1 follows to 3e-5 (the DOP853 test below)."""
    problem, w, flat, _, loss, _ = tiny
    lam, _, _ = _dense(loss, flat)
    eta = 1.02 * 2.0 / float(lam[0])
    assert 1.0 - 0.5 * eta * lam[1] > 0.8
    # k = 1 from LOBPCG converged tightly (k = 5 is the dense route: exact eigenvectors).
    one = _central(CentralFlow(eta, k=1, eig_tol=1e-14, refresh_iters=500), w, problem)
    five = _central(CentralFlow(eta, k=5), w, problem)
    assert float(one.X[0, 0]) > 0
    X = np.asarray(five.X)
    np.testing.assert_allclose(X[0, 0], one.X[0, 0], rtol=1e-6)
    assert np.max(np.abs(X - np.diag(np.diag(X)))) <= 1e-6 * X[0, 0]
    assert np.max(np.diag(X)[1:]) <= 1e-12 * X[0, 0]
    error = np.linalg.norm(np.asarray(five.velocity - one.velocity))
    assert error <= 1e-6 * np.linalg.norm(np.asarray(one.velocity))
    np.testing.assert_allclose(five.predicted_loss, one.predicted_loss, rtol=1e-6)
    # The weights themselves: 1 at and above the threshold, 1/√2 at δ = DECOUPLING.
    d = central_module.decoupling_weights(jnp.asarray([-0.3, 0.0, DECOUPLING, 0.3]))
    np.testing.assert_allclose(d, [1.0, 1.0, 2**-0.5, (1 + 6.0**4) ** -0.5], rtol=1e-12)


def test_central_solve_against_an_independent_dop853_reference(tiny):
    """k = 3 on 13 parameters, from below the edge (η·λ₁/2 = 0.97) through the onset: the path
    is scipy's DOP853 (rtol 1e-10) of the field written from the formulas with a dense `eigh`
    (σ² = max(0, −2(⟨∇S, ∇L⟩ + r·B(1 + F))/‖∇S‖²), one direction at the edge), to 1e-7; and
    it approaches the unstabilized central flow (gradient flow until η·λ₁ = 2, then σ² =
    2⟨−∇L, ∇S⟩/‖∇S‖²), within 1e-3 at the onset and 1e-4 after it (measured: 8.8e-4, 6e-5)."""
    problem, w, flat, _, loss, _ = tiny
    lam0 = float(_dense(loss, flat)[0][0])
    eta = 0.97 * 2.0 / lam0
    grad = jax.jit(jax.grad(loss))
    hess = jax.jit(jax.hessian(loss))
    grad_S = jax.jit(lambda f, u: jax.grad(lambda z: u @ jax.jvp(jax.grad(loss), (z,), (u,))[1])(f))

    def field(stabilized):
        def f(t, x):
            h = np.asarray(hess(x))
            lam, V = np.linalg.eigh(0.5 * (h + h.T))
            u, g = V[:, -1], np.asarray(grad(x))
            s = np.asarray(grad_S(x, u))
            gap = 2.0 / eta - lam[-1]
            if stabilized:
                relative = max(0.5 * eta * gap, 0.0)
                rate = (1.0 / eta) * gap * (1.0 + (relative / DECOUPLING) ** 4)
                sigma2 = max(0.0, -2.0 * (s @ g + rate) / (s @ s))
            else:
                sigma2 = max(0.0, -2.0 * (s @ g) / (s @ s))
            return -(g + 0.5 * sigma2 * s)

        return f

    T = 36.0
    ts = np.linspace(0.0, T, 5)
    x0 = np.asarray(flat)
    opts = dict(method="DOP853", rtol=1e-10, atol=1e-12)
    ref = solve_ivp(field(True), (0.0, T), x0, t_eval=ts, **opts).y.T
    # The unstabilized flow: gradient flow up to the onset (an event), then held at the edge.
    edge = lambda t, x: eta * np.linalg.eigvalsh(np.asarray(hess(x)))[-1] - 2.0
    edge.terminal, edge.direction = True, 1
    before = solve_ivp(lambda t, x: -np.asarray(grad(x)), (0.0, T), x0, events=edge, **opts)
    onset = float(before.t[-1])
    assert ts[1] < onset < ts[2]  # the onset lies inside the second interval
    after = solve_ivp(field(False), (onset, T), before.y[:, -1], t_eval=ts[2:], **opts).y.T

    path = central_solve(
        CentralFlow(eta, k=3), dynopt.Problem(problem.loss, w), jnp.asarray(ts), rtol=1e-10,
        atol=1e-12,
    )  # fmt: skip
    got = np.stack([ravel_pytree(jax.tree.map(lambda a, i=i: a[i], path.params))[0] for i in
                    range(len(ts))])  # fmt: skip
    rel = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert float(rel.max()) < 1e-7, rel
    pure = np.linalg.norm(got[2:] - after, axis=1) / np.linalg.norm(after, axis=1)
    assert pure[0] < 1e-3 and float(pure[1:].max()) < 1e-4, pure
    ratio = eta * np.asarray(path.eigenvalues)[:, 0] / 2.0
    assert ratio[0] < 0.98 and np.all(np.abs(ratio[2:] - 1.0) < 1e-3)
    assert np.all(np.asarray(path.X)[2:, 0, 0] > 0)


def test_cnn_cross_entropy_field_against_a_dense_reference():
    """A CNN (6 leaves: two 3×3 convolutions and a linear head, 190 parameters) on 30 digits with
    cross-entropy, 5% past the edge with k = 2: the eigenvalues, Σ = UXUᵀ and the drift equal a
    reference from the dense Hessian's `eigh`, third derivatives by `jax.grad` of uᵢᵀHuⱼ and the
    complementarity problem solved by plain projected gradient to 1e-15 (measured: 6e-13,
    6e-7, 3e-8; Σ to the refreshed eigenvectors' accuracy, LOBPCG's tolerance 1e-9)."""
    x, y = networks.digits(30, image=True)
    cnn = networks.SmallCNN(channels=1, key=jax.random.key(2))
    problem = networks.network_problem(cnn, (x, y), loss="cross_entropy")
    assert len(jax.tree.leaves(problem.params0)) == 6 and problem.num_params == 190
    w = jax.tree.map(lambda a: a[-1], dynopt.run(optax.sgd(2.0), problem, 200, every=200).params)
    flat, unravel = ravel_pytree(w)
    loss = lambda f: problem.loss(unravel(f))
    lam, V, grad = _dense(loss, flat)
    k, eta = 2, 1.05 * 2.0 / float(lam[0])
    state = _central(CentralFlow(eta, k=k), w, problem)
    np.testing.assert_allclose(state.eig.values, lam[:k], rtol=1e-10)

    U = V[:, :k]
    d3 = jax.jit(lambda u, v: jax.grad(lambda z: u @ jax.jvp(jax.grad(loss), (z,), (v,))[1])(flat))
    G = np.stack([np.stack([np.asarray(d3(U[:, i], U[:, j])) for j in range(k)]) for i in
                  range(k)])  # fmt: skip
    gaps = 2.0 / eta - lam[:k]
    weights = (1.0 + (np.maximum(0.5 * eta * gaps, 0) / DECOUPLING) ** 4) ** -0.5
    Gw = G * weights[:, None, None] * weights[None, :, None]
    c = np.einsum("ijn,n->ij", Gw, grad) + np.diag(gaps / eta)
    M = np.einsum("ijn,abn->ijab", Gw, Gw)
    lip = 0.5 * np.linalg.eigvalsh(M.reshape(k * k, k * k))[-1]
    Xw = np.zeros((k, k))
    for _ in range(100_000):
        step = Xw - (c + 0.5 * np.einsum("ijab,ab->ij", M, Xw)) / lip
        e, Q = np.linalg.eigh(0.5 * (step + step.T))
        new = (Q * np.maximum(e, 0.0)) @ Q.T
        done = np.linalg.norm(new - Xw) <= 1e-15 * (1.0 + np.linalg.norm(Xw))
        Xw = new
        if done:
            break
    assert np.trace(Xw) > 0  # the top direction oscillates
    sigma_ref = U @ (weights[:, None] * Xw * weights[None, :]) @ U.T
    U_got = np.asarray(state.eig.vectors)
    sigma = U_got @ np.asarray(state.X) @ U_got.T
    assert np.linalg.norm(sigma - sigma_ref) <= 1e-5 * np.linalg.norm(sigma_ref)
    velocity = -(grad + 0.5 * np.einsum("ab,abn->n", Xw, Gw))
    error = np.linalg.norm(np.asarray(state.velocity) - velocity)
    assert error <= 1e-6 * np.linalg.norm(velocity)


def test_a_non_finite_third_derivative_is_an_error():
    """|w|^2.5 has a finite Hessian and an infinite third derivative at 0. Past the edge the
    drift's rate c was NaN, which `eigvalsh(c)[0] < 0` read as stable: X = 0 and gradient flow,
    silently."""

    def loss(w):
        return 0.5 * jnp.sum(jnp.abs(w) ** 2.5) + 2.0 * (w[0] - 1.0) ** 2 * (1.0 + w[1] ** 2)

    w = jnp.asarray([1.0, 1.0, 0.0, 0.5, 0.3, 0.2, 0.1])
    problem = dynopt.Problem(loss, w)
    lam = float(np.linalg.eigvalsh(np.asarray(_hessian_and_grad(loss, w)[0]))[-1])
    central = eqx.filter_jit(lambda flow, w, problem: flow.central(w, problem))  # not op by op
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"third derivative .* is not finite"):
        central(CentralFlow(1.05 * 2.0 / lam, k=1), w, problem)


def test_no_central_flow_past_the_edge_of_a_quadratic_is_an_error_under_solve():
    """A quadratic past the edge has no central flow (no third derivative to hold it). Inside
    an ODE solve the complementarity check was attached to X alone, which the vector field does
    not return: XLA removed it, and `dynopt.solve` returned gradient flow (any non-converged
    solve went unsaid there). And its residual can come out NaN (the step 1/ℓ with ℓ ≈ 0
    overflows), which `residual > qp_tol` read as converged."""
    A = jnp.diag(jnp.asarray([3.0, 1.0, 0.5, 0.2, 0.1, 0.05, 0.01]))
    quad = dynopt.Problem(lambda w: 0.5 * w @ A @ w, jnp.ones(7))
    # (`solve` compiles with `jax.jit`: JAX's runtime error carries equinox's message.)
    errors = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError)
    with pytest.raises(errors, match="complementarity solve did not converge"):
        dynopt.solve(CentralFlow(1.0, k=1), quad, jnp.asarray([0.0, 1.0]), solver="tsit5")
    sol = central_module.solve_complementarity(-jnp.eye(2), jnp.zeros((2, 2, 2, 2)))
    assert not bool(sol.residual <= 1e-10)  # NaN or large: never read as converged


@pytest.fixture(scope="module")
def three():
    """Three parameters (the dense eigen route) and their top eigenvalue at the start."""

    def loss(p):
        return 0.5 * (jnp.sum(p["a"]) * p["b"][0] - 1.0) ** 2 + 0.1 * jnp.sum(p["a"] ** 4)

    counted = TraceCounter(loss)
    w = {"a": jnp.asarray([1.0, -0.6]), "b": jnp.asarray([1.8])}
    hessian = eqx.filter_jit(dynopt.sharpness.dense_hessian)  # one program, not op by op
    lam = float(np.linalg.eigvalsh(np.asarray(hessian(loss, w)))[-1])
    return dynopt.Problem(counted, w), counted, lam


def test_a_start_past_the_edge_is_said_and_new_learning_rates_reuse_the_program(three):
    """η·λ₁/2 = 1.2 at t = 0: no central flow starts there (GD catapults); the path is the
    stabilization pulling the eigenvalue back, said with where it is back. At η·λ₁/2 = 50 it
    never is within the horizon (on the 13-parameter MLP at η·λ₁/2 = 880 the path was gradient
    flow, X = 0 throughout: the required pull-back rate r·|B| = |B|/η is small next to the loss's
    own decrease of λ). Both were silent. Below the edge nothing is said. The three learning
    rates are one compiled program."""
    problem, counted, lam = three
    ts = jnp.linspace(0.0, 4.0, 5)
    with pytest.warns(RuntimeWarning, match=r"already above the threshold .* = 1\.2\).*back at"):
        path = central_solve(CentralFlow(1.2 * 2.0 / lam, k=1), problem, ts)
    assert np.asarray(path.X)[0, 0, 0] > 0
    traces = counted.count
    # (Its second eigenvalue is past the edge too, which is said as well.)
    second = pytest.warns(RuntimeWarning, match=r"\(1\+1\)-th eigenvalue")
    with second, pytest.warns(RuntimeWarning, match=r"= 50\).*still above it at the last saved"):
        central_solve(CentralFlow(50.0 * 2.0 / lam, k=1), problem, ts)
    central_solve(CentralFlow(0.5 * 2.0 / lam, k=1), problem, ts)  # no warning (an error here)
    assert counted.count == traces


def test_float32_parameters_meet_the_complementarity_tolerance(tiny):
    """`CentralFlow.central` on float32 parameters past the edge: the default qp_tol = 1e-10 is
    below float32's reach (every oscillating evaluation raised 'did not converge ... raise
    qp_iters'); floored at 64 machine epsilons it gives the float64 field to float32 accuracy."""
    problem, w, flat, _, loss, model = tiny

    def to32(tree):
        return jax.tree.map(lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, tree)

    x, y = problem.data
    model32 = to32(eqx.combine(w, eqx.partition(model, eqx.is_inexact_array)[1]))
    p32 = networks.network_problem(model32, (x.astype(jnp.float32), y.astype(jnp.float32)))
    w32 = p32.params0
    lam = float(_dense(loss, flat)[0][0])
    flow = CentralFlow(1.3 * 2.0 / lam, k=1)
    got = _central(flow, w32, p32)
    ref = _central(flow, w, problem)
    assert got.X.dtype == jnp.float32 and float(ref.X[0, 0]) > 0
    np.testing.assert_allclose(got.X, ref.X, rtol=1e-4)
    np.testing.assert_allclose(got.velocity, ref.velocity, rtol=1e-4, atol=1e-6)


def test_options_are_refused_with_their_names():
    for kwargs, name in (
        (dict(qp_tol=0.0), "qp_tol"),
        (dict(qp_tol=-1e-10), "qp_tol"),
        (dict(qp_tol=float("nan")), "qp_tol"),
        (dict(eig_tol=-1.0), "eig_tol"),
        (dict(refresh_iters=0), "refresh_iters"),
        (dict(qp_iters=0), "qp_iters"),
        (dict(k=0), "k"),
        (dict(stabilization=0.0), "stabilization"),
    ):
        with pytest.raises(ValueError, match=f"^{name} must be"):
            CentralFlow(0.1, **kwargs)
    for cls in (ScalarRMSPropCentralFlow, RMSPropCentralFlow):
        with pytest.raises(ValueError, match=r"^qp_tol must be"):
            cls(0.1, 1.0, qp_tol=0.0)
        with pytest.raises(ValueError, match=r"^kappa must be"):
            cls(0.1, 0.0)
        with pytest.raises(ValueError, match=r"^learning_rate must be"):
            cls(-0.1, 1.0)
        # √(G + ε) = 0 at the start: the flow divided the gradient by 0 (a runtime error about
        # the eigen-solve's preconditioner, or an inf).
        with pytest.raises(ValueError, match="eps and initial_scale are both 0"):
            cls(0.1, 1.0, eps=0.0)
        cls(0.1, 1.0, eps=0.0, initial_scale=1.0)


def test_central_solve_refuses_a_batch_of_learning_rates():
    """A batch of learning rates (an array leaf of shape (2,), as `run` sweeps) raised JAX's raw
    carry-type TypeError from inside the scan; the way to sweep is vmap of `central_path`."""
    problem = dynopt.Problem(lambda w: jnp.sum(jnp.cosh(w)), jnp.ones(3))
    with pytest.raises(ValueError, match=r"learning_rate has shape \(2,\).*vmap.*central_path"):
        central_solve(CentralFlow(jnp.asarray([0.1, 0.2]), k=1), problem, [0.0, 1.0])
    with pytest.raises(ValueError, match="central_solve solves a CentralFlow"):
        central_solve(ScalarRMSPropCentralFlow(0.1, 1.0, k=1), problem, [0.0, 1.0])


@functools.partial(jax.jit, static_argnames=("loss", "per_coordinate"))  # not op by op
def _eigh_gap_rate(loss, theta, G, h, kappa, eps, s2, per_coordinate):
    """d(τ − λ₁)/dt of RMSProp's central flow at (θ, G) for Σ = s2·uuᵀ, by autodiff through a
    dense `eigh` (independent of the library's closed forms): scalar, λ₁ of H and τ =
    2√(G+ε)/h; per coordinate, λ₁ of P^{-1/2}HP^{-1/2} (u = P^{-1/2}v) and τ = 2/h."""

    def hess(th):
        h_ = jax.hessian(loss)(th)
        return 0.5 * (h_ + h_.T)

    def top(th, GG):
        if per_coordinate:
            root = jnp.sqrt(jnp.sqrt(GG + eps))
            lam, V = jnp.linalg.eigh(hess(th) / root[:, None] / root[None, :])
            return lam[-1], V[:, -1] / root
        lam, V = jnp.linalg.eigh(hess(th))
        return lam[-1], V[:, -1]

    lam, u = top(theta, G)
    grad = jax.grad(loss)(theta)
    dS = jax.grad(lambda z: u @ hess(z) @ u)(theta)
    P = jnp.sqrt(G + eps)
    dtheta = -(grad + 0.5 * s2 * dS) / P
    if per_coordinate:
        dG = kappa * (grad**2 + s2 * (hess(theta) @ u) ** 2 - G)
        gap = lambda th, GG: 2.0 / h - top(th, GG)[0]
    else:
        dG = kappa * (grad @ grad + s2 * lam**2 - G)
        gap = lambda th, GG: 2.0 * jnp.sqrt(GG + eps) / h - top(th, GG)[0]
    return jax.jvp(gap, (theta, G), (dtheta, dG))[1], dtheta, dG


@pytest.mark.parametrize("per_coordinate", [False, True])
def test_rmsprop_central_flows_at_the_edge_against_autodiff_of_eigh(tiny, per_coordinate):
    """At the edge (τ = λ₁, B = 0) where the flow sharpens: σ² is the one value that makes
    d(τ − λ₁)/dt = 0 along the field written from FRONTIER.md's formulas (θ̇ = −P⁻¹(∇L +
    ½σ²∇S); Ġ = κ(‖∇L‖² + σ²S² − G), resp. κ(∇L² + σ²(Hu)² − G)), found by differentiating a
    dense `eigh`; the library's field equals that field (measured 1e-15), and k = 3 gives
    k = 1's (the other directions far below the edge; measured 4e-7, where the unweighted
    solve was 0.5% off for the scalar flow, 2.7% per coordinate)."""
    problem, w, flat, unravel, loss, _ = tiny
    eps, kappa = 1e-8, 0.5
    lam = float(_dense(loss, flat)[0][0])
    if per_coordinate:
        G = jnp.asarray(np.random.default_rng(0).uniform(0.05, 0.2, flat.shape))
        hess = np.asarray(_hessian_and_grad(loss, flat)[0])
        h0 = 2.0 / float(np.linalg.eigvalsh(
            hess / np.sqrt(np.sqrt(np.asarray(G) + eps))[:, None]
            / np.sqrt(np.sqrt(np.asarray(G) + eps))[None, :])[-1])  # fmt: skip
        h, state, cls = h0, RMSPropState(w, unravel(G)), RMSPropCentralFlow
    else:
        h = 0.5
        G = jnp.asarray((0.5 * h * lam) ** 2 - eps)  # τ = λ₁
        state, cls = RMSPropState(w, G), ScalarRMSPropCentralFlow
    rate0 = float(_eigh_gap_rate(loss, flat, G, h, kappa, eps, 0.0, per_coordinate)[0])
    rate1 = float(_eigh_gap_rate(loss, flat, G, h, kappa, eps, 1.0, per_coordinate)[0])
    assert rate0 < 0  # the gap closes under the stable flow: the edge binds
    sigma2 = -rate0 / (rate1 - rate0)  # the rate is affine in σ²
    _, dtheta, dG = _eigh_gap_rate(loss, flat, G, h, kappa, eps, sigma2, per_coordinate)
    fn = eqx.filter_jit(lambda flow, state: flow.central(state, problem))
    out = {k: fn(cls(h, kappa, k=k), state) for k in (1, 3)}
    X, field = out[1][-3], out[1][-1]
    np.testing.assert_allclose(X[0, 0], sigma2, rtol=1e-9)
    np.testing.assert_allclose(ravel_pytree(field.params)[0], dtheta, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(ravel_pytree(field.G)[0], jnp.ravel(dG), rtol=1e-9, atol=1e-14)
    X3, field3 = out[3][-3], out[3][-1]
    np.testing.assert_allclose(X3[0, 0], X[0, 0], rtol=1e-6)
    assert float(jnp.max(jnp.abs(X3.at[0, 0].set(0.0)))) <= 1e-6 * float(X[0, 0])
    a, b = ravel_pytree(field3)[0], ravel_pytree(field)[0]
    assert float(jnp.linalg.norm(a - b)) <= 1e-6 * float(jnp.linalg.norm(b))


def test_scalar_rmsprop_stationary_scale(tiny):
    """The stationary √(Ḡ+ε) = max(hS/2, √(‖∇L‖²+ε)), where G and Σ rest together at fixed θ:
    hS/2 at the edge; below it (‖∇L‖² above (hS/2)²) G rests at ‖∇L‖², the stable flow's.
    It was hS/2 at every θ."""
    problem, w, flat, _, loss, _ = tiny
    lam, _, grad = _dense(loss, flat)
    norm = float(np.sqrt(grad @ grad + 1e-8))
    state = RMSPropState(w, jnp.asarray(1.0))  # G is not read
    scale = eqx.filter_jit(lambda flow: flow.stationary_scale(state, problem))
    for h in (0.5, 0.2 * norm / float(lam[0])):
        got = scale(ScalarRMSPropCentralFlow(h, 1.0, k=1))
        np.testing.assert_allclose(got, max(0.5 * h * float(lam[0]), norm), rtol=1e-10)
    assert 0.5 * 0.5 * float(lam[0]) > norm  # the first at the edge, the second below it


@pytest.mark.parametrize("k", [1, 4])
def test_a_low_rank_hessians_next_eigenvalue_and_eig_deviation(k):
    """A Hessian of rank 3 in 60 dimensions (not quadratic), η = 1.9/λ₁. k = 1: the deflated
    Lanczos for λ₂ closes its Krylov space after two products and gave 122.8 for a λ₂ of
    3.34, with the warning that a second direction was at the edge. k = 4 (one tracked
    eigenvalue is 0): `eig_deviation`, relative to each |λ_j|, read 0.80 and 1.97 for
    eigenvalues exact to 1e-15. Now `next_eigenvalue` is dense eigh's λ_{k+1} at each saved
    time (to 1e-8 of λ₁: LOBPCG's default tolerance, machine epsilon, is out of reach),
    `eig_deviation` is below 1e-9 (of the tracked spectrum's scale), and nothing is said."""
    n = 60
    a = jax.random.normal(jax.random.key(0), (3, n)) / np.sqrt(n)
    b = jnp.asarray([1.0, -0.5, 0.3])

    def loss(p):
        z = a @ p - b
        return 3.0 * jnp.sum(0.5 * z**2 + z**4 / 12.0)

    problem = dynopt.Problem(loss, 0.3 * jax.random.normal(jax.random.key(1), (n,)))
    hessian = jax.jit(jax.hessian(loss))
    lam = np.linalg.eigvalsh(np.asarray(hessian(problem.params0)))[::-1]
    eta = 1.9 / lam[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = central_solve(CentralFlow(eta, k=k), problem, jnp.asarray([0.0, 5 * eta]))
    dense = np.linalg.eigvalsh(np.asarray(jax.vmap(hessian)(path.params)))[:, ::-1][:, k]
    np.testing.assert_allclose(path.next_eigenvalue, dense, rtol=0, atol=1e-8 * lam[0])
    assert float(jnp.max(path.eig_deviation)) < 1e-9


def test_complementarity_options_and_a_2d_ts_are_refused_naming_them():
    """`solve_complementarity` ran with max_iters = 0 or a negative tol (returning X = 0
    unconverged, or running to the cap) and met mismatched shapes with a reshape TypeError;
    `central_solve` met a 2-D `ts` with a TypeError reading ts[0]."""
    from dynopt._flows.central import solve_complementarity

    c, gram = jnp.eye(2), jnp.zeros((2, 2, 2, 2))
    for kwargs, match in [
        (dict(max_iters=0), "max_iters must be a positive integer"),
        (dict(tol=-1.0), "tol must be a positive finite number"),
        (dict(tol=float("nan")), "tol must be a positive finite number"),
    ]:
        with pytest.raises(ValueError, match=match):
            solve_complementarity(c, gram, **kwargs)
    with pytest.raises(ValueError, match=r"gram a \(k, k, k, k\) tensor"):
        solve_complementarity(c, jnp.zeros((3, 3, 3, 3)))
    problem = dynopt.Problem(lambda p: jnp.sum(jnp.cosh(p)), jnp.ones(5))
    with pytest.raises(ValueError, match="ts must be a non-empty 1-D array"):
        central_solve(CentralFlow(0.1, k=1), problem, jnp.ones((2, 2)))


def test_central_solve_checks_problem_and_solver():
    """`central_solve(flow, 3, ts)` and `central_solve(flow, problem, ts, solver=3)` were
    AttributeErrors ("'int' object has no attribute 'params0'" / "'term_structure'"); now a
    ValueError naming problem or solver."""
    problem = dynopt.problems.quadratic(jnp.array([2.0, 1.0]))
    flow, ts = CentralFlow(0.1, k=1), jnp.array([0.0, 1.0])
    with pytest.raises(ValueError, match=r"problem must be a dynopt\.Problem"):
        central_solve(flow, 3, ts)
    with pytest.raises(ValueError, match="solver must be None"):
        central_solve(flow, problem, ts, solver=3)
