"""`AbstractFlow`: the interface every continuous-time optimizer model implements."""

import abc

import equinox as eqx
import jax
import numpy as np

from .._custom_types import Params, Scalar, ScalarLike, State
from .._discretization import Discretization
from .._problem import Problem
from .._transforms.adaptive import tree_vdot
from .._validation import is_traced


class AbstractFlow(eqx.Module):
    r"""A continuous-time model $dy = f(t, y; L)\,dt\ [+\ g(t, y; L)\,dW]$ of an optimizer, with
    state $y$ (the parameters, possibly with velocities or moment estimates).

    Subclasses are final `eqx.Module`s implementing:

    - `init(params) -> state`: the state at $t_0$ for initial parameters.
    - `vector_field(t, state, problem) -> dstate`: the drift $f$.
    - `params(state) -> params`: the parameter part of a state.
    - `discretize(step_size) -> Discretization`: the optax optimizer this flow models, with the
      discrete↔continuous map of hyper-parameters and the time step $\Delta t$ (the flow's
      default discretization map).

    and optionally (the defaults below say "nothing declared"):

    - `diffusion(t, state, problem)`: the noise coefficient $g$ of an Itô SDE flow
      (`None`: an ODE). Stochastic flows (Langevin, Kramers, SGD noise) declare it; `solve`
      integrates the drift, `dynopt.sde.simulate` and the density routes the SDE.
    - `loss_rate(t, state, problem)`: $\frac{d}{dt}L(\theta(t))$ predicted along the flow
      (its Lyapunov identity). Default: the chain rule $\langle\nabla L, \dot\theta\rangle$ of the
      vector field; flows with a closed-form identity (e.g. $-\|\nabla L\|^2$) override it.
    - `closed_form(problem)`: `t -> state`, the exact solution from `init(problem.params0)` when
      one is known for this problem (`None` otherwise).
    - `from_hyperparams(*optax_hyperparams) -> (flow, dt)` (a class method): the inverse of the
      default map (`dynopt.maps`), e.g. `HeavyBall.from_hyperparams(learning_rate, momentum)`.
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

    @classmethod
    def from_hyperparams(cls, *args, **kwargs):
        """The inverse of the default discretization map: `(flow, dt)` such that
        `flow.discretize(dt)` is the optax optimizer with these hyper-parameters."""
        del args, kwargs
        raise NotImplementedError(f"{cls.__name__} declares no inverse map.")

    def diffusion(self, t: ScalarLike, state: State, problem: Problem):
        """The diffusion coefficient of an SDE flow; `None` for an ODE (the default)."""
        del t, state, problem
        return None

    def loss_rate(self, t: ScalarLike, state: State, problem: Problem) -> Scalar:
        r"""$\frac{d}{dt}L(\theta(t)) = \langle\nabla L(\theta), \dot\theta\rangle$ at `state`."""
        grad = problem.grad(self.params(state))
        dtheta = self.params(self.vector_field(t, state, problem))
        # (In the widest dtype: optax's refuses a mixed float32/float64 tree.)
        return tree_vdot(grad, dtheta)

    def closed_form(self, problem: Problem):
        """`t -> state`, the exact solution on `problem` when known; `None` (the default)."""
        del problem
        return None


class AbstractMappedFlow(AbstractFlow):
    r"""A flow whose `discretize(h)` is its default discretization map, `default_map()(self, h)`
    (`default_map`: a `dynopt.maps` class, e.g. `GradientDescent` for `GradientFlow`)."""

    default_map: eqx.AbstractClassVar[type]

    def discretize(self, step_size: ScalarLike) -> Discretization:
        return self.default_map()(self, step_size)


def is_stochastic(flow: AbstractFlow, problem: Problem) -> bool:
    """Whether `flow` declares a diffusion on `problem` (checked by shape, nothing is run)."""
    state = jax.eval_shape(flow.init, problem.params0)
    return jax.eval_shape(lambda s: flow.diffusion(0.0, s, problem), state) is not None


def check_own_step(step_size, own, own_name: str, follows: str, advice: str) -> None:
    r"""`ValueError` unless a concrete `step_size` equals the flow's own step `own` (its field
    `own_name`) to a relative $10^{-6}$ (so a float32 copy passes): a flow that describes the
    discrete run at one step only (a modified or central flow of step $h$) discretized at
    another step follows another flow, `follows`; `advice` says what to write instead. Traced
    values are not checked; values that are not numbers, or do not broadcast, are left to the
    map's own validation."""
    if is_traced((step_size, own)):
        return
    ours, theirs = np.asarray(own), np.asarray(step_size)
    try:
        same = np.all(np.isclose(theirs, ours, rtol=1e-6, atol=0.0))
    except (TypeError, ValueError):
        return
    if not same:
        raise ValueError(
            f"step_size must equal the flow's {own_name} {ours} ({follows}), got {theirs}. {advice}"
        )
