"""Test helpers: a trace counter, thin aliases over the stack's tree comparisons, the check that
a stochastic run is a function of its key, a subprocess on several host CPU devices, and XLA's
default optimizations for bit-for-bit comparisons."""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import dynopt


def tree_allclose(x, y, *, rtol=0.0, atol=0.0) -> bool:
    """Alias of `eqx.tree_equal(x, y, rtol=rtol, atol=atol)` (same structure, shapes and dtypes;
    values equal, or close when a tolerance is given), as a Python bool. New tests call
    `eqx.tree_equal` directly."""
    return bool(eqx.tree_equal(x, y, rtol=rtol, atol=atol))


def tree_max_abs_diff(x, y) -> float:
    """$\\max |x - y|$ over corresponding leaves, in NumPy (any dtypes, any containers)."""
    return max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y))
    )


class TraceCounter:
    """Wrap a loss to count how often JAX traces it (a new trace = a new compilation)."""

    def __init__(self, fn):
        self.fn = fn
        self.count = 0

    def __call__(self, *args):
        self.count += 1
        return self.fn(*args)


def check_keyed_runs(method, problem, num_steps, key, other_key):
    """`dynopt.run(method, problem, num_steps)` twice with `key` and once with `other_key`: the
    same key gives the same parameters, another key other ones. Returns the runs with `key` and
    with `other_key`."""
    a = dynopt.run(method, problem, num_steps, key=key)
    b = dynopt.run(method, problem, num_steps, key=key)
    c = dynopt.run(method, problem, num_steps, key=other_key)
    assert eqx.tree_equal(a.params, b.params)
    assert not eqx.tree_equal(c.params, a.params)
    return a, c


@contextlib.contextmanager
def backend_compiles(event_name: str = "backend_compile"):
    """The programs XLA compiles inside, one event each (`jax.monitoring` fires for every
    backend compilation; `jax_log_compiles` is not needed); with `event_name`, the duration
    events whose name holds it (e.g. JAX's lowering to MLIR)."""
    compiled = []

    def listen(event, *_, **__):
        if event_name in event:
            compiled.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def count_backend_compiles(fn, *args, **kwargs) -> tuple[int, object]:
    """`(programs XLA compiled while fn(*args, **kwargs) ran, its value)`."""
    with backend_compiles() as compiled:
        value = fn(*args, **kwargs)
    return len(compiled), value


@contextlib.contextmanager
def optimized_compilation():
    """LLVM's optimizations back on for the programs compiled inside (the suite turns them off,
    tests/conftest.py): for a bit-for-bit comparison of two different programs, which holds for
    optimized code, while unoptimized code may round one operation differently in each (an
    ulp). The emitter stays the suite's (XLA_FLAGS is read once per process): the elemental
    one, where users get the fusion emitters; run the test with
    `JAX_DISABLE_MOST_OPTIMIZATIONS=0 XLA_FLAGS=--xla_cpu_use_fusion_emitters=true` to check it
    as users compile."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


def run_on_host_devices(code: str, *args: str, devices: int = 4):
    """Run `python -c code *args` from the repository root (so it can import `tests.*`) in a
    subprocess that sees `devices` host CPU devices; the JSON its last line of output prints."""
    return _child_json(
        code,
        *args,
        # The parent's flags (tests/conftest.py) kept: the child compiles as the parent does.
        XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
        f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        timeout=300,
    )


def _child_json(code: str, *args: str, timeout: float = 600, **env: str):
    """Run `python -c code *args` from the repository root with `env` added to the environment;
    the JSON its last line of output prints (a failure shows the child's stderr)."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, **env},
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


_REFUSED_PROLOGUE = """
import json, logging, sys
import jax, jax.numpy as jnp, equinox as eqx
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logger = logging.getLogger("jax._src.compiler")
logger.setLevel(logging.DEBUG)
logger.addHandler(Keep())
refused = "because it uses host callbacks"
jax.jit(lambda x: eqx.error_if(x, x > 0, "x > 0"))(-jnp.ones(7))
control = [m for m in records if refused in m]
records.clear()
"""


# The modules whose `_NO_CALLBACKS_SCRIPT` `assert_programs_cacheable` runs, all in one child.
CACHEABLE_SCRIPTS = (
    "tests.test_characteristics",
    "tests.test_rnn",
    "tests.test_sde",
    "tests.test_validation",
)


def assert_programs_cacheable(module: str, tmp_path_factory) -> None:
    """Assert that JAX's persistent cache refused none of the programs that `module`'s
    `_NO_CALLBACKS_SCRIPT` compiles: JAX refuses every program that holds a host callback
    (`eqx.error_if`, a progress bar, diffrax's checks of `SaveAt(ts=...)`) and says so in its log.
    A program with an `eqx.error_if`, compiled first, is the control: it must be refused, or the
    check cannot see. The scripts of every module in `CACHEABLE_SCRIPTS` run once per test run,
    one after another in one child process with its own cache folder (the suite runs without
    the persistent cache; a child costs seconds to start); a program two scripts share is
    checked where it is first compiled."""
    result = once_per_run(tmp_path_factory, "cacheable", lambda: _cacheable(tmp_path_factory))
    assert result["control"], "the control program was not refused: the check cannot see"
    assert result["found"][module] == []


def _cacheable(tmp_path_factory) -> dict:
    import importlib

    scripts = {m: importlib.import_module(m)._NO_CALLBACKS_SCRIPT for m in CACHEABLE_SCRIPTS}
    body = f"""
found = {{}}
for name, code in {scripts!r}.items():
    records.clear()
    exec(code, dict(globals()))  # as if it followed the prologue, in a namespace of its own
    found[name] = [m for m in records if refused in m]
print(json.dumps({{"control": control, "found": found}}))
"""
    cache = tmp_path_factory.mktemp("cacheable")
    return _child_json(_REFUSED_PROLOGUE + body, str(cache), JAX_ENABLE_COMPILATION_CACHE="true")


def once_per_run(tmp_path_factory, name: str, compute):
    """`compute()` (JSON-serializable) once per test run, shared by every xdist worker: the
    first worker to ask computes it under a file lock, the others read it. (xdist hands a
    module's tests to whichever worker is free, so a module-scoped fixture would otherwise run
    in each worker: tens of seconds for the subprocess fixtures.)"""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    path = root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            return json.loads(path.read_text())
        value = compute()
        path.write_text(json.dumps(value))
        return value


def nan_minibatch_problem():
    """Full loss ½‖x − 1‖²; the minibatch loss (and gradient) is NaN for about a quarter of
    the keys."""
    return dynopt.Problem(
        lambda x: 0.5 * jnp.sum((x - 1.0) ** 2),
        jnp.array([3.0, -2.0]),
        stochastic_loss_fn=lambda x, k: (
            0.5 * jnp.sum((x - 1.0) ** 2) * jnp.where(jax.random.uniform(k) < 0.25, jnp.nan, 1.0)
        ),
    )
