"""The battery's `init` check: a map's declared initial state (`init_fn`) against optax's own
`init`. The other checks start both sides from the map's state (identity) or bypass it
(conformance), on the measurements' float64 problems: an `init_fn` of the wrong dtype or built
for one array passed every one of them. One that gives optax's zero state where the flow needs
the half-step start fails the order check."""

import dataclasses
import re

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax
import pytest

from dynopt._battery import initial_state, verify
from dynopt._correspondences import REGISTRY
from dynopt._maps import momentum


ROWS = {row.name: row for row in REGISTRY}
# Leapfrog heavy ball (order 2 from the half-step start), on array problems only (_OSC, _Q),
# as a user's row on a vector would be.
LEAPFROG = dataclasses.replace(
    ROWS["heavy_ball_leapfrog"], measurements=ROWS["heavy_ball_leapfrog_zero_trace"].measurements
)


def _wide_start(disc, params, problem):
    """The half-step start in float64 whatever the parameters' dtype."""
    state = momentum.half_step_start(disc, params, problem)
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), state)


def _flat_start(disc, params, problem):
    """The half-step start with its trace as one flat vector: the parameters' own structure for
    one array, not for a pytree."""
    state = momentum.half_step_start(disc, params, problem)
    flat = jax.flatten_util.ravel_pytree(state[0].trace)[0]
    return (optax.TraceState(trace=flat), *state[1:])


def _zero_start(disc, params, problem):
    """optax's zero trace, declared as the start of a map that claims order 2."""
    return disc.transform.init(params)


class WideStart(momentum.Leapfrog):
    @property
    def init_fn(self):
        return _wide_start


class FlatStart(momentum.Leapfrog):
    @property
    def init_fn(self):
        return _flat_start


class ZeroStart(momentum.Leapfrog):
    @property
    def init_fn(self):
        return _zero_start


def test_the_registry_starts_have_optax_states():
    """Every registry row that declares an `init_fn` passes (its verdict unchanged)."""
    rows = [row for row in REGISTRY if row.map.init_fn is not None]
    assert len(rows) >= 3
    for row in rows:
        assert initial_state(row) == (), row.name
    assert initial_state(ROWS["heavy_ball_leapfrog_zero_trace"]) is None


@pytest.mark.parametrize(
    ("wrong", "said"),
    [
        (
            WideStart,
            r"bowl float32 at h = [\d.]+: \[0\]\.trace\['a'\] float64\[2, 2\], optax's float32",
        ),
        (FlatStart, r"bowl float64 at h = [\d.]+: structure"),
    ],
    ids=["dtype", "structure"],
)
def test_a_start_of_the_wrong_dtype_or_structure_fails_on_init(wrong, said):
    """Each passed identity and order (float64 arrays, both sides from the map's state) and now
    fails `init`, the leaf or structure named. The wide start passed conformance too (float32
    parameters kept: optax casts the updates, while the state ran in float64); the flat start
    raised a pytree error of JAX's there, naming no init_fn (`Discretization.init` names it
    now)."""
    row = dataclasses.replace(LEAPFROG, map=wrong())
    report = verify(row, ["identity", "init", "order"])
    assert report.failed == ("init",), str(report)
    found = report.checks["init"].measured.split("; ")
    assert any(re.search(said, x) for x in found), found
    if wrong is WideStart:
        assert verify(row, ["conformance"]).passed
    else:
        with pytest.raises(ValueError, match="init_fn _flat_start returned a state whose struc"):
            verify(row, ["conformance"])
    assert verify(LEAPFROG, ["init"]).passed


def test_the_zero_state_where_the_flow_needs_the_half_step_fails_on_order():
    """optax's zero trace has optax's structure (`init` passes) and both sides of the identity
    start from it; the order, 2 from the half-step start, is 1 from it: `order` fails."""
    report = verify(
        dataclasses.replace(LEAPFROG, map=ZeroStart()), ["identity", "init", "order", "conformance"]
    )
    assert report.failed == ("order",), str(report)
    assert all(abs(f.order - 1.0) < 0.1 for f in report.checks["order"].measured), str(report)
