"""Sweeps across processes: two local processes joined by `jax.distributed` (CPU collectives
over gloo) stand in for two hosts; `run` splits a step-size sweep and a seed sweep (stochastic
minibatches of a finite sum) across both, and `dynopt._sharding.gather` brings the results to
each process. They must be the single-process numbers."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np

import dynopt
from dynopt import flows, problems


WORKER = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(sys.argv[2], num_processes=2, process_id=int(sys.argv[1]))
    import numpy as np
    from tests.test_multiprocess import sweeps
    from dynopt._sharding import gather
    out = {k: np.asarray(gather(v)).tolist() for k, v in sweeps().items()}
    print(json.dumps({"devices": jax.device_count(), "local": jax.local_device_count(), **out}))
    """
)


def sweeps() -> dict:
    """Five step sizes (an odd count: padded to the device count) and three seeds."""
    hs = np.linspace(2e-4, 1e-3, 5)
    rosen = dynopt.run(flows.GradientFlow().discretize(hs), problems.rosenbrock(4), 40, every=20)
    linreg = problems.linear_regression(64, 3, batch_size=8)
    keys = jax.random.split(jax.random.key(7), 3)
    sgd = dynopt.run(flows.GradientFlow().discretize(0.05), linreg, 30, key=keys, every=10)
    return {"step_sizes": rosen.params, "seeds": sgd.params}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_single_process_numbers():
    address = f"localhost:{_free_port()}"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device per process
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
    single = {k: np.asarray(v) for k, v in sweeps().items()}
    for r in results:
        assert r["devices"] == 2 and r["local"] == 1
        for name, ref in single.items():
            # Each run is computed whole on one device by the same per-run program: equal up
            # to the summation order XLA picks for a batch of 3 vs 5 (a few ulps).
            np.testing.assert_allclose(np.asarray(r[name]), ref, rtol=1e-13, atol=1e-15)
