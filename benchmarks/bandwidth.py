"""Benchmark 4: the memory-bandwidth ceiling. For d = 1e7 float32 parameters, the achieved bytes/s
of one momentum update (`HeavyBall` → `optax.sgd(momentum)`) and one Adam update (`AdamFlow` →
`optax.adam`), as dynopt runs them (the `Discretization` traced into `jit`), against a same-size
`x + y` in the same process: the fraction of that ceiling each update reaches.

Bytes counted are the minimum traffic: momentum reads θ, g, the trace and writes θ, the trace
(5 arrays); Adam reads θ, g, m, v and writes θ, m, v (7 arrays); `x + y` reads 2 and writes 1.
Every buffer is donated, so no call allocates; calls alternate between the three kernels.
"""

import statistics
import time

import jax
import jax.numpy as jnp
import optax

from dynopt.correspondences import BY_NAME

from ._common import block, Config, row


def _discretizations():
    """Momentum and Adam as dynopt builds them (the registry's rows)."""
    h = 1e-3
    momentum = BY_NAME["heavy_ball_leapfrog"].discretization(h)
    adam = BY_NAME["adam"].discretization(h)
    return {"momentum": (momentum, 5), "Adam": (adam, 7)}


def _update():
    def step(disc, params, state, grads):
        updates, state = disc.transform.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(1, 2))


def run(config: Config) -> list[dict]:
    d = 100_000 if config.tiny else 10_000_000
    itemsize = 4
    key = jax.random.key(0)
    grads = jax.random.normal(key, (d,), jnp.float32)
    add = jax.jit(lambda x, y: x + y, donate_argnums=0)
    update = _update()
    kernels = {"x + y": [jnp.ones(d, jnp.float32)]}
    discs = {}
    for name, (disc, _) in _discretizations().items():
        disc = disc.astype(jnp.float32)
        p = jax.random.normal(jax.random.fold_in(key, 1), (d,), jnp.float32)
        s = jax.tree.map(lambda x: jnp.array(x, copy=True), disc.transform.init(p))
        discs[name] = disc
        kernels[name] = [p, s]

    def call(name):
        start = time.perf_counter()
        if name == "x + y":
            kernels[name][0] = block(add(kernels[name][0], grads))
        else:
            kernels[name] = list(block(update(discs[name], *kernels[name], grads)))
        return time.perf_counter() - start

    first = {name: call(name) for name in kernels}
    times = {name: [] for name in kernels}
    for _ in range(max(3, config.repeats)):
        for name in kernels:
            times[name].append(call(name))
    med = {k: statistics.median(v) for k, v in times.items()}
    ceiling = 3 * d * itemsize / med["x + y"]
    rows = []
    for name, (_, arrays) in _discretizations().items():
        achieved = arrays * d * itemsize / med[name]
        rows.append(
            row(
                "bandwidth",
                f"{name} update, d={d:.0e} float32",
                dynopt_s=med[name],
                baseline="x + y, same size",
                baseline_s=med["x + y"],
                ratio=achieved / ceiling,
                target=0.5,
                note=f"ratio = fraction of the x + y bandwidth: {achieved / 1e9:.2f} of "
                f"{ceiling / 1e9:.2f} GB/s ({arrays} arrays moved vs 3)",
                dynopt_compile_s=max(first[name] - med[name], 0.0),
                achieved_bytes_per_s=achieved,
                ceiling_bytes_per_s=ceiling,
            )
        )
    return rows
