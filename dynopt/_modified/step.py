r"""One optimizer step as a map of the state, in the form backward error analysis expands.

The optimizer is a callable $h \mapsto$ `optax.GradientTransformation` (or $h \mapsto$
`Discretization`). With the time unit $\tau = h^q$ (default $q = 1$), one step is the map
$\Phi_\tau(\theta, s) = (\theta + u, s')$ where `(u, s') = tx.update(∇L(θ), s, θ, ...)` for
`tx = optimizer(τ^{1/q})`. Integer leaves of $s$ (optax's step counters) are not expanded.
"""

import dataclasses
import functools as ft
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .._discretization import accepted_extra_args, Discretization
from .._maps.base import with_standard_promotion
from .._run import oracle
from .._validation import at_zero_step
from .roots import root_arguments, zero_safe_roots
from .smooth import dependent_outputs


# A counter this large makes optax's bias corrections 1 - b**count exactly 1 in float64: the
# optimizer after a long history, i.e. on its slow manifold.
SATURATED_COUNT = 2**30


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    r"""The static description of an optimizer for the automatic flow (hashable: it is the
    `factory` of the flow's `Discretization`).

    - `optimizer`: $h \mapsto$ `GradientTransformation` or `Discretization`.
    - `power`: $n = 1/q$, with $h = \tau^n$ (1: the time per step is $h$ itself).
    - `regime`: `"slow"` (every state leaf near identity, expanded jointly with θ) or `"fast"`
      (the state is slaved to θ on its slow manifold).
    - `order`: the number of terms $p$ of the modified field.
    - `state_map`: `None` or `(forward, inverse)`, `forward(opt_state, τ) -> z`,
      `inverse(z, τ) -> opt_state`: the coordinates in which the slow state is near identity.
    - `lag`: 1 when a fast state holds updates already scaled by the step (a trace after the
      learning rate, as in `optax.rmsprop(h, momentum=β)`): it moves θ at $h = 0$ and its
      manifold starts at $M_0 = 0$, so the reduced map's $d_n$ sees $M_n$, one manifold term
      more than when θ's update is $O(h)$ in the state; else 0.
    - `branches`: the iterate-dependent branches of the step (`select_n` of clipping, a
      `jnp.where` guard): the map is expanded on the branch its point takes, valid while a run
      never switches (`dynopt._modified.branches.first_switch`).
    - `sweeps`: 1 when the fast state's leaves update independently; else the length of the
      longest chain of leaves reading each other (AdaBelief: $m \to v$, 2), the Jacobi sweeps
      that solve for its slow manifold exactly (`fast._coupled_solve`).
    - `products`: in the slow regime, the number of bias corrections a step computes from the
      step counter, carried as products $c_i = b_i^k$ (`dynopt._modified.counters`); else 0.
    - `zero_roots`: the update's square roots differentiated with derivative 0 at 0
      (`dynopt._modified.roots`; `False`: JAX's, $0\cdot\infty$ = NaN there, what the
      construction checks read to tell a vanishing second moment from a non-analytic step).
    """

    optimizer: Callable[[Any], Any]
    power: int = 1
    regime: str = "slow"
    order: int = 1
    state_map: tuple[Callable, Callable] | None = None
    lag: int = 0
    branches: tuple[str, ...] = ()
    sweeps: int = 1
    products: int = 0
    zero_roots: bool = True

    def __call__(self, step_size) -> optax.GradientTransformationExtraArgs:
        """The optimizer at step size $h$ (the `Discretization` factory)."""
        # The expansion evaluates it at h = 0, where a map's checks (step_size > 0, dt > 0)
        # would refuse it: unchecked here, checked at positive h when the flow is built.
        with at_zero_step():
            out = self.optimizer(step_size)
            if isinstance(out, Discretization):
                out = out.transform  # (built here: its factory's own checks see h = 0 too)
        return with_standard_promotion(out)

    def transform(self, tau) -> optax.GradientTransformationExtraArgs:
        return self(tau**self.power)


def split_state(opt_state, constants: frozenset[int] = frozenset()):
    """`(floating leaves, the rest)` of an optax state (`eqx.partition`). `constants`: indices
    (in `jax.tree.leaves` order) of floating leaves that go with the rest, the constants that a
    step passes through unchanged (`passthrough`)."""
    if not constants:
        return eqx.partition(opt_state, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(opt_state)
    mask = [eqx.is_inexact_array(x) and i not in constants for i, x in enumerate(leaves)]
    return eqx.partition(opt_state, jax.tree.unflatten(treedef, mask))


def passthrough(spec: "OptimizerSpec", params) -> frozenset[int]:
    """Indices (in `jax.tree.leaves` order) of the floating leaves of the optimizer state for
    `params` that one step returns as they came in: constants kept in the state (muon's
    Newton-Schulz coefficients), hyper-parameters rather than state. Read off the step's jaxpr
    (an output that is the input variable itself), from shapes alone."""
    leaves, treedef = jax.tree.flatten(params)
    return _passthrough(spec, treedef, tuple((x.shape, jnp.result_type(x)) for x in leaves))


@ft.cache
def _passthrough(spec: "OptimizerSpec", treedef, avals) -> frozenset[int]:
    try:
        return _passthrough_traced(spec, treedef, avals)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError):
        return frozenset()  # a step that does not trace so: its own checks say why


def _passthrough_traced(spec: "OptimizerSpec", treedef, avals) -> frozenset[int]:
    # Traced from shapes alone (no `ensure_compile_time_eval`: under it the zero gradients'
    # arithmetic, constants, ran eagerly, op by op, one compile per leaf shape and op).
    params = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in avals])
    tau = jax.ShapeDtypeStruct((), jnp.result_type(float))
    state = jax.eval_shape(lambda t, p: spec.transform(t).init(p), tau, params)
    closed = jax.make_jaxpr(lambda t, p, s: zero_update(spec, t, p, s))(tau, params, state)
    # A constant, not a value set from h or the parameters at init (prodigy's params0,
    # inject_hyperparams' learning rate): those the expansion could not rebuild from init at
    # h = 0 and the current parameters.
    init = jax.make_jaxpr(lambda t, p: spec.transform(t).init(p))(tau, params)
    set_at_init = dependent_outputs(init.jaxpr, [True] * len(init.jaxpr.invars))
    ins = closed.jaxpr.invars[1 + len(avals) :]
    leaves = zip(jax.tree.leaves(state), ins, closed.jaxpr.outvars, set_at_init)
    return frozenset(
        i
        for i, (x, v, o, variable) in enumerate(leaves)
        if jnp.issubdtype(x.dtype, jnp.inexact) and o is v and not variable
    )


def saturate_counters(rest, count: int = SATURATED_COUNT):
    """Integer leaves (step counters) set to `count` (default `SATURATED_COUNT`)."""

    def one(x):
        if eqx.is_array(x) and jnp.issubdtype(x.dtype, jnp.integer):
            return jnp.full_like(x, min(count, int(jnp.iinfo(x.dtype).max) // 2))
        return x

    return jax.tree.map(one, rest)


def _has_flags(rest) -> bool:
    return any(eqx.is_array(x) and x.dtype == jnp.bool_ for x in jax.tree.leaves(rest))


def settle_flags(spec: "OptimizerSpec", tau, params, opt_state, steps: int = 2):
    """`opt_state` with its boolean leaves (first-step flags, e.g. optax's
    `is_initial_step` in `scale_by_optimistic_gradient`) as they are after `steps` updates:
    the optimizer after a long history, like a saturated counter. The updates are fed zeros
    (flags do not depend on the gradients' values); a state without flags is returned as is."""
    floats, rest = split_state(opt_state)
    if not _has_flags(rest):
        return opt_state
    state = opt_state
    for _ in range(steps):
        state = zero_update(spec, tau, params, state)
    late = split_state(state)[1]
    flags = jax.tree.map(
        lambda x, y: y if eqx.is_array(x) and x.dtype == jnp.bool_ else x, rest, late
    )
    return eqx.combine(floats, flags)


def zero_update(spec: "OptimizerSpec", tau, params, opt_state):
    """The optimizer state after one update fed zero gradients (and a zero loss): for what does
    not depend on the gradients' values (flags, counters, the bias corrections a step reads)."""
    tx = spec.transform(tau)
    zeros = jax.tree.map(jnp.zeros_like, params)
    extra = dict(
        value=jnp.zeros(()),
        grad=zeros,
        value_fn=lambda p, grad_fn=None, obj_fn=None: jnp.zeros(()),
        obj_fn=lambda p: jnp.zeros(()),
        grad_fn=lambda p, *index: jax.tree.map(jnp.zeros_like, p),
    )
    return tx.update(zeros, opt_state, params, **accepted_extra_args(tx.update, extra))[1]


def has_counters(opt_state) -> bool:
    return any(
        eqx.is_array(x) and jnp.issubdtype(x.dtype, jnp.integer) for x in jax.tree.leaves(opt_state)
    )


def step_roots(spec: OptimizerSpec, tau, params, opt_state, problem) -> list:
    """The arguments of the square roots of `raw_step`'s update (concrete where the inputs
    are)."""
    tx = spec.transform(tau)
    value, grad = problem.value_and_grad(params)
    extra = oracle(problem, None, 0).extra_args(tx, value, grad)
    return root_arguments(lambda g, s, p: tx.update(g, s, p, **extra), grad, opt_state, params)


def raw_step(spec: OptimizerSpec, tau, params, opt_state, problem):
    """$(\\theta, s) \\mapsto (\\theta + u, s')$ for the optimizer at $\\tau$, with optax's extra
    arguments (`value`, `grad`, `value_fn`, `grad_fn`) from the problem."""
    tx = spec.transform(tau)
    value, grad = problem.value_and_grad(params)
    extra = oracle(problem, None, 0).extra_args(tx, value, grad)  # what `dynopt.run` passes
    update = lambda g, s, p: tx.update(g, s, p, **extra)
    if spec.zero_roots:
        # A second moment that vanishes with its gradient entry (a parameter the loss does not
        # read) has a zero tangent: its root's derivative times it is 0, not 0·∞ = NaN.
        update = zero_safe_roots(update)
    updates, new_state = update(grad, opt_state, params)
    return optax.tree.add(params, optax.tree.cast_like(updates, params)), new_state
