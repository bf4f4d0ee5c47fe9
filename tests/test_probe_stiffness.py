"""`dynopt.stiffness_ratio` validates its arguments: a horizon of 0 raised `ZeroDivisionError`,
a negative or NaN one returned a number as if the horizon played no part."""

import jax.numpy as jnp
import pytest

import dynopt
from dynopt import flows, problems


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"horizon": 0.0}, "horizon must be > 0"),
        ({"horizon": -1.0}, "horizon must be > 0"),
        ({"horizon": float("nan")}, "horizon must be > 0"),
        ({"horizon": "2"}, "horizon must be a real number > 0"),
        ({"horizon": 2.0, "t0": float("inf")}, "t0 must be finite"),
        ({"horizon": 2.0, "flow": "gradient"}, "flow must be None"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, match):
    q = problems.quadratic([1.0, 100.0])
    with pytest.raises(ValueError, match=match):
        dynopt.stiffness_ratio(q, q.params0, **kwargs)


def test_problem_must_be_a_problem():
    with pytest.raises(ValueError, match=r"problem must be a dynopt\.AbstractProblem"):
        dynopt.stiffness_ratio(lambda p: jnp.sum(p**2), jnp.ones(2), 2.0)


def test_an_infinite_horizon_reads_the_slowest_mode():
    q = problems.quadratic([1e-2, 1.0, 100.0])  # the condition number once T >= 1/λmin
    assert dynopt.stiffness_ratio(q, q.params0, float("inf")) == pytest.approx(1e4, rel=1e-12)
    assert dynopt.stiffness_ratio(q, q.params0, 2.0, flows.GradientFlow()) == pytest.approx(
        100.0 / 0.5, rel=1e-12
    )
