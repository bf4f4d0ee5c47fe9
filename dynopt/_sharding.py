r"""Sweeps spread over every device: the sweep axis on a one-axis `jax.sharding.Mesh`.

`sweep_map(fn, batched, shared)` is `jax.vmap(fn, in_axes=(0, None))(batched, shared)`, except
that with more than one device the leading (sweep) axis of `batched` is split across a mesh over
`jax.devices()` with `shard_map` (each device runs its own slice of the sweep, independently to
the end: no cross-device traffic inside the hot loop) and the outputs come back as arrays
sharded along that axis (`NamedSharding(mesh, P("sweep"))`). A sweep whose length is not a
multiple of the device count is padded by repeating its last entry, and the padding is trimmed
from the outputs. With one device it is exactly the `vmap`.

**Multi-host.** The mesh is built from `jax.devices()`, which after
`jax.distributed.initialize()` lists the devices of every process. Run the same program on every
host (each calls `jax.distributed.initialize(coordinator_address, num_processes, process_id)`
first, or with no arguments on a managed cluster); `run` and `compare` then split their sweeps
across all hosts. `compare` gathers its (small) per-step-size results on every host; `run`
returns its trajectories as global arrays, which `gather` (or
`jax.experimental.multihost_utils.process_allgather`) brings to each host. Every process passes
the same arguments (the problem's data whole: each process computes its own runs of the sweep,
a finite-sum's minibatches included); the results equal one process's (tested with two local
processes, `tests/test_multiprocess.py`). CPU hosts need the gloo collectives, set before
`initialize`: `jax.config.update("jax_cpu_collectives_implementation", "gloo")`.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


SWEEP_AXIS = "sweep"


def sweep_mesh() -> Mesh:
    """A one-axis mesh named `"sweep"` over all devices (of all processes)."""
    return Mesh(np.asarray(jax.devices()), (SWEEP_AXIS,))


def _pad(x: jax.Array, pad: int) -> jax.Array:
    return jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)])


def sweep_map(fn: Callable, batched, shared):
    """`vmap(fn, in_axes=(0, None))(batched, shared)` with the sweep axis sharded over devices.

    `batched` is a pytree of arrays sharing one leading (sweep) axis; `shared` is any pytree
    (its arrays are replicated, its other leaves static). Call it inside `jit`.
    """
    return sweep_apply(jax.vmap(fn, in_axes=(0, None)), batched, shared)


def sweep_apply(fn: Callable, batched, shared):
    """`fn(batched, shared)` for a batch-aware `fn` (it maps a batch to a batch of outputs along
    the same leading axis), each device applying it to its own slice of the sweep axis.

    Like `sweep_map`, but `fn` sees the whole local batch: it may take decisions over it (one
    loop for the batch instead of a per-entry `select`). Call it inside `jit`.
    """
    mesh = sweep_mesh()
    if mesh.size == 1:
        return fn(batched, shared)
    (n,) = {x.shape[0] for x in jax.tree.leaves(batched)}
    pad = -n % mesh.size
    if pad:
        batched = jax.tree.map(lambda x: _pad(x, pad), batched)
    dynamic, static = eqx.partition(shared, eqx.is_array)

    def local(b, d):
        return fn(b, eqx.combine(d, static))

    out = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(PartitionSpec(SWEEP_AXIS), PartitionSpec()),
        out_specs=PartitionSpec(SWEEP_AXIS),
        check_vma=False,
    )(batched, dynamic)
    if pad:
        out = jax.tree.map(lambda x: x[:n], out)
    return out


def sweep_sharding() -> NamedSharding:
    """The sharding of a sweep's outputs: the leading axis split over `sweep_mesh()`."""
    return NamedSharding(sweep_mesh(), PartitionSpec(SWEEP_AXIS))


def gather(tree):
    """Bring arrays that span several processes to every process (a no-op on one host)."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            return multihost_utils.process_allgather(x, tiled=True)
        return x

    return jax.tree.map(one, tree)
