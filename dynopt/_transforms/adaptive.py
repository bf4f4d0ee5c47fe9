r"""Transforms for adaptive flows that optax lacks: RMSprop with one global second moment, the
truncated Polyak step of Su's post 3, and gradient descent with a user preconditioner. (optax's
`scale_by_polyak` is not strict-promotion clean in float32; `dynopt.maps` runs every factory
under `standard_promotion`.)

Each returns the unscaled direction from a `scale_by_*` block; the `*_sgd`/`*_rmsprop` recipes
chain it with `optax.scale_by_learning_rate`, as optax's `alias.py` does.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._custom_types import Array, Params, ScalarLike


def _dtype(tree) -> Any:
    return jnp.result_type(*jax.tree.leaves(tree))


class ScaleByGlobalRmsState(NamedTuple):
    """State of `scale_by_global_rms`: one scalar moving average of $\\|g\\|^2$."""

    nu: Array


def scale_by_global_rms(
    decay: ScalarLike = 0.9, eps: ScalarLike = 1e-8, initial_scale: ScalarLike = 0.0
) -> optax.GradientTransformationExtraArgs:
    r"""Divide the whole gradient by the root of one moving average of its squared norm
    (post 2, eq. 14):

    $$G_{k+1} = \lambda G_k + (1-\lambda)\|g_k\|^2,\qquad u_k = g_k/\sqrt{G_{k+1} + \epsilon}.$$

    The update uses $G_{k+1}$ (already containing $g_k$), the ordering of `optax.scale_by_rms`.
    For a single scalar parameter this is `optax.scale_by_rms(decay, eps, initial_scale)`.
    Hyper-parameters are cast to the gradient's dtype (strict-promotion clean).

    **Arguments:** `decay` $\lambda \in [0, 1)$, `eps` $\epsilon \ge 0$ (inside the root),
    `initial_scale` $G_0$.
    """

    def init_fn(params):
        return ScaleByGlobalRmsState(nu=jnp.asarray(initial_scale, _dtype(params)))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        dtype = state.nu.dtype
        lam = jnp.asarray(decay, dtype)
        nu = lam * state.nu + (1 - lam) * optax.tree.norm(updates, squared=True)
        scale = jax.lax.rsqrt(nu + jnp.asarray(eps, dtype))
        return optax.tree.scale(scale, updates), ScaleByGlobalRmsState(nu=nu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def global_rmsprop(
    learning_rate: ScalarLike,
    decay: ScalarLike = 0.9,
    eps: ScalarLike = 1e-8,
    initial_scale: ScalarLike = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""RMSprop with a scalar second moment (post 2, eq. 14):
    $\theta_{k+1} = \theta_k - \gamma\, g_k/\sqrt{G_{k+1}+\epsilon}$,
    $G_{k+1} = \lambda G_k + (1-\lambda)\|g_k\|^2$. The step keeps the direction of $-g_k$."""
    return optax.chain(
        scale_by_global_rms(decay, eps, initial_scale),
        optax.scale_by_learning_rate(learning_rate),
    )


def scale_by_truncated_polyak(
    max_scale: ScalarLike, f_min: ScalarLike = 0.0
) -> optax.GradientTransformationExtraArgs:
    r"""The truncated Polyak direction of post 3, eq. 11:

    $$u = \frac{g}{\|g\|}\,(L - L^*)\,\min\!\Big(\frac{1}{\|g\|}, M\Big),$$

    of length $(L-L^*)\min(1/\|g\|, M) \le M(L-L^*)$. It needs the loss:
    `update(..., value=L)` (`dynopt.run` passes it). $u = 0$ where $g = 0$.

    **Arguments:** `max_scale` $M > 0$; `f_min` the known minimum $L^*$.
    """

    def update_fn(updates, state, params=None, *, value, **extra_args):
        del params, extra_args
        norm = optax.tree.norm(updates)
        dtype = norm.dtype
        safe = jnp.where(norm > 0, norm, jnp.ones_like(norm))
        gap = jnp.asarray(value, dtype) - jnp.asarray(f_min, dtype)
        step = gap * jnp.minimum(1 / safe, jnp.asarray(max_scale, dtype)) / safe
        step = jnp.where(norm > 0, step, jnp.zeros_like(step))
        return optax.tree.scale(step, updates), state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def truncated_polyak_sgd(
    learning_rate: ScalarLike, max_scale: ScalarLike, f_min: ScalarLike = 0.0
) -> optax.GradientTransformationExtraArgs:
    r"""Explicit Euler for the truncated Polyak flow (post 3, eq. 11):
    $\theta_{k+1} = \theta_k - h\,(L-L^*)\min(1/\|g\|, M)\,g/\|g\|$. Su's 1-D code
    (`x += -h * sign(g) * min(|g|/g**2, M) * f(x)`) is this with $L^* = 0$."""
    return optax.chain(
        scale_by_truncated_polyak(max_scale, f_min), optax.scale_by_learning_rate(learning_rate)
    )


def polyak_sgd(
    learning_rate: ScalarLike, f_min: ScalarLike = 0.0, max_learning_rate: ScalarLike = jnp.inf
) -> optax.GradientTransformationExtraArgs:
    r"""Explicit Euler for the Polyak flow $\dot\theta = -(L-L^*)\nabla L/\|\nabla L\|^2$:
    $\theta_{k+1} = \theta_k - h\min\big((L-L^*)/\|g\|^2, \eta_{\max}\big)\,g$, built from optax's
    blocks as `chain(scale_by_polyak(f_min, max_learning_rate), scale_by_learning_rate(h))`.

    Not `optax.polyak_sgd(scaling=h)`: in optax 0.2.8 that chains `sgd(scaling)` *before*
    `scale_by_polyak`, which then divides by $\|h\,g\|^2$, so its step is
    $(L-L^*)g/(h\|g\|^2)$ (scaling acts as $1/h$; identical only for $h = 1$).
    """
    return optax.chain(
        optax.scale_by_polyak(f_min=f_min, max_learning_rate=max_learning_rate),
        optax.scale_by_learning_rate(learning_rate),
    )


Preconditioner = Callable[[Params, Params, Callable[[Params], Array] | None], Params]


def scale_by_preconditioner(precondition: Preconditioner) -> optax.GradientTransformationExtraArgs:
    r"""$u = P(\theta)\,g$ for a preconditioner `precondition(params, v, loss_fn) -> P(θ) v`.

    `loss_fn` is the `value_fn` extra argument (`dynopt.run` passes the loss, or the minibatch
    loss in stochastic runs): Newton-type preconditioners build Hessian-vector products from it.
    `precondition` must be hashable (a module-level function or an `eqx.Module` with static
    fields): it is part of the compiled program, not a traced value.
    """

    def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError("scale_by_preconditioner needs params: call update(g, state, params).")
        return precondition(params, updates, value_fn), state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def preconditioned_sgd(
    learning_rate: ScalarLike, precondition: Preconditioner
) -> optax.GradientTransformationExtraArgs:
    r"""Preconditioned gradient descent
    $\theta_{k+1} = \theta_k - h\,P(\theta_k)\nabla L(\theta_k)$, explicit Euler for
    $\dot\theta = -P(\theta)\nabla L$."""
    return optax.chain(
        scale_by_preconditioner(precondition), optax.scale_by_learning_rate(learning_rate)
    )
