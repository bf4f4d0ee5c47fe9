"""What "top" means: the k largest eigenvalues algebraically, against dense `eigh` on rotated
quadratics whose spectra hold negative and tied eigenvalues (n = 40: LOBPCG for k <= 7)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import sharpness


class _Quadratic(eqx.Module):
    """½ pᵀHp with H an array leaf, not a closure's constant: every spectrum is one compiled
    eigen-solve."""

    hess: jax.Array

    def __call__(self, p):
        return 0.5 * p @ self.hess @ p


def _quadratic(eigenvalues):
    n = len(eigenvalues)
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((n, n)))
    hess = jnp.asarray(q @ np.diag(eigenvalues) @ q.T)
    return dynopt.Problem(_Quadratic(hess), jnp.ones(n)), hess


SPECTRA = {
    # 3 above a negative tail: the 2nd and 3rd largest are -1, -2, not the largest |λ| (-39)
    "negative tail": [3.0, *(-float(i) for i in range(1, 40))],
    "all negative": [-float(i) for i in range(1, 41)],
    "a tied top": [5.0, 5.0, 5.0, *np.linspace(0.1, 1.0, 37)],
}


@pytest.mark.parametrize("name", list(SPECTRA))
def test_top_means_largest_algebraically_with_negative_and_tied_eigenvalues(name):
    """LOBPCG's top-3 values are dense eigh's largest three to 1e-10 and its vectors span their
    eigenspace (a tied eigenvalue's vectors are any basis of it): the projector onto the found
    vectors is eigh's."""
    problem, hess = _quadratic(SPECTRA[name])
    start = sharpness.random_start(jax.random.key(1), 40, 3)
    found = sharpness.top_eigenpairs(problem.grad, problem.params0, start, max_iters=200)
    values, vectors = np.linalg.eigh(np.asarray(hess))
    np.testing.assert_allclose(found.values, values[::-1][:3], rtol=0, atol=1e-10)
    top = vectors[:, ::-1][:, :3]
    got = np.asarray(found.vectors)
    np.testing.assert_allclose(got @ got.T, top @ top.T, atol=1e-8)
