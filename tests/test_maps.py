"""dynopt.maps: the map contract (`map(flow, h) -> Discretization`, `flow.discretize(h)` is the
default map), the strict-promotion shim in one place, validation of traced step sizes, and the
closed-form stability limits of gradient descent."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import flows, maps, problems
from dynopt.correspondences import REGISTRY


@pytest.mark.parametrize("row", REGISTRY, ids=lambda r: r.name)
def test_map_contract(row):
    """`map(flow, h)` is a Discretization whose factory runs under standard promotion (one
    cached wrapper per optax factory, keeping its signature)."""
    disc = row.map(row.flow(), 0.01)
    assert isinstance(disc, dynopt.Discretization)
    assert row.map.order in (1.0, 2.0) and row.order >= row.map.order
    assert disc.factory is maps.standard_promotion(disc.factory.__wrapped__)


@pytest.mark.parametrize(
    "flow_type", sorted({type(r.flow()) for r in REGISTRY}, key=lambda t: t.__name__)
)
def test_discretize_is_sugar_for_a_registered_map(flow_type):
    """`flow.discretize(h)` is exactly one of the registry's maps applied to the flow."""
    rows = [r for r in REGISTRY if type(r.flow()) is flow_type]
    for row in rows:
        flow = row.flow()
        default = flow.discretize(0.01)
        if any(bool(eqx.tree_equal(default, r.map(flow, 0.01))) for r in rows):
            return
    raise AssertionError(f"{flow_type.__name__}.discretize is no registered map")


def test_raw_optax_adamw_with_traced_betas_under_strict_promotion():
    """optax.adamw's bias correction raises under strict promotion once b1 is an array; through
    the map layer's shim it runs (same operations) and keeps float32."""
    problem = dynopt.Problem(lambda p: jnp.sum((p - 1.0) ** 2), jnp.zeros(3, jnp.float32))

    def first_update(b1):
        tx = optax.adamw(0.01, b1=b1, b2=0.99)
        g = problem.grad(problem.params0)
        return tx.update(g, tx.init(problem.params0), problem.params0)[0]

    with pytest.raises(Exception, match="promotion"):
        jax.jit(first_update)(jnp.asarray(0.9))
    shimmed = maps.standard_promotion(optax.adamw)

    def shimmed_update(b1):
        tx = shimmed(0.01, b1=b1, b2=0.99)
        g = problem.grad(problem.params0)
        return tx.update(g, tx.init(problem.params0), problem.params0)[0]

    out = jax.jit(shimmed_update)(jnp.asarray(0.9))
    assert out.dtype == jnp.float32
    with jax.numpy_dtype_promotion("standard"):
        np.testing.assert_allclose(out, jax.jit(first_update)(jnp.asarray(0.9)), rtol=0)


def test_traced_step_size_too_large_raises():
    """a1 h > 1 inside vmap: an eqx.error_if, not a negative b1."""
    flow = flows.AdamFlow(10.0, 1.0)
    b1 = jax.jit(jax.vmap(lambda h: maps.Adam()(flow, h).hyperparams["b1"]))
    np.testing.assert_allclose(b1(jnp.array([0.01, 0.05])), [0.9, 0.5])
    with pytest.raises(Exception, match="a1"):
        jax.block_until_ready(b1(jnp.array([0.01, 0.2])))
    with pytest.raises(ValueError, match="step_size must be > 0"):
        maps.Adam()(flow, -0.1)


def test_gradient_descent_stability_limit():
    """GD on a quadratic: stable iff h < 2/λmax (measured on both sides of the limit)."""
    problem = problems.quadratic([1.0, 50.0])
    limit = maps.GradientDescent().stability_limit(flows.GradientFlow(), 50.0)
    assert limit == pytest.approx(0.04, rel=1e-15)
    traj = dynopt.run(
        flows.GradientFlow().discretize(jnp.array([0.99, 1.01]) * limit), problem, 3000
    )
    final = np.abs(np.asarray(traj.params)[:, -1, 1])
    assert final[0] < 1e-3 and (final[1] > 1.0 or bool(np.asarray(traj.diverged)[1]))


def test_fixed_momentum_stability_limit():
    """sgd(η, β) on λ/2 θ²: stable iff ηλ < 2(1 + β)."""
    problem = problems.quadratic([10.0])
    flow = flows.RescaledGradientFlow(0.5)
    limit = maps.FixedMomentum().stability_limit(flow, 10.0)
    assert limit == pytest.approx(0.3, rel=1e-15)
    hs = jnp.array([0.98, 1.02]) * limit
    final = np.abs(np.asarray(dynopt.run(maps.FixedMomentum()(flow, hs), problem, 3000).params))
    assert (final[0, -1, 0] < 1e-3 and not np.all(np.isfinite(final[1, -1]))) or final[1, -1, 0] > 1


def test_a_batched_hyperparameter_the_map_does_not_read_is_refused():
    """`SignFlow(width=[...])`: the sign map does not depend on the flow's width, so `run` made
    one run where a batch was meant (its loss indexed by time, not by run). Batched
    hyper-parameters and step sizes of different lengths are named before any arithmetic."""
    with pytest.raises(ValueError, match=r"SignFlow.width is batched, but Sign's optax transform"):
        flows.SignFlow(jnp.array([0.0, 0.1, 1.0])).discretize(0.05)
    with pytest.raises(ValueError, match=r"share one length .*step_size \(3,\), HeavyBall"):
        flows.HeavyBall(jnp.array([0.1, 0.5])).discretize(jnp.array([0.02, 0.05, 0.1]))
    zipped = flows.HeavyBall(jnp.array([0.1, 0.5])).discretize(jnp.array([0.02, 0.05]))
    assert dynopt.run(zipped, problems.quadratic([1.0, 3.0]), 3).loss.shape == (2, 4)


def test_a_map_definition_mistake_is_refused_when_its_class_is_created():
    """A map without `order`, or with its optax factory assigned as a plain function (bound as
    a method: `sgd() got multiple values for argument 'learning_rate'` at the first step
    before), is refused where the class is written, saying what to write. An abstract base
    (named Abstract..., or with `hyperparams` abstract) may leave them to its subclasses, which
    equinox refuses to instantiate until they are given."""
    from typing import ClassVar

    with pytest.raises(TypeError, match=r"NoOrder \(an AbstractMap\) declares no order"):

        class NoOrder(maps.AbstractMap):
            factory: ClassVar = staticmethod(optax.sgd)

            def hyperparams(self, flow, step_size):
                return {"learning_rate": step_size}

    with pytest.raises(TypeError, match=r"staticmethod\(sgd\)"):

        class NotStatic(maps.AbstractMap):
            order: ClassVar[float] = 1.0
            factory: ClassVar = optax.sgd

            def hyperparams(self, flow, step_size):
                return {"learning_rate": step_size}

    class AbstractPlain(maps.AbstractMap):
        def hyperparams(self, flow, step_size):
            return {"learning_rate": step_size}

    with pytest.raises(TypeError, match="abstract class attributes"):
        AbstractPlain()

    class Plain(AbstractPlain):
        order: ClassVar[float] = 1.0
        factory: ClassVar = staticmethod(optax.sgd)

    disc = Plain()(flows.GradientFlow(), 0.1)
    assert float(disc.hyperparams["learning_rate"]) == 0.1
