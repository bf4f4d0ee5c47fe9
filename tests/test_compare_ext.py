r"""`compare` with a flow and map written outside dynopt, as the README's extension guide has
them: an `AbstractMappedFlow` whose `default_map` is the user's own `AbstractMap`."""

from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

import dynopt
from dynopt import flows, maps, problems, validation


class _ScaledEuler(maps.AbstractMap):
    r"""`optax.sgd(c h)`, $t = kh$: explicit Euler of $\dot\theta = -c\nabla L$, stable iff
    $h < 2/(c\lambda_{\max})$."""

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(optax.sgd)

    def hyperparams(self, flow, h):
        return {"learning_rate": flow.c * h}

    def stability_limit(self, flow, lambda_max):
        return 2.0 / (float(flow.c) * float(lambda_max))


class _ScaledFlow(flows.AbstractMappedFlow):
    r"""$\dot\theta = -c\nabla L$."""

    default_map: ClassVar[type] = _ScaledEuler
    c: jax.Array = validation.hyperparameter("c", default=1.0, lower=0.0, lower_open=True)

    def init(self, params):
        return params

    def params(self, state):
        return state

    def vector_field(self, t, state, problem):
        return jax.tree.map(lambda g: -self.c * g, problem.grad(state))


def test_default_map_of_a_user_flow_declares_its_stability_limit():
    # lambda_max = 20, c = 1: limit h* = 0.1. The largest step 0.11 is past it (|1 - 2.2| = 1.2
    # per step on the stiff mode): no order may be fitted there. Before, `compare` looked the
    # default map up in dynopt's own registry only, missed the user's map and its declared
    # limit, and judged the sweep as if every step were stable; with `map=` given it did not.
    problem = problems.quadratic([1.0, 20.0], params0=jnp.array([1.0, 1e-3]))
    flow = _ScaledFlow(1.0)
    hs, t1 = [0.11, 0.055, 0.0275], 0.55
    by_default = dynopt.compare(flow, problem, hs, t1)
    by_name = dynopt.compare(flow, problem, hs, t1, map=_ScaledEuler())
    assert by_name.verdict == "unstable", by_name.reason
    assert by_default.verdict == by_name.verdict, by_default.reason
    assert by_default.reason == by_name.reason
