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
Every term is a directional derivative: `jax.jvp` only, no Jacobian is formed.
"""

import math
from collections.abc import Callable
from typing import Any

import jax
import optax


Field = Callable[[Any], Any]


def compositions(n: int, k: int) -> list[tuple[int, ...]]:
    """The ordered ways of writing `n` as a sum of `k` positive integers."""
    if k == 1:
        return [(n,)]
    return [(i, *rest) for i in range(1, n - k + 2) for rest in compositions(n - i, k - 1)]


def lie(fields: tuple[Field, ...]) -> Field:
    r"""$y \mapsto (L_{a_1}\cdots L_{a_{k-1}} a_k)(y)$ for `fields` $= (a_1, \dots, a_k)$."""
    inner = fields[-1]
    for a in reversed(fields[:-1]):
        inner = _lie_once(a, inner)
    return inner


def _lie_once(a: Field, phi: Field) -> Field:
    def out(y):
        return jax.jvp(phi, (y,), (a(y),))[1]

    return out


def modified_fields(coefficients: list[Field]) -> list[Field]:
    r"""$[f_1, \dots, f_p]$ from the step's Taylor coefficients $[d_1, \dots, d_p]$ (functions of
    the state)."""
    fs: list[Field] = []
    for j, d in enumerate(coefficients, start=1):
        terms = [
            (1.0 / math.factorial(k), lie(tuple(fs[i - 1] for i in comp)))
            for k in range(2, j + 1)
            for comp in compositions(j, k)
        ]
        fs.append(_subtract(d, terms))
    return fs


def _subtract(d: Field, terms: list[tuple[float, Field]]) -> Field:
    def f(y):
        out = d(y)
        for c, term in terms:
            out = optax.tree.add_scale(out, -c, term(y))
        return out

    return f


def combine(fields: list[Field], step: Any) -> Field:
    r"""$y \mapsto \sum_j h^{j-1} f_j(y)$: the truncated modified field at step $h$."""

    def f(y):
        out = fields[0](y)
        for j, fj in enumerate(fields[1:], start=1):
            out = optax.tree.add_scale(out, step**j, fj(y))
        return out

    return f
