"""Loss rates along a reference trajectory, for Lyapunov identities such as dL/dt = -|grad L|^2."""

import jax
import jax.numpy as jnp

from ._custom_types import Array, ArrayLike, Float
from ._problem import Problem
from ._trajectory import Trajectory


def loss_rate(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""$\frac{d}{dt}L(\theta(t))$ measured on the reference's dense interpolation: the exact time
    derivative (`jax.jvp` in $t$) of $L$ composed with diffrax's interpolating polynomial. This does
    not use the flow's vector field, so comparing it with the rate a flow predicts (e.g.
    $-\|\nabla L\|^2$ for gradient flow) checks the solved trajectory, to the interpolation
    accuracy.
    """
    ts = jnp.asarray(ts)

    def rate(t):
        return jax.jvp(lambda s: problem.loss(reference.evaluate(s)), (t,), (jnp.ones_like(t),))[1]

    return jax.jit(jax.vmap(rate))(ts)


def gradient_norm_sq(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""$\|\nabla L(\theta(t))\|^2$ along the reference at times `ts`."""

    def gsq(t):
        g = problem.grad(reference.evaluate(t))
        return sum(jnp.sum(x * x) for x in jax.tree.leaves(g))

    return jax.jit(jax.vmap(gsq))(jnp.asarray(ts))


def max_relative_deviation(measured: ArrayLike, predicted: ArrayLike) -> Float[Array, ""]:
    r"""$\max_t |m(t) - p(t)| / \max_t |p(t)|$: the deviation relative to the predicted rate's scale
    (pointwise relative errors blow up where the rate itself vanishes)."""
    measured, predicted = jnp.asarray(measured), jnp.asarray(predicted)
    return jnp.max(jnp.abs(measured - predicted)) / jnp.max(jnp.abs(predicted))
