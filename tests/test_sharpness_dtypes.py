"""dynopt.sharpness on a pytree of mixed float dtypes (float64 weights beside float32 biases)
under the suite's strict dtype promotion, and an eager solve at its cap compiling nothing new."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import problems, sharpness

from .helpers import count_backend_compiles


C = np.linspace(1.0, 6.0, 6)  # the Hessian's w block: diag(C)
D = np.linspace(0.25, 1.5, 6)  # its b block: diag(2 D)
TOL = 2 * float(np.finfo(np.float32).eps)


def _loss(p):
    return 0.5 * jnp.sum(jnp.asarray(C) * p["w"] ** 2) + jnp.sum(
        jnp.asarray(D) * p["b"].astype(jnp.float64) ** 2
    )


def _mixed():
    problem = dynopt.Problem(_loss, {"w": jnp.ones(6), "b": jnp.ones(6, jnp.float32)})
    spectrum = np.sort(np.concatenate([C, 2 * D]))[::-1]
    return problem, spectrum


def test_dense_hessian_of_a_mixed_tree():
    """`ravel_pytree` of a float64/float32 tree raised a strict-promotion error; it ravels to
    float64 (the Hessian is diagonal: exact)."""
    problem, _ = _mixed()
    hess = sharpness.dense_hessian(problem.loss, problem.params0)
    assert hess.dtype == np.float64
    np.testing.assert_array_equal(hess, np.diag(np.concatenate([2 * D, C])))  # "b" ravels first


@pytest.mark.parametrize("method, max_iters", [("lobpcg", 200), ("lanczos", 12)])
def test_top_eigenpairs_and_tracking_of_a_mixed_tree(getkey, method, max_iters):
    """The eigen-solve and the tracker inside `run` on the mixed tree, against the known
    spectrum (the loss is quadratic: the same at every iterate). n = 12, k = 2 (5k < n:
    LOBPCG or Lanczos, not the dense route). The float32 block's products are rounded to
    float32 (|E| <= eps32 max 2D), which moves an eigenvalue by at most |E| (Weyl): to
    2 eps32 of the largest eigenvalue (measured: exact for LOBPCG, 1.7e-9 for Lanczos, whose
    Krylov space of 9 distinct eigenvalues closes before its 12 products)."""
    problem, spectrum = _mixed()
    start = sharpness.random_start(getkey(), 12, 2)
    found = sharpness.top_eigenpairs(
        problem.grad, problem.params0, start, method=method, max_iters=max_iters
    )
    np.testing.assert_allclose(found.values, spectrum[:2], rtol=0, atol=TOL * spectrum[0])
    gd = dynopt.Discretization(optax.sgd, {"learning_rate": jnp.asarray(0.05)}, dt=0.05)
    tracked = sharpness.track_sharpness(
        gd, 2, every=2, init_grad_fn=problem.grad, method=method, max_iters=max_iters
    )
    traj = dynopt.run(tracked, problem, 6, every=2, observe=sharpness.sharpness)
    want = np.broadcast_to(spectrum[:2], traj.observations.shape)
    np.testing.assert_allclose(traj.observations, want, rtol=0, atol=TOL * spectrum[0])


def test_a_capped_eager_solve_compiles_nothing_new(getkey):
    """LOBPCG stopping at its cap, called eagerly, checks its residuals for the warning: that
    check linearized and mapped the Hessian-vector product eagerly, a new `jit(scan)` at every
    call (0.4 s each on a CPU for a 31-parameter MLP). At new parameters and a new data set of
    the same shapes it now compiles nothing."""
    problem = problems.mlp_regression(32, 3, width=6, depth=1, batch_size=32)
    other = problems.mlp_regression(32, 3, width=6, depth=1, batch_size=32, seed=3)
    start = sharpness.random_start(getkey(), 31, 2)
    moved = jax.tree.map(lambda x: 1.1 * x, problem.params0)
    with pytest.warns(RuntimeWarning, match="stopped at its cap"):
        sharpness.top_eigenpairs(problem.grad, problem.params0, start, max_iters=2, tol=1e-12)
    for grad, params in ((problem.grad, moved), (other.grad, other.params0)):
        with pytest.warns(RuntimeWarning, match="stopped at its cap"):
            compiles, found = count_backend_compiles(
                sharpness.top_eigenpairs, grad, params, start, max_iters=2, tol=1e-12
            )
        assert compiles == 0
        assert int(found.iterations) == 2
