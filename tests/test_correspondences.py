"""The battery generated from `dynopt.correspondences.REGISTRY`: every row is tested for

- identity with its optax baseline (iterates of `run` vs a hand-written `lax.scan` of the raw
  optax transform, float64, from the map's initial state) to 1e-12;
- its claimed order (slope of log error against log Δt) within ±0.1 on each of its problems;
- optax conformance: float32 kept, no retrace for new step sizes, inside `optax.chain`, under
  `optax.inject_hyperparams`;
- the inverse map (hypothesis round trip);
- the Lyapunov identity where the flow declares a closed-form `loss_rate`;
- zero retraces for new flow hyper-parameter values;

and every row of `AUTOMATIC` (flows derived by `modified_flow`) for
- identity of its discretization with the optimizer as the user wrote it (to 1e-13);
- its order p on each measurement: both local slopes and the fit within 0.15 of p.
"""

import inspect

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

import dynopt
from dynopt import lyapunov
from dynopt.correspondences import AUTOMATIC, REGISTRY
from dynopt.flows import AbstractFlow

from .helpers import TraceCounter, tree_max_abs_diff


ROWS = {row.name: row for row in REGISTRY}
WITH_BASELINE = [name for name, row in ROWS.items() if row.baseline is not None]


def _scan_baseline(tx, problem, state, num_steps):
    """The loop a user writes around a raw optax transform (value and loss passed for Polyak,
    the gradient function for USAM)."""

    def step(carry, _):
        params, state = carry
        value, grad = jax.value_and_grad(problem.loss)(params)
        updates, state = tx.update(
            grad, state, params, value=value, value_fn=problem.loss, grad_fn=problem.grad
        )
        params = optax.apply_updates(params, updates)
        return (params, state), params

    _, params = jax.lax.scan(step, (problem.params0, state), None, length=num_steps)
    return params


@pytest.mark.parametrize("name", WITH_BASELINE)
def test_identity_with_the_optax_baseline(name):
    row = ROWS[name]
    m = row.measurements[0]
    problem, h, n = m.problem(), m.step_sizes[-1], 40
    disc = row.discretization(h)
    ours = dynopt.run(disc, problem, n).params
    tx = optax.with_extra_args_support(row.baseline(h))
    # The map's initial state where it declares one (half-step trace, slow manifold).
    state = disc.init(problem.params0, problem) if row.map.init_fn else tx.init(problem.params0)
    with jax.numpy_dtype_promotion("standard"):  # raw optax (Adam's bias correction) needs it
        theirs = eqx.filter_jit(lambda s: _scan_baseline(tx, problem, s, n))(state)
    diff = tree_max_abs_diff(jax.tree.map(lambda x: x[1:], ours), theirs)
    assert diff <= 1e-12, (name, diff)


def _errors_against_closed_form(row, flow, problem, exact, m):
    """Max error over the run against the closed form `exact(t)` (a state): one batched run and
    one compiled comparison for all step sizes (each run's points past its horizon masked)."""
    hs = jnp.asarray(m.step_sizes)
    disc = row.map(flow, hs)
    dts = np.asarray(disc.dt)
    ns = np.rint(m.t1 / dts).astype(int)
    traj = dynopt.run(disc, problem, int(ns.max()))
    flat = lambda p: jax.flatten_util.ravel_pytree(p)[0]

    @jax.jit
    def max_errors(params, dts, ns):
        k = jnp.arange(jax.tree.leaves(params)[0].shape[1])[None, :]  # saved points
        ts = dts[:, None] * k.astype(dts.dtype)  # t = k dt, as the run's own times
        ref = jax.vmap(jax.vmap(lambda t: flat(flow.params(exact(t)))))(ts)
        run = jax.vmap(jax.vmap(flat))(params)
        err = jnp.linalg.norm(run - ref, axis=-1)
        return jnp.max(jnp.where(k <= ns[:, None], err, 0.0), axis=1)

    return dts, np.asarray(max_errors(traj.params, jnp.asarray(dts), jnp.asarray(ns)))


@pytest.mark.parametrize("name", list(ROWS))
def test_claimed_order(name):
    row = ROWS[name]
    assert len(row.measurements) >= 2
    for m in row.measurements:
        problem, flow = m.problem(), row.flow()
        exact = flow.closed_form(problem) if row.reference is None else None
        if exact is not None:
            dts, errs = _errors_against_closed_form(row, flow, problem, exact, m)
        else:
            c = dynopt.compare(
                flow, problem, m.step_sizes, m.t1, map=row.map, reference=row.reference
            )
            assert c.verdict == "asymptotic", (name, problem.name, c.reason)
            dts, errs = np.asarray(c.dts), np.asarray(c.errors)
        assert np.all(np.isfinite(errs)) and np.all(errs > 0), (name, problem.name, errs)
        slope = np.polyfit(np.log(dts), np.log(errs), 1)[0]
        assert abs(slope - row.order) <= 0.1, (name, problem.name, slope, errs)


def _bowl(p):
    return jnp.sum((p["a"] - 1.0) ** 2) + 2.0 * jnp.sum(p["b"] ** 2) + 0.1


@pytest.mark.parametrize("name", list(ROWS))
def test_optax_conformance(name):
    row = ROWS[name]
    h = row.measurements[0].step_sizes[0]
    counter = TraceCounter(_bowl)
    p32 = dynopt.Problem(
        counter, {"a": jnp.zeros((2, 2), jnp.float32), "b": jnp.ones(3, jnp.float32)}
    )
    # Pytree params, float32 kept, no recompilation for a new step size.
    traj = dynopt.run(row.discretization(h), p32, 20, every=20)
    first = counter.count
    dynopt.run(row.discretization(0.9 * h), p32, 20, every=20)
    assert counter.count == first, name
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(traj.params))
    assert np.all(np.isfinite(np.asarray(traj.loss)))
    # Inside optax.chain and under inject_hyperparams: the same iterates (float64).
    p64 = dynopt.Problem(_bowl, {"a": jnp.zeros((2, 2)), "b": jnp.ones(3)})
    d = row.discretization(h)
    # From the transform's own initial state on both sides (a declared init_fn is the map's).
    disc = dynopt.Discretization(d.factory, d.hyperparams, d.dt, d.options)
    a = dynopt.run(disc, p64, 5).final_params
    kwargs = {**disc.hyperparams, **dict(disc.options)}
    # Injected: the map's numeric hyper-parameters; static: the factory's other arguments.
    names = inspect.signature(disc.factory).parameters
    static = tuple(k for k in names if k not in disc.hyperparams)
    injected = optax.inject_hyperparams(disc.factory, static_args=static)(**kwargs)
    b = dynopt.run(optax.chain(optax.identity(), injected), p64, 5).final_params
    assert tree_max_abs_diff(a, b) <= 1e-12, name


def _scaled(flow: AbstractFlow, factor: float) -> AbstractFlow:
    """The flow with every floating hyper-parameter leaf multiplied by `factor` (validated)."""
    leaves, treedef = jax.tree.flatten(flow)
    return jax.tree.unflatten(treedef, [x * factor for x in leaves])


@pytest.mark.parametrize("name", list(ROWS))
@settings(max_examples=10, deadline=None)
@given(step_factor=st.floats(0.2, 1.0), leaf_factor=st.floats(0.8, 1.0))
def test_inverse_map_round_trip(name, step_factor, leaf_factor):
    row = ROWS[name]
    try:
        inverse = row.map.inverse
        inspect.signature(inverse).bind  # noqa: B018
    except NotImplementedError:
        pytest.skip("no inverse")
    flow = _scaled(row.flow(), leaf_factor)
    h = jnp.asarray(row.measurements[0].step_sizes[0] * step_factor)
    disc = row.map(flow, h)
    kwargs = {**disc.hyperparams, **dict(disc.options)}
    accepted = inspect.signature(inverse).parameters
    flow2, h2 = inverse(**{k: v for k, v in kwargs.items() if k in accepted})
    assert np.isclose(float(h2), float(h), rtol=1e-12)
    disc2 = row.map(flow2, h2)
    for k, v in disc.hyperparams.items():
        assert np.allclose(disc2.hyperparams[k], v, rtol=1e-10, atol=1e-15), (name, k)
    assert np.isclose(float(disc2.dt), float(disc.dt), rtol=1e-12)


def _declares_loss_rate(flow) -> bool:
    return type(flow).loss_rate is not AbstractFlow.loss_rate


@pytest.mark.parametrize("name", [n for n, row in ROWS.items() if _declares_loss_rate(row.flow())])
def test_lyapunov_identity(name):
    """The declared closed-form dL/dt against the derivative of L along the diffrax solution."""
    row = ROWS[name]
    m = row.measurements[0]
    problem, flow = m.problem(), row.flow()
    ts = jnp.linspace(0.0, m.t1 / 4, 21)
    ref = dynopt.solve(flow, problem, ts)
    assert float(lyapunov.identity_deviation(ref, problem, ts)) < 1e-6, name


@pytest.mark.parametrize("name", list(ROWS))
def test_no_retrace_for_new_flow_hyperparameters(name):
    row = ROWS[name]
    problem = row.measurements[0].problem()
    h = row.measurements[0].step_sizes[0]
    traces = []

    @eqx.filter_jit
    def field_and_step(flow, state):
        traces.append(1)
        disc = row.map(flow, h)
        g = problem.grad(problem.params0)
        opt_state = disc.transform.init(problem.params0)
        updates, _ = disc.transform.update(
            g,
            opt_state,
            problem.params0,
            value=problem.loss(problem.params0),
            value_fn=problem.loss,
            grad_fn=problem.grad,
        )
        return flow.vector_field(0.1, state, problem), updates

    flow = row.flow()
    state = flow.init(problem.params0)
    for factor in (1.0, 0.9, 0.8):
        field_and_step(_scaled(flow, factor), state)
    assert len(traces) == 1, name


AUTO = {row.name: row for row in AUTOMATIC}


@pytest.mark.parametrize("name", list(AUTO))
def test_automatic_identity_with_the_optimizer(name):
    """`flow.discretize(h)` is the user's optimizer: its iterates from the same initial state
    (the slow manifold in the fast regime) are a hand-written scan of the raw transform's."""
    row = AUTO[name]
    m = row.measurements[0]
    problem, h, n = m.problem(), m.step_sizes[-1], 30
    disc = row.discretization(h, max(m.orders))
    ours = dynopt.run(disc, problem, n).params
    tx = optax.with_extra_args_support(row.optimizer(h))
    state = disc.init(problem.params0, problem)
    with jax.numpy_dtype_promotion("standard"):  # raw optax (Adam's bias correction) needs it
        theirs = eqx.filter_jit(lambda s: _scan_baseline(tx, problem, s, n))(state)
    diff = tree_max_abs_diff(jax.tree.map(lambda x: x[1:], ours), theirs)
    assert diff <= 1e-13, (name, diff)


# One test per (row, problem, order) (xdist distributes them), one compiled `compare` program
# each: the step sizes are traced, so the three runs and the three order-p references share it.
# The cost is compilation (the program runs in ~0.1 s; compile ~70%, tracing ~25%): three step
# sizes (the fewest that give two local slopes to agree) and a short horizon (t1 = 0.4, 20-80
# steps) change nothing of it, nor does the reference tolerance.
AUTO_CASES = [
    pytest.param(name, i, p, id=f"{name}-{m.label}-p{p}")
    for name, row in AUTO.items()
    for i, m in enumerate(row.measurements)
    for p in m.orders
]


@pytest.mark.parametrize("name, index, p", AUTO_CASES)
def test_automatic_order(name, index, p):
    """The discrete run against the order-p automatic flow: global order p. Both local slopes
    (between consecutive step sizes) within 0.15 of p, not only the fit: the regime is
    asymptotic, not a pre-asymptotic fit that happens to land near p."""
    row = AUTO[name]
    cmp = row.compare(row.measurements[index], p)
    assert cmp.verdict == "asymptotic", cmp
    np.testing.assert_allclose(np.asarray(cmp.local_orders), p, atol=0.15, err_msg=str(cmp))
    assert abs(float(cmp.order) - p) < 0.15, cmp
