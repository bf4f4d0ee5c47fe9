"""Small `equinox.nn` networks: an MLP and a convolutional net for 8×8 images."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Key
from .._validation import function, one_key, positive_int


def floating_dtype(dtype):
    """`dtype` as a NumPy dtype when it is a real floating dtype (`None`: JAX's default float
    dtype, float64 with `jax_enable_x64`); else a `ValueError` naming `dtype`."""
    if dtype is None:
        return jnp.dtype(jnp.result_type(float))
    try:
        floating = jnp.issubdtype(dtype, jnp.floating)
    except TypeError:
        floating = False
    if not floating:  # an integer dtype failed deep inside the model's activation
        raise ValueError(f"dtype must be a real floating dtype (float32, float64), got {dtype!r}.")
    return jnp.dtype(dtype)


def mlp(
    in_size: int,
    out_size: int,
    *,
    width: int = 32,
    depth: int = 2,
    activation: Callable = jax.nn.tanh,
    dtype=None,
    key: Key,
) -> eqx.nn.MLP:
    r"""`equinox.nn.MLP` with `depth` hidden layers of `width` units (equinox's default
    initialization, drawn in `dtype`):
    $x \mapsto W_{d}\,\phi(\cdots\phi(W_0x + b_0)\cdots) + b_{d}$; `depth=0` is the linear model
    $x \mapsto W_0x + b_0$ (as in equinox; `width` is then unused).

    **Arguments:** `in_size`, `out_size`, `width` (positive integers), `depth` (an integer
    $\ge 0$), `activation`, `dtype` (a real floating dtype; `None`: JAX's default, float64
    with `jax_enable_x64`, so `dtype=jnp.float32` is how to train in float32 next to dynopt's
    float64 references), `key`.

    **Raises:** `ValueError` for a size that is not a positive integer, a negative `depth`,
    an `activation` that is not callable, a `dtype` that is not a real floating dtype or a
    `key` that is not one PRNG key.
    """
    for name, value in (("in_size", in_size), ("out_size", out_size), ("width", width)):
        positive_int(name, value)
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 0:
        raise ValueError(f"depth must be an integer >= 0 (0: a linear model), got {depth!r}.")
    function("activation", activation, "a function (e.g. jax.nn.tanh)")
    dtype = floating_dtype(dtype)
    one_key("key", key)
    return eqx.nn.MLP(
        in_size, out_size, width, int(depth), activation=activation, dtype=dtype, key=key
    )


class SmallCNN(eqx.Module):
    r"""Two 3×3 convolutions (the second with stride 2) and a linear read-out, for
    `(channels, size, size)` images: $x \mapsto W\,\mathrm{vec}(\phi(C_2\,\phi(C_1 x)))$.

    **Arguments:** `in_channels`, `size` (the image side), `out_size`, `channels` (per
    convolution), `activation`, `dtype` (of the weights, as `mlp`'s; `None`: JAX's default),
    `key`.

    **Raises:** `ValueError` for a size or count that is not a positive integer, an
    `activation` that is not callable, a `dtype` that is not a real floating dtype or a `key`
    that is not one PRNG key, and when called on an input whose shape is not
    `(in_channels, size, size)`.
    """

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    head: eqx.nn.Linear
    activation: Callable = eqx.field(static=True)
    input_shape: tuple[int, int, int] = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int = 1,
        size: int = 8,
        out_size: int = 10,
        *,
        channels: int = 8,
        activation: Callable = jax.nn.tanh,
        dtype=None,
        key: Key,
    ):
        for name, value in (
            ("in_channels", in_channels),
            ("size", size),
            ("out_size", out_size),
            ("channels", channels),
        ):
            positive_int(name, value)
        function("activation", activation, "a function (e.g. jax.nn.tanh)")
        dtype = floating_dtype(dtype)
        one_key("key", key)
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(in_channels, channels, 3, padding=1, dtype=dtype, key=k1)
        self.conv2 = eqx.nn.Conv2d(channels, channels, 3, stride=2, padding=1, dtype=dtype, key=k2)
        side = (size + 1) // 2
        self.head = eqx.nn.Linear(channels * side * side, out_size, dtype=dtype, key=k3)
        self.activation = activation
        self.input_shape = (in_channels, size, size)

    def __call__(self, x: Array) -> Array:
        # The convolutions take any image side, and sides 2s - 1 and 2s reach the head alike: a
        # net built for 7×7 images ran 8×8 ones without a word.
        if tuple(x.shape) != self.input_shape:
            raise ValueError(
                f"SmallCNN takes one image of shape (in_channels, size, size) = "
                f"{self.input_shape}, got shape {tuple(x.shape)}."
            )
        h = self.activation(self.conv1(x))
        h = self.activation(self.conv2(h))
        return self.head(jnp.ravel(h))
