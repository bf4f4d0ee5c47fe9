"""One function over a batch: at once (`vmap`) on an accelerator, one call after another on a
CPU."""

from collections.abc import Callable
from typing import Any

import jax


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
