"""A `Discretization` built with arguments its factory cannot take is refused at construction,
naming the argument (it raised `TypeError` from inside the first run's trace before)."""

import jax.numpy as jnp
import optax
import pytest

import dynopt


@pytest.mark.parametrize(
    "args, match",
    [
        (("sgd", {"learning_rate": 0.1}), "factory must be a function"),
        ((optax.sgd, {"lr": 0.1}), r"\['lr'\] are not keyword arguments of sgd"),
        ((optax.sgd, 0.1), "hyperparams must be a dict"),
        ((optax.sgd, {"learning_rate": "0.1"}), r"hyperparams\['learning_rate'\] must be a number"),
        ((optax.sgd, {"learning_rate": lambda k: 0.1}), r"hyperparams\['learning_rate'\]"),
    ],
)
def test_bad_factory_arguments_are_value_errors(args, match):
    with pytest.raises(ValueError, match=match):
        dynopt.Discretization(*args, dt=0.1)


def test_bad_options_and_init_fn_are_value_errors():
    with pytest.raises(ValueError, match="options must be"):
        dynopt.Discretization(optax.sgd, {"learning_rate": 0.1}, dt=0.1, options=("nesterov",))
    with pytest.raises(ValueError, match=r"\['nesterov_'\] are not keyword arguments"):
        dynopt.Discretization(optax.sgd, {"learning_rate": 0.1}, 0.1, (("nesterov_", True),))
    with pytest.raises(ValueError, match="given both as hyperparams and as options"):
        dynopt.Discretization(optax.sgd, {"learning_rate": 0.1}, 0.1, (("learning_rate", 1),))
    with pytest.raises(ValueError, match="init_fn must be None or a function"):
        dynopt.Discretization(optax.sgd, {"learning_rate": 0.1}, dt=0.1, init_fn="zeros")


def test_options_as_a_dict_and_factories_with_kwargs_still_run():
    problem = dynopt.problems.quadratic([1.0, 2.0])
    d = dynopt.Discretization(
        optax.sgd, {"learning_rate": 0.1, "momentum": 0.5}, dt=0.1, options={"nesterov": True}
    )
    assert d.options == (("nesterov", True),)
    got = dynopt.run(d, problem, 5).params
    want = dynopt.run(optax.sgd(0.1, momentum=0.5, nesterov=True), problem, 5).params
    assert jnp.array_equal(got, want)

    def factory(learning_rate, **kwargs):  # a factory taking **kwargs passes them on
        return optax.sgd(learning_rate, **kwargs)

    d = dynopt.Discretization(factory, {"learning_rate": 0.1, "momentum": 0.5}, dt=0.1)
    assert jnp.array_equal(
        dynopt.run(d, problem, 5).params,
        dynopt.run(optax.sgd(0.1, momentum=0.5), problem, 5).params,
    )
