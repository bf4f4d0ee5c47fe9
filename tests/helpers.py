"""Test helpers: a trace counter, and thin aliases over the stack's tree comparisons."""

import equinox as eqx
import jax
import numpy as np


def tree_allclose(x, y, *, rtol=0.0, atol=0.0) -> bool:
    """Alias of `eqx.tree_equal(x, y, rtol=rtol, atol=atol)` (same structure, shapes and dtypes;
    values equal, or close when a tolerance is given), as a Python bool. New tests call
    `eqx.tree_equal` directly."""
    return bool(eqx.tree_equal(x, y, rtol=rtol, atol=atol))


def tree_max_abs_diff(x, y) -> float:
    """$\\max |x - y|$ over corresponding leaves, in NumPy (any dtypes, any containers)."""
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
