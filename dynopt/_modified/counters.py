r"""Step counters as time in the slow regime: bias corrections as products.

optax's bias corrections read the integer step counter $k$: $1 - b^{k}$ (`optax.tree.
bias_correction`, used by Adam, AdamW, Nadam, RMSprop with `bias_correction`, AdaBelief, ...).
In the slow regime $b = 1 - a\tau + O(\tau^2)$ and $k = t/\tau$, so $b^{k} \to e^{-at}$: smooth in
$\tau$ at fixed $t$, but computed as `b**count` with `count = t/τ` it is $1^\infty$ at $\tau = 0$
and autodiff cannot expand it. Carried instead as a state variable $c = b^{k}$ with the map
$c \mapsto b\,c$ (each bias correction's product, one per call of `bias_correction` in a
step), the correction is $1 - b\,c$ and the step is an ordinary slow map:
$\dot c = -a\,c + O(\tau)$, $c(t) = e^{-at}$ at order 1, so the order-1 field is the
hand-derived flow with exact bias corrections (`dynopt.flows.AdamFlow`). The series is singular
at $t = 0$ ($1 - b^0 = 0$): the flow holds for $t \gg \tau$, not from optax's zero start.

While a step is traced inside `bias_products`, `optax.tree.bias_correction` (and its aliases)
reads the products from the tape instead of the counter; the counter itself stays at its
initial value. A step whose output still depends on the counter (a schedule in steps) is
refused by the caller (`counter_free`).
"""

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class CountedState(NamedTuple):
    """The slow state of an optimizer with bias corrections: its floating state (integer
    counters removed) and one product $c_i = b_i^{k}$ per bias correction of a step."""

    state: Any
    products: tuple


class _Tape:
    def __init__(self, products, constant):
        self.products = products
        self.constant = constant
        self.decays: list = []
        self.counts: list = []


_local = threading.local()
_ORIGINAL = optax.tree.bias_correction


def _bias_correction(moment, decay, count):
    tape = getattr(_local, "tape", None)
    if tape is None:  # another thread, or outside `bias_products`
        return _ORIGINAL(moment, decay, count)
    i = len(tape.decays)
    tape.decays.append(decay)
    tape.counts.append(count)
    if tape.products is None and tape.constant is None:  # recording only
        return _ORIGINAL(moment, decay, count)
    if tape.products is not None and i >= len(tape.products):
        raise ValueError(
            f"optimizer: a step calls optax's bias correction more than the {len(tape.products)} "
            "times it did when the flow was built (a data-dependent number of corrections)."
        )
    c = tape.constant if tape.products is None else tape.products[i]
    correction = 1 - jnp.asarray(decay) * c
    return jax.tree.map(lambda x: x / correction.astype(x.dtype), moment)


def _targets() -> list[tuple[Any, str]]:
    import optax.tree_utils

    return [(optax.tree, "bias_correction"), (optax, "bias_correction"),
            (optax.tree_utils, "tree_bias_correction")]  # fmt: skip


@contextlib.contextmanager
def bias_products(products=None, *, constant=None) -> Iterator[_Tape]:
    """Trace optimizer steps with their bias corrections read from `products` (one per call of
    `optax.tree.bias_correction`, in call order), or all from `constant`, or (neither) with
    optax's own corrections, only recorded. Yields the tape: `tape.decays`, `tape.counts` of
    each call."""
    tape = _Tape(products, constant)
    previous = getattr(_local, "tape", None)
    _local.tape = tape
    saved = [(m, n, getattr(m, n)) for m, n in _targets()]
    for m, n, _ in saved:
        setattr(m, n, _bias_correction)
    try:
        yield tape
    finally:
        for m, n, f in saved:
            setattr(m, n, f)
        _local.tape = previous


def current_tape() -> _Tape | None:
    """The tape of the innermost `bias_products` active in this thread, else `None`."""
    return getattr(_local, "tape", None)


def advance(tape: _Tape, products: tuple) -> tuple:
    """The products after the step recorded on `tape`: $c_i \\mapsto b_i c_i$."""
    return tuple(d * c for d, c in zip(tape.decays, products))
