r"""Slow regime: every optimizer-state leaf is near identity ($\Phi_0 = \mathrm{id}$, e.g. EMA
decays $\beta = 1 - a h$), so the expansion is an ODE on the whole state $y = (\theta, z)$,
with $z$ the optax state (or `state_map`'s coordinates of it)."""

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import optax

from .._custom_types import Params
from .counters import advance, bias_products, CountedState
from .step import OptimizerSpec, raw_step, split_state, zero_update
from .taylor import taylor_coefficients


class ModifiedState(NamedTuple):
    """State of a slow-regime automatic flow: the parameters and the optimizer state $z$."""

    params: Params
    state: object


def slow_step(spec: OptimizerSpec, problem, tau, y: ModifiedState) -> ModifiedState:
    r"""$\Phi_\tau(y)$ in the coordinates $z$ of `spec.state_map` (with bias corrections as
    products, `dynopt._modified.counters`, when `spec.products`)."""
    if spec.products:
        return _counted_step(spec, problem, tau, y)
    forward, inverse = spec.state_map or (None, None)
    opt_state = y.state if inverse is None else inverse(y.state, tau)
    params, new = raw_step(spec, tau, y.params, opt_state, problem)
    return ModifiedState(params, new if forward is None else forward(new, tau))


def _counted_step(spec: OptimizerSpec, problem, tau, y: ModifiedState) -> ModifiedState:
    # The counters stay at their initial values: the products carry the time.
    rest = split_state(spec.transform(tau).init(y.params))[1]
    floats, products = y.state
    with bias_products(products) as tape:
        params, new = raw_step(spec, tau, y.params, eqx.combine(floats, rest), problem)
    if len(tape.decays) != len(products):
        raise ValueError(
            f"optimizer: a step calls optax's bias correction {len(tape.decays)} times, "
            f"{len(products)} when the flow was built."
        )
    return ModifiedState(params, CountedState(split_state(new)[0], advance(tape, products)))


def counted_init(spec: OptimizerSpec, tau, params, opt_state) -> CountedState:
    r"""The counted state at optax's `opt_state`: each product $c_i = b_i^{j_i - 1}$ for the
    count $j_i$ its correction reads at the next step (one update traced to read them off)."""
    with bias_products() as tape:
        zero_update(spec, tau, params, opt_state)
    # In JAX's default float (strict-clean; float32 without x64, where requesting float64
    # warns and truncates).
    dtype = jnp.result_type(float)
    products = tuple(
        jnp.asarray(d, dtype) ** (jnp.asarray(j, dtype) - 1)
        for d, j in zip(tape.decays, tape.counts)
    )
    return CountedState(split_state(opt_state)[0], products)


def slow_coefficients(spec: OptimizerSpec, problem):
    r"""`coefficients(y, n)` $= [d_1(y), \dots, d_n(y)]$: the Taylor coefficients of
    $\Phi_\tau(y)$ at $\tau = 0$, jointly (its constant term is $y$: checked when the flow is
    built)."""

    def coefficients(y, n):
        return taylor_coefficients(lambda tau: slow_step(spec, problem, tau, y), n)[1:]

    return coefficients


def zero_time_change(spec: OptimizerSpec, problem, y: ModifiedState):
    r"""$\Phi_0(y) - y$ (zero in the slow regime)."""
    return optax.tree.sub(slow_step(spec, problem, 0.0, y), y)
