"""Loss rates along a reference trajectory, for Lyapunov identities such as dL/dt = -|grad L|^2."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._custom_types import Array, ArrayLike, Float
from ._problem import AbstractProblem, Problem
from ._trajectory import Trajectory
from ._validation import check, function, host_validated, interval, is_traced


def _a_loss(problem, who: str) -> None:
    r"""`ValueError` unless `problem` is a loss (`Problem`): the flows' rate hooks read its
    oracle's gradient as $\nabla L$, which a game's is not (the simultaneous gradient $\xi$,
    while its value is $\mathcal H = \frac12\|\xi\|^2$)."""
    if not isinstance(problem, Problem):
        raise ValueError(
            f"{who} is for a loss (a dynopt.Problem): it reads the oracle's gradient as the "
            f"loss's, which a {type(problem).__name__}'s is not (a game's is the simultaneous "
            "gradient xi, while its value is H = |xi|^2/2). loss_rate and chain_rule_rate "
            "work on any problem."
        )


def _on_reference(
    reference: Trajectory, problem: Problem, ts: ArrayLike, fn, extra=None
) -> Float[Array, " n"]:
    """`fn(t, reference, problem, extra)` at each `t` of `ts`, vmapped and jitted, after checking
    on the host that every `t` lies in the reference's interval (`Trajectory.evaluate`'s check, so
    the program needs no runtime one). `fn` is a module-level function (and `extra` a fixed
    object such as the user's preconditioner), so a second call with new times, a new reference
    of the same shapes or a new problem built from the same loss reuses the compiled program.

    Under `jit`/`vmap`/`grad` (traced times, or a traced reference) the same check runs inside
    the program (`eqx.error_if`). The times are taken in the reference's time dtype (float32
    times against a float64 solve raised a strict-promotion error)."""
    if not isinstance(reference, Trajectory):
        raise ValueError(
            f"reference must be a dynopt.Trajectory from dynopt.solve, got a "
            f"{type(reference).__name__}."
        )
    if not isinstance(problem, AbstractProblem):
        raise ValueError(f"problem must be a dynopt.Problem, got a {type(problem).__name__}.")
    if reference.flow is None:
        raise ValueError("this needs a reference solve (dynopt.solve), not a discrete run.")
    # A reference of another problem failed inside JAX ("incompatible shapes for broadcasting").
    want, got = problem.params0, reference.params
    if jax.tree.structure(want) != jax.tree.structure(got) or any(
        jnp.shape(a) != jnp.shape(b)[1:]
        for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got))
    ):
        shapes = lambda t: jax.tree.map(jnp.shape, t)
        raise ValueError(
            f"reference and problem must match: the reference's parameters (at each time) have "
            f"shapes {jax.tree.map(lambda x: jnp.shape(x)[1:], got)}, problem.params0 "
            f"{shapes(want)}; solve this problem for its reference."
        )
    if reference.interpolation is None:
        raise ValueError(
            "this needs the reference's dense output: solve with dense=True (the default)."
        )
    interp = reference.interpolation
    if np.ndim(ts) != 1 or np.shape(ts)[0] == 0:
        # (An empty one was refused as "ts must be in [t0, t1], got []".)
        raise ValueError(f"ts must be a 1-D array of times, not empty, got shape {np.shape(ts)}.")
    t0, t1 = _ends(interp)
    dtype = jnp.asarray(t0).dtype
    # A time narrower than the reference's names the point it rounds: float32(0.1) is
    # 0.10000000149 > t1 = 0.1. Such times are accepted within their own rounding of the ends
    # and clipped (they were refused with "must be in [0, 0.1], got [... 0.1]").
    given = jnp.result_type(ts) if is_traced(ts) else np.asarray(ts).dtype
    narrower = jnp.issubdtype(given, jnp.floating) and jnp.finfo(given).eps > jnp.finfo(dtype).eps
    slack = float(jnp.finfo(given).eps) if narrower else 0.0
    if is_traced((ts, t0, t1)):
        ts = jnp.asarray(ts).astype(dtype)
        tol = slack * jnp.maximum(jnp.abs(t0), jnp.abs(t1))
        bad = ~jnp.isfinite(ts) | (ts < t0 - tol) | (ts > t1 + tol)
        msg = "ts must be in the reference's interval [t0, t1], got a value out of range."
        ts = _onto(check(ts, jnp.any(bad), msg), t0, t1)
        return _over_times(fn, reference, problem, extra, ts)
    t0, t1 = float(t0), float(t1)
    tol = slack * max(abs(t0), abs(t1))
    ts = interval("ts", np.asarray(ts), lower=t0 - tol, upper=t1 + tol)
    ts = jnp.asarray(np.clip(np.asarray(ts, dtype), t0, t1))
    with host_validated():
        return _over_times(fn, reference, problem, extra, ts)


@eqx.filter_jit
def _ends(interp):
    """The interpolation's interval `(t0, t1)`: one program (read eagerly, its few scalar
    operations compiled one program each, 16 on a `solve`'s dense output)."""
    return interp.t0, interp.t1


def _onto(ts, t0, t1):
    """`ts` with the entries past an end replaced by it; `where`, not `clip`, so that `jax.grad`
    in `ts` is 1 at an end itself (`clip`'s is 1/2 there)."""
    return jnp.where(ts > t1, t1, jnp.where(ts < t0, t0, ts))


@eqx.filter_jit
def _over_times(fn, reference, problem, extra, ts):
    return jax.vmap(lambda t: fn(t, reference, problem, extra))(ts)


def _terms(t, reference: Trajectory, problem: Problem):
    """State, parameters, loss and gradient on the reference's dense interpolation at `t`."""
    state = reference.interpolation.evaluate(t)
    params = reference.flow.params(state)
    loss, grad = jax.value_and_grad(problem.loss)(params)
    return state, params, loss, grad


def _rate(t, reference, problem, _):
    return jax.jvp(lambda s: problem.loss(reference.evaluate(s)), (t,), (jnp.ones_like(t),))[1]


def _gradient_norm_sq(t, reference, problem, _):
    return optax.tree.norm(_terms(t, reference, problem)[3], squared=True)


def _gradient_l1_norm(t, reference, problem, _):
    return optax.tree.norm(_terms(t, reference, problem)[3], ord=1)


def _preconditioned_norm_sq(t, reference, problem, P):
    _, params, _, grad = _terms(t, reference, problem)
    return optax.tree.vdot(grad, P(params, grad, problem.loss))


def _loss_value(t, reference, problem, _):
    return _terms(t, reference, problem)[2]


def _chain_rule_rate(t, reference, problem, _):
    state, _, _, grad = _terms(t, reference, problem)
    flow = reference.flow
    return optax.tree.vdot(grad, flow.params(flow.vector_field(t, state, problem)))


def _predicted_rate(t, reference, problem, _):
    return reference.flow.loss_rate(t, reference.interpolation.evaluate(t), problem)


def loss_rate(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""$\frac{d}{dt}L(\theta(t))$ measured on the reference's dense interpolation: the exact time
    derivative (`jax.jvp` in $t$) of $L$ composed with diffrax's interpolating polynomial.

    This does not use the flow's vector field, so comparing it with the rate a flow predicts
    (e.g. $-\|\nabla L\|^2$ for gradient flow) checks the solved trajectory, to the
    interpolation accuracy.

    **Arguments:**

    - `reference`: a `Trajectory` from `dynopt.solve` of `problem`, with its dense output
      (`dense=True`, the default).
    - `problem`: the problem it solved (same parameter structure and shapes).
    - `ts`: a non-empty 1-D array of times in the reference's interval $[t_0, t_1]$ (times of a
      narrower dtype are accepted within their own rounding of the ends, and clipped).

    **Returns:** an array of shape `(n,)`, one value per time.

    **Raises:** `ValueError` for a `reference` that is not a `Trajectory` of a solve with dense
    output, a `problem` that is not a `dynopt.Problem` or does not match it, or `ts` not a
    non-empty 1-D array of times in $[t_0, t_1]$ (traced: an error inside `jit`).
    """
    return _on_reference(reference, problem, ts, _rate)


def gradient_norm_sq(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""$\|\nabla L(\theta(t))\|^2$ along the reference at times `ts`: $-\dot L$ for gradient flow.

    **Arguments:**

    - `reference`, `problem`, `ts`: as `loss_rate`.

    **Returns:** an array of shape `(n,)`, one value per time.

    **Raises:** `ValueError` as `loss_rate`.
    """
    return _on_reference(reference, problem, ts, _gradient_norm_sq)


def _finite_rate(name: str, value: ArrayLike) -> ArrayLike:
    """A concrete rate checked real and finite (a NaN one gave a NaN deviation, a string JAX's
    `TypeError`); empty and traced ones pass to the checks after."""
    if is_traced(value) or np.size(np.asarray(value, dtype=object)) == 0:
        return value
    return interval(name, value)


def max_relative_deviation(measured: ArrayLike, predicted: ArrayLike) -> Float[Array, ""]:
    r"""$\max_t |m(t) - p(t)| / \max_t |p(t)|$: the deviation relative to the predicted rate's scale
    (pointwise relative errors blow up where the rate itself vanishes).

    Computed in the wider of the two dtypes (a float32 measurement against a float64
    prediction). NaN when both vanish identically, `inf` when only the prediction does.

    **Arguments:**

    - `measured`: the measured rate $m(t)$, a real array with at least one entry.
    - `predicted`: the predicted rate $p(t)$, the same shape.

    **Raises:** `ValueError` unless both are real and finite, of one shape with at least one
    entry (traced: a non-finite entry is an error inside `jit`).
    """
    measured, predicted = _finite_rate("measured", measured), _finite_rate("predicted", predicted)
    measured, predicted = jnp.asarray(measured), jnp.asarray(predicted)
    if measured.shape != predicted.shape or measured.size == 0:
        raise ValueError(
            "measured and predicted must have one shape with at least one entry, got "
            f"{measured.shape} and {predicted.shape}."
        )
    with jax.numpy_dtype_promotion("standard"):
        if is_traced((measured, predicted)):
            dev = jnp.max(jnp.abs(measured - predicted)) / jnp.max(jnp.abs(predicted))
            bad = ~(jnp.all(jnp.isfinite(measured)) & jnp.all(jnp.isfinite(predicted)))
            return check(dev, bad, "measured and predicted must be finite (inside jit/vmap).")
        dtype = jnp.result_type(measured, predicted)
    # Concrete: on the host, the same IEEE operations without compiling one program per op.
    m, p = np.asarray(measured, dtype), np.asarray(predicted, dtype)
    with np.errstate(divide="ignore", invalid="ignore"):  # inf and NaN as documented
        return jnp.asarray(np.max(np.abs(m - p)) / np.max(np.abs(p)), dtype)


def gradient_l1_norm(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""$\|\nabla L(\theta(t))\|_1$ along the reference: $-\dot L$ for the sign flow.

    **Arguments:**

    - `reference`, `problem`, `ts`: as `loss_rate`.

    **Returns:** an array of shape `(n,)`, one value per time.

    **Raises:** `ValueError` as `loss_rate`.
    """
    return _on_reference(reference, problem, ts, _gradient_l1_norm)


def preconditioned_norm_sq(
    reference: Trajectory, problem: Problem, ts: ArrayLike, P
) -> Float[Array, " n"]:
    r"""$\nabla L^\top P(\theta)\nabla L$ along the reference: $-\dot L$ for the preconditioned flow
    $\dot\theta = -P\nabla L$.

    **Arguments:**

    - `reference`, `problem`, `ts`: as `loss_rate`.
    - `P`: the preconditioner, a callable `P(params, v, loss_fn)` returning $P(\theta)v$ (a
      pytree like `params`).

    **Returns:** an array of shape `(n,)`, one value per time.

    **Raises:** `ValueError` as `loss_rate`, and for a `P` that is not callable.
    """
    function("P", P, "callable P(params, v, loss_fn)")
    return _on_reference(reference, problem, ts, _preconditioned_norm_sq, P)


def loss_values(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""$L(\theta(t))$ along the reference: $-\dot L$ for the Polyak flow with $L^* = 0$.

    **Arguments:**

    - `reference`, `problem`, `ts`: as `loss_rate`.

    **Returns:** an array of shape `(n,)`, one value per time.

    **Raises:** `ValueError` as `loss_rate`.
    """
    return _on_reference(reference, problem, ts, _loss_value)


def chain_rule_rate(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, " n"]:
    r"""$\langle\nabla L(\theta), \dot\theta\rangle$ with $\dot\theta$ from the flow's own vector
    field (post 3, eq. 1): the rate any flow predicts, with no closed form assumed.

    **Arguments:**

    - `reference`, `problem`, `ts`: as `loss_rate`.

    **Returns:** an array of shape `(n,)`, one value per time.

    **Raises:** `ValueError` as `loss_rate`.
    """
    return _on_reference(reference, problem, ts, _chain_rule_rate)


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

    **Arguments:**

    - `reference`, `problem`, `ts`: as `loss_rate`.

    **Returns:** an array of shape `(n,)`, one value per time.

    **Raises:** `ValueError` as `loss_rate`, and for a `problem` that is not a loss (a game: its
    oracle's gradient is not $\nabla L$).
    """
    _a_loss(problem, "predicted_rate")
    return _on_reference(reference, problem, ts, _predicted_rate)


def _both_rates(t, reference, problem, _):
    return _rate(t, reference, problem, None), _predicted_rate(t, reference, problem, None)


def rates(
    reference: Trajectory, problem: Problem, ts: ArrayLike
) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    r"""Both sides of the reference flow's Lyapunov identity at times `ts`, in one compiled
    program: $\frac{d}{dt}L(\theta(t))$ measured on the dense interpolation (`loss_rate`) and
    the rate the flow predicts (`predicted_rate`).

    **Arguments:**

    - `reference`, `problem`, `ts`: as `loss_rate` (`problem` a loss: a `dynopt.Problem`).

    **Returns:** `(measured, predicted)`, each of shape `(n,)`: the values of `loss_rate` and
    `predicted_rate`, from one compiled program instead of two.
    """
    _a_loss(problem, "rates")
    return _on_reference(reference, problem, ts, _both_rates)


def identity_deviation(reference: Trajectory, problem: Problem, ts: ArrayLike) -> Float[Array, ""]:
    r"""How well the solved trajectory satisfies its flow's Lyapunov identity (to the solver and
    interpolation accuracy): `max_relative_deviation(*rates(reference, problem, ts))`,

    $$\frac{\max_t |\dot L_m(t) - \dot L_p(t)|}{\max_t |\dot L_p(t)|},$$

    $\dot L_m$ measured (`loss_rate`), $\dot L_p$ predicted (`predicted_rate`).

    **Arguments:**

    - `reference`, `problem`, `ts`: as `loss_rate`.

    **Returns:** a scalar: NaN when both rates vanish identically, `inf` when only the predicted
    one does.

    **Raises:** `ValueError` as `loss_rate`, for a `problem` that is not a loss (a game: its
    oracle's gradient is not $\nabla L$), and for a rate that is not finite.
    """
    _a_loss(problem, "identity_deviation")
    return max_relative_deviation(*rates(reference, problem, ts))
