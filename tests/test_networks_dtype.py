"""dynopt.networks for a researcher who trains in float32 next to dynopt's float64 references
(x64 on, as `compare` requires): the networks are built in the dtype asked for."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import pytest

from dynopt import networks


def _dtypes(tree) -> set:
    return {a.dtype for a in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_mlp_in_the_dtype_asked_for(dtype):
    """With x64 on, `mlp` built float64 weights only: a float32 network needed a tree-map cast
    by hand (no `dtype=`). Now its weights are drawn in `dtype`, as `eqx.nn.MLP(dtype=...)`
    draws them (bit for bit), and the digits problem on it computes in that dtype."""
    key = jax.random.key(0)
    model = networks.mlp(64, 10, width=8, depth=2, dtype=dtype, key=key)
    assert _dtypes(model) == {jnp.dtype(dtype)}
    own = eqx.nn.MLP(64, 10, 8, 2, activation=jax.nn.tanh, dtype=dtype, key=key)
    arrays = lambda m: jax.tree.leaves(eqx.filter(m, eqx.is_inexact_array))
    assert all(bool(jnp.array_equal(a, b)) for a, b in zip(arrays(model), arrays(own), strict=True))
    problem = networks.network_problem(model, networks.digits(32), loss="cross_entropy")
    assert problem.loss(problem.params0).dtype == dtype
    assert _dtypes(problem.grad(problem.params0)) == {jnp.dtype(dtype)}
    # one optax step keeps the network's dtype
    tx = optax.sgd(0.1)
    updates, _ = tx.update(problem.grad(problem.params0), tx.init(problem.params0))
    assert _dtypes(optax.apply_updates(problem.params0, updates)) == {jnp.dtype(dtype)}


def test_mlp_default_dtype_is_jax_default():
    assert _dtypes(networks.mlp(3, 2, width=4, key=jax.random.key(0))) == {jnp.dtype("float64")}


def test_small_cnn_in_the_dtype_asked_for():
    cnn = networks.SmallCNN(channels=2, dtype=jnp.float32, key=jax.random.key(2))
    assert _dtypes(cnn) == {jnp.dtype("float32")}
    problem = networks.network_problem(cnn, networks.digits(16, image=True), loss="cross_entropy")
    assert problem.loss(problem.params0).dtype == jnp.float32
    assert _dtypes(networks.SmallCNN(channels=2, key=jax.random.key(2))) == {jnp.dtype("float64")}


@pytest.mark.parametrize("dtype", [jnp.int32, "complex64", "nonsense", bool])
def test_network_dtype_checked(dtype):
    with pytest.raises(ValueError, match="dtype must be a real floating dtype"):
        networks.mlp(3, 2, width=4, dtype=dtype, key=jax.random.key(0))
    with pytest.raises(ValueError, match="dtype must be a real floating dtype"):
        networks.SmallCNN(channels=2, dtype=dtype, key=jax.random.key(0))
