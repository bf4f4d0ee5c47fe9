r"""The example network of the public central-flow reference code, rebuilt without flax: the same
data, the same initial weights."""

import equinox as eqx
import jax
import jax.numpy as jnp

from .._problem import Problem
from .models import floating_dtype, mlp
from .problem import network_problem


def _stream_key(i: int) -> jax.Array:
    """The `i`-th key drawn from `flax.nnx.Rngs(0)`'s default stream: `fold_in(key(0), i)`."""
    return jax.random.fold_in(jax.random.key(0), i)


def central_flows_example(*, dtype=jnp.float64) -> Problem:
    r"""The example of the public JAX central-flow code (`alex-damian/central_flows_jax`,
    `examples/mlp.ipynb`): an MLP 8 → 16 → 16 → 1 (swish) fitting $n = 128$ standard-normal
    points with standard-normal targets, its 433 parameters at the notebook's initialization.

    The notebook draws everything from one `flax.nnx.Rngs(0)`, whose $i$-th key is
    `jax.random.fold_in(jax.random.key(0), i)`: the inputs (key 0), the targets (1), then each
    `nnx.Linear` a kernel key and a bias key (2–7; LeCun-normal kernels, a truncated normal of
    variance 1/fan-in, and zero biases). It runs in float32 (no x64), so the draws are made in
    float32 and cast to `dtype`. Its loss is $\frac1n\sum(f - y)^2$, twice dynopt's ½-MSE:
    its GD learning rate 0.1 is $\eta = 0.2$ here.

    Checked against what the notebook's run reports (see `benchmarks/central.py`): GD at
    $\eta = 0.2$ and the central flow reach $\eta\lambda_{\max} = 2$ at step 350, and the
    gradient flow's loss is off GD's σ = 50-smoothed loss by up to 56.6% on steps 350–900
    (the notebook's run: 350 and 56%).

    **Returns:** a `dynopt.Problem` (`network_problem`, MSE, full batch) in `dtype`.

    **Raises:** `ValueError` for a `dtype` that is not a real floating dtype.
    """
    dtype = floating_dtype(dtype)
    f32 = jnp.float32
    x = jax.random.normal(_stream_key(0), (128, 8), f32)
    y = jax.random.normal(_stream_key(1), (128,), f32)[:, None]
    model = mlp(8, 1, width=16, depth=2, activation=jax.nn.swish, key=jax.random.key(0))
    kernel_init = jax.nn.initializers.lecun_normal()
    # nnx stores a kernel as (in, out), equinox's weight is (out, in); the bias keys (odd)
    # are drawn and unused, as nnx does for its zero biases
    kernels = [
        kernel_init(_stream_key(2 + 2 * j), lin.weight.shape[::-1], f32).T
        for j, lin in enumerate(model.layers)
    ]
    layers = tuple(
        eqx.tree_at(lambda lin: (lin.weight, lin.bias), lin, (w, jnp.zeros(lin.bias.shape, f32)))
        for w, lin in zip(kernels, model.layers)
    )
    model = eqx.tree_at(lambda m: m.layers, model, layers)
    cast = lambda tree: jax.tree.map(
        lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree
    )
    return network_problem(cast(model), (cast(x), cast(y)), name="central_flows_example")
