"""A sweep whose smallest errors sit at the rounding level of its runs' dtype (float32) names that
floor in its verdict's reason, and reads no order there; float64 verdicts are unchanged."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt._order import ROUNDING_FACTOR


jax.config.update("jax_enable_x64", True)

HS = np.asarray([0.04, 0.02, 0.01, 0.005])


def test_errors_at_the_rounding_level_read_no_order_and_name_the_floor():
    """Exact order-2 errors C h^2: asymptotic without a rounding level and with one far below
    them (the same reason); with the smallest error within ROUNDING_FACTOR = 1/(2^0.1 - 1)
    (a rounding that alone moves a halving's local order by 0.1) of it, pre-asymptotic, the
    reason naming the dtype's floor. Errors that stop decreasing there say so too, instead of
    only "errors do not decrease"."""
    assert ROUNDING_FACTOR == pytest.approx(13.933, abs=1e-3)
    e = 0.1 * HS**2
    plain = dynopt.assess_order(HS, e)
    assert plain.verdict == "asymptotic"
    far = dynopt.assess_order(HS, e, rounding=e[-1] / (1.01 * ROUNDING_FACTOR), dtype="float32")
    assert (far.verdict, far.reason, far.order) == (plain.verdict, plain.reason, plain.order)
    near = dynopt.assess_order(HS, e, rounding=e[-1] / (0.99 * ROUNDING_FACTOR), dtype="float32")
    assert near.verdict == "pre-asymptotic" and np.isnan(near.order)
    assert "local orders [2, 2, 2] agree within 0.2, but the errors at step sizes [0.005] are " \
        "within 13.9x the rounding level of the float32 runs" in near.reason  # fmt: skip
    flat = dynopt.assess_order(HS, [3e-6, 2.9e-6, 3.1e-6, 3.0e-6], rounding=2.4e-7, dtype="float32")
    assert flat.verdict == "pre-asymptotic"
    assert flat.reason.startswith("errors do not decrease with the step size")
    assert "rounding level of the float32 runs" in flat.reason and "no smaller step" in flat.reason
    with pytest.raises(ValueError, match="rounding must be one number or one per step size"):
        dynopt.assess_order(HS, e, rounding=[1e-7, 1e-7])
    with pytest.raises(ValueError, match="rounding"):
        dynopt.assess_order(HS, e, rounding=-1.0)


def _logcosh(dtype) -> dynopt.Problem:
    target = jnp.asarray([1.0, -0.5, 2.0], dtype)
    return dynopt.Problem(
        lambda p: jnp.sum(jnp.log(jnp.cosh(p - target))), jnp.asarray([0.3, 0.2, -0.1], dtype)
    )


def test_a_float32_sweep_at_its_rounding_floor_reads_no_order():
    """GD against its order-2 flow on a logcosh, h = 0.04 to 0.005: float64 is asymptotic, 2.01;
    float32 read "asymptotic 2.04" (before) with its smallest error 1.74e-6, 8% below float64's
    1.89e-6 and within 10x its rounding level 1.75e-7. Now pre-asymptotic, naming float32's
    floor."""
    c64 = dynopt.compare(optax.sgd, _logcosh(jnp.float64), HS, 1.0, order=2)
    assert c64.verdict == "asymptotic" and abs(float(c64.order) - 2) < 0.05, c64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (float32 inside: the warning this sweep is about)
        c32 = dynopt.compare(optax.sgd, _logcosh(jnp.float32), HS, 1.0, order=2)
    assert abs(float(c32.errors[-1]) / float(c64.errors[-1]) - 1) > 0.05  # rounding's share
    assert c32.verdict == "pre-asymptotic" and np.isnan(float(c32.order)), c32
    assert "rounding level of the float32 runs" in c32.reason
