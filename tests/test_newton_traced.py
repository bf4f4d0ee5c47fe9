"""`NewtonPreconditioner`'s numbers (damping, CG tolerances) are traced array leaves: a new
value reuses the compiled `run` and `solve`, a batch of dampings is `vmap`ped as a loop runs
them, a bad traced value is an error inside `jit`; the numbers themselves are those of damped
Newton written in numpy."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import flows, maps, problems, transforms
from dynopt.correspondences import (
    Correspondence,
    flow_retraces,
    inverse_round_trip,
    Measurement,
    optax_conformance,
)


def _newton(damping, solver="cholesky", **tolerances):
    return flows.PreconditionedFlow(flows.NewtonPreconditioner(damping, solver, **tolerances))


class _Counted:
    """A loss that counts its calls: JAX calls it once per trace, a compiled program never."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x):
        self.calls += 1
        return self.fn(x)


def _rosenbrock_newton_numpy(theta, h, mu, num_steps):
    r"""$\theta_{k+1} = \theta_k - h(\nabla^2 L + \mu I)^{-1}\nabla L$ on the 2-D Rosenbrock
    function $(1 - x)^2 + 100(y - x^2)^2$, its gradient and Hessian by hand (float64 numpy)."""
    theta = np.array(theta, np.float64)
    out = [theta.copy()]
    for _ in range(num_steps):
        x, y = theta
        g = np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
        hess = np.array([[2 - 400 * (y - x * x) + 800 * x * x, -400 * x], [-400 * x, 200.0]])
        theta = theta - h * np.linalg.solve(hess + mu * np.eye(2), g)
        out.append(theta.copy())
    return np.stack(out)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_a_new_damping_reuses_the_compiled_run_and_solve(solver):
    """Two dampings (and, for CG, two tolerances): one trace of the loss each for `run` and
    `solve`. The numbers were static floats: each new value compiled both anew."""
    base = problems.rosenbrock()
    loss = _Counted(base.loss)
    problem = dynopt.Problem(loss, base.params0)
    settings = [(0.5, 1e-12), (2.0, 1e-11)] if solver == "cg" else [(0.5, 1e-12), (2.0, 1e-12)]
    counts = []
    for mu, rtol in settings:
        dynopt.run(_newton(mu, solver, rtol=rtol).discretize(0.1), problem, 10)
        counts.append(loss.calls)
    assert counts[0] > 0 and counts[1] == counts[0], counts
    ts = jnp.linspace(0.0, 1.0, 5)
    counts = []
    for mu, rtol in settings:
        dynopt.solve(_newton(mu, solver, rtol=rtol), problem, ts)
        counts.append(loss.calls)
    assert counts[1] == counts[0], counts


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_damped_newton_iterates_are_numpys(solver):
    """`run` of the discretization against damped Newton written in numpy with the Hessian by
    hand, for dampings sharing one compiled program (float64; CG at rtol 1e-12 on a 2x2 system
    is exact after two steps)."""
    theta0, h, n = np.array([-1.2, 1.0]), 0.25, 30
    problem = problems.rosenbrock(params0=theta0)
    for mu in (0.0, 0.3, 5.0):
        traj = dynopt.run(_newton(mu, solver).discretize(h), problem, n)
        expected = _rosenbrock_newton_numpy(theta0, h, mu, n)
        np.testing.assert_allclose(np.asarray(traj.params), expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_a_batch_of_dampings_vmaps_as_a_loop_runs_them(solver):
    """`jax.vmap` over the damping (the flow built inside) gives the iterates a Python loop
    gives, one damping at a time (to rounding: the batched solves round on their own). The
    damping was a static float: a traced one was refused."""
    problem = problems.rosenbrock()
    mus = jnp.array([0.0, 0.1, 1.0, 10.0])

    def final(mu):
        return dynopt.run(_newton(mu, solver).discretize(0.2), problem, 25).final_params

    batched = np.asarray(jax.vmap(final)(mus))
    looped = np.stack([np.asarray(final(mu)) for mu in [0.0, 0.1, 1.0, 10.0]])
    assert np.all(np.isfinite(looped)) and len(np.unique(looped[:, 0])) == 4
    np.testing.assert_allclose(batched, looped, rtol=1e-13, atol=1e-15)


def test_a_bad_traced_damping_is_an_error_inside_jit():
    """A negative or NaN damping (or CG tolerance) traced under `jit`/`vmap` is refused by the
    compiled program, naming it and the range; a good one runs."""
    problem = problems.rosenbrock()

    @eqx.filter_jit
    def final(mu, rtol=1e-12, atol=1e-14):
        flow = _newton(mu, "cg", rtol=rtol, atol=atol)
        return dynopt.run(flow.discretize(0.1), problem, 5).final_params

    assert np.all(np.isfinite(np.asarray(final(jnp.asarray(0.5)))))
    for bad in (-1.0, np.nan):
        with pytest.raises(Exception, match=r"damping must be >= 0 and finite"):
            jax.block_until_ready(final(jnp.asarray(bad)))
    with pytest.raises(Exception, match=r"damping must be >= 0 and finite"):
        jax.block_until_ready(jax.vmap(final)(jnp.array([0.5, -0.5])))
    with pytest.raises(Exception, match=r"rtol must be >= 0 and finite"):
        jax.block_until_ready(final(jnp.asarray(0.5), jnp.asarray(np.nan)))
    with pytest.raises(Exception, match="rtol and atol must not both be 0"):
        jax.block_until_ready(final(jnp.asarray(0.5), jnp.asarray(0.0), jnp.asarray(0.0)))


def test_the_tolerances_are_validated_on_construction():
    """Concrete values: a `ValueError` naming the number and its range; CG without any
    tolerance is refused (Cholesky ignores them)."""
    with pytest.raises(ValueError, match=r"damping must be >= 0 and finite, got -0.1"):
        flows.NewtonPreconditioner(-0.1)
    with pytest.raises(ValueError, match="rtol and atol must not both be 0"):
        flows.NewtonPreconditioner(0.0, "cg", rtol=0.0, atol=0.0)
    flows.NewtonPreconditioner(0.0, "cholesky", rtol=0.0, atol=0.0)
    flows.NewtonPreconditioner(0.0, "cg", rtol=1e-10, atol=0.0)


def test_float32_run_with_a_float64_traced_damping_stays_float32():
    """Under strict promotion a float64 damping traced by `vmap` meets float32 parameters:
    it computes in their precision (as the Python float it replaces did), the run stays
    float32 and matches the float64 run to float32 rounding."""
    p64 = problems.quadratic([1.0, 4.0], rotate=True)
    p32 = dynopt.Problem(p64.loss_fn, p64.params0.astype(jnp.float32))

    def final(mu, problem):
        return dynopt.run(_newton(mu, "cg").discretize(0.5), problem, 10).final_params

    mus = jnp.array([0.0, 1.0])
    out32 = jax.vmap(lambda mu: final(mu, p32))(mus)
    out64 = jax.vmap(lambda mu: final(mu, p64))(mus)
    assert out32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out32), np.asarray(out64), rtol=1e-5, atol=1e-6)


def _one_mode():
    return problems.quadratic([2.0])


def _two_modes():
    return problems.quadratic([0.5, 3.0], rotate=True)


NEWTON_ROW = Correspondence(
    "damped_newton",
    lambda: _newton(0.5),
    maps.PreconditionedStep(),
    None,
    (Measurement(_one_mode, 1.0, (0.1, 0.05)), Measurement(_two_modes, 1.0, (0.1, 0.05))),
)


def test_the_battery_takes_a_newton_row():
    """The battery's optax checks on damped Newton: no retrace for new flow numbers (it
    scales the damping and tolerances), float32 kept, the same iterates inside `optax.chain`
    under `optax.inject_hyperparams` (the numbers injected), and the inverse map recovers the
    flow and step."""
    assert flow_retraces(NEWTON_ROW) == 0
    c = optax_conformance(NEWTON_ROW)
    assert c.retraces == 0 and c.float32_kept and c.finite, c
    assert c.chain_error <= 1e-12, c
    r = inverse_round_trip(NEWTON_ROW, 0.07, scale=0.9)
    assert r.step_size_error <= 1e-12 and r.dt_error <= 1e-12, r
    assert r.hyperparameter_error <= 1e-10, r


def _diagonal(params):
    return jax.tree.map(lambda x: 1.0 / (1.0 + x * x), params)


def _scaled_gradient(params, v, loss_fn=None):
    return jax.tree.map(lambda x: 0.5 * x, v)


class _Held(eqx.Module):
    scale: jax.Array

    def __call__(self, params, v, loss_fn=None):
        return jax.tree.map(lambda x: self.scale * x, v)


def test_a_users_preconditioner_is_static_as_before():
    """A module-level function and a `DiagonalPreconditioner` stay static options, whole, with
    the learning rate the only hyper-parameter; an `eqx.Module` holding a scalar array has it
    as a traced hyper-parameter, as a `NewtonPreconditioner`'s numbers (it was refused as not
    hashable; tests/test_carried_preconditioner_module.py)."""
    for P in (_scaled_gradient, flows.DiagonalPreconditioner(_diagonal)):
        disc = flows.PreconditionedFlow(P).discretize(0.1)
        assert list(disc.hyperparams) == ["learning_rate"]
        assert disc.options == (("precondition", P),)
    disc = flows.PreconditionedFlow(_Held(jnp.asarray(2.0))).discretize(0.1)
    assert list(disc.hyperparams) == ["learning_rate", "precondition.scale"]
    assert disc.options == (("precondition", _Held(None)),)


def test_a_flow_with_a_users_function_is_a_pytree_of_arrays_only():
    """With `P` a pytree field, a user's function became a leaf of the flow, and plain
    `jax.jit` over the flow failed ("not a valid JAX type"): it is held static now."""
    flow = flows.PreconditionedFlow(_scaled_gradient)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(flow))
    v = jnp.arange(3.0)
    out = jax.jit(lambda fl, x: fl.P(x, x, None))(flow, v)
    np.testing.assert_array_equal(out, 0.5 * v)
    assert flows.PreconditionedFlow(_scaled_gradient) == flow  # (an inverse map's round trip)


def test_the_transform_takes_a_traced_newton_preconditioner():
    """`transforms.preconditioned_sgd` with a `NewtonPreconditioner` built inside `jit`: one
    compiled step for two dampings, each the damped Newton step."""
    problem = problems.quadratic([1.0, 4.0], rotate=True)
    hess = np.asarray(problem.hessian)
    theta = np.asarray(problem.params0)
    traces = []

    @jax.jit
    def step(mu):
        traces.append(1)
        tx = transforms.preconditioned_sgd(0.5, flows.NewtonPreconditioner(mu))
        g = problem.grad(problem.params0)
        updates, _ = tx.update(g, tx.init(problem.params0), problem.params0, value_fn=problem.loss)
        return updates

    for mu in (0.0, 2.0):
        grad = hess @ (theta - np.asarray(problem.minimizer))
        expected = -0.5 * np.linalg.solve(hess + mu * np.eye(2), grad)
        np.testing.assert_allclose(np.asarray(step(mu)), expected, rtol=1e-12)
    assert len(traces) == 1
