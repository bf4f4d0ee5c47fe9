r"""Detection of non-smooth update maps, statically and along a run.

A map with rounding of the iterate (`floor`, `round`, `argmax`) has no Taylor expansion in $h$
where a kink is crossed, and nested `jvp`s differentiate it as if the kink were absent: the
modified field would be silently wrong. Such primitives are found in the jaxpr of one step,
counting only those whose operands depend on the parameters or the floating optimizer state (an
integer counter's `select`, as in optax's `safe_increment`, is smooth in $h$), and refused.

A *branch* (`select_n`, `cond`: gradient clipping, a `jnp.where` guard as in Adagrad or LAMB's
trust ratio) is smooth wherever its predicate does not change: the map is expanded on the
branch its point takes, exact while no run crosses the switching surface. `branch_bits`
evaluates one step and returns its predicates, so a run can check that they never change
(`first_switch`); crossing the surface, e.g. clipping that becomes active, is the kink.

A *comparison* (`max`, `min`, `clamp`: `optax.clip`, AMSGrad's running maximum, Polyak's
truncation; `sign`, `abs`: signSGD, Lion, Adamax's $|g|$) is a branch of the same kind: away
from a tie it is one of its operands (for `sign`, the constant $\pm1$; for `abs`, $\pm x$), and
`jvp` differentiates that one. Its predicate is which operand it takes, elementwise (-1, +1;
for `clamp` below, inside, above; for `sign` and `abs` the sign of $x$). At a tie (equal
operands; $x = 0$) the map has a kink and `jvp` returns a derivative of no branch (the
operands' mean; `sign`'s 0): `branch_bits` reports ties apart, and a run that meets one is
refused like a run that switches. A `sign`/`abs` operand exactly 0 is reported apart again: its
bits (the sign, 0 included) change when it leaves 0, and one that stays 0 along a run (the
gradient entry of a parameter the loss does not read, or of a dead ReLU unit's weights) never
switches: its field is 0 there (`sign`'s derivative, 0, multiplies a tangent that is 0).
"""

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core


_KINKS = {"floor", "ceil", "round", "argmax", "argmin"}
_BRANCHES = {"select_n", "cond"}
_COMPARISONS = {"max", "min", "clamp", "sign", "abs"}
# What each comparison is in an optimizer (for the branches' labels).
_EXAMPLE = {
    "max": "optax.clip",
    "min": "optax.clip",
    "clamp": "optax.clip",
    "sign": "signSGD, Lion",
    "abs": "Adamax's |g|",
}
_LOOPS = {"while"}
_RANDOM = {"random_bits", "random_seed", "random_wrap", "threefry2x32", "random_fold_in"}
# Call-like primitives whose body is one jaxpr evaluated on the same operands.
_CALLS = {
    "pjit",
    "jit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "remat",
    "checkpoint",
}


# The name of a `jax.jit` call that `branch_bits` evaluates whole (`opaque`).
_OPAQUE = "dynopt_opaque_input"


def opaque(fn):
    """`fn` as one `jax.jit` call that `branch_bits` evaluates whole, recording none of its
    predicates: for what feeds the step as an input (the loss and its gradient, whose own
    branches, e.g. `jnp.logaddexp`'s `max`, are not the optimizer's)."""

    def dynopt_opaque_input(*args):  # the name is the mark (`_OPAQUE`)
        return fn(*args)

    return jax.jit(dynopt_opaque_input)


def is_opaque(eqn) -> bool:
    """Whether `eqn` is an `opaque` call (the loss or its gradient, an input of the step)."""
    return eqn.primitive.name in _CALLS and eqn.params.get("name") == _OPAQUE


def _call_body(eqn):
    """`(jaxpr, consts)` of a call-like equation, else `None` (also for an `opaque` call)."""
    if eqn.primitive.name not in _CALLS or is_opaque(eqn):
        return None
    return call_jaxpr(eqn)


def call_jaxpr(eqn):
    """`(jaxpr, consts)` of the body an equation's parameters hold, else `None`."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        j = eqn.params.get(key)
        if isinstance(j, jex_core.ClosedJaxpr):
            return j.jaxpr, j.consts
        if isinstance(j, jex_core.Jaxpr):
            return j, []
    return None


def _sub_jaxprs(params):
    for v in params.values():
        for x in v if isinstance(v, (tuple, list)) else (v,):
            if isinstance(x, jex_core.ClosedJaxpr):
                yield x.jaxpr
            elif isinstance(x, jex_core.Jaxpr):
                yield x


class Found:
    """What one step's jaxpr holds: `kinks` (refused), `branches` (checked along a run),
    `random` (a PRNG draw: the map is random)."""

    def __init__(self):
        self.kinks: set[str] = set()
        self.branches: set[str] = set()
        self.random: set[str] = set()


def _scan(jaxpr, dependent: list[bool], found: Found, nested: bool) -> list[bool]:
    """Propagate "depends on the iterate" through `jaxpr`, recording what `Found` names. Inside
    a loop or `cond` body (`nested`) a branch cannot be observed by `branch_bits`: a kink."""
    dep = dict(zip(jaxpr.invars, dependent))

    def is_dep(v):
        return not isinstance(v, jex_core.Literal) and dep.get(v, False)

    for eqn in jaxpr.eqns:
        ins = [is_dep(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in _RANDOM:
            found.random.add(name)
        if name in _KINKS and any(ins):
            found.kinks.add(name)
        elif name in _LOOPS and any(ins):
            found.kinks.add(f"{name} (a loop whose trip count may depend on the iterate)")
        elif name in _BRANCHES and ins and ins[0]:
            label = f"{name} (a branch chosen by the iterate, e.g. clipping)"
            (found.kinks if nested else found.branches).add(label)
        elif name in _COMPARISONS and any(ins):
            label = f"{name} (a comparison of iterate-dependent values, e.g. {_EXAMPLE[name]})"
            (found.kinks if nested else found.branches).add(label)
        body = _call_body(eqn)
        if is_opaque(eqn):
            pass  # an input to the step: its outputs depend on what its operands do
        elif body is not None:
            outs = _scan(body[0], ins, found, nested)
            if len(outs) == len(eqn.outvars):
                dep.update(zip(eqn.outvars, outs))
                continue
        elif name == "cond":
            # Each branch sees the operands after the index, one for one: an output depends on
            # the iterate where some branch makes it so (or the index does). Its bodies are
            # nested all the same: `branch_bits` cannot observe a branch inside them.
            outs = [_scan(b.jaxpr, ins[1:], found, True) for b in eqn.params["branches"]]
            for v, *alike in zip(eqn.outvars, *outs):
                dep[v] = ins[0] or any(alike)
            continue
        else:
            for sub in _sub_jaxprs(eqn.params):
                _scan(sub, [any(ins)] * len(sub.invars), found, True)
        for v in eqn.outvars:
            dep[v] = any(ins)
    return [is_dep(v) for v in jaxpr.outvars]


def _dependent(args) -> list[bool]:
    return [jnp.issubdtype(jnp.result_type(x), jnp.inexact) for x in jax.tree.leaves(args)]


def dependent_outputs(jaxpr, dependent: list[bool]) -> list[bool]:
    """Which outputs of `jaxpr` depend on the inputs marked in `dependent`."""
    return _scan(jaxpr, dependent, Found(), False)


def classify(fn, *args) -> Found:
    """The non-smooth primitives of `fn(*args)` whose operands depend on its floating inputs."""
    closed = jax.make_jaxpr(fn)(*args)
    found = Found()
    _scan(closed.jaxpr, _dependent(args), found, False)
    return found


def _sides(name: str, vals) -> tuple[jax.Array, jax.Array]:
    """`(side, tie)` of a comparison: which operand `max`/`min` takes (-1: the first, +1: the
    second), where `clamp(lo, x, hi)` puts `x` (-1 below, 0 inside, +1 above) or the sign of
    the operand of `sign`/`abs` (-1, +1; 0 at its kink), elementwise, and whether any pair of
    compared operands is equal (for `sign`/`abs`: an operand is 0)."""
    if name in ("sign", "abs"):
        (x,) = vals
        return jnp.sign(x), jnp.any(x == 0)
    if name == "clamp":
        lo, x, hi = jnp.broadcast_arrays(*vals)
        side = jnp.where(x < lo, -1, jnp.where(x > hi, 1, 0))
        return side, jnp.any((x == lo) | (x == hi))
    a, b = jnp.broadcast_arrays(*vals)
    take_a = (a > b) if name == "max" else (a < b)
    return jnp.where(take_a, -1, 1), jnp.any(a == b)


def _eval(jaxpr, consts, args, dependent, bits: list, ties: list):
    """Evaluate `jaxpr` (as `jax.core.eval_jaxpr`), appending the predicate of every branch
    whose predicate depends on the iterate to `bits`, in program order, and for each
    comparison of iterate-dependent values whether it met a tie to `ties`."""
    env, dep = {}, {}

    def read(v):
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    def is_dep(v):
        return not isinstance(v, jex_core.Literal) and dep.get(v, False)

    for v, c in zip(jaxpr.constvars, consts):
        env[v], dep[v] = c, False
    for v, a, d in zip(jaxpr.invars, args, dependent):
        env[v], dep[v] = a, d
    for eqn in jaxpr.eqns:
        vals = [read(v) for v in eqn.invars]
        ins = [is_dep(v) for v in eqn.invars]
        body = _call_body(eqn)
        if body is not None:
            outs, outdep = _eval(body[0], body[1], vals, ins, bits, ties)
        else:
            outs = eqn.primitive.bind(*vals, **eqn.primitive.get_bind_params(eqn.params))
            outs = outs if eqn.primitive.multiple_results else [outs]
            outdep = [any(ins)] * len(outs)
            if eqn.primitive.name in _BRANCHES and ins[0]:
                bits.append(jnp.ravel(vals[0]).astype(jnp.int32))
            elif eqn.primitive.name in _COMPARISONS and any(ins):
                side, tie = _sides(eqn.primitive.name, vals)
                bits.append(jnp.ravel(side).astype(jnp.int32))
                # (kind, tie): a `sign`/`abs` operand at 0 apart (`branch_bits`' `zeros`)
                ties.append((eqn.primitive.name in ("sign", "abs"), tie))
        for v, o, d in zip(eqn.outvars, outs, outdep):
            env[v], dep[v] = o, d
    return [read(v) for v in jaxpr.outvars], [is_dep(v) for v in jaxpr.outvars]


def branch_bits(fn, *args, with_ties: bool = False, zeros: bool = False):
    """`(fn(*args), bits)`: the output and the concatenated predicates (int32) of the branches
    and comparisons of `fn` chosen by its floating inputs; two points on the same side of every
    switching surface give equal bits. `with_ties`: `(out, bits, tie)`, `tie` true where some
    comparison's operands are equal (the point sits on a kink). `zeros` (with `with_ties`):
    `(out, bits, tie, zero)`, the ties of `sign`/`abs` (an operand exactly 0) apart in `zero`
    and not in `tie`. Their bits are the operand's sign, 0 included, so an operand that
    leaves 0 changes the bits: a run that stays at 0 (an operand that vanishes identically,
    as the gradient entry of a parameter the loss does not read) never switches."""
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    bits: list = []
    ties: list = []
    leaves = jax.tree.leaves(args)
    outs, _ = _eval(closed.jaxpr, closed.consts, leaves, _dependent(args), bits, ties)
    out = jax.tree.unflatten(jax.tree.structure(shape), outs)
    bits = jnp.concatenate(bits) if bits else jnp.zeros((0,), jnp.int32)
    if not with_ties:
        return out, bits

    def any_of(ts):
        return jnp.any(jnp.stack(ts)) if ts else jnp.asarray(False)

    if not zeros:
        return out, bits, any_of([t for _, t in ties])
    return (
        out,
        bits,
        any_of([t for at_zero, t in ties if not at_zero]),
        any_of([t for at_zero, t in ties if at_zero]),
    )
