"""Across processes: two local processes joined by `jax.distributed` (CPU collectives over
gloo) stand in for two hosts.

- Sweeps: `run` splits a step-size sweep and a seed sweep (stochastic minibatches of a finite
  sum) across both, and `dynopt._sharding.gather` brings the results to each process.
- Data-parallel finite sums: each process feeds only its half of the rows
  (`shard_data(..., local=True)`, through `linear_regression(shard=True)`,
  `logistic_regression(shard=True)` and `network_problem(shard="local")`); the full-batch
  losses all-reduce across the processes, minibatches gather global indices.

Both must give the single-process numbers (one launch of two workers serves every test)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import dynopt
from dynopt import flows, networks, problems

from .helpers import once_per_run


WORKER = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(sys.argv[2], num_processes=2, process_id=int(sys.argv[1]))
    import numpy as np
    from tests.test_multiprocess import data_parallel, sweeps, bad_shards
    from dynopt._sharding import gather
    out = {k: np.asarray(gather(v)).tolist() for k, v in sweeps().items()}
    parallel, rows = data_parallel(local=True)
    out.update({k: np.asarray(gather(v)).tolist() for k, v in parallel.items()})
    print(json.dumps({"devices": jax.device_count(), "local": jax.local_device_count(),
                      "rows": rows, "errors": bad_shards(), **out}))
    """
)
NUM_SAMPLES = 64  # split 32 + 32 across the two processes


def sweeps() -> dict:
    """Five step sizes (an odd count: padded to the device count) and three seeds."""
    hs = np.linspace(2e-4, 1e-3, 5)
    rosen = dynopt.run(flows.GradientFlow().discretize(hs), problems.rosenbrock(4), 40, every=20)
    linreg = problems.linear_regression(64, 3, batch_size=8)
    keys = jax.random.split(jax.random.key(7), 3)
    sgd = dynopt.run(flows.GradientFlow().discretize(0.05), linreg, 30, key=keys, every=10)
    return {"step_sizes": rosen.params, "seeds": sgd.params}


def _digits_half(local: bool):
    """40 digits; with `local`, only this process's 20 rows (the first or the second half)."""
    x, y = networks.digits(40)
    if local:
        rows = slice(20 * jax.process_index(), 20 * (jax.process_index() + 1))
        x, y = x[rows], y[rows]
    return x, y


def data_parallel(local: bool) -> tuple[dict, list]:
    """GD and SGD on the data-sharded problems (`local=True`: each process feeds its rows)
    or on the same problems whole (`local=False`: the single-process reference). Also
    returns the rows each process holds of the linear regression's inputs."""
    gd = flows.GradientFlow().discretize(0.1)
    lin = problems.linear_regression(NUM_SAMPLES, 3, batch_size=8, shard=local)
    logi = problems.logistic_regression(NUM_SAMPLES, 3, shard=local)
    model = networks.mlp(64, 10, width=8, depth=1, key=jax.random.key(0))
    net = networks.network_problem(model, _digits_half(local), shard="local" if local else False)
    out = {
        "lin_gd": dynopt.run(gd, lin, 20, every=10).params,
        "lin_sgd": dynopt.run(gd, lin, 20, every=10, key=jax.random.key(3)).params,
        "logistic_gd": dynopt.run(gd, logi, 20, every=10).params,
    }
    mlp = dynopt.run(optax.sgd(0.5), net, 10, every=5)
    out["mlp_gd"] = ravel_pytree(mlp.params)[0]
    out["mlp_loss"] = mlp.loss
    rows = [s.index[0].indices(NUM_SAMPLES)[:2] for s in lin.data[0].addressable_shards]
    return out, rows


def bad_shards() -> list:
    """The messages of the bad inputs: unequal local shards (4 rows on process 0, 6 on 1),
    a sample count that does not divide the devices."""
    messages = []
    for attempt in (
        lambda: problems.shard_data(np.ones((4 + 2 * jax.process_index(), 2)), local=True),
        lambda: problems.shard_data(np.ones((3, 2))),
        lambda: problems.linear_regression(63, 2, shard=True),
    ):
        try:
            attempt()
            messages.append("")
        except ValueError as e:
            messages.append(str(e))
    return messages


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workers(tmp_path_factory) -> list[dict]:
    return once_per_run(tmp_path_factory, "multiprocess_workers", _run_workers)


def _run_workers() -> list[dict]:
    address = f"localhost:{_free_port()}"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")
    # One CPU device per process; the suite's other flags kept (tests/conftest.py).
    env["XLA_FLAGS"] = " ".join(
        f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(i), address],
            env=env,
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    for r in results:
        assert r["devices"] == 2 and r["local"] == 1
    return results


def test_two_processes_give_the_single_process_numbers(workers):
    single = {k: np.asarray(v) for k, v in sweeps().items()}
    for r in workers:
        for name, ref in single.items():
            # Each run is computed whole on one device by the same per-run program: equal up
            # to the summation order XLA picks for a batch of 3 vs 5 (a few ulps).
            np.testing.assert_allclose(np.asarray(r[name]), ref, rtol=1e-13, atol=1e-15)


def test_each_process_holds_only_its_rows(workers):
    assert [r["rows"] for r in workers] == [[[0, 32]], [[32, 64]]]


def test_data_sharded_finite_sums_give_the_single_process_numbers(workers):
    single, _ = data_parallel(local=False)
    for r in workers:
        # A minibatch is gathered whole onto every device (global indices, same key), then
        # evaluated by the single-device program: bit for bit.
        np.testing.assert_array_equal(np.asarray(r["lin_sgd"]), single["lin_sgd"])
        # Full batch: each process sums its 32 (MLP: 20) rows and an all-reduce adds the two
        # partial sums, where one device sums all rows in another order: rounding only
        # (measured: at most 1 ulp in any iterate after 20 steps, most entries equal; the
        # bound allows a few ulps).
        for name in ("lin_gd", "logistic_gd", "mlp_gd", "mlp_loss"):
            np.testing.assert_allclose(np.asarray(r[name]), single[name], rtol=1e-15, atol=1e-16)


def test_bad_shards_are_refused_on_every_process(workers):
    for r in workers:
        unequal, indivisible, generator = r["errors"]
        assert "data: with local=True every process must pass the same number of rows" in unequal
        assert "[4, 6]" in unequal
        assert "not a multiple of the 2 devices" in indivisible
        assert "num_samples must be a multiple of the 2 devices" in generator
