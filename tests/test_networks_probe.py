"""dynopt.networks probed on settings the main tests do not use: a float32 model on the
(float64, x64) data sets, and a non-finite `separation`."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dynopt import networks


def _to(dtype, tree):
    return jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_float32_model_on_float64_data_is_a_float32_problem(loss):
    """`digits()` is float64 under x64; a float32 model on it gave a misleading "inputs do not
    fit the model" error under strict promotion (a float64 loss under standard promotion). The
    data now take the model's dtype; the loss equals the float32 loss computed by hand.

    Tolerance: the same float32 program up to summation order, 64 inputs per unit:
    ~10 * eps32 relative."""
    x, labels = networks.digits(40)
    model = _to(jnp.float32, networks.mlp(64, 10, width=8, depth=1, key=jax.random.key(0)))
    problem = networks.network_problem(model, (x, labels), loss=loss)
    assert problem.data[0].dtype == jnp.float32
    value = problem.loss(problem.params0)
    assert value.dtype == jnp.float32
    out = jax.vmap(model)(x.astype(jnp.float32))
    if loss == "mse":
        ref = jnp.mean(0.5 * jnp.sum((out - jax.nn.one_hot(labels, 10, dtype=out.dtype)) ** 2, 1))
    else:
        ref = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, labels))
    np.testing.assert_allclose(float(value), float(ref), rtol=10 * float(jnp.finfo("float32").eps))
    grads = jax.grad(problem.loss)(problem.params0)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


def test_float32_model_with_float64_targets():
    """Float targets follow the model's dtype too (regression, `gaussian_regression`)."""
    x, y = networks.gaussian_regression(16, 3, 2)
    model = _to(jnp.float32, networks.mlp(3, 2, width=4, depth=1, key=jax.random.key(1)))
    problem = networks.network_problem(model, (x, y))
    assert problem.data[0].dtype == problem.data[1].dtype == jnp.float32
    assert problem.loss(problem.params0).dtype == jnp.float32


@pytest.mark.parametrize("separation", [np.nan, np.inf, -1.0])
def test_gaussian_classes_separation_checked(separation):
    """A NaN separation made every input NaN without a word."""
    with pytest.raises(ValueError, match="separation must be >= 0"):
        networks.gaussian_classes(8, 2, 2, separation=separation)
    x, _ = networks.gaussian_classes(8, 2, 2, separation=0.0)  # 0: one Gaussian, all classes
    assert np.all(np.isfinite(np.asarray(x)))


@pytest.mark.parametrize("dtype", [jnp.int32, "complex64", "nonsense"])
def test_central_flows_example_dtype_checked(dtype):
    """An integer dtype failed inside the model's swish ("inputs do not fit the model")."""
    with pytest.raises(ValueError, match="dtype must be a real floating dtype"):
        networks.central_flows_example(dtype=dtype)


@pytest.mark.parametrize("seed", [None, -1, 1.5, "0", True])
def test_digits_seed_checked(seed):
    """seed=None drew a different subset on every call (NumPy's fresh entropy); the others
    raised NumPy's TypeError/ValueError without naming the argument."""
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
        networks.digits(20, seed=seed)
    x1, y1 = networks.digits(20, seed=np.int64(3))
    x2, y2 = networks.digits(20, seed=3)
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(x2))
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))


@pytest.mark.parametrize("seed", [1.5, "0", True, None, -3, 2**32])
@pytest.mark.parametrize("make", [networks.gaussian_classes, networks.gaussian_regression])
def test_gaussian_data_seed_checked(make, seed):
    """A non-integer seed was JAX's TypeError from `jax.random.key` (or, for `True`, silently
    seed 1); now a ValueError naming seed. Seeds follow digits' rule (NumPy's): an integer in
    [0, 2**32), as every data constructor (a negative one was taken here, refused there)."""
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
        make(8, seed=seed)
    x1, y1 = make(8, seed=np.int64(3))
    x2, y2 = make(8, seed=3)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    x3, _ = make(8, seed=2)
    assert not np.array_equal(x1, x3)


@pytest.mark.parametrize("image", ["no", 0, None])
def test_digits_image_flag_checked(image):
    """`digits(image="no")` returned images of shape (n, 1, 8, 8) without a word (any truthy
    value reshaped, any falsy one did not); now a ValueError naming image."""
    with pytest.raises(ValueError, match="image must be True or False"):
        networks.digits(10, image=image)
    assert networks.digits(10, image=np.bool_(True))[0].shape == (10, 1, 8, 8)


@pytest.mark.parametrize("activation", ["relu", 3, None])
def test_activation_must_be_callable(activation):
    """`mlp(..., activation="relu")` and `SmallCNN(activation=None)` built a model that failed
    only when called (Python's TypeError "'str' object is not callable"); now a ValueError
    naming activation, at construction."""
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="activation must be a function"):
        networks.mlp(2, 1, activation=activation, key=key)
    with pytest.raises(ValueError, match="activation must be a function"):
        networks.SmallCNN(activation=activation, key=key)
