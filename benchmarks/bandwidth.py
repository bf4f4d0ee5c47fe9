"""Benchmark 4: the memory-bandwidth ceiling. For d = 1e7 float32 parameters, the achieved bytes/s
of one momentum update (`HeavyBall` → `optax.sgd(momentum)`) and one Adam update (`AdamFlow` →
`optax.adam`), as dynopt runs them (the `Discretization` traced into `jit`), against a same-size
`x + y` in the same process: the fraction of that ceiling each update reaches, for dynopt's update
and, side by side, for the optax transform it equals (the registry's baseline, Python-float
hyper-parameters: what a user writes).

Bytes counted are the minimum traffic: momentum reads θ, g, the trace and writes θ, the trace
(5 arrays); Adam reads θ, g, m, v and writes θ, m, v (7 arrays); `x + y` reads 2 and writes 1.
Every buffer is donated, so no call allocates; calls alternate between the kernels, round after
round, until every kernel has at least 0.5 s of samples, and each kernel's time is its best
(minimum) call: the machine's other load only ever adds time, and the ceiling and the updates are
read alike. A fraction above 1 (an update moving its bytes faster than `x + y` moves its own)
means the ceiling was mismeasured: such a row is marked failed (`met` False), whatever its ratio.
"""

import time

import jax
import jax.numpy as jnp
import optax

from dynopt.correspondences import BY_NAME

from ._common import block, Config, row


H = 1e-3
MIN_SAMPLES_S = 0.5  # seconds of samples per kernel
ROWS = {
    "momentum": ("heavy_ball_leapfrog", 5, "optax.sgd(momentum)"),
    "Adam": ("adam", 7, "optax.adam"),
}


def _discretizations():
    """Momentum and Adam as dynopt builds them (the registry's rows), with their arrays moved."""
    return {
        label: (BY_NAME[name].discretization(H), arrays)
        for label, (name, arrays, _) in ROWS.items()
    }


def _update():
    def step(disc, params, state, grads):  # the Discretization traced: its transform rebuilt
        updates, state = disc.transform.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(1, 2))


def _optax_update(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def run(config: Config) -> list[dict]:
    d = 100_000 if config.tiny else 10_000_000
    min_s = 0.0 if config.tiny else MIN_SAMPLES_S
    itemsize = 4
    key = jax.random.key(0)
    grads = jax.random.normal(key, (d,), jnp.float32)
    add = jax.jit(lambda x, y: x + y, donate_argnums=0)
    update = _update()
    fresh = lambda tree: jax.tree.map(lambda x: jnp.array(x, copy=True), tree)
    kernels = {"x + y": [jnp.ones(d, jnp.float32)]}
    calls = {"x + y": lambda x: (add(x, grads),)}
    for label, (disc, _) in _discretizations().items():
        disc = disc.astype(jnp.float32)
        p = jax.random.normal(jax.random.fold_in(key, 1), (d,), jnp.float32)
        kernels[label] = [p, fresh(disc.transform.init(p))]
        calls[label] = lambda p, s, disc=disc: update(disc, p, s, grads)
        base_tx = BY_NAME[ROWS[label][0]].baseline(H)
        base = _optax_update(base_tx)
        kernels[f"{label} optax"] = [fresh(p), fresh(base_tx.init(p))]
        calls[f"{label} optax"] = lambda p, s, base=base: base(p, s, grads)

    def call(name):
        start = time.perf_counter()
        kernels[name] = list(block(calls[name](*kernels[name])))
        return time.perf_counter() - start

    first = {name: call(name) for name in kernels}
    times = {name: [] for name in kernels}
    rounds = 0
    while rounds < max(3, config.repeats) or (
        min(sum(v) for v in times.values()) < min_s and rounds < 500
    ):
        for name in kernels:
            times[name].append(call(name))
        rounds += 1
    best = {k: min(v) for k, v in times.items()}
    ceiling = 3 * d * itemsize / best["x + y"]
    rows = []
    for label, (_, arrays, optax_name) in ROWS.items():
        for name, who in ((label, "dynopt"), (f"{label} optax", optax_name)):
            achieved = arrays * d * itemsize / best[name]
            fraction = achieved / ceiling
            bad = fraction > 1.0
            other = best[f"{label} optax"] if who == "dynopt" else best[label]
            rows.append(
                row(
                    "bandwidth",
                    f"{label} update, d={d:.0e} float32, {who}",
                    dynopt_s=best[name],
                    baseline="x + y, same size",
                    baseline_s=best["x + y"],
                    ratio=fraction,
                    target=0.5,
                    failed=bad,
                    note=("FAILED MEASUREMENT: above the x + y ceiling; " if bad else "")
                    + f"ratio = fraction of the x + y bandwidth: {achieved / 1e9:.2f} of "
                    f"{ceiling / 1e9:.2f} GB/s ({arrays} arrays moved vs 3); best of "
                    f"{len(times[name])} calls ({sum(times[name]):.2f} s of samples), "
                    f"alternating with the other kernels; "
                    + (
                        f"dynopt / {optax_name} time {best[name] / other:.3f}"
                        if who == "dynopt"
                        else f"{optax_name} / dynopt time {best[name] / other:.3f}"
                    ),
                    dynopt_compile_s=max(first[name] - best[name], 0.0),
                    achieved_bytes_per_s=achieved,
                    ceiling_bytes_per_s=ceiling,
                    samples=len(times[name]),
                    implementation=who,
                )
            )
    return rows
