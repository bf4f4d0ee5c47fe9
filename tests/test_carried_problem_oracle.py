"""`Problem.value_and_grad` called from user code: one compiled program per problem structure,
not the loss traced and dispatched operation by operation on every call."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import dynopt
from dynopt import problems


def test_value_and_grad_traces_the_loss_once_for_new_values_and_new_problems():
    traces = []

    def loss(p):
        traces.append(1)
        return jnp.sum((p["x"] - 1.0) ** 4) + jnp.sum(p["y"] ** 2)

    params = {"x": jnp.arange(3.0), "y": jnp.ones(2)}
    problem = dynopt.Problem(loss, params, name="a")
    traces.clear()  # (construction traces it once, for its shape)
    for shift in (0.0, 0.5, -2.0):
        moved = jax.tree.map(lambda a, s=shift: a + s, params)
        value, grad = problem.value_and_grad(moved)
        x, y = moved["x"], moved["y"]
        np.testing.assert_allclose(value, jnp.sum((x - 1.0) ** 4) + jnp.sum(y**2), rtol=1e-15)
        np.testing.assert_allclose(grad["x"], 4 * (x - 1.0) ** 3, rtol=1e-15)
        np.testing.assert_allclose(grad["y"], 2 * y, rtol=1e-15)
    assert len(traces) == 1
    # Another name and another start: the same program.
    other = dynopt.Problem(loss, jax.tree.map(lambda a: 2 * a, params), name="b")
    traces.clear()
    other.grad(other.params0)
    assert traces == []


def test_value_and_grad_of_a_python_scalar_start_compiles_once():
    traces = []

    def loss(x):
        traces.append(1)
        return (x - 3.0) ** 2

    problem = dynopt.Problem(loss, 1.0)
    traces.clear()
    for x in (0.5, 1.5, 2.5):
        value, grad = problem.value_and_grad(x)
        assert float(value) == (x - 3.0) ** 2 and float(grad) == 2 * (x - 3.0)
    assert len(traces) == 1


def test_value_and_grad_is_what_run_computes_bit_for_bit():
    # The elementwise Rosenbrock loss: eagerly its sum rounded 1.1e-13 off the compiled one.
    problem = problems.rosenbrock(5)
    traj = dynopt.run(optax.sgd(1e-3), problem, 2)
    for k in range(3):
        params = jax.tree.map(lambda a, k=k: a[k], traj.params)
        assert float(problem.value_and_grad(params)[0]) == float(traj.loss[k])


def test_value_and_grad_on_a_key_is_the_minibatch_gradient():
    problem = problems.linear_regression()
    value, grad = problem.value_and_grad(problem.params0, jax.random.key(1))
    ref = jax.value_and_grad(problem.stochastic_loss)(problem.params0, jax.random.key(1))
    np.testing.assert_allclose(value, ref[0], rtol=1e-14)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13), grad, ref[1])
