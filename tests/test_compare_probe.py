"""Probe of `compare` against references bound to one step size.

The order-p modified flow of step $h_0$ (p >= 2), `ModifiedGradientFlow(h0)` and
`CentralFlow(h0)` describe the run of time step $h_0$ only. Given as the one reference of a
sweep, each run at another step was measured against another method's flow: for GD on a
quartic against its order-2 flow of $h_0 = 0.0025$ over $h$ = 0.04, 0.02, 0.01, `compare`
reported "asymptotic", order 1.19 (the gap $O(h - h_0)$), where GD tracks its own order-2 flow
to order 2. Such a sweep is now refused, naming the per-step route.
"""

import jax.numpy as jnp
import optax
import pytest

import dynopt
from dynopt.flows import CentralFlow, GradientFlow, ModifiedGradientFlow


def _quartic(x):
    return jnp.sum(x**4) / 4 + x[0] * x[1] + 0.5 * jnp.sum(x**2)


def _sgd(h):
    return optax.sgd(h)


PROBLEM = dynopt.Problem(_quartic, jnp.array([0.7, -0.4, 1.1]))
LADDER = (0.04, 0.02, 0.01)


def test_a_sweep_against_one_order_2_flow_is_refused():
    own = dynopt.modified_flow(_sgd, 0.0025, 2, problem=PROBLEM)
    with pytest.raises(ValueError, match=r"time step 0.0025 only.*order=2"):
        dynopt.compare(own, PROBLEM, LADDER, 1.0)
    with pytest.raises(ValueError, match=r"time step 0.0025 only.*order=2"):
        dynopt.compare(_sgd, PROBLEM, LADDER, 1.0, reference=own)
    with pytest.raises(ValueError, match=r"time step 0.0025 only.*reference=ModifiedGradientFlow"):
        dynopt.compare(GradientFlow(), PROBLEM, LADDER, 1.0, reference=ModifiedGradientFlow(0.0025))
    with pytest.raises(ValueError, match=r"time step 0.0025 only.*reference=CentralFlow"):
        dynopt.compare(GradientFlow(), PROBLEM, LADDER, 1.0, reference=CentralFlow(0.0025))


def test_the_per_step_routes_and_step_free_flows_still_compare():
    """The order-2 flow at each step (the optimizer with `order=2`, or the flow class as the
    reference) fits order 2; a fixed order-1 flow (the continuum limit, no step in it) and a
    one-entry sweep at the flow's own step are taken."""
    c = dynopt.compare(_sgd, PROBLEM, LADDER, 1.0, order=2)
    assert c.verdict == "asymptotic" and abs(float(c.order) - 2) < 0.15
    c = dynopt.compare(GradientFlow(), PROBLEM, LADDER, 1.0, reference=ModifiedGradientFlow)
    assert c.verdict == "asymptotic" and abs(float(c.order) - 2) < 0.15
    c = dynopt.compare(dynopt.modified_flow(_sgd, 0.0025, 1, problem=PROBLEM), PROBLEM, LADDER, 1.0)
    assert c.verdict == "asymptotic" and abs(float(c.order) - 1) < 0.15
    own = dynopt.modified_flow(_sgd, 0.01, 2, problem=PROBLEM)
    assert bool(jnp.isfinite(dynopt.compare(own, PROBLEM, [0.01], 1.0).errors[0]))
