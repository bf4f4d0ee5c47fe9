"""One function over a batch: at once (`vmap`) on an accelerator, one call after another on a
CPU."""

from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core

from ._validation import is_traced


def map_batch(fn: Callable[..., Any], *xs: Any) -> Any:
    r"""`jax.vmap(fn)(*xs)` over the leading axis of `xs`, but one call after another
    (`jax.lax.map`) on a CPU backend (decided at trace time, by `jax.default_backend()`).

    On a CPU a batch gains no speed and can lose it: XLA:CPU runs a batch of small products (a
    vmapped network's matrix products) slower than the same products one at a time (on the
    anchor MLP, 433 parameters, 128 points, $k = 5$, LOBPCG took 1.4× as long with its block
    products vmapped: 2 iterations 4.2 against 2.9 ms CPU; 1.4× on an MLP with 8,970
    parameters, equal on a `SmallCNN`; the central flow's 15 third derivatives 1.15×); and a
    batched `while_loop` (an adaptive diffrax solve, a Newton root find) is traced again through
    its batching rule and steps every entry until the slowest is done, for a program that takes
    longer to trace and compile (Burgers' characteristics, 71 of them, cold: 6.3 → 4.3 s CPU).
    Elsewhere (a GPU) the batch is the fast way. The same numbers to rounding either way
    (batched kernels round otherwise)."""
    if jax.default_backend() == "cpu":
        return jax.lax.map(lambda args: fn(*args), xs)
    return jax.vmap(fn)(*xs)


def lane_by_lane(fn: Callable[..., Any], *args: Any) -> Any:
    r"""`fn(*args)`; under a `vmap` on a CPU backend, one lane after another (`jax.lax.map`,
    by `jax.custom_batching.sequential_vmap`) instead of `fn` batched.

    XLA:CPU gains nothing from a batch of small products (`map_batch`), and loses where `fn`
    holds small dense linear algebra (LOBPCG's Rayleigh-Ritz, matfree's reorthogonalization)
    and a `while_loop` whose batched form runs every lane to the slowest lane's count: 8
    tracked GD runs vmapped over learning rates (`track_sharpness`, $k = 5$, 2 LOBPCG
    iterations every 10 of 200 steps, the 433-parameter MLP of `make bench`) took 0.83× the
    time of the 8 runs one after another with the eigen-solves batched, 0.96-1.05× lane by
    lane (CPU time). Every value `fn` closes over (a `grad_fn`'s data, batched or not) is
    passed to it explicitly: `sequential_vmap` refuses a batched closure. Called eagerly (no
    argument traced), `fn(*args)` itself, so its checks of concrete values still run.

    **Arguments:** `fn`, a function of `args` (pytrees of arrays) returning a pytree of arrays.

    **Returns:** `fn(*args)`."""
    if jax.default_backend() != "cpu" or not any(map(is_traced, jax.tree.leaves(args))):
        return fn(*args)  # (eagerly: `fn`'s own checks of concrete values)
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    leaves, _ = jax.tree.flatten(args)
    out_tree = jax.tree.structure(shape)

    def call(consts, leaves):
        # (`jax.extend.core`: the supported home of the jaxpr API that `jax.core` is leaving)
        return jax.extend.core.jaxpr_as_fun(jax.extend.core.ClosedJaxpr(closed.jaxpr, consts))(
            *leaves
        )

    out = jax.custom_batching.sequential_vmap(call)(list(closed.consts), leaves)
    return jax.tree.unflatten(out_tree, out)
