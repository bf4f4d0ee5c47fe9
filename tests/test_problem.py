import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

import dynopt
from dynopt import flows, networks, problems

from .helpers import tree_max_abs_diff


def test_quadratic_hessian_and_closed_form_pytree():
    params0 = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([[0.5], [3.0]])}
    lam = jnp.array([0.1, 1.0, 10.0, 100.0])
    p = problems.quadratic(lam, params0=params0, rotate=True, seed=3)
    np.testing.assert_allclose(
        np.linalg.eigvalsh(np.asarray(p.hessian)), np.asarray(lam), rtol=1e-12
    )
    # Independent oracle: the matrix exponential.
    flat0 = jnp.concatenate([params0["a"], params0["b"].ravel()])
    for t in [0.0, 0.3, 2.0]:
        expected = scipy.linalg.expm(-t * np.asarray(p.hessian)) @ np.asarray(flat0)
        got = p.flow_solution(jnp.asarray(t))
        got_flat = np.concatenate([np.asarray(got["a"]), np.asarray(got["b"]).ravel()])
        np.testing.assert_allclose(got_flat, expected, rtol=1e-12, atol=1e-13)
    assert jax.tree.structure(p.minimizer) == jax.tree.structure(params0)


def test_quadratic_gradient_is_hessian_times_offset():
    p = problems.quadratic([1.0, 4.0, 9.0], rotate=True, minimizer=jnp.array([1.0, 2.0, 3.0]))
    x = jnp.array([0.3, -0.2, 5.0])
    np.testing.assert_allclose(p.grad(x), p.hessian @ (x - jnp.array([1.0, 2.0, 3.0])), rtol=1e-13)


def test_rosenbrock_minimizer():
    p = problems.rosenbrock()
    assert float(p.loss(p.minimizer)) == 0.0
    assert tree_max_abs_diff(p.grad(p.minimizer), jnp.zeros(2)) == 0.0
    p4 = problems.rosenbrock(4)
    assert float(p4.loss(jnp.ones(4))) == 0.0


def test_rosenbrock_constants_are_compile_time_and_keep_the_params_dtype():
    """`a`, `b` are Python floats in the loss (folded in, not traced: an XLA:CPU defect makes a
    traced `b` cost 2.8x a step, see `problems.rosenbrock`); they give the formula's value and
    leave a float32 start in float32."""
    x = np.array([0.3, -1.1, 0.7, 2.0])
    p = problems.rosenbrock(4, a=2.0, b=5.0, params0=x)
    assert jax.tree.leaves(eqx.filter(p.loss_fn, eqx.is_array)) == []
    expected = np.sum((2.0 - x[:-1]) ** 2 + 5.0 * (x[1:] - x[:-1] ** 2) ** 2)
    np.testing.assert_allclose(float(p.loss(jnp.asarray(x))), expected, rtol=1e-14)
    x32 = jnp.asarray(x, jnp.float32)
    assert p.loss(x32).dtype == jnp.float32 and p.grad(x32).dtype == jnp.float32


def test_logcosh_against_its_formula_and_bad_input():
    c, A = jnp.array([0.3, -1.0]), jnp.array([[1.0, 0.5, -0.2], [0.1, -0.4, 2.0]])
    p0 = {"a": jnp.array([0.2, -0.7]), "b": jnp.array([1.0, -0.5, 0.25])}
    p = problems.logcosh(c=c, A=A, params0=p0)
    a, b = np.asarray(p0["a"]), np.asarray(p0["b"])
    z = np.asarray(A) @ b + a
    expected = np.sum(np.cos(a) * np.asarray(c)) + np.sum(a**4) / 4
    expected += np.sum(np.log(np.cosh(z))) + np.sum(b**2) / 2
    np.testing.assert_allclose(float(p.loss(p.params0)), expected, rtol=1e-14)
    assert p.num_params == 5 and problems.logcosh().num_params == 5
    with pytest.raises(ValueError, match=r"c must have shape \(m,\) and A shape"):
        problems.logcosh(c=c, A=A.T)
    with pytest.raises(ValueError, match=r'params0\["b"\] must have shape \(3,\)'):
        problems.logcosh(c=c, A=A, params0={"a": p0["a"], "b": jnp.zeros(2)})
    with pytest.raises(ValueError, match="keys"):
        problems.logcosh(params0=jnp.zeros(5))


def test_linear_regression_minimizer_is_stationary():
    p = problems.linear_regression(num_samples=64, dim=5, batch_size=8)
    assert float(jnp.linalg.norm(p.grad(p.minimizer))) < 1e-12


@pytest.mark.parametrize(
    "factory", [problems.linear_regression, problems.logistic_regression, problems.mlp_regression]
)
def test_full_batch_minibatch_equals_loss(factory):
    p = factory(num_samples=40, batch_size=40)
    key = jax.random.key(1)
    np.testing.assert_allclose(p.stochastic_loss(p.params0, key), p.loss(p.params0), rtol=1e-13)


def test_minibatch_gradient_unbiased_and_deterministic():
    p = problems.linear_regression(num_samples=50, dim=3, batch_size=5, seed=2)
    w = jnp.array([0.3, -1.0, 2.0])
    keys = jax.random.split(jax.random.key(0), 20_000)
    grads = jax.jit(jax.vmap(lambda k: jax.grad(p.stochastic_loss)(w, k)))(keys)  # one program
    full = p.grad(w)
    # Monte-Carlo error: 5 standard errors of the mean, per coordinate.
    sem = grads.std(axis=0) / np.sqrt(len(keys))
    assert np.all(np.abs(grads.mean(axis=0) - full) < 5 * sem)
    k = jax.random.key(7)
    assert float(p.stochastic_loss(w, k)) == float(p.stochastic_loss(w, k))


def test_custom_problem_pytree():
    def loss(params):
        return jnp.sum(params["w"] ** 2) + jnp.sum((params["b"] - 1.0) ** 4)

    p = dynopt.Problem(loss, {"w": jnp.ones((2, 3)), "b": jnp.zeros(4)}, name="custom")
    assert p.num_params == 10


def test_non_scalar_loss_raises():
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        dynopt.Problem(lambda x: x**2, jnp.ones(3))


def test_python_numbers_as_params0_step_as_arrays():
    """`params0 = 1.0` or `[1.0, 2.0]` (Python floats: `run` indexes its leaves) become float
    arrays of the default floating type, not weakly typed; GD's iterates are (1 - 2h)^k."""
    for params0 in (1.0, [1.0, 2.0], np.float64(1.0)):
        problem = dynopt.Problem(lambda p: sum(x**2 for x in jax.tree.leaves(p)), params0)
        for leaf in jax.tree.leaves(problem.params0):
            assert isinstance(leaf, jax.Array) and leaf.dtype == jnp.float64 and not leaf.weak_type
        traj = dynopt.run(optax.sgd(0.1), problem, 3)
        np.testing.assert_allclose(
            jax.tree.leaves(traj.params)[0], jax.tree.leaves(params0)[0] * 0.8 ** np.arange(4)
        )


def test_a_loss_that_is_not_real_floating_raises():
    for loss, dtype in (
        (lambda p: jnp.sum(p).astype(int), "int"),
        (lambda p: jnp.sum(p).astype(jnp.complex128), "complex"),
    ):
        with pytest.raises(
            ValueError, match=f"loss_fn must return a real floating scalar, got dtype {dtype}"
        ):
            dynopt.Problem(loss, jnp.ones(2))


def test_nan_params0_raises():
    with pytest.raises(ValueError, match="params0 contains NaN"):
        dynopt.Problem(lambda x: jnp.sum(x**2), jnp.array([1.0, jnp.nan]))


def test_integer_params0_raises():
    with pytest.raises(ValueError, match="params0 must hold floating arrays; params0 itself has"):
        dynopt.Problem(lambda x: jnp.sum(x), jnp.array([1, 2]))
    # the leaf is named, as for a non-array leaf
    with pytest.raises(ValueError, match=r"the leaf at \['n'\] has dtype int"):
        dynopt.Problem(lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.zeros(3), "n": jnp.arange(2)})


@pytest.mark.parametrize(
    "loss, cause",
    [
        (
            lambda p: jnp.sum(p**2) if p[0] > 0 else jnp.sum(p**4),
            jax.errors.ConcretizationTypeError,
        ),
        (lambda p: jnp.asarray(float(jnp.sum(p**2))), jax.errors.ConcretizationTypeError),
        (lambda p: jnp.sum(p[: int(p[0])]), jax.errors.ConcretizationTypeError),
        (lambda p: jnp.asarray(np.sum(np.asarray(p))), jax.errors.TracerArrayConversionError),
    ],
    ids=["if", "float", "int", "np.asarray"],
)
def test_a_loss_that_branches_on_or_converts_a_traced_value_says_so(loss, cause):
    """A Python `if` on an array or float()/int()/np.asarray of one inside the loss: a
    ValueError naming loss_fn and the remedy (jnp.where, lax.cond), JAX's error chained."""
    with pytest.raises(ValueError, match=r"loss_fn branches on or converts a traced value") as e:
        dynopt.Problem(loss, jnp.ones(3))
    assert "jnp.where" in str(e.value) and "lax.cond" in str(e.value)
    assert isinstance(e.value.__cause__, cause)


def test_minimizer_structure_mismatch_raises():
    with pytest.raises(ValueError, match="minimizer must have the tree structure of params0"):
        dynopt.Problem(
            lambda p: jnp.sum(p["a"] ** 2), {"a": jnp.ones(2)}, minimizer=(jnp.zeros(2),)
        )
    with pytest.raises(ValueError, match="minimizer leaf shape"):
        dynopt.Problem(lambda p: jnp.sum(p**2), jnp.ones(2), minimizer=jnp.zeros(3))


def test_bad_factory_arguments_raise():
    with pytest.raises(ValueError, match="batch_size must be in"):
        problems.linear_regression(num_samples=10, batch_size=11)
    with pytest.raises(ValueError, match="eigenvalues"):
        problems.quadratic(jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="params0 has 3 scalars but 2 eigenvalues"):
        problems.quadratic([1.0, 2.0], params0=jnp.ones(3))
    with pytest.raises(ValueError, match="dim must be >= 2"):
        problems.rosenbrock(1)


def test_stochastic_loss_missing_raises():
    p = problems.rosenbrock()
    with pytest.raises(ValueError, match="no stochastic_loss_fn"):
        p.stochastic_loss(p.params0, jax.random.key(0))


def test_problem_oracle_is_the_loss_and_its_gradient():
    p = problems.linear_regression(num_samples=20, dim=3, batch_size=5)
    w = jnp.array([0.3, -1.0, 2.0])
    value, grad = p.value_and_grad(w)
    assert float(value) == float(p.loss(w)) == float(p.value(w))
    np.testing.assert_array_equal(grad, jax.grad(p.loss)(w))
    np.testing.assert_array_equal(p.grad(w), grad)
    key = jax.random.key(4)
    value, grad = p.value_and_grad(w, key)
    assert float(value) == float(p.stochastic_loss(w, key)) == float(p.value(w, key))
    np.testing.assert_array_equal(grad, jax.grad(p.stochastic_loss)(w, key))
    np.testing.assert_array_equal(p.grad(w, key), grad)
    p.check_key(None)
    p.check_key(key)
    with pytest.raises(ValueError, match="has no stochastic_loss_fn"):
        problems.rosenbrock().check_key(key)
    assert isinstance(p, dynopt.AbstractProblem)


class _Rotation(dynopt.AbstractProblem):
    """A gradient oracle that is no gradient: g(x) = A x with A = [[a, -1], [1, a]]; its value is
    |x|^2 / 2. Gradient flow x' = -A x spirals in at rate a; GD multiplies |x| by
    |1 - h(a ± i)| = sqrt((1 - h a)^2 + h^2) per step."""

    a: float
    params0: jax.Array
    name: str = "rotation"

    def loss(self, params):
        return 0.5 * jnp.sum(params**2)

    def value(self, params, key=None):
        return self.loss(params)

    def value_and_grad(self, params, key=None):
        mat = jnp.array([[self.a, -1.0], [1.0, self.a]])
        return self.loss(params), mat @ params

    def check_key(self, key):
        if key is not None:
            raise ValueError("the rotation oracle is deterministic.")


def test_any_oracle_steps_through_run_solve_and_compare():
    """`run`, `solve` and `compare` ask only the AbstractProblem protocol of a problem."""
    p = _Rotation(0.2, jnp.array([1.0, 0.5]))
    h, n = 0.1, 50
    traj = dynopt.run(flows.GradientFlow().discretize(h), p, n)
    radius = np.linalg.norm(np.asarray(traj.params), axis=-1)
    growth = np.sqrt((1 - h * 0.2) ** 2 + h**2)
    np.testing.assert_allclose(radius[1:] / radius[:-1], growth, rtol=1e-13)
    np.testing.assert_allclose(traj.loss, 0.5 * radius**2, rtol=1e-13)
    ts = jnp.linspace(0.0, 2.0, 5)
    sol = dynopt.solve(flows.GradientFlow(), p, ts, solver="tsit5")
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(sol.params), axis=-1),
        np.linalg.norm(np.asarray(p.params0)) * np.exp(-0.2 * np.asarray(ts)),
        rtol=1e-9,
    )
    c = dynopt.compare(flows.GradientFlow(), p, 1.0 / jnp.array([20.0, 40.0, 80.0]), 1.0)
    assert abs(float(c.order) - 1.0) <= 0.1
    with pytest.raises(ValueError, match="deterministic"):
        dynopt.run(flows.GradientFlow().discretize(h), p, 5, key=jax.random.key(0))


def test_an_equinox_model_as_params0_gets_the_partition_remedy():
    """An `eqx.nn.MLP` holds its activation as a leaf: a raw TypeError ('Cannot determine dtype
    of PjitFunction') before; now a ValueError naming the leaf and the partition to use, which
    then runs."""
    model = eqx.nn.MLP(3, 1, 4, 1, activation=jnp.tanh, key=jax.random.key(0))
    x = jnp.ones((5, 3))

    def loss(m):
        return jnp.mean(jax.vmap(m)(x) ** 2)

    with pytest.raises(ValueError, match=r"leaf at \.activation is a .*eqx\.partition"):
        dynopt.Problem(loss, model)
    params0, static = eqx.partition(model, eqx.is_inexact_array)
    p = dynopt.Problem(lambda q: loss(eqx.combine(q, static)), params0)
    traj = dynopt.run(optax.sgd(0.1), p, 3)
    assert float(p.loss(traj.final_params)) < float(p.loss(params0))


def test_repr_is_one_line_that_names_the_size_and_what_is_known():
    """equinox's default repr printed the model and data field by field (about 150 lines for a
    369-parameter network); a problem reads in one line."""
    x, y = networks.gaussian_regression(16, 4, 1)
    model = networks.mlp(4, 1, width=8, depth=2, key=jax.random.key(0))
    text = repr(networks.network_problem(model, (x, y)))
    assert "\n" not in text and len(text) < 200
    assert "121 scalars in 6 leaves" in text and "data=16 samples" in text
    quad = repr(problems.quadratic([1.0, 2.0]))
    assert "2 scalars in 1 leaf (float64)" in quad and "minimizer, hessian, flow_solution" in quad
