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

**Data-parallel finite sums.** `shard_data` splits a data set's sample axis over a one-axis mesh
named `"data"` (`data_mesh()`, all devices of all processes); with `local=True` each process
passes only its own rows (a data set too big for one host). A finite sum of such data runs
data-parallel under `run` unchanged: XLA all-reduces the full-batch sums, and a minibatch of
global indices is gathered by the devices holding its rows (tested with two processes). A sweep
over a data-sharded problem takes the devices for the sweep axis and all-gathers the data onto
each of them once: correct, but the data then fit on every device.
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


# ---------------------------------------------------------------------------------------------
# Data-parallel finite sums: the sample axis of a data set on a one-axis mesh named "data".

DATA_AXIS = "data"


def data_mesh() -> Mesh:
    """A one-axis mesh named `"data"` over all devices of all processes, process by process
    (process 0's devices first): the global sample order is then process 0's rows, then
    process 1's, ... (the order in which `shard_data(..., local=True)` stacks them)."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def _local_rows(mesh: Mesh) -> int:
    """How many of `mesh`'s devices belong to this process."""
    return sum(d.process_index == jax.process_index() for d in mesh.devices.flat)


def shard_data(data, mesh: Mesh | None = None, *, local: bool = False):
    r"""Place every array of `data` with its leading (sample) axis split over `mesh` (default
    `data_mesh()`): global arrays with `NamedSharding(mesh, P("data"))`.

    A loss of sharded data, jitted, runs data-parallel: each device evaluates its own samples and
    XLA inserts the reductions (a `jnp.mean` becomes a local sum plus an all-reduce across the
    devices of every process). The code is the same on one CPU, several GPUs or several hosts.

    **Arguments:**

    - `data`: a pytree of arrays sharing a leading sample axis.
    - `mesh`: a one-axis mesh; `None`: `data_mesh()`, all devices of all processes.
    - `local`: `False`: `data` is the whole data set, the same on every process (each keeps
      its devices' rows). `True`: `data` holds only this process's rows (a host that loads its
      own part of a data set too big for one host); every process passes the same number of
      rows $n_p$, and the global data set, of $n = n_p \times$ (number of processes) samples,
      is process 0's rows, then process 1's, ... (in the order of the mesh's devices). Every
      process must call it (with `local=True` it checks the sizes with one collective).

    **Returns:** `data` as global `jax.Array`s of the global shape; a process holds only its
    own rows (`x.addressable_shards`).

    **Raises:** `ValueError` when the arrays do not share the sample axis, the (global) sample
    count is not a multiple of the mesh's devices (padding would change the mean), or, with
    `local=True`, the processes pass different numbers of rows.
    """
    mesh = data_mesh() if mesh is None else mesh
    if len(mesh.axis_names) != 1:
        raise ValueError(f"mesh must have one axis, got axes {mesh.axis_names}.")
    leaves = jax.tree.leaves(data)
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if not leaves or len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"data: every array must share one leading sample axis, got sizes {sizes or '{}'}."
        )
    (n,) = sizes
    mine = _local_rows(mesh)
    if local:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            counts = np.asarray(multihost_utils.process_allgather(np.asarray(n, np.int64)))
            if len(set(counts.ravel().tolist())) != 1:
                raise ValueError(
                    "data: with local=True every process must pass the same number of rows, "
                    f"got {counts.ravel().tolist()} (process by process)."
                )
        if mine == 0 or mesh.size % mine:
            raise ValueError(
                f"mesh: with local=True every process must hold the same number of its devices, "
                f"this one holds {mine} of {mesh.size}."
            )
        total = n * (mesh.size // mine)
    else:
        total = n
    if total % mesh.size:
        what = (
            f"{n} rows on this process, not a multiple of its {mine} devices in the mesh"
            if local
            else f"{n} samples, not a multiple of the {mesh.size} devices of the mesh"
        )
        raise ValueError(
            f"data has {what}: take a subset whose size they divide (e.g. digits(num_samples=...))."
        )
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))

    def one(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        return jax.make_array_from_process_local_data(sharding, x, (total, *x.shape[1:]))

    return jax.tree.map(one, data)
