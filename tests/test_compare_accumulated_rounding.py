"""`compare` in float32 with small steps: the errors are the rounding of the runs accumulated
over their t1/dt steps, and the verdict's reason says so (the README: "A float32 sweep whose
errors reach its rounding level says so instead of fitting rounding's slope")."""

import jax
import jax.numpy as jnp

import dynopt
from dynopt import flows


def _loss(w):  # (the reference solves in float64: the curvatures in the iterate's dtype)
    return 0.5 * jnp.sum(jnp.asarray([0.1, 1.0, 10.0], w.dtype) * (w - 0.3) ** 2)


def _problem(dtype):
    return dynopt.Problem(_loss, jnp.ones(3, dtype))


def test_float32_errors_that_grow_as_the_step_shrinks_are_named_rounding():
    """Before: "pre-asymptotic: errors do not decrease with the step size (local orders [-1.24,
    -1.55, -2.32])" with no word of rounding: 2e5 float32 steps of 5e-6 drift 2.3e-3 from the
    flow, 35x the 6.5e-5 of 2.5e4 steps of 4e-5 (one rounding of the iterate, the floor
    `assess_order` knew, is 4e-7)."""
    jax.config.update("jax_enable_x64", True)
    hs = [4e-5, 2e-5, 1e-5, 5e-6]
    cmp = dynopt.compare(flows.GradientFlow(), _problem(jnp.float32), hs, t1=1.0)
    assert cmp.verdict == "pre-asymptotic" and float(cmp.errors[-1]) > float(cmp.errors[-2])
    assert "rounding of the float32 runs adds up to over their n = 200000 steps" in cmp.reason
    assert "compare in float64" in cmp.reason
    # float64 runs of the same steps: their errors fall with the step, an order, no such note
    cmp = dynopt.compare(flows.GradientFlow(), _problem(jnp.float64), hs, t1=1.0)
    assert cmp.verdict == "asymptotic" and "rounding" not in cmp.reason
    assert abs(float(cmp.order) - 1.0) < 0.1


def test_a_float32_order_above_its_rounding_keeps_its_verdict():
    """Errors that fall with the step are the method's: float32 GD against its modified flow
    fits 2.02 (local orders 2.04, 2.02, 2.01), asymptotic, as before."""
    jax.config.update("jax_enable_x64", True)
    hs = [0.02, 0.01, 0.005, 0.0025]
    cmp = dynopt.compare(
        flows.GradientFlow(), _problem(jnp.float32), hs, t1=1.0,
        reference=flows.ModifiedGradientFlow,
    )  # fmt: skip
    assert cmp.verdict == "asymptotic" and abs(float(cmp.order) - 2.0) < 0.1, cmp
