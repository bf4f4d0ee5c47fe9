"""Building Rosenbrock compiles nothing (its constants are made on the host), and its arrays
are those of the eager operations, bit for bit."""

import jax.numpy as jnp
import numpy as np

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
