r"""Explicit (semi-implicit) Euler maps of the adaptive flows of post 2 to optax: RMSprop (per
coordinate and global), Adam, sign descent. Moment rates $a$ become EMA decays $1 - ah$."""

from typing import ClassVar

import optax

from .._custom_types import Array, ScalarLike
from .._transforms.adaptive import adam, global_rmsprop
from .._validation import as_hyperparameter, nonnegative, positive
from .base import AbstractMap, rate_decay, require_own_flow


def _rate(name: str, decay_value: ScalarLike, learning_rate: Array) -> Array:
    r"""The rate $a = (1 - \lambda)/\eta$ of an EMA decay $\lambda \in [0, 1)$."""
    return (
        1 - as_hyperparameter(name, decay_value, lower=0.0, upper=1.0, upper_open=True)
    ) / learning_rate


class RMSProp(AbstractMap):
    r"""`optax.rmsprop(h, decay=1-κh, eps=ε, eps_in_sqrt=True, initial_scale=G₀)` for
    `RMSPropFlow`: $G_{k+1} = \lambda G_k + (1-\lambda)g_k^2$,
    $\theta_{k+1} = \theta_k - h\,g_k/\sqrt{G_{k+1}+\epsilon}$ (the step uses $G_{k+1}$:
    semi-implicit Euler), $t = kh$, first order. Requires $\kappa h \le 1$ (a decay in $[0, 1)$).

    **Inverse:** `inverse(learning_rate, decay, eps=1e-8, initial_scale=0.0)` $\mapsto$
    `(RMSPropFlow((1-λ)/γ, ε, G₀), γ)`.
    """

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(optax.rmsprop)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        return {
            "learning_rate": step_size,
            "decay": rate_decay("kappa", flow.kappa, step_size),
            "eps": flow.eps,
            "initial_scale": flow.initial_scale,
        }

    def options(self, flow):
        del flow
        return (("eps_in_sqrt", True),)

    def inverse(self, learning_rate, decay, eps=1e-8, initial_scale=0.0):
        from .._flows.adaptive import RMSPropFlow

        lr = as_hyperparameter("learning_rate", learning_rate, lower=0.0, lower_open=True)
        return RMSPropFlow(_rate("decay", decay, lr), eps, initial_scale), lr


class GlobalRMSProp(AbstractMap):
    r"""`dynopt.transforms.global_rmsprop(h, decay=1-κh, eps, initial_scale)` for
    `GlobalRMSPropFlow` (one scalar $G$ tracking $\|g\|^2$), $t = kh$, first order.

    **Inverse:** as `RMSProp`, to `GlobalRMSPropFlow`.
    """

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(global_rmsprop)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        return RMSProp().hyperparams(flow, step_size)

    def inverse(self, learning_rate, decay, eps=1e-8, initial_scale=0.0):
        from .._flows.adaptive import GlobalRMSPropFlow

        lr = as_hyperparameter("learning_rate", learning_rate, lower=0.0, lower_open=True)
        return GlobalRMSPropFlow(_rate("decay", decay, lr), eps, initial_scale), lr


def adam_hyperparams(flow, step_size: Array) -> dict[str, Array]:
    """`optax.adam`'s hyper-parameters $\\eta = h$, $\\beta_i = 1 - a_ih$, $\\epsilon$."""
    return {
        "learning_rate": step_size,
        "b1": rate_decay("a1", flow.a1, step_size),
        "b2": rate_decay("a2", flow.a2, step_size),
        "eps": flow.eps,
    }


def adam_rates(learning_rate, b1, b2) -> tuple[Array, Array, Array]:
    """The inverse of `adam_hyperparams`: `(a1, a2, learning_rate)`, validated."""
    lr = as_hyperparameter("learning_rate", learning_rate, lower=0.0, lower_open=True)
    return _rate("b1", b1, lr), _rate("b2", b2, lr), lr


class Adam(AbstractMap):
    r"""`optax.adam(h, b1=1-a₁h, b2=1-a₂h, eps=ε)` for `AdamFlow`, $t = kh$: step $k \to k+1$
    uses $m_{k+1}, v_{k+1}$ with the corrections $1-\beta_i^{k+1}$, the flow's
    $1-e^{-a_it_{k+1}}$ up to $O(h)$; first order. Requires $a_ih \le 1$. Built as
    `dynopt.transforms.adam` (optax's state and iterates, the scalar corrections computed once
    per step: traced $\beta$s cost no per-coordinate division).

    **Inverse:** `inverse(learning_rate, b1, b2, eps=1e-8)` $\mapsto$
    `(AdamFlow((1-b1)/η, (1-b2)/η, eps), η)`.
    """

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(adam)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        return adam_hyperparams(flow, step_size)

    def inverse(self, learning_rate, b1, b2, eps=1e-8):
        from .._flows.adaptive import AdamFlow

        a1, a2, lr = adam_rates(learning_rate, b1, b2)
        return AdamFlow(a1, a2, nonnegative("eps", eps)), lr


class Sign(AbstractMap):
    r"""`optax.sign_sgd(h)`, $\theta_{k+1} = \theta_k - h\operatorname{sign}(g_k)$, $t = kh$:
    follows the exact sign flow to $O(h)$ and chatters with amplitude $\le h$ on the sliding
    surfaces; the flow's regularization width does not enter.

    **Inverse:** `inverse(learning_rate, width=1e-3) -> (SignFlow(width), learning_rate)`.
    """

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(optax.sign_sgd)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        require_own_flow(self, flow)
        return {"learning_rate": step_size}

    def inverse(self, learning_rate, width=1e-3):
        from .._flows.adaptive import SignFlow

        return SignFlow(width), positive("learning_rate", learning_rate)
