"""Building Rosenbrock compiles nothing (its constants are made on the host), and its arrays
are those of the eager operations, bit for bit."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from dynopt import problems


@contextlib.contextmanager
def _programs():
    """The names of the programs XLA compiles inside (`jax_log_compiles` is not needed: the
    monitoring event fires for every backend compilation)."""
    compiled = []

    def listen(event, *_, **__):
        if "backend_compile" in event:
            compiled.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes(), np.max(np.abs(a - b))


def test_rosenbrock_compiles_nothing():
    # Its start and minimizer are constants made on the host (4 programs as jnp operations).
    params0 = jnp.array([0.5, 1.0], jnp.float32)
    with _programs() as compiled:
        p = problems.rosenbrock(11)
        q = problems.rosenbrock(2, a=2.0, params0=params0)
    assert compiled == []
    _same_bits(p.params0, jnp.array([-1.2 if i % 2 == 0 else 1.0 for i in range(11)]))
    _same_bits(p.minimizer, jnp.full(11, 1.0))
    _same_bits(q.minimizer, jnp.array([2.0, 4.0]).astype(jnp.float32))
