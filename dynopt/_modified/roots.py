r"""Square roots at zero in an optimizer's update, for the nested `jvp`s of the expansion.

An optimizer divides by the root of a second moment, $\sqrt{v}$ with $v \ge 0$ (Adam, RMSprop,
AdaBelief at `eps_root = 0`, a global norm). Where a gradient entry vanishes, $v = 0$ on the
slow manifold and JAX's derivative $t/(2\sqrt v)$ is $0\cdot\infty$ = NaN even for the zero
tangent $t = 0$ that every smooth path through a minimum of $v \ge 0$ has: one always-zero
input pixel of a network (its weights' gradients vanish identically) made the whole modified
field NaN, though the optimizer never moves those weights and their field is exactly 0.
`zero_safe_roots(fn)` evaluates `fn` with $\sqrt{}$'s derivative taken as 0 at 0 (linear in
the tangent, so `vjp`/`linearize` transpose it as before; unchanged wherever $v > 0$).
Exact where $v$ vanishes identically; at an isolated zero crossing of a gradient entry
($\sqrt{g^2} = |g|$, $C^1$ but not $C^2$) the expansion's third order takes the symmetric
value, as `jvp` does for `abs`.
"""

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jex_core

from .smooth import call_jaxpr, is_opaque


# Calls whose body is evaluated here, so that a root inside (e.g. `jnp.linalg.norm`'s jit) is
# reached; a custom_jvp/vjp call keeps its rule (it is bound as is).
_INLINE = {"pjit", "jit", "closed_call", "core_call", "remat", "checkpoint"}


@jax.custom_jvp
def sqrt0(x):
    """$\\sqrt x$ with derivative 0 at $x = 0$ (the one-sided derivative is $+\\infty$; in an
    update, the argument there is a second moment at its minimum, whose tangent is 0)."""
    return lax.sqrt(x)


@sqrt0.defjvp
def _sqrt0_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    ans = sqrt0(x)
    zero = ans == 0
    return ans, t * jnp.where(zero, 0.0, 0.5 / jnp.where(zero, 1.0, ans)).astype(t.dtype)


def _body(eqn):
    # An `opaque` call (the loss and its gradient, also where the update evaluates them
    # elsewhere: SAM's grad_fn) stays one call: inlined, its own branches (`jnp.logaddexp`'s
    # max) were read by `smooth` as the optimizer's, and a run of SAM on a logistic loss was
    # refused as switching branch.
    if eqn.primitive.name not in _INLINE or is_opaque(eqn):
        return None
    return call_jaxpr(eqn)


def _eval(jaxpr, consts, args, found: list | None = None):
    # `found`: where given, the argument of every square root (`sqrt`, `rsqrt`) is appended.
    env = {}

    def read(v):
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        vals = [read(v) for v in eqn.invars]
        body = _body(eqn)
        if found is not None and eqn.primitive in (lax.sqrt_p, lax.rsqrt_p):
            found.append(vals[0])
        if body is not None:
            outs = _eval(body[0], body[1], vals, found)
        elif eqn.primitive is lax.sqrt_p:
            outs = [sqrt0(vals[0])]
        else:
            outs = eqn.primitive.bind(*vals, **eqn.primitive.get_bind_params(eqn.params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
    return [read(v) for v in jaxpr.outvars]


def zero_safe_roots(fn):
    """`fn` evaluated with `sqrt0` for every square root it takes (outside control flow)."""

    def wrapped(*args):
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = _eval(closed.jaxpr, closed.consts, jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(shape), outs)

    return wrapped


def root_arguments(fn, *args) -> list:
    """The arguments of the square roots (`sqrt`, `rsqrt`) that `fn(*args)` takes, in order
    (outside control flow; concrete where `args` are)."""
    closed = jax.make_jaxpr(fn)(*args)
    found = []
    _eval(closed.jaxpr, closed.consts, jax.tree.leaves(args), found)
    return found
