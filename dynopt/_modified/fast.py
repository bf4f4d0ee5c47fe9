r"""Fast regime: the optimizer state relaxes in $O(1)$ steps (fixed $\beta$ as $h \to 0$) onto
a slow manifold $s = M_h(\theta) = M_0(\theta) + h M_1(\theta) + \dots$, on which $\theta$
follows a parameter-only modified flow.

Invariance of the manifold under one step $(\theta, s) \mapsto (\psi_h(\theta), S_h(\theta, s))$
reads $M_h(\psi_h(\theta)) = S_h(\theta, M_h(\theta))$. With $A = \partial_s S_0$ (diagonal for
optax's traces and moment EMAs: $A = \beta$), the $h^j$ coefficient gives
$(I - A)M_j = -r_j$, where $r_j$ is the $h^j$ coefficient of the residual of the truncated
manifold $M^{(j-1)}_h = \sum_{i<j} h^i M_i$ — all by nested `jvp` at a point. For a trace,
$M_0 = \nabla L/(1-\beta)$ and $M_1$ is the lag of the average,
$-\beta/(1-\beta)^2\,\tfrac{d}{dt}\nabla L$ (in the trace's units). The reduced map
$\psi_h(\theta) = \theta + u_h(\theta, M_h(\theta))$ is near identity and expanded as in the
slow regime. Integer counters are saturated (`SATURATED_COUNT`): optax's bias corrections are
an initial-layer effect, 1 on the slow manifold.
"""

import functools as ft

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .step import OptimizerSpec, raw_step, saturate_counters, split_state
from .taylor import taylor_coefficients


def template(spec: OptimizerSpec, params):
    """`(zero floating state, saturated rest)` of the optimizer's state for `params`."""
    floats, rest = split_state(spec.transform(jnp.zeros((), jnp.float64)).init(params))
    return jax.tree.map(jnp.zeros_like, floats), saturate_counters(rest)


def fast_step(spec: OptimizerSpec, problem, tau, params, m, rest):
    """One step from `params` with floating state `m`: `(params', m')`."""
    new_params, new_state = raw_step(spec, tau, params, eqx.combine(m, rest), problem)
    return new_params, split_state(new_state)[0]


def contraction(spec: OptimizerSpec, problem, params):
    r"""The diagonal of $A = \partial_s S_0(\theta, \cdot)$, as a pytree like the state."""
    zero, rest = template(spec, params)
    ones = jax.tree.map(jnp.ones_like, zero)
    tau0 = jnp.zeros((), jnp.float64)
    return jax.jvp(lambda m: fast_step(spec, problem, tau0, params, m, rest)[1], (zero,), (ones,))[
        1
    ]


def series(terms, tau, params, zero):
    r"""$\sum_j \tau^j M_j(\theta)$ (`zero` when there are no terms)."""
    out = zero
    for j, Mj in enumerate(terms):
        out = optax.tree.add_scale(out, tau**j, Mj(params))
    return out


def manifold_terms(spec: OptimizerSpec, problem, count: int):
    r"""$[M_0, \dots, M_{c-1}]$ ($c$ = `count`), functions of $\theta$."""
    terms: list = []
    for j in range(count):
        terms.append(_next_term(spec, problem, list(terms), j))
    return terms


def _next_term(spec, problem, prev, j):
    def residual(params):
        zero, rest = template(spec, params)

        def R(tau):
            m = series(prev, tau, params, zero)
            new_params, new_m = fast_step(spec, problem, tau, params, m, rest)
            return optax.tree.sub(series(prev, tau, new_params, zero), new_m)

        return taylor_coefficients(R, j)[j]

    def Mj(params):
        a = contraction(spec, problem, params)
        return jax.tree.map(lambda r, ai: -r / (1 - ai), residual(params), a)

    return Mj


def manifold(spec: OptimizerSpec, problem, tau, params, count: int):
    """The floating optimizer state on the truncated slow manifold at `tau`."""
    zero, _ = template(spec, params)
    return series(manifold_terms(spec, problem, count), tau, params, zero)


def fast_coefficients(spec: OptimizerSpec, problem, order: int):
    r"""$[d_1, \dots, d_p]$ of the reduced map $\psi_\tau(\theta)$, functions of $\theta$ (the
    manifold is kept to $O(\tau^{p-1})$, all that $d_p$ sees)."""
    terms = manifold_terms(spec, problem, order)

    def psi(tau, params, j):
        zero, rest = template(spec, params)
        m = series(terms[:j], tau, params, zero)
        return fast_step(spec, problem, tau, params, m, rest)[0]

    def coefficient(params, j):
        return taylor_coefficients(lambda tau: psi(tau, params, j), j)[j]

    return [ft.partial(coefficient, j=j) for j in range(1, order + 1)]
