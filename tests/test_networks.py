"""Networks on digits and synthetic data: pytree params, losses, minibatches, bad input,
and sharded data (4 host CPU devices, in a subprocess) giving the same numbers."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynopt import networks
from dynopt._problems.finite_sum import sample_indices

from .helpers import run_on_host_devices


def _mlp_problem(loss="mse", n=60, batch_size=None):
    x, y = networks.digits(n)
    model = networks.mlp(64, 10, width=8, depth=1, key=jax.random.key(0))
    return networks.network_problem(model, (x, y), loss=loss, batch_size=batch_size)


def test_digits_shapes_and_balance():
    x, y = networks.digits(100)
    assert x.shape == (100, 64) and x.dtype == jnp.float64 and y.dtype == jnp.int32
    assert np.all(np.bincount(np.asarray(y), minlength=10) == 10)  # a stratified prefix
    xi, _ = networks.digits(20, image=True)
    assert xi.shape == (20, 1, 8, 8)
    full, _ = networks.digits()
    assert full.shape == (1797, 64)
    np.testing.assert_allclose(np.asarray(full.mean(0)), 0.0, atol=1e-12)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_mlp_loss_matches_a_hand_written_forward_pass(loss):
    problem = _mlp_problem(loss)
    x, y = problem.data
    mlp = problem.params0  # an eqx.nn.MLP with array leaves: the params are the model's pytree
    assert isinstance(mlp, eqx.nn.MLP) and problem.num_params == 64 * 8 + 8 + 8 * 10 + 10
    h = jnp.tanh(x @ mlp.layers[0].weight.T + mlp.layers[0].bias[None])
    out = h @ mlp.layers[1].weight.T + mlp.layers[1].bias[None]
    if loss == "mse":
        expected = 0.5 * jnp.mean(jnp.sum((out - jax.nn.one_hot(y, 10)) ** 2, axis=1))
    else:
        expected = -jnp.mean(jax.nn.log_softmax(out)[jnp.arange(len(y)), y])
    np.testing.assert_allclose(problem.loss(problem.params0), expected, rtol=1e-13)


def test_cnn_and_synthetic_train_with_minibatches():
    x, y = networks.gaussian_classes(64, dim=6, num_classes=3)
    model = networks.mlp(6, 3, width=8, depth=1, key=jax.random.key(1))
    problem = networks.network_problem(model, (x, y), loss="cross_entropy", batch_size=16)
    # The minibatch loss is the loss on 16 distinct samples.
    key = jax.random.key(0)
    idx = sample_indices(key, 64, 16)
    sub = networks.network_problem(model, (x[idx], y[idx]), loss="cross_entropy")
    np.testing.assert_allclose(
        problem.value(problem.params0, key), sub.loss(sub.params0), rtol=1e-13
    )
    xi, yi = networks.digits(20, image=True)
    cnn = networks.SmallCNN(channels=2, key=jax.random.key(2))
    cp = networks.network_problem(cnn, (xi, yi), loss="cross_entropy")
    g = cp.grad(cp.params0)
    assert jax.tree.structure(g) == jax.tree.structure(cp.params0)
    # A minibatch of the whole data set is the full batch (sampling without replacement).
    full = networks.network_problem(cnn, (xi, yi), loss="cross_entropy", batch_size=20)
    np.testing.assert_allclose(
        full.value(full.params0, jax.random.key(3)), cp.loss(cp.params0), rtol=1e-13
    )


def test_regression_targets():
    x, y = networks.gaussian_regression(32, 3, 2)
    model = networks.mlp(3, 2, width=4, depth=1, key=jax.random.key(0))
    problem = networks.network_problem(model, (x, y))
    out = jax.vmap(model)(x)
    np.testing.assert_allclose(
        problem.loss(problem.params0), 0.5 * jnp.mean(jnp.sum((out - y) ** 2, 1)), rtol=1e-13
    )


def test_bad_input():
    x, y = networks.digits(20)
    cnn = networks.SmallCNN(key=jax.random.key(0))
    with pytest.raises(ValueError, match="do not fit the model"):
        networks.network_problem(cnn, (x, y))
    small = networks.mlp(64, 5, width=4, depth=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"labels must be a 1-D array in \[0, 5\)"):
        networks.network_problem(small, (x, y))
    with pytest.raises(ValueError, match="loss must be one of"):
        networks.network_problem(small, (x, y), loss="hinge")
    with pytest.raises(ValueError, match="shard must be one of"):
        networks.network_problem(small, (x, y), shard="global")
    with pytest.raises(ValueError, match="integer labels"):
        networks.network_problem(small, (x, x[:, :5]), loss="cross_entropy")
    with pytest.raises(ValueError, match="num_samples"):
        networks.digits(5000)
    with pytest.raises(ValueError, match="width"):
        networks.mlp(64, 10, width=0, key=jax.random.key(0))


CHILD = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np, optax
import dynopt
from dynopt import networks
from dynopt._problems.finite_sum import sample_indices
assert jax.device_count() == 4, jax.devices()
x, y = networks.digits(40)
model = networks.mlp(64, 10, width=8, depth=1, key=jax.random.key(0))
out = {}
for shard in (False, True, "local"):  # one process: its local rows are all of them
    p = networks.network_problem(model, (x, y), shard=shard, batch_size=8)
    mb = dynopt.run(optax.sgd(0.5), p, 10, every=5, key=jax.random.key(1))
    g = jax.flatten_util.ravel_pytree(jax.jit(lambda w: p.grad(w))(p.params0))[0]
    out[str(shard)] = dict(
        spec=str(p.data[0].sharding.spec) if shard else "",
        loss=float(p.loss(p.params0)), mb=np.asarray(mb.loss).tolist(),
        grad=np.asarray(g).tolist(),
    )
try:
    networks.shard_data((x[:6], y[:6]))
except ValueError as e:
    out["error"] = str(e)
try:
    networks.network_problem(model, (x[:6], y[:6]), shard="local")
except ValueError as e:
    out["local_error"] = str(e)
# A finite-sum generator split over the 4 devices, each holding its quarter of the rows.
gd = dynopt.flows.GradientFlow().discretize(0.1)
for shard in (False, True):
    lin = dynopt.problems.linear_regression(64, 3, batch_size=8, shard=shard)
    out[f"lin{shard}"] = dict(
        rows=[list(s.index[0].indices(64)[:2]) for s in lin.data[0].addressable_shards],
        gd=np.asarray(dynopt.run(gd, lin, 20, every=10).params).tolist(),
        sgd=np.asarray(dynopt.run(gd, lin, 20, every=10, key=jax.random.key(2)).params).tolist(),
    )
print(json.dumps(out))
"""


def test_sharded_data_gives_the_same_numbers():
    out = run_on_host_devices(CHILD, devices=4)
    single, sharded = out["False"], out["True"]
    assert "data" in sharded["spec"]
    # Same arithmetic up to the order of the cross-device sum: float64 rounding only.
    for key in ("loss", "mb", "grad"):
        np.testing.assert_allclose(sharded[key], single[key], rtol=1e-13, atol=1e-15)
    assert out["local"] == sharded  # one process's local rows: the same global arrays
    assert "not a multiple of the 4 devices" in out["error"]
    assert "6 rows on this process, not a multiple of its 4 devices" in out["local_error"]
    lin, lin_sharded = out["linFalse"], out["linTrue"]
    assert lin_sharded["rows"] == [[0, 16], [16, 32], [32, 48], [48, 64]]
    # Minibatches are gathered whole, then evaluated as on one device: bit for bit. Full
    # batch: four partial sums all-reduced, another summation order (a few ulps at most).
    np.testing.assert_array_equal(lin_sharded["sgd"], lin["sgd"])
    np.testing.assert_allclose(lin_sharded["gd"], lin["gd"], rtol=1e-15, atol=1e-16)


def test_central_flows_example_is_the_reference_notebooks_network():
    """The reference example: 433 parameters (8-16-16-1), 128 points; its draws are float32 (the
    notebook runs without x64), so the float64 problem holds exactly the float32 values."""
    p64 = networks.central_flows_example()
    p32 = networks.central_flows_example(dtype=jnp.float32)
    assert p64.num_params == p32.num_params == 8 * 16 + 16 + 16 * 16 + 16 + 16 + 1
    assert {a.dtype for a in jax.tree.leaves(p32.params0)} == {jnp.dtype(jnp.float32)}
    assert {a.dtype for a in jax.tree.leaves(p64.params0)} == {jnp.dtype(jnp.float64)}
    for a, b in zip(
        jax.tree.leaves((p64.params0, p64.data)), jax.tree.leaves((p32.params0, p32.data))
    ):
        assert a.shape == b.shape and np.array_equal(np.asarray(a), np.asarray(b, np.float64))
    assert p64.data[0].shape == (128, 8) and p64.data[1].shape == (128, 1)
    # biases start at zero, kernels do not (LeCun-normal, truncated at two standard deviations)
    layers = p64.params0.layers
    assert all(not np.any(np.asarray(lin.bias)) for lin in layers)
    for lin in layers:
        w = np.asarray(lin.weight)
        assert np.all(np.abs(w) <= 2 * np.sqrt(1.0 / w.shape[1]) / 0.8796) and np.std(w) > 0


def test_shard_flags_and_non_finite_inputs_are_refused():
    """`shard=0`/`1` passed `choice` (0 == False) and NaN inputs were accepted (a NaN loss)."""
    x, y = networks.digits(20)
    small = networks.mlp(64, 10, width=4, depth=1, key=jax.random.key(0))
    for bad in (0, 1, "yes"):
        with pytest.raises(ValueError, match="shard must be one of"):
            networks.network_problem(small, (x, y), shard=bad)
    networks.network_problem(small, (x, y), shard=np.bool_(False))
    with pytest.raises(ValueError, match="inputs x must be finite; 1 of their 1280 entries"):
        networks.network_problem(small, (x.at[3, 5].set(jnp.nan), y))
    yf = jnp.zeros((20, 10)).at[0, 0].set(jnp.inf)
    with pytest.raises(ValueError, match="float targets y must be finite"):
        networks.network_problem(small, (x, yf))


def test_full_batch_minibatch_is_the_full_loss():
    """`batch_size=None` (B = n): the stochastic loss is the full loss itself, with no random
    draw (a draw of all n rows, Floyd's or a permutation, only reordered the same mean)."""
    p = _mlp_problem("cross_entropy")
    key = jax.random.key(3)
    assert float(p.stochastic_loss(p.params0, key)) == float(p.loss(p.params0))
    jaxpr = str(jax.make_jaxpr(p.stochastic_loss)(p.params0, key))
    assert "random_bits" not in jaxpr and "= sort[" not in jaxpr


def test_a_cnn_refuses_images_of_another_size_and_data_may_be_lists():
    """`SmallCNN(size=7)` ran 8×8 images without a word (its convolutions take any side, and
    sides 7 and 8 reach the same head); `data` as nested lists raised an AttributeError."""
    xi, yi = networks.digits(20, image=True)
    for kwargs in (dict(size=7), dict(size=9), dict(in_channels=2)):
        cnn = networks.SmallCNN(channels=2, key=jax.random.key(0), **kwargs)
        with pytest.raises(ValueError, match=r"do not fit the model SmallCNN.*takes one image"):
            networks.network_problem(cnn, (xi, yi))
    x, y = networks.digits(20)
    small = networks.mlp(64, 10, width=4, depth=1, key=jax.random.key(0))
    listed = networks.network_problem(small, (np.asarray(x).tolist(), np.asarray(y).tolist()))
    arrays = networks.network_problem(small, (x, y))
    np.testing.assert_allclose(listed.loss(listed.params0), arrays.loss(arrays.params0), rtol=1e-15)
    with pytest.raises(ValueError, match=r"data must be a pair \(x, y\)"):
        networks.network_problem(small, (x, y, y))
    with pytest.raises(ValueError, match="leading sample axis"):
        networks.network_problem(small, (x, jnp.asarray(3)))
