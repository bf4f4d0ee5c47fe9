"""`AbstractFlow`: the interface every continuous-time optimizer model implements."""

import abc

import equinox as eqx

from .._custom_types import Params, ScalarLike, State
from .._discretization import Discretization
from .._problem import Problem


class AbstractFlow(eqx.Module):
    r"""A continuous-time model $\dot y = f(t, y; L)$ of an optimizer, with state $y$
    (the parameters, possibly with velocities or moment estimates).

    Subclasses are final `eqx.Module`s implementing:

    - `init(params) -> state`: the state at $t_0$ for initial parameters.
    - `vector_field(t, state, problem) -> dstate`: the right-hand side $f$.
    - `params(state) -> params`: the parameter part of a state.
    - `discretize(step_size) -> Discretization`: the optax optimizer this flow models, with the
      discrete↔continuous map of hyper-parameters and the time step $\Delta t$.
    """

    @abc.abstractmethod
    def init(self, params: Params) -> State:
        raise NotImplementedError

    @abc.abstractmethod
    def vector_field(self, t: ScalarLike, state: State, problem: Problem) -> State:
        raise NotImplementedError

    @abc.abstractmethod
    def params(self, state: State) -> Params:
        raise NotImplementedError

    @abc.abstractmethod
    def discretize(self, step_size: ScalarLike) -> Discretization:
        raise NotImplementedError
