"""One tolerance helper and a trace counter shared by the tests."""

import jax
import numpy as np


def tree_allclose(x, y, *, rtol=0.0, atol=0.0) -> bool:
    sx, sy = jax.tree.structure(x), jax.tree.structure(y)
    if sx != sy:
        return False
    return all(
        np.shape(a) == np.shape(b)
        and np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)
        for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y))
    )


def tree_max_abs_diff(x, y) -> float:
    return max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y))
    )


class TraceCounter:
    """Wrap a loss to count how often JAX traces it (a new trace = a new compilation)."""

    def __init__(self, fn):
        self.fn = fn
        self.count = 0

    def __call__(self, *args):
        self.count += 1
        return self.fn(*args)
