r"""The Lion flow: sign of an interpolated momentum, with decoupled weight decay."""

from typing import ClassVar, NamedTuple

import jax

from .._custom_types import Array, Params, ScalarLike
from .._maps.lion import Lion
from .._problem import Problem
from .._validation import hyperparameter
from .adaptive import regularized_sign
from .base import AbstractMappedFlow


class LionState(NamedTuple):
    """State of `LionFlow`: parameters and the momentum $m$."""

    params: Params
    m: Params


class LionFlow(AbstractMappedFlow):
    r"""The continuous limit of Lion (Chen et al. 2023; `optax.lion`):

    $$\dot m = a_2(g - m),\qquad
      \dot\theta = -\operatorname{sign}_w\!\big((1-\beta_1)\,g + \beta_1 m\big) - \lambda\theta,
      \qquad m(0) = 0,$$

    $g = \nabla L(\theta)$. optax's update is $u_k = \operatorname{sign}((1-\beta_1)g_k +
    \beta_1m_k)$, $m_{k+1} = \beta_2m_k + (1-\beta_2)g_k$, $\theta_{k+1} = \theta_k -
    \eta(u_k + \lambda\theta_k)$: with $\eta = h$ and $\beta_2 = 1 - a_2h$ this is explicit Euler
    of the flow, while $\beta_1$ is an interpolation weight that stays fixed as $h \to 0$.

    **The sign** is regularized to width $w$, $\operatorname{sign}_w(c) = c/\sqrt{c^2+w^2}$ (as
    `SignFlow`), so diffrax's error control applies; away from $\{c_i = 0\}$ this costs
    $O(w^2/c^2)$. Where the exact flow slides along $c_i = 0$ the cost is larger than the sign
    flow's $O(w)$: measured on $\tfrac12\theta^2$ ($a_2 = 3$, $\beta_1 = 0.9$, $t \le 3$), the
    gap between widths $w$ and $w/2$ is $2.8\cdot10^{-2}$, $1.9\cdot10^{-2}$,
    $1.2\cdot10^{-2}$ at $w = 10^{-2}, 5\cdot10^{-3}, 2.5\cdot10^{-3}$ (local exponents 0.55,
    0.66: between $\sqrt w$ and $w$; `tests/test_adaptive.py`). `width=0` is the exact sign
    (fine until a component of $c$ vanishes; the registry's order rows use it there). A small
    $w$ makes the field stiff where $c$ crosses 0 (slope $1/w$): pass `solver="implicit"` to
    `solve` there, as for `SignFlow` (Tsit5 can exhaust `max_steps`, e.g. on a ReLU MLP).

    **Discretization** (`dynopt.maps.Lion`): `optax.lion(h, b1=β₁, b2=1-a₂h, weight_decay=λ)`,
    $t = kh$, first order against the exact-sign flow; `width` does not enter it.

    **Arguments:** `a2` $> 0$ (momentum rate), `b1` $\in [0, 1]$, `weight_decay` $\lambda \ge 0$
    (optax's default $10^{-3}$), `width` $w \ge 0$ (default $10^{-3}$).
    """

    default_map: ClassVar[type] = Lion

    a2: Array = hyperparameter("a2", lower=0.0, lower_open=True)
    b1: Array = hyperparameter("b1", default=0.9, lower=0.0, upper=1.0)
    weight_decay: Array = hyperparameter("weight_decay", default=1e-3, lower=0.0)
    width: Array = hyperparameter("width", default=1e-3, lower=0.0)

    def init(self, params: Params) -> LionState:
        return LionState(params, jax.tree.map(jax.numpy.zeros_like, params))

    def vector_field(self, t: ScalarLike, state: LionState, problem: Problem) -> LionState:
        del t
        g = problem.grad(state.params)

        def dtheta(gi, mi, p):
            c = (1 - self.b1) * gi + self.b1 * mi
            return -regularized_sign(c, self.width) - self.weight_decay * p

        dp = jax.tree.map(dtheta, g, state.m, state.params)
        dm = jax.tree.map(lambda gi, mi: self.a2 * (gi - mi), g, state.m)
        return LionState(dp, dm)

    def params(self, state: LionState) -> Params:
        return state.params

    @classmethod
    def from_hyperparams(
        cls, learning_rate, b1=0.9, b2=0.99, weight_decay=1e-3, width=1e-3
    ) -> tuple["LionFlow", Array]:
        """Inverse map of `optax.lion(η, b1, b2, weight_decay=λ)`: `(flow, η)`."""
        return Lion().inverse(learning_rate, b1, b2, weight_decay, width)
