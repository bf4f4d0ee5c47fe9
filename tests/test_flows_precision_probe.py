"""Hyper-parameters of another precision than the flow's (a float32 NumPy learning rate or step
size under x64): the inverse maps and `map(flow, h)` form the rates and decays in float64, as a
`hyperparameter` field stores a NumPy scalar (found by round-tripping optax's hyper-parameters:
a float32 learning rate rounded b2 = 0.999 to float32, and the flow it gave could not be solved on
float64 parameters under strict promotion)."""

import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import flows, maps


LR = np.float32(1e-3)  # a learning rate from a float32 sweep (np.geomspace(..., dtype=float32))

# (inverse, its optax hyper-parameters after the learning rate, the names of those in the map)
INVERSES = [
    (flows.AdamFlow.from_hyperparams, (0.9, 0.999), ("b1", "b2")),
    (flows.AdamWFlow.from_hyperparams, (0.9, 0.999), ("b1", "b2")),
    (flows.RMSPropFlow.from_hyperparams, (0.999,), ("decay",)),
    (flows.GlobalRMSPropFlow.from_hyperparams, (0.999,), ("decay",)),
    (flows.LionFlow.from_hyperparams, (0.9, 0.99), ("b1", "b2")),
    (maps.Leapfrog().inverse, (0.9,), ("momentum",)),
    (maps.NaiveEuler().inverse, (0.9,), ("momentum",)),
    (maps.ConformalEuler().inverse, (0.9,), ("momentum",)),
]


def _map_of(inverse):
    owner = getattr(inverse, "__self__", None)
    return owner if isinstance(owner, maps.AbstractMap) else None


@pytest.mark.parametrize("inverse, decays, names", INVERSES)
def test_round_trip_of_a_float32_learning_rate_keeps_the_python_float_decays(
    inverse, decays, names
):
    # optax.adam(np.float32(1e-3), b2=0.999) computes with b2 = 0.999 (a Python float, float64
    # under x64): the flow it follows must discretize back to it. At HEAD the rates were formed
    # in the learning rate's float32, so b2 came back as 0.99900001 (1 - b2 off by 1.3e-5
    # relative, 6e-6 in Adam's first update) and Leapfrog's learning rate 1.2e-7 off.
    flow, h = inverse(LR, *decays)
    map_ = _map_of(inverse)
    disc = flow.discretize(h) if map_ is None else map_(flow, h)
    assert float(h) == float(LR) or map_ is not None
    for name, value in zip(names, decays):
        np.testing.assert_allclose(float(disc.hyperparams[name]), value, rtol=2e-15, atol=0)
    np.testing.assert_allclose(
        float(disc.hyperparams["learning_rate"]), float(LR), rtol=2e-15, atol=0
    )


@pytest.mark.parametrize("inverse, decays, names", INVERSES)
def test_flow_of_a_float32_learning_rate_solves_float64_parameters(inverse, decays, names):
    # The flow's fields were strong float32 arrays (a NumPy float32 passed to the flow's own
    # constructor is stored as a weak float): strict promotion refused every solve on float64
    # parameters (TypePromotionError in the vector field).
    del names
    flow, _ = inverse(LR, *decays)
    problem = dynopt.Problem(
        lambda p: jnp.sum(jnp.sin(p) ** 2) + 0.1 * jnp.sum(p**4), jnp.array([0.3, -1.0, 2.0])
    )
    ref, _ = inverse(float(LR), *decays)  # the same values as Python floats
    ts = jnp.linspace(0.0, 0.1, 3)
    got = dynopt.solve(flow, problem, ts)
    want = dynopt.solve(ref, problem, ts)
    np.testing.assert_allclose(np.asarray(got.params), np.asarray(want.params), rtol=1e-13)


def test_float32_step_size_does_not_round_the_decays():
    # map(flow, h) with h a NumPy float32: b_i = 1 - a_i h was formed in float32 (b2 = 1 - 1e-3
    # came out 0.99900001) although the rates are float64 and the Discretization stores float64.
    flow = flows.AdamFlow(100.0, 1.0)
    h = np.float32(1e-3)
    disc = flow.discretize(h)
    np.testing.assert_allclose(float(disc.hyperparams["b1"]), 1 - 100.0 * float(h), rtol=1e-15)
    np.testing.assert_allclose(float(disc.hyperparams["b2"]), 1 - float(h), rtol=1e-15)
