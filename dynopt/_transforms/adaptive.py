r"""Transforms for adaptive flows that optax lacks: RMSprop with one global second moment, the
truncated Polyak step of Su's post 3, and gradient descent with a user preconditioner; and Adam
and the Polyak step as optax computes them, with the per-step scalars hoisted out of the
per-coordinate arithmetic. (optax's `scale_by_polyak` is not strict-promotion clean in float32;
`dynopt.maps` runs every factory under `standard_promotion`.)

Why the hoisting: with hyper-parameters closed over as Python floats (what a user writes), XLA
folds `x / c` into `x * (1/c)` at compile time; with traced hyper-parameters (what makes a sweep
compile once) `m / (1 - b1**t)` stays a division per coordinate. Dividing is several times
dearer than multiplying, so at 1e6 parameters traced `optax.adam` ran 1.2-1.5x slower than
optax with constants. Computing the scalar reciprocals once per step gives XLA the program it
builds from constants.

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
        gap = jnp.asarray(value, norm.dtype) - jnp.asarray(f_min, norm.dtype)
        return optax.tree.scale(_truncated_polyak_scale(max_scale)(norm, gap), updates), state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def truncated_polyak_sgd(
    learning_rate: ScalarLike, max_scale: ScalarLike, f_min: ScalarLike = 0.0
) -> optax.GradientTransformationExtraArgs:
    r"""Explicit Euler for the truncated Polyak flow (post 3, eq. 11):
    $\theta_{k+1} = \theta_k - h\,(L-L^*)\min(1/\|g\|, M)\,g/\|g\|$. Su's 1-D code
    (`x += -h * sign(g) * min(|g|/g**2, M) * f(x)`) is this with $L^* = 0$. The iterates of
    `chain(scale_by_truncated_polyak(M, f_min), optax.scale_by_learning_rate(h))`, with the
    scalar $-h\,\cdot$step formed once."""
    return _scaled_by_scalar_step(
        learning_rate, f_min, optax.tree.norm, _truncated_polyak_scale(max_scale)
    )


def polyak_sgd(
    learning_rate: ScalarLike, f_min: ScalarLike = 0.0, max_learning_rate: ScalarLike = jnp.inf
) -> optax.GradientTransformationExtraArgs:
    r"""Explicit Euler for the Polyak flow $\dot\theta = -(L-L^*)\nabla L/\|\nabla L\|^2$:
    $\theta_{k+1} = \theta_k - h\min\big((L-L^*)/\|g\|^2, \eta_{\max}\big)\,g$: the iterates of
    `chain(optax.scale_by_polyak(f_min, max_learning_rate), optax.scale_by_learning_rate(h))`,
    the scalar step formed once (`scale_by_polyak_step`).

    Not `optax.polyak_sgd(scaling=h)`: in optax 0.2.8 that chains `sgd(scaling)` *before*
    `scale_by_polyak`, which then divides by $\|h\,g\|^2$, so its step is
    $(L-L^*)g/(h\|g\|^2)$ (scaling acts as $1/h$; identical only for $h = 1$).
    """
    return scale_by_polyak_step(learning_rate, f_min, max_learning_rate)


def scale_by_adam(
    b1: ScalarLike = 0.9, b2: ScalarLike = 0.999, eps: ScalarLike = 1e-8
) -> optax.GradientTransformation:
    r"""`optax.scale_by_adam(b1, b2, eps)` with the bias corrections computed once per step:

    $$m_{k+1} = \beta_1 m_k + (1-\beta_1)g_k,\qquad v_{k+1} = \beta_2 v_k + (1-\beta_2)g_k^2,$$
    $$u_k = \frac{c_1\,m_{k+1}}{\sqrt{c_2\,v_{k+1}} + \epsilon},\qquad
    c_i = \frac{1}{1-\beta_i^{k+1}}.$$

    The same state (`optax.ScaleByAdamState`) and the same arithmetic as optax, except that
    $m/(1-\beta^t)$ is $m\cdot c$ with the scalar $c$ formed once (one rounding apart, as optax
    itself compiles with constant $\beta$s); the moments are updated by optax's own
    `optax.tree.update_moment*`. $c_i$ is `optax.tree.bias_correction` of the scalar 1, in the
    hyper-parameters' precision as optax computes it, then cast to each moment's dtype.
    """

    def init_fn(params):
        return optax.scale_by_adam(b1, b2, eps).init(params)

    def update_fn(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        # optax's own correction of the scalar 1, i.e. 1/(1 - b**count) in the
        # hyper-parameters' precision: the function `modified_flow` reads a counter through.
        # (The count as a float: strict-promotion clean, as before.)
        one_ = jnp.ones((), jnp.result_type(b1, b2, float))
        t = count.astype(one_.dtype)
        c1 = optax.tree.bias_correction(one_, b1, t)
        c2 = optax.tree.bias_correction(one_, b2, t)

        def one(m, v):
            e = jnp.asarray(eps, m.dtype)
            return (m * c1.astype(m.dtype)) / (jnp.sqrt(v * c2.astype(v.dtype)) + e)

        new = jax.tree.map(one, mu, nu)
        state = optax.ScaleByAdamState(count=count, mu=mu, nu=optax.tree.cast_like(nu, state.nu))
        return new, state

    return optax.GradientTransformation(init_fn, update_fn)


def adam(
    learning_rate: ScalarLike, b1: ScalarLike = 0.9, b2: ScalarLike = 0.999, eps: ScalarLike = 1e-8
) -> optax.GradientTransformation:
    r"""`optax.adam(learning_rate, b1, b2, eps)` (same state, iterates equal to rounding) with
    the bias corrections hoisted (`scale_by_adam`): as fast with traced hyper-parameters as
    optax with constants."""
    return optax.chain(scale_by_adam(b1, b2, eps), optax.scale_by_learning_rate(learning_rate))


def adamw(
    learning_rate: ScalarLike,
    b1: ScalarLike = 0.9,
    b2: ScalarLike = 0.999,
    eps: ScalarLike = 1e-8,
    weight_decay: ScalarLike = 1e-4,
) -> optax.GradientTransformation:
    r"""`optax.adamw(learning_rate, b1, b2, eps, weight_decay=λ)` (no mask; same state, iterates
    equal to rounding) with the bias corrections hoisted (`scale_by_adam`):
    $\theta_{k+1} = \theta_k - \eta\,(u_k + \lambda\theta_k)$."""
    return optax.chain(
        scale_by_adam(b1, b2, eps),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


def scale_by_polyak_step(
    learning_rate: ScalarLike, f_min: ScalarLike = 0.0, max_learning_rate: ScalarLike = jnp.inf
) -> optax.GradientTransformationExtraArgs:
    r"""`chain(optax.scale_by_polyak(f_min, max_learning_rate), optax.scale_by_learning_rate(h))`
    with one scalar per step: $u = -h\min\big((L-L^*)/\|g\|^2, \eta_{\max}\big)\,g$ ($u = 0$
    where $\|g\|^2 \le 2.2\cdot10^{-16}$, optax's guard): one multiply per coordinate instead of
    two. Needs `update(..., value=L)`."""

    def step(sq, gap):
        s = jnp.minimum(gap / sq, jnp.asarray(max_learning_rate, sq.dtype))
        # optax compares against float64's epsilon (`jnp.finfo(float).eps`); so does this.
        return jnp.where(sq <= float(jnp.finfo(float).eps), jnp.zeros_like(s), s)

    return _scaled_by_scalar_step(
        learning_rate, f_min, lambda g: optax.tree.norm(g, squared=True), step
    )


def _scaled_by_scalar_step(learning_rate, f_min, norm_fn, step_fn):
    r"""$u = -h\,s(\|g\|, L - L^*)\,g$: the scalar $-h s$ formed once, one multiply per
    coordinate (a chain with `scale_by_learning_rate` multiplies every coordinate twice)."""

    def update_fn(updates, state, params=None, *, value, **extra_args):
        del params, extra_args
        norm = norm_fn(updates)
        gap = jnp.asarray(value - f_min).astype(norm.dtype)
        scale = -jnp.asarray(learning_rate, norm.dtype) * step_fn(norm, gap)
        return optax.tree.scale(scale, updates), state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update_fn)


def _truncated_polyak_scale(max_scale):
    def step(norm, gap):
        safe = jnp.where(norm > 0, norm, jnp.ones_like(norm))
        s = gap * jnp.minimum(1 / safe, jnp.asarray(max_scale, norm.dtype)) / safe
        return jnp.where(norm > 0, s, jnp.zeros_like(s))

    return step


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
