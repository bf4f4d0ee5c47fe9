r"""`modified_flow`: the continuous-time model of any optax update map, to any order."""

import contextlib
import dataclasses
import functools as ft
import itertools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend import core as jex_core

from .._custom_types import Array, Params, ScalarLike
from .._discretization import Discretization, widest_dtype
from .._flows.base import AbstractFlow
from .._problem import AbstractProblem, Problem
from .._validation import is_traced, positive
from .branches import _AbstractWrapped, _OpaqueOracle, _zero_message, left_zero, step_bits
from .counters import bias_products, CountedState, current_tape
from .fast import fast_coefficients, fast_step, leaf_blocks, manifold, template
from .recursion import combine_values, modified_values
from .slow import counted_init, ModifiedState, slow_coefficients
from .smooth import classify
from .step import (
    has_counters,
    OptimizerSpec,
    passthrough,
    raw_step,
    saturate_counters,
    settle_flags,
    split_state,
    step_roots,
    zero_update,
)


# XLA's cheaper compilation for the check-only programs (as the test suite compiles everything,
# tests/conftest.py): no LLVM optimization, and on the CPU the elemental emitter instead of the
# fusion emitters (one MLIR -> LLVM module per fusion). Their values decide the checks (branch
# bits, contractions) and never reach a flow, whose programs compile as the caller's do.
_CHEAP_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
_EMITTER = "xla_cpu_use_fusion_emitters"


@ft.cache
@ft.cache
def _cheap_options() -> dict:
    """`_CHEAP_OPTIONS`, and the elemental emitter where this jaxlib knows its option (jaxlib
    0.11 dropped it; an unknown compile option is an error at compilation)."""
    options = {**_CHEAP_OPTIONS, _EMITTER: False}
    try:
        jax.jit(jnp.negative, compiler_options=options).lower(jnp.zeros(())).compile()
    except jax.errors.JaxRuntimeError:
        return dict(_CHEAP_OPTIONS)
    return options


@ft.cache
def _cheaply_jitted(fun: Callable) -> Callable:
    return eqx.filter_jit(fun, compiler_options=_cheap_options())


def _check_program(fun: Callable) -> Callable:
    """`eqx.filter_jit(fun)`, compiled with `_cheap_options()` where it is a program of its
    own: not while a program is traced, nor on a transformation's tracers (an eager `jvp` or
    `linearize` of a check stages the `jit` into a jaxpr, and JAX refuses compile options on
    a `jit` staged into another program, which compiles it as part of itself)."""
    plain = eqx.filter_jit(fun)

    @ft.wraps(fun)
    def call(*args, **kwargs):
        traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kwargs)))
        return (plain if traced or _staged() else _cheaply_jitted(fun))(*args, **kwargs)

    return call


def _staged() -> bool:
    """Whether a program is being traced here (a new constant is a tracer; eager `jvp`/`vmap`
    and `ensure_compile_time_eval` give arrays)."""
    return isinstance(jnp.zeros(()), jax.core.Tracer)


MAX_ORDER = 4


class Terms(NamedTuple):
    r"""The modified field's terms at a point, and the implicit regulariser they imply.

    - `fields`: $[f_1, \dots, f_p]$ at the point (state pytrees; $\tilde f = \sum_j h^{j-1}f_j$).
    - `rate`: $c$ in the least-squares fit $f_1 \approx -c\,\nabla L$ of the parameter part.
    - `regularizer`: $\lambda$ in $f_2 \approx -c\lambda\,\nabla\|\nabla L\|^2$, i.e. the flow
      is $\dot\theta \approx -c\nabla[L + h\lambda\|\nabla L\|^2]$ ($\lambda = 1/4$ for GD;
      `nan` for `order=1`).
    - `residuals`: the relative remainders of both fits (0 when $f_1$, $f_2$ are exactly of
      that form; large for coordinate-wise optimizers, whose $f_1$ is not along $\nabla L$).
    """

    fields: list
    rate: Array
    regularizer: Array
    residuals: tuple[Array, Array]


class ModifiedFlow(AbstractFlow):
    r"""The $p$-term modified flow of an optimizer, derived by backward error analysis:

    $$\dot y = \tilde f(y) = f_1(y) + \tau f_2(y) + \dots + \tau^{p-1}f_p(y),$$

    whose time-$\tau$ flow reproduces one optimizer step to $O(\tau^{p+1})$, so the discrete run
    tracks it with global error $O(\tau^p)$. $f_j$ come from the Taylor coefficients of the step
    in $\tau$ (nested `jax.jvp`) and the recursion of `dynopt._modified.recursion`; `fields`,
    `terms` expose them. Built by `dynopt.modified_flow`.

    **Fields:** `spec` (static: the optimizer, regime, order, state map, time unit);
    `step_size` $h$ (the optimizer's argument, a traced leaf: new values do not recompile).
    The time per step is $\tau = h^{1/n}$ (`spec.power` $= n$).
    """

    spec: OptimizerSpec = eqx.field(static=True)
    step_size: Array

    @property
    def order(self) -> int:
        return self.spec.order

    @property
    def tau(self) -> Array:
        return self.step_size ** (1.0 / self.spec.power)

    def init(self, params: Params):
        if self.spec.regime == "fast":
            return params
        opt_state = self.spec.transform(self.tau).init(params)
        if self.spec.products:
            return ModifiedState(params, counted_init(self.spec, self.tau, params, opt_state))
        forward = self.spec.state_map[0] if self.spec.state_map else None
        return ModifiedState(params, opt_state if forward is None else forward(opt_state, self.tau))

    def coefficients(self, problem):
        r"""`coefficients(y, n)`: the step's Taylor coefficients $[d_1, \dots, d_n]$ at $y$."""
        coeff = fast_coefficients if self.spec.regime == "fast" else slow_coefficients
        return coeff(self.spec, problem)

    def field_values(self, state, problem) -> list:
        r"""$[f_1, \dots, f_p]$ at `state`, computed jointly (one tower of `jax.linearize`)."""
        # One promotion context, so one trace of the jitted towers: diffrax checks a vector
        # field's output under standard promotion (an `eval_shape` in `diffeqsolve`) and then
        # solves under the caller's, and jit's cache is keyed by it (a second trace of an
        # order-3 field under strict promotion: 5 s of 14). The optax steps inside run under
        # standard promotion anyway (`with_standard_promotion`).
        with jax.numpy_dtype_promotion("standard"):
            return _field_values(self, state, problem)

    def fields(self, problem) -> list[Callable[[Any], Any]]:
        r"""$[f_1, \dots, f_p]$ on `problem`, as functions of the state (each evaluates the
        joint `field_values`; use that when more than one is needed)."""
        return [lambda y, j=j: self.field_values(y, problem)[j] for j in range(self.spec.order)]

    def vector_field(self, t: ScalarLike, state, problem: Problem):
        del t
        if self.spec.regime == "slow" and not isinstance(state, ModifiedState):
            # Bare parameters failed deep inside the step with "'dict' object has no
            # attribute 'state'" (the type's name of the user's parameters).
            raise ValueError(
                "state: this flow is in the slow regime, whose state is "
                "ModifiedState(params, optimizer state): pass `flow.init(params)`, got "
                f"{type(state).__name__}."
            )
        return combine_values(self.field_values(state, problem), self.tau)

    def params(self, state) -> Params:
        return state if self.spec.regime == "fast" else state.params

    def _state_of(self, state):
        """`state`, or `init(state)` for bare parameters where those fix the state (fast
        regime, or a slow regime without optimizer state); else a `ValueError`."""
        if self.spec.regime == "fast" or isinstance(state, ModifiedState):
            return state
        full = self.init(state)
        if not jax.tree.leaves(full.state):
            return full
        raise ValueError(
            "terms: this flow is in the slow regime, whose state is the parameters and the "
            "optimizer's state (ModifiedState(params, state)), and this optimizer has a state "
            f"({type(full.state).__name__}): got bare parameters "
            f"({type(state).__name__}), which do not fix it. Pass `flow.init(params)` (optax's "
            "initial state) or a ModifiedState with the optimizer state you mean."
        )

    def discretize(self, step_size: ScalarLike) -> Discretization:
        """The optimizer itself at `step_size` (fast regime: started on its slow manifold)."""
        h = positive("step_size", jnp.asarray(step_size))
        if not is_traced(h):
            # The spec builds the optimizer unchecked (it is also expanded at h = 0): its own
            # checks at this step size (an h -> Discretization map's a*h < 1) run here.
            self.spec.optimizer(h)
        return Discretization(
            self.spec,
            {"step_size": h},
            dt=h ** (1.0 / self.spec.power),
            init_fn=slow_manifold_init if self.spec.regime == "fast" else None,
        )

    def terms(self, state, problem: Problem) -> Terms:
        r"""$f_1, \dots, f_p$ at `state` and the implicit regulariser (see `Terms`).

        `state` is the flow's state, as `flow.init(params)` gives it: the parameters
        themselves in the fast regime, a `ModifiedState(params, optimizer_state)` in the slow
        one. Bare parameters are accepted wherever they fix the state: in the fast regime, and
        in the slow regime of an optimizer without state (`optax.sgd`: the state is then
        `flow.init(params)`). A slow-regime optimizer with a state (a momentum whose decay is
        1 - a·h) needs that state: pass `flow.init(params)` (optax's init) or your own
        `ModifiedState`.

        **Raises:** `ValueError` for bare parameters where the flow's state is more than the
        parameters (see above), and (outside `jit`) where a field is not finite at `state`."""
        state = self._state_of(state)
        _check_like_params0(self.params(state), problem)
        fs = self.field_values(state, problem)
        if bad := non_finite_leaves(fs):
            raise ValueError(
                f"terms: the fields are not finite at `state` ({bad}): "
                f"{_COUNTED_START if _at_counted_start(self, state) else NOT_FINITE}"
            )
        # Standard promotion: the fits' sums over a mixed float32/float64 tree (each leaf keeps
        # its dtype; the scalars come out in the widest).
        with jax.numpy_dtype_promotion("standard"):
            return self._fit(fs, state, problem)

    def _fit(self, fs: list, state, problem) -> Terms:
        theta = self.params(state)
        g = problem.grad(theta)
        f1 = self.params(fs[0])
        gg = optax.tree.norm(g, squared=True)
        rate = -optax.tree.vdot(f1, g) / gg
        res1 = optax.tree.norm(optax.tree.add_scale(f1, rate, g)) / optax.tree.norm(f1)
        if len(fs) < 2:
            nan = jnp.asarray(jnp.nan)
            return Terms(fs, rate, nan, (res1, nan))
        f2 = self.params(fs[1])
        # ∇‖∇L‖² = 2 H ∇L, one Hessian-vector product.
        grad_sq = optax.tree.scale(2.0, jax.jvp(problem.grad, (theta,), (g,))[1])
        lam = -optax.tree.vdot(f2, grad_sq) / (rate * optax.tree.norm(grad_sq, squared=True))
        rem = optax.tree.add_scale(f2, rate * lam, grad_sq)
        res2 = optax.tree.norm(rem) / optax.tree.norm(f2)
        return Terms(fs, rate, lam, (res1, res2))


# Why a modified field can be NaN or overflow at one point of a map that is smooth elsewhere.
NOT_FINITE = (
    "the optimizer's update is not differentiable there, or overflows: e.g. a denominator set "
    "by a tiny ε (optax.adabelief's eps = 1e-16: its fast second moment vanishes as h -> 0), "
    "or a kink the point sits on. No modified flow exists there: start elsewhere, or raise ε. "
    "(A second moment that is exactly 0 with its gradient entry, a parameter the loss does not "
    "read, is not such a point: its field is 0.)"
)


# Why the fields of a slow flow with counted bias corrections are NaN at `init`'s state.
_COUNTED_START = (
    "the optimizer's bias corrections 1 - b**k read its step counter, and in the slow regime "
    "they are carried as products c = b**k; at optax's zero start (c = 1, the state `init` "
    "gives) the series is singular (1 - b**0 = 0): the flow describes the run for t >> h, not "
    "from k = 0. Evaluate it at a state of t > 0: ModifiedState(params, CountedState(floats, "
    "products)) with each product b**k for the k steps taken (dynopt._modified.counters), or "
    "use state='fast' (fixed decays) or dynopt.flows.AdamFlow (its first-order flow, with the "
    "t -> 0 limits)."
)


def _at_counted_start(flow: ModifiedFlow, state) -> bool:
    """Whether `state` is a counted slow state with a product still at 1 (t = 0)."""
    if not flow.spec.products or not isinstance(state, ModifiedState):
        return False
    products = getattr(state.state, "products", ())
    return any(not is_traced(c) and bool(np.any(np.asarray(c) == 1.0)) for c in products)


def non_finite_leaves(tree, root: str = "θ") -> str:
    """The paths (`jax.tree_util.keystr`) of the concrete leaves of `tree` that hold a NaN or an
    infinity, comma-separated, `root` for a tree that is one array (its path is empty: a bare
    array was reported finite); empty when none (or when traced)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return ", ".join(
        jax.tree_util.keystr(path) or root
        for path, x in flat
        if eqx.is_array(x) and not is_traced(x) and not np.all(np.isfinite(np.asarray(x)))
    )


@eqx.filter_jit
def _field_values(flow: ModifiedFlow, state, problem) -> list:
    # A jit boundary: diffrax and compare trace the vector field several times (solver init,
    # steps, eval_shape); jit's cache traces the optax update towers once per signature.
    return modified_values(flow.coefficients(problem), state, flow.spec.order)


def check_order(order) -> int:
    """`order` as an int in [1, `MAX_ORDER`], else a `ValueError` naming the range."""
    if (
        isinstance(order, bool)
        or not isinstance(order, (int, np.integer))
        or not (1 <= order <= MAX_ORDER)
    ):
        raise ValueError(f"order must be an integer in [1, {MAX_ORDER}], got {order!r}.")
    return int(order)


def slow_manifold_init(disc: Discretization, params, problem):
    """`init_fn` of a fast-regime flow's discretization: the optimizer state on the slow
    manifold $M_h(\\theta_0)$ (to the flow's order), counters saturated."""
    return _manifold_state(disc.factory, disc.hyperparams["step_size"], params, problem)


@eqx.filter_jit
def _manifold_state(spec: OptimizerSpec, step_size, params, problem):
    tau = step_size ** (1.0 / spec.power)
    m = manifold(spec, problem, tau, params, spec.order + spec.lag)
    return eqx.combine(m, template(spec, params)[1])


# ---------------------------------------------------------------------------------------------
# Construction: checks on a probe problem (concrete, once).


def _probe_problem() -> Problem:
    x0 = jnp.asarray([0.3, -0.5, 0.8])
    return Problem(
        lambda x: jnp.sum(jnp.cos(x) + 0.5 * x**2) + 0.25 * jnp.sum(x) ** 2, x0, name="probe"
    )


def _leaf_changes(before, after) -> list[tuple[str, float]]:
    """`(path, max |after - before|)` of each floating leaf of `before` (concrete: on the host,
    where eagerly each leaf's shape compiled its own programs)."""
    flat_b, _ = jax.tree_util.tree_flatten_with_path(before)
    flat_a = jax.tree.leaves(after)
    out = []
    for (path, b), a in zip(flat_b, flat_a):
        if eqx.is_inexact_array(b):
            change = np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0)
            out.append((jax.tree_util.keystr(path), float(change)))
    return out


def _moved(params, x0) -> float:
    """The distance between two concrete parameter trees (on the host)."""
    leaves = [
        np.asarray(a) - np.asarray(b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(x0))
    ]
    return float(np.sqrt(sum(np.sum(np.square(d)) for d in leaves)))


class _Compiled(_AbstractWrapped):
    """`problem` for the construction checks: its gradient behind a `jit` boundary, traced once
    per signature (the checks step the optimizer dozens of times at the same parameters, and
    each trace of a network's gradient re-ran its Python: 100 traces on a digits MLP) and
    compiled as one program where called eagerly. Only the checks' programs see it: a flow's
    own programs (its fields, the runs' slow-manifold start, `compare`'s replay) trace the
    problem's gradient inline, as before, so XLA gets the programs it got and their numbers
    stay bit for bit."""

    problem: AbstractProblem

    def loss(self, params):
        return self.problem.loss(params)

    def value(self, params, key=None):
        return self.problem.value(params, key)

    def value_and_grad(self, params, key=None):
        return _value_and_grad(self.problem, params, key)


def _compiled(problem) -> AbstractProblem:
    """`problem` as `_Compiled`, where its static parts can key a `jit` cache."""
    if isinstance(problem, _Compiled):
        return problem
    try:
        hash(tuple(jax.tree.leaves(eqx.filter(problem, eqx.is_array, inverse=True))))
    except TypeError:
        return problem
    return _Compiled(problem)


@_check_program
def _value_and_grad(problem, params, key):
    return problem.value_and_grad(params, key)


def _step(spec: OptimizerSpec, tau, params, state, problem):
    """`raw_step` for the concrete checks: one compiled program per signature. Eagerly, the
    step (a network's gradient, the optimizer's per-leaf updates) was dispatched and compiled
    op by op, and each call re-traced the problem's gradient. Inside `bias_products` the step
    is traced under a tape of the same constant, and the caller's tape gets one entry per bias
    correction the step computed (`None`: what the checks read is how many; the decays and
    counts themselves are values inside the traced step, as they are eagerly, where
    `zero_safe_roots` traces the update)."""
    tape = current_tape()
    if tape is not None and tape.products is not None:
        return raw_step(spec, tau, params, state, problem)
    # The constant a dynamic argument: one program for every constant.
    constant = None if tape is None or tape.constant is None else jnp.asarray(tape.constant)
    out, n = _step_program(spec, tau, params, state, problem, tape is not None, constant)
    if tape is not None:
        tape.decays.extend([None] * n)
        tape.counts.extend([None] * n)
    return out


@_check_program
def _step_program(spec, tau, params, state, problem, taped: bool, constant):
    if not taped:
        return raw_step(spec, tau, params, state, problem), 0
    with bias_products(constant=constant) as tape:
        out = raw_step(spec, tau, params, state, problem)
    return out, len(tape.decays)


class _ByIdentity:
    """A cache key for an unhashable object (a problem with array leaves): its identity. Calls
    go to the object (an unhashable optimizer callable: a bound `discretize` of a flow with
    array hyper-parameters is static in the flow's spec, which jit hashes)."""

    def __init__(self, obj):
        self.obj = obj

    def __call__(self, *args, **kwargs):
        return self.obj(*args, **kwargs)

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other) -> bool:
        return isinstance(other, _ByIdentity) and other.obj is self.obj


def _concrete():
    """`jax.ensure_compile_time_eval` where `modified_flow` is called while a program is traced
    (under `jit`, as `compare`'s `reference`): the checks need values. Not otherwise: outside a
    trace their values are concrete anyway, and under it every program the checks trace (their
    jitted probes) had its constant sub-expressions evaluated at trace time, op by op, each
    compiled apart (a network's: 2 s of 10)."""
    return jax.ensure_compile_time_eval() if _staged() else contextlib.nullcontext()


@ft.cache
def _check(
    spec: OptimizerSpec, regime: str, on: _ByIdentity | None = None
) -> tuple[str, int, tuple[str, ...], int, int]:
    """Validate `spec` on `on.obj`, the user's problem, or without one on a probe problem;
    return the regime (resolving `"auto"`), the fast state's `lag`, the step's
    iterate-dependent `branches` and the manifold's `sweeps` (`OptimizerSpec`). The user's
    problem where given: a transform that acts by the parameters' structure (`optax.masked`,
    `optax.multi_transform` with a mask or labels computed from the leaves' shapes) may step on
    the probe's one vector with none of its momentum, clipping or bias corrections, which would
    decide the regime and branches wrongly. Concrete even when `modified_flow` is called under
    `jit` (e.g. `compare`'s `reference`), and cached: a sweep checks once."""
    # Standard promotion: a float32 model's data meet the float64 parameters of the checks.
    with _concrete(), jax.numpy_dtype_promotion("standard"):
        probe = _probe_problem()
        # Without x64 the checks' float64 tolerances cannot hold on a float32 model: the probe
        # then, and the user's problem only where the optimizer cannot step on the probe.
        x64 = jax.config.read("jax_enable_x64")
        target = probe if on is None or not x64 else _in_float64(on.obj)
        failure = _step_failure(spec, target)
        if failure is not None and target is probe and on is not None:
            target = on.obj
            failure = _step_failure(spec, target)
        if failure is None:
            # f1 at the user's start may be NaN for the user's reasons (a leaf the loss never
            # reads: said by `terms` and `compare`, naming it); the check for a singularity
            # of the step at τ = 0 runs where the step is generic, on the probe.
            finite = target is probe or _step_failure(spec, probe) is not None
            checked = _check_or_why(spec, regime, target, finite)
            if not finite:
                try:
                    _check_concrete(spec, regime, probe)
                except ValueError as e:  # the probe's other refusals are its structure's
                    if str(e).startswith(_SINGULAR):
                        raise
            return checked
        if failure.startswith(("ConcretizationTypeError", "TracerBoolConversionError")):
            raise ValueError(
                f"optimizer: building or stepping it with a traced step size failed with "
                f"{failure}. The expansion differentiates in h, so h (and what is computed "
                "from it) must stay a JAX value: no float(h), and no optax schedule whose "
                "arguments are checked with a Python `if` (optax.warmup_cosine_decay_schedule "
                "with h as a value). Build such parts from constants, or write the learning "
                "rate as a JAX expression in h."
            )
        if _holds_lookahead(spec, target):
            where = "the probe problem" if on is None else f"your problem ({on.obj.name})"
            raise ValueError(_LOOKAHEAD.format(where=where, failure=failure))
        if on is None:
            raise ValueError(
                "optimizer: one step on the probe problem (parameters: one float64 3-vector) "
                f"failed with {failure}. A transform built for a particular parameter "
                "structure (optax.masked, optax.multi_transform) cannot step there. Pass "
                "problem=<your problem> (compare does) so that the checks run on your "
                "parameters' structure."
            )
        on_probe = _step_failure(spec, probe)
        on_probe = (
            f"On dynopt's probe problem (one float64 3-vector) it failed with {on_probe}."
            if on_probe
            else "It steps on dynopt's probe problem (one float64 3-vector)."
        )
        raise ValueError(
            f"optimizer: one step on your problem ({on.obj.name}) failed with {failure}. A "
            "step is `tx.update(grad, state, params, ...)` with the gradient of the problem's "
            "loss in the parameters' own structure, and its updates added to them "
            "(optax.lookahead takes the gradient of its fast parameters alone, and does not "
            f"step so). {on_probe}"
        )


# The refusals of `_check_finite_field`: a step singular at τ = 0 wherever it is evaluated.
_SINGULAR = (
    "optimizer: the leading field f1 is not finite",
    "optimizer: its step length does not scale",
)


def _in_float64(problem):
    """`problem` with its floating parameters in float64 (the checks' tolerances are
    float64's; a float32 model's rounding would fail them)."""
    leaves = jax.tree.leaves(problem.params0)
    if all(not eqx.is_inexact_array(x) or x.dtype == jnp.float64 for x in leaves):
        return problem
    wide = jax.tree.map(
        lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, problem.params0
    )
    return eqx.tree_at(lambda p: p.params0, problem, wide)


def _check_or_why(
    spec: OptimizerSpec, regime: str, problem, finite: bool = True
) -> tuple[str, int, tuple[str, ...], int, int]:
    """`_check_concrete`, whose refusal of a step with a running maximum of its own state
    (each check meets it in another way: an update that does not vanish at h = 0, a leaf not
    affine in itself, a manifold on a kink) names that cause instead."""
    try:
        return _check_concrete(spec, regime, problem, finite)
    except ValueError as e:
        if "running maximum" in str(e):
            raise
        x0 = problem.params0
        state0 = spec.transform(jnp.zeros(())).init(x0)
        cycle = None if "modulo" in str(e) else _counter_period(spec, x0, state0)
        if cycle is not None:
            raise ValueError(
                f"optimizer: its integer state leaf {cycle[0]} returns to its start every "
                f"N = {cycle[1]} steps: the step is a cycle of N different maps, not one map "
                "of the state, and no modified flow of one step exists. optax.contrib.sam "
                "without opaque_mode alternates N - 1 adversarial steps, which move the "
                "parameters, with one descent step: use opaque_mode=True (dynopt passes the "
                "grad_fn it calls), whose one step is the whole SAM step. "
                + _periodic(cycle[1]).split(": ", 1)[1]
            ) from e
        plateau = getattr(optax.contrib, "ReduceLROnPlateauState", ())
        if any(isinstance(x, plateau) for x in jax.tree.leaves(state0, is_leaf=_is(plateau))):
            raise ValueError(
                "optimizer: optax.contrib.reduce_on_plateau cuts its scale by a factor when the "
                "loss has not improved on its best value for `patience` steps: a discrete event "
                "chosen by the whole loss history (a running minimum and a count of steps), not "
                "a smooth map of the state, so no modified flow exists across it. Between two "
                "cuts the optimizer is the one at a fixed scale s: model that, e.g. "
                "lambda h: optax.sgd(s * h) (s = the scale in the run's "
                "ReduceLROnPlateauState)."
            ) from e
        maxima = _running_maxima(spec, problem, x0, state0)
        if not maxima:
            raise
        raise ValueError(
            f"optimizer: its state leaf {maxima[0]} is a running maximum of itself, "
            "s <- max(s, ...): it never forgets (the largest value of the whole run, not a "
            "function of the current parameters and state), so the step is no map of the state "
            "with a modified flow, with fixed decays or decays 1 - a*h. A parameter-free "
            "optimizer whose step length is its own estimate (optax.contrib.prodigy's and "
            "dadapt_adamw's estim_lr, the distance estimate their learning rate only "
            "multiplies; optax.contrib.cocob's scale) or AMSGrad's nu_max is of this kind. "
            "Model the optimizer at a fixed step length instead: e.g. optax.adamw(c*h) with c "
            "the estimate read from a run's final state (prodigy/dadapt: state.estim_lr)."
        ) from e


@_check_program
def _init(spec: OptimizerSpec, tau, params):
    """The optimizer's initial state for `params` at `tau` (one compiled program)."""
    return spec.transform(tau).init(params)


def _is(cls):
    return lambda x: isinstance(x, cls)


def _running_maxima(spec: OptimizerSpec, problem, x0, state) -> list[str]:
    """Paths of the state leaves that one step sets to `max(leaf, ...)` of themselves."""
    flat, _ = jax.tree_util.tree_flatten_with_path(state)
    n_params = len(jax.tree.leaves(x0))
    try:
        with jax.numpy_dtype_promotion("standard"):
            closed = jax.make_jaxpr(lambda t, p, s: raw_step(spec, t, p, s, problem))(
                jnp.asarray(0.01), x0, state
            )
    except (TypeError, ValueError, AttributeError, KeyError, IndexError):
        return []
    ins = closed.jaxpr.invars[1 + n_params :]
    outs = closed.jaxpr.outvars[n_params:]
    # What depends on the parameters or the state (not on h alone: schedule-free's
    # max_lr <- max(max_lr, h) is a constant's maximum).
    dep = set(closed.jaxpr.invars[1:])
    found = []
    for eqn in closed.jaxpr.eqns:
        ins_dep = [not isinstance(x, jex_core.Literal) and x in dep for x in eqn.invars]
        if any(ins_dep):
            dep.update(eqn.outvars)
        if eqn.primitive.name != "max":
            continue
        for j, (v, o) in enumerate(zip(ins, outs)):
            others = [d for x, d in zip(eqn.invars, ins_dep) if x is not v]
            if any(x is v for x in eqn.invars) and eqn.outvars[0] is o and any(others):
                found.append(jax.tree_util.keystr(flat[j][0]))
    return found


def _counter_period(spec: OptimizerSpec, x0, state) -> tuple[str, int] | None:
    """`(path, N)` of an integer state leaf that counts the steps modulo N > 1 (k0 + 1, ...,
    k0 + N - 1, then k0 again: a counter reset every N steps), else `None`."""
    flat, _ = jax.tree_util.tree_flatten_with_path(state)
    counters = {
        i: (jax.tree_util.keystr(path), np.asarray(x))
        for i, (path, x) in enumerate(flat)
        if eqx.is_array(x) and jnp.issubdtype(x.dtype, jnp.integer)
    }
    tau = jnp.asarray(0.01)
    # One compiled update: eagerly, op by op, an L-BFGS step compiled ~90 small programs.
    update = eqx.filter_jit(ft.partial(zero_update, spec))
    for n in range(1, _CYCLE_STEPS + 1):
        state = update(tau, x0, state)
        leaves = jax.tree.leaves(state)
        for i, (path, start) in list(counters.items()):
            x = np.asarray(leaves[i])
            if n > 1 and np.array_equal(x, start):
                return path, n
            if not np.array_equal(x, start + n):
                del counters[i]  # not counting the steps
    return None


_LOOKAHEAD = (
    "optimizer: one step on {where} failed with {failure}. optax.lookahead steps "
    "LookaheadParams(fast, slow) with the gradient of the fast parameters alone, where a step "
    "here is `tx.update(grad, state, params)` with the gradient in the parameters' own "
    "structure: no parameters make it step so, LookaheadParams neither. And its step is no one "
    "map: every sync_period-th step moves the slow parameters toward the fast ones (its counter"
    " steps_since_sync returns to 0), a cycle of sync_period maps with no modified flow of one "
    "step. Model its fast optimizer between the syncs (`lambda h: optax.sgd(h)` for "
    "optax.lookahead(optax.sgd(h), ...)); with sync_period=1 (and reset_state=False) every step"
    " syncs, and lookahead is its fast optimizer with updates scaled by slow_step_size: `lambda"
    " h: optax.chain(optax.sgd(h), optax.scale(slow_step_size))`."
)


def _holds_lookahead(spec: OptimizerSpec, problem) -> bool:
    """Whether the optimizer's state on `problem` holds an `optax.LookaheadState`."""
    try:
        state = jax.eval_shape(lambda: spec.transform(jnp.zeros((), float)).init(problem.params0))
    except (TypeError, ValueError, AttributeError, KeyError, IndexError):
        return False
    found = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.LookaheadState))
    return any(isinstance(x, optax.LookaheadState) for x in found)


def _step_failure(spec: OptimizerSpec, problem) -> str | None:
    """`None` if one step of the optimizer traces on `problem`, else what it raised."""
    problem = _compiled(problem)
    x0 = problem.params0
    tau = jnp.zeros((), float)

    def step(t, p):
        return raw_step(spec, t, p, spec.transform(t).init(p), problem)

    try:
        with jax.numpy_dtype_promotion("standard"):
            # With the parameters abstract: closed over, they are concrete, and under the
            # caller's `ensure_compile_time_eval` the whole step (a network's gradient) ran
            # eagerly, op by op, to find shapes.
            jax.eval_shape(step, tau, x0)
        return None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError):
        pass
    try:
        # A step that needs concrete parameters, or failed: its error as it is met with them.
        with jax.numpy_dtype_promotion("standard"):
            jax.eval_shape(lambda t: step(t, x0), tau)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as e:
        return f"{type(e).__name__}: {' '.join(str(e).split())[:240]}"
    return None


@_check_program
def _generic(state0, constants: frozenset[int] = frozenset()):
    """A generic optimizer state near `state0`: optax's zeros would hide a state leaf that Φ₀
    moves. The `constants` (`passthrough`) stay as they are: they are hyper-parameters, and
    muon's Newton-Schulz coefficients moved by 0.37 made its iteration diverge (W ~ 1e206)."""
    floats, rest = split_state(state0, constants)
    floats = jax.tree.map(
        lambda x: x + 0.37 + 0.1 * jnp.cos(jnp.arange(x.size, dtype=x.dtype)).reshape(x.shape),
        floats,
    )
    return eqx.combine(floats, rest)


def _check_branch_at_zero(
    spec: OptimizerSpec, regime: str, products: int, branches: tuple, problem
) -> None:
    """The step's branches at τ = 0, where it is expanded, must be those it takes for small
    τ > 0 (from a generic state: its counters saturated in the fast regime, its bias
    corrections from products in a slow one that carries them)."""
    x0 = problem.params0
    state = _generic(_init(spec, jnp.zeros((), float), x0), passthrough(spec, x0))
    if regime == "fast":
        floats, rest = split_state(state)
        state = eqx.combine(floats, saturate_counters(rest))
    at_zero, near = _bits_at_zero(spec, problem, state, bool(products))
    if at_zero.shape == near.shape and np.array_equal(np.asarray(at_zero), np.asarray(near)):
        return
    raise ValueError(
        f"optimizer: a branch of its step at h = 0 is not the one it takes for h > 0 "
        f"(its {_names(branches)}, on the problem {problem.name!r}): the expansion at h = 0 would "
        "differentiate a branch that no run takes, and its modified flow would be wrong. A "
        "guard on the size of updates already scaled by the learning rate does this: "
        "optax.polyak_sgd(scaling=h) and optax.chain(optax.sgd(h), optax.scale_by_polyak()) "
        "test |h*grad L|^2 against the machine epsilon, so at h = 0 they take their "
        "'step = 0' branch. Apply the learning rate after the guard: "
        "optax.chain(optax.scale_by_polyak(max_learning_rate=M), optax.scale(-h)) takes "
        "steps -h*min((L - f_min)/|grad L|^2, M)*grad L. (optax.polyak_sgd(max_learning_rate=M, "
        "scaling=h) itself, for h -> 0, caps every step at M: it is optax.sgd(M*h).)"
    )


@_check_program
def _bits_at_zero(spec: OptimizerSpec, problem, state, products: bool):
    """The step's branch bits from `(problem.params0, state)` at τ = 0 and at τ = 1e-6 (bias
    corrections from products of 0.5 where `products`)."""
    x0 = problem.params0
    with bias_products(constant=0.5) if products else contextlib.nullcontext():
        at_zero = step_bits(spec, problem, jnp.zeros((), float), x0, state)[1]
        near = step_bits(spec, problem, jnp.asarray(1e-6), x0, state)[1]
    return at_zero, near


def _check_concrete(
    spec: OptimizerSpec, regime: str, problem, finite: bool = True
) -> tuple[str, int, tuple[str, ...], int, int]:
    """The construction checks on `problem` (`_check`); `finite`: also that $f_1$ is finite at
    its start (`_check_finite_field`)."""
    problem = _compiled(problem)
    x0 = problem.params0
    zero = jnp.zeros((), float)
    state0 = _init(spec, zero, x0)
    injected = tuple(
        getattr(optax, n)
        for n in ("InjectHyperparamsState", "InjectStatefulHyperparamsState")
        if hasattr(optax, n)
    )

    def is_injected(x):
        return isinstance(x, injected)

    if any(is_injected(x) for x in jax.tree.leaves(state0, is_leaf=is_injected)):
        raise ValueError(
            "optimizer: optax.inject_hyperparams keeps the hyper-parameters (and a step counter "
            "for schedules) in the optimizer state, where the expansion would treat them as "
            "dynamic variables. Build the optimizer directly with its hyper-parameters as "
            "functions of h, e.g. `lambda h: optax.sgd(h)`."
        )
    state = _generic(state0, passthrough(spec, x0))
    with jax.numpy_dtype_promotion("standard"):
        found = classify(
            lambda tau, p, s: raw_step(spec, tau, p, s, problem), jnp.asarray(0.01), x0, state
        )
        # The optimizer's own branches, with the loss and its gradient as opaque inputs (as
        # `step_bits` records them): a branch inside the loss (`jnp.logaddexp`'s max, abs and
        # select_n, smooth as a whole) is not the step's, and named as one it decided the
        # refusals' causes (AdaGrad's accumulator on a logistic loss was called Yogi's sign).
        own = classify(
            lambda tau, p, s: raw_step(spec, tau, p, s, _OpaqueOracle(problem)),
            jnp.asarray(0.01),
            x0,
            state,
        )
    if found.random:
        raise ValueError(
            f"optimizer: the update map is random ({', '.join(sorted(found.random))}: a PRNG "
            "draw, as in optax.noisy_sgd or optax.add_noise), so no deterministic modified flow "
            "exists. Model the noise as a diffusion (dynopt.sde) and take the drift from the "
            "optimizer without its noise."
        )
    if found.kinks:
        raise ValueError(
            f"optimizer: the update map is not smooth ({', '.join(sorted(found.kinks))} depend "
            "on the iterate): rounding (floor, round, argmax) or a branch inside a loop has no "
            "Taylor expansion in the step size across its kinks, which the step cannot be "
            "checked against along a run, so no modified flow exists. Replace the kink by a "
            "smooth surrogate (e.g. round(x) -> x) and model that."
        )
    branches = tuple(sorted(own.branches))
    params1, state1 = _step(spec, zero, x0, state, problem)
    moved = _moved(params1, x0)
    lag, products, trial = 0, 0, None
    if has_counters(state0) and regime != "fast":
        # A counter read by bias corrections of a slow state: time, carried by the
        # corrections' products (the step at h = 0 divides by 1 - b**1 = 0 otherwise).
        with bias_products(constant=0.5) as tape:
            trial = _step(spec, zero, x0, state, problem)
        if tape.decays and (regime == "slow" or not _state_moves(state, trial[1])):
            products = _counted_products(spec, problem, x0, state)
            params1, state1 = trial
            moved = _moved(params1, x0)
    generic = state

    def counted() -> bool:
        # A counter the step never reads (optax.constant_schedule(h), a schedule `lambda k: h`)
        # is an integer leaf like any other: a constant of the expansion, not a time.
        return has_counters(state0) and not products and _counter_read(spec, problem, x0, generic)

    if regime == "slow" and counted():
        raise ValueError(
            "state='slow': the optimizer state has an integer step counter that no bias "
            "correction reads (a schedule in steps): the update depends on the step index "
            "k = t/h, not only on the state, so no slow-regime modified flow exists."
        )
    if has_counters(state0) and not products and not np.isfinite(moved):
        changed = [] if trial is None else _leaf_changes(state, trial[1])
        moving = [k for k, c in changed if c > 1e-12]
        where = f" (at h = 0 the state leaf {moving[0]} still changes)" if moving else ""
        raise ValueError(
            "optimizer: its step is not finite at h = 0 with its integer step counter: a "
            "bias correction 1 - b**k vanishes where b = 1 at h = 0, next to a state that is "
            f"not near identity{where}. Give the whole state one regime: every decay and "
            "additive term scaling with h (slow), or every decay fixed (fast)."
        )
    if not np.isfinite(moved) or moved > 1e-12:
        # A state that moves at h = 0 (fast) may hold updates already scaled by the learning
        # rate (optax.rmsprop(h, momentum=β): a trace after the scaling), which move the
        # parameters from a generic state but vanish on the slow manifold (M_0 = 0): there
        # the reduced map is near identity, which is all the fast regime needs.
        fast = regime != "slow" and spec.state_map is None and _state_moves(state, state1)
        unbuilt = ""
        if fast:
            try:
                moved = _moved_on_manifold(
                    dataclasses.replace(spec, regime="fast"), problem, x0, branches
                )
                lag = 1
            except ValueError as e:  # no slow manifold to start from: said with the message
                fast = False
                unbuilt = (
                    f" The state moves at h = 0, but no slow manifold, from which such an update "
                    f"may vanish, could be built: {e}"
                )
        if not np.isfinite(moved) or moved > 1e-12:
            where = " from a state on its slow manifold" if fast else ""
            if fast and not np.isfinite(moved):
                raise ValueError(
                    f"optimizer: at step size h = 0 the update from a state on its slow "
                    f"manifold is not finite ({moved:.3g}): it reads a term that is infinite "
                    "there (0·∞ where the learning rate is h = 0), e.g. a root or division of "
                    "a quantity that vanishes on the manifold (centered RMSprop with eps=0: "
                    "ν - μ² = 0 under its square root). Give it a positive eps."
                )
            raise ValueError(
                f"optimizer: at step size h = 0 the update moves the parameters by {moved:.3g}"
                f"{where}; it must vanish (Φ₀ = identity).{unbuilt} Write the learning rate as a "
                "function of h, e.g. `lambda h: optax.adam(h)`, not a constant. If it is one "
                "already, the transform moves the parameters by a rule that does not scale "
                "with the step (SAM's ascent of fixed size outside opaque_mode, a projection "
                "such as optax.keep_params_nonnegative), which no modified flow in h describes; "
                "or by an average over the whole run whose weight is set by sums kept in its "
                "state, not by h (optax.contrib.schedule_free: x <- (1 - c)x + cz with "
                "c = lr^2 / (sum of lr^2 so far) = 1/(k + 1), in time t = kh the "
                "non-autonomous x' = (z - x)/t from t = 0, no modified flow of one step)."
            )
    if spec.state_map is not None:
        forward, inverse = spec.state_map
        back = inverse(forward(state, zero + 0.01), zero + 0.01)
        err = max((c for _, c in _leaf_changes(state, back)), default=0.0)
        if not np.isfinite(err) or err > 1e-10:
            raise ValueError(
                f"state_map: inverse(forward(s, h), h) differs from s by {err:.3g}; pass "
                "(forward, inverse) with inverse the inverse of forward."
            )
        state = forward(state, zero)
        state1 = forward(state1, zero)
    changes = [(k, c) for k, c in _leaf_changes(state, state1) if c > 1e-12 or not np.isfinite(c)]
    if regime == "auto":
        regime = "fast" if changes else "slow"
        if regime == "slow" and counted():
            raise ValueError(
                "optimizer: its state has an integer step counter (a learning-rate schedule in "
                "steps such as optax.exponential_decay, optax.inject_hyperparams, or a bias "
                "correction) and no fast floating state: the update depends on the step index "
                "k = t/h, not only on the state, so no autonomous modified flow exists. Use a "
                "constant learning rate written as a function of h (the flow at one frozen "
                "schedule value), without inject_hyperparams."
            )
    if regime == "slow":
        if changes:
            k, c = changes[0]
            head = (
                f"state='slow': the optimizer-state leaf {k} changes by {c:.3g} at step size "
                "h = 0 (Φ₀ ≠ identity). In the slow regime every decay must scale with h "
                "(e.g. b1 = 1 - a*h)"
            )
            # The remedy said is one that builds: the fast regime, checked.
            if (
                failure := _fast_failure(dataclasses.replace(spec, state_map=None), problem)
            ) is None:
                raise ValueError(
                    f"{head}; with these decays the state is fast: use state='fast' (or a "
                    "state_map / time_unit in which the state is near identity)."
                )
            if any(b.split()[0] in ("max", "min") for b in branches):
                raise ValueError(
                    f"{head}, but a maximum of a state leaf and another value (this step's "
                    f"{_names(branches)}) jumps at h = 0 to that value wherever it is larger, "
                    "whatever the decays. One that forgets through a fixed decay (Adamax's "
                    "nu <- max(|g| + eps, b2 nu)) is a fast state: fix that decay and use "
                    "state='fast'. A running maximum that never forgets (AMSGrad's nu_max <- "
                    "max(nu_max, nu): the largest nu of the whole run, not a function of the "
                    "current state) has no modified flow in either regime; optax.adam is "
                    "AMSGrad without the maximum."
                )
            raise ValueError(f"{head}. Nor is the state fast: {failure}")
        if products:
            spec = dataclasses.replace(spec, products=products)
            floats = split_state(state)[0]
            state = CountedState(floats, (jnp.asarray(0.5),) * products)
        if branches:
            _check_branch_at_zero(spec, regime, products, branches, problem)
        if finite:
            _check_finite_field(spec, regime, problem, ModifiedState(x0, state))
        return regime, lag, branches, 1, products
    try:
        return _check_fast(spec, regime, problem, state0, state, lag, branches, finite)
    except ValueError as e:
        # A step that moves the parameters only every N-th step fails the fast checks in
        # several ways (an accumulator never forgotten, a zero update at the saturated count):
        # the cause is its period, said instead.
        period = _period(spec, problem, x0, state) if has_counters(state0) else 0
        if not period:
            raise
        raise ValueError(_periodic(period)) from e


def _check_fast(
    spec: OptimizerSpec, regime: str, problem, state0, state, lag: int, branches, finite: bool
) -> tuple[str, int, tuple[str, ...], int, int]:
    """The fast regime's checks of `_check_concrete` (from `state`, a generic state)."""
    x0 = problem.params0
    zero = jnp.zeros((), float)
    settled = [split_state(settle_flags(spec, zero, x0, state0, n))[1] for n in (2, 3)]
    if not eqx.tree_equal(*settled):
        raise ValueError(
            "optimizer: a boolean leaf of its state keeps changing from step to step (not a "
            "first-step flag that settles): the update is not one map of the state, so no "
            "modified flow of this form exists."
        )
    _, sweeps = _contraction_checked(spec, problem, x0, branches)
    if lag and sweeps > 1:
        raise ValueError(
            "optimizer: its fast state holds updates already scaled by the step (a trace after "
            "the learning rate) and its leaves read each other: this combination of slow "
            "manifolds is not supported. Apply the learning rate after the trace."
        )
    spec = dataclasses.replace(spec, sweeps=sweeps)
    if branches:
        _check_manifold_branches(spec, problem, x0, branches)
    if has_counters(state0):
        # The fast state's counters are saturated (bias corrections at 1): a schedule in steps
        # is frozen at its value for k -> oo, which must not stop the optimizer.
        floats, rest = split_state(state)
        late = eqx.combine(floats, saturate_counters(rest))
        params_late, _ = _step(spec, zero + 0.01, x0, late, problem)
        # From optax's own (zero) state too: a step that stops from the generic state for a
        # reason of that state's (Momo's Polyak step clipped at 0 by its loss average and
        # lower bound) is no schedule.
        init_late = eqx.combine(split_state(state0)[0], saturate_counters(rest))
        if not _moved(params_late, x0) > 0 and not (
            _moved(_step(spec, zero + 0.01, x0, init_late, problem)[0], x0) > 0
        ):
            raise ValueError(
                "optimizer: its update vanishes once the step counter is large (a learning-rate "
                "schedule in steps that decays to 0, e.g. optax.exponential_decay): the step "
                "index k = t/h grows without bound as h -> 0, so such a schedule has no "
                "continuous model. Use a constant learning rate written as a function of h."
            )
        if _reads_counter(spec, problem, x0, floats, rest):
            warnings.warn(
                "optimizer: its update reads the integer step counter other than through "
                "optax's bias corrections (a schedule in steps, e.g. a warm-up, or RAdam's "
                "rectification). The modified flow, and the runs compare starts on its slow "
                "manifold, take it at its value for k -> oo: the limit as h -> 0 at any fixed "
                "t > 0 (a transition of N steps lasts N*h), not the schedule from step 0. For "
                "the flow at another value, write that constant learning rate as a function of "
                "h.",
                UserWarning,
                stacklevel=2,
            )
    if branches:
        _check_branch_at_zero(spec, regime, 0, branches, problem)
    if finite:
        _check_finite_field(dataclasses.replace(spec, lag=lag), regime, problem, x0)
    return regime, lag, branches, sweeps, 0


# Steps examined for a cycle of the step counter (`_period`): periods up to half of it.
_CYCLE_STEPS = 16


def _period(spec: OptimizerSpec, problem, x0, state) -> int:
    """$N$ where the step moves the parameters only every $N$-th step (a counter that cycles:
    optax.MultiSteps, optax.apply_every), read from `_CYCLE_STEPS` steps at `x0` from `state`;
    0 where every step moves them, or none does."""
    tau = jnp.asarray(0.01)
    moved = []
    for _ in range(_CYCLE_STEPS):
        params, state = _step(spec, tau, x0, state, problem)
        moved.append(_moved(params, x0) > 0)
    on = [k for k, m in enumerate(moved) if m]
    if not on or len(on) == len(moved):
        return 0
    if len(on) == 1:
        return _CYCLE_STEPS
    # A cycle moves them at equal gaps of N > 1 steps. Steps that all move after a first few
    # that do not (a warm-up schedule from 0) are no cycle: their schedule is refused for what
    # it is (it read "k modulo N = 1").
    gaps = {b - a for a, b in itertools.pairwise(on)}
    return gaps.pop() if len(gaps) == 1 and min(gaps) > 1 else 0


def _periodic(period: int) -> str:
    return (
        f"optimizer: its step depends on the step index k modulo N = {period}: it moves the "
        "parameters only every N-th step (optax.MultiSteps and optax.apply_every accumulate "
        "N steps and apply them at once), so it is a cycle of N different maps "
        "whose accumulator is reset every N steps, not one map of the state, and no modified "
        "flow of one step exists. Model N steps as one: the N gradients are taken at the same "
        "parameters, so N steps of optax.MultiSteps(opt, N) are one step of opt (on N "
        "batches), and N steps of optax.chain(optax.sgd(h), optax.apply_every(N)) one step of "
        "optax.sgd(N*h); the modified flow of that one step describes every N-th iterate."
    )


def _counted_products(spec: OptimizerSpec, problem, x0, state) -> int:
    """How many bias corrections a step reads from the counter (`dynopt._modified.counters`);
    a `ValueError` when the counter enters the step in any other way (a schedule in steps)."""
    tau = jnp.asarray(0.01)
    with bias_products() as tape:
        zero_update(spec, tau, x0, state)
    floats, rest = split_state(state)
    diff = 0.0
    with bias_products(constant=0.5):
        now = _step(spec, tau, x0, state, problem)
        # A few steps and a long history later (a schedule with a boundary there).
        for k in (7, 2**20):
            later = jax.tree.map(lambda x, k=k: x + k if _is_counter(x) else x, rest)
            then = _step(spec, tau, x0, eqx.combine(floats, later), problem)
            diff = max([diff, *(c for _, c in _leaf_changes(now, then))])
    if not tape.decays or not diff == 0.0:
        raise ValueError(
            "optimizer: its update reads the integer step counter other than through optax's "
            "bias corrections (optax.tree.bias_correction): a learning-rate schedule in steps, "
            "optax.inject_hyperparams, or a rectification as in RAdam. The step index k = t/h "
            "grows without bound as h -> 0, so such an update has no slow-regime modified "
            "flow; use state='fast' (fixed decays) or a constant learning rate written as a "
            "function of h."
        )
    return len(tape.decays)


def _fast_failure(spec: OptimizerSpec, problem) -> str | None:
    """Why `spec` is no fast-regime optimizer on `problem` (its refusal), or `None`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _check_concrete(spec, "fast", problem)
    except ValueError as e:
        return str(e)
    return None


def _names(branches) -> str:
    """The primitives of `spec.branches` labels (`max, sign`)."""
    return ", ".join(dict.fromkeys(b.split()[0] for b in branches))


def _counter_read(spec: OptimizerSpec, problem, x0, state) -> bool:
    """Whether one step (the parameters and the floating state it returns) changes with the
    integer step counters of `state`, a few steps and a long history later."""
    floats, rest = split_state(state)
    tau = jnp.asarray(0.01)
    now = _step(spec, tau, x0, state, problem)
    for k in (7, 2**20):
        later = jax.tree.map(lambda x, k=k: x + k if _is_counter(x) else x, rest)
        then = _step(spec, tau, x0, eqx.combine(floats, later), problem)
        if any(c != 0.0 for _, c in _leaf_changes(now, then)):
            return True
    return False


def _reads_counter(spec: OptimizerSpec, problem, x0, floats, rest) -> bool:
    """Whether one step's update changes with the integer step counter once optax's bias
    corrections no longer read it (each at its k -> oo value 1), past the first steps (a
    first-step rule, as novograd's `count == 0`, is not a schedule)."""
    tau = jnp.asarray(0.01)
    updates = []
    with bias_products(constant=0.0):
        for k in (5, 1000, 2**20):
            at_k = jax.tree.map(lambda x, k=k: jnp.full_like(x, k) if _is_counter(x) else x, rest)
            updates.append(_step(spec, tau, x0, eqx.combine(floats, at_k), problem)[0])
    return any(c != 0.0 for u in updates[1:] for _, c in _leaf_changes(updates[0], u))


def _is_counter(x) -> bool:
    return eqx.is_array(x) and jnp.issubdtype(x.dtype, jnp.integer)


def _state_moves(state, state1) -> bool:
    return any(c > 1e-12 or not np.isfinite(c) for _, c in _leaf_changes(state, state1))


def _moved_on_manifold(spec: OptimizerSpec, problem, x0, branches) -> float:
    """How far one step at h = 0 moves `x0` from the fast state's manifold $s = M_0(x_0)$
    (the contraction checked first: $M_0$ divides by $1 - a$)."""
    _, sweeps = _contraction_checked(spec, problem, x0, branches)
    spec = dataclasses.replace(spec, sweeps=sweeps)
    zero_tau = jnp.zeros((), float)
    _, rest = template(spec, x0)
    m0 = manifold(spec, problem, zero_tau, x0, 1)
    params1, _ = fast_step(spec, problem, zero_tau, x0, m0, rest)
    return float(optax.tree.norm(optax.tree.sub(params1, x0)))


def _check_finite_field(spec: OptimizerSpec, regime: str, problem, y) -> None:
    """$f_1$ at the probe point must be finite. A step that is smooth in τ can still be
    evaluated through a removable singularity at τ = 0 (`sqrt(h)` with `h = τ**2`, a state map
    dividing by τ), where autodiff gives NaN: said here, not returned as a flow of NaNs."""
    # With JAX's own derivative of the update's square roots (0·∞ = NaN at 0): a root of a
    # quantity that vanishes at τ = 0 but not with it (sqrt(τ²c): a normalization after the
    # learning rate, AdaBelief's (g - m)² with eps_root = 0) has no expansion and is refused
    # here, on the probe, where no gradient entry vanishes identically (`roots`).
    flow = ModifiedFlow(
        dataclasses.replace(spec, regime=regime, zero_roots=False), jnp.asarray(0.01)
    )
    f1 = flow.field_values(y, problem)[0]
    flat, _ = jax.tree_util.tree_flatten_with_path(f1)
    bad = [jax.tree_util.keystr(path) for path, x in flat if not np.all(np.isfinite(x))]
    if bad and regime == "slow" and not spec.products and spec.state_map is None:
        # A step whose length does not shrink with τ has no expansion: its derivative at
        # τ = 0 is as large as the inverse of a jitter (here NaN, through a norm at 0).
        lengths = [
            float(optax.tree.norm(optax.tree.sub(raw_step(spec, t, *y, problem)[0], y.params)))
            for t in (jnp.asarray(1e-2), jnp.asarray(1e-4))
        ]
        if lengths[1] > 0.1 * lengths[0]:
            raise ValueError(
                f"optimizer: its step length does not scale with the step size: one step "
                f"moves the parameters by {lengths[0]:.3g} at τ = 0.01 and {lengths[1]:.3g} at "
                "τ = 0.0001 (and f1 is not finite). A normalization after the learning rate "
                "(optax.chain(optax.sgd(h), optax.normalize_by_update_norm())) scales every "
                "step to a fixed length, so the steps do not vanish as h -> 0 (except below "
                "the scale of its eps), and no modified flow exists. Normalize first: "
                "optax.chain(optax.normalize_by_update_norm(), optax.sgd(h)), normalized "
                "descent (f1 = -grad L/(|grad L| + eps))."
            )
    if bad:
        raise ValueError(
            f"optimizer: the leading field f1 is not finite ({', '.join(bad)}): the step is "
            "evaluated through a singularity at τ = 0 that autodiff cannot pass, even where the "
            "map is smooth in τ, e.g. `jnp.sqrt(h)` under time_unit=0.5 (h = τ²), or a "
            "state_map that divides by τ. Write the optimizer as a function of the time per "
            "step τ and pass step_size=τ without time_unit; heavy ball in velocity form: "
            "`lambda tau: optax.chain(optax.scale(tau), optax.trace(decay=1 - a * tau), "
            "optax.scale(-tau))` is `optax.sgd(tau**2, momentum=1 - a * tau)` and follows "
            "`dynopt.flows.HeavyBall(a)`."
        )


def _probe_state(zero, scale):
    """Positive entries (a second moment under a square root must stay real), not constant,
    of size `scale`."""
    return jax.tree.map(
        lambda x: scale * (1.5 + jnp.cos(1.0 + jnp.arange(x.size, dtype=x.dtype))).reshape(x.shape),
        zero,
    )


def _probe_scale(spec, problem, x0, branches) -> float:
    """The size of the state at which `_contraction_probe` reads the fast state's structure:
    the largest of 1, 1e-2, 1e-4 whose state takes the zero state's branches. A step with
    branches is affine in its state on one side of each (Adamax's max(|g| + ε, β₂ν) takes
    |g| + ε near ν = 0, β₂ν for ν > (|g| + ε)/β₂); the slow manifold is checked to lie on the
    zero state's side (`_check_manifold_branches`)."""
    if not branches:
        return 1.0
    scales = (1.0, 1e-2, 1e-4)
    ref, probes = _probe_bits(spec, problem, x0, scales)
    for scale, here in zip(scales, probes):
        if here.shape == ref.shape and np.array_equal(here, ref):
            return scale
    return 1.0


@_check_program
def _probe_bits(spec, problem, x0, scales):
    """The step's branch bits at τ = 0 from the zero fast state and from probe states of the
    sizes `scales` (one compiled program: eagerly, each evaluation binds every primitive)."""
    zero, rest = template(spec, x0)
    tau0 = jnp.zeros((), float)

    def bits(m):
        return step_bits(spec, problem, tau0, x0, eqx.combine(m, rest))[1]

    return bits(zero), [bits(_probe_state(zero, scale)) for scale in scales]


# A count well past any start-up, below `SATURATED_COUNT`: a decay that still changes between
# the two reads the counter for ever (`_contraction_checked`).
_EARLY_COUNT = 2**20


@_check_program
def _contraction_probe(spec, problem, x0, scale):
    r"""The fast state's structure on the probe: the own-leaf coefficients $a$ (at the zero
    state), the deviation of each leaf's update from $s_i' = a_i\odot s_i + c_i(\theta,
    s_{-i})$ with a constant $a_i$, its deviation from an update affine in the leaf itself
    (with a coefficient that may depend on θ and the other leaves), the coupling matrix
    `C[i, j]` > 0 where leaf $j$'s update reads leaf $i$, and the own-leaf coefficients at
    the step count `_EARLY_COUNT` (`SATURATED_COUNT` for $a$). Deviations are per unit of the
    probe state's size `scale`."""
    zero, rest = template(spec, x0)
    probe = _probe_state(zero, scale)
    zero_tau = jnp.zeros((), float)

    def S(m):
        return jax.tree.leaves(fast_step(spec, problem, zero_tau, x0, m, rest)[1])

    at_zero = leaf_blocks(spec, problem, x0, zero, linearize=True)
    at_probe = leaf_blocks(spec, problem, x0, probe, linearize=True)
    early = leaf_blocks(
        spec, problem, x0, zero, saturate_counters(rest, _EARLY_COUNT), linearize=True
    )
    flat, treedef = jax.tree.flatten(probe)
    n = len(flat)
    stepped = S(probe)

    def size(x):
        return jnp.max(jnp.abs(x), initial=0.0)

    dev = jnp.zeros((), float)
    curved = jnp.zeros((), float)
    coupling = []
    for i in range(n):
        a_i = at_zero[i][i]
        without = jax.tree.unflatten(
            treedef, [jnp.zeros_like(x) if j == i else x for j, x in enumerate(flat)]
        )
        step_i = stepped[i] - S(without)[i]
        dev = dev + size(at_probe[i][i] - a_i) + size(step_i - a_i * flat[i]) / scale
        curved = curved + size(step_i - at_probe[i][i] * flat[i]) / scale
        coupling.append(
            jnp.stack(
                [
                    jnp.where(j == i, 0.0, size(at_zero[i][j]) + size(at_probe[i][j]))
                    for j in range(n)
                ]
            )
        )
    a = jax.tree.unflatten(treedef, [at_zero[i][i] for i in range(n)])
    a_early = jax.tree.unflatten(treedef, [early[i][i] for i in range(n)])
    return a, dev, curved, jnp.stack(coupling) if n else jnp.zeros((0, 0)), a_early


# Steps of the state update at h = 0 from the zero state to the orbit state of
# `_orbit_contraction_probe` (any few: a state the optimizer itself reaches).
_ORBIT_STEPS = 3


@_check_program
def _orbit_contraction_probe(spec, problem, x0, scale):
    r"""`_contraction_probe`'s structure read leaf by leaf around a state the optimizer itself
    reaches, $s^\ast = S_0^3(\theta, 0)$: leaf $i$ is set to the probe state's (of size
    `scale`) or to 0 with the other leaves at $s^\ast$. The generic probe sets every leaf at
    once and can leave the optimizer's domain (centered RMSprop's $\nu - \mu^2 + \epsilon < 0$
    under a square root), where a term that vanishes at h = 0 is $0\cdot$NaN; $s^\ast$ keeps
    the leaves that leaf $i$'s update reads consistent. Couplings are read at 0 and $s^\ast$."""
    zero, rest = template(spec, x0)
    probe = _probe_state(zero, scale)
    zero_tau = jnp.zeros((), float)

    def S(m):
        return jax.tree.leaves(fast_step(spec, problem, zero_tau, x0, m, rest)[1])

    orbit = jax.lax.fori_loop(
        0, _ORBIT_STEPS, lambda _, m: fast_step(spec, problem, zero_tau, x0, m, rest)[1], zero
    )
    at_zero = leaf_blocks(spec, problem, x0, zero, linearize=True)
    at_orbit = leaf_blocks(spec, problem, x0, orbit, linearize=True)
    flat, treedef = jax.tree.flatten(probe)
    base = jax.tree.leaves(orbit)
    n = len(flat)

    def size(x):
        return jnp.max(jnp.abs(x), initial=0.0)

    def with_leaf(i, x):
        return jax.tree.unflatten(treedef, [x if j == i else b for j, b in enumerate(base)])

    dev = jnp.zeros((), float)
    curved = jnp.zeros((), float)
    coupling = []
    for i in range(n):
        a_i = at_zero[i][i]

        def S_i(x, i=i):
            return S(with_leaf(i, x))[i]

        stepped, own = jax.jvp(S_i, (flat[i],), (jnp.ones_like(flat[i]),))
        step_i = stepped - S_i(jnp.zeros_like(flat[i]))
        dev = dev + size(own - a_i) + size(step_i - a_i * flat[i]) / scale
        curved = curved + size(step_i - own * flat[i]) / scale
        coupling.append(
            jnp.stack(
                [
                    jnp.where(j == i, 0.0, size(at_zero[i][j]) + size(at_orbit[i][j]))
                    for j in range(n)
                ]
            )
        )
    return dev, curved, jnp.stack(coupling) if n else jnp.zeros((0, 0))


@_check_program
def _own_at_orbit(spec, problem, x0):
    r"""At $s^\ast = S_0^3(\theta, 0)$, a state the optimizer itself reaches: each fast state
    leaf's own coefficient $\partial_{s_i}S_{0,i}\,\mathbf 1$ and its change
    $S_{0,i}(s^\ast) - s^\ast_i$ at h = 0, relative to $1 + |s^\ast_i|$ (flat leaf lists)."""
    zero, rest = template(spec, x0)
    tau0 = jnp.zeros((), float)

    def S(m):
        return fast_step(spec, problem, tau0, x0, m, rest)[1]

    orbit = jax.lax.fori_loop(0, _ORBIT_STEPS, lambda _, m: S(m), zero)
    blocks = leaf_blocks(spec, problem, x0, orbit, linearize=True)
    moves = [
        jnp.abs(b - a) / (1 + jnp.abs(a))
        for a, b in zip(jax.tree.leaves(orbit), jax.tree.leaves(S(orbit)))
    ]
    return [blocks[i][i] for i in range(len(blocks))], moves


def _holds(spec, x0, kind: type) -> bool:
    """Whether the optimizer's fast state (`template`'s) holds a `kind` (an optax state)."""
    found = jax.tree.leaves(template(spec, x0)[0], is_leaf=lambda x: isinstance(x, kind))
    return any(isinstance(x, kind) for x in found)


def _unforgetting_leaves(spec, problem, x0, branches) -> list[str]:
    """The fast state's leaves that, at a state the run reaches (`_own_at_orbit`), move at
    h = 0 where their own coefficient is 1: accumulators that never forget (SM3's row and
    column maxima on a matrix), which no decay 1 - a*h makes slow. Not a state moved by a
    sign or abs (Yogi's v <- v - (1 - b2) sign(v - g^2) g^2): its rate 1 - b2 scales with h,
    and state='slow' takes it."""
    if any(b.split()[0] in _SIGNS for b in branches):
        return []
    zero, _ = template(spec, x0)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(zero)[0]]
    own, moves = _own_at_orbit(spec, problem, x0)
    return [
        path
        for path, a, move in zip(paths, own, moves)
        if np.any((np.abs(np.asarray(a)) >= 1 - 1e-12) & (np.asarray(move) > 1e-12))
    ]


def _chain_length(reads: np.ndarray, names: list[str]) -> int:
    """The longest chain of leaves in the coupling graph (`reads[i, j]`: leaf j reads leaf i),
    or a `ValueError` for a cycle (no triangular order to solve the manifold in)."""
    n = len(reads)
    depth: dict[int, int] = {}
    active: set[int] = set()

    def visit(j):
        if j in depth:
            return depth[j]
        if j in active:
            raise ValueError(
                "state='fast': the optimizer-state leaves read each other in a cycle (through "
                f"{names[j]}): the slow manifold is solved leaf after leaf, which needs each "
                "leaf's update to depend only on leaves earlier in a chain. Use state='slow' "
                "with decays that scale with h."
            )
        active.add(j)
        depth[j] = 1 + max((visit(i) for i in range(n) if reads[i, j]), default=0)
        active.discard(j)
        return depth[j]

    return max((visit(j) for j in range(n)), default=1)


def _narrow_state_leaves(spec, x0) -> list[str]:
    """The fast state's floating leaves narrower than the parameters' widest dtype, each as
    `"path (dtype)"` (a first moment in `mu_dtype=jnp.float32` on float64 parameters)."""
    wide = jnp.finfo(widest_dtype(x0)).bits
    state = jax.eval_shape(lambda p: template(spec, p)[0], x0)
    return [
        f"{jax.tree_util.keystr(path)} ({x.dtype})"
        for path, x in jax.tree_util.tree_leaves_with_path(state)
        if jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits < wide
    ]


def _contraction_checked(spec, problem, x0, branches=()) -> tuple[Any, int]:
    """`(a, sweeps)`: the own-leaf contractions and the Jacobi sweeps of the slow manifold
    (`OptimizerSpec.sweeps`), after checking the fast state's structure (on the side of the
    step's `branches` that the zero state takes)."""
    # By dtype, before any probe: the rounding to the narrow dtype passed or failed the affine
    # test below by where it landed (a start near the minimum, with tiny gradients, passed).
    narrow = _narrow_state_leaves(spec, x0)
    if narrow:
        raise ValueError(
            f"state='fast': the optimizer-state leaves {', '.join(narrow)} are stored in a "
            f"narrower float than the parameters ({widest_dtype(x0)}): their rounding is no "
            "Taylor expansion in h, and hides whether the update has one. Keep the state in the "
            "parameters' precision (mu_dtype=None, accumulator_dtype=None), or run the "
            "analysis on parameters of the state's dtype."
        )
    scale = _probe_scale(spec, problem, x0, branches)
    a, err, curved, coupling, a_early = _contraction_probe(spec, problem, x0, jnp.asarray(scale))
    if not np.isfinite(float(err) + float(curved)) and np.all(
        np.isfinite(np.concatenate([np.ravel(x) for x in jax.tree.leaves(a)] + [np.zeros(0)]))
    ):
        # Not finite at the generic probe, finite at the zero state: the probe may have left
        # the optimizer's domain (centered RMSprop's ν - μ² + ε < 0 under a square root, read
        # through 0·NaN by a momentum trace at h = 0); read again around a state it reaches.
        # Still not finite there: the step itself is (the messages below say so).
        err, curved, coupling = _orbit_contraction_probe(spec, problem, x0, jnp.asarray(scale))
    flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
    for (path, late), early in zip(flat_a, jax.tree.leaves(a_early)):
        # A decay read from the counter that still approaches 1 between k = 2^20 and 2^30
        # (optax.adafactor's 1 - (k+1)^-r): the state's memory, (k+1)^r steps, grows without
        # bound, so at k -> oo it never forgets and has no slow manifold. In time t = kh the
        # window is t^r h^(1-r): the h -> 0 limit at fixed t exists (the state at its
        # instantaneous target), but the runs reach it at the rate h^(1-r), with a lag that is
        # no power series in h and depends on t: no order-p modified flow, not even p = 1
        # (its error would be O(h^(1-r)), and the saturated count freezes the state instead).
        gap_late = 1 - np.abs(np.asarray(late))
        gap_early = 1 - np.abs(np.asarray(early))
        if np.any((gap_early > 0) & (gap_late < 0.5 * gap_early)):
            leaf = jax.tree_util.keystr(path)
            raise ValueError(
                f"state='fast': the decay of the optimizer-state leaf {leaf} reads the step "
                "counter and tends to 1 as k -> oo (|∂s'/∂s| = "
                f"{1 - float(np.min(gap_early)):.10g} at k = 2^20, "
                f"{1 - float(np.min(gap_late)):.10g} at k = 2^30), as optax.adafactor's "
                "1 - (k+1)^(-decay_rate): its memory grows without bound, so the state never "
                "settles on a slow manifold and no modified flow exists. (At a fixed time "
                "t = kh its averaging window, t^r h^(1-r) with r = decay_rate, vanishes only as "
                "a fractional power of h: runs approach their h -> 0 limit at the rate "
                "h^(1-r), not with an error O(h^p).) Use a fixed decay: optax.rmsprop(h, "
                "decay=b), or optax.adafactor(h, decay_rate=0.0, clipping_threshold=None) (no "
                "memory; its updates g/sqrt(g^2) then have RMS 1, on the kink of the default "
                "clipping threshold 1)."
            )
    # (`not <=`: a NaN deviation, e.g. a state at 0 under a square root, fails too.)
    if not float(err) <= 1e-10:
        if float(curved) <= 1e-10:
            raise ValueError(
                "state='fast': the state update at h = 0 is affine in each leaf, "
                "s_i' = a_i s_i + c_i, but with a coefficient a_i that depends on the "
                f"parameters or on other leaves (deviation from a constant one {float(err):.3g})"
                ": e.g. Adadelta's average of squared updates, E[dx^2]' = (rho + (1 - rho) "
                "g^2/(E[g^2] + eps)) E[dx^2] + ..., whose coefficient reads E[g^2]. The fast "
                "regime solves the slow manifold with constant coefficients (optax's EMAs and "
                "traces) and does not support it. With decays that scale with h the state is "
                "slow and supported: state='slow', e.g. optax.adadelta(h, rho=1 - a*h)."
            )
        stuck = _unforgetting_leaves(spec, problem, x0, branches)
        if stuck:
            # No decay to scale with h: state='slow' refuses it too (a running maximum).
            raise ValueError(
                "state='fast': the state update at h = 0 is not affine in each leaf "
                f"(deviation {float(err):.3g}), and the optimizer-state leaves "
                f"{', '.join(stuck)} do not contract at a state the run reaches (|∂s'/∂s| = 1 "
                "there, and the step moves them at h = 0: they never forget). An accumulator, "
                "as SM3's on a matrix parameter (a row's and a column's maximum of "
                "min(row, column) + g^2, AdaGrad's sum of squared gradients covered), grows "
                "with the step count k = t/h and has no decay to scale with h: no modified "
                "flow exists in either regime. Model an average instead of the sum: "
                "optax.rmsprop(h, decay=b) or optax.adam(h) (fast), or decays 1 - a*h (slow)."
            )
        if _holds(spec, x0, optax.contrib.MechanicState):
            # Its betas are constants, and it reads the counter (x0): state='slow' refuses it.
            raise ValueError(
                "state='fast': optax.contrib.mechanize's state update at h = 0 is not affine "
                f"in each leaf (deviation {float(err):.3g}): its scale s, the step length that "
                "multiplies the base optimizer's updates, is its own estimate, grown from a "
                "'wealth' (r, m, v: sums over fixed decays betas, a maximum, a clamp) as a "
                "parameter-free tuner, not supported; state='slow' does not apply (the betas "
                "are constants, and it reads its step counter). With s fixed its step is, up "
                "to its eps, the base optimizer's scaled by c = sum(s): model that, e.g. "
                "`lambda h: optax.chain(optax.sgd(h), optax.scale(c))` for "
                "mechanize(optax.sgd(h)), c = jnp.sum(state.s) from a run's MechanicState."
            )
        raise ValueError(
            "state='fast': the state update at h = 0 is not affine in each leaf with a "
            f"constant coordinate-wise coefficient, s_i' = a_i s_i + c_i(θ, other leaves) "
            f"(deviation {float(err):.3g}): a leaf is nonlinear in itself. Its slow manifold "
            "is not supported; with decays that scale with h (1 - a*h) the state is slow: "
            "state='slow'."
        )
    names = [jax.tree_util.keystr(p) for p, _ in flat_a]
    sweeps = _chain_length(np.asarray(coupling) > 0, names)
    for path, ai in flat_a:
        worst = float(np.max(np.abs(np.asarray(ai)), initial=0.0))
        if not worst < 1:
            leaf = jax.tree_util.keystr(path)
            if abs(worst - 1) <= 1e-12 and any(b.split()[0] in _SIGNS for b in branches):
                raise ValueError(
                    f"state='fast': the optimizer-state leaf {leaf} does not contract at h = 0 "
                    f"(|∂s'/∂s| = 1 off the kink of its {_names(branches)}): a state moved "
                    "toward a target by steps whose size does not shrink near it, as Yogi's "
                    "v <- v - (1 - b2) sign(v - g^2) g^2, reaches it in finitely many steps "
                    "and then oscillates across the sign's kink. Its would-be slow manifold "
                    "v = g^2 is that kink, so no modified flow exists with a fixed b2; "
                    "optax.adam, v <- b2 v + (1 - b2) g^2, is the smooth rule."
                )
            if abs(worst - 1) <= 1e-12:  # never forgotten
                raise ValueError(
                    f"state='fast': the optimizer-state leaf {leaf} does not contract at h = 0 "
                    "(|∂s'/∂s| = 1: it is never forgotten). Either a slow variable, which the "
                    "step changes by O(h) (then state='slow'); or an accumulator that the step "
                    "changes by O(1) at h = 0, like AdaGrad's sum of squared gradients, which "
                    "grows with the step count k = t/h and has no modified flow of this form "
                    "(an average instead, a decay 1 - a*h, is RMSprop's slow regime), or a "
                    "value kept from the start of the run (prodigy's params0) that the step "
                    "reads. (A constant that the step passes through unchanged, as muon's "
                    "Newton-Schulz coefficients, is a hyper-parameter and supported.)"
                )
            raise ValueError(
                f"state='fast': the optimizer-state leaf {leaf} does not contract at h = 0 "
                f"(|∂s'/∂s| = {worst:.3g} ≥ 1): it is a slow variable. Use state='slow' with "
                "decays that scale with h."
            )
    return a, sweeps


# Branches that move a state by a step of fixed size (`sign`, `abs`): Yogi's second moment.
_SIGNS = ("sign", "abs")


@_check_program
def _manifold_bits(spec: OptimizerSpec, problem, x0):
    r"""The step's branch bits at τ = 0 from the zero fast state, and `(bits, tie)` from its
    slow manifold $M_0$ and from $M_0$ nudged by a relative $\pm10^{-8}$: on a kink the compared
    values are equal, a tie, or (rounded) bits that change under the nudge. `(bits, tie,
    zero)` in fact, a `sign`/`abs` operand exactly 0 apart in `zero`; then the bits at the two
    points that steps of τ = 1e-6 from $M_0$ reach, and the parameters of the second."""
    tau0 = jnp.zeros((), float)
    zero, rest = template(spec, x0)
    m0 = manifold(spec, problem, tau0, x0, 1)

    def bits(m):
        _, b, tie, at_zero = step_bits(spec, problem, tau0, x0, eqx.combine(m, rest), zeros=True)
        return b, tie, at_zero

    nudged = [jax.tree.map(lambda x, f=f: f * x, m0) for f in (1.0, 1 + 1e-8, 1 - 1e-8)]
    # Two steps of τ = 1e-6 along the run from M_0: a sign/abs operand exactly 0 there that
    # is 0 at the next points too has vanishing derivatives along the step (the gradient entry
    # of a parameter the loss does not read, or behind a dead ReLU unit, is 0 near by); one by
    # accident leaves 0 (its sign, in the bits, changes).
    point = (x0, eqx.combine(m0, rest))
    later = []
    for _ in range(2):
        point = step_bits(spec, problem, jnp.asarray(1e-6), *point)[0]
        later.append(step_bits(spec, problem, tau0, *point)[1])
    return bits(zero)[0], [bits(m) for m in nudged], later, point[0]


def _check_manifold_branches(spec: OptimizerSpec, problem, x0, branches) -> None:
    r"""The fast state's slow manifold $M_0(\theta)$ must lie off every kink of the step and on
    the side of its branches that the zero state takes (where its contractions are read). A
    `sign`/`abs` operand exactly 0 there that the next steps keep at 0 (a gradient entry that
    vanishes near $\theta_0$: its field is 0) is no kink; one that they move off 0 is, named
    where it is a gradient entry."""
    ref, sides, later, x_later = _manifold_bits(spec, problem, x0)
    ref = np.asarray(ref)
    at_zero = bool(sides[0][2])
    sides = [(np.asarray(b), bool(tie)) for b, tie, _ in sides]
    stays = all(np.array_equal(np.asarray(b), sides[0][0]) for b in later)
    if at_zero and not stays and (names := left_zero(problem, x0, x_later)):
        raise ValueError(_zero_message(names, "state='fast': on its slow manifold at θ0 it has"))
    if (
        (at_zero and not stays)
        or any(tie for _, tie in sides)
        or any(b.shape != sides[0][0].shape or not np.array_equal(b, sides[0][0]) for b, _ in sides)
    ):
        # A sign or abs operand exactly 0 that stays 0 along the step passed above (its field
        # is 0); one that leaves 0 and is no gradient entry (named above) is said here.
        signs = [b for b in _names(branches).split(", ") if b in _SIGNS]
        zero = (
            f"For its {', '.join(signs)} the tie is an operand exactly 0 that the next step "
            "leaves (not a gradient entry that vanishes near θ0, as a parameter the loss does "
            "not read, whose field is 0): start where it is not 0. Else: "
            if signs and at_zero and not stays
            else ""
        )
        raise ValueError(
            f"state='fast': on its slow manifold the step sits on the kink of its "
            f"{_names(branches)} (compared values equal, where the step has no derivative). "
            f"{zero}E.g. AMSGrad's running maximum nu_max <- max(nu_max, nu), whose fixed "
            "states have nu_max = nu: a running maximum never forgets (nu_max is the largest "
            "nu of the whole run, not a function of the current parameters), so that state has "
            "no slow manifold and no modified flow exists, with fixed decays or decays 1 - a*h "
            "(optax.adam is AMSGrad without the maximum). A threshold that the manifold's "
            "values meet exactly (a clipping of updates whose size is fixed there) has to move "
            "off them."
        )
    here = sides[0][0]
    if here.shape != ref.shape or not np.array_equal(here, ref):
        raise ValueError(
            f"state='fast': the state's slow manifold lies on another side of its "
            f"{_names(branches)} than the zero state (optax's init), where the fast regime "
            "reads the state update's coefficients: they would be those of a branch the run "
            "leaves after its first steps, not of the one on the manifold, where the flow "
            "lives: not supported. E.g. ADOPT's max(sqrt(nu), eps) is eps at nu = 0 and "
            "sqrt(nu) = |g| on its manifold nu = g^2 (its clip likewise cuts g/eps there, not "
            "g/|g|). No decay changes this: write the step without a branch between the two, "
            "for ADOPT sqrt(nu + eps^2) in place of the maximum and no clip: "
            "`optax.chain(optax.scale_by_rms(decay=b2, eps=eps**2), optax.ema(b1, "
            "debias=False), optax.scale(-h))` (ADOPT up to eps and its reading of the previous "
            "nu, an O(h) difference)."
        )


def modified_flow(
    optimizer: Callable[[Any], Any],
    step_size: ScalarLike,
    order: int = 1,
    *,
    state: str = "auto",
    state_map: tuple[Callable, Callable] | None = None,
    time_unit: float | None = None,
    problem: Problem | None = None,
) -> ModifiedFlow:
    r"""The continuous-time model of any optax optimizer, to order $p$, by automatic backward
    error analysis.

    One step $y \mapsto \Phi_\tau(y)$ is expanded in the time per step $\tau$:
    $\Phi_\tau = y + \tau d_1 + \tau^2 d_2 + \dots$ (nested `jax.jvp`), and the modified field
    $\tilde f = f_1 + \tau f_2 + \dots + \tau^{p-1}f_p$ follows from
    $f_1 = d_1$, $f_2 = d_2 - \tfrac12 f_1'f_1$,
    $f_3 = d_3 - \tfrac16(f_1''(f_1,f_1) + f_1'f_1'f_1) - \tfrac12(f_1'f_2 + f_2'f_1)$, …
    The optimizer tracks the returned flow with global error $O(\tau^p)$. For gradient descent
    $f_2 = -\tfrac12 H\nabla L$, $f_3 = -\tfrac13 H^2\nabla L - \tfrac1{12}D^3L[\nabla L,\nabla L]$.

    Regimes (`state`):

    - `"slow"`: every state decay scales with $h$ (e.g. `optax.rmsprop(h, decay=1 - κh)`); the
      flow lives on $(\theta, s)$ (`ModifiedState`). Bias corrections $1 - b^k$ read from the
      step counter (`optax.adam(h, b1=1 - a_1h, b2=1 - a_2h)`) are carried as state variables
      $c = b^k$, $c \mapsto b\,c$ (`CountedState`; the counter is time $t = kh$): the
      order-1 field is `AdamFlow`'s with the exact corrections $1 - e^{-a_it}$. The series is
      singular at $t = 0$ ($1 - b^0 = 0$): it describes the run for $t \gg h$, not from
      optax's zero start.
    - `"fast"`: decays fixed as $h \to 0$ (optax's defaults); the state is reduced to its slow
      manifold $s = M_h(\theta)$ and the flow lives on $\theta$. Heavy ball
      `optax.sgd(h, momentum=β)` gives
      $\dot\theta = -\frac{1}{1-\beta}\nabla[L + \frac{h(1+\beta)}{4(1-\beta)^2}\|\nabla L\|^2]$
      at `order=2` (Ghosh et al. 2023). Adam/RMSprop with fixed $\beta_1, \beta_2$ give
      $f_1 = -P_0 = -g/D$ coordinate-wise, $D = \sqrt{g^2+\epsilon}$ (`optax.rmsprop`,
      $\epsilon$ inside the root) or $D = |g| + \epsilon$ (Adam), and the $O(h)$ term
      (Cattaneo et al. 2024; derived by this route and matched to $10^{-15}$ in the tests)

      $$f_2 = -\frac{\nabla N}{D}\odot\Big[\frac{1+\beta_1}{2(1-\beta_1)}
      - \frac{1+\beta_2}{2(1-\beta_2)}\,\frac{u}{D}\Big],\qquad
      \nabla N = H P_0,$$

      with $u = g^2/D$ (RMSprop, $\beta_1 = 0$) or $u = |g|$ (Adam), and $N$ the perturbed
      one-norm $\sum_i\sqrt{\partial_iL^2+\epsilon}$ (RMSprop) or
      $\sum_i |\partial_iL| - \epsilon\log(1 + |\partial_iL|/\epsilon)$ (Adam): a penalty
      $h\,w_i\,\partial_i N$ with a per-coordinate weight $w_i$ that turns negative (an
      anti-penalty) where $\beta_2$'s lag outweighs $\beta_1$'s, e.g. $\beta_2 = 0.999$,
      $\beta_1 = 0.9$ and $|g| \gg \epsilon$. `discretize(h)` starts the optimizer on the
      manifold (optax's zero start leaves an $O(h)$ initial layer for a trace). A state of
      updates already scaled by the step (a trace after the learning rate:
      `optax.rmsprop(h, momentum=β)`) moves $\theta$ at $h = 0$ from a generic state but not
      from its manifold, which starts at $M_0 = 0$: supported at orders 1 and 2, each order
      reading one manifold term more (e.g. $f_1 = -g/((1-\beta)D)$). Leaves that read other
      leaves (AdaBelief's $v$ reads the new $m$; a trace of RMS-scaled gradients,
      `optax.chain(optax.scale_by_rms(), optax.trace(b), optax.scale(-h))`) are solved leaf
      after leaf along the chain, each leaf affine in itself with a constant coefficient
      ($s_i' = a_i\odot s_i + c_i(\theta, s_{-i})$, the EMAs and traces of optax); leaves in a
      cycle or nonlinear in themselves are refused. A state that vanishes on the manifold under
      a square root (AdaBelief's $(g - m)^2 = O(h^2)$ with a tiny `eps_root`) makes the step
      non-analytic at the scale of $h$: the order-1 flow holds, higher orders do not and are
      refused (a root whose argument at $h = 0$ is below `ROOT_FLOOR` of its value at
      $h = 0.01$, on the probe problem).
    - `"auto"`: `"slow"` when one step at $h = 0$ leaves the state unchanged, else `"fast"`.

    **Arguments:**

    - `optimizer`: a callable $h \mapsto$ `optax.GradientTransformation` (how the
      hyper-parameters depend on $h$), or $h \mapsto$ `Discretization` (e.g. `flow.discretize`).
    - `step_size`: $h$, the argument of `optimizer` (a traced leaf).
    - `order`: $p \in \{1, 2, 3, 4\}$ (1 or 2 for a state of step-scaled updates); 1 is the
      continuum limit.
    - `state_map`: `(forward, inverse)` with `forward(opt_state, τ) -> z` and
      `inverse(z, τ) -> opt_state`, the coordinates of a slow state (must be regular at τ = 0).
    - `time_unit`: $q$ with the time per step $\tau = h^q$ and $1/q$ an integer (e.g. 0.5 when
      `optimizer` takes a learning rate $\alpha$ and the time per step is $\sqrt\alpha$).
    - `problem`: the problem the flow is for; the construction checks (smoothness, regime,
      branches, contraction) run on it, and without it on a small probe problem (one float64
      3-vector). Pass it for a transform that acts by the parameters' structure
      (`optax.masked`, `optax.multi_transform`, a mask or labels computed from the leaves'
      shapes): on the probe's one vector such a transform may step with none of its momentum
      or clipping, and the regime and branches found there would not be yours. `compare`
      passes its problem.

    The step is differentiated at $\tau = 0$, so it must be computed without a removable
    singularity there: `jnp.sqrt(h)` with $h = \tau^2$, or a `state_map` dividing by $\tau$,
    give NaN derivatives of a smooth map (a `ValueError` says so). Write such an optimizer as a
    function of $\tau$ instead. Heavy ball in $\sqrt\alpha$ time, in velocity form
    (trace $= \tau\,\times$ optax's, the same iterates as `optax.sgd(τ², momentum=1 - aτ)`):

    ```python
    hb = lambda tau: optax.chain(
        optax.scale(tau), optax.trace(decay=1 - a * tau), optax.scale(-tau))
    flow = dynopt.modified_flow(hb, jnp.sqrt(alpha), order=2)  # state (θ, -v)
    ```

    whose `order=1` field is `dynopt.flows.HeavyBall(a)`'s,
    $\dot\theta = v,\ \dot v = -av - \nabla L$.

    **Returns:** a `ModifiedFlow`; `flow.discretize(h)` is the optimizer itself, so `solve`,
    `run` and `compare(flow, problem, hs, t1, reference=lambda h: modified_flow(opt, h, p))`
    work unchanged.

    A branch chosen by the iterate (`select_n`/`cond`: gradient clipping, a `jnp.where`
    guard; `max`/`min`/`clamp`: `optax.clip`, a running maximum, a truncation; `sign`/`abs`:
    signSGD, Lion, Adamax) is smooth on each side of its switching surface: the flow is
    expanded on the side the point is on (`spec.branches` names them), exact for a run that
    never switches (signSGD: $\dot\theta = -\mathrm{sign}\,\nabla L$ while no $\partial_iL$
    crosses 0); `compare` replays its runs with the step's predicates recorded and refuses one
    that switches, meets a tie of a comparison (its kink), or takes another branch than the
    step at $h = 0$. A step whose branch at $h = 0$ is not its branch for small $h > 0$ (a
    guard on updates already scaled by $h$, as `optax.polyak_sgd(scaling=h)`), or whose slow
    manifold sits on a kink (AMSGrad's running maximum, Yogi's sign), is refused here, as is
    rounding.

    **Raises:** `ValueError` for a non-callable optimizer, `order` outside 1..4, a non-smooth
    update (rounding, a branch inside a loop), a branch at $h = 0$ other than for $h > 0$, a
    random update (a PRNG draw), a step counter read other than by a bias correction (a
    schedule in steps, `optax.inject_hyperparams`; a counter never read, as a constant
    schedule's, is no time), a step periodic in the counter (`optax.MultiSteps`,
    `optax.apply_every`), an update that does not vanish at $h = 0$ or whose length does not
    scale with $h$, a state leaf that is not near identity in the slow regime (named, with its
    change), a non-contracting or coupled state in the fast regime (a decay that tends to 1
    with the counter: `optax.adafactor`), a slow manifold on a kink, `order` $\ge 2$ where
    the fast state's manifold puts a square root at its floor (AdaBelief's tiny `eps_root`),
    `order` > 2 for a state of step-scaled updates, a `state_map` that does not invert, a bad
    `time_unit` or `state`, a `problem` that is not a dynopt problem.
    """
    if isinstance(optimizer, Discretization) or not callable(optimizer):
        raise ValueError(
            "optimizer must be a callable h -> optax.GradientTransformation (e.g. "
            "`lambda h: optax.adam(h)`) or h -> Discretization (e.g. `flow.discretize`), got "
            f"{type(optimizer).__name__}."
        )
    check_order(order)
    if state not in ("auto", "slow", "fast"):
        raise ValueError(f"state must be 'auto', 'slow' or 'fast', got {state!r}.")
    if problem is not None and not isinstance(problem, AbstractProblem):
        raise ValueError(
            "problem must be None or a dynopt problem (e.g. dynopt.Problem(loss, params0)), "
            f"got {type(problem).__name__}."
        )
    power = 1
    if time_unit is not None:
        # A number only: float("0.5") would read a string, float(True) a flag, as 1.
        real = isinstance(time_unit, int | float | np.integer | np.floating) or (
            isinstance(time_unit, np.ndarray | jax.Array)
            and np.ndim(time_unit) == 0
            and not is_traced(time_unit)
            and (
                jnp.issubdtype(jnp.result_type(time_unit), jnp.floating)
                or jnp.issubdtype(jnp.result_type(time_unit), jnp.integer)
            )
        )
        q = float(time_unit) if real and not isinstance(time_unit, bool | np.bool_) else np.nan
        power = round(1.0 / q) if q > 0 else 0
        if not (0 < q <= 1) or abs(power * q - 1) > 1e-12:
            raise ValueError(
                f"time_unit must be q in (0, 1] with 1/q an integer (τ = h^q), got {time_unit!r}."
            )
    if state_map is not None and (
        not isinstance(state_map, tuple) or len(state_map) != 2 or not all(map(callable, state_map))
    ):
        raise ValueError("state_map must be a pair (forward, inverse) of callables (s, τ) -> z.")
    if state == "fast" and state_map is not None:
        raise ValueError("state_map applies to state='slow' (or 'auto' resolving to slow).")
    # Before the checks, which build and compile the optimizer's programs (a bad step size
    # was refused only after them).
    step_size = positive("step_size", jnp.asarray(step_size, float))
    try:
        hash(optimizer)
    except TypeError:
        optimizer = _ByIdentity(optimizer)
    _check_time(optimizer, power)
    # Checked at order 1: the checks do not depend on the order, so one per optimizer.
    on = None if problem is None else _ByIdentity(problem)
    regime, lag, branches, sweeps, products = _check(
        OptimizerSpec(optimizer, power, "slow", 1, state_map), state, on
    )
    if regime == "fast" and state_map is not None:
        raise ValueError("state_map: the state is fast (not near identity at h = 0); drop it.")
    if lag and order > 2:
        # A cost, not the mathematics: the flow exists to every order (the state is the
        # optax-unit state times h). Forced, order 3 compiled in 11 s for
        # nesterov_momentum (its fields equal optax's nesterov to 1e-15), order 4 in 164 s,
        # and order 3 of optax.rmsprop(h, momentum=b) or optax.lars did not in 300 s.
        raise ValueError(
            f"order must be 1 or 2 for an optimizer whose state holds step-scaled updates (a "
            f"trace after the learning rate, as in optax.rmsprop(h, momentum=b) and "
            f"optax.lars; a velocity in parameter units, as dynopt.transforms."
            f"nesterov_momentum's v = θ_n - θ_(n-1)), got {order}. Its modified flow exists "
            "to every order, but each order needs one more slow-manifold term there, and from "
            "order 3 on the nested manifolds take minutes to compile. Write the state in the "
            "gradient's units, with the learning rate after it: the same iterates as "
            "nesterov_momentum(h, b) (reparametrize=True, lookahead=1) are "
            "optax.sgd(h, momentum=b, nesterov=True) (lookahead=0: optax.sgd(h, momentum=b)), "
            "and optax.chain(optax.scale_by_rms(), optax.trace(b), optax.scale(-h)) is "
            "rmsprop's momentum so: states that hold no step-scaled updates have no such "
            "limit."
        )
    if products and state_map is not None:
        raise ValueError(
            "state_map: an optimizer whose bias corrections read the step counter carries them "
            "as products of its decays; a state_map on top is not supported."
        )
    spec = OptimizerSpec(
        optimizer, power, regime, int(order), state_map, lag, branches, sweeps, products
    )
    if regime == "fast" and order > 1:
        _check_roots(spec)
    return ModifiedFlow(spec, step_size)


# A square root whose argument, on the slow manifold, is below this fraction of its value at
# τ = 0.01 when τ = 0: its series in τ converges only for τ ≲ sqrt(ROOT_FLOOR)·0.01 (the zero
# of its argument is that close), so no usable step size sees the expansion's higher orders.
ROOT_FLOOR = 1e-6


@ft.cache
def _check_roots(spec: OptimizerSpec) -> None:
    """`ValueError` where the fast state's slow manifold sends the argument of a square root of
    the update to its floor at τ = 0 but not at τ > 0 (AdaBelief's $(g - m)^2 = O(h^2)$ under
    a tiny `eps_root`): the step is then not analytic at the scale of the step size, and the
    fields from order 2 on, derivatives at τ = 0, miss its O(h) terms (measured: optax's
    `adabelief` at `eps_root = 1e-16` tracked its order-2 flow to order 1.02, with twice the
    order-1 flow's error). Checked at order 2 and above (order 1 holds), on the probe problem,
    where no gradient entry vanishes by accident: a structural floor, not a point's (an
    optimizer that cannot step on the probe is not checked)."""
    with _concrete(), jax.numpy_dtype_promotion("standard"):
        probe = _probe_problem()
        if _step_failure(spec, probe) is not None:
            return
        x0 = probe.params0
        args = []
        for tau in (0.0, 0.01):
            state = _manifold_state(spec, jnp.asarray(tau**spec.power), x0, probe)
            args.append(step_roots(spec, jnp.asarray(tau), x0, state, probe))
    for a0, ah in zip(*args):
        a0, ah = np.asarray(a0), np.asarray(ah)
        low = (ah > 0) & (np.abs(a0) < ROOT_FLOOR * ah)
        if np.any(low):
            floor, at_h = np.max(np.abs(a0[low])), np.max(ah[low])
            raise ValueError(
                f"order={spec.order}: on the slow manifold the update takes a square root of "
                f"a quantity that vanishes with the step size, down to a floor ({floor:.3g} "
                f"at h = 0 against {at_h:.3g} at h = 0.01), e.g. AdaBelief's "
                "sqrt((g - m)² + eps_root) or a centered RMSprop's sqrt(E[g²] - E[g]² + eps) "
                "with a tiny eps_root/eps: the step is not analytic at the scale of h, and "
                "the fields from order 2 on (derivatives at h = 0) would miss its O(h) terms. "
                "Use order=1 (it holds), or raise the floor to the scale of the step, e.g. "
                "optax.adabelief(h, eps_root=0.1)."
            )


@ft.cache
def _check_time(optimizer, power: int) -> None:
    """An `h -> Discretization` optimizer must advance τ = h^(1/power) per step."""
    with jax.ensure_compile_time_eval():
        _check_time_concrete(optimizer, power)


def _check_time_concrete(optimizer, power: int) -> None:
    for h in (0.01, 0.04):
        out = optimizer(jnp.asarray(h))
        if isinstance(out, Discretization):
            dt = float(out.dt)
            if abs(dt - h ** (1.0 / power)) > 1e-12 * max(dt, 1.0):
                raise ValueError(
                    f"optimizer: its Discretization advances dt = {dt:.6g} per step at h = {h}, "
                    f"not h^(1/{power}); pass time_unit (τ = h^q) to match."
                )
        elif isinstance(out, optax.MultiSteps):
            raise ValueError(
                "optimizer(h) must return an optax.GradientTransformation or a "
                "Discretization, got an optax.MultiSteps (its .gradient_transformation() is "
                "one). Its step is periodic in the step index, though: it accumulates N "
                "gradients and applies them every N-th step, a cycle of N maps that has no "
                "modified flow of one step. Model N steps as one: N steps of "
                "optax.MultiSteps(opt, N) take their gradients at the same parameters and are "
                "one step of opt (on N batches), whose modified flow describes every N-th "
                "iterate."
            )
        elif not isinstance(out, optax.GradientTransformation):
            raise ValueError(
                "optimizer(h) must return an optax.GradientTransformation or a Discretization, "
                f"got {type(out).__name__}."
            )


def as_flow(obj, step_size_hint: ScalarLike = 0.01, order: int = 1) -> AbstractFlow:
    """`obj` if it is a flow, else `modified_flow(obj, step_size_hint, order)`: the hook for
    `compare(optimizer_callable, ...)`."""
    if isinstance(obj, AbstractFlow):
        return obj
    return modified_flow(obj, step_size_hint, order)


def _check_like_params0(params, problem) -> None:
    """`ValueError` unless `params` has `problem.params0`'s structure and leaf shapes (a state of
    another problem failed inside JAX with 'incompatible shapes')."""
    want, got = problem.params0, params
    same = jax.tree.structure(want) == jax.tree.structure(got) and all(
        jnp.shape(a) == jnp.shape(b) for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got))
    )
    if not same:
        shapes = lambda t: jax.tree.map(jnp.shape, t)
        raise ValueError(
            f"state: its parameters must have the structure and shapes of problem.params0 "
            f"({shapes(want)}), got {shapes(got)}."
        )
