"""Non-smooth update maps (`dynopt._modified.smooth`, `dynopt._modified.branches`): a branch
chosen by the iterate (clipping, a `jnp.where` guard) is expanded on the side its run stays on,
and a run that crosses the switching surface is refused."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt._modified import modified_flow
from dynopt._modified.smooth import branch_bits, classify

from .helpers import tree_max_abs_diff
from .test_modified import smooth_problem


def _clip_sgd(max_norm):
    return lambda h: optax.chain(optax.clip_by_global_norm(max_norm), optax.sgd(h))


@eqx.filter_jit
def _fields(flow, state, problem):
    return flow.field_values(state, problem)


def test_branch_bits_record_the_iterate_dependent_predicates():
    @jax.jit
    def leaky(x):
        return jnp.where(x > 0, x, 0.1 * x)

    def fn(x, n):
        # `n` is an integer input: its select is smooth in x and not recorded.
        return leaky(x) + jnp.where(n > 0, 1.0, 0.0)

    for x, expect in ((jnp.asarray([1.0, -2.0]), [1, 0]), (jnp.asarray([-1.0, 3.0]), [0, 1])):
        out, bits = branch_bits(fn, x, jnp.asarray(1))
        np.testing.assert_array_equal(np.asarray(bits), expect)
        np.testing.assert_allclose(np.asarray(out), np.asarray(fn(x, 1)), rtol=0, atol=0)
    found = classify(fn, jnp.ones(2), jnp.asarray(1))
    assert found.branches and not found.kinks and not found.random
    # Inside a loop body a branch cannot be observed per step: a kink.
    looped = classify(lambda x: jax.lax.fori_loop(0, 2, lambda i, y: leaky(y), x), jnp.ones(2))
    assert looped.kinks and not looped.branches


def test_inactive_clipping_is_plain_sgd(getkey):
    problem = smooth_problem(getkey())
    p0, h = problem.params0, 0.05
    clipped = modified_flow(_clip_sgd(1e3), h, order=3)
    assert clipped.spec.branches
    plain = modified_flow(lambda h: optax.sgd(h), h, order=3)
    fields = (_fields(f, f.init(p0), problem) for f in (clipped, plain))
    for a, b in zip(*fields):
        assert tree_max_abs_diff(a.params, b.params) < 1e-13
    cmp = dynopt.compare(_clip_sgd(1e3), problem, (0.04, 0.02, 0.01), 0.8, order=2)
    assert cmp.verdict == "asymptotic" and abs(float(cmp.order) - 2) < 0.15


def test_active_clipping_is_normalised_descent(getkey):
    # Clipped throughout: Φ_h(θ) = θ - h c ∇L/‖∇L‖, so f1 = -c ∇L/‖∇L‖ (normalised descent).
    problem = smooth_problem(getkey())
    p0, c = problem.params0, 1e-3
    g = problem.grad(p0)
    assert float(optax.tree.norm(g)) > 10 * c
    flow = modified_flow(_clip_sgd(c), 0.05, order=2)
    f1 = _fields(flow, flow.init(p0), problem)[0].params
    expect = optax.tree.scale(-c / optax.tree.norm(g), g)
    assert tree_max_abs_diff(f1, expect) < 1e-15


def test_a_run_that_crosses_the_clipping_threshold_is_refused(getkey):
    problem = smooth_problem(getkey())
    g0 = float(optax.tree.norm(problem.grad(problem.params0)))
    t1 = 1.0
    end = dynopt.solve(dynopt.flows.GradientFlow(), problem, jnp.asarray([0.0, t1]))
    g1 = float(optax.tree.norm(problem.grad(jax.tree.map(lambda x: x[-1], end.params))))
    assert g1 < 0.95 * g0  # the gradient norm falls through the threshold below
    with pytest.raises(ValueError, match=r"switches branch at step \d+"):
        dynopt.compare(_clip_sgd(0.97 * g0), problem, (0.04, 0.02, 0.01), t1, order=2)
