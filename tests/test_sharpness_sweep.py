"""`track_sharpness` of a `Discretization`: a new learning rate reuses the compiled run, a batch
of learning rates is tracked in one `run` (each member its own single run's values), and the
options (`preconditioner`, `init_grad_fn`, `method`, a discretization's own initial state)
keep working; `CentralFlow.discretize` refuses a step other than its learning rate."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import flows, networks, sharpness

from .helpers import backend_compiles


@pytest.fixture(scope="module")
def net():
    x, y = networks.gaussian_regression(32, 4, 1)
    model = networks.mlp(4, 1, width=12, depth=2, activation=jax.nn.swish, key=jax.random.key(0))
    return networks.network_problem(model, (x, y))


K, TOL = 2, 1e-12
# JAX's event for a program lowered to MLIR (`jax._src.dispatch.JAXPR_TO_MLIR_MODULE_EVENT`); a
# renamed event would leave `backend_compiles(LOWERED)` empty, which the optax transform's run
# below catches.
LOWERED = "/jax/core/compile/jaxpr_to_mlir_module_duration"


def _gd(lr):
    return dynopt.Discretization(optax.sgd, {"learning_rate": lr}, dt=lr)


def _rmsprop(lr):
    return dynopt.Discretization(optax.rmsprop, {"learning_rate": lr}, dt=lr)


def _run(tx, problem, steps=10, every=5):
    return jax.block_until_ready(
        dynopt.run(tx, problem, steps, every=every, observe=sharpness.sharpness)
    )


def test_a_second_learning_rate_reuses_the_compiled_tracked_run(net):
    """`run(track_sharpness(optax.sgd(lr)), ...)` compiles the whole tracked run for each new
    `lr` (a new transform object: one program lowered, 18.4 s on a SmallCNN); wrapped around a
    `Discretization` the learning rate is a traced leaf: the second one lowers nothing, and
    each run records what the optax transform's own tracked run records: the same program
    with the learning rate a parameter instead of a constant, bit for bit as XLA compiles by
    default; to 6e-16 relative under the suite's unoptimized compilation (`conftest.py`),
    checked to 1e-12. Also with the options that are functions built anew for each run
    (`problem.grad`, a new bound method at each access; `rmsprop_preconditioner()`, a new
    closure before, a new program for every learning rate), and `method="lanczos"`. The
    optax transform's reference run is compiled for the second learning rate only (the one
    the reused program must get right: a program that kept the first learning rate, or
    ignored it, records otherwise), each a program of its own."""

    def gd_options():  # built anew for each run, as a sweep's loop would
        return dict(init_grad_fn=net.grad, tol=TOL)

    def rmsprop_options():
        return dict(
            init_grad_fn=net.grad,
            preconditioner=sharpness.rmsprop_preconditioner(),
            method="lanczos",
            max_iters=16,
        )

    for disc, factory, options in (
        (_gd, optax.sgd, gd_options),
        (_rmsprop, optax.rmsprop, rmsprop_options),
    ):
        first = _run(sharpness.track_sharpness(disc(0.3), K, every=5, **options()), net)
        with backend_compiles(LOWERED) as seen:
            second = _run(sharpness.track_sharpness(disc(0.2), K, every=5, **options()), net)
        assert not seen, (factory, len(seen))
        # The optax transform itself: a new object, a new program for each `lr` (what the
        # above avoids; also the check that `backend_compiles(LOWERED)` sees lowerings at all).
        with backend_compiles(LOWERED) as seen:
            raw = _run(sharpness.track_sharpness(factory(0.2), K, every=5, **options()), net)
        assert seen, factory
        np.testing.assert_allclose(second.observations, raw.observations, rtol=1e-12)
        np.testing.assert_allclose(second.loss, raw.loss, rtol=1e-12)
        for got in (first, second):
            assert np.all(np.isfinite(np.asarray(got.observations)[1:]))
        assert not np.array_equal(first.observations[-1], second.observations[-1])


def test_a_batch_of_learning_rates_is_tracked_in_one_run(net):
    """A `Discretization` with learning rates [0.3, 0.2, 0.1] tracked in one `run` (one `vmap`,
    `lane_cond` skipping the eigen-solve where no run tracks): each member's recorded
    eigenvalues and losses are its single run's, to 1e-12 relative. (Not bit for bit: the
    batched program's matrix products are other kernels, which round otherwise; on a SmallCNN
    the eigenvalues differed by 2.5e-15 relative, the losses by 6e-17. The eigenvalues of a
    symmetric operator move by at most the operator's own perturbation, and 10 GD steps below
    the edge do not amplify rounding.) Also in chunks (`batch_size=1`: one run after the
    other), with LOBPCG or Lanczos, and with a cold start at θ₀ (`init_grad_fn`)."""
    lrs = (0.3, 0.2, 0.1)
    for kw in (dict(init_grad_fn=net.grad, tol=TOL), dict(method="lanczos", max_iters=16)):
        tracked = sharpness.track_sharpness(_gd(jnp.asarray(lrs)), K, every=5, **kw)
        singles = [_run(sharpness.track_sharpness(_gd(lr), K, every=5, **kw), net) for lr in lrs]
        for batch_size in (None, 1):
            sweep = jax.block_until_ready(
                dynopt.run(
                    tracked, net, 10, every=5, observe=sharpness.sharpness, batch_size=batch_size
                )
            )
            assert sweep.observations.shape == (len(lrs), 3, K)
            for i, one in enumerate(singles):
                want = np.asarray(one.observations)
                finite = np.isfinite(want)
                np.testing.assert_array_equal(np.isfinite(sweep.observations[i]), finite)
                np.testing.assert_allclose(
                    np.asarray(sweep.observations[i])[finite], want[finite], rtol=1e-12
                )
                np.testing.assert_allclose(sweep.loss[i], one.loss, rtol=1e-12)
        # (θ₀ holds values with the cold start only.)
        assert np.all(np.isfinite(np.asarray(sweep.observations)[:, 0])) == ("tol" in kw)


def test_a_tracked_discretization_keeps_its_own_initial_state(net):
    """`HeavyBall(a).discretize(h)` starts from a half-step velocity (its `init_fn`), not
    optax's zero trace: tracked, the run is the untracked one bit for bit (the tracker never
    changes the updates), single or batched, and the eigenvalues at the saved iterates are
    dense `eigh`'s to 1e-8 (LOBPCG to tol 1e-12 on a 229-parameter Hessian)."""
    flow = flows.HeavyBall(1.0)
    for h in (0.3, jnp.asarray([0.3, 0.4])):
        disc = flow.discretize(h)
        assert disc.init_fn is not None
        tracked = sharpness.track_sharpness(disc, K, every=5, init_grad_fn=net.grad, tol=TOL)
        plain = dynopt.run(disc, net, 10, every=5)
        got = _run(tracked, net)
        for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(plain.params)):
            np.testing.assert_array_equal(a, b)
        zero = dynopt.Discretization(disc.factory, disc.hyperparams, disc.dt)  # optax's start
        assert not np.array_equal(dynopt.run(zero, net, 10, every=5).loss, plain.loss)
    hessian = eqx.filter_jit(sharpness.dense_hessian)
    for i in range(3):
        w = jax.tree.map(lambda x, i=i: x[1, i], got.params)
        top = np.linalg.eigvalsh(np.asarray(hessian(net.loss, w)))[::-1][:K]
        np.testing.assert_allclose(got.observations[1, i], top, rtol=0, atol=1e-8)


def test_tracker_settings_compare_by_value_and_bad_input(net):
    """The preconditioners are equal for equal arguments (a closure built anew was a new
    program for every learning rate); a `tx` that is neither kind and a non-callable
    `init_grad_fn` are refused by name."""
    assert sharpness.adam_preconditioner() == sharpness.adam_preconditioner()
    assert sharpness.adam_preconditioner(0.99) != sharpness.adam_preconditioner()
    assert sharpness.rmsprop_preconditioner(decay=0.9) == sharpness.rmsprop_preconditioner(
        decay=0.9
    )
    a = sharpness.track_sharpness(_gd(0.1), K, init_grad_fn=net.grad)
    b = sharpness.track_sharpness(_gd(0.2), K, init_grad_fn=net.grad)
    assert a.factory == b.factory and hash(a.factory) == hash(b.factory)
    c = sharpness.track_sharpness(_gd(0.1), K, init_grad_fn=net.grad, every=2)
    assert a.factory != c.factory
    with pytest.raises(ValueError, match=r"tx must be an optax\.GradientTransformation or a"):
        sharpness.track_sharpness(flows.GradientFlow(), K)
    with pytest.raises(ValueError, match="init_grad_fn must be None or a function"):
        sharpness.track_sharpness(_gd(0.1), K, init_grad_fn=1.0)


def test_the_central_flow_is_discretized_at_its_own_learning_rate():
    """`CentralFlow(η).discretize(h)` returned GD at any h: the central flow of η describes GD
    at step η (its threshold 2/η is that step's stability limit), so at h ≠ η it is another
    flow's discretization, as `ModifiedGradientFlow(h₀).discretize(h ≠ h₀)`, which is
    refused. Now refused too; η itself (or a float32 copy, or under a trace) passes."""
    flow = flows.CentralFlow(0.1, k=1)
    with pytest.raises(ValueError, match=r"step_size must equal the flow's learning_rate 0\.1"):
        flow.discretize(0.05)
    with pytest.raises(ValueError, match="step_size must equal the flow's learning_rate"):
        flows.CentralFlow(jnp.asarray([0.1, 0.2]), k=1).discretize(jnp.asarray([0.1, 0.3]))
    assert float(flow.discretize(0.1).dt) == 0.1
    assert float(flow.discretize(np.float32(0.1)).dt) == pytest.approx(0.1, rel=1e-7)
    dt = jax.jit(lambda h: flow.discretize(h).dt)(0.05)  # traced: not checked here
    assert float(dt) == 0.05
    flow, h = flows.CentralFlow.from_hyperparams(0.2, k=1)
    assert float(flow.discretize(h).dt) == 0.2


def _eigh_operand_ranks(jaxpr) -> list[int]:
    """The ranks of every `eigh` operand in `jaxpr` and the programs it calls (loops, branches,
    jits)."""
    ranks = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "eigh":
            ranks.append(eqn.invars[0].aval.ndim)
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    ranks += _eigh_operand_ranks(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    ranks += _eigh_operand_ranks(sub)
    return ranks


def test_a_vmapped_tracker_solves_one_lane_after_another_on_a_cpu():
    """Under `vmap` on a CPU the tracker's eigen-solve runs lane by lane (`lane_by_lane`): every
    `eigh` in the program is of one lane's small matrix, none batched over the lanes. Batched,
    LOBPCG's Rayleigh-Ritz made 8 vmapped tracked runs slower than the 8 runs one after
    another (0.83-0.97×, `make bench`; 1.05× lane by lane). A loss that closes over batched
    data (a `vmap` over data sets) works too (`sequential_vmap` refuses a batched closure: it
    is passed explicitly), each lane its own run's eigenvalues."""
    if jax.default_backend() != "cpu":
        pytest.skip("the lane-by-lane strategy is the CPU backend's")
    p0 = jnp.linspace(-1.0, 1.0, 40)
    scales = jnp.stack([jnp.linspace(1.0, 3.0, 40), jnp.linspace(0.5, 4.0, 40)])

    def one(a, lr=0.1):
        problem = dynopt.Problem(lambda p: 0.5 * jnp.sum(a * p**2) + 0.25 * jnp.sum(p**4), p0)
        tx = sharpness.track_sharpness(optax.sgd(lr), K, every=2, init_grad_fn=problem.grad)
        return dynopt.run(tx, problem, 4, every=2, observe=sharpness.sharpness).observations

    ranks = _eigh_operand_ranks(jax.make_jaxpr(jax.vmap(one))(scales).jaxpr)
    assert ranks and set(ranks) == {2}, ranks
    batched = jax.vmap(one)(scales)
    for a, got in zip(scales, batched):
        want = one(a)
        assert np.all(np.isfinite(want))
        np.testing.assert_allclose(got, want, rtol=1e-12)
