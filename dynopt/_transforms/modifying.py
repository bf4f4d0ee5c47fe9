r"""Input-gradient corrections: the *modifying* optimizer of backward error analysis, and USAM.

A modifying integrator (Chartier, Hairer, Vilmart 2007) feeds a method a corrected field so that
its modified equation is a chosen target. Here the method is any optax update map and the
corrected field is its input gradient,

$$\tilde g_h = \nabla L + c_0 + h\,c_1 + \dots + h^{p-1}c_{p-1},$$

with $c_k$ chosen order by order so that the optimizer fed $\tilde g_h$ has the modified field
$\tilde f = f^\star + O(h^p)$: it tracks the target flow $\dot\theta = f^\star(\theta)$ with global
error $O(h^p)$ instead of $O(h)$. When the optimizer's leading field is affine in its input with
slope $-r$ ($f_1[g] = -r\,g + \dots$: sgd, momentum, Nesterov, weight decay chains), the
$h^k$ defect of the order-$(k+1)$ automatic field of the optimizer fed the corrections so far,
$\delta_k = f_{k+1} - f^\star_{k+1}$ ($f^\star_1 = f^\star$, $f^\star_{j>1} = 0$), is cancelled by
$c_k = \delta_k / r$. For gradient descent towards gradient flow, $c_1 = -\tfrac12 H\nabla L$:
GD on $\nabla L - \tfrac h2 H\nabla L$ (one Hessian-vector product per step) tracks gradient flow
at $O(h^2)$.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._flows.base import AbstractFlow
from .._run import _Oracle as _RunOracle
from .hyper import nonnegative, positive


class _Oracle(eqx.Module):
    """The loss and its gradient from optax's extra arguments (`value_fn`, `grad_fn`), in the
    form the automatic modified flow reads (a problem's `loss`, `value`, `grad`,
    `value_and_grad`, `check_key`: corrections of order >= 2 step the optimizer on this oracle,
    which hands its own `value_fn`/`grad_fn` on as a problem's). A pytree (dynopt's oracles'
    bound methods are, their arrays its leaves): the argument of the jitted corrections."""

    value_fn: Callable
    grad_fn: Callable

    def loss(self, params):
        return self.value_fn(params)

    def value(self, params, key=None):
        del key
        return self.value_fn(params)

    def check_key(self, key):
        del key

    def grad(self, params, key=None):
        del key
        return self.grad_fn(params)

    def value_and_grad(self, params, key=None):
        del key
        return self.value_fn(params), self.grad_fn(params)


def _zero_value(params):
    del params
    return jnp.zeros(())


class _Opaque:
    """A caller's opaque function (`grad_fn=jax.grad(problem.loss)`, as plain optax passes it)
    held by an `_Oracle`: equal and hashed as the function, so the compiled corrections are
    reused from step to step. Equinox warns at every module that holds a JAX-transformed
    function over arrays (here a false alarm: an oracle trains nothing), and dynopt's own
    warnings are errors under its test settings; this wrapper is no such function to it."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Opaque) and self.fn == other.fn

    def __hash__(self) -> int:
        return hash(self.fn)


def _held(fn: Callable) -> Callable:
    """`fn` as an `_Oracle` field: an opaque function (its own only leaf) wrapped in `_Opaque`;
    a pytree (dynopt's oracles' bound methods, a `jax.tree_util.Partial`) as given, its arrays
    the leaves of the jitted corrections' argument."""
    leaves = jax.tree.leaves(fn)
    return _Opaque(fn) if len(leaves) == 1 and leaves[0] is fn else fn


def _oracle(extra: dict) -> _Oracle:
    if extra.get("grad_fn") is None:
        raise ValueError(
            "modifying: update needs the extra argument grad_fn (and value_fn): the gradient "
            "at other points, for the Hessian-vector products of the correction. dynopt.run, "
            "compare and solve pass them; with plain optax call "
            "tx.update(g, state, params, grad_fn=jax.grad(loss), value_fn=loss)."
        )
    grad_fn = extra["grad_fn"]
    outer = getattr(grad_fn, "__self__", None)
    if (
        isinstance(outer, _RunOracle)
        and isinstance(outer.problem, _Oracle)
        and outer.key is None
        and getattr(extra.get("value_fn"), "__self__", None) is outer
    ):
        # A step of the expansion of c_k on c_k's own oracle (`_field` steps the optimizer on
        # it, `raw_step` wraps it as a problem): the same functions, unwrapped, so that the
        # lower corrections see one oracle type at every depth (one trace each, not one per
        # depth).
        return outer.problem
    return _Oracle(_held(extra.get("value_fn") or _zero_value), _held(grad_fn))


def _traced(c: Callable) -> Callable:
    r"""`c(params, oracle)` traced once per signature inside an outer `jit` (a `jit` boundary:
    the expansions call it from every nested `jvp` of the steps, at the same arguments or along
    other directions, and differentiate its jaxpr instead of re-running its Python); called as
    is outside one (no compilation per `jvp` pattern for an eager `update`) or where the
    oracle's non-array parts are not hashable."""
    jitted = eqx.filter_jit(c)

    def call(params, oracle):
        # Staged (inside `jit`) iff a new constant is a tracer: eager `jvp`/`vmap` give arrays.
        if not isinstance(jnp.zeros(()), jax.core.Tracer):
            return c(params, oracle)
        leaves, treedef = jax.tree.flatten(eqx.filter(oracle, eqx.is_array, inverse=True))
        try:
            hash((tuple(leaves), treedef))
        except TypeError:
            return c(params, oracle)
        return jitted(params, oracle)

    return call


def _fed(optimizer, corrections: tuple) -> Callable[[Any], optax.GradientTransformationExtraArgs]:
    r"""$h \mapsto$ `optimizer(h)` fed $g + \sum_k h^k c_k(\theta)$ (`corrections` $= (c_0, \dots)$,
    functions `c(params, oracle)`: independent of $h$)."""

    def make(h):
        inner = optax.with_extra_args_support(optimizer(h))

        def update(updates, state, params=None, **extra):
            if corrections:
                if params is None:
                    raise ValueError("modifying: update needs params (the corrections use them).")
                oracle = _oracle(extra)
                for k, c in enumerate(corrections):
                    ck = optax.tree.cast_like(c(params, oracle), updates)
                    updates = optax.tree.add_scale(updates, h**k, ck)
            return inner.update(updates, state, params, **extra)

        return optax.GradientTransformationExtraArgs(inner.init, update)

    return make


def _field(optimizer, spec, order: int, params, oracle):
    r"""$f_{p}$ (`order` $= p$) of the automatic flow of `optimizer` at `params` on `oracle`;
    `spec` the `OptimizerSpec` that `modified_flow`'s checks found for the uncorrected optimizer
    (regime, `lag`, `sweeps`, `branches`, ...: an input correction changes none of them)."""
    import dataclasses

    from .._modified.fast import fast_coefficients
    from .._modified.recursion import modified_values
    from .._modified.slow import ModifiedState, slow_coefficients

    spec = dataclasses.replace(spec, optimizer=optimizer, order=order)
    if spec.regime == "fast":
        return modified_values(fast_coefficients(spec, oracle), params, order)[-1]
    state = spec.transform(jnp.zeros((), jnp.result_type(float))).init(params)
    y = ModifiedState(params, state)
    return modified_values(slow_coefficients(spec, oracle), y, order)[-1].params


def _slope(optimizer, spec, problem=None) -> float:
    r"""$r$ with $\partial f_1/\partial g = -r I$, measured on `problem` (float parameters in
    float64; `None`: a probe loss) and two shifts of its gradient (affine in $g$ with a scalar
    slope, or a `ValueError`)."""
    from .._modified.flow import _in_float64, _probe_problem

    def f1(shift, probe):
        loss = probe.loss

        def grad(p):
            return optax.tree.add(jax.grad(loss)(p), shift)

        oracle = _Oracle(loss, grad)
        return _field(optimizer, spec, 1, probe.params0, oracle)

    # Concrete even under an outer jit (`modifying(..., step_size=h)` in a traced sweep): the
    # probe's arrays too, which would otherwise be tracers of that jit. Standard promotion: a
    # float32 model's data meet the float64 parameters.
    with jax.ensure_compile_time_eval(), jax.numpy_dtype_promotion("standard"):
        # (Without x64 the probe and a float32 model stay float32: no float64 requests.)
        x64 = jax.config.read("jax_enable_x64")
        probe = _probe_problem() if problem is None else (_in_float64(problem) if x64 else problem)
        # A generic shift: entries of both signs and different sizes, in each leaf's shape.
        v = jax.tree.map(
            lambda x: (0.3 + jnp.cos(1.0 + jnp.arange(x.size, dtype=x.dtype))).reshape(x.shape),
            probe.params0,
        )

        def shifted(c):
            return f1(optax.tree.scale(c, v), probe)

        base, one, two = jax.jit(lambda: (shifted(0.0), shifted(1.0), shifted(2.0)))()
        d1, d2 = optax.tree.sub(one, base), optax.tree.sub(two, base)
        r = -float(optax.tree.vdot(d1, v) / optax.tree.vdot(v, v))
        dev = float(
            optax.tree.norm(optax.tree.add_scale(d1, r, v))
            + optax.tree.norm(optax.tree.add_scale(d2, -2.0, d1))
        )
    # 1e-9 in float64; in a lower precision (float32 without x64) the differences d1, d2 of
    # rounded fields carry its rounding, so the bound scales with the root of its epsilon
    # (the same margin on a log scale: 2.3e-5 in float32, where a float32 heavy ball deviates
    # by ~3e-7 and a coordinate-wise map by O(1)).
    eps = float(jnp.finfo(jnp.result_type(float)).eps)
    tol = 1e-9 * float(np.sqrt(eps / np.finfo(np.float64).eps))
    if not (np.isfinite(r) and r > 0) or dev > tol * max(1.0, abs(r)):
        raise ValueError(
            "optimizer: its continuum limit is not affine in the gradient with a scalar slope "
            f"(f1[g + v] - f1[g] = -r v fails by {dev:.3g}); modifying supports sgd-like maps "
            "(sgd, momentum, Nesterov, weight-decay chains), not coordinate-wise ones (Adam, "
            "RMSprop), whose input correction would need a Jacobian solve."
        )
    return r


def modifying(
    optimizer: Callable[[Any], Any],
    target_flow: AbstractFlow | None = None,
    order: int = 2,
    *,
    step_size=None,
    problem=None,
):
    r"""The *modifying* optimizer: `optimizer` fed a corrected gradient so that it follows
    `target_flow` to order $p$ instead of 1.

    The input gradient becomes $\tilde g_h = \nabla L + c_0 + h c_1 + \dots + h^{p-1}c_{p-1}$
    with $c_k = (f_{k+1} - f^\star_{k+1})/r$: $f_{k+1}$ the $(k+1)$-th automatic modified field
    (`dynopt.modified_flow`) of the optimizer already fed $c_0, \dots, c_{k-1}$, $f^\star_1$ the
    target's field, $f^\star_{j>1} = 0$, and $-r$ the slope of the optimizer's leading field in
    its input. Gradient descent towards gradient flow: $\tilde g = \nabla L - \tfrac h2 H\nabla L$
    (one Hessian-vector product per step), tracking gradient flow with error $O(h^2)$; heavy ball
    $\beta$ towards $\dot\theta = -\nabla L/(1-\beta)$: $\tilde g = \nabla L -
    \tfrac{h(1+\beta)}{2(1-\beta)^2}H\nabla L$. The corrections are built from the extra
    argument `grad_fn` (the gradient at any point) by nested `jax.jvp`; the incoming gradient
    is kept as the $\nabla L$ term. Fixed-decay optimizers (momentum) must start on their slow
    manifold, as `dynopt.modified_flow(modifying(opt), h).discretize(h)` does, or an $O(h)$
    initial layer remains.

    **Arguments:**

    - `optimizer`: a callable $h \mapsto$ `optax.GradientTransformation` whose continuum limit
      is affine in the gradient with a scalar slope (stateless or fixed decays).
    - `target_flow`: a parameter flow $\dot\theta = f^\star(\theta)$ with an $h$-independent
      field (e.g. `dynopt.flows.GradientFlow()`); `None`: the optimizer's own continuum limit
      (gradient flow in the optimizer's time, $\dot\theta = -r\nabla L$ for sgd-like maps).
    - `order`: $p \in \{1, 2, 3, 4\}$.
    - `step_size`: `None` to return the callable $h \mapsto$ transform (for `modified_flow`,
      `compare`); a value to return the transform at that $h$.
    - `problem`: the problem the optimizer will run on; the checks (regime, slope) run on its
      parameters, and without it on a small probe problem (one float64 3-vector). Pass it for
      a transform that acts by the parameters' structure (`optax.masked` weight decay,
      `optax.multi_transform`), which cannot step on the probe.

    **Returns:** $h \mapsto$ `optax.GradientTransformationExtraArgs` (or the transform itself
    when `step_size` is given); its `update` needs `params` and the extra argument `grad_fn`.

    **Raises:** `ValueError` for a non-callable optimizer, an order outside 1..4, a target that
    is not a parameter flow, a slow-state optimizer, or one whose leading field is not affine
    in the gradient with a scalar slope (and `modified_flow`'s refusals, e.g. a transform
    that cannot step on the probe problem without `problem=`).
    """
    from .._modified.flow import check_order, modified_flow

    if isinstance(optimizer, optax.GradientTransformation) or not callable(optimizer):
        raise ValueError(
            "optimizer must be a callable h -> optax.GradientTransformation, e.g. "
            f"`lambda h: optax.sgd(h)`, got {type(optimizer).__name__}."
        )
    check_order(order)
    if target_flow is not None and not isinstance(target_flow, AbstractFlow):
        raise ValueError(
            "target_flow must be None or a dynopt flow on the parameters (e.g. "
            f"dynopt.flows.GradientFlow()), got {type(target_flow).__name__}."
        )
    base = modified_flow(optimizer, 0.01, order=1, problem=problem)
    regime = base.spec.regime
    if regime == "slow":
        x0 = jnp.zeros(3) if problem is None else problem.params0
        floats = eqx.filter(optimizer(jnp.asarray(0.01)).init(x0), eqx.is_inexact_array)
        if jax.tree.leaves(floats):
            raise ValueError(
                "optimizer: its state is slow (decays scale with h), so its flow lives on "
                "(params, state) and an input-gradient correction cannot reach the state "
                "equations; use fixed decays (the fast regime) or a stateless optimizer."
            )
    if target_flow is not None:
        probe = jnp.zeros(3)
        if jax.tree.structure(target_flow.init(probe)) != jax.tree.structure(probe):
            raise ValueError("target_flow must be a flow on the parameters alone (init(θ) = θ).")
    r = _slope(optimizer, base.spec, problem)

    # Each c_k is a function of θ alone (the h^k coefficient of a defect), built once here
    # from the lower ones and traced once per signature (`_traced`).
    corrections: list = []
    if target_flow is not None:

        def c0(params, oracle):
            f1 = _field(optimizer, base.spec, 1, params, oracle)
            f_star = target_flow.vector_field(0.0, params, oracle)
            return jax.tree.map(lambda a, b: (a - b) / r, f1, f_star)

        corrections.append(_traced(c0))
    else:
        # c_0 = 0: a placeholder that keeps c_k at the power h^k (free after XLA's folding).
        corrections.append(lambda params, oracle: jax.tree.map(jnp.zeros_like, params))
    for k in range(1, order):
        fed_k = _fed(optimizer, tuple(corrections))

        def ck(params, oracle, fed_k=fed_k, k=k):
            f = _field(fed_k, base.spec, k + 1, params, oracle)
            return jax.tree.map(lambda a: a / r, f)

        corrections.append(_traced(ck))
    out = _fed(optimizer, tuple(corrections))
    return out if step_size is None else out(positive("step_size", step_size))


def usam(learning_rate, rho: float) -> optax.GradientTransformationExtraArgs:
    r"""Unnormalised sharpness-aware minimisation: $\theta_{k+1} = \theta_k -
    h\nabla L(\theta_k + \rho\nabla L(\theta_k))$ (Andriushchenko & Flammarion 2022). Its first
    modified loss is $L + (h/4 + \rho/2)\|\nabla L\|^2$ to first order in $\rho$.

    **Arguments:** `learning_rate` $h \ge 0$; `rho` $\rho \ge 0$, the ascent step (fixed as
    $h \to 0$).

    **Returns:** a `GradientTransformationExtraArgs` whose `update` needs `params` and `grad_fn`.
    """
    learning_rate = nonnegative("learning_rate", learning_rate)
    rho = nonnegative("rho", rho)

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, **extra):
        if params is None:
            raise ValueError("usam: update needs params (the ascent point θ + ρ g).")
        oracle = _oracle(extra)
        # Hyper-parameters in each leaf's dtype: float32/bfloat16 parameters stay so, also for
        # float64 hyper-parameters (a traced sweep) under strict promotion.
        ascent = jax.tree.map(lambda p, u: p + jnp.asarray(rho, p.dtype) * u, params, updates)
        g = optax.tree.cast_like(oracle.grad(ascent), updates)
        return jax.tree.map(lambda x: -jnp.asarray(learning_rate, x.dtype) * x, g), state

    return optax.GradientTransformationExtraArgs(init, update)
