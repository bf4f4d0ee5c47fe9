"""`run`: a discrete optimizer as one jitted `lax.scan`, with divergence detection.

The one stepping engine: every problem (`AbstractProblem`: a loss, a game, ...) is asked for its
gradient oracle; every transform gets optax's `updates = grad` and, if it is a
`GradientTransformationExtraArgs`, the extra arguments `value`, `grad`, `value_fn`, `grad_fn`.
"""

import dataclasses
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _progress
from ._custom_types import Key, Params, ScalarLike
from ._discretization import (
    accepted_extra_args,
    Discretization,
    update_with_extra_args,
    widest_dtype,
)
from ._problem import AbstractProblem
from ._sharding import sweep_apply, sweep_mesh
from ._trajectory import Trajectory
from ._validation import positive, positive_int


# A run diverges once its loss exceeds `L0 + DIVERGENCE_FACTOR * max(|L0|, 1)`.
DIVERGENCE_FACTOR = 1e8


def divergence_limit(loss0: jax.Array) -> jax.Array:
    r"""The loss (`problem.loss`) above which a run counts as diverged:
    $L_0 + F\max(|L_0|, 1)$ with $F$ = `DIVERGENCE_FACTOR` $= 10^8$ and $L_0$ the loss at
    $\theta_0$.

    Why a growth criterion: an unstable run (a step size past the stability limit, a sign error
    such as `optax.sgd(-0.1)`) grows geometrically, and its loss can stay finite for thousands of
    steps (loss $10^{30}$ at $\theta \sim 10^{15}$) while every number it yields is meaningless.
    A method that minimizes (or a game's Hamiltonian under a stable scheme) does not raise its
    value eight orders of magnitude above where it started; the floor 1 (in the loss's units)
    keeps a run that starts at or next to a minimum ($L_0 \approx 0$), e.g. SGD's noise or
    Adam's fixed-size steps around it, from being flagged. The criterion is conservative: a loss
    whose natural scale is far below 1 is caught only once it passes $10^8$ (or overflows)."""
    loss0 = jnp.asarray(loss0)
    return loss0 + DIVERGENCE_FACTOR * jnp.maximum(jnp.abs(loss0), 1.0)


def tree_all_finite(tree) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _raised_in_optax(error: BaseException) -> bool:
    """Whether `error` was raised from optax's own code (its innermost frame outside JAX)."""
    frames = [f.f_code.co_filename for f, _ in traceback.walk_tb(error.__traceback__)]
    outside_jax = [f for f in frames if "/jax/" not in f and "/jaxlib/" not in f]
    return bool(outside_jax) and "/optax/" in outside_jax[-1]


def optax_call(fn: Callable, *args):
    """`fn(*args)` (an optimizer's `init` or update), under standard dtype promotion when the
    caller's strict promotion fails inside optax's own code: optax mixes its int32 step
    counter with Python floats (Adam's bias correction $1 - b_1^k$, `cosine_decay_schedule`,
    `piecewise_constant_schedule`, `warmup_*`, a schedule's first value under
    `inject_hyperparams`), which strict promotion refuses, while a hand loop under JAX's
    default promotion runs. Where strict promotion succeeds, standard promotion would give
    the same program: nothing changes for a strict-clean transform, and an error in any other
    code (the user's loss, dynopt's transforms) is raised as it is."""
    try:
        return fn(*args)
    except jax.dtypes.TypePromotionError as error:
        if jax.config.jax_numpy_dtype_promotion != "strict" or not _raised_in_optax(error):
            raise
    with jax.numpy_dtype_promotion("standard"):
        return fn(*args)


def _narrow_float(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 64


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for x in value if isinstance(value, tuple | list) else (value,):
            if hasattr(x, "eqns"):
                yield x
            elif hasattr(x, "jaxpr") and hasattr(x.jaxpr, "eqns"):
                yield x.jaxpr


def _counts_made_narrow_floats(jaxpr) -> list[str]:
    """Where `jaxpr` (and the jaxprs inside it) converts an integer to a float narrower than
    float64: JAX's true division of int32 by int32 is float32 even under x64."""
    found = []
    for eqn in jaxpr.eqns:
        for sub in _sub_jaxprs(eqn):
            found += _counts_made_narrow_floats(sub)
        if eqn.primitive.name != "convert_element_type":
            continue
        (source,), (out,) = eqn.invars, eqn.outvars
        if jnp.issubdtype(source.aval.dtype, jnp.integer) and _narrow_float(out.aval.dtype):
            try:  # the line of the user's or optax's code (`jax.extend`'s helper)
                from jax.extend import source_info_util

                where = source_info_util.summarize(eqn.source_info)
            except Exception:  # a location is a courtesy
                where = "?"
            found.append(f"an integer converted to {out.aval.dtype} at {where}")
    return found


FLOAT32_FIX = (
    "optax evaluates a schedule at its int32 step counter, and JAX divides int32 by int32 in "
    "float32 even with x64 on (optax.exponential_decay, linear_schedule, polynomial_schedule, "
    "warmup_exponential_decay_schedule; Adafactor's decay; a schedule under "
    "inject_hyperparams): evaluate it at a float64 count, "
    "`optax.sgd(lambda k: schedule(jnp.asarray(k, jnp.float64)))`. A float32 leaf of the "
    "optimizer's state comes from a float32 option (`inject_hyperparams(..., "
    "hyperparam_dtype=jnp.float32)`, `mu_dtype`, optax.MultiSteps' gradient accumulator): give "
    "float64, or float32 parameters for a float32 run."
)


def warn_if_float32_inside(tx, problem: AbstractProblem, params, opt_state, key) -> None:
    r"""A `UserWarning` when `tx` computes in a float narrower than float64 inside a run whose
    parameters are all float64 (x64 on): its steps are then rounded to float32 (relative
    $\sim 10^{-7}$: `exponential_decay`'s learning rate at optax's counter is up to 1.1e-7 off
    the float64 map), which a comparison with a float64 reference measures as if it were the
    method's error. Found at trace time, once per compiled program: floating leaves of
    `opt_state` below float64, and integers converted to such floats in the update's program
    (`jax.make_jaxpr`, the gradient and value given as inputs). Nothing for float32 or mixed
    parameters, where float32 is the user's choice."""
    leaves = jax.tree.leaves(params)
    if not (jax.config.jax_enable_x64 and leaves):
        return
    if not all(jnp.result_type(x) == jnp.float64 for x in leaves):
        return
    found = [
        f"the state's leaf {jax.tree_util.keystr(path)} is {x.dtype}"
        for path, x in jax.tree_util.tree_leaves_with_path(opt_state)
        if hasattr(x, "dtype") and _narrow_float(x.dtype)
    ]

    def update(grad, value, state, params):
        orc = oracle(problem, key, 0)
        extra = orc.extra_args(tx, value, grad)
        return optax_call(update_with_extra_args, tx, grad, state, params, extra)

    value = jnp.zeros((), jnp.float64)
    try:
        jaxpr = jax.make_jaxpr(update)(params, value, opt_state, params)
    except Exception:  # the run itself raises it, with its own message
        jaxpr = None
    if jaxpr is not None:
        found += _counts_made_narrow_floats(jaxpr.jaxpr)
    if found:
        warnings.warn(
            "run: the optimizer computes in float32 inside a float64 run, so its steps are "
            "rounded to float32 (relative 1e-7), an error a float64 reference comparison would "
            f"count as the method's: {'; '.join(dict.fromkeys(found))}. {FLOAT32_FIX}",
            UserWarning,
            stacklevel=2,
        )


def _floating_dtype(params: Params):
    # The widest leaf dtype, also for mixed trees (bf16 weights, f32 biases) under strict
    # promotion, where `jnp.result_type` of the leaves raises.
    return widest_dtype(params)


class _Oracle(eqx.Module):
    """The problem's oracle at step $k$: every evaluation inside the step sees the minibatch of
    `fold_in(key, k)` (or the full batch when `key` is `None`)."""

    problem: AbstractProblem
    key: Key | None

    def value_fn(self, params: Params, grad_fn=None, obj_fn=None):
        # optax's line searches (`optax.lbfgs`) hand every extra argument they do not consume
        # to `value_fn`, matched by name: the other two are accepted here, and ignored.
        del grad_fn, obj_fn
        return self.problem.value(params, self.key)

    def grad_fn(self, params: Params, *index) -> Params:
        # `optax.contrib.sam(..., opaque_mode=True)` calls `grad_fn(params, i)` to pick a batch
        # per inner step; here every evaluation is on this step's minibatch.
        del index
        return self.problem.grad(params, self.key)

    def obj_fn(self, params: Params):
        return self.problem.value(params, self.key)

    def extra_args(self, tx, value, grad) -> dict[str, Any]:
        """The extra arguments for `tx.update`: none for a plain `GradientTransformation`; for a
        `GradientTransformationExtraArgs`, optax's `value`, `grad`, `value_fn`; `obj_fn` (the
        same loss, under the name `optax.contrib.sophia` reads); and `grad_fn` (the oracle's
        gradient field elsewhere, same minibatch) — those its `update` declares, all of them
        when it takes `**kwargs` (optax's own transforms; `optax.contrib.sam` takes only
        `grad_fn`)."""
        if not isinstance(tx, optax.GradientTransformationExtraArgs):
            return {}
        out = dict(
            value=value, grad=grad, value_fn=self.value_fn, obj_fn=self.obj_fn, grad_fn=self.grad_fn
        )
        return accepted_extra_args(tx.update, out)


def oracle(problem: AbstractProblem, key: Key | None, k) -> _Oracle:
    """The oracle of step `k`: minibatch key `fold_in(key, k)`, or none."""
    return _Oracle(problem, None if key is None else jax.random.fold_in(key, k))


def iterate_test(problem: AbstractProblem, params: Params, limit):
    """`iterate_ok` and the loss it tested: `(ok, problem.loss(params))`."""
    loss = problem.loss(params)
    return tree_all_finite(params) & jnp.isfinite(loss) & (loss <= limit), loss


def iterate_ok(problem: AbstractProblem, params: Params, limit) -> jax.Array:
    r"""`run`'s test of one iterate $\theta_k$: finite, with `problem.loss` (the full loss, as
    recorded, whatever the oracle's minibatch) finite and at most `limit`
    (`divergence_limit`)."""
    return iterate_test(problem, params, limit)[0]


def make_step(
    tx: optax.GradientTransformation,
    problem: AbstractProblem,
    key: Key | None,
    limit: jax.Array | float = jnp.inf,
):
    r"""One guarded optimizer step: `(params, opt_state, diverged_at, k) -> same`: the
    specification of `run`'s divergence handling, which runs blocks of unchecked steps and
    replays only a failing block, with the test after each step, to the same result (with
    `every=1`, each step tested as it is taken).

    The step of `make_fast_step` (the same arithmetic), with `run`'s divergence test: a step
    whose iterate $\theta_k$ fails `iterate_ok` (its full loss non-finite or above `limit`) is
    not taken and records `diverged_at = k`, keeping $\theta_k$; a step whose new iterate
    $\theta_{k+1}$ is non-finite is not applied and records `k + 1`, keeping $\theta_k$. The
    first such index is recorded once and the state is frozen from then on. (The loss of
    $\theta_{k+1}$ is tested at the next step.)
    """
    guarded = _guarded_step(tx, problem, key, limit)
    return lambda carry: guarded(carry)[0]


def _guarded_step(tx, problem: AbstractProblem, key: Key | None, limit):
    r"""`make_step`'s step that also returns the loss it tested, `problem.loss` of its iterate
    $\theta_k$: once the state is frozen, the loss of the iterate the run keeps."""
    fast = make_fast_step(tx, problem, key, value=False)

    def step(carry):
        params, opt_state, diverged_at, k = carry
        (new_params, new_state, _, _), _ = fast(carry)
        loss = problem.loss(params)
        value_ok = jnp.isfinite(loss) & (loss <= limit)
        params_ok = tree_all_finite(new_params)
        alive = diverged_at < 0
        diverged_at = jnp.where(
            alive & ~value_ok, k, jnp.where(alive & ~params_ok, k + 1, diverged_at)
        )
        keep = alive & value_ok & params_ok
        params = optax.tree.where(keep, new_params, params)
        opt_state = optax.tree.where(keep, new_state, opt_state)
        return (params, opt_state, diverged_at, k + 1), loss

    return step


def make_fast_step(
    tx: optax.GradientTransformation,
    problem: AbstractProblem,
    key: Key | None,
    *,
    value: bool = True,
):
    """`make_step` without the checks: the same arithmetic, no finiteness reductions over the
    parameters, no selects. `step(carry) -> (carry, value)`: the oracle's value at the step's
    iterate comes out (a by-product of the gradient), for the caller to check or drop. With
    `value=False` a transform that does not read it (not a `GradientTransformationExtraArgs`)
    gets the gradient alone and `None` comes out: the value is not a free by-product on a CPU
    (for the elementwise Rosenbrock gradient, `value_and_grad` costs 2.3× `grad`: its reduction
    does not fuse into the gradient's loop)."""
    extra = isinstance(tx, optax.GradientTransformationExtraArgs)

    def step(carry):
        params, opt_state, diverged_at, k = carry
        orc = oracle(problem, key, k)
        if extra or value:
            val, grad = problem.value_and_grad(params, orc.key)
        else:
            val, grad = None, problem.grad(params, orc.key)
        kwargs = orc.extra_args(tx, val, grad)
        updates, new_state = optax_call(update_with_extra_args, tx, grad, opt_state, params, kwargs)
        return (optax.apply_updates(params, updates), new_state, diverged_at, k + 1), val

    return step


def _select(mask, new, old):
    """Per-run `where` for pytrees whose leaves carry the run axes of `mask` in front."""

    def one(a, b):
        m = jnp.reshape(mask, mask.shape + (1,) * (jnp.ndim(a) - mask.ndim))
        return jnp.where(m, a, b)

    return jax.tree.map(one, new, old)


def _lift(f, levels, *, spec: bool, state: bool, k: bool):
    """Batch `f(spec?, state?, k?)` over the run axes: `levels` holds the `vmap` in_axes of
    `spec` per batch axis, outermost first (`[]`: one run). `state` is batched on every axis;
    the step counter `k` on none: all runs step in lockstep, and anything that depends only on
    `k` and part of the spec (the minibatch of a seed, shared by every step size) is computed
    once per distinct value, as nested `vmap`s do."""
    for axes in reversed(levels):
        in_axes = (axes,) * spec + (0,) * state + (None,) * k
        f = jax.vmap(f, in_axes=in_axes)
    return f


def _drive(
    setup, specs, problem: AbstractProblem, num_steps: int, every: int, levels: list, observe
):
    """The runs described by `specs` (one, or a batch with the `vmap` spec axes `levels`,
    outermost first), saved every `every` steps, with `observe(params, opt_state, problem)`
    recorded at each saved point (unless `None`). `setup(spec, problem) -> (tx, dt, key,
    opt_state0)` builds one run.

    Each block of `every` steps runs unchecked (`make_fast_step` with the gradient alone, no
    oracle value unless the transform reads it); then the block's end iterate is tested
    (`iterate_ok`: finite, full loss finite and at most `divergence_limit`). Only if some run
    of the batch failed is the block replayed from its start with the same test at every step
    (`make_step`), for those runs, to find the first failing iterate; an end iterate that is
    finite but fails on its loss, with every earlier iterate of the block passing, is
    `diverged_at` = the block's end step (what the next block's first step would find; the
    last block has no next one). One predicate, `iterate_ok` on
    $\\theta_k$ ($\\theta_0$ included, tested once for the batch), in both paths: `diverged_at` is
    the first iterate that fails it, at every `every`, for a run that, once failed, still fails
    at the end of its block (divergence: growth or overflow that persists); an excursion that
    leaves and comes back inside one block is not caught. Catching it would need a test inside
    the unchecked block, which is not free: a running flag carried through its loop cost
    Rosenbrock d = 1000 (`every` = 100, GD, 2026-12-07, load ~13) 0.7 -> 3.3-3.9 µs a step
    for the parameters' finiteness (a reduction that breaks the step's fusion) and 0.7 ->
    1.2-4.0 µs for the loss (not computed by the block: `value_and_grad` where `grad`
    suffices); non-finite parameters persist anyway. One decision for the whole batch
    (also when `run` itself is `vmap`ped), so a batch without divergence never pays for the
    replay.

    Every trace site of the loss and the gradient is compiled anew (for a game the loss is a
    gradient evaluation; a loss that runs a diffrax solve compiles for seconds), so the
    recorded `loss` is not evaluated again: it is the block test's (a frozen run's test is
    that of the iterate it keeps), or, for a run the replay froze, the replay's last test, of
    the iterate it keeps; and the loss at $\\theta_0$, the start of every run, is evaluated once
    for the threshold, the test of $\\theta_0$ and the first saved point. Five sites: the loss
    at $\\theta_0$, the block's gradient and test, the replay's gradient and test. The block
    and its replay stay two loops: as passes of one loop with a dynamic segment length
    (`every`, then 1) they would be three sites, but the steps would run 10-50 % slower
    (Rosenbrock on a CPU), no longer a loop of static length; a replay through the block's
    own loop, its test after each step gated on a flag (a `cond`, or a `while_loop` of at most
    one pass), would be three sites too, and cost the steps 3-27 % (Rosenbrock, d = 100 and
    1000, `every` = 10 to 1000: a conditional in every step).

    With `every = 1` a block is one step and needs no replay: its test is `make_step`'s. The
    run keeps the new iterate when it is finite (diverged at step $k + 1$ when its loss fails
    the test) and the one it had when it is not, whose loss the same test then computes, the
    recorded one. Three sites: the loss at $\\theta_0$, the step's gradient, the test (a
    diffrax loss's program compiles 40 % faster; the steps run as fast or faster, without the
    replay's `while_loop` in every step).
    """
    # Every run starts at θ₀: its loss, the growth threshold and its test, once for the batch.
    loss0 = problem.loss(problem.params0)
    limit = divergence_limit(loss0)
    ok0 = tree_all_finite(problem.params0) & jnp.isfinite(loss0) & (loss0 <= limit)

    def init(spec):
        tx, _, key, state0 = setup(spec, problem)
        # At trace time, once per program (the first run's key: a batch traces one run).
        warn_if_float32_inside(tx, problem, problem.params0, state0, key)
        return problem.params0, state0, jnp.where(ok0, jnp.asarray(-1), jnp.asarray(0))

    def guarded_block(spec, start, end_loss, k):
        # From the block's start, where a replayed run is alive. The loss comes back as the
        # block's end test found it, unless the replay froze the run: then the loss of the
        # iterate it keeps, its last step's test.
        tx, _, key, _ = setup(spec, problem)
        step = _guarded_step(tx, problem, key, limit)
        (params, opt_state, diverged_at, _), loss = jax.lax.fori_loop(
            0, every, lambda _, c: step(c[0]), ((*start, jnp.asarray(-1), k), end_loss)
        )
        return params, opt_state, diverged_at, jnp.where(diverged_at >= 0, loss, end_loss)

    def fast_block(spec, state, k):
        tx, _, key, _ = setup(spec, problem)
        step = make_fast_step(tx, problem, key, value=False)
        return jax.lax.fori_loop(0, every, lambda _, c: step(c)[0], (*state, k))[:3]

    fast = _lift(fast_block, levels, spec=True, state=True, k=True)
    guarded = _lift(
        lambda spec, state, k: guarded_block(spec, state[:2], state[2], k),
        levels,
        spec=True,
        state=True,
        k=True,
    )
    check = lambda params: iterate_test(problem, params, limit)
    check_of = _lift(check, levels, spec=False, state=True, k=False)
    loss_of = _lift(problem.loss, levels, spec=False, state=True, k=False)
    finite_of = _lift(tree_all_finite, levels, spec=False, state=True, k=False)
    if observe is None:
        observe_of = lambda state: None
    else:
        observe_of = _lift(
            lambda s: observe(s[0], s[1], problem), levels, spec=False, state=True, k=False
        )

    def tested_step(state, alive, new, k):
        # `every` = 1: the test of each step, `make_step`'s, and nothing to replay. A frozen
        # run's test is that of the iterate it keeps, as below.
        finite = finite_of(new[0])
        keep = alive & finite
        new_loss = loss_of(_select(keep, new[0], state[0]))
        ok = finite & jnp.isfinite(new_loss) & (new_loss <= limit)
        new = (*_select(keep, new[:2], state[:2]), jnp.where(alive & ~ok, k + 1, state[2]))
        return new, new_loss

    def tested_block(state, alive, new, k):
        # A run that diverged in an earlier block stays frozen (selected last, below); its
        # test is that of the iterate it keeps, so that the test's loss is the one recorded. A
        # select of the loss instead costs each block a kernel (Rosenbrock d = 2, every = 10:
        # 3 %); selecting the state before the test, a copy (d = 1000, one block: 4 %).
        ok, new_loss = check_of(_select(alive, new[0], state[0]))
        bad = alive & ~ok

        def replay(pending):
            _, start, new = pending
            out = _select(bad, guarded(specs, (*start, new[3]), k), new)
            # The block's start goes round the loop through a barrier: forwarded unchanged,
            # XLA may see it as loop invariant and hoist the guarded block out of the loop
            # (seen under a user's `vmap` over `run`: it then ran on every block, diverged
            # or not).
            return jax.lax.optimization_barrier((jnp.asarray(True), start, out))

        # At most one pass; a `while_loop`, not a `cond`: under an outer `vmap` a batched
        # `cond` becomes a `select` that always runs the replay, while a batched
        # `while_loop` runs only as long as some entry needs it (zero passes when none
        # diverged).
        # The start goes round without its `diverged_at` (-1 for a replayed run), and the
        # loss takes its place: an element more in the loop's carry cost every block, replay
        # or not (Rosenbrock d = 2, every = 10: 4-7 %).
        _, _, (*new, new_loss) = jax.lax.while_loop(
            lambda pending: ~pending[0], replay, (~jnp.any(bad), state[:2], (*new, new_loss))
        )
        # The replay tests the losses of the block's start to its last-but-one iterate and the
        # finiteness of all; the end iterate's loss failed: that is its step, here, so that the
        # last block's end is tested too (the run keeps that iterate, as `make_step` would).
        new = (*new[:2], jnp.where(bad & (new[2] < 0), k + every, new[2]))
        return _select(alive, new, state), new_loss

    def block(carry, _):
        state, k = carry
        alive = state[2] < 0
        new = fast(specs, state, k)
        new, new_loss = (tested_step if every == 1 else tested_block)(state, alive, new, k)
        if _progress.enabled():  # read at trace time; `run` keys its compiled programs on it
            _progress.tick(every * int(np.prod(jnp.shape(alive))))  # steps of all these runs
        return (new, k + every), (new[0], new_loss, observe_of(new))

    state0 = _lift(init, levels, spec=True, state=False, k=False)(specs)
    loss0 = jnp.broadcast_to(loss0, jnp.shape(state0[2]))
    (state, _), (saved, losses, observed) = jax.lax.scan(
        block, (state0, jnp.asarray(0)), None, length=num_steps // every
    )
    axis = len(levels)  # the run axes go first

    def join(x0, xs):
        return jnp.concatenate([jnp.expand_dims(x0, axis), jnp.moveaxis(xs, 0, axis)], axis)

    params = jax.tree.map(join, state0[0], saved)
    observations = jax.tree.map(join, observe_of(state0), observed)
    loss = join(loss0, losses)
    dt_of = lambda spec: jnp.asarray(setup(spec, problem)[1])
    dt = _lift(dt_of, levels, spec=True, state=False, k=False)(specs)
    steps = jnp.broadcast_to(jnp.arange(0, num_steps + 1, every), loss.shape)
    ts = steps.astype(dt.dtype) * dt[..., None]
    return Trajectory(
        ts=ts,
        params=params,
        loss=loss,
        diverged_at=state[2],
        steps=steps,
        observations=observations,
    )


def _drive_batch(setup, specs, problem, num_steps, every, levels, batch_size, observe):
    """`_drive` on a batch of runs, `batch_size` entries of the outer batch axis at a time
    (`None`: all at once): that axis is padded to a multiple of `batch_size`, cut into chunks
    that a `lax.map` runs one after the other (each chunk vmapped), and trimmed again."""
    outer = levels[0]  # 0: every spec leaf is batched; else (disc axis, key axis)
    if outer == 0:
        batched, rebuild = specs, lambda b: b
    elif outer == (0, None):
        batched, rebuild = specs[0], lambda b: (b, specs[1])
    else:
        batched, rebuild = specs[1], lambda b: (specs[0], b)
    (n,) = {x.shape[0] for x in jax.tree.leaves(batched)}
    if batch_size is None or batch_size >= n:
        return _drive(setup, specs, problem, num_steps, every, levels, observe)
    if batch_size == 1:  # no vmap over the outer axis: one entry after another
        return jax.lax.map(
            lambda b: _drive(setup, rebuild(b), problem, num_steps, every, levels[1:], observe),
            batched,
        )
    chunks = -(-n // batch_size)
    index = jnp.minimum(jnp.arange(chunks * batch_size), n - 1)  # pad with the last entry
    split = jax.tree.map(
        lambda x: jnp.reshape(x[index], (chunks, batch_size, *x.shape[1:])), batched
    )
    out = jax.lax.map(
        lambda b: _drive(setup, rebuild(b), problem, num_steps, every, levels, observe), split
    )
    return jax.tree.map(lambda x: jnp.reshape(x, (chunks * batch_size, *x.shape[2:]))[:n], out)


@eqx.filter_jit
def _run_discretization(
    disc: Discretization, problem, num_steps, every, key, batch_size, observe, progress=False
):
    del progress  # static: a program with progress callbacks is compiled apart (`_progress`)

    def setup(spec, prob):
        d, k = spec
        # Weakly typed floating hyper-parameters (as Python floats): not rounded to the
        # parameters' dtype before optax computes with them (bfloat16(0.999) is 1).
        d = d.weakly_typed()
        return d.transform, d.dt, k, optax_call(d.init, prob.params0, prob)

    def drive(specs, prob, levels):
        return _drive_batch(setup, specs, prob, num_steps, every, levels, batch_size, observe)

    seeds = key is not None and key.ndim == 1
    # The outer batch axis (step sizes, else seeds) is the sweep axis, split across devices.
    # Step sizes × seeds stay two nested vmaps: what depends on the seed alone (the minibatch
    # indices of every step) is computed once per seed, not once per step size and seed.
    if disc.dt.ndim == 1:  # a batch of step sizes (times a batch of seeds)
        if seeds:
            levels = [(0, None), (None, 0)]
            return sweep_apply(
                lambda discs, sh: drive((discs, sh[0]), sh[1], levels), disc, (key, problem)
            )
        if key is not None:  # one key, shared by every step size (it was dropped: full batch)
            return sweep_apply(
                lambda discs, sh: drive((discs, sh[0]), sh[1], [(0, None)]), disc, (key, problem)
            )
        return sweep_apply(lambda discs, prob: drive((discs, None), prob, [0]), disc, problem)
    if seeds:
        return sweep_apply(
            lambda keys, sh: drive((sh[0], keys), sh[1], [(None, 0)]), key, (disc, problem)
        )
    return _drive(setup, (disc, key), problem, num_steps, every, [], observe)


@eqx.filter_jit
def _run_transform(tx, problem, num_steps, every, key, batch_size, observe, dt, progress=False):
    del progress  # static: a program with progress callbacks is compiled apart (`_progress`)

    def setup(k, prob):
        return tx, dt, k, optax_call(tx.init, prob.params0)

    if key is not None and key.ndim == 1:  # a batch of seeds, split across devices
        return sweep_apply(
            lambda keys, prob: _drive_batch(
                setup, keys, prob, num_steps, every, [0], batch_size, observe
            ),
            key,
            problem,
        )
    return _drive(setup, key, problem, num_steps, every, [], observe)


def _as_key(key):
    if key is None:
        return None
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.ndim > 1:
            raise ValueError(
                f"key must be one PRNG key or a 1-D batch of keys, got shape {key.shape}."
            )
        return key
    if key.dtype == jnp.uint32 and key.shape[-1:] == (2,) and key.ndim <= 2:
        return jax.random.wrap_key_data(key)
    raise ValueError(
        "key must be a jax.random.key (or a batch of them), got dtype "
        f"{key.dtype}, shape {key.shape}."
    )


def _batch_discretization(disc: Discretization) -> Discretization:
    """Broadcast scalar hyper-parameters against a batch of step sizes (or vice versa)."""
    leaves = [disc.dt, *disc.hyperparams.values()]
    ndims = {jnp.ndim(x) for x in leaves}
    if ndims <= {0}:
        return disc
    if not ndims <= {0, 1}:
        raise ValueError("a batched Discretization must have scalar or 1-D hyper-parameters.")
    sizes = {x.shape[0] for x in leaves if jnp.ndim(x) == 1}
    if len(sizes) != 1:
        raise ValueError(f"batched hyper-parameters must share one length, got {sorted(sizes)}.")
    (n,) = sizes
    if n == 0:
        raise ValueError(
            "the Discretization is an empty batch of hyper-parameters; give at least one."
        )
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n,)), disc)


# `batch_size=None`: a sweep runs one run after another (`lax.map`) instead of under one `vmap`
# when its problem carries less data than one run's parameters and has at least this many
# parameters. Measured on one CPU core (Rosenbrock, 64 step sizes × 1000 steps, float64, ms;
# 2026-12-05): vmapped / sequential 0.38 / 1.10 at d = 2, 2.66 / 2.97 at d = 30, 3.71 / 3.41
# at d = 40, 6.21 / 3.99 at d = 64, 8.3 / 6.0 at d = 100, 85 / 27 at d = 1000: the vmap pays
# off only while a run's gradient is too small to fill a kernel. Logistic regression (a data
# matrix) gains 3.5× from the vmap at d = 1000.
SEQUENTIAL_MIN_PARAMS = 40


def default_batch_size(problem: AbstractProblem) -> int | None:
    """`run`'s sweep strategy for `batch_size=None`: `1` (runs one after another) when
    batching has nothing to share, else `None` (one `vmap`).

    A vmapped sweep pays where the runs share data: $K$ matrix-vector products with one data
    matrix become one matrix-matrix product. An elementwise gradient (the extended Rosenbrock
    function) shares nothing, and on a CPU XLA's batched kernel runs slower per element than
    the single-run one, so above `SEQUENTIAL_MIN_PARAMS` parameters such a sweep runs
    sequentially. "Shares nothing" is read from the problem's loss: its traced program (one
    `jax.make_jaxpr`, no compilation) holds fewer constant array entries than one run has
    parameters. The constants are every array the loss reads besides the parameters: data and
    matrices in an `eqx.Partial`, and arrays a plain function closes over alike.
    """
    if getattr(problem, "loss_fn", None) is None or problem.num_params < SEQUENTIAL_MIN_PARAMS:
        return None
    return 1 if _shared_entries(problem) < problem.num_params else None


# `_shared_entries` by problem structure: tracing the loss costs about as much as a short sweep
# (0.8 ms against 2.1 ms for 64 Rosenbrock d = 100 runs of 100 steps), on every `run` call.
_SHARED_ENTRIES: dict = {}
_SHARED_ENTRIES_MAX = 256


def _shared_entries(problem: AbstractProblem) -> int:
    """The number of constant array entries in the traced program of `problem.loss`, cached by
    what determines it, as `eqx.filter_jit` keys its programs: the problem's non-array parts
    (its functions by identity: what a plain function closes over stays with it) and its
    arrays' shapes and dtypes."""
    leaves, treedef = jax.tree.flatten(problem)
    key = (treedef, *((x.shape, x.dtype) if eqx.is_array(x) else x for x in leaves))
    try:
        return _SHARED_ENTRIES[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable part: counted afresh each time
        key = None
    consts = jax.make_jaxpr(problem.loss)(problem.params0).consts
    shared = sum(int(np.prod(np.shape(c))) for c in consts)
    if key is not None:
        if len(_SHARED_ENTRIES) >= _SHARED_ENTRIES_MAX:
            _SHARED_ENTRIES.pop(next(iter(_SHARED_ENTRIES)))  # the oldest
        _SHARED_ENTRIES[key] = shared
    return shared


def _check_observe(observe, problem: AbstractProblem, state0: Callable[[], Any]) -> None:
    """`ValueError` naming `observe` when it cannot be called as `observe(params, opt_state,
    problem)` or does not return a pytree of arrays (traced abstractly, `jax.eval_shape`, on the
    start state `state0()`): inside the run the error would come out of JAX's tracing, raw."""
    state = jax.eval_shape(state0)  # outside the `try`: its own errors are not the observer's
    try:
        jax.eval_shape(lambda s: observe(problem.params0, s, problem), state)
    except TypeError as e:
        raise ValueError(
            "observe must be a function (params, opt_state, problem) -> pytree of arrays; "
            f"calling it on the run's start state failed: {e}"
        ) from e


def _progress_bar(num_steps: int, outer: int, inner: int, batch_size: int | None):
    """The progress bar of one `run` call (nothing when progress is off): a single run counts
    its steps; a sweep of `outer` × `inner` runs counts the steps of every run it executes, with
    the padding of the outer axis to whole chunks of `batch_size` and to a multiple of the
    device count (`_drive_batch`, `sweep_apply`). Each block of `every` steps of a batch of
    $B$ runs ticks $B$ × `every`, whether the runs go in one `vmap`, in chunks or one after
    another, so the bar has a total (and an estimated time left) that its ticks reach."""
    if outer * inner == 1:
        return _progress.bar(num_steps, "run")
    devices = sweep_mesh().size
    per_device = -(-outer // devices)
    if batch_size is not None and batch_size < per_device:
        per_device = -(-per_device // batch_size) * batch_size
    # Each process's bar sees the blocks its own devices run.
    local = per_device * min(devices, jax.local_device_count()) * inner
    return _progress.bar(num_steps * local, f"run ({outer * inner} runs)")


def _check_sweep_batch_size(batch_size: int | None, sweep: bool) -> None:
    """`ValueError` for a `batch_size` given to a run that is not a sweep: there it would be
    ignored, while a finite-sum user may mean the minibatch size, which is the problem's."""
    if batch_size is not None and not sweep:
        raise ValueError(
            f"batch_size={batch_size!r} is the chunk size of a sweep (how many runs of a batch "
            "of step sizes or keys run at a time), and this run is a single run. The minibatch "
            "size of SGD is the problem's: problems.finite_sum(..., batch_size=B) (or "
            "network_problem(..., batch_size=B), SGDNoise(eta, B).sgd_problem(problem)); leave "
            "run's batch_size out."
        )


def run(
    transform: Discretization | optax.GradientTransformation,
    problem: AbstractProblem,
    num_steps: int,
    *,
    key: Key | None = None,
    every: int = 1,
    batch_size: int | None = None,
    observe: Callable[[Params, Any, AbstractProblem], Any] | None = None,
    dt: ScalarLike | None = None,
) -> Trajectory:
    r"""Iterate an optax transform on `problem` for `num_steps` steps as one jitted `lax.scan`.

    $\theta_{k+1} = \theta_k + u_k$ with $(u_k, s_{k+1})$ = `transform.update(g_k, s_k, θ_k)`,
    where $g_k = g(\theta_k)$ is the problem's gradient oracle (`problem.value_and_grad`): for a
    `Problem` $\nabla L(\theta_k)$, for a `dynopt.games.Game` the simultaneous gradient
    $\xi(z_k)$. When `key` is given, the oracle draws one minibatch with `fold_in(key, k)` (the
    same key gives the same numbers). A `GradientTransformationExtraArgs` also receives
    `value` and `grad` (the oracle at $\theta_k$), `value_fn` and `grad_fn` (the oracle's value
    and gradient at any point, on the same minibatch): optax's line searches read `value_fn`,
    multi-evaluation schemes (extragradient, Nesterov look-aheads) read `grad_fn`.

    **Arguments:**

    - `transform`: a `Discretization` (saved times are $k\Delta t$; its hyper-parameters are traced,
      so new step sizes reuse the compiled program; a `Discretization` with a 1-D batch of step
      sizes runs all of them under one `vmap`), or any `optax.GradientTransformation` (a new
      transform object compiles anew).
    - `dt`: for a raw optax transform only, the time one step advances (e.g. the learning rate
      of GD against the gradient flow): `ts` are then the times $k\,dt$ (`ts_unit="time"`), to
      be read against a reference (`ref.evaluate(traj.ts[-1])`). Without it, `ts` are the step
      indices $k$ (`ts_unit="steps"`). A `Discretization` carries its own `dt` (passing one is
      an error).
    - `problem`: any `dynopt.AbstractProblem` (a `Problem`, a `Game`, ...).
    - `num_steps`: number of updates $N$; `every`: save every `every`-th iterate (must divide $N$).
      Each saved point evaluates the full `problem.loss` (the divergence check at the end of
      each block of `every` steps, and the recorded `loss`), whatever the oracle: for SGD on a
      finite sum of $n$ samples that is $O(n)$ work per saved point against $O(B)$ per step,
      so the default `every=1` makes each step cost $O(n)$ (measured, $n = 10^6$, $B = 32$:
      about 40× the cost per step of `every=50`). A large `every` steps SGD on a large $n$ at
      nearly the minibatch's cost.
    - `key`: `None` (full-batch gradients), one key, or a 1-D batch of keys (vmapped seeds).
    - `batch_size`: the sweep's chunk size, for a sweep only (a batch of step sizes or
      hyper-parameters, or a 1-D batch of keys): run this many runs at a time (per device), the
      chunks one after another in a `lax.map`; a `batch_size` at least the batch's length runs
      it under one `vmap`. `None` chooses (`default_batch_size`): one `vmap`, except for a
      problem with at least `SEQUENTIAL_MIN_PARAMS` parameters whose loss reads less data than
      one run has parameters (an elementwise loss such as Rosenbrock), which runs one run after
      another: there batching shares nothing and, on a CPU, XLA's batched kernel runs slower
      per element. Smaller chunks also bound the memory of the per-step intermediates. Results
      do not depend on it (to summation-order rounding). It is not the minibatch size of SGD:
      that is the problem's (`problems.finite_sum(..., batch_size=B)`, `network_problem`'s
      `batch_size`, `SGDNoise(η, B).sgd_problem(problem)`), and a `batch_size` given to a
      single run is a `ValueError`.
    - `observe`: `None`, or an observer `(params, opt_state, problem) -> pytree` evaluated at
      every saved point (after the run's own checks, on the frozen state once diverged) and
      returned as `Trajectory.observations` (leaves with the time axis after the batch axes).
      Any quantity of the state: weight averages kept by a wrapper transform
      (`dynopt.games.weight_averages` with `dynopt.games.averages`), a Hessian eigenvalue, a
      gradient norm. Pass a module-level function or an `eqx.Module` (a new lambda compiles
      anew); it runs only at saved points, so a costly one is paid once per `every` steps.

    **Returns:** a `Trajectory` with $N/\text{every} + 1$ saved points (including $\theta_0$),
    `loss` = `problem.loss` at them, `ts_unit` saying what `ts` counts ("time" or "steps"), and
    `diverged_at` = the first step $k$ whose iterate $\theta_k$ is non-finite or whose loss
    $L(\theta_k)$ (the full `problem.loss`, as recorded, also for a minibatch oracle: a NaN
    minibatch that a transform skips, `optax.apply_if_finite`, is not a divergence) is
    non-finite or exceeds $L_0 + 10^8\max(|L_0|, 1)$ ($L_0$ the loss at $\theta_0$; the growth
    criterion of `divergence_limit`: an unstable run can grow for thousands of steps before it
    overflows), or $-1$. From that step on the run stops updating: it keeps $\theta_k$ when
    only its loss failed (finite, its loss possibly `inf`), else $\theta_{k-1}$, the last
    iterate that passed; `Trajectory.valid` masks the saved points from step $k$ on. The
    steps themselves run unchecked; the iterate and loss at each saved point are tested, and
    a block that ends failing is replayed with the same test at every step to find that first
    step, so `diverged_at` does not depend on `every` for a run that stays diverged. (An
    iterate that fails and recovers inside one block, the block's end passing, is
    therefore not reported.) Extra leading axes for batches:
    step sizes first, then seeds. With several devices the outer batch axis is split across all
    of them (`NamedSharding` on a one-axis mesh; any batch size, padded and trimmed), so the
    outputs come back sharded along it; see `dynopt._sharding` for multi-host use.

    **Precision:** each parameter leaf keeps its dtype. Under strict dtype promotion, an update
    that fails inside optax's own code (optax mixes its int32 step counter with Python floats:
    Adam's bias correction, `cosine_decay_schedule`) runs under standard promotion, as a hand
    loop does; other code keeps the caller's promotion. A run whose parameters are all float64
    (x64 on) warns when its optimizer computes in float32 (`warn_if_float32_inside`): optax
    evaluates `exponential_decay`, `linear_schedule` and `polynomial_schedule` at its int32
    counter in float32 (`exponential_decay(0.1, 10, 0.9)` at step 7: 0.0928901658 for
    0.0928901698, 4.3e-8 relative); the warning names the fix, the schedule at a float64 count,
    `optax.sgd(lambda k: schedule(jnp.asarray(k, jnp.float64)))`.

    **Raises:** `ValueError` for a bad count, transform, problem, observer (one that cannot be
    called as `observe(params, opt_state, problem)` or returns no pytree of arrays), `dt`, an
    empty batch (of keys, step sizes or hyper-parameters), a key the problem's oracle does not
    take (`problem.check_key`), or a `batch_size` for a run that is not a sweep.
    """
    num_steps = positive_int("num_steps", num_steps)
    if isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}.")
    every = int(every)
    if num_steps % every != 0:
        raise ValueError(
            f"every must be a positive integer dividing num_steps={num_steps}, got {every!r}."
        )
    if not isinstance(problem, AbstractProblem):
        raise ValueError(
            "problem must be a dynopt.AbstractProblem (a dynopt.Problem, a dynopt.games.Game, "
            f"...), got {type(problem).__name__}."
        )
    positive_int("batch_size", batch_size, allow_none=True)
    if observe is not None and not callable(observe):
        raise ValueError(
            "observe must be None or a function (params, opt_state, problem) -> pytree, got "
            f"{type(observe).__name__}."
        )
    key = _as_key(key)
    problem.check_key(key)
    seeds = key is not None and key.ndim == 1
    if seeds and key.shape[0] == 0:
        raise ValueError("key is an empty batch of keys; give at least one.")
    if isinstance(transform, Discretization):
        if dt is not None:
            raise ValueError(
                "dt is only for a raw optax transform; a dynopt.Discretization carries its own "
                f"time step (dt={transform.dt})."
            )
        disc = _batch_discretization(transform)  # a batch of hyper-parameters is a sweep too
        if observe is not None:
            one = jax.tree.map(lambda x: x[0] if jnp.ndim(x) > 0 else x, disc)
            _check_observe(
                observe,
                problem,
                lambda: optax_call(one.weakly_typed().init, problem.params0, problem),
            )
        _check_sweep_batch_size(batch_size, jnp.ndim(disc.dt) > 0 or seeds)
        batched = jnp.ndim(disc.dt) > 0 or seeds
        if batched and batch_size is None:
            batch_size = default_batch_size(problem)
        outer = disc.dt.shape[0] if jnp.ndim(disc.dt) > 0 else key.shape[0] if seeds else 1
        inner = key.shape[0] if seeds and jnp.ndim(disc.dt) > 0 else 1
        with _progress_bar(num_steps, outer, inner, batch_size):
            traj = _run_discretization(
                disc,
                problem,
                num_steps,
                every,
                key,
                batch_size,
                observe,
                _progress.enabled(),
            )
            return jax.block_until_ready(traj) if _progress.enabled() else traj
    if isinstance(transform, optax.GradientTransformation):
        if dt is None:
            step = jnp.asarray(1, dtype=float)
        else:
            step = jnp.asarray(positive("dt", dt, hint="dt is the time one step advances."))
            if step.ndim != 0:
                raise ValueError(f"dt must be a scalar, got shape {step.shape}.")
        batched = seeds
        _check_sweep_batch_size(batch_size, batched)
        if observe is not None:
            _check_observe(observe, problem, lambda: optax_call(transform.init, problem.params0))
        if batched and batch_size is None:
            batch_size = default_batch_size(problem)
        with _progress_bar(num_steps, key.shape[0] if seeds else 1, 1, batch_size):
            traj = _run_transform(
                transform, problem, num_steps, every, key, batch_size, observe, step,
                _progress.enabled(),
            )  # fmt: skip
            if _progress.enabled():
                traj = jax.block_until_ready(traj)
        return dataclasses.replace(traj, ts_unit="steps" if dt is None else "time")
    # An optax wrapper object (optax.MultiSteps) is not itself a transformation: say how to get
    # the one it wraps.
    hint = (
        " Pass its .gradient_transformation()."
        if callable(getattr(transform, "gradient_transformation", None))
        else ""
    )
    raise ValueError(
        "transform must be a dynopt.Discretization or an optax.GradientTransformation, got "
        f"{type(transform).__name__}.{hint}"
    )
