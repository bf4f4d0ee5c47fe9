r"""NAG with momentum $(k-1)/(k+r-1)$, a discretization of the Nesterov ODE (Su, Boyd, Candès)."""

from typing import ClassVar

import jax.numpy as jnp

from .._custom_types import Array, ScalarLike
from .._transforms.nesterov import nag
from .._validation import positive
from .base import AbstractMap, concrete_scalar


class NAG(AbstractMap):
    r"""NAG $x_k = y_{k-1} - s\nabla f(y_{k-1})$, $y_k = x_k + \frac{k-1}{k+r-1}(x_k - x_{k-1})$
    (`dynopt.transforms.nag`, holding $x_k$, the look-ahead gradient through `grad_fn`) with step
    $s$ = `step_size` and $\Delta t = \sqrt s$: the iterates follow `NesterovODE(r)` at
    $t = k\sqrt s$ to first order **in** $\Delta t = \sqrt s$.

    **Inverse:** `inverse(learning_rate, r=3.0) -> (NesterovODE(r), learning_rate)`.
    **Stability:** $s\lambda < 4/3$, whatever $r$. On $\tfrac\lambda2x^2$,
    $x_{k+1} = (1+\beta_k)(1-s\lambda)x_k - \beta_k(1-s\lambda)x_{k-1}$ with
    $\beta_k = \frac{k-1}{k+r-1} \to 1$; at $\beta = 1$ the roots of
    $\mu^2 - 2(1-s\lambda)\mu + (1-s\lambda)$ are inside the unit circle iff
    $0 < s\lambda < 4/3$ (for $s\lambda > 1$ they are real, the larger in modulus
    $c + \sqrt{c^2 + c}$ with $c = s\lambda - 1$, which is 1 at $c = 1/3$). Beyond it the
    momentum's approach to 1 makes every run grow; below it every frozen step is stable
    (the bound $2(1+\beta)/(1+2\beta)$ of a constant momentum decreases to $4/3$).
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

    def stability_limit(self, flow, lambda_max: ScalarLike) -> float:
        del flow
        return 4.0 / (3.0 * concrete_scalar("lambda_max", lambda_max, lower=0.0, lower_open=True))
