r"""Fast regime: the optimizer state relaxes in $O(1)$ steps (fixed $\beta$ as $h \to 0$) onto
a slow manifold $s = M_h(\theta) = M_0(\theta) + h M_1(\theta) + \dots$, on which $\theta$
follows a parameter-only modified flow.

Invariance of the manifold under one step $(\theta, s) \mapsto (\psi_h(\theta), S_h(\theta, s))$
reads $M_h(\psi_h(\theta)) = S_h(\theta, M_h(\theta))$. With $A = \partial_s S_0$ (diagonal for
optax's traces and moment EMAs: $A = \beta$; block-triangular when a leaf reads another, as
AdaBelief's $v$ reads the new $m$: `_coupled_solve`), the $h^j$ coefficient gives
$(I - A)M_j = -r_j$, where $r_j$ is the $h^j$ coefficient of the residual of the truncated
manifold $M^{(j-1)}_h = \sum_{i<j} h^i M_i$ — all by nested `jvp` at a point. For a trace,
$M_0 = \nabla L/(1-\beta)$ and $M_1$ is the lag of the average,
$-\beta/(1-\beta)^2\,\tfrac{d}{dt}\nabla L$ (in the trace's units). The reduced map
$\psi_h(\theta) = \theta + u_h(\theta, M_h(\theta))$ is near identity and expanded as in the
slow regime. Integer counters are saturated (`SATURATED_COUNT`): optax's bias corrections are
an initial-layer effect, 1 on the slow manifold.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .step import (
    OptimizerSpec,
    passthrough,
    raw_step,
    saturate_counters,
    settle_flags,
    split_state,
)
from .taylor import taylor_coefficients


def template(spec: OptimizerSpec, params):
    """`(zero floating state, saturated rest)` of the optimizer's state for `params`: counters
    saturated, first-step flags as after a few steps (`settle_flags`), constants the step
    passes through (`passthrough`: muon's Newton-Schulz coefficients) kept with the rest."""
    tau0 = jnp.zeros((), float)
    state = settle_flags(spec, tau0, params, spec.transform(tau0).init(params))
    floats, rest = split_state(state, passthrough(spec, params))
    return jax.tree.map(jnp.zeros_like, floats), saturate_counters(rest)


def fast_step(spec: OptimizerSpec, problem, tau, params, m, rest):
    """One step from `params` with floating state `m`: `(params', m')`."""
    new_params, new_state = raw_step(spec, tau, params, eqx.combine(m, rest), problem)
    return new_params, split_state(new_state, passthrough(spec, params))[0]


def contraction(spec: OptimizerSpec, problem, params):
    r"""The diagonal of $A = \partial_s S_0(\theta, \cdot)$, as a pytree like the state."""
    zero, rest = template(spec, params)
    ones = jax.tree.map(jnp.ones_like, zero)
    tau0 = jnp.zeros((), float)
    return jax.jvp(lambda m: fast_step(spec, problem, tau0, params, m, rest)[1], (zero,), (ones,))[
        1
    ]


def _unit(zero, i: int):
    """Ones on the `i`-th leaf of `zero`, zeros on the others."""
    leaves, treedef = jax.tree.flatten(zero)
    ones = [jnp.ones_like(x) if j == i else jnp.zeros_like(x) for j, x in enumerate(leaves)]
    return jax.tree.unflatten(treedef, ones)


def leaf_blocks(
    spec: OptimizerSpec, problem, params, state, rest=None, *, linearize: bool = False
) -> list[list]:
    r"""`blocks[i][j]` $= \partial_{s_i} S_{0,j}\,\mathbf 1$ at `state`: how leaf $j$'s update
    at $h = 0$ moves with leaf $i$ (flat leaf lists). The diagonal blocks are the leaves' own
    contractions; an off-diagonal one is a coupling (AdaBelief's $v$ reads the new $m$).
    `rest`: the state's other leaves (default: `template`'s, counters saturated).
    `linearize`: one `jax.linearize` of the step for all leaves, where each leaf's `jvp`
    traces the whole step (a network's gradient) again: for the construction checks, whose
    programs this shrinks; the flow's own coefficients keep the `jvp`s their numbers are of."""
    zero, saturated = template(spec, params)
    rest = saturated if rest is None else rest
    tau0 = jnp.zeros((), float)

    def S(m):
        return fast_step(spec, problem, tau0, params, m, rest)[1]

    if linearize:
        derivative = jax.linearize(S, state)[1]
    else:

        def derivative(tangent):
            return jax.jvp(S, (state,), (tangent,))[1]

    n = len(jax.tree.leaves(zero))
    return [jax.tree.leaves(derivative(_unit(zero, i))) for i in range(n)]


def own_contraction(spec: OptimizerSpec, problem, params):
    r"""$a$ with $a_i$ the own-leaf coefficient $\partial_{s_i}S_{0,i}\,\mathbf 1$ (the
    diagonal of $A$ when each leaf's update is coordinate-wise in itself)."""
    zero, _ = template(spec, params)
    blocks = leaf_blocks(spec, problem, params, zero)
    return jax.tree.unflatten(jax.tree.structure(zero), [b[i] for i, b in enumerate(blocks)])


def _coupled_solve(spec: OptimizerSpec, problem, params, a, r, x, m0):
    r"""Refine $x = r/(a - 1)$ by `spec.sweeps - 1` Jacobi sweeps with the exact own-leaf
    diagonal, exact for an acyclic coupling (each sweep settles one more level of the chain):
    for $M_0$ (`m0` is None) the fixed point $M_0 = S_0(\theta, M_0)$,
    $x \leftarrow (S_0(\theta, x) - a\odot x)/(1 - a)$; for $j \ge 1$ the linear system
    $(I - A)M_j = -r_j$ with $A = \partial_s S_0$ at $M_0$,
    $x \leftarrow (r_j - (A - \mathrm{diag}\,a)x)/(a - 1)$."""
    _, rest = template(spec, params)
    tau0 = jnp.zeros((), float)

    def S(m):
        return fast_step(spec, problem, tau0, params, m, rest)[1]

    for _ in range(spec.sweeps - 1):
        if m0 is None:
            x = jax.tree.map(lambda s, xi, ai: (s - ai * xi) / (1 - ai), S(x), x, a)
        else:
            Ax = jax.jvp(S, (m0,), (x,))[1]
            x = jax.tree.map(lambda ri, v, xi, ai: (ri - (v - ai * xi)) / (ai - 1), r, Ax, x, a)
    return x


def series(values, tau, zero):
    r"""$\sum_j \tau^j M_j$ for `values` $= [M_0, \dots]$ (`zero` when empty)."""
    out = zero
    for j, Mj in enumerate(values):
        # τ^j in each leaf's dtype: a float32 state with the expansion's float64 τ raised a
        # strict-promotion error (a float32 network's heavy ball at order 2).
        out = jax.tree.map(lambda o, m, j=j: o + (tau**j).astype(m.dtype) * m, out, Mj)
    return out


def manifold_terms(spec: OptimizerSpec, problem, params, count: int) -> list:
    r"""$[M_0(\theta), \dots, M_{c-1}(\theta)]$ ($c$ = `count`) at `params`: $M_j$ from the
    $\tau^j$ coefficient of the residual of the $j$-term manifold (evaluated at the moved point
    by the same construction, one term shorter)."""
    zero, rest = template(spec, params)
    if count == 0:
        return []
    a = (
        contraction(spec, problem, params)
        if spec.sweeps == 1
        else own_contraction(spec, problem, params)
    )
    values: list = []
    for j in range(count):

        def moved(tau, prev=tuple(values)):
            return fast_step(spec, problem, tau, params, series(prev, tau, zero), rest)

        # r_j = Σ_{i<j} [τ^{j-i}] M_i(θ(τ)) - [τ^j] s'(τ), term by term: differentiating the
        # whole series τ^i M_i(θ(τ)) j times would also form the j-th derivative of M_i, which
        # the factor τ^i then zeroes (XLA cannot drop it).
        r = jax.tree.map(jnp.negative, taylor_coefficients(lambda t: moved(t)[1], j)[j])
        for i in range(j):
            k = j - i
            c = taylor_coefficients(
                lambda t, i=i: manifold_terms(spec, problem, moved(t)[0], i + 1)[i], k
            )[k]
            r = optax.tree.add(r, c)
        if spec.lag and j > 0:
            r = optax.tree.add(r, _lag_term(spec, problem, params, a, r, rest))
        x = jax.tree.map(lambda r, ai: r / (ai - 1), r, a)
        if spec.sweeps > 1:
            x = _coupled_solve(spec, problem, params, a, r, x, values[0] if j else None)
        values.append(x)
    return values


def _lag_term(spec: OptimizerSpec, problem, params, a, r, rest):
    r"""The part of $r_j$ that a lagged state (`spec.lag`) adds through $M_j$ itself:
    $M_0'(\theta)\,\delta$ with $\delta = \partial_s u_0\, M_j$, the move of θ that the new term
    makes at $\tau = 0$. Only leaves with $M_0 \equiv 0$ move θ at $\tau = 0$, and their $M_j$
    (so $\delta$) is already exact from $r$ alone; the other leaves' $M_j$ gain this term."""
    tau0 = jnp.zeros((), float)
    zero, _ = template(spec, params)
    mj = jax.tree.map(lambda r, ai: r / (ai - 1), r, a)
    delta = jax.jvp(lambda m: fast_step(spec, problem, tau0, params, m, rest)[0], (zero,), (mj,))[1]
    return jax.jvp(lambda p: manifold_terms(spec, problem, p, 1)[0], (params,), (delta,))[1]


def manifold(spec: OptimizerSpec, problem, tau, params, count: int):
    """The floating optimizer state on the truncated slow manifold at `tau`."""
    zero, _ = template(spec, params)
    return series(manifold_terms(spec, problem, params, count), tau, zero)


def fast_coefficients(spec: OptimizerSpec, problem):
    r"""`coefficients(θ, n)` $= [d_1, \dots, d_n]$ of the reduced map $\psi_\tau(\theta)$ at
    `params`, jointly (the manifold to $O(\tau^{n-1})$, all that $d_n$ sees; to $O(\tau^n)$
    for a state that moves θ at $\tau = 0$, `spec.lag`)."""

    def coefficients(params, n):
        zero, rest = template(spec, params)
        ms = manifold_terms(spec, problem, params, n + spec.lag)

        def psi(tau):
            return fast_step(spec, problem, tau, params, series(ms, tau, zero), rest)[0]

        return taylor_coefficients(psi, n)[1:]

    return coefficients
