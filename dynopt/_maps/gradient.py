r"""Explicit Euler for first-order flows $\dot\theta = -s(\theta)\nabla L$: gradient descent and
its rescaled relatives (the fixed-momentum limit of heavy ball)."""

from typing import ClassVar

import optax

from .._custom_types import Array, ScalarLike
from .._validation import positive
from .base import AbstractMap, concrete_scalar, require_own_flow


class GradientDescent(AbstractMap):
    r"""Gradient descent $\theta_{k+1} = \theta_k - h\nabla L(\theta_k)$ = `optax.sgd(h)`, explicit
    Euler for `GradientFlow` with $t = kh$: order 1 (order 2 against the modified flow
    `ModifiedGradientFlow(h)`). Stable on a quadratic iff $h < 2/\lambda_{\max}$.

    **Inverse:** `inverse(learning_rate) -> (GradientFlow(), learning_rate)`.
    """

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(optax.sgd)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        require_own_flow(self, flow)
        return {"learning_rate": step_size}

    def inverse(self, learning_rate: ScalarLike):
        from .._flows.gradient import GradientFlow

        return GradientFlow(), positive("learning_rate", learning_rate)

    def stability_limit(self, flow, lambda_max: ScalarLike) -> float:
        require_own_flow(self, flow)
        return 2.0 / concrete_scalar("lambda_max", lambda_max, lower=0.0, lower_open=True)
