r"""Taylor coefficients in the step size by nested forward-mode autodiff.

For a map $h \mapsto \Phi_h$ (any pytree-valued function of a scalar $h$), the coefficients
$c_j = \frac{1}{j!}\partial_h^j\Phi_h\big|_{h=0}$, $j = 0, \dots, p$, come from $p$ nested
`jax.jvp`s in the scalar $h$: each level differentiates the list of lower derivatives once more,
so every order is exact (no finite differences) and the cost is $\le 2^p$ evaluations of $\Phi$.
"""

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def derivatives(fn: Callable[[Any], Any], h, order: int) -> list:
    r"""$[\Phi(h), \Phi'(h), \dots, \Phi^{(p)}(h)]$ for a scalar `h` ($p$ = `order`)."""
    if order == 0:
        return [fn(h)]

    def lower(s):
        return derivatives(fn, s, order - 1)

    primal, tangent = jax.jvp(lower, (h,), (jnp.ones_like(h),))
    return [*primal, tangent[-1]]


def taylor_coefficients(fn: Callable[[Any], Any], order: int, dtype=float) -> list:
    r"""$[c_0, c_1, \dots, c_p]$ with $\Phi_h = \sum_j c_j h^j + O(h^{p+1})$ at $h = 0$."""
    ds = derivatives(fn, jnp.zeros((), dtype), order)

    def coefficient(x, c0, j):
        # An integer or boolean leaf (a counter, optax.zero_nans' flag) is piecewise constant
        # in h: its tangent is float0, its coefficients zero.
        if x.dtype == jax.dtypes.float0:
            return jnp.zeros_like(c0)
        return x / math.factorial(j)

    return [ds[0]] + [
        jax.tree.map(lambda x, c0, j=j: coefficient(x, c0, j), d, ds[0])
        for j, d in enumerate(ds[1:], 1)
    ]
