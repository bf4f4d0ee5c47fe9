r"""AdamW (`optax.adamw`, with its bias corrections hoisted) as the discretization of
`AdamWFlow`."""

from typing import ClassVar

from .._custom_types import Array
from .._transforms.adaptive import adamw
from .._validation import nonnegative
from .adaptive import adam_hyperparams, adam_rates
from .base import AbstractMap


class AdamW(AbstractMap):
    r"""`optax.adamw(h, b1=1-a₁h, b2=1-a₂h, eps=ε, weight_decay=λ)` for `AdamWFlow`, $t = kh$,
    first order (`mask=None`, `mu_dtype=None`), built as `dynopt.transforms.adamw`: optax's
    state and iterates, with $1/(1-\beta_i^t)$ formed once per step (traced $\beta$s).

    **Inverse:** `inverse(learning_rate, b1, b2, eps=1e-8, weight_decay=1e-4)`.
    """

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(adamw)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        return {**adam_hyperparams(flow, step_size), "weight_decay": flow.weight_decay}

    def inverse(self, learning_rate, b1, b2, eps=1e-8, weight_decay=1e-4):
        from .._flows.adamw import AdamWFlow

        a1, a2, lr = adam_rates(learning_rate, b1, b2)
        return AdamWFlow(a1, a2, nonnegative("eps", eps), weight_decay), lr
