"""XLA:CPU's cheaper compilation (the elemental emitter), only where this jaxlib knows the flag.

The test suite and `continuum`'s cell workers compile with `--xla_cpu_use_fusion_emitters=false`
(much less compile time for the same operations, see docs/performance.md). XLA aborts the whole
process on a flag it does not know (`parse_flags_from_env.cc: Unknown flag in XLA_FLAGS`, no
Python exception), and jaxlib 0.11 no longer has this one: with it set unconditionally every
test worker died at start-up (seen with jax 0.11.2). So the flag is tried once in a child
process, and the answer is kept in the environment for this process's children.
"""

import os
import subprocess
import sys


FLAG = "--xla_cpu_use_fusion_emitters=false"
_NAME = "xla_cpu_use_fusion_emitters"
# "1"/"0": this jaxlib accepts / refuses FLAG (set by the first probe, inherited by children).
_KNOWN = "DYNOPT_XLA_FUSION_FLAG_KNOWN"


def accepted(flag: str) -> bool:
    """Whether this jaxlib's XLA accepts `flag` in `XLA_FLAGS`: a child process imports JAX with
    it added and runs one operation on the CPU (about a second)."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip(),
        "JAX_PLATFORMS": "cpu",
    }
    code = "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, timeout=300
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def flag_known() -> bool:
    """Whether this jaxlib accepts `FLAG` (`accepted`, asked once per process tree: the answer
    is kept in the environment, which child processes inherit)."""
    if os.environ.get(_KNOWN) not in ("0", "1"):
        os.environ[_KNOWN] = "1" if accepted(FLAG) else "0"
    return os.environ[_KNOWN] == "1"


def use_elemental_emitter() -> None:
    """Add `FLAG` to `XLA_FLAGS` unless the caller's environment chooses the emitter already
    or this jaxlib does not know the flag. Call before JAX starts its CPU backend."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _NAME in flags or not flag_known():
        return
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
