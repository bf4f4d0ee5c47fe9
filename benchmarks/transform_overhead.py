"""Benchmark 1: each dynopt discretization vs the optax transform it equals (or the nearest optax
recipe), per-step time of the jitted update on float32 pytrees of 1e3, 1e6 and 1e7 parameters.

dynopt's side passes the `Discretization` into `jit` (traced hyper-parameters, the transform
rebuilt inside: what makes sweeps compile once); the baseline is the optax transform built with
Python-float hyper-parameters closed over as constants, what a user writes. Both run the same
`fori_loop` of updates on the gradient of L = ½‖θ‖² (g = θ, so the update dominates), with the
parameters and state donated, timed alternately call by call (at least 9 pairs of calls), each
call running as many updates as fill ~20 ms (at 1e3 parameters, 1e5 updates).

To add a discretization: one `Pair` in `PAIRS`. A pair whose flow is not in `dynopt.flows` is
skipped (flows land over time).
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

from dynopt import flows

from ._common import block, Config, row


STEP = 1e-3  # the step h of every discretization (hyper-parameters only; values stay finite)


@dataclasses.dataclass(frozen=True)
class Pair:
    """A discretization and the optax transform a user would otherwise write.

    `discretize(Flow, h)` builds the `Discretization` from the class `dynopt.flows.<flow>`;
    `optax_tx(hp)` the optax transform from its hyper-parameters as Python floats; `identical`:
    the two give the same iterates (checked before timing)."""

    label: str
    flow: str
    discretize: Callable[[Any, float], Any]
    optax_tx: Callable[[dict[str, float]], optax.GradientTransformation]
    identical: bool = True


PAIRS: tuple[Pair, ...] = (
    Pair(
        "GradientFlow → optax.sgd",
        "GradientFlow",
        lambda F, h: F().discretize(h),
        lambda hp: optax.sgd(hp["learning_rate"]),
    ),
    Pair(
        "HeavyBall(leapfrog) → optax.sgd(momentum)",
        "HeavyBall",
        lambda F, h: F(damping=1.0).discretize(h),
        lambda hp: optax.sgd(hp["learning_rate"], momentum=hp["momentum"]),
    ),
    Pair(
        "HeavyBall(nesterov) → optax.sgd(nesterov=True)",
        "HeavyBall",
        lambda F, h: F(damping=1.0, scheme="nesterov").discretize(h),
        lambda hp: optax.sgd(hp["learning_rate"], momentum=hp["momentum"], nesterov=True),
        identical=False,  # dynopt takes the gradient at the look-ahead point (one more gradient)
    ),
    Pair(
        "NesterovODE → optax.sgd(nesterov=True)",
        "NesterovODE",
        lambda F, h: F().discretize(h),
        lambda hp: optax.sgd(hp["learning_rate"], momentum=0.9, nesterov=True),
        identical=False,  # momentum (k-1)/(k+r-1) and the look-ahead gradient vs a fixed β
    ),
    Pair(
        "RMSPropFlow → optax.rmsprop",
        "RMSPropFlow",
        lambda F, h: F(kappa=10.0).discretize(h),
        lambda hp: optax.rmsprop(
            hp["learning_rate"],
            decay=hp["decay"],
            eps=hp["eps"],
            initial_scale=hp["initial_scale"],
            eps_in_sqrt=True,
        ),
    ),
    Pair(
        "AdamFlow → optax.adam",
        "AdamFlow",
        lambda F, h: F(a1=100.0, a2=1.0).discretize(h),
        lambda hp: optax.adam(hp["learning_rate"], b1=hp["b1"], b2=hp["b2"], eps=hp["eps"]),
    ),
    Pair(
        "SignFlow → optax.sign_sgd",
        "SignFlow",
        lambda F, h: F().discretize(h),
        lambda hp: optax.sign_sgd(hp["learning_rate"]),
    ),
    Pair(
        "PolyakFlow → optax.scale_by_polyak chain",
        "PolyakFlow",
        lambda F, h: F().discretize(h),
        lambda hp: optax.chain(
            optax.scale_by_polyak(f_min=hp["f_min"], max_learning_rate=float("inf")),
            optax.scale_by_learning_rate(hp["learning_rate"]),
        ),
    ),
)


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


def _measure(pair: Pair, size: int, repeats: int) -> dict:
    disc = pair.discretize(getattr(flows, pair.flow), STEP).astype(jnp.float32)
    hp = {k: float(v) for k, v in disc.hyperparams.items()}
    base_tx = pair.optax_tx(hp)
    params = _params(size)
    n = jnp.asarray(_check_steps(size))  # for the equivalence check; calibrated for timing below
    ours = _loop(lambda d: d.transform)
    theirs = _loop(lambda _: base_tx)

    def fresh(tx):  # distinct buffers for every donated leaf (optax may share its zeros)
        copy = lambda t: jax.tree.map(lambda x: jnp.array(x, copy=True), t)
        p = copy(params)
        return p, copy(tx.init(p))

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

    state = {"ours": fresh(disc.transform), "theirs": fresh(base_tx)}
    kernels = (
        _loop_kernels(ours, disc, n, *state["ours"]),
        _loop_kernels(theirs, None, n, *state["theirs"]),
    )

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
    return {
        "ours": med["ours"],
        "theirs": med["theirs"],
        "steps_per_call": int(n),
        "checked_steps": _check_steps(size),
        "max_abs_diff": diff,
        "kernels": kernels,
    }


def run(config: Config) -> list[dict]:
    sizes = (1_000, 10_000) if config.tiny else (1_000, 1_000_000, 10_000_000)
    rows = []
    for pair in PAIRS:
        if not hasattr(flows, pair.flow):
            print(f"  transform overhead: skipping {pair.label} (dynopt.flows.{pair.flow} absent)")
            continue
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
