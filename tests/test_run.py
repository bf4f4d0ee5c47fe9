import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import flows, problems
from dynopt._run import DIVERGENCE_FACTOR, divergence_limit, make_step

from .helpers import check_keyed_runs, nan_minibatch_problem, TraceCounter, tree_max_abs_diff


def test_run_is_deterministic_given_key_and_depends_on_it():
    p = problems.linear_regression(num_samples=64, dim=4, batch_size=8)
    disc = flows.GradientFlow().discretize(0.05)
    check_keyed_runs(disc, p, 50, jax.random.key(3), jax.random.key(4))


def test_stochastic_run_matches_manual_optax_loop():
    p = problems.logistic_regression(num_samples=30, dim=3, batch_size=4)
    h, n, key = 0.2, 12, jax.random.key(9)
    traj = dynopt.run(flows.GradientFlow().discretize(h), p, n, key=key)
    params = p.params0
    for k in range(n):
        g = jax.grad(p.stochastic_loss)(params, jax.random.fold_in(key, k))
        params = params - h * g
    np.testing.assert_allclose(traj.params[-1], params, rtol=1e-13, atol=1e-15)


def test_every_thins_saving():
    p = problems.rosenbrock()
    disc = flows.GradientFlow().discretize(1e-3)
    full = dynopt.run(disc, p, 60)
    thin = dynopt.run(disc, p, 60, every=20)
    np.testing.assert_array_equal(thin.params, full.params[::20])
    np.testing.assert_allclose(thin.ts, [0.0, 0.02, 0.04, 0.06], rtol=1e-15)
    assert thin.params.shape == (4, 2) and thin.loss.shape == (4,)


def test_divergence_detected_at_stability_boundary():
    lam_max = 10.0
    p = problems.quadratic([0.5, 2.0, lam_max], rotate=True)
    n = 20_000
    boundary = 2.0 / lam_max
    below = dynopt.run(flows.GradientFlow().discretize(0.98 * boundary), p, n, every=1000)
    above = dynopt.run(flows.GradientFlow().discretize(1.02 * boundary), p, n, every=1000)
    assert int(below.diverged_at) == -1 and bool(jnp.all(jnp.isfinite(below.loss)))
    assert int(above.diverged_at) > 0
    # Predicted step: the top mode grows by |1 - h lam| per step, the loss by its square, until
    # the loss (1/2) lam c^2 |1 - h lam|^(2k) passes the growth threshold L0 + 1e8 max(L0, 1).
    q = np.linalg.eigh(np.asarray(p.hessian))[1][:, -1]
    c = float(q @ np.asarray(p.params0))
    growth = abs(1 - 1.02 * boundary * lam_max)
    loss0 = float(p.loss(p.params0))
    threshold = loss0 + DIVERGENCE_FACTOR * max(abs(loss0), 1.0)
    k_pred = (np.log(threshold) - np.log(0.5 * lam_max * c**2)) / (2 * np.log(growth))
    assert abs(int(above.diverged_at) - k_pred) <= 2
    # No NaN flood: the run keeps its last finite iterate.
    assert bool(jnp.all(jnp.isfinite(above.params)))


def _per_step_checked(disc, problem, num_steps, key=None):
    """The specification of `run`'s divergence handling: `make_step` (check every step) in a
    plain scan, every iterate saved."""
    step = make_step(disc.transform, problem, key, divergence_limit(problem.loss(problem.params0)))
    carry0 = (problem.params0, disc.init(problem.params0, problem), jnp.asarray(-1), 0)

    def body(c, _):
        c = step(c)
        return c, c[0]

    carry, saved = jax.lax.scan(body, carry0, None, length=num_steps)
    params = jnp.concatenate([problem.params0[None], saved])
    return params, jax.vmap(problem.loss)(params), carry[2]


@pytest.mark.parametrize("every", [1, 7, 50])
def test_block_checks_equal_per_step_checks(every):
    """`run` checks once per saved block and replays a failing block step by step: the same
    `diverged_at`, frozen iterates and losses as a check at every step (the loss passes the
    growth threshold mid-block); the run that stays finite
    is not touched by its batch-mates' replays."""
    p = problems.quadratic([1.0, 10.0, 100.0], rotate=True)
    hs = [0.019, 0.05, 0.1]  # stable; the loss overflows after ~256 steps; after ~160
    n = 350
    batch = dynopt.run(flows.GradientFlow().discretize(jnp.asarray(hs)), p, n, every=every)
    for i, h in enumerate(hs):
        params, loss, div = _per_step_checked(flows.GradientFlow().discretize(h), p, n)
        assert int(batch.diverged_at[i]) == int(div)
        np.testing.assert_array_equal(batch.params[i], params[::every])
        # The loss is a reduction, summed in whatever order each compiled program picks: equal
        # to rounding (1-ulp differences seen with XLA's optimizations off), not bit for bit.
        np.testing.assert_allclose(batch.loss[i], loss[::every], rtol=1e-14, atol=0.0)
        single = dynopt.run(flows.GradientFlow().discretize(h), p, n, every=every)
        np.testing.assert_array_equal(single.params, batch.params[i])
    div = [int(d) for d in batch.diverged_at]
    assert div[0] == -1 and div[1] > div[2] > 0
    # The same under an outer `vmap` of single runs (the decision to replay stays a loop).
    outer = jax.vmap(lambda h: dynopt.run(flows.GradientFlow().discretize(h), p, n, every=every))(
        jnp.asarray(hs)
    )
    np.testing.assert_array_equal(outer.params, batch.params)
    np.testing.assert_array_equal(outer.diverged_at, batch.diverged_at)


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_batch_size_chunks_give_the_same_runs(batch_size):
    """`batch_size` runs a sweep in chunks (padded, then trimmed): the same trajectories and
    divergence steps as one vmap over all runs, for step sizes × seeds too."""
    p = problems.quadratic([1.0, 10.0, 100.0], rotate=True)
    disc = flows.GradientFlow().discretize(jnp.asarray([0.005, 0.01, 0.019, 0.05, 0.1]))
    whole = dynopt.run(disc, p, 300, every=30)
    chunked = dynopt.run(disc, p, 300, every=30, batch_size=batch_size)
    np.testing.assert_allclose(chunked.params, whole.params, rtol=1e-13, atol=0)
    np.testing.assert_array_equal(chunked.diverged_at, whole.diverged_at)
    assert int(whole.diverged_at[-1]) > 0
    s = problems.linear_regression(64, 3, batch_size=8)
    keys = jax.random.split(jax.random.key(1), 3)
    sd = flows.GradientFlow().discretize(jnp.asarray([0.01, 0.02]))
    a = dynopt.run(sd, s, 20, key=keys)
    b = dynopt.run(sd, s, 20, key=keys, batch_size=batch_size)
    assert b.params.shape == a.params.shape == (2, 3, 21, 3)
    np.testing.assert_allclose(b.params, a.params, rtol=1e-13, atol=1e-15)


def test_batch_size_of_a_single_run_is_an_error_not_a_minibatch_size():
    """`run`'s `batch_size` is a sweep's chunk size: on a single run it was silently ignored
    (even 10**6 on n = 256), while a finite-sum user may mean the minibatch size."""
    p = problems.linear_regression(256, 4, batch_size=32)
    key = jax.random.key(0)
    for tx in (optax.sgd(0.05), flows.GradientFlow().discretize(0.05)):
        for b in (1, 10**6):
            with pytest.raises(ValueError, match=r"chunk size of a sweep.*finite_sum\(\.\.\., "):
                dynopt.run(tx, p, 4, key=key, batch_size=b)
        with pytest.raises(ValueError, match="chunk size of a sweep"):
            dynopt.run(tx, p, 4, batch_size=2)
    # A sweep over seeds, step sizes or hyper-parameters alone still takes it.
    keys = jax.random.split(key, 3)
    a = dynopt.run(optax.sgd(0.05), p, 4, key=keys, batch_size=2)
    np.testing.assert_allclose(a.params, dynopt.run(optax.sgd(0.05), p, 4, key=keys).params,
                               rtol=1e-13, atol=1e-15)  # fmt: skip
    hb = flows.HeavyBall(damping=jnp.asarray([1.0, 2.0, 3.0])).discretize(0.05)
    b = dynopt.run(hb, p, 4, batch_size=2)
    np.testing.assert_allclose(b.params, dynopt.run(hb, p, 4).params, rtol=1e-13, atol=1e-15)


def test_batched_step_sizes_match_single_runs():
    p = problems.quadratic([1.0, 3.0], rotate=True)
    hs = jnp.array([0.1, 0.2, 0.3])
    batch = dynopt.run(flows.GradientFlow().discretize(hs), p, 30)
    assert batch.params.shape == (3, 31, 2) and batch.diverged_at.shape == (3,)
    for i, h in enumerate([0.1, 0.2, 0.3]):
        single = dynopt.run(flows.GradientFlow().discretize(h), p, 30)
        np.testing.assert_allclose(batch.params[i], single.params, rtol=1e-14)
        np.testing.assert_allclose(batch.ts[i], single.ts, rtol=1e-14)


def test_batched_keys():
    p = problems.linear_regression(num_samples=32, dim=2, batch_size=4)
    keys = jax.random.split(jax.random.key(0), 5)
    disc = flows.GradientFlow().discretize(jnp.array([0.01, 0.02]))
    traj = dynopt.run(disc, p, 10, key=keys)
    assert traj.params.shape == (2, 5, 11, 2)
    single = dynopt.run(flows.GradientFlow().discretize(0.02), p, 10, key=keys[3])
    np.testing.assert_allclose(traj.params[1, 3], single.params, rtol=1e-14)


def test_no_recompilation_for_new_step_sizes():
    counter = TraceCounter(lambda x: jnp.sum(x**4) + jnp.sum(x**2))
    p = dynopt.Problem(counter, jnp.array([1.0, -0.5]))
    dynopt.run(flows.GradientFlow().discretize(jnp.array([0.1, 0.2])), p, 20)
    traced = counter.count
    dynopt.run(flows.GradientFlow().discretize(jnp.array([0.05, 0.07])), p, 20)
    dynopt.run(flows.GradientFlow().discretize(0.3), p, 20)
    traced_single = counter.count
    dynopt.run(flows.GradientFlow().discretize(0.01), p, 20)
    assert counter.count == traced_single and traced_single > traced


def test_run_accepts_plain_optax_transform_and_pytree():
    def loss(params):
        return jnp.sum(params["a"] ** 2) + jnp.sum((params["b"] - 2.0) ** 2)

    p = dynopt.Problem(loss, {"a": jnp.ones((2, 2)), "b": jnp.zeros(3)})
    traj = dynopt.run(optax.sgd(0.1, momentum=0.9), p, 5)
    params, state, tx = (
        p.params0,
        optax.sgd(0.1, momentum=0.9).init(p.params0),
        optax.sgd(0.1, momentum=0.9),
    )
    for _ in range(5):
        u, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, u)
    assert tree_max_abs_diff(traj.final_params, params) < 1e-14
    np.testing.assert_array_equal(traj.ts, np.arange(6.0))


def test_float32_run_stays_float32():
    p = dynopt.Problem(lambda x: jnp.sum(x**2), jnp.ones(3, jnp.float32))
    traj = dynopt.run(flows.GradientFlow().discretize(0.1), p, 5)
    assert traj.params.dtype == jnp.float32


def test_run_bad_input():
    p = problems.rosenbrock()
    disc = flows.GradientFlow().discretize(0.001)
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        dynopt.run(disc, p, 0)
    with pytest.raises(ValueError, match="every must be a positive integer dividing"):
        dynopt.run(disc, p, 10, every=3)
    with pytest.raises(ValueError, match="batch_size must be a positive integer or None"):
        dynopt.run(disc, p, 10, batch_size=0)
    with pytest.raises(ValueError, match=r"problem must be a dynopt\.AbstractProblem"):
        dynopt.run(disc, p.loss, 10)
    with pytest.raises(ValueError, match="observe must be None or a function"):
        dynopt.run(disc, p, 10, observe=3)
    with pytest.raises(ValueError, match="no stochastic_loss_fn"):
        dynopt.run(disc, p, 10, key=jax.random.key(0))
    with pytest.raises(ValueError, match="transform must be"):
        dynopt.run(lambda g: g, p, 10)
    # optax.MultiSteps wraps a transformation: the message says how to get it.
    with pytest.raises(ValueError, match=r"got MultiSteps\. Pass its \.gradient_transformation"):
        dynopt.run(optax.MultiSteps(optax.sgd(0.1), 2), p, 10)


def _warm_start(disc, params, problem):
    # Heavy ball started on the slow manifold: trace = grad / (1 - momentum).
    g = problem.grad(params)
    return (optax.TraceState(trace=g / (1 - disc.hyperparams["momentum"])), optax.EmptyState())


def test_discretization_init_fn_sets_the_initial_state():
    p = problems.quadratic([1.0, 2.0])
    disc = dynopt.Discretization(
        optax.sgd, {"learning_rate": 0.1, "momentum": 0.5}, dt=0.1, init_fn=_warm_start
    )
    traj = dynopt.run(disc, p, 1)
    # First step from the warm state: trace = g + 0.5 * g / 0.5 = 2 g.
    np.testing.assert_allclose(traj.params[1], p.params0 - 0.1 * 2 * p.grad(p.params0), rtol=1e-14)
    plain = dynopt.run(dynopt.Discretization(optax.sgd, {"learning_rate": 0.1}, dt=0.1), p, 1)
    np.testing.assert_allclose(plain.params[1], p.params0 - 0.1 * p.grad(p.params0), rtol=1e-14)


def _extra_args_state(params):
    zeros = optax.tree.zeros_like(params)
    return dict(
        value=jnp.zeros(()), grad=zeros, grad_fn=zeros, value_fn=jnp.zeros(()), obj_fn=jnp.zeros(())
    )


def _record_extra_args(updates, state, params=None, *, value, grad, value_fn, obj_fn, grad_fn):
    seen = dict(
        value=value,
        grad=grad,
        grad_fn=grad_fn(params),
        value_fn=value_fn(params),
        obj_fn=obj_fn(params),
    )
    return optax.tree.scale(-0.1, updates), seen


def _opt_state(params, opt_state, problem):
    return opt_state


@pytest.mark.parametrize(
    "make",
    [
        optax.lbfgs,
        lambda: optax.chain(
            optax.sgd(1.0),
            optax.scale_by_backtracking_linesearch(max_backtracking_steps=15, store_grad=True),
        ),
    ],
)
def test_line_searches_run_and_match_optax_documented_loop(make):
    """optax's line searches hand every extra argument they do not consume (here dynopt's
    `grad_fn`) to `value_fn`, by name: `run` used to fail on `optax.lbfgs` with a TypeError. Its
    iterates are those of optax's documented loop (`value_and_grad_from_state`)."""
    p = problems.logcosh()
    tx = make()
    with jax.numpy_dtype_promotion("standard"):  # raw optax (lbfgs's counters) needs it
        traj = dynopt.run(tx, p, 15)
    value_and_grad = optax.value_and_grad_from_state(p.loss)

    @jax.jit
    def step(params, state):
        value, grad = value_and_grad(params, state=state)
        u, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=p.loss)
        return optax.apply_updates(params, u), state

    params, state = p.params0, tx.init(p.params0)
    with jax.numpy_dtype_promotion("standard"):
        for _ in range(15):
            params, state = step(params, state)
    assert float(p.loss(traj.final_params)) < 0.5 * float(p.loss(p.params0))
    assert tree_max_abs_diff(traj.final_params, params) < 1e-12


def test_sophia_gets_its_objective_and_matches_optax_documented_loop():
    """`optax.contrib.sophia` estimates its Hessian diagonal from the objective it is handed as
    `obj_fn` (its docstring's loop); `run` hands it the oracle's loss, on the step's minibatch."""
    p = problems.logcosh()
    tx = optax.contrib.sophia(0.05)
    with jax.numpy_dtype_promotion("standard"):
        traj = dynopt.run(tx, p, 12)

    @jax.jit
    def step(params, state):
        u, state = tx.update(p.grad(params), state, params, obj_fn=p.loss)
        return optax.apply_updates(params, u), state

    params, state = p.params0, tx.init(p.params0)
    with jax.numpy_dtype_promotion("standard"):
        for _ in range(12):
            params, state = step(params, state)
    assert float(p.loss(traj.final_params)) < float(p.loss(p.params0))
    assert tree_max_abs_diff(traj.final_params, params) < 1e-12


@pytest.mark.parametrize("opaque", [False, True])
@pytest.mark.parametrize("chained", [False, True])
def test_sam_gets_only_the_extra_arguments_it_declares(opaque, chained):
    """`optax.contrib.sam`'s update declares only `grad_fn` (no `**kwargs`), and in opaque mode
    calls `grad_fn(params, i)`: `run` passes what an update declares, and its `grad_fn` takes
    (and ignores) a batch index. Inside `optax.chain` (which hands every extra argument to each
    link) the ones SAM refuses by name are dropped. Its iterates are those of the loop in SAM's
    docstring."""
    p = problems.logcosh()
    tx = optax.contrib.sam(optax.sgd(0.1), optax.sgd(0.05), opaque_mode=opaque)
    if chained:
        tx = optax.chain(optax.add_decayed_weights(0.01), tx)
    with jax.numpy_dtype_promotion("standard"):  # raw optax (SAM's bool * float) needs it
        traj = dynopt.run(tx, p, 10)
        params, state = p.params0, tx.init(p.params0)
        extra = dict(grad_fn=lambda q, i: p.grad(q)) if opaque else {}
        for _ in range(10):
            updates, state = tx.update(p.grad(params), state, params, **extra)
            params = optax.apply_updates(params, updates)
    assert tree_max_abs_diff(traj.final_params, params) < 1e-14


def test_extra_args_are_the_oracle_on_the_step_minibatch():
    """One extra-argument protocol: `value`, `grad`, `value_fn`, `obj_fn`, `grad_fn`, all on the
    minibatch of `fold_in(key, k)` (here recorded in the transform's state, read by an
    observer)."""
    p = problems.linear_regression(num_samples=32, dim=3, batch_size=4)
    tx = optax.GradientTransformationExtraArgs(_extra_args_state, _record_extra_args)
    key = jax.random.key(2)
    traj = dynopt.run(tx, p, 3, key=key, observe=_opt_state)
    for k in range(3):
        params = traj.params[k]
        bkey = jax.random.fold_in(key, k)
        value, grad = jax.value_and_grad(p.stochastic_loss)(params, bkey)
        seen = jax.tree.map(lambda x, k=k: x[k + 1], traj.observations)
        want = dict(value=value, grad=grad, grad_fn=grad, value_fn=value, obj_fn=value)
        assert eqx.tree_equal(seen, want, rtol=1e-14, atol=1e-15), k
    # Elsewhere: grad_fn at another point is the same minibatch's gradient there.
    p2 = problems.quadratic([1.0, 4.0])

    def probe(updates, state, params=None, *, grad_fn, **extra):
        del extra
        return optax.tree.scale(-0.1, updates), grad_fn(params + 1.0)

    tx2 = optax.GradientTransformationExtraArgs(optax.tree.zeros_like, probe)
    traj2 = dynopt.run(tx2, p2, 2, observe=_opt_state)
    np.testing.assert_allclose(traj2.observations[1], p2.grad(p2.params0 + 1.0), rtol=1e-15)


class _GradNorm(eqx.Module):
    """An observer with a parameter (an eqx.Module: its arrays are traced, no recompilation)."""

    scale: jax.Array

    def __call__(self, params, opt_state, problem):
        return self.scale * optax.tree.norm(problem.grad(params))


def test_observers_record_any_function_of_the_state_at_saved_points():
    """`observe` sees the saved state (params, optimizer state, problem), is batched like the
    run, is frozen with it after divergence, and never changes the run."""
    p = problems.quadratic([1.0, 10.0, 100.0], rotate=True)
    hs = jnp.asarray([0.01, 0.05])  # the second diverges (2/100 < 0.05)
    disc = flows.GradientFlow().discretize(hs)
    plain = dynopt.run(disc, p, 300, every=30)
    seen = dynopt.run(disc, p, 300, every=30, observe=_GradNorm(jnp.asarray(2.0)))
    assert eqx.tree_equal(plain.params, seen.params) and eqx.tree_equal(plain.loss, seen.loss)
    assert seen.observations.shape == (2, 11)
    norms = 2.0 * jax.vmap(jax.vmap(lambda x: jnp.linalg.norm(p.grad(x))))(seen.params)
    np.testing.assert_allclose(seen.observations, norms, rtol=1e-13)
    assert int(seen.diverged_at[0]) == -1 and int(seen.diverged_at[1]) > 0
    # The optimizer state too (the momentum trace of optax.sgd), and seed batches.
    s = problems.linear_regression(32, 2, batch_size=4)
    keys = jax.random.split(jax.random.key(0), 3)
    traj = dynopt.run(optax.sgd(0.05, momentum=0.5), s, 10, key=keys, every=5, observe=_opt_state)
    trace = traj.observations[0].trace
    assert trace.shape == (3, 3, 2)
    np.testing.assert_array_equal(trace[:, 0], 0.0)
    single = dynopt.run(
        optax.sgd(0.05, momentum=0.5), s, 10, key=keys[1], every=5, observe=_opt_state
    )
    np.testing.assert_allclose(single.observations[0].trace, trace[1], rtol=1e-14)


def test_growth_without_overflow_is_divergence():
    """Gradient ascent (`optax.sgd(-0.1)`) grows geometrically and would stay finite for
    thousands of steps: `run` reports it where the loss passes L0 + 1e8 max(|L0|, 1), here
    predicted from the closed form of the top mode, and keeps that iterate (no NaN flood)."""
    p = problems.quadratic([1.0, 4.0])
    traj = dynopt.run(optax.sgd(-0.1), p, 300, every=10)
    # Each mode i grows by (1 + 0.1 lam_i) per step; L_k = sum_i lam_i x_i^2 (1+0.1 lam_i)^2k / 2.
    lam, x0 = np.array([1.0, 4.0]), np.asarray(p.params0)
    loss = lambda k: 0.5 * np.sum(lam * x0**2 * (1 + 0.1 * lam) ** (2 * k))
    threshold = loss(0) + DIVERGENCE_FACTOR * max(loss(0), 1.0)
    k_pred = next(k for k in range(300) if loss(k) > threshold)
    assert int(traj.diverged_at) == k_pred
    assert bool(jnp.all(jnp.isfinite(traj.loss))) and float(traj.loss[-1]) < 1e3 * threshold
    # A converging run, and a stochastic one started at the minimum, are never flagged.
    assert int(dynopt.run(optax.sgd(0.1), p, 300).diverged_at) == -1
    s = problems.linear_regression(32, 2, batch_size=4)
    start = eqx.tree_at(lambda q: q.params0, s, s.minimizer)
    noisy = dynopt.run(flows.AdamFlow(2.0, 5.0).discretize(0.05), start, 200, key=jax.random.key(0))
    assert int(noisy.diverged_at) == -1


def test_raw_transform_times_are_labelled_and_take_dt():
    """A raw optax transform's `ts` are step indices unless `dt` says how far a step goes;
    `ts_unit` says which, so `ref.evaluate(traj.ts[-1])` means what it reads."""
    p = problems.quadratic([1.0, 3.0])
    steps = dynopt.run(optax.sgd(0.01), p, 100, every=50)
    assert steps.ts_unit == "steps"
    np.testing.assert_array_equal(steps.ts, [0.0, 50.0, 100.0])
    timed = dynopt.run(optax.sgd(0.01), p, 100, every=50, dt=0.01)
    assert timed.ts_unit == "time"
    np.testing.assert_allclose(timed.ts, [0.0, 0.5, 1.0], rtol=1e-15)
    np.testing.assert_array_equal(timed.params, steps.params)
    assert dynopt.run(flows.GradientFlow().discretize(0.01), p, 10).ts_unit == "time"
    with pytest.raises(ValueError, match="dt must be > 0"):
        dynopt.run(optax.sgd(0.01), p, 10, dt=-1.0)
    with pytest.raises(ValueError, match="dt is only for a raw optax transform"):
        dynopt.run(flows.GradientFlow().discretize(0.01), p, 10, dt=0.01)


def test_numpy_integer_counts_are_accepted():
    p = problems.quadratic([1.0, 3.0])
    traj = dynopt.run(optax.sgd(0.01), p, np.int64(10), every=np.int64(5))
    assert traj.loss.shape == (3,)
    with pytest.raises(ValueError, match="every must be a positive integer"):
        dynopt.run(optax.sgd(0.01), p, 10, every=2.5)


def test_default_sweep_strategy_reads_the_problem():
    """`batch_size=None` vmaps a sweep, except an elementwise loss (it reads less data than one
    run has parameters) with at least `SEQUENTIAL_MIN_PARAMS` parameters, which runs sequentially;
    either way the trajectories are those of one vmap."""
    from dynopt._run import default_batch_size, SEQUENTIAL_MIN_PARAMS

    big = SEQUENTIAL_MIN_PARAMS
    assert default_batch_size(problems.rosenbrock(big)) == 1
    assert default_batch_size(problems.rosenbrock(big - 1)) is None
    assert default_batch_size(problems.logistic_regression(64, big)) is None  # a data matrix
    assert default_batch_size(problems.quadratic(jnp.linspace(1.0, 2.0, big))) is None
    # A plain function: the data it closes over count as well (read from its traced program).
    x = jax.random.normal(jax.random.key(0), (64, big))
    closure = dynopt.Problem(loss_fn=lambda w: jnp.mean((x @ w) ** 2), params0=jnp.ones(big))
    assert default_batch_size(closure) is None
    elementwise = dynopt.Problem(loss_fn=lambda w: jnp.sum(jnp.cosh(w)), params0=jnp.ones(big))
    assert default_batch_size(elementwise) == 1
    # Read once per problem structure (the loss traced once), anew for new shapes or functions.
    traces = []

    def loss(w, data):
        traces.append(None)  # runs only while tracing
        return jnp.sum(jnp.cosh(w)) * jnp.mean(data)

    def problem(n):  # n shared data entries
        return dynopt.Problem(loss_fn=eqx.Partial(loss, data=jnp.ones(n)), params0=jnp.ones(big))

    built = [problem(n) for n in (1, 1, big, big)]
    traces.clear()  # (building a Problem traces its loss once, to check it)
    assert [default_batch_size(p) for p in built] == [1, 1, None, None]
    assert len(traces) == 2
    disc = flows.GradientFlow().discretize(jnp.asarray([1e-4, 3e-4, 5e-3]))  # the last diverges
    p = problems.rosenbrock(big)
    auto = dynopt.run(disc, p, 40, every=20)
    whole = dynopt.run(disc, p, 40, every=20, batch_size=3)
    np.testing.assert_allclose(auto.params, whole.params, rtol=1e-13, atol=0)
    np.testing.assert_array_equal(auto.diverged_at, whole.diverged_at)
    assert int(auto.diverged_at[-1]) > 0 and int(auto.diverged_at[0]) == -1


def _halving_quadratic(dtype=jnp.float64):
    """½x², x₀ = 1: `optax.sgd(3.0)` maps x to −2x, loss 0.5·4ᵏ, past the growth limit
    0.5 + 10⁸ first at k = 14."""
    return dynopt.Problem(lambda x: 0.5 * jnp.sum(x**2), jnp.array([1.0], dtype), name="quad")


@pytest.mark.parametrize("every", [1, 2, 7, 14])
def test_divergence_at_the_last_step_is_reported(every):
    """The last block's end iterate gets the test every other block's end gets from the next
    block: a run past the growth limit (or overflowing) at its last step was reported finite."""
    p = _halving_quadratic()
    traj = dynopt.run(optax.sgd(3.0), p, 14, every=every)
    assert int(traj.diverged_at) == 14  # as with more steps, whatever `every`
    assert int(dynopt.run(optax.sgd(3.0), p, 28, every=every).diverged_at) == 14
    # The run keeps that iterate (finite, its loss past the limit), masked by `valid`.
    assert float(traj.final_params[0]) == (-2.0) ** 14 and not bool(traj.valid[-1])
    assert float(traj.loss[-1]) > float(divergence_limit(p.loss(p.params0)))
    over = dynopt.run(optax.sgd(1e20), _halving_quadratic(jnp.float32), 1)
    assert int(over.diverged_at) == 1 and np.isinf(over.loss[-1])


def _hand_diverged_at(tx, problem, num_steps, key):
    """`diverged_at` by its definition, from a plain optax loop on the same oracle: the first
    $k$ whose iterate is non-finite or whose full loss is non-finite or past the limit."""
    limit = divergence_limit(problem.loss(problem.params0))

    def body(carry, k):
        params, state = carry
        g = jax.grad(problem.stochastic_loss)(params, jax.random.fold_in(key, k))
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), params

    _, saved = jax.lax.scan(
        body, (problem.params0, tx.init(problem.params0)), jnp.arange(num_steps)
    )
    params = jnp.concatenate([problem.params0[None], saved])
    loss = jax.vmap(problem.loss)(params)
    bad = ~jnp.all(jnp.isfinite(params), axis=1) | ~jnp.isfinite(loss) | ~(loss <= limit)
    return int(jnp.argmax(bad)) if bool(jnp.any(bad)) else -1


def test_diverged_at_does_not_depend_on_every():
    """One predicate in the per-block check and the replay (the iterate and its full loss): a
    run skipping NaN minibatches (`apply_if_finite`) diverged at 30, 28, 23 or 1 depending on
    `every` (the replay tested the minibatch value); plain SGD on NaN minibatches fails where
    its iterate turns NaN."""
    p, key, n = nan_minibatch_problem(), jax.random.key(0), 40
    for tx in (optax.apply_if_finite(optax.sgd(2.5), 100), optax.sgd(0.1)):
        expected = _hand_diverged_at(tx, p, n, key)
        assert expected > 0
        for every in (1, 4, 8, 20, 40):
            assert int(dynopt.run(tx, p, n, key=key, every=every).diverged_at) == expected


def test_hyperparameters_are_not_rounded_to_the_parameter_dtype():
    """A hyper-parameter enters optax as a Python float would: bfloat16(0.999) is 1, so Adam
    with b2 = 0.999 cast to bfloat16 had 1 − b2 = 0 and diverged at step 1; float32 runs were
    off a hand-written loop by the rounding of 1 − b2."""

    def loss(x):
        target = jnp.array([1.0, -2.0, 0.5, 3.0], jnp.float32)
        return jnp.sum(jnp.log(jnp.cosh(x.astype(jnp.float32) - target))).astype(x.dtype)

    hp = {"learning_rate": 0.05, "b2": 0.999}
    with jax.numpy_dtype_promotion("standard"):  # optax.adam's bias correction needs it
        for dtype in (jnp.bfloat16, jnp.float32):
            p = dynopt.Problem(loss, jnp.zeros(4, dtype))
            traj = dynopt.run(dynopt.Discretization(optax.adam, hp, dt=0.05), p, 20)
            tx, params = optax.adam(**hp), p.params0
            state = tx.init(params)
            for _ in range(20):
                updates, state = tx.update(jax.grad(loss)(params), state, params)
                params = optax.apply_updates(params, updates)
            assert int(traj.diverged_at) == -1 and traj.final_params.dtype == dtype
            eps = float(jnp.finfo(dtype).eps)
            np.testing.assert_allclose(
                np.asarray(traj.final_params, np.float64),
                np.asarray(params, np.float64),
                rtol=0,
                atol=(4 * eps if dtype == jnp.bfloat16 else 1e-7),
            )


def test_batched_hyperparameters_with_scalar_dt_choose_the_sweep_strategy(monkeypatch):
    """A batch of learning rates with one dt is a sweep: `batch_size=None` goes through
    `default_batch_size` (it was read from the unbroadcast dt)."""
    from dynopt import _run

    seen = []
    original = _run._run_discretization
    monkeypatch.setattr(_run, "_run_discretization", lambda *a: seen.append(a[5]) or original(*a))
    p = problems.rosenbrock(64)
    assert _run.default_batch_size(p) == 1
    lrs = jnp.array([1e-4, 2e-4])
    dynopt.run(dynopt.Discretization(optax.sgd, {"learning_rate": lrs}, dt=1e-4), p, 2)
    assert seen == [1]


def test_a_bad_observer_is_a_value_error_naming_it():
    p = problems.quadratic([1.0, 2.0])
    for tx in (optax.sgd(0.1), flows.GradientFlow().discretize(jnp.array([0.1, 0.2]))):
        for observe in (lambda a, b, c: "x", lambda a: a):
            with pytest.raises(ValueError, match="observe must be a function"):
                dynopt.run(tx, p, 4, observe=observe)


def test_python_floats_and_array_scalars_share_one_program():
    """Hyper-parameters and dt as Python floats, NumPy or JAX scalars: one compilation (the
    weak and the strong type were two)."""
    counter = TraceCounter(lambda x: jnp.sum(x**2))
    p = dynopt.Problem(counter, jnp.array([1.0, -0.5]))
    make = lambda h: dynopt.Discretization(optax.sgd, {"learning_rate": h}, dt=h)
    dynopt.run(make(0.1), p, 3)
    traced = counter.count
    for h in (jnp.asarray(0.2), np.float64(0.3), jnp.float32(0.25), 0.4):
        dynopt.run(make(h), p, 3)
    assert counter.count == traced


def test_empty_batches_are_a_value_error():
    p = problems.linear_regression(16, 2, batch_size=4)
    with pytest.raises(ValueError, match="empty batch of keys"):
        dynopt.run(optax.sgd(0.1), p, 4, key=jax.random.split(jax.random.key(0), 0))
    with pytest.raises(ValueError, match="empty batch of step sizes"):
        dynopt.Discretization(optax.sgd, {"learning_rate": jnp.zeros(0)}, dt=jnp.zeros(0))
    empty_lr = dynopt.Discretization(optax.sgd, {"learning_rate": jnp.zeros(0)}, dt=0.1)
    with pytest.raises(ValueError, match="empty batch of hyper-parameters"):
        dynopt.run(empty_lr, p, 4)
