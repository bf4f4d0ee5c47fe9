"""`raise_for_result` reads a concrete diffrax result on the host: no eager program per call."""

import diffrax
import jax
import jax.numpy as jnp
import pytest

import dynopt
from dynopt._solve import raise_for_result


@jax.jit
@jax.vmap
def _decay(max_steps_scale):
    term = diffrax.ODETerm(lambda t, y, args: -y)
    # Entry i may take 4 steps of 0.1 out of 10: steps past the budget report max_steps_reached.
    sol = diffrax.diffeqsolve(
        term, diffrax.Euler(), 0.0, max_steps_scale, 0.1, jnp.ones(2), max_steps=4, throw=False
    )
    return sol.result


def test_a_successful_result_is_checked_without_a_program_or_a_transfer_to_the_device():
    result = _decay(jnp.array([0.2, 0.3]))
    one = jax.tree.map(lambda v: v[0], result)
    with jax.transfer_guard_host_to_device("disallow"):
        raise_for_result(result, what="decay")  # it compared on the device: a transfer
        raise_for_result(one, what="decay")


def test_a_failed_entry_is_named_with_its_failure():
    result = _decay(jnp.array([0.2, 1.0, 0.3, 2.0]))
    with pytest.raises(dynopt.SolveError, match=r"decay failed \(batch entries \[1, 3\] of 4\)"):
        raise_for_result(result, what="decay", max_steps=4)
    with pytest.raises(dynopt.SolveError, match=r"max_steps_reached.*max_steps"):
        raise_for_result(jax.tree.map(lambda v: v[3], result), what="decay", max_steps=4)
