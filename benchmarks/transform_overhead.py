"""Benchmark 1: each dynopt discretization vs the optax transform it equals (or the nearest optax
recipe), per-step time of the jitted update on float32 pytrees of 1e3, 1e6 and 1e7 parameters.

dynopt's side passes the `Discretization` into `jit` (traced hyper-parameters, the transform
rebuilt inside: what makes sweeps compile once); the baseline is the optax transform built with
Python-float hyper-parameters closed over as constants, what a user writes. Both run the same
`fori_loop` of updates on the gradient of L = ½‖θ‖² (g = θ, so the update dominates), with the
parameters and state donated, timed alternately call by call (at least 9 pairs of calls), each
call running as many updates as fill ~20 ms (at 1e3 parameters, 1e5 updates).

The pairs are read from `dynopt.correspondences.REGISTRY` (every row with an optax baseline),
plus the nearest optax recipe for two rows optax lacks: a new correspondence is benchmarked
without touching this file.
"""

import dataclasses
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dynopt.correspondences import BY_NAME, REGISTRY

from ._common import block, Config, row


STEP = 1e-3  # the step h of every discretization (hyper-parameters only; values stay finite)


@dataclasses.dataclass(frozen=True)
class Pair:
    """A discretization and the optax transform a user would otherwise write.

    `discretize(h)` builds the `Discretization`; `optax_tx(h, hp)` the optax transform (from the
    step and the discretization's hyper-parameters as Python floats); `identical`: the two give
    the same iterates (checked before timing)."""

    label: str
    discretize: Callable[[float], Any]
    optax_tx: Callable[[float, dict[str, float]], optax.GradientTransformation]
    identical: bool = True


def _registry_pairs() -> tuple[Pair, ...]:
    """One identical pair per registry row with an optax baseline."""
    return tuple(
        Pair(
            f"{row.name} → optax",
            row.discretization,
            lambda h, hp, row=row: row.baseline(h),
        )
        for row in REGISTRY
        if row.baseline is not None
    )


# Rows without an optax baseline, against the nearest optax recipe (not the same algorithm).
_NEAREST = (
    Pair(
        "heavy_ball_nesterov → optax.sgd(nesterov=True)",
        BY_NAME["heavy_ball_nesterov"].discretization,
        lambda h, hp: optax.sgd(hp["learning_rate"], momentum=hp["momentum"], nesterov=True),
        identical=False,  # dynopt takes the gradient at the look-ahead point (one more gradient)
    ),
    Pair(
        "nag → optax.sgd(nesterov=True)",
        BY_NAME["nag"].discretization,
        lambda h, hp: optax.sgd(hp["learning_rate"], momentum=0.9, nesterov=True),
        identical=False,  # momentum (k-1)/(k+r-1) and the look-ahead gradient vs a fixed β
    ),
)

PAIRS: tuple[Pair, ...] = _registry_pairs() + _NEAREST


def _params(size: int) -> dict[str, jax.Array]:
    """A float32 pytree with `size` parameters in three leaves (two matrices and a bias)."""
    a = size // 2
    cols = 100 if a >= 100 else 1
    b = (size - a) // 2
    shapes = {"w1": (a // cols, cols), "w2": (b,), "b": (size - (a // cols) * cols - b,)}
    keys = jax.random.split(jax.random.key(0), len(shapes))
    return {k: jax.random.normal(key, s, jnp.float32) for key, (k, s) in zip(keys, shapes.items())}


def _half_sq(p) -> jax.Array:
    return 0.5 * sum(jnp.sum(x * x) for x in jax.tree.leaves(p))


def _loop(tx_of: Callable):
    """`jit((hp, n, params, state) -> (params, state))`: `n` updates with g = θ (`n` traced, so
    calibrating the steps per call does not recompile)."""

    def run(hp, num_steps, params, state):
        tx = tx_of(hp)
        extra = isinstance(tx, optax.GradientTransformationExtraArgs)

        def body(_, carry):
            p, s = carry
            kw = dict(value=_half_sq(p), grad=p, value_fn=_half_sq) if extra else {}
            updates, s = tx.update(p, s, p, **kw)
            return optax.apply_updates(p, updates), s

        return jax.lax.fori_loop(0, num_steps, body, (params, state))

    return jax.jit(run, donate_argnums=(2, 3))


def _loop_kernels(jitted, *args) -> int:
    """Fused kernels XLA emits for one update (the `fori_loop` body): a load-independent check
    that the traced hyper-parameters compile to the same program as optax's constants."""
    text = jitted.lower(*args).compile().as_text()
    body = re.search(r"while\(.*?body=(%?[\w.\-]+)", text)
    if body is None:
        return -1
    block_text = re.search(r"\n" + re.escape(body.group(1)) + r" .*?\n\}", text, re.S)
    return len(re.findall(r"= \S+ fusion\(", block_text.group(0))) if block_text else -1


def _check_steps(size: int) -> int:
    """Updates over which dynopt and optax must give the same iterates: 1000 for small pytrees,
    10 at 1e6 parameters and beyond (a 1000-step check there would cost more than the timing)."""
    return max(10, min(1000, 10_000_000 // (4 * size)))


CALL_S = 0.02  # each timed call runs ~20 ms of updates: dispatch and timer noise stay < 1%


class _Setup:
    """The two jitted loops of a pair at one size, and fresh (donatable) starts."""

    def __init__(self, pair: Pair, size: int):
        self.disc = pair.discretize(STEP).astype(jnp.float32)
        hp = {k: float(v) for k, v in self.disc.hyperparams.items()}
        self.base_tx = pair.optax_tx(STEP, hp)
        self.params = _params(size)
        self.ours = _loop(lambda d: d.transform)
        self.theirs = _loop(lambda _: self.base_tx)

    def fresh(self, tx):  # distinct buffers for every donated leaf (optax may share its zeros)
        copy = lambda t: jax.tree.map(lambda x: jnp.array(x, copy=True), t)
        p = copy(self.params)
        return p, copy(tx.init(p))


def check(pair: Pair, size: int) -> dict:
    """The equivalence check alone (no timing): the iterates after `_check_steps(size)` updates
    from one start, and the fused kernels per update of both loops.

    **Raises:** `AssertionError` where the pair says identical and the iterates differ."""
    setup = _Setup(pair, size)
    disc, base_tx, ours, theirs, fresh = (
        setup.disc,
        setup.base_tx,
        setup.ours,
        setup.theirs,
        setup.fresh,
    )
    n = jnp.asarray(_check_steps(size))

    # Same start, same n steps: the iterates must agree where the pair says they are identical.
    a = block(ours(disc, n, *fresh(disc.transform))[0])
    b = block(theirs(None, n, *fresh(base_tx))[0])
    diff = max(
        float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )
    if pair.identical and not diff <= 1e-5 * max(
        float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(b)
    ):
        raise AssertionError(f"{pair.label}: iterates differ from optax by {diff:g}")
    del a, b
    kernels = (
        _loop_kernels(ours, disc, n, *fresh(disc.transform)),
        _loop_kernels(theirs, None, n, *fresh(base_tx)),
    )
    return {"max_abs_diff": diff, "kernels": kernels, "checked_steps": int(n), "setup": setup}


def _measure(pair: Pair, size: int, repeats: int) -> dict:
    checked = check(pair, size)
    setup = checked.pop("setup")
    disc, base_tx, ours, theirs = setup.disc, setup.base_tx, setup.ours, setup.theirs
    n = jnp.asarray(checked["checked_steps"])
    state = {"ours": setup.fresh(disc.transform), "theirs": setup.fresh(base_tx)}

    def call(name):
        start = time.perf_counter()
        if name == "ours":
            state[name] = block(ours(disc, n, *state[name]))
        else:
            state[name] = block(theirs(None, n, *state[name]))
        return time.perf_counter() - start

    for name in state:  # warm-up (compiled above)
        call(name)
    per_step = min(call(name) for name in state) / int(n)
    n = jnp.asarray(int(min(100_000, max(1, round(CALL_S / per_step)))))
    times = {name: [] for name in state}
    for _ in range(max(repeats, 9)):  # alternate, so load changes hit both sides alike
        for name in state:
            times[name].append(call(name))
    med = {k: statistics.median(v) / int(n) for k, v in times.items()}
    return {"ours": med["ours"], "theirs": med["theirs"], "steps_per_call": int(n), **checked}


def run(config: Config) -> list[dict]:
    sizes = (1_000, 10_000) if config.tiny else (1_000, 1_000_000, 10_000_000)
    rows = []
    for pair in PAIRS:
        for size in sizes:
            m = _measure(pair, size, config.repeats)
            rows.append(
                row(
                    "transform overhead",
                    f"{pair.label}, {size:.0e} params",
                    dynopt_s=m["ours"],
                    baseline="optax (constants)",
                    baseline_s=m["theirs"],
                    ratio=m["ours"] / m["theirs"],
                    target=None if not pair.identical else 1.05,
                    higher_is_better=False,
                    note="overhead row: ratio = dynopt/optax per-step time; fused kernels per "
                    f"update {m['kernels'][0]} vs {m['kernels'][1]}"
                    + ("" if pair.identical else "; not the same algorithm, no target"),
                    steps_per_call=m["steps_per_call"],
                    max_abs_diff=m["max_abs_diff"],
                    kernels_dynopt_optax=list(m["kernels"]),
                    params=size,
                )
            )
    return rows
