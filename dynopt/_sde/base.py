r"""`AbstractSDE`: a flow with noise, $dY = f(t, Y)\,dt + g(t, Y)\,dW$ (Itô).

**The constant convention (used everywhere in `dynopt.sde`).** The overdamped SDE
$d\theta = -\nabla L(\theta)\,dt + \sigma\,dW$ has the stationary (Gibbs) law
$$p_\infty(\theta) \propto \exp\!\big(-2L(\theta)/\sigma^2\big) = \exp\!\big(-L(\theta)/T\big),
\qquad T = \sigma^2/2 .$$
Post 1's eq. (9), $\exp(-L/\sigma^2)$, drops the 2. `Langevin(temperature=T)` is parametrised by
$T$, i.e. its diffusion is $\sigma = \sqrt{2T}$; `temperature_of(sigma)` converts. For SGD with
learning rate $\eta$, batch $B$ and per-sample gradient variance $\sigma^2$ the diffusion is
$\eta\sigma^2/B$, so $T = \eta\sigma^2/(2B)$.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, Float, Params, ScalarLike, State
from .._discretization import Discretization
from .._flows.base import AbstractFlow
from .._problem import Problem
from .._validation import interval


Diffusion = Float[Array, "n m"] | lx.AbstractLinearOperator


class AbstractSDE(AbstractFlow):
    r"""A flow with noise: the Itô SDE $dY = f(t, Y)\,dt + g(t, Y)\,dW$ whose drift $f$ is the
    flow's `vector_field` and whose noise coefficient $g$ is `diffusion`.

    Subclasses are final and implement, besides the `AbstractFlow` methods (`init`,
    `vector_field`, `params`, `discretize`):

    - `diffusion(t, state, problem) -> g`: acting on the **raveled** state
      (`jax.flatten_util.ravel_pytree(state)[0]`, length $n$), driven by an $m$-dimensional
      Brownian motion: an $(n, m)$ array or a `lineax` operator with `in_structure` $(m,)$ —
      what `diffrax.ControlTerm` takes.
    - `check(problem)`: raise `ValueError` unless the model applies to `problem`.
    - `additive` (class variable): `True` when $g$ does not depend on the state. Then Itô and
      Stratonovich agree and `simulate` defaults to `diffrax.ShARK` (weak order 2); otherwise
      to Euler–Maruyama (`diffrax.Euler`, Itô, weak order 1).

    Any `AbstractFlow` whose `diffusion` is not `None` can be simulated; this class adds the
    `additive` declaration that picks the default solver.
    """

    additive: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def diffusion(self, t: ScalarLike, state: State, problem: Problem | None) -> Diffusion:
        raise NotImplementedError

    @abc.abstractmethod
    def check(self, problem: Problem | None) -> None:
        """Concrete checks that this model applies to `problem` (`ValueError` naming what is
        wrong); run by `simulate` and the density routes before anything is compiled."""
        raise NotImplementedError


class AbstractNoisyFlow(AbstractSDE):
    r"""An SDE whose drift is a deterministic flow, `deterministic` (gradient flow for Langevin,
    heavy ball for Kramers): its state, drift, parameters and discretization (the drift's default
    map; the noise is the minibatch's) are that flow's. Subclasses add the noise (`diffusion`).
    """

    @property
    @abc.abstractmethod
    def deterministic(self) -> AbstractFlow:
        """The noiseless flow."""
        raise NotImplementedError

    def init(self, params: Params) -> State:
        return self.deterministic.init(params)

    def vector_field(self, t: ScalarLike, state: State, problem: Problem) -> State:
        return self.deterministic.vector_field(t, state, problem)

    def params(self, state: State) -> Params:
        return self.deterministic.params(state)

    def discretize(self, step_size: ScalarLike) -> Discretization:
        return self.deterministic.discretize(step_size)

    def check(self, problem: Problem | None) -> None:
        if not isinstance(problem, Problem):
            raise ValueError(f"problem must be a dynopt.Problem, got {type(problem).__name__}.")


def is_additive(flow: AbstractFlow) -> bool:
    """Whether `flow` declares state-independent noise (an `AbstractSDE` with `additive`)."""
    return isinstance(flow, AbstractSDE) and flow.additive


def noise_dim(g: Diffusion) -> int:
    """$m$, the Brownian dimension a diffusion coefficient acts on."""
    if isinstance(g, lx.AbstractLinearOperator):
        return int(np.prod(jax.tree.leaves(g.in_structure())[0].shape))
    return int(g.shape[-1])


def _cast(g: Diffusion, dtype) -> Diffusion:
    """`g`'s floating arrays (a matrix, a lineax operator's leaves) in `dtype`."""
    return jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, g)


def raveled(flow: AbstractFlow, problem: Problem | None, state0: State):
    r"""The flow as an SDE on the flat state: `(y0, drift, diffusion, unravel)` with
    `drift(t, y, args)` and `diffusion(t, y, args)` in diffrax's term signature.

    Both return the dtype of the `y` they are given: diffrax runs the state in the times' dtype
    (a float32 network's state in float64 under x64), while `unravel` hands the flow the
    state's own dtypes, so the field of a float32 model is float32 (under strict promotion its
    product with a float64 step was a `TypePromotionError`)."""
    y0, unravel = ravel_pytree(state0)

    def drift(t, y, args):
        del args
        return ravel_pytree(flow.vector_field(t, unravel(y), problem))[0].astype(y.dtype)

    def diffusion(t, y, args):
        del args
        return _cast(flow.diffusion(t, unravel(y), problem), y.dtype)

    return y0, drift, diffusion, unravel


def temperature_of(sigma: ScalarLike) -> Array:
    r"""$T = \sigma^2/2$: the temperature whose Gibbs law $\exp(-L/T)$ is the stationary law of
    $d\theta = -\nabla L\,dt + \sigma\,dW$ (the factor 2 that post 1's eq. (9) drops).

    **Raises:** `ValueError` for a `sigma` not finite (inside `jit`: `eqx.error_if`)."""
    sigma = jnp.asarray(interval("sigma", sigma))
    return 0.5 * sigma * sigma


def not_an_optimizer(name: str):
    """The `discretize` of a density-layer model: it has no optax counterpart."""
    raise ValueError(
        f"{name} is an SDE with a general drift, not the model of an optimizer: it has no "
        "optax discretization. Simulate it with dynopt.sde.simulate."
    )
