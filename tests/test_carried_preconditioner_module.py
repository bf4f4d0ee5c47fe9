"""A user's `eqx.Module` preconditioner holding arrays is a pytree of the flow: its arrays are
traced (a new value reuses the compiled `solve` and `run`), while a plain function stays a
static option compiled in."""

import inspect

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import flows, problems


class _Counter:
    """Counts the traces of a preconditioner's `__call__` (hashable, by identity)."""

    def __init__(self):
        self.n = 0


class _Diagonal(eqx.Module):
    """$P v = w \\odot v$ (a fixed positive diagonal), counting its traces."""

    weights: jax.Array
    traces: _Counter = eqx.field(static=True, default_factory=_Counter)

    def __call__(self, params, v, loss_fn=None):
        self.traces.n += 1
        return self.weights * v


class _Scaled(eqx.Module):
    """$P v = s\\,v$ with a scalar array $s$, counting its traces."""

    scale: jax.Array
    traces: _Counter = eqx.field(static=True, default_factory=_Counter)

    def __call__(self, params, v, loss_fn=None):
        self.traces.n += 1
        return jax.tree.map(lambda x: self.scale * x, v)


def _half(params, v, loss_fn=None):
    return jax.tree.map(lambda x: 0.5 * x, v)


EIGS = jnp.array([1.0, 3.0])


def test_solve_traces_a_module_preconditioner_once_for_new_array_values():
    problem = problems.quadratic(EIGS)  # diagonal: θ_i(t) = θ_i(0) exp(-w_i λ_i t)
    ts = jnp.array([0.5, 1.0])
    traces = _Counter()
    for w in ([1.0, 2.0], [0.5, 0.25], [3.0, 1.0]):
        flow = flows.PreconditionedFlow(_Diagonal(jnp.asarray(w), traces))
        traj = dynopt.solve(flow, problem, ts, dense=False)
        exact = problem.params0[None, :] * jnp.exp(-(jnp.asarray(w) * EIGS)[None, :] * ts[:, None])
        np.testing.assert_allclose(traj.params, exact, rtol=1e-8)
        if w == [1.0, 2.0]:
            first = traces.n
    assert traces.n == first  # new values: leaves of the compiled solve
    # The construction check materializes P(θ₀) of a module too.
    with pytest.raises(ValueError, match="P must be positive definite"):
        flows.PreconditionedFlow(_Diagonal(jnp.asarray([1.0, -1.0])), check_on=problem)


def test_run_of_a_module_with_scalar_arrays_traces_once_for_new_values():
    problem = problems.quadratic(EIGS)
    traces = _Counter()
    finals = {}
    for s in (0.5, 0.8):
        disc = flows.PreconditionedFlow(_Scaled(jnp.asarray(s), traces)).discretize(0.1)
        assert set(disc.hyperparams) == {"learning_rate", "precondition.scale"}
        finals[s] = dynopt.run(disc, problem, 5).final_params
        if s == 0.5:
            first = traces.n
    assert traces.n == first  # the second value ran the compiled program
    for s, final in finals.items():
        np.testing.assert_allclose(final, problem.params0 * (1 - 0.1 * s * EIGS) ** 5, rtol=1e-13)


def test_a_function_stays_a_static_option_and_a_vector_array_is_not_a_batch():
    disc = flows.PreconditionedFlow(_half).discretize(0.1)
    assert list(disc.hyperparams) == ["learning_rate"]
    assert disc.options == (("precondition", _half),)
    flow = flows.PreconditionedFlow(_Diagonal(jnp.asarray([1.0, 2.0])))
    assert [x.shape for x in jax.tree.leaves(flow)] == [(2,)]
    with pytest.raises(ValueError, match=r"precondition\.weights of shape \(2,\)"):
        flow.discretize(0.1)


def test_optax_inject_hyperparams_builds_the_same_optimizer():
    """The factory takes a module's arrays as keywords; `optax.inject_hyperparams` binds its
    signature with defaults and hands them back as one keyword (`leaves={...}`)."""
    problem = problems.quadratic(EIGS)
    disc = flows.PreconditionedFlow(_Scaled(jnp.asarray(0.5))).discretize(0.1)
    kwargs = {**disc.hyperparams, **dict(disc.options)}
    names = inspect.signature(disc.factory).parameters
    static = tuple(k for k in names if k not in disc.hyperparams)
    injected = optax.inject_hyperparams(disc.factory, static_args=static)(**kwargs)
    a = dynopt.run(disc, problem, 5).final_params
    b = dynopt.run(optax.chain(optax.identity(), injected), problem, 5).final_params
    np.testing.assert_array_equal(a, b)
