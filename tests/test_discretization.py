"""`Discretization`: hyper-parameters as leaves (a sweep compiles once), dt validated in three
tiers, `astype`, `init_fn`."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import pytest

import dynopt
from dynopt import problems


def test_hyperparameters_are_leaves_and_factory_is_static():
    d = dynopt.Discretization(optax.sgd, {"learning_rate": 0.1, "momentum": 0.9}, dt=0.1)
    leaves = jax.tree.leaves(d)
    assert len(leaves) == 3 and all(isinstance(x, jax.Array) for x in leaves)
    traces = []

    @eqx.filter_jit
    def first(d):
        traces.append(1)
        return d.transform.update(jnp.ones(2), d.transform.init(jnp.ones(2)))[0]

    first(d)
    first(dynopt.Discretization(optax.sgd, {"learning_rate": 0.2, "momentum": 0.5}, dt=0.2))
    assert len(traces) == 1


def test_astype_casts_floating_hyperparameters_only():
    d = dynopt.Discretization(optax.sgd, {"learning_rate": 0.1}, dt=0.1).astype(jnp.float32)
    assert d.hyperparams["learning_rate"].dtype == jnp.float32 and d.dt.dtype == jnp.float64


def _start_at_two(disc, params, problem):
    return disc.transform.init(jax.tree.map(lambda x: 2 * x, params))


def test_init_fn_sets_the_initial_state():
    problem = problems.quadratic([1.0])
    d = dynopt.Discretization(optax.sgd, {"learning_rate": 0.1}, dt=0.1, init_fn=_start_at_two)
    assert d.init(problem.params0, problem) == optax.sgd(0.1).init(2 * problem.params0)


def test_dt_validation_in_three_tiers():
    with pytest.raises(ValueError, match="dt must be > 0"):
        dynopt.Discretization(optax.sgd, {"learning_rate": 0.1}, dt=0.0)
    make = jax.jit(lambda dt: dynopt.Discretization(optax.sgd, {"learning_rate": 0.1}, dt=dt).dt)
    assert float(make(jnp.asarray(0.5))) == 0.5
    with pytest.raises(Exception, match="dt must be > 0"):
        jax.block_until_ready(make(jnp.asarray(-0.5)))


def test_integer_dt_gives_float_times():
    d = dynopt.Discretization(optax.sgd, {"learning_rate": 1}, dt=1)
    assert jnp.issubdtype(d.dt.dtype, jnp.floating)
    assert d.hyperparams["learning_rate"].dtype == jnp.int64  # an integer may be meant
    traj = dynopt.run(d, problems.quadratic([0.5]), 3)
    assert jnp.issubdtype(traj.ts.dtype, jnp.floating)
    assert traj.ts.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_weakly_typed_hyperparameters_stay_traced_leaves():
    """Floating hyper-parameters are weakly typed (they meet a bfloat16 state as a Python float
    would), integers stay as given, and under `jit` they are still traced: one compilation."""
    d = dynopt.Discretization(optax.sgd, {"learning_rate": jnp.float32(0.1)}, dt=0.1)
    assert jax.typeof(d.hyperparams["learning_rate"]).weak_type
    traces = []

    @jax.jit
    def step(d, x):
        traces.append(1)
        d = d.weakly_typed()
        assert jax.typeof(d.hyperparams["learning_rate"]).weak_type
        return d.transform.update(x, d.transform.init(x))[0]

    x = jnp.ones(2, jnp.bfloat16)
    assert step(d, x).dtype == jnp.bfloat16
    step(dynopt.Discretization(optax.sgd, {"learning_rate": 0.2}, dt=0.2), x)
    assert len(traces) == 1


def test_a_factory_that_branches_on_a_hyperparameter_is_named():
    """Hyper-parameters are traced: optax.exponential_decay tests `decay_rate == 0` in Python,
    which raised a bare TracerBoolConversionError from deep inside `run` (helper-94)."""

    def decayed_sgd(learning_rate, decay_rate):
        return optax.sgd(optax.exponential_decay(learning_rate, 1, decay_rate))

    disc = dynopt.Discretization(decayed_sgd, {"learning_rate": 0.1, "decay_rate": 0.9}, dt=0.1)
    with pytest.raises(TypeError, match="branched in Python on a hyper-parameter"):
        dynopt.run(disc, problems.quadratic([1.0, 2.0]), 3)


def _trace_of_length_3(disc, params, problem):  # a state the transform's update cannot read
    return (optax.TraceState(trace=jnp.zeros(3)), optax.EmptyState())


def _bare_trace(disc, params, problem):  # the trace without optax's NamedTuple around it
    return (jnp.zeros(2), optax.EmptyState())


def test_an_init_fn_unlike_the_transforms_init_is_named():
    """A wrong `init_fn` failed inside the run as JAX's "add got incompatible shapes" (or an
    attribute error in optax's update), naming neither `init_fn` nor the leaf."""
    problem = problems.quadratic([1.0, 2.0])
    hyper = {"learning_rate": 0.1, "momentum": 0.9}
    for init_fn, match in ((_trace_of_length_3, r"leaf \[0\]\.trace has shape \(3,\)"),
                           (_bare_trace, "structure differs")):  # fmt: skip
        disc = dynopt.Discretization(optax.sgd, hyper, dt=0.1, init_fn=init_fn)
        with pytest.raises(ValueError, match=f"init_fn {init_fn.__name__} .*{match}"):
            dynopt.run(disc, problem, 3)
