r"""Explicit Euler for the Polyak flow (post 3), untruncated and truncated."""

from typing import ClassVar

import jax.numpy as jnp

from .._custom_types import Array
from .._transforms.adaptive import polyak_sgd, truncated_polyak_sgd
from .._validation import positive
from .base import AbstractMap


class PolyakStep(AbstractMap):
    r"""$\theta_{k+1} = \theta_k - h\,(L-L^*)\,g/\|g\|^2$ =
    `chain(optax.scale_by_polyak(f_min=L*, max_learning_rate=inf), optax.scale_by_learning_rate(h))`
    (`dynopt.transforms.polyak_sgd`; optax sets the step to 0 where $\|g\|^2 \le 2.2\cdot10^{-16}$;
    `optax.polyak_sgd(scaling=h)` is *not* this map, see `polyak_sgd`), $t = kh$, first order, for
    `PolyakFlow(M=None)`. Needs the loss value (`dynopt.run` passes it).

    **Inverse:** `inverse(learning_rate, f_min=0.0) -> (PolyakFlow(f_min=f_min), learning_rate)`.
    """

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(polyak_sgd)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        return {"learning_rate": step_size, "f_min": flow.f_min}

    def inverse(self, learning_rate, f_min=0.0):
        from .._flows.polyak import PolyakFlow

        return PolyakFlow(f_min=f_min), positive("learning_rate", jnp.asarray(learning_rate))


class TruncatedPolyakStep(AbstractMap):
    r"""$\theta_{k+1} = \theta_k - h\,(L-L^*)\min(1/\|g\|, M)\,g/\|g\|$
    (`dynopt.transforms.truncated_polyak_sgd(h, M, f_min)`), $t = kh$, first order, for
    `PolyakFlow(M)`.

    **Inverse:** `inverse(learning_rate, max_scale, f_min=0.0) -> (PolyakFlow(M, f_min), h)`.
    """

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(truncated_polyak_sgd)

    def hyperparams(self, flow, step_size: Array) -> dict[str, Array]:
        return {"learning_rate": step_size, "max_scale": flow.M, "f_min": flow.f_min}

    def inverse(self, learning_rate, max_scale, f_min=0.0):
        from .._flows.polyak import PolyakFlow

        # Checked under its own name (the flow's field is `M`: a message named no argument
        # the caller wrote).
        max_scale = positive("max_scale", max_scale)
        return PolyakFlow(max_scale, f_min), positive("learning_rate", jnp.asarray(learning_rate))
