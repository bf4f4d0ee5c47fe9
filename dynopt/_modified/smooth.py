r"""Static detection of non-smooth update maps.

A map with `sign` (Lion, signSGD), an active-set `select` (gradient clipping), `max`/`min`
(Polyak truncation) or rounding of the iterate has no Taylor expansion in $h$ where a kink is
crossed, and nested `jvp`s differentiate it as if the kink were absent: the modified field would
be silently wrong. Such primitives are found in the jaxpr of one step, counting only those whose
operands depend on the parameters or the floating optimizer state (an integer counter's
`select`, as in optax's `safe_increment`, is smooth in $h$).
"""

import jax
from jax.extend import core as jex_core


_KINKS = {"sign", "max", "min", "abs", "floor", "ceil", "round", "clamp", "argmax", "argmin"}
_PREDICATED = {"select_n", "cond", "while"}


def _sub_jaxprs(params):
    for v in params.values():
        if isinstance(v, jex_core.ClosedJaxpr):
            yield v.jaxpr
        elif isinstance(v, jex_core.Jaxpr):
            yield v
        elif isinstance(v, (tuple, list)):
            for x in v:
                if isinstance(x, jex_core.ClosedJaxpr):
                    yield x.jaxpr
                elif isinstance(x, jex_core.Jaxpr):
                    yield x


def _scan(jaxpr, dependent: list[bool], found: list[str]) -> list[bool]:
    dep = {v: d for v, d in zip(jaxpr.invars, dependent)}

    def is_dep(v):
        return not isinstance(v, jex_core.Literal) and dep.get(v, False)

    for eqn in jaxpr.eqns:
        ins = [is_dep(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in _KINKS and any(ins):
            found.append(name)
        elif name in _PREDICATED and ins and ins[0]:
            found.append(f"{name} (a branch chosen by the iterate, e.g. clipping)")
        subs = list(_sub_jaxprs(eqn.params))
        if subs and name in (
            "pjit",
            "jit",
            "closed_call",
            "custom_jvp_call",
            "custom_vjp_call",
            "remat",
            "checkpoint",
        ):
            outs = _scan(subs[0], ins, found)
            if len(outs) == len(eqn.outvars):
                for v, d in zip(eqn.outvars, outs):
                    dep[v] = d
                continue
        else:
            for sub in subs:
                _scan(sub, [any(ins)] * len(sub.invars), found)
        for v in eqn.outvars:
            dep[v] = any(ins)
    return [is_dep(v) for v in jaxpr.outvars]


def nonsmooth_primitives(fn, *args) -> list[str]:
    """The non-smooth primitives of `fn(*args)` whose operands depend on the floating inputs."""
    closed = jax.make_jaxpr(fn)(*args)
    flat = jax.tree.leaves(args)
    dependent = [jax.numpy.issubdtype(jax.numpy.result_type(x), jax.numpy.inexact) for x in flat]
    found: list[str] = []
    _scan(closed.jaxpr, dependent, found)
    return sorted(set(found))
