"""dynopt.sharpness on a pytree of mixed float dtypes (float64 weights beside float32 biases)
under the suite's strict dtype promotion."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import sharpness


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
