r"""The Polyak flow of post 3: gradient descent rescaled so that the loss decays as $e^{-t}$."""

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Params, Scalar, ScalarLike
from .._discretization import Discretization
from .._maps.polyak import PolyakStep, TruncatedPolyakStep
from .._problem import Problem
from .._transforms.adaptive import tree_norm
from .._validation import hyperparameter, positive
from .base import AbstractFlow


def _optional_positive(value):
    # None (untruncated) stays a structural choice; a number becomes a validated array leaf.
    return None if value is None else jnp.asarray(positive("M", value))


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

    **Arguments:** `M` $> 0$ or `None` (an array leaf; `None` is a structural choice, so
    switching it recompiles); `f_min` $L^*$ (default 0, as in the post). An $L^*$ above the
    loss makes the speed $(L - L^*)/\|g\|^2$ negative: the flow then ascends (the map does the
    same); $L^*$ must be a lower bound of the loss.
    """

    M: Array | None = eqx.field(default=None, converter=_optional_positive)
    f_min: Array = hyperparameter("f_min", default=0.0)

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
        # (The norm in the widest dtype: optax's refuses a mixed float32/float64 tree.)
        s = self.speed_factor(loss, tree_norm(g))
        # s has the loss's dtype: each leaf keeps its own (a float32 leaf of a mixed pytree).
        return jax.tree.map(lambda gi: -s.astype(gi.dtype) * gi, g)

    def params(self, state: Params) -> Params:
        return state

    def discretize(self, step_size: ScalarLike) -> Discretization:
        """`dynopt.maps.PolyakStep` (untruncated) or `TruncatedPolyakStep` (with `M`)."""
        if self.M is None:
            return PolyakStep()(self, step_size)
        return TruncatedPolyakStep()(self, step_size)

    @classmethod
    def from_hyperparams(
        cls, learning_rate, max_scale=None, f_min=0.0
    ) -> tuple["PolyakFlow", Array]:
        """Inverse of the default map: `polyak_sgd(h, f_min)` (`max_scale=None`) or
        `truncated_polyak_sgd(h, max_scale, f_min)` follows `PolyakFlow(max_scale, f_min)`."""
        if max_scale is None:
            return PolyakStep().inverse(learning_rate, f_min)
        return TruncatedPolyakStep().inverse(learning_rate, max_scale, f_min)

    def loss_rate(self, t: ScalarLike, state: Params, problem: Problem) -> Scalar:
        r"""$-(L - L^*)$, truncated $-(L-L^*)\min(1, M\|\nabla L\|)$ (0 where $\nabla L = 0$)."""
        del t
        loss, g = jax.value_and_grad(problem.loss)(state)
        norm = tree_norm(g)
        gap = loss - self.f_min
        factor = 1.0 if self.M is None else jnp.minimum(1.0, self.M * norm)
        return jnp.where(norm > 0, -gap * factor, jnp.zeros_like(gap))
