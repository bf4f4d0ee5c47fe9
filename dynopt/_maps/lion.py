r"""`optax.lion` as the discretization of `LionFlow`."""

from typing import ClassVar

import optax

from .._custom_types import Array
from .._validation import as_hyperparameter
from .base import AbstractMap, rate_decay


class Lion(AbstractMap):
    r"""`optax.lion(h, b1=β₁, b2=1-a₂h, weight_decay=λ)` for `LionFlow`, $t = kh$: explicit Euler
    (the update uses $m_k$, then $m_{k+1} = \beta_2m_k + (1-\beta_2)g_k$), first order.

    **Inverse:** `inverse(learning_rate, b1=0.9, b2=0.99, weight_decay=1e-3, width=1e-3)`.
    """

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(optax.lion)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        return {
            "learning_rate": step_size,
            "b1": flow.b1,
            "b2": rate_decay("a2", flow.a2, step_size),
            "weight_decay": flow.weight_decay,
        }

    def inverse(self, learning_rate, b1=0.9, b2=0.99, weight_decay=1e-3, width=1e-3):
        from .._flows.lion import LionFlow

        lr = as_hyperparameter("learning_rate", learning_rate, lower=0.0, lower_open=True)
        a2 = (1 - as_hyperparameter("b2", b2, lower=0.0, upper=1.0, upper_open=True)) / lr
        return LionFlow(a2, b1, weight_decay, width), lr
