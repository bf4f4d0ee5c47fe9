r"""NAG with momentum $(k-1)/(k+r-1)$, a discretization of the Nesterov ODE (Su, Boyd, Candès)."""

from typing import ClassVar

import jax.numpy as jnp

from .._custom_types import Array, ScalarLike
from .._transforms.nesterov import nag
from .._validation import positive
from .base import AbstractMap


class NAG(AbstractMap):
    r"""NAG $x_k = y_{k-1} - s\nabla f(y_{k-1})$, $y_k = x_k + \frac{k-1}{k+r-1}(x_k - x_{k-1})$
    (`dynopt.transforms.nag`, holding $x_k$, the look-ahead gradient through `grad_fn`) with step
    $s$ = `step_size` and $\Delta t = \sqrt s$: the iterates follow `NesterovODE(r)` at
    $t = k\sqrt s$ to first order **in** $\Delta t = \sqrt s$.

    **Inverse:** `inverse(learning_rate, r=3.0) -> (NesterovODE(r), learning_rate)`.
    """

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(nag)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        return {"learning_rate": step_size, "r": flow.r}

    def dt(self, flow, step_size: Array) -> Array:
        del flow
        return jnp.sqrt(step_size)

    def options(self, flow):
        del flow
        return (("reparametrize", False),)

    def inverse(self, learning_rate: ScalarLike, r: ScalarLike = 3.0):
        from .._flows.nesterov import NesterovODE

        return NesterovODE(r), positive("learning_rate", learning_rate)
