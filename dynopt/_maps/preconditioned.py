r"""Explicit Euler for preconditioned gradient flows $\dot\theta = -P(\theta)\nabla L$."""

from typing import ClassVar

import jax.numpy as jnp

from .._custom_types import Array
from .._transforms.adaptive import preconditioned_sgd
from .._validation import positive
from .base import AbstractMap


class PreconditionedStep(AbstractMap):
    r"""Preconditioned GD $\theta_{k+1} = \theta_k - hP(\theta_k)\nabla L(\theta_k)$
    (`dynopt.transforms.preconditioned_sgd`, $P$ a static option), $t = kh$, first order (damped
    Newton for the Newton preconditioner).

    **Inverse:** `inverse(learning_rate, precondition) -> (PreconditionedFlow(P), learning_rate)`.
    """

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(preconditioned_sgd)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        del flow
        return {"learning_rate": step_size}

    def options(self, flow):
        return (("precondition", flow.P),)

    def inverse(self, learning_rate, precondition):
        from .._flows.preconditioned import PreconditionedFlow

        lr = positive("learning_rate", jnp.asarray(learning_rate))
        return PreconditionedFlow(precondition), lr
