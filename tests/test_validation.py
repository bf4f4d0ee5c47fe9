"""dynopt._validation: the three tiers (construction ValueError naming the argument and range,
traced values checked inside the compiled program with eqx.error_if), and `hyperparameter`
fields as validated array leaves."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynopt._validation import (
    choice,
    decay,
    hyperparameter,
    instance,
    interval,
    nonnegative,
    positive,
    positive_int,
)

from .helpers import assert_programs_cacheable


@pytest.mark.parametrize(
    "check, value, match",
    [
        (positive, 0.0, r"x must be > 0 and finite, got 0.0"),
        (positive, float("nan"), r"x must be > 0 and finite, got nan"),
        (positive, float("inf"), r"x must be > 0 and finite, got inf"),
        (nonnegative, -1.0, r"x must be >= 0 and finite"),
        (decay, 1.0, r"x must be in \[0, 1\), got 1.0"),
        (positive, "a", r"x must be a real number > 0 and finite, got 'a' \(a str\)"),
        (interval, None, r"x must be a finite real number, got None \(a NoneType\)"),
        (interval, [1.0, 1j], r"x must be a finite real number, got \[1.0, 1j\] \(a list\)"),
        # a bool is no step size (`discretize(True)` stepped by 1, with times of dtype bool)
        (positive, True, r"x must be a real number > 0 and finite, got True \(a bool\)"),
        (positive, np.array([True]), r"x must be a real number > 0 and finite"),
        # an empty array was "x must be finite, got []", a range it does not leave
        (interval, [], r"x must not be empty \(every entry finite\), got an array of shape"),
        (positive, np.zeros((2, 0)), r"x must not be empty .* shape \(2, 0\)"),
    ],
)
def test_concrete_values_raise_naming_the_range(check, value, match):
    with pytest.raises(ValueError, match=match):
        check("x", value)


def test_concrete_values_pass_through_unchanged():
    v = np.array([0.5, 0.25])
    assert positive("x", v) is v and decay("x", 0.0) == 0.0
    assert interval("x", jnp.inf, lower=0.0, allow_inf=True) == jnp.inf
    assert choice("m", "a", ("a", "b")) == "a" and positive_int("n", 3) == 3
    with pytest.raises(ValueError, match="m must be one of"):
        choice("m", "c", ("a", "b"))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        positive_int("n", True)
    assert instance("p", v, np.ndarray, "an array") is v
    with pytest.raises(ValueError, match=r"^p must be an array, got list; try np\.asarray\.$"):
        instance("p", [0.5], np.ndarray, "an array", hint="; try np.asarray")


def test_traced_values_are_checked_inside_jit_and_vmap():
    f = jax.jit(jax.vmap(lambda x: decay("beta", x) * 2))
    np.testing.assert_allclose(f(jnp.array([0.1, 0.5])), [0.2, 1.0])
    with pytest.raises(Exception, match="beta must be in"):
        jax.block_until_ready(f(jnp.array([0.1, 1.5])))


class _Flow(eqx.Module):
    rate: jax.Array = hyperparameter("rate", lower=0.0, lower_open=True)
    eps: jax.Array = hyperparameter("eps", default=1e-8, lower=0.0)


def test_hyperparameter_fields_are_validated_array_leaves():
    m = _Flow(2.0)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(m))
    with pytest.raises(ValueError, match="rate must be > 0"):
        _Flow(-1.0)
    traces = []

    @eqx.filter_jit
    def f(m):
        traces.append(1)
        return m.rate * 2

    for rate in (1.0, 2.0, 3.0):
        f(_Flow(rate))
    assert len(traces) == 1
    bad = jax.jit(lambda r: _Flow(r).rate)
    with pytest.raises(Exception, match="rate must be > 0"):
        jax.block_until_ready(bad(jnp.asarray(-1.0)))


_NO_CALLBACKS_SCRIPT = """
import dynopt
from dynopt import flows, lyapunov, problems
problem = problems.quadratic(jnp.linspace(1.0, 3.0, 7))
ts = jnp.linspace(0.0, 1.0, 7)
ref = dynopt.solve(flows.GradientFlow(), problem, ts)
dynopt.solve(flows.GradientFlow(), problem, [1.0], dense=False)  # diffrax's t1 save
lyapunov.loss_rate(ref, problem, ts)
dynopt.compare(flows.GradientFlow(), problem, [0.1, 0.05, 0.025], 1.0)
modified = flows.ModifiedGradientFlow
dynopt.compare(flows.GradientFlow(), problem, [0.1, 0.05], 1.0, reference=modified)
from dynopt import games
games.modified_flow_growth(games.Simultaneous(), games.dirac_gan(), 0.1)
"""


def test_entry_point_programs_hold_no_host_callbacks(tmp_path_factory):
    """JAX's persistent compilation cache stores no program with a host callback (an
    `eqx.error_if`, a progress bar): `compare`, `solve` and the Lyapunov rates validate on the
    host and compile callback-free programs, so a second process reuses them. A program with an
    `eqx.error_if` is the control: JAX says it refuses to store it. (In a child process with its
    own cache folder: the suite itself runs without the persistent cache.)"""
    assert_programs_cacheable(__name__, tmp_path_factory)
