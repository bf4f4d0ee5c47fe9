r"""Along a run, whether an optimizer's step ever switches branch.

An update with an iterate-dependent branch (`select_n`: clipping, a `jnp.where` guard; `max`,
`min`, `clamp`: `optax.clip`, a running maximum; `sign`, `abs`: signSGD, Lion, Adamax) is
smooth, and its modified flow exact, on each side of the branch's switching surface. The
discrete run of step size $h$ is replayed with the step's predicates recorded
(`smooth.branch_bits`); the first step whose predicates differ from step 0's is where the run
crosses a kink. The flow itself is expanded at $h = 0$: step 0's predicates must also be those
of the step at $h = 0$ from the same point, else the run is on another branch from the start.
Only the optimizer's predicates are recorded: the loss and its gradient (also where the update
evaluates them elsewhere, `value_fn`, `grad_fn`) are inputs to the step, each evaluation one
`smooth.opaque` call, so a branch inside the loss (`jnp.logaddexp`'s `max`, smooth as a whole)
is not taken for the optimizer's.
"""

import contextlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._problem import AbstractProblem
from .._validation import host_validated
from .counters import bias_products
from .slow import counted_init
from .smooth import branch_bits, opaque
from .step import raw_step


class _AbstractWrapped(AbstractProblem):
    """`problem` with its oracle evaluated otherwise (abstract): its start, name and key check
    are `problem`'s."""

    problem: eqx.AbstractVar[AbstractProblem]

    @property
    def params0(self):
        return self.problem.params0

    @property
    def name(self):
        return self.problem.name

    def check_key(self, key):
        self.problem.check_key(key)


class _OpaqueOracle(_AbstractWrapped):
    """`problem` whose every oracle evaluation is one `opaque` call: to `branch_bits`, its
    values and gradients are inputs of the step, whose predicates are not recorded."""

    problem: AbstractProblem

    def loss(self, params):
        return opaque(self.problem.loss)(params)

    def value(self, params, key=None):
        return opaque(lambda p, k: self.problem.value(p, k))(params, key)

    def value_and_grad(self, params, key=None):
        return opaque(lambda p, k: self.problem.value_and_grad(p, k))(params, key)


def step_bits(spec, problem, tau, params, state, zeros: bool = False):
    """`((params', state'), bits, tie)` of one step at `tau` (`smooth.branch_bits`), the
    problem's oracle evaluations opaque (their own branches are not the optimizer's);
    `zeros`: `(..., tie, zero)`, a `sign`/`abs` operand exactly 0 apart."""
    inputs = _OpaqueOracle(problem)
    with jax.numpy_dtype_promotion("standard"):
        fn = lambda p, s: raw_step(spec, tau, p, s, inputs)
        return branch_bits(fn, params, state, with_ties=True, zeros=zeros)


def left_zero(problem, before, after) -> list[str]:
    """The gradient entries (`θ[path][index]`) exactly 0 at `before` and not at `after`: where
    a `sign`/`abs` of the gradient sat on its kink by accident (a zero that the step leaves,
    unlike the entry of a parameter the loss does not read, or behind a dead ReLU unit, which
    is 0 at every point near by)."""
    g0, g1 = problem.grad(before), problem.grad(after)
    flat, _ = jax.tree_util.tree_flatten_with_path(g0)
    names = []
    for (path, a), b in zip(flat, jax.tree.leaves(g1)):
        a, b = np.asarray(a), np.asarray(b)
        for i in zip(*np.nonzero((a == 0) & (b != 0))):
            names.append(f"θ{jax.tree_util.keystr(path)}{list(map(int, i))}")
    return names


def _zero_message(names, where: str) -> str:
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return (
        f"{where} the gradient entry {shown} exactly 0, the kink of the step's sign, and one "
        "step later it is not: a zero by accident, from which the run leaves at once onto "
        "another branch (sign 0, then ±1), so no modified flow describes it. Start where that "
        "entry is not 0. (An entry that stays 0, as a parameter the loss does not read or the "
        "weights of a dead ReLU unit, is no such tie: its field is 0.)"
    )


@eqx.filter_jit
def _first_switch(flow, problem, h, n):
    disc = flow.discretize(h)
    spec, tau = flow.spec, disc.dt
    params = problem.params0

    def step(p, s):
        # A sign/abs operand exactly 0 is no tie here: its bits are its sign, 0 included, so
        # one that leaves 0 switches, and one that stays 0 along the run (the gradient entry
        # of a parameter the loss does not read) takes one branch throughout.
        out, bits, tie, _ = step_bits(spec, problem, tau, p, s, zeros=True)
        return out, bits, tie

    state0 = disc.init(params, problem)
    (p1, s1), bits0, tie0 = step(params, state0)
    # The flow is expanded at τ = 0: the branches it differentiates are the step's at τ = 0
    # (with the bias corrections' products where the slow state carries them), which a run at
    # h > 0 must take too. A guard on updates already scaled by h (exactly 0 at τ = 0) takes
    # another branch from the first step on: a switch at step 0, which bits0 alone cannot see.
    zero = jnp.zeros_like(tau)
    products = counted_init(spec, tau, params, state0).products if spec.products else None
    with bias_products(products) if products else contextlib.nullcontext():
        out_zero, bits_zero, _ = step_bits(spec, problem, zero, params, state0)
    differs = bits_zero.shape != bits0.shape or jnp.any(bits_zero != bits0)
    # (a NaN at τ = 0, e.g. the singular start of a slow series, decides nothing)
    at_zero = differs & _finite((params, state0)) & _finite(out_zero) & _finite((p1, s1))

    # The replay stops at the first non-finite iterate: a NaN predicate (a comparison with a
    # NaN is False) is no branch switch, and a run that blows up (e.g. from an invalid start)
    # is diagnosed by the caller, not as a kink.
    def cond(c):
        k, first, _, _ = c
        return (k < n) & (first < 0) & _finite((c[2], c[3]))

    def body(c):
        k, first, p, s = c
        (p, s), bits, tie = step(p, s)
        # a step whose result is not finite computed its predicates on NaN: not counted
        switched = (jnp.any(bits != bits0) | tie) & _finite((p, s))
        return k + 1, jnp.where(switched, k, first), p, s

    start = jnp.where(tie0 & _finite((params, state0)), 0, -1)
    init = (jnp.asarray(1), start, p1, s1)
    return jax.lax.while_loop(cond, body, init)[1], at_zero, p1


def _finite(tree) -> jax.Array:
    """Whether every inexact leaf of `tree` is finite (a traced boolean)."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if eqx.is_array(x) and jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.asarray(leaves)) if leaves else jnp.asarray(True)


def first_switch(flow, problem, step_sizes, num_steps) -> np.ndarray:
    """Per step size, the first step $k$ whose branch predicates differ from step 0's (the
    run crosses a kink between steps $k - 1$ and $k$) or whose comparisons meet a tie (the
    iterate sits on a kink: 0 where the run starts on one), or -1 when none does in
    `num_steps` steps or before the first non-finite iterate (a run that blows up is no
    switch: its predicates on NaN are meaningless). Step sizes and counts are validated by
    the caller (one compile for all).

    **Raises:** `ValueError` where a run's first step takes other branches than the step at
    $h = 0$, the point of the flow's expansion (a switch at step 0: the flow describes a
    branch the run never takes), and where a run starts with a gradient entry exactly 0 that
    its first step leaves (a `sign`'s tie by accident, `left_zero`; the entry named)."""
    out = []
    with host_validated():
        for h, n in zip(np.asarray(step_sizes), np.asarray(num_steps)):
            first, at_zero, p1 = _first_switch(flow, problem, jnp.asarray(h), jnp.asarray(n))
            if bool(at_zero):
                raise ValueError(
                    f"flow: the run at h = {float(h):g} takes, from its first step, another "
                    f"branch of the optimizer's step ({', '.join(flow.spec.branches)}) than "
                    "the step at h = 0, where the modified flow is expanded: the flow describes "
                    "a branch the run never takes. A clipping or guard applied to updates "
                    "already scaled by the learning rate does this (optax.chain(optax.sgd(h), "
                    "optax.clip_by_global_norm(c)) clips once h*|grad L| > c, never at h = 0): "
                    "apply the learning rate after it (optax.chain(optax.clip_by_global_norm(c)"
                    ", optax.sgd(h))), or take step sizes at which the run stays on the branch "
                    "of h = 0."
                )
            if int(first) == 1 and (names := left_zero(problem, problem.params0, p1)):
                where = f"flow: the run at h = {float(h):g} starts with"
                raise ValueError(_zero_message(names, where))
            out.append(int(first))
    return np.asarray(out)
