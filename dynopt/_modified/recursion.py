r"""The modified-field recursion of backward error analysis (Hairer, Lubich, Wanner, *Geometric
Numerical Integration*, ch. IX).

If one step is $\Phi_h(y) = y + \sum_{j\ge1} h^j d_j(y)$, the field
$\tilde f = f_1 + h f_2 + h^2 f_3 + \dots$ whose exact time-$h$ flow equals $\Phi_h$ (to the
truncation order) follows by matching powers of $h$ in the Lie series
$\varphi_h = \sum_k \frac{h^k}{k!}L_{\tilde f}^k\,\mathrm{id}$, with $L_a\phi = \phi'\,a$:

$$f_j = d_j - \sum_{k=2}^{j}\frac{1}{k!}\sum_{i_1+\dots+i_k = j}
        L_{f_{i_1}}\cdots L_{f_{i_{k-1}}} f_{i_k},$$

e.g. $f_2 = d_2 - \tfrac12 f_1'f_1$ and
$f_3 = d_3 - \tfrac16(f_1''(f_1,f_1) + f_1'f_1'f_1) - \tfrac12(f_1'f_2 + f_2'f_1)$.

Every term is a directional derivative, and all of them are computed jointly at one point: the
*tower* $T_n(y)$ holds every $L_{f_{i_1}}\cdots L_{f_{i_{k-1}}}f_{i_k}(y)$ with
$i_1 + \dots + i_k \le n$ (and $d_1, \dots, d_n$). One `jax.linearize` of $T_{n-1}$ at $y$,
applied to the directions $f_1, \dots, f_{n-1}$, gives every new term of $T_n$: the primal
computation (gradients, lower fields, lower Lie terms) is traced once, not once per term, and
no Jacobian is formed.

Orders 2 and 3 use the same recursion expanded by hand into the fewest directional derivatives
(`_low_order`): with $f_1 = d_1$, $f_2 = d_2 - \tfrac12 f_1'f_1$ and

$$f_3 = d_3 - \tfrac12\big(d_2'f_1 + f_1'd_2\big) + \tfrac1{12}f_1''(f_1, f_1)
        + \tfrac13 f_1'f_1'f_1,$$

(substitute $f_2$ into $f_2'f_1 = d_2'f_1 - \tfrac12(f_1''(f_1,f_1) + f_1'f_1'f_1)$ and
$f_1'f_2 = f_1'd_2 - \tfrac12 f_1'f_1'f_1$), $f_3$ needs one second-order derivative along
the single direction $f_1$ (giving $f_1'f_1$, $f_1''(f_1,f_1)$ and $d_2'f_1$ at once) and one
first-order derivative of $f_1$ along the single direction $\tfrac13 f_1'f_1 - \tfrac12 d_2$
(linear in it: $f_1'f_1'f_1$ and $f_1'd_2$ at once). For gradient descent that is a gradient,
one Taylor pass of order 2 along $\nabla L$ and one Hessian-vector product, where the tower
differentiates $f_1'f_1$ along $f_1$ and $f_1$ along $f_2$ separately.
"""

import functools as ft
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax


Field = Callable[[Any], Any]
# `coefficients(y, n) -> [d_1(y), ..., d_n(y)]`: the step's Taylor coefficients at a point.
Coefficients = Callable[[Any, int], list]


def _tower(coefficients: Coefficients, y, n: int) -> dict:
    """`{(i_1, ..., i_k): L_{f_{i_1}}...L_{f_{i_{k-1}}} f_{i_k}(y)}` for every sequence with sum
    `<= n` (`(j,)` is $f_j$)."""
    dn = coefficients(y, n)[n - 1]
    if n == 1:
        return {(1,): dn}
    tower, lin = jax.linearize(lambda z: _tower(coefficients, z, n - 1), y)
    tower = dict(tower)
    for i in range(1, n):
        tangent = lin(tower[(i,)])
        tower.update({(i, *seq): v for seq, v in tangent.items() if sum(seq) == n - i})
    fn = dn
    for seq, value in tower.items():
        if len(seq) > 1 and sum(seq) == n:
            fn = optax.tree.add_scale(fn, -1.0 / math.factorial(len(seq)), value)
    tower[(n,)] = fn
    return tower


def _low_order(coefficients: Coefficients, y, order: int) -> list:
    r"""$[f_1, \dots, f_p]$ at $y$ for $p \le 3$ by the expanded formulas (module docstring)."""
    ds = coefficients(y, order)
    f1 = ds[0]
    if order == 1:
        return [f1]

    def lower(z):
        return coefficients(z, order - 1)

    if order == 2:
        f1f1 = jax.jvp(lambda z: lower(z)[0], (y,), (f1,))[1]
        return [f1, optax.tree.add_scale(ds[1], -0.5, f1f1)]
    d2, d3 = ds[1], ds[2]

    def along(z):
        # (d1(z), d2(z)) and their derivatives along the fixed direction f1(y).
        return jax.jvp(lower, (z,), (f1,))[1]

    (f1f1, d2f1), (f1ppf1f1, _) = jax.jvp(along, (y,), (f1,))
    f2 = optax.tree.add_scale(d2, -0.5, f1f1)
    v = optax.tree.add_scale(optax.tree.scale(1.0 / 3.0, f1f1), -0.5, d2)
    f1v = jax.jvp(lambda z: lower(z)[0], (y,), (v,))[1]  # (1/3) f1'f1'f1 - (1/2) f1'd2
    f3 = optax.tree.add_scale(d3, -0.5, d2f1)
    f3 = optax.tree.add_scale(optax.tree.add(f3, f1v), 1.0 / 12.0, f1ppf1f1)
    return [f1, f2, f3]


def modified_values(coefficients: Coefficients, y, order: int) -> list:
    r"""$[f_1(y), \dots, f_p(y)]$ ($p$ = `order`) from `coefficients(y, n)`
    $= [d_1(y), \dots, d_n(y)]$, the step's Taylor coefficients at $y$: orders $\le 3$ by the
    expanded formulas, higher orders by the tower. Integer and boolean leaves of $y$ (a flag
    such as optax.zero_nans') are constants of the expansion: fields 0, no tangents."""
    z, rest = eqx.partition(y, eqx.is_inexact_array)
    if jax.tree.leaves(rest):
        inexact = coefficients

        def coefficients(z, n):
            return [eqx.filter(d, eqx.is_inexact_array) for d in inexact(eqx.combine(z, rest), n)]

    if order <= 3:
        values = _low_order(coefficients, z, order)
    else:
        tower = _tower(coefficients, z, order)
        values = [tower[(j,)] for j in range(1, order + 1)]
    zeros = jax.tree.map(jnp.zeros_like, rest)
    return [eqx.combine(v, zeros) for v in values]


def combine_values(values: list, step: Any):
    r"""$\sum_j h^{j-1} f_j$: the truncated modified field at step $h$, in each leaf's dtype
    ($h^j$ cast to it: a float32 state with a float64 step size keeps float32, also under
    strict promotion; integer leaves, whose fields are 0, are left as they are)."""

    def add(a, b, s):
        if not eqx.is_inexact_array(a):
            return a
        return a + jnp.asarray(s, a.dtype) * b

    out = values[0]
    for j, fj in enumerate(values[1:], start=1):
        out = jax.tree.map(ft.partial(add, s=step**j), out, fj)
    return out
