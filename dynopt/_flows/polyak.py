r"""The Polyak flow of post 3: gradient descent rescaled so that the loss decays as $e^{-t}$."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._custom_types import Params, ScalarLike
from .._discretization import check_positive, Discretization
from .._problem import Problem
from .._transforms.adaptive import polyak_sgd, truncated_polyak_sgd
from .base import AbstractFlow


class PolyakFlow(AbstractFlow):
    r"""The Polyak flow (post 3, eqs. 8-11), for a loss with known minimum $L^*$ (`f_min`):

    $$\dot\theta = -\frac{(L - L^*)\,\nabla L}{\|\nabla L\|^2}\quad(M = \text{None}),\qquad
      \dot\theta = -\frac{\nabla L}{\|\nabla L\|}\,(L-L^*)\,
        \min\!\Big(\frac{1}{\|\nabla L\|}, M\Big)\quad(\text{truncated}).$$

    **Lyapunov:** $\frac{d}{dt}(L - L^*) = -(L - L^*)$ exactly, so
    $L(t) - L^* = (L(0) - L^*)e^{-t}$ (untruncated); truncated,
    $\frac{d}{dt}(L-L^*) = -(L-L^*)\min(1, M\|\nabla L\|)$. The untruncated field is singular at
    critical points with $L > L^*$ (local minima, saddles); the truncated one is bounded by
    $M(L-L^*)$ and continuous, and can escape shallow local minima (post 3's 1-D example).
    Where $\nabla L = 0$ exactly the field is set to 0.

    **Discretization** (`discretize(h)`, explicit Euler, $t = kh$):
    untruncated: $\theta_{k+1} = \theta_k - h\,(L-L^*)\,g/\|g\|^2$ =
    `chain(optax.scale_by_polyak(f_min=L*, max_learning_rate=inf), optax.scale_by_learning_rate(h))`
    (`dynopt.transforms.polyak_sgd`; optax sets the step to 0 where $\|g\|^2 \le 2.2\cdot10^{-16}$;
    `optax.polyak_sgd(scaling=h)` is *not* this map, see `polyak_sgd`); truncated:
    `dynopt.transforms.truncated_polyak_sgd(h, M)`.
    Both need the loss value (`dynopt.run` passes it).

    **Arguments:** `M` $> 0$ or `None`; `f_min` $L^*$ (default 0, as in the post).
    """

    M: ScalarLike | None = None
    f_min: ScalarLike = 0.0

    def __check_init__(self):
        if self.M is not None:
            check_positive("M", self.M)
        if not isinstance(self.f_min, jax.core.Tracer) and not np.isfinite(float(self.f_min)):
            raise ValueError(f"f_min must be finite, got {self.f_min}.")

    def init(self, params: Params) -> Params:
        return params

    def speed_factor(self, loss, grad_norm):
        r"""The scalar $s$ with $\dot\theta = -s\,\nabla L$: $(L-L^*)/\|g\|^2$ or
        $(L-L^*)\min(1/\|g\|, M)/\|g\|$; 0 where $g = 0$."""
        safe = jnp.where(grad_norm > 0, grad_norm, jnp.ones_like(grad_norm))
        gap = loss - self.f_min
        if self.M is None:
            s = gap / (safe * safe)
        else:
            s = gap * jnp.minimum(1 / safe, self.M) / safe
        return jnp.where(grad_norm > 0, s, jnp.zeros_like(s))

    def vector_field(self, t: ScalarLike, state: Params, problem: Problem) -> Params:
        del t
        loss, g = jax.value_and_grad(problem.loss)(state)
        s = self.speed_factor(loss, optax.tree.norm(g))
        return optax.tree.scale(-s, g)

    def params(self, state: Params) -> Params:
        return state

    def discretize(self, step_size: ScalarLike) -> Discretization:
        check_positive("step_size", step_size)
        if self.M is None:
            hp = {"learning_rate": step_size, "f_min": self.f_min}
            return Discretization(polyak_sgd, hp, dt=step_size)
        hp = {"learning_rate": step_size, "max_scale": self.M, "f_min": self.f_min}
        return Discretization(truncated_polyak_sgd, hp, dt=step_size)
