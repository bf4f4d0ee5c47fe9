"""Building Rosenbrock compiles nothing (its constants are made on the host), a quadratic or a
logistic regression one program, and their arrays are those of the eager operations, bit for
bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynopt import problems

from .helpers import backend_compiles


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes(), np.max(np.abs(a - b))


def test_rosenbrock_compiles_nothing():
    # Its start and minimizer are constants made on the host (4 programs as jnp operations).
    params0 = jnp.array([0.5, 1.0], jnp.float32)
    with backend_compiles() as compiled:
        p = problems.rosenbrock(11)
        q = problems.rosenbrock(2, a=2.0, params0=params0)
    assert compiled == []
    _same_bits(p.params0, jnp.array([-1.2 if i % 2 == 0 else 1.0 for i in range(11)]))
    _same_bits(p.minimizer, jnp.full(11, 1.0))
    _same_bits(q.minimizer, jnp.array([2.0, 4.0]).astype(jnp.float32))


def _leaves(problem):
    return [x for x in jax.tree.leaves(problem) if isinstance(x, jax.Array)]


@pytest.mark.parametrize(
    "build",
    [
        lambda seed: problems.quadratic(jnp.logspace(-1.0, 2.0, 8), rotate=True, seed=seed),
        lambda seed: problems.quadratic(np.array([1.0, 10.0]), params0=jnp.array([1.0, seed])),
        lambda seed: problems.logistic_regression(128, 5, seed=seed),
    ],
    ids=["rotated quadratic", "quadratic", "logistic regression"],
)
def test_a_problem_is_built_in_one_program_with_the_eager_operations_bits(build):
    """The quadratic's rotation, Hessian and start coefficients and the logistic regression's
    data are one compiled program each (eagerly, 18 and 13: one per operation, most of a
    quick experiment's set-up), the zeros and ones of the start and minimizer none; a new seed
    compiles nothing; every array is the eager operations' bit for bit (each operation run on
    its own, `jax.disable_jit`)."""
    build(0)  # (the eigenvalues' logspace is the caller's own program)
    with backend_compiles() as compiled:
        built = build(1)
    assert compiled == []
    with jax.disable_jit():
        eager = build(1)
    assert len(_leaves(built)) == len(_leaves(eager)) > 0
    for a, b in zip(_leaves(built), _leaves(eager)):
        assert a.weak_type == b.weak_type
        _same_bits(a, b)
    with backend_compiles() as compiled:
        build(2)
    assert compiled == []


@pytest.mark.parametrize(
    "build",
    [
        lambda d: problems.quadratic(np.linspace(1.0, 2.0, d), rotate=True, seed=3),
        lambda d: problems.quadratic(np.linspace(1.0, 2.0, d)),
        lambda d: problems.logistic_regression(5 * d + 2, d, seed=3),
    ],
    ids=["rotated quadratic", "quadratic", "logistic regression"],
)
def test_a_new_shape_compiles_one_program(build):
    """A size no other test builds lowers one program (eagerly: one per operation of a new
    shape, 16, 5 and 6). Counted as lowerings after a first build of another new size, so
    that neither the programs a size does not change (compiled by whichever test this worker
    ran first) nor JAX's persistent cache (a hit compiles nothing) decide the count."""
    build(7)
    with backend_compiles("jaxpr_to_mlir_module") as lowered:
        build(9)
    assert len(lowered) == 1
