r"""Slow regime: every optimizer-state leaf is near identity ($\Phi_0 = \mathrm{id}$, e.g. EMA
decays $\beta = 1 - a h$), so the expansion is an ODE on the whole state $y = (\theta, z)$,
with $z$ the optax state (or `state_map`'s coordinates of it)."""

from typing import NamedTuple

import optax

from .._custom_types import Params
from .step import OptimizerSpec, raw_step
from .taylor import taylor_coefficients


class ModifiedState(NamedTuple):
    """State of a slow-regime automatic flow: the parameters and the optimizer state $z$."""

    params: Params
    state: object


def slow_step(spec: OptimizerSpec, problem, tau, y: ModifiedState) -> ModifiedState:
    r"""$\Phi_\tau(y)$ in the coordinates $z$ of `spec.state_map`."""
    forward, inverse = spec.state_map or (None, None)
    opt_state = y.state if inverse is None else inverse(y.state, tau)
    params, new = raw_step(spec, tau, y.params, opt_state, problem)
    return ModifiedState(params, new if forward is None else forward(new, tau))


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
