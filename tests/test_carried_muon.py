"""optax.contrib.muon at its defaults through `modified_flow`: the construction checks step it
from a generic state whose Newton-Schulz coefficients (constants passed through its state) are
its own, not moved with the state (moved by 0.37 the quintic iteration diverged: W ~ 1e206 and
an overflow in `_moved`)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib

import dynopt
from dynopt._modified.flow import _generic, _init
from dynopt._modified.step import OptimizerSpec, passthrough

from .test_modified_optax_contrib import matrix_problem


def test_muon_at_its_defaults_is_checked_without_overflow():
    problem = matrix_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        flow = dynopt.modified_flow(lambda h: optax.contrib.muon(h), 0.01, 1, problem=problem)
    assert flow.spec.regime == "fast"


def test_the_generic_state_keeps_the_constants_and_moves_the_state():
    problem = matrix_problem()
    spec = OptimizerSpec(lambda h: optax.contrib.muon(h))
    x0 = problem.params0
    state0 = _init(spec, jnp.zeros(()), x0)
    generic = _generic(state0, passthrough(spec, x0))
    before, after = jax.tree.leaves(state0), jax.tree.leaves(generic)
    constants = passthrough(spec, x0)
    assert len(constants) == 1
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        if i in constants:
            np.testing.assert_array_equal(a, b)  # (3.4445, -4.7750, 2.0315)
        elif jnp.issubdtype(a.dtype, jnp.floating):
            assert np.all(np.asarray(b) != np.asarray(a))
