"""Loss rates along a reference trajectory, for Lyapunov identities such as dL/dt = -|grad L|^2."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._custom_types import Array, ArrayLike, Float
from ._problem import Problem
from ._trajectory import Trajectory
from ._validation import host_validated, interval


def _on_reference(reference: Trajectory, ts: ArrayLike, fn) -> Float[Array, " n"]:
    """`vmap(fn)` over `ts`, jitted, after checking on the host that every `t` lies in the
    reference's interval (`Trajectory.evaluate`'s check, so the program needs no runtime one)."""
    if reference.interpolation is None or reference.flow is None:
        raise ValueError("this needs a reference solve (dynopt.solve), not a discrete run.")
    interp = reference.interpolation
    ts = interval("ts", np.asarray(ts), lower=float(interp.t0), upper=float(interp.t1))
    with host_validated():
        return jax.jit(jax.vmap(fn))(jnp.asarray(ts))


def loss_rate(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""$\frac{d}{dt}L(\theta(t))$ measured on the reference's dense interpolation: the exact time
    derivative (`jax.jvp` in $t$) of $L$ composed with diffrax's interpolating polynomial. This does
    not use the flow's vector field, so comparing it with the rate a flow predicts (e.g.
    $-\|\nabla L\|^2$ for gradient flow) checks the solved trajectory, to the interpolation
    accuracy.
    """

    def rate(t):
        return jax.jvp(lambda s: problem.loss(reference.evaluate(s)), (t,), (jnp.ones_like(t),))[1]

    return _on_reference(reference, ts, rate)


def gradient_norm_sq(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""$\|\nabla L(\theta(t))\|^2$ along the reference at times `ts`."""

    def gsq(t):
        return optax.tree.norm(problem.grad(reference.evaluate(t)), squared=True)

    return _on_reference(reference, ts, gsq)


def max_relative_deviation(measured: ArrayLike, predicted: ArrayLike) -> Float[Array, ""]:
    r"""$\max_t |m(t) - p(t)| / \max_t |p(t)|$: the deviation relative to the predicted rate's scale
    (pointwise relative errors blow up where the rate itself vanishes)."""
    measured, predicted = jnp.asarray(measured), jnp.asarray(predicted)
    return jnp.max(jnp.abs(measured - predicted)) / jnp.max(jnp.abs(predicted))


def _along(reference: Trajectory, problem: Problem, ts: ArrayLike, fn) -> Float[Array, " n"]:
    """`fn(t, state, params, loss, grad)` at each `t`, on the reference's dense interpolation."""

    def one(t):
        state = reference.interpolation.evaluate(t)
        params = reference.flow.params(state)
        loss, grad = jax.value_and_grad(problem.loss)(params)
        return fn(t, state, params, loss, grad)

    return _on_reference(reference, ts, one)


def gradient_l1_norm(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""$\|\nabla L(\theta(t))\|_1$ along the reference: $-\dot L$ for the sign flow."""
    return _along(reference, problem, ts, lambda t, s, p, L, g: optax.tree.norm(g, ord=1))


def preconditioned_norm_sq(
    reference: Trajectory, problem: Problem, ts: ArrayLike, P
) -> Float[Array, " n"]:
    r"""$\nabla L^\top P(\theta)\nabla L$ along the reference, for `P(params, v, loss_fn)`:
    $-\dot L$ for the preconditioned flow $\dot\theta = -P\nabla L$."""
    return _along(
        reference, problem, ts, lambda t, s, p, L, g: optax.tree.vdot(g, P(p, g, problem.loss))
    )


def loss_values(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""$L(\theta(t))$ along the reference: $-\dot L$ for the Polyak flow with $L^* = 0$."""
    return _along(reference, problem, ts, lambda t, s, p, L, g: L)


def chain_rule_rate(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""$\langle\nabla L(\theta), \dot\theta\rangle$ with $\dot\theta$ from the flow's own vector
    field (post 3, eq. 1): the rate any flow predicts, with no closed form assumed."""
    flow = reference.flow

    def fn(t, state, params, loss, grad):
        return optax.tree.vdot(grad, flow.params(flow.vector_field(t, state, problem)))

    return _along(reference, problem, ts, fn)


def predicted_rate(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""The loss rate $\dot L$ that the reference's flow predicts: its `loss_rate` hook, e.g.

    | flow | predicted $\dot L$ |
    |---|---|
    | `GradientFlow` | $-\|\nabla L\|^2$ |
    | `SignFlow(w)` | $-\sum_i g_i^2/\sqrt{g_i^2+w^2}$ ($= -\|\nabla L\|_1$ for $w = 0$) |
    | `PreconditionedFlow(P)` | $-\nabla L^\top P\nabla L$ |
    | `PolyakFlow(M)` | $-(L-L^*)$, truncated $-(L-L^*)\min(1, M\|\nabla L\|)$ |
    | `RMSPropFlow` | $-\sum_i g_i^2/\sqrt{G_i+\epsilon}$ |
    | `GlobalRMSPropFlow` | $-\|g\|^2/\sqrt{G+\epsilon}$ |
    | any other flow (Adam, ...) | the chain rule $\langle\nabla L, \dot\theta\rangle$ |

    All but Adam's are $\le 0$: $L$ is a Lyapunov function (post 3). Compare with `loss_rate`
    (measured on the solved trajectory, not from the field) via `identity_deviation`.
    """
    flow = reference.flow
    return _along(reference, problem, ts, lambda t, s, p, L, g: flow.loss_rate(t, s, problem))


def identity_deviation(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, ""]:
    r"""`max_relative_deviation(loss_rate, predicted_rate)` on `ts`: how well the solved
    trajectory satisfies its flow's Lyapunov identity (to the solver and interpolation accuracy).
    """
    return max_relative_deviation(
        loss_rate(reference, problem, ts), predicted_rate(reference, problem, ts)
    )
