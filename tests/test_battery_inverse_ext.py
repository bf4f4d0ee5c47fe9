r"""The battery's inverse check on a user's flow that declares its inverse as the DESIGN's
`<Flow>.from_hyperparams(...)` (gradient flow written outside dynopt, `optax.sgd(h)`,
$t = kh$: the inverse is $\eta \mapsto (\text{flow}, \eta)$)."""

from typing import ClassVar

import jax
import optax

from dynopt import flows, maps, problems
from dynopt.correspondences import Correspondence, inverse_round_trip, Measurement, verify


class _Euler(maps.AbstractMap):
    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(optax.sgd)

    def hyperparams(self, flow, h):
        return {"learning_rate": h}


class _Flow(flows.AbstractMappedFlow):
    r"""$\dot\theta = -\nabla L$, its inverse map declared on the flow only."""

    default_map: ClassVar[type] = _Euler

    def init(self, params):
        return params

    def params(self, state):
        return state

    def vector_field(self, t, state, problem):
        return jax.tree.map(lambda g: -g, problem.grad(state))

    @classmethod
    def from_hyperparams(cls, learning_rate):
        return cls(), learning_rate


class _WrongFlow(flows.AbstractMappedFlow):
    default_map: ClassVar[type] = _Euler

    init = _Flow.init
    params = _Flow.params
    vector_field = _Flow.vector_field

    @classmethod
    def from_hyperparams(cls, learning_rate):
        return cls(), 2 * learning_rate  # a wrong clock: h off by a factor 2


def _one():
    return problems.quadratic([1.0])


def _two():
    return problems.quadratic([1.0, 3.0])


def _row(flow_cls):
    measurements = (Measurement(_one, 1.0, (0.02, 0.01)), Measurement(_two, 1.0, (0.02, 0.01)))
    return Correspondence("user_gd", flow_cls, _Euler(), None, measurements)


def test_a_flows_from_hyperparams_is_checked_when_its_map_declares_no_inverse():
    # Before, only `map.inverse` was read: a flow declaring the inverse the DESIGN names
    # (`from_hyperparams`) was reported "n/a", right or wrong.
    right = verify(_row(_Flow), ["inverse"]).checks["inverse"]
    assert right.passed is True, right
    assert max(right.measured) == 0.0
    wrong = inverse_round_trip(_row(_WrongFlow))
    assert wrong is not None
    assert abs(wrong.step_size_error - 1.0) < 1e-12  # h' = 2h
    check = verify(_row(_WrongFlow), ["inverse"]).checks["inverse"]
    assert check.passed is False, check
