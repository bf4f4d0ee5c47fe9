r"""The AdamW flow: the Adam flow plus decoupled weight decay."""

from typing import ClassVar

import jax

from .._custom_types import Array, Params, ScalarLike
from .._maps.adamw import AdamW
from .._problem import Problem
from .._validation import hyperparameter
from .adaptive import adam_field, AdamState
from .base import AbstractMappedFlow


class AdamWFlow(AbstractMappedFlow):
    r"""Adam with decoupled weight decay $\lambda$ (Loshchilov & Hutter), as a flow:

    $$\dot m = a_1(g - m),\quad \dot v = a_2(g\odot g - v),\quad
      \dot\theta = -\frac{\hat m}{\sqrt{\hat v} + \epsilon} - \lambda\theta,$$

    with Adam's exact bias corrections (`corrected_moments`, shared with `AdamFlow`).

    **Discretization** (`dynopt.maps.AdamW`): `optax.adamw(h, b1=1-a₁h, b2=1-a₂h, eps=ε,
    weight_decay=λ)`, $t = kh$, first order. optax multiplies the decay by the learning rate
    ($\theta_{k+1} = \theta_k - h(\hat m/(\sqrt{\hat v}+\epsilon) + \lambda\theta_k)$), which is
    what makes $\lambda$ a rate here; the map uses optax's defaults `mask=None` (every leaf
    decays, as in the flow) and `mu_dtype=None` (moments in the parameters' dtype).

    **Arguments:** `a1`, `a2` $> 0$, `eps` $\ge 0$, `weight_decay` $\lambda \ge 0$.
    """

    default_map: ClassVar[type] = AdamW

    a1: Array = hyperparameter("a1", lower=0.0, lower_open=True)
    a2: Array = hyperparameter("a2", lower=0.0, lower_open=True)
    eps: Array = hyperparameter("eps", default=1e-8, lower=0.0)
    weight_decay: Array = hyperparameter("weight_decay", default=1e-4, lower=0.0)

    def init(self, params: Params) -> AdamState:
        zeros = jax.tree.map(jax.numpy.zeros_like, params)
        return AdamState(params, zeros, zeros)

    def vector_field(self, t: ScalarLike, state: AdamState, problem: Problem) -> AdamState:
        d = adam_field(self.a1, self.a2, self.eps, t, state, problem.grad(state.params))
        dtheta = jax.tree.map(lambda u, p: u - self.weight_decay * p, d.params, state.params)
        return d._replace(params=dtheta)

    def params(self, state: AdamState) -> Params:
        return state.params

    @classmethod
    def from_hyperparams(
        cls, learning_rate, b1, b2, eps=1e-8, weight_decay=1e-4
    ) -> tuple["AdamWFlow", Array]:
        """Inverse map of `optax.adamw(η, b1, b2, eps, weight_decay=λ)`: `(flow, η)`."""
        return AdamW().inverse(learning_rate, b1, b2, eps, weight_decay)
