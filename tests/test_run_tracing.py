"""How many copies of the loss and the gradient a `run` program holds, and how often it
evaluates them: every trace site is compiled anew (seconds for a loss that runs a diffrax
solve), so `run` has five, whatever the batch, the oracle or the observer: the loss at θ₀ (the
growth threshold, the test of θ₀ and the first saved point), the gradient of the steps, the
loss of the test at the end of each block, which is the recorded loss, and the gradient and
the loss of the replay of a failing block (which runs zero times in a batch without
divergence). With `every=1` (the default) a block is one step, tested as `make_step` tests
it, with nothing to replay: three sites."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import flows, games
from dynopt._run import divergence_limit

from .helpers import nan_minibatch_problem, TraceCounter


SITES = 5  # the loss at θ₀, the gradient, the block's test, the replay's gradient and loss
STEP_SITES = 3  # every = 1: the loss at θ₀, the gradient, the step's test


def _quadratic(counter):
    return dynopt.Problem(counter, jnp.array([1.0, -0.5]), name="quad")


def _half_square(x):
    return 0.5 * jnp.sum(x**2) + 0.25 * jnp.sum(x**4)


def _observe(params, opt_state, problem):
    return jnp.sum(params**2)


def _traces(call, make_problem):
    """The loss traces of one `run` program: those of `call(problem)` on a fresh problem, less
    the problem's own check at construction."""
    counter = TraceCounter(_half_square)
    problem = make_problem(counter)
    before = counter.count
    jax.block_until_ready(call(problem))
    return counter.count - before


GD = flows.GradientFlow().discretize(0.01)
SWEEP = flows.GradientFlow().discretize(jnp.asarray([0.01, 0.02, 0.05]))
KEYS = jax.random.split(jax.random.key(3), 2)

CASES = {
    "discretization": lambda p: dynopt.run(GD, p, 20, every=5),
    "optax": lambda p: dynopt.run(optax.sgd(0.01), p, 20, every=5),
    "optax with state": lambda p: dynopt.run(optax.sgd(0.01, momentum=0.9), p, 20, every=4),
    "sweep": lambda p: dynopt.run(SWEEP, p, 20, every=5),
    "chunked sweep": lambda p: dynopt.run(SWEEP, p, 20, every=5, batch_size=2),
    "sequential sweep": lambda p: dynopt.run(SWEEP, p, 20, every=5, batch_size=1),
    "observe": lambda p: dynopt.run(GD, p, 20, every=5, observe=_observe),
    "outer vmap": lambda p: jax.vmap(lambda h: dynopt.run(optax.sgd(h), p, 20, every=5).loss)(
        jnp.asarray([0.01, 0.02])
    ),
}

EVERY_STEP = {
    "discretization": lambda p: dynopt.run(GD, p, 20),
    "optax with state": lambda p: dynopt.run(optax.sgd(0.01, momentum=0.9), p, 20),
    "sweep": lambda p: dynopt.run(SWEEP, p, 20),
    "chunked sweep": lambda p: dynopt.run(SWEEP, p, 20, batch_size=2),
    "sequential sweep": lambda p: dynopt.run(SWEEP, p, 20, batch_size=1),
    "observe": lambda p: dynopt.run(GD, p, 20, observe=_observe),
    "outer vmap": lambda p: jax.vmap(lambda h: dynopt.run(optax.sgd(h), p, 20).loss)(
        jnp.asarray([0.01, 0.02])
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_run_program_traces_the_loss_five_times(name):
    """Deterministic problems: θ₀'s loss, the gradient, the block test, the replay's gradient
    and loss (before: six, a second pass of the loss over the saved points after the scan)."""
    assert _traces(CASES[name], _quadratic) == SITES


@pytest.mark.parametrize("name", list(EVERY_STEP))
def test_a_run_saving_every_step_traces_the_loss_three_times(name):
    """`every=1`: θ₀'s loss, the gradient, the step's test; no replay (before: five, a replay
    of each failing one-step block with its own gradient and loss)."""
    assert _traces(EVERY_STEP[name], _quadratic) == STEP_SITES


def _minibatch(counter):
    data = jnp.linspace(-1.0, 1.0, 16)

    def stochastic(x, key):
        i = jax.random.choice(key, 16, (4,), replace=False)
        return counter(x - jnp.mean(data[i]))

    return dynopt.Problem(counter, jnp.array([1.0, -0.5]), stochastic_loss_fn=stochastic)


@pytest.mark.parametrize("keys", [jax.random.key(1), KEYS], ids=["one key", "seeds"])
def test_a_minibatch_run_traces_the_full_loss_three_times_and_the_minibatch_gradient_twice(keys):
    """The recorded and tested loss is the full loss whatever the oracle: three sites of
    `problem.loss` (θ₀, the block test, the replay's test), two of the minibatch gradient (the
    block, the replay); with `every=1` two and one (no replay)."""
    assert _traces(lambda p: dynopt.run(optax.sgd(0.01), p, 20, every=5, key=keys), _minibatch) == 5
    assert _traces(lambda p: dynopt.run(SWEEP, p, 20, every=5, key=keys), _minibatch) == 5
    assert _traces(lambda p: dynopt.run(SWEEP, p, 20, key=keys), _minibatch) == STEP_SITES


@pytest.mark.parametrize("every, sites", [(5, SITES), (1, STEP_SITES)])
def test_a_game_run_evaluates_its_gradient_field_at_five_sites(every, sites):
    """A game's loss (the Hamiltonian ½‖ξ‖²) is a gradient evaluation: five sites of ξ (three
    with `every=1`)."""
    base = games.dirac_gan()
    counter = TraceCounter(base.g_loss_fn)
    game = games.Game(base.d_loss_fn, counter, base.phi0, base.theta0)
    before = counter.count
    jax.block_until_ready(dynopt.run(games.Simultaneous().discretize(0.1), game, 20, every=every))
    assert counter.count - before == sites


def _counted_problem(evaluations):
    """½‖x‖², each evaluation (the loss or its gradient, per run) counted as it executes."""

    def loss(x):
        jax.debug.callback(lambda: evaluations.append(1))
        return 0.5 * jnp.sum(x**2)

    return dynopt.Problem(loss, jnp.array([1.0, -0.5]), name="counted")


@pytest.mark.parametrize("every", [1, 5, 20])
def test_a_batch_without_divergence_never_replays(every):
    """Executed evaluations: the loss at θ₀ once, the gradient at each of the N steps, the loss
    at each of the N/every block ends; a replay would add 2·every per failing block. Also under
    a user's `vmap` over `run` (the replay's loop then has a batched predicate) and for a
    chunked sweep."""
    n = 20
    evaluations: list = []
    p = _counted_problem(evaluations)
    jax.block_until_ready(dynopt.run(optax.sgd(0.1), p, n, every=every))
    assert len(evaluations) == 1 + n + n // every
    evaluations.clear()
    traj = jax.vmap(lambda h: dynopt.run(optax.sgd(h), p, n, every=every))(jnp.asarray([0.1, 0.2]))
    assert np.all(np.asarray(traj.diverged_at) == -1)
    per_run = 1 + n + n // every
    assert len(evaluations) == per_run  # a callback without arguments runs once per batch
    evaluations.clear()
    sweep = flows.GradientFlow().discretize(jnp.asarray([0.1, 0.2, 0.3]))
    jax.block_until_ready(dynopt.run(sweep, p, n, every=every, batch_size=2))
    assert len(evaluations) == 2 * per_run  # two chunks, one after the other


def test_a_failing_block_replays_once():
    """One block fails (the step size past the stability limit 2): the replay evaluates the
    gradient and the loss once per step of that block (a frozen run's steps too: `make_step`
    in a loop of static length), and the runs stop at the first failing iterate."""
    evaluations: list = []
    p = _counted_problem(evaluations)
    n, every = 40, 40
    traj = dynopt.run(optax.sgd(3.0), p, n, every=every)
    # |1 - 3| = 2 per step: loss 0.625·4ᵏ passes 0.625 + 10⁸ first at k = 14
    assert int(traj.diverged_at) == 14
    assert len(evaluations) == (1 + n + n // every) + 2 * every
    assert float(traj.final_params[0]) == (-2.0) ** 14


def test_a_failing_run_saving_every_step_replays_nothing():
    """`every=1`: each step's test is the step's own (`make_step`'s); the failing step is not
    evaluated again (before: once more, the gradient and the loss of its one-step replay).
    The run stops as with any `every`: at the first failing iterate, kept."""
    evaluations: list = []
    p = _counted_problem(evaluations)
    n = 20
    traj = dynopt.run(optax.sgd(3.0), p, n)
    assert int(traj.diverged_at) == 14  # as in the test above
    assert len(evaluations) == 1 + n + n
    assert float(traj.params[-1, 0]) == (-2.0) ** 14


@pytest.mark.parametrize("every", [1, 2, 4, 8, 40])
def test_the_recorded_loss_is_the_full_loss_of_the_frozen_iterate(every):
    """The recorded loss is carried from the block tests: after a divergence it is the full loss
    of the iterate the run keeps, both when the replay stops on a NaN iterate (the run keeps
    the one before, whose loss an earlier test computed) and when it stops on a finite iterate
    past the growth limit. Equal to `problem.loss` of the saved parameters to rounding (the
    same reduction in another compiled program: 1e-14 relative, a few ulps of two terms)."""
    p, key = nan_minibatch_problem(), jax.random.key(0)
    traj = dynopt.run(optax.sgd(0.1), p, 40, key=key, every=every)
    assert int(traj.diverged_at) == 2  # the first NaN minibatch, at step 1, gives θ₂ = NaN
    assert bool(jnp.all(jnp.isfinite(traj.params)))
    np.testing.assert_allclose(traj.loss, jax.vmap(p.loss)(traj.params), rtol=1e-14, atol=0)
    q = dynopt.Problem(lambda x: 0.5 * jnp.sum(x**2), jnp.array([1.0]))
    grown = dynopt.run(optax.sgd(3.0), q, 40, every=every)
    assert int(grown.diverged_at) == 14
    np.testing.assert_allclose(grown.loss, jax.vmap(q.loss)(grown.params), rtol=1e-14, atol=0)
    assert float(grown.loss[-1]) > float(divergence_limit(q.loss(q.params0)))


@pytest.mark.parametrize("every", [1, 3, 10])
def test_a_start_that_fails_the_test_is_diverged_at_zero(every):
    """θ₀ gets the test of every iterate: a start whose loss is infinite diverged at 0, for
    every `every` (it was reported only when the first block's end failed too: here it does
    not, the loss being finite everywhere else, and the run came back as never diverged)."""
    p = dynopt.Problem(
        lambda x: 0.5 * jnp.sum(x**2) + jnp.where(x[0] == 1.0, jnp.inf, 0.0),
        jnp.array([1.0, 0.5]),
    )
    assert bool(jnp.isfinite(p.loss(0.9 * p.params0)))  # the first step leaves the pole
    traj = dynopt.run(optax.sgd(0.1), p, 30, every=every)
    assert int(traj.diverged_at) == 0
    assert not bool(jnp.any(traj.valid))
    np.testing.assert_array_equal(traj.params, jnp.broadcast_to(p.params0, traj.params.shape))
