"""`modified_flow` refuses a fast optimizer state stored narrower than the parameters by its
dtype, wherever the run starts: the float32 rounding used to pass the affine test where it
happened to be small (a start at or near the minimum, tiny gradients)."""

import jax.numpy as jnp
import optax
import pytest

import dynopt


def _quadratic(x0):
    return dynopt.Problem(lambda x: 0.5 * jnp.sum(jnp.array([1.0, 2.0, 3.0]) * x**2), x0)


NARROW = {
    "adam mu_dtype": (
        lambda h: optax.adam(h, b1=0.5, b2=0.6, eps=0.3, mu_dtype=jnp.float32),
        r"\[0\]\.mu \(float32\)",
    ),
    "sgd accumulator_dtype": (
        lambda h: optax.sgd(h, momentum=0.5, accumulator_dtype=jnp.float32),
        r"\[0\]\.trace \(float32\)",
    ),
}


@pytest.mark.parametrize("scale", [1.0, 1e-12, 0.0])
@pytest.mark.parametrize("which", list(NARROW))
def test_a_narrow_fast_state_is_refused_at_every_start(which, scale):
    optimizer, leaf = NARROW[which]
    problem = _quadratic(scale * jnp.array([0.7, -0.4, 1.1]))
    with pytest.raises(ValueError, match=leaf + r".*narrower float than the parameters"):
        dynopt.modified_flow(optimizer, 0.01, 1, problem=problem)


def test_the_same_state_in_the_parameters_precision_is_accepted_there():
    problem = _quadratic(1e-12 * jnp.array([0.7, -0.4, 1.1]))
    flow = dynopt.modified_flow(lambda h: optax.sgd(h, momentum=0.5), 0.01, 1, problem=problem)
    assert flow.spec.regime == "fast"
