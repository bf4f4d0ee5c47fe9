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


def _tree_sum(f, tree) -> Float[Array, ""]:
    return sum(jnp.sum(f(x)) for x in jax.tree.leaves(tree))


def _tree_dot(a, b) -> Float[Array, ""]:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _along(reference: Trajectory, problem: Problem, ts: ArrayLike, fn) -> Float[Array, " n"]:
    """`fn(t, state, params, loss, grad)` at each `t`, on the reference's dense interpolation."""
    if reference.interpolation is None or reference.flow is None:
        raise ValueError("this needs a reference solve (dynopt.solve), not a discrete run.")

    def one(t):
        state = reference.interpolation.evaluate(t)
        params = reference.flow.params(state)
        loss, grad = jax.value_and_grad(problem.loss)(params)
        return fn(t, state, params, loss, grad)

    return jax.jit(jax.vmap(one))(jnp.asarray(ts))


def gradient_l1_norm(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""$\|\nabla L(\theta(t))\|_1$ along the reference: $-\dot L$ for the sign flow."""
    return _along(reference, problem, ts, lambda t, s, p, L, g: _tree_sum(jnp.abs, g))


def preconditioned_norm_sq(
    reference: Trajectory, problem: Problem, ts: ArrayLike, P
) -> Float[Array, " n"]:
    r"""$\nabla L^\top P(\theta)\nabla L$ along the reference, for `P(params, v, loss_fn)`:
    $-\dot L$ for the preconditioned flow $\dot\theta = -P\nabla L$."""
    return _along(reference, problem, ts, lambda t, s, p, L, g: _tree_dot(g, P(p, g, problem.loss)))


def loss_values(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""$L(\theta(t))$ along the reference: $-\dot L$ for the Polyak flow with $L^* = 0$."""
    return _along(reference, problem, ts, lambda t, s, p, L, g: L)


def chain_rule_rate(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""$\langle\nabla L(\theta), \dot\theta\rangle$ with $\dot\theta$ from the flow's own vector
    field (post 3, eq. 1): the rate any flow predicts, with no closed form assumed."""
    flow = reference.flow

    def fn(t, state, params, loss, grad):
        return _tree_dot(grad, flow.params(flow.vector_field(t, state, problem)))

    return _along(reference, problem, ts, fn)


def _closed_form_rate(flow, problem: Problem, t, state, params, loss, grad):
    # Imported here so that the flows never depend on this module.
    from ._flows.adaptive import AdamFlow, RMSPropFlow, SignFlow
    from ._flows.gradient import GradientFlow
    from ._flows.polyak import PolyakFlow
    from ._flows.preconditioned import PreconditionedFlow

    if isinstance(flow, GradientFlow):
        return -_tree_sum(jnp.square, grad)
    if isinstance(flow, SignFlow):
        w2 = jnp.asarray(flow.width) ** 2
        if not isinstance(flow.width, jax.core.Tracer) and float(flow.width) == 0.0:
            return -_tree_sum(jnp.abs, grad)
        return -_tree_sum(lambda g: g * g / jnp.sqrt(g * g + w2), grad)
    if isinstance(flow, PolyakFlow):
        gap = loss - flow.f_min
        if flow.M is None:
            return -gap
        return -gap * jnp.minimum(1.0, flow.M * jnp.sqrt(_tree_sum(jnp.square, grad)))
    if isinstance(flow, PreconditionedFlow):
        return -_tree_dot(grad, flow.P(params, grad, problem.loss))
    if isinstance(flow, RMSPropFlow):
        if flow.norm == "global":
            return -_tree_sum(jnp.square, grad) / jnp.sqrt(state.G + flow.eps)
        inv = jax.tree.map(lambda G: 1 / jnp.sqrt(G + flow.eps), state.G)
        return -_tree_dot(jax.tree.map(jnp.square, grad), inv)
    if isinstance(flow, AdamFlow):
        mhat, vhat = flow.corrected_moments(t, state, grad)
        step = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + flow.eps), mhat, vhat)
        return -_tree_dot(grad, step)
    raise ValueError(
        f"no closed-form loss rate is known for {type(flow).__name__}; use "
        "lyapunov.chain_rule_rate."
    )


def predicted_rate(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""The loss rate $\dot L$ that the reference's flow predicts in closed form:

    | flow | predicted $\dot L$ |
    |---|---|
    | `GradientFlow` | $-\|\nabla L\|^2$ |
    | `SignFlow(w)` | $-\sum_i g_i^2/\sqrt{g_i^2+w^2}$ ($= -\|\nabla L\|_1$ for $w = 0$) |
    | `PreconditionedFlow(P)` | $-\nabla L^\top P\nabla L$ |
    | `PolyakFlow(M)` | $-(L-L^*)$, truncated $-(L-L^*)\min(1, M\|\nabla L\|)$ |
    | `RMSPropFlow` | $-\sum_i g_i^2/\sqrt{G_i+\epsilon}$ (global: $-\|g\|^2/\sqrt{G+\epsilon}$) |
    | `AdamFlow` | $-\langle g, \hat m/(\sqrt{\hat v}+\epsilon)\rangle$ (not sign-definite) |

    All but Adam are $\le 0$: $L$ is a Lyapunov function (post 3). Compare with `loss_rate`
    (measured on the solved trajectory, not from the field) via `identity_deviation`.

    **Raises:** `ValueError` for a flow without a closed form here (use `chain_rule_rate`).
    """
    flow = reference.flow
    return _along(
        reference,
        problem,
        ts,
        lambda t, s, p, L, g: _closed_form_rate(flow, problem, t, s, p, L, g),
    )


def identity_deviation(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, ""]:
    r"""`max_relative_deviation(loss_rate, predicted_rate)` on `ts`: how well the solved
    trajectory satisfies its flow's Lyapunov identity (to the solver and interpolation accuracy).
    """
    return max_relative_deviation(
        loss_rate(reference, problem, ts), predicted_rate(reference, problem, ts)
    )
