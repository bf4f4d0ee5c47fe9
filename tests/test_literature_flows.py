r"""Flows against the published formulas, integrated by scipy (DOP853) and iterated by loops
written here, on settings the other tests do not use: pytree parameters, a non-quadratic loss
with a minimum value $L^* \ne 0$, Adam with $a_1 < a_2$ and $\epsilon = 10^{-8}$, and the
fixed-$\beta$ (fast) Adam/RMSprop flows in Cattaneo, Klusowski & Shigida's (ICML 2024) regime of
a small $\epsilon$ with the optimizer on its slow manifold.

Tolerances: a diffrax solve at `rtol=1e-10`, `atol=1e-12` against DOP853 at `rtol=1e-12`
agrees to ~1e-9 over these horizons; a loop and a transform doing the same float64 operations
agree to a few ulps; fitted orders within 0.1 of the claim, on ladders whose local slopes were
measured to approach it (listed at each test).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from jax.flatten_util import ravel_pytree
from scipy.integrate import solve_ivp

import dynopt
from dynopt.flows import AdamFlow, PolyakFlow


_P0 = {"u": jnp.array([1.2, -0.7]), "v": jnp.array([[0.5], [1.5]])}
_FLAT0, _UNRAVEL = ravel_pytree(_P0)


def _vector(p):
    return jnp.concatenate([p["u"], p["v"].ravel()])  # the raveled order (keys u, v)


def _polyak_loss(p):
    x = _vector(p)
    return 0.7 + jnp.sum(jnp.log(jnp.cosh(x - 0.3))) + 0.1 * (x[0] * x[2]) ** 2 + jnp.sum(x**4) / 16


def _stack(params):
    return np.asarray(jax.vmap(lambda p: ravel_pytree(p)[0])(params))


def _solve_ivp(rhs, t_span, y0, ts):
    sol = solve_ivp(rhs, t_span, y0, method="DOP853", rtol=1e-12, atol=1e-13, t_eval=ts)
    assert sol.success
    return sol.y.T


@pytest.mark.parametrize("M", [None, 0.8])
def test_polyak_flow_with_a_known_minimum_value(M):
    r"""Post 3's Polyak flow with $L^* = \min L \approx 0.7027$ (found by BFGS):
    $\dot\theta = -(L - L^*)\nabla L/\|\nabla L\|^2$, so $L(t) - L^* = (L_0 - L^*)e^{-t}$;
    truncated, $\dot\theta = -(L-L^*)\min(1/\|\nabla L\|, M)\nabla L/\|\nabla L\|$. The Euler
    map is the loop $\theta \mathrel{-}= h\,s\,g$."""
    problem = dynopt.Problem(_polyak_loss, _P0)
    value_and_grad = jax.jit(jax.value_and_grad(lambda x: _polyak_loss(_UNRAVEL(x))))
    res = scipy.optimize.minimize(
        lambda x: float(value_and_grad(x)[0]),
        np.asarray(_FLAT0),
        jac=lambda x: np.asarray(value_and_grad(x)[1]),
        method="BFGS",
        tol=1e-14,
    )
    l_star = float(res.fun)

    def speed(x):
        loss, g = value_and_grad(jnp.asarray(x))
        g = np.asarray(g)
        norm = np.linalg.norm(g)
        scale = 1 / norm if M is None else min(1 / norm, M)
        return (float(loss) - l_star) * scale / norm, g

    def rhs(t, x):
        s, g = speed(x)
        return -s * g

    ts = np.linspace(0.5, 4.0, 8)
    flow = PolyakFlow(M=M, f_min=l_star)
    traj = dynopt.solve(flow, problem, jnp.asarray(ts))
    reference = _solve_ivp(rhs, (0.0, 4.0), np.asarray(_FLAT0), ts)
    np.testing.assert_allclose(_stack(traj.params), reference, rtol=0, atol=1e-8)
    if M is None:
        gap0 = float(_polyak_loss(_P0)) - l_star
        np.testing.assert_allclose(np.asarray(traj.loss) - l_star, gap0 * np.exp(-ts), rtol=1e-8)

    h, n = 0.05, 40
    run = dynopt.run(flow.discretize(h), problem, n, every=n)
    x = np.asarray(_FLAT0)
    for _ in range(n):
        s, g = speed(x)
        x = x - h * s * g
    np.testing.assert_allclose(_stack(run.params)[-1], x, rtol=0, atol=1e-14)


def _adam_loss(p):
    x = _vector(p)
    return jnp.sum(jnp.log(jnp.cosh(x - 0.3))) + 0.3 * x[0] * x[2] + 0.1 * jnp.sum(x**4)


def test_adam_flow_with_bias_corrections_against_an_independent_solve():
    r"""`AdamFlow(a1=0.7, a2=9, eps=1e-8)` ($a_1 < a_2$: the second moment is the fast one):
    $\dot m = a_1(g - m)$, $\dot v = a_2(g^2 - v)$,
    $\dot\theta = -\hat m/(\sqrt{\hat v} + \epsilon)$ with $\hat m = m/(1 - e^{-a_1t})$, solved
    by scipy from $t_0 = 10^{-7}$ (the start's $O(t_0)$ series; error $O(t_0^2)$), and
    `optax.adam(h, b1=1-a_1h, b2=1-a_2h)` iterated here tracks it to first order (local slopes
    1.04, 1.02 on this ladder)."""
    a1, a2, eps, t1 = 0.7, 9.0, 1e-8, 1.0
    problem = dynopt.Problem(_adam_loss, _P0)
    grad = jax.jit(jax.grad(lambda x: _adam_loss(_UNRAVEL(x))))

    def rhs(t, y):
        theta, m, v = np.split(y, 3)
        g = np.asarray(grad(jnp.asarray(theta)))
        m_hat, v_hat = m / -np.expm1(-a1 * t), v / -np.expm1(-a2 * t)
        return np.concatenate([-m_hat / (np.sqrt(v_hat) + eps), a1 * (g - m), a2 * (g * g - v)])

    t0 = 1e-7
    g0 = np.asarray(grad(_FLAT0))
    theta0 = np.asarray(_FLAT0) - t0 * g0 / (np.abs(g0) + eps)
    y0 = np.concatenate([theta0, a1 * t0 * g0, a2 * t0 * g0**2])
    sol = solve_ivp(rhs, (t0, t1), y0, method="DOP853", rtol=1e-12, atol=1e-14, dense_output=True)
    assert sol.success

    ts = np.array([0.25, 0.5, 1.0])
    traj = dynopt.solve(AdamFlow(a1, a2, eps), problem, jnp.asarray(ts))
    np.testing.assert_allclose(_stack(traj.params), sol.sol(ts)[:4].T, rtol=0, atol=1e-8)

    hs = np.array([0.01, 0.005, 0.0025])
    errors = []
    for h in hs:
        tx = optax.adam(h, b1=1 - a1 * h, b2=1 - a2 * h, eps=eps)

        def step(carry, _, tx=tx):
            x, state = carry
            with jax.numpy_dtype_promotion("standard"):  # optax's count is an int32
                u, state = tx.update(grad(x), state, x)
            return (x + u, state), x + u

        n = round(t1 / h)
        xs = jax.lax.scan(step, (_FLAT0, tx.init(_FLAT0)), None, length=n)[1]
        errors.append(np.max(np.abs(np.asarray(xs) - sol.sol(h * np.arange(1, n + 1))[:4].T)))
    assert abs(float(dynopt.fit_order(hs, np.array(errors))) - 1.0) < 0.1, errors


_A = jnp.array([1.0, 2.0, 0.5])


def _sign_like_loss(x):
    # log-cosh with scale 2 and a weak coupling: the gradient keeps its signs on the window.
    return jnp.sum(_A * 4.0 * jnp.log(jnp.cosh(x / 2.0))) + 0.02 * (x[0] * x[1] + x[1] * x[2])


@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_fixed_beta_adaptive_flow_is_second_order_at_small_eps(name):
    r"""Cattaneo et al.'s modified flow of Adam/RMSprop with fixed $\beta$'s at
    $\epsilon = 10^{-8}$ (where $f_1 \approx -\mathrm{sign}\,\nabla L$ and the $O(h)$ term
    anti-penalizes the one-norm for $\beta_2 > \beta_1$), written here from the formula,
    $f_2 = -\frac{HP_0}{D}[\frac{1+\beta_1}{2(1-\beta_1)} - \frac{1+\beta_2}{2(1-\beta_2)}
    \frac uD]$, $P_0 = g/D$ ($D = |g| + \epsilon$, $u = |g|$ for Adam; $D = \sqrt{g^2 + \epsilon}$,
    $u = g^2/D$ for `optax.rmsprop`): `modified_flow`'s $f_2$ to rounding, and the optimizer's
    iterates track $f_1 + hf_2$ to second order in $h$ (and $f_1$ to first). The start is on the
    optimizer's own invariant manifold, without dynopt: 800 steps of burn-in
    ($\beta_2^{800} < 10^{-17}$, the bias corrections at 1 to rounding), the start point solved
    for so that every step size starts from the same $\theta$. Local slopes on $h$ = 0.002 ->
    0.0005: Adam 1.90, 1.95 (order 2) and 0.94, 0.97 (order 1); RMSprop 1.94, 1.97 and 0.96,
    0.98: the $O(h^3)$ remainder halves with $h$."""
    if name == "adam":
        b1, b2, eps = 0.8, 0.95, 1e-8

        def opt(h):
            return optax.adam(h, b1=b1, b2=b2, eps=eps)

        def denominator(g):
            return np.abs(g) + eps, np.abs(g)
    else:
        b1, b2, eps = 0.0, 0.9, 1e-8

        def opt(h):
            return optax.rmsprop(h, decay=b2, eps=eps)

        def denominator(g):
            d = np.sqrt(g**2 + eps)
            return d, g**2 / d

    grad, hess = jax.jit(jax.grad(_sign_like_loss)), jax.jit(jax.hessian(_sign_like_loss))
    c1, c2 = (1 + b1) / (2 * (1 - b1)), (1 + b2) / (2 * (1 - b2))

    def fields(x):
        g = np.asarray(grad(jnp.asarray(x)))
        d, u = denominator(g)
        p0 = g / d
        return -p0, -(np.asarray(hess(jnp.asarray(x))) @ p0) / d * (c1 - c2 * u / d)

    target = jnp.array([3.0, -2.0, 1.5])
    problem = dynopt.Problem(_sign_like_loss, target)
    flow = dynopt.modified_flow(opt, 0.01, order=2, problem=problem)
    got = [np.asarray(flow.params(f)) for f in flow.field_values(flow.init(target), problem)]
    for got_j, want_j in zip(got, fields(target)):
        np.testing.assert_allclose(got_j, want_j, rtol=1e-13, atol=0)

    t1, burn = 1.0, 800
    hs = np.array([0.002, 0.001, 0.0005])
    errors = {1: [], 2: []}
    for h in hs:
        tx = opt(h)

        def step(carry, _, tx=tx):
            x, state = carry
            with jax.numpy_dtype_promotion("standard"):  # optax's count is an int32
                u, state = tx.update(grad(x), state, x)
            return (x + u, state), x + u

        burn_in = jax.jit(lambda x0, tx=tx, step=step: jax.lax.scan(
            step, (x0, tx.init(x0)), None, length=burn)[0])  # fmt: skip
        start = target
        for _ in range(8):  # the burn-in is a near-translation: a fixed point in a few sweeps
            x, state = burn_in(start)
            start = start + (target - x)
        assert float(jnp.max(jnp.abs(x - target))) < 1e-9
        n = round(t1 / h)
        xs = np.asarray(jax.lax.scan(step, (x, state), None, length=n)[1])
        ts = h * np.arange(1, n + 1)
        for order in (1, 2):

            def rhs(t, y, order=order, h=h):
                f1, f2 = fields(y)
                return f1 if order == 1 else f1 + h * f2

            ref = _solve_ivp(rhs, (0.0, t1), np.asarray(x), ts)
            errors[order].append(np.max(np.abs(xs - ref)))
    assert abs(float(dynopt.fit_order(hs, np.array(errors[2]))) - 2.0) < 0.1, errors
    assert abs(float(dynopt.fit_order(hs, np.array(errors[1]))) - 1.0) < 0.1, errors
