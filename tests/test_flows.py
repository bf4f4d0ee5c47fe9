import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import flows

from .helpers import tree_max_abs_diff


def _pytree_problem():
    def loss(p):
        return (
            jnp.sum((p["w"] - 1.0) ** 2 * jnp.array([1.0, 3.0])[None, :])
            + jnp.sum(jnp.cos(p["b"]))
            + 0.1 * jnp.sum(p["w"]) ** 2 * jnp.sum(p["b"] ** 2)
        )

    params0 = {"w": jnp.array([[0.5, -1.0], [2.0, 0.0]]), "b": jnp.array([0.3, 1.2, -0.7])}
    return dynopt.Problem(loss, params0, name="pytree")


def test_gd_equals_optax_sgd_and_diffrax_euler():
    problem = _pytree_problem()
    h, n = 0.05, 40
    disc = flows.GradientFlow().discretize(h)
    assert float(disc.dt) == h and float(disc.hyperparams["learning_rate"]) == h

    def loop(tx):
        # One jitted step: eager `jax.grad` retraces the loss at every call (8x slower).
        step = jax.jit(lambda params, state: tx.update(problem.grad(params), state, params))
        params, state = problem.params0, tx.init(problem.params0)
        out = [params]
        for _ in range(n):
            updates, state = step(params, state)
            params = optax.apply_updates(params, updates)
            out.append(params)
        return out

    ours, reference = loop(disc.transform), loop(optax.sgd(h))
    euler = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, a: flows.GradientFlow().vector_field(t, y, problem)),
        diffrax.Euler(),
        0.0,
        n * h,
        h,
        problem.params0,
        saveat=diffrax.SaveAt(ts=jnp.arange(n + 1, dtype=float) * h),
    )
    traj = dynopt.run(disc, problem, n)
    for k in range(n + 1):
        assert tree_max_abs_diff(ours[k], reference[k]) <= 1e-14
        euler_k = jax.tree.map(lambda x, k=k: x[k], euler.ys)
        run_k = jax.tree.map(lambda x, k=k: x[k], traj.params)
        assert tree_max_abs_diff(ours[k], euler_k) <= 1e-14
        assert tree_max_abs_diff(ours[k], run_k) <= 1e-14


def test_modified_flow_vector_field_is_gradient_of_modified_loss():
    problem = _pytree_problem()
    h = 0.1

    def modified_loss(p):
        g = jax.grad(problem.loss)(p)
        return problem.loss(p) + h / 4 * optax.tree.norm(g, squared=True)

    expected = jax.tree.map(jnp.negative, jax.grad(modified_loss)(problem.params0))
    got = flows.ModifiedGradientFlow(h).vector_field(0.0, problem.params0, problem)
    assert tree_max_abs_diff(got, expected) < 1e-13


def test_modified_flow_on_quadratic_matches_closed_form():
    problem = dynopt.problems.quadratic([1.0, 5.0], rotate=True)
    h = 0.05
    sol = dynopt.solve(flows.ModifiedGradientFlow(h), problem, jnp.array([1.0]))
    hess = np.asarray(problem.hessian)
    import scipy.linalg

    exact = scipy.linalg.expm(-(hess + h / 2 * hess @ hess)) @ np.ones(2)
    np.testing.assert_allclose(sol.params[-1], exact, rtol=1e-9)


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf")])
def test_invalid_step_size_raises(bad):
    with pytest.raises(ValueError, match="step_size must be > 0"):
        flows.GradientFlow().discretize(bad)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        flows.ModifiedGradientFlow(bad)


def test_from_hyperparams_inverts_discretize():
    flow, dt = flows.GradientFlow.from_hyperparams(0.03)
    disc = flow.discretize(dt)
    assert float(disc.hyperparams["learning_rate"]) == 0.03 and float(disc.dt) == 0.03
    with pytest.raises(ValueError, match="learning_rate"):
        flows.GradientFlow.from_hyperparams(-1.0)


def test_discretization_is_traceable_under_vmap():
    """The map h -> transform works with traced h (the basis of compiled sweeps)."""
    problem = _pytree_problem()

    def first_update(h):
        tx = flows.GradientFlow().discretize(h).transform
        g = problem.grad(problem.params0)
        return tx.update(g, tx.init(problem.params0))[0]

    hs = jnp.array([0.1, 0.2])
    out = jax.vmap(first_update)(hs)
    g = problem.grad(problem.params0)
    for i, h in enumerate([0.1, 0.2]):
        assert (
            tree_max_abs_diff(
                jax.tree.map(lambda x, i=i: x[i], out), jax.tree.map(lambda x, h=h: -h * x, g)
            )
            < 1e-15
        )
