"""A problem's `name` is a label: no part of its structure, so no part of any compiled program's
key, while messages and results still name the problem they are about."""

import dataclasses
import pickle

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import pytest

import dynopt
from dynopt import flows, games, lyapunov, problems
from dynopt.sharpness import sharpness, track_sharpness

from .helpers import count_backend_compiles


def _calls(problem):
    """One call of each compiled entry point on `problem`."""
    flow = flows.GradientFlow()
    gd = dynopt.Discretization(optax.sgd, {"learning_rate": 0.05}, dt=0.05)
    ref = dynopt.solve(flow, problem, jnp.array([0.5, 1.0]))  # its spectrum: top_eigenvalue's
    dynopt.run(flow.discretize(0.01), problem, 20)
    dynopt.compare(flow, problem, [0.02, 0.01], t1=0.2)
    dynopt.run(track_sharpness(gd), problem, 10, every=5, observe=sharpness)
    lyapunov.identity_deviation(ref, problem, jnp.array([0.25, 0.75]))


def test_a_renamed_problem_compiles_nothing():
    """A second problem of the same shape, named otherwise and with other values, runs every
    entry point on the programs of the first (each compiled anew per name before: the name was
    a static field, part of every `filter_jit` key)."""
    q0 = problems.quadratic(jnp.array([1.0, 3.0]), rotate=True, seed=0, name="q0")
    q1 = problems.quadratic(jnp.array([2.0, 5.0]), rotate=True, seed=1, name="q1")
    _calls(q0)
    compiled, _ = count_backend_compiles(_calls, q1)
    assert compiled == 0


def test_the_name_is_a_label():
    """The name reads as the string given, and survives what rebuilds a problem; problems that
    differ in name alone have one structure and are equal pytrees."""
    loss = lambda x: jnp.sum(x**2)
    p = dynopt.Problem(loss, jnp.ones(2), name="p")
    q = dynopt.Problem(loss, jnp.ones(2), "q")
    assert type(p.name) is str and (p.name, q.name) == ("p", "q")
    assert dynopt.Problem(loss, jnp.ones(2)).name == "problem" == dynopt.Problem.name
    assert jax.tree.structure(p) == jax.tree.structure(q)
    assert eqx.tree_equal(p, q)
    assert {p.name: 1, q.name: 2}["q"] == 2
    assert jax.tree.map(lambda x: x, q).name == "q"
    assert eqx.tree_at(lambda r: r.params0, q, jnp.zeros(2)).name == "q"
    assert dataclasses.replace(q, minimizer=jnp.zeros(2)).name == "q"
    assert dataclasses.replace(q, name="r").name == "r"
    assert pickle.loads(pickle.dumps(dynopt.Problem(jnp.sum, jnp.ones(2), name="s"))).name == "s"
    assert "name='q'" in repr(q)
    with pytest.raises(ValueError, match="name must be a string, got 3"):
        dynopt.Problem(loss, jnp.ones(2), name=3)


def test_messages_name_the_problem_they_are_about(getkey):
    """A message raised while tracing names the problem traced (a failed trace is not cached),
    and one raised on the host after a shared compiled program names the problem given."""
    no_minibatch = eqx.filter_jit(lambda p, key: p.stochastic_loss(p.params0, key))
    for name in ("a", "b"):
        problem = dynopt.Problem(lambda x: jnp.sum(x**2), jnp.ones(2), name=name)
        with pytest.raises(ValueError, match=f"Problem '{name}' has no stochastic_loss_fn"):
            no_minibatch(problem, getkey())

    # A guard on the size of updates already scaled by h: closed at h = 0, open for h > 0 on a
    # steep loss (test_modified_smooth.py), checked in one compiled program for both problems.
    def guard(u, p):
        closed = optax.tree.norm(u, squared=True) <= 1e-11
        return jax.tree.map(lambda x: jnp.where(closed, 0.0, x), u)

    opt = lambda h: optax.chain(optax.sgd(h), optax.stateless(guard))
    for name, slope in (("steep", 100.0), ("steeper", 200.0)):
        problem = dynopt.Problem(eqx.Partial(_slope, a=jnp.asarray(slope)), jnp.zeros(1), name)
        with pytest.raises(ValueError, match=rf"at h = 0 is not the one .* problem '{name}'"):
            dynopt.modified_flow(opt, 0.01, problem=problem)


def _slope(x, a):
    return a * x[0]


def _bilinear(phi, theta):
    return jnp.sum(phi * theta)


def _minus_bilinear(phi, theta):
    return -jnp.sum(phi * theta)


def test_a_renamed_game_compiles_nothing():
    """As a `Problem`'s: a game's name is a label, no part of any compiled program's key."""
    flow = games.GameFlow()

    def calls(game):
        dynopt.solve(flow, game, jnp.array([0.5, 1.0]), solver="tsit5")
        dynopt.run(flow.discretize(0.01), game, 20)

    g0 = games.Game(_bilinear, _minus_bilinear, jnp.ones(2), jnp.ones(2), name="g0")
    g1 = games.Game(_bilinear, _minus_bilinear, jnp.ones(2) / 2, jnp.ones(2), name="g1")
    calls(g0)
    assert count_backend_compiles(calls, g1)[0] == 0
    assert g1.name == "g1"
