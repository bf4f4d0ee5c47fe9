"""dynopt.maps probed as a user would: stability limits against the spectral radius of the
linearized transform itself (`numpy.linalg.eigvals` of its Jacobian), the textbook limits, and
bad inputs to the host-side closed forms, the map options and the measuring helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import dynopt
from dynopt import flows, maps, problems


def _spectral_radius(disc: dynopt.Discretization, lam: float) -> float:
    """Spectral radius of one step of `disc.transform` on lam/2 x^2, as a map of (x, float
    state): the Jacobian by `jax.jacobian`, its eigenvalues by `numpy.linalg.eigvals`. Nothing
    of the closed forms enters (the transform is optax's or dynopt's, run as a user would)."""
    problem = problems.quadratic(jnp.array([lam]))
    state = disc.transform.init(problem.params0)
    leaves, treedef = jax.tree.flatten(state)
    floating = [jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) for x in leaves]
    x0, unravel = ravel_pytree((problem.params0, [x for x, f in zip(leaves, floating) if f]))
    tx = disc.transform

    def step(x):
        params, floats = unravel(x)
        it = iter(floats)
        state = jax.tree.unflatten(
            treedef, [next(it) if f else x for x, f in zip(leaves, floating)]
        )
        g = jax.grad(problem.loss)(params)
        extra = (
            {"grad_fn": jax.grad(problem.loss)}
            if isinstance(tx, optax.GradientTransformationExtraArgs)
            else {}
        )
        updates, new = tx.update(g, state, params, **extra)
        new_floats = [x for x, f in zip(jax.tree.leaves(new), floating) if f]
        return ravel_pytree((optax.apply_updates(params, updates), new_floats))[0]

    return float(np.max(np.abs(np.linalg.eigvals(np.asarray(jax.jacobian(step)(x0))))))


@pytest.mark.parametrize(
    "map, flow",
    [
        (maps.GradientDescent(), flows.GradientFlow()),
        (maps.FixedMomentum(), flows.RescaledGradientFlow(0.6)),
        (maps.NaiveEuler(), flows.HeavyBall(0.3)),
        (maps.Leapfrog(), flows.HeavyBall(2.0)),
        (maps.ConformalEuler(), flows.HeavyBall(5.0)),
        (maps.Lookahead(1.0), flows.HeavyBall(0.3)),
        (maps.Lookahead(0.5), flows.HeavyBall(0.3)),
    ],
    ids=lambda x: type(x).__name__,
)
def test_stability_limit_is_where_the_linearized_transform_loses_stability(map, flow):
    """0.999 h* is stable, 1.001 h* is not, for the transform's own Jacobian; and the closed
    forms: GD 2/λ, heavy ball 2(1+β)/λ, Nesterov αλ = (2+2β)/(1+2β) at the limit."""
    lam = 7.0
    limit = map.stability_limit(flow, lam)
    assert _spectral_radius(map(flow, 0.999 * limit), lam) < 1.0
    assert _spectral_radius(map(flow, 1.001 * limit), lam) > 1.0
    hp = map(flow, limit).hyperparams
    if isinstance(map, maps.GradientDescent):
        assert limit == pytest.approx(2 / lam, rel=1e-15)
    elif isinstance(map, maps.FixedMomentum):
        assert limit == pytest.approx(2 * (1 + 0.6) / lam, rel=1e-15)
    elif isinstance(map, maps.Lookahead) and map.lookahead == 1.0:
        # the limit is a root of numpy.roots' cubic: a few ulps of the closed form
        beta = float(hp["momentum"])
        assert float(hp["learning_rate"]) * lam == pytest.approx(
            (2 + 2 * beta) / (1 + 2 * beta), rel=1e-12
        )


def test_stability_limit_needs_one_concrete_curvature_and_flow():
    """A batched λ or flow, or a traced λ, raised TypeError/TracerArrayConversionError from
    `float()`; now a ValueError naming the argument."""
    hb = flows.HeavyBall(1.0)
    with pytest.raises(ValueError, match=r"lambda_max must be a scalar .* shape \(2,\)"):
        maps.Leapfrog().stability_limit(hb, jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"HeavyBall.damping must be a scalar"):
        maps.NaiveEuler().stability_limit(flows.HeavyBall(jnp.array([1.0, 2.0])), 4.0)
    with pytest.raises(ValueError, match=r"RescaledGradientFlow.momentum must be a scalar"):
        maps.FixedMomentum().stability_limit(flows.RescaledGradientFlow(jnp.array([0.1, 0.5])), 4.0)
    with pytest.raises(ValueError, match="lambda_max must be a concrete number"):
        jax.jit(lambda lam: maps.ConformalEuler().stability_limit(hb, lam))(4.0)


def test_implicit_midpoint_limit_of_a_float32_curvature_is_computed_in_float64():
    """`sqrt(2 / positive(lam))` kept a float32 λ in float32: 0.7071067690849304 for λ = 4
    (1.7e-8 off); every other map converts λ to a Python float first."""
    assert maps.ImplicitMidpoint().stability_limit(flows.HeavyBall(1.0), np.float32(4.0)) == (
        np.sqrt(2.0) / 2.0
    )


def test_map_options_are_validated_at_construction():
    """`Lookahead(-1.0)` or `Lookahead(nan)` made a Discretization (the transform refused it
    only at the first step) and a stability limit; `Leapfrog(half_step="no")` was truthy
    (half-step start, order 2) and `half_step=0` falsy."""
    for bad in (-1.0, float("nan"), "a"):
        with pytest.raises(ValueError, match="lookahead must be"):
            maps.Lookahead(bad)
    for cls in (maps.Leapfrog, maps.ConformalEuler):
        for bad in ("no", 0, None):
            with pytest.raises(ValueError, match="half_step must be True or False"):
                cls(half_step=bad)
    assert maps.Leapfrog(half_step=False).order == 1.0 and maps.Leapfrog().order == 2.0


def test_measure_stability_limit_validates_its_arguments():
    """A reversed bracket returned (nan, 3.0) (its first z unstable), a fractional grid a
    TypeError, a negative bracket a message about `step_size`."""
    args = (maps.GradientDescent(), flows.GradientFlow(), 4.0)
    with pytest.raises(ValueError, match=r"bracket must be \(lo, hi\) with 0 < lo < hi"):
        maps.measure_stability_limit(*args, num_steps=10, grid=3, rounds=1, bracket=(3.0, 0.05))
    with pytest.raises(ValueError, match="bracket must be > 0"):
        maps.measure_stability_limit(*args, num_steps=10, grid=3, rounds=1, bracket=(-1.0, 3.0))
    with pytest.raises(ValueError, match="grid must be a positive integer"):
        maps.measure_stability_limit(*args, num_steps=10, grid=2.5, rounds=1)
    with pytest.raises(ValueError, match="grid must be an integer >= 2"):
        maps.measure_stability_limit(*args, num_steps=10, grid=1, rounds=1)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 4"):
        maps.measure_stability_limit(*args, num_steps=3, grid=2, rounds=1)
    with pytest.raises(ValueError, match="lambda_max must be > 0"):
        maps.measure_stability_limit(
            maps.GradientDescent(),
            flows.GradientFlow(),
            float("nan"),
            num_steps=4,
            grid=2,
            rounds=1,
        )


def test_rmsprop_orbit_formulas_refuse_what_has_no_orbit():
    """A zero or negative eigenvalue gave a distance (with a divide warning), a negative ε a
    larger one than ε = 0."""
    with pytest.raises(ValueError, match="eigenvalues must be > 0"):
        maps.rmsprop_orbit_distance(0.1, 1e-8, [0.0, 2.0])
    with pytest.raises(ValueError, match="eps must be >= 0"):
        maps.rmsprop_orbit_distance(0.1, -1.0, [1.0, 2.0])
    with pytest.raises(ValueError, match="gamma must be > 0"):
        maps.rmsprop_crossover_eps(-0.1, 2.0)


@pytest.mark.parametrize(
    "map, flow",
    [
        (maps.NaiveEuler(), flows.HeavyBall(0.5)),
        (maps.NAG(), flows.NesterovODE()),
        (maps.Adam(), flows.AdamFlow(0.5, 0.25)),
    ],
    ids=lambda x: type(x).__name__,
)
def test_integer_step_sizes_are_floats(map, flow):
    """`np.int64(1)` or an integer sweep `[1, 2]` raised a strict-promotion error inside the
    map (`1 - a h`, `sqrt(h)`); now the same run as the float step sizes."""
    problem = problems.quadratic(jnp.array([0.1, 0.3]))
    for h in (np.int64(1), np.array([1, 2])):
        ints = dynopt.run(map(flow, h), problem, 3)
        floats = dynopt.run(map(flow, np.asarray(h, float)), problem, 3)
        np.testing.assert_array_equal(ints.params, floats.params)


@pytest.mark.parametrize(
    "map, flow",
    [
        (maps.NaiveEuler(), flows.HeavyBall(0.0)),
        (maps.FixedMomentum(), flows.RescaledGradientFlow(0.5)),
        (maps.Lookahead(1.0), flows.HeavyBall(0.3)),
    ],
    ids=lambda x: type(x).__name__,
)
def test_measured_stability_bracket_holds_the_closed_form(map, flow):
    """The criterion |x_N| > |x_0| read a stable run whose transient exceeds |x_0| as unstable:
    undamped naive Euler (an orbit of amplitude > 1) measured [1.528, 1.529] for the exact
    z = 2; the slow-manifold start (first step 2.6 |x_0|) and Nesterov's look-ahead missed by
    0.21 and 0.13 bracket widths. Envelope growth brackets all three (width 3e-4 here)."""
    lam = 7.0
    lo, hi = maps.measure_stability_limit(map, flow, lam, num_steps=2000, grid=11, rounds=4)
    z = map.stability_limit(flow, lam) * np.sqrt(lam)
    assert lo <= z <= hi and hi - lo < 5e-4, (lo, z, hi)


def test_a_flow_the_map_cannot_read_is_named():
    """`Leapfrog()(GradientFlow(), h)` raised "'GradientFlow' object has no attribute
    'damping'" from inside the map (and its stability limit the same)."""
    with pytest.raises(ValueError, match=r"Leapfrog cannot discretize a GradientFlow: .*`damping`"):
        maps.Leapfrog()(flows.GradientFlow(), 0.1)
    with pytest.raises(ValueError, match=r"AdamW cannot discretize a AdamFlow: .*`weight_decay`"):
        maps.AdamW()(flows.AdamFlow(1.0, 1.0), 0.1)
    with pytest.raises(ValueError, match=r"reads the flow's `momentum`"):
        maps.FixedMomentum().stability_limit(flows.GradientFlow(), 4.0)


def test_a_map_that_reads_no_field_refuses_another_maps_flow():
    """`GradientDescent()(HeavyBall(1.0), h)` was plain GD (it reads nothing of its flow, so no
    AttributeError): a run "of heavy ball" that followed gradient flow, and the stability limit
    2/λ for it. Its own flows, and flows without a default map (a user's), are taken."""
    with pytest.raises(
        ValueError, match=r"GradientDescent cannot discretize a HeavyBall: .*Leapfrog"
    ):
        maps.GradientDescent()(flows.HeavyBall(1.0), 0.1)
    with pytest.raises(ValueError, match=r"GradientDescent cannot discretize a HeavyBall"):
        maps.GradientDescent().stability_limit(flows.HeavyBall(1.0), 4.0)
    with pytest.raises(
        ValueError, match=r"Sign cannot discretize a GradientFlow: .*GradientDescent"
    ):
        maps.Sign()(flows.GradientFlow(), 0.1)
    with pytest.raises(ValueError, match=r"GradientDescent cannot discretize a SignFlow"):
        maps.GradientDescent()(flows.SignFlow(1e-3), 0.1)
    assert maps.GradientDescent()(flows.ModifiedGradientFlow(0.1), 0.1).hyperparams
    assert maps.Sign()(flows.SignFlow(1e-3), 0.1).hyperparams

    class UserFlow(flows.AbstractFlow):
        def init(self, params):
            return params

        def vector_field(self, t, state, problem):
            return jax.tree.map(jnp.negative, jax.grad(problem.loss)(state))

        def params(self, state):
            return state

        def discretize(self, step_size):
            return maps.GradientDescent()(self, step_size)

    assert UserFlow().discretize(0.1).hyperparams


def test_a_bracket_past_the_maps_step_sizes_is_named():
    # NaiveEuler needs a h <= 1 (momentum 1 - a h >= 0): with a = 4 on lambda = 1 the default
    # bracket's z = 3 is h = 3 > 1/4; the error named step_size, which the caller never chose.
    with pytest.raises(ValueError, match=r"bracket \(0.05, 3\) reaches step sizes"):
        maps.measure_stability_limit(
            maps.NaiveEuler(), flows.HeavyBall(4.0), 1.0, num_steps=100, grid=5, rounds=1
        )
