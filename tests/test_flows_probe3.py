"""Probes of `dynopt.flows` on inputs the other flow tests do not use: a diagonal quadratic with
a flat and an ascending coordinate for the sign flow's closed form, and mixed float32/float64
parameter trees for the Newton preconditioner's step and the norm-based vector fields."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import flows


def test_sign_closed_form_holds_flat_and_ascending_coordinates():
    # On L = ½θᵀ diag(λ) θ the exact sign flow θ̇_i = -sign(λ_i θ_i) moves each coordinate on
    # its own: λ_i > 0 descends to 0 at unit speed and stays, λ_i = 0 has no gradient and does
    # not move, λ_i < 0 leaves at unit speed. The closed form sent the flat and the ascending
    # coordinates to the minimizer like the descending ones. The Hessian is on the raveled
    # parameters: a pytree checks that each leaf reads its own eigenvalues.
    lam = jnp.asarray([0.0, 2.0, -0.5, 3.0])
    hessian = jnp.diag(lam)
    params0 = {"u": jnp.asarray([1.5, -1.0]), "w": jnp.asarray([[-0.5, 0.25]])}

    def loss(p):
        x = jnp.concatenate([p["u"], jnp.ravel(p["w"])])
        return 0.5 * jnp.sum(lam * x * x)

    zeros = jax.tree.map(jnp.zeros_like, params0)
    problem = dynopt.Problem(loss, params0, minimizer=zeros, hessian=hessian)
    solution = flows.SignFlow(width=0.0).closed_form(problem)
    for t in (0.2, 0.75, 2.0):
        exact = {
            "u": np.asarray([1.5, -max(1.0 - t, 0.0)]),
            "w": np.asarray([[-(0.5 + t), max(0.25 - t, 0.0)]]),
        }
        got = solution(t)
        for k in exact:
            np.testing.assert_array_equal(np.asarray(got[k]), exact[k], err_msg=f"{k} at t={t}")


def _mixed_problem():
    """A coupled quadratic plus log-cosh loss on {float32 (2,), float64 (2,)} leaves."""
    params0 = {"a": jnp.asarray([0.7, -0.4], jnp.float32), "b": jnp.asarray([1.0, -0.5])}
    h = jnp.asarray([[2.0, 0.5, 0.0, 0.3], [0.5, 3.0, 0.2, 0.0], [0.0, 0.2, 1.5, 0.4]])
    h = jnp.concatenate([h, jnp.asarray([[0.3, 0.0, 0.4, 2.5]])])

    def flat(x):
        return 0.5 * x @ h @ x + jnp.sum(jnp.log(jnp.cosh(x)))

    def loss(p):
        return flat(jnp.concatenate([p["a"].astype(jnp.float64), p["b"]]))

    return dynopt.Problem(loss, params0), flat


@pytest.mark.parametrize("linear_solver", ["cholesky", "cg"])
def test_newton_step_on_a_mixed_dtype_tree(linear_solver):
    # run keeps each leaf's dtype, so the Newton preconditioner met a float32 and a float64
    # leaf: lineax refused the mixed operator ("unravel function given array of dtype float32"
    # for Cholesky, "Closure-converted function called with different dynamic arguments" for
    # CG). Reference: one damped Newton step θ - h(∇²L + μI)⁻¹∇L in float64 NumPy; the
    # float32 leaf's gradient and Hessian entries are rounded to float32 (6e-8 relative, times
    # the system's condition number, below 10), hence 1e-6.
    problem, flat = _mixed_problem()
    mu, h = 0.5, 0.1
    disc = flows.PreconditionedFlow(flows.NewtonPreconditioner(mu, linear_solver)).discretize(h)
    traj = dynopt.run(disc, problem, 1)
    x0 = np.concatenate([np.asarray(problem.params0["a"], np.float64), problem.params0["b"]])
    hess = np.asarray(jax.hessian(flat)(jnp.asarray(x0)))
    grad = np.asarray(jax.grad(flat)(jnp.asarray(x0)))
    x1 = x0 - h * np.linalg.solve(hess + mu * np.eye(4), grad)
    got = jax.tree.map(lambda x: x[-1], traj.params)
    assert got["a"].dtype == jnp.float32 and got["b"].dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got["a"], np.float64), x1[:2], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got["b"]), x1[2:], rtol=1e-6)


def _field_reference(flow, x, gap):
    r"""The field on the raveled float64 parameters `x` (loss gap `gap` to f_min), written from
    the docstrings' equations: $-g/\sqrt{G + \epsilon}$ (global RMSprop),
    $-(L - L^*)g/\|g\|^2$ (Polyak) and $-(L - L^*)\min(1/\|g\|, M)g/\|g\|$ (truncated)."""
    g, norm = x, np.linalg.norm(x)
    if isinstance(flow, flows.GlobalRMSPropFlow):
        return -g / np.sqrt(float(flow.initial_scale) + float(flow.eps))
    if flow.M is None:
        return -gap * g / norm**2
    return -gap * min(1 / norm, float(flow.M)) * g / norm


@pytest.mark.parametrize(
    "flow",
    [flows.GlobalRMSPropFlow(3.0, 1e-3, 0.5), flows.PolyakFlow(), flows.PolyakFlow(M=0.3)],
    ids=["global_rmsprop", "polyak", "polyak_truncated"],
)
def test_norm_based_fields_on_a_mixed_dtype_tree(flow):
    # These fields divide by a norm of the whole gradient; optax's norm adds a float32 and a
    # float64 leaf's squares, which strict promotion refuses: the field (and the loss rate)
    # raised on a mixed tree, whose leaves they claim to keep. Reference: the docstrings'
    # equations in float64 NumPy; the float32 leaf's gradient is rounded to float32, hence
    # 1e-6 relative (the float64 leaf sees the float32 one through the norm).
    problem, flat = _mixed_problem()
    state = flow.init(problem.params0)
    field = flow.params(flow.vector_field(0.3, state, problem))
    x0 = np.concatenate([np.asarray(problem.params0["a"], np.float64), problem.params0["b"]])
    g = np.asarray(jax.grad(flat)(jnp.asarray(x0)))
    want = _field_reference(flow, g, float(flat(jnp.asarray(x0))))
    assert field["a"].dtype == jnp.float32 and field["b"].dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(field["a"], np.float64), want[:2], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(field["b"]), want[2:], rtol=1e-6)
    # The loss rate: ⟨g, θ̇⟩ (the chain rule), which each of them states in closed form.
    rate = flow.loss_rate(0.3, state, problem)
    np.testing.assert_allclose(float(rate), float(g @ want), rtol=1e-6)


def _diagonal(p):
    return jax.tree.map(lambda x: 1.0 + x * x, p)


_EVERY_FLOW = [
    flows.GradientFlow(),
    flows.ModifiedGradientFlow(0.1),
    flows.HeavyBall(0.8),
    flows.RescaledGradientFlow(0.6),
    flows.NesterovODE(3.0),
    flows.RMSPropFlow(3.0, 1e-3, 0.5),
    flows.GlobalRMSPropFlow(3.0, 1e-3, 0.5),
    flows.AdamFlow(2.0, 5.0, 1e-4),
    flows.AdamWFlow(2.0, 5.0, 1e-4, 0.3),
    flows.SignFlow(0.2),
    flows.LionFlow(3.0, 0.7, 0.2, 0.3),
    flows.PolyakFlow(),
    flows.PreconditionedFlow(flows.DiagonalPreconditioner(_diagonal)),
    flows.PreconditionedFlow(flows.NewtonPreconditioner(0.5)),
]


@pytest.mark.parametrize("flow", _EVERY_FLOW, ids=lambda f: type(f).__name__)
def test_loss_rate_on_a_mixed_dtype_tree(flow):
    # Every loss rate reduces over the leaves (optax.tree.norm/sum/vdot), which adds a float32
    # and a float64 leaf's terms: strict promotion refused it on a mixed tree, while the
    # vector field keeps each leaf's dtype. Reference: the same rate on the state cast to
    # float64 (checked against finite differences of a solve elsewhere); the float32 leaf's
    # gradient is rounded to float32, hence 1e-6 relative.
    problem, _ = _mixed_problem()
    state = flow.init(problem.params0)
    wide = jax.tree.map(lambda x: x.astype(jnp.float64), state)
    problem64 = dynopt.Problem(problem.loss_fn, flow.params(wide))
    t = 0.3
    got = flow.loss_rate(t, state, problem)
    want = flow.loss_rate(t, wide, problem64)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)


@pytest.mark.parametrize("max_scale", [0.0, -1.0, float("nan")])
def test_truncated_polyak_inverse_names_max_scale(max_scale):
    # from_hyperparams(learning_rate, max_scale) said "M must be > 0", the flow's field, which
    # the caller never wrote.
    with pytest.raises(ValueError, match=r"max_scale must be > 0"):
        flows.PolyakFlow.from_hyperparams(0.1, max_scale)
    with pytest.raises(ValueError, match=r"max_scale must be > 0"):
        dynopt.maps.TruncatedPolyakStep().inverse(0.1, max_scale)


def test_heavy_ball_closed_form_on_a_mixed_dtype_quadratic():
    # `problems.quadratic` takes a mixed float32/float64 params0 (and GradientFlow's closed form
    # works there), but HeavyBall's raveled it under strict promotion: a TypePromotionError.
    # Reference: the linear system z' = [[0, I], [-H, -aI]] z by scipy's expm, in float64;
    # the float32 leaf is its rounding (1e-6 relative), the float64 one to 1e-12.
    from scipy.linalg import expm

    params0 = {"a": jnp.asarray([1.0], jnp.float32), "b": jnp.asarray([1.0, -1.0])}
    problem = dynopt.problems.quadratic([0.5, 2.0, 3.0], params0=params0, rotate=True, seed=1)
    a = 0.7
    hess = np.asarray(problem.hessian)
    system = np.block([[np.zeros((3, 3)), np.eye(3)], [-hess, -a * np.eye(3)]])
    z0 = np.concatenate([[1.0, 1.0, -1.0], np.zeros(3)])  # the minimizer is 0
    solution = flows.HeavyBall(a).closed_form(problem)
    for t in (0.4, 2.5):
        want = expm(system * t) @ z0
        theta, v = solution(t)
        for got, ref in ((theta, want[:3]), (v, want[3:])):
            assert got["a"].dtype == jnp.float32 and got["b"].dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(got["a"], np.float64), ref[:1], rtol=1e-6)
            np.testing.assert_allclose(np.asarray(got["b"]), ref[1:], rtol=1e-12, atol=1e-15)
