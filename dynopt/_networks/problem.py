r"""Networks as finite-sum problems: $L(\theta) = \frac1n\sum_i \ell(f_\theta(x_i), y_i)$ over
the network's weights $\theta$ (a pytree), full-batch or on minibatches, the data axis
optionally sharded over devices."""

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._custom_types import Array, Params, PyTree, Scalar
from .._problem import Problem
from .._problems.finite_sum import finite_sum
from .._sharding import data_mesh as data_mesh, shard_data as shard_data
from .._validation import choice


LOSSES = ("mse", "cross_entropy")


def _targets(y: Array, num_outputs: int, dtype) -> Array:
    """One-hot rows for integer labels, the targets themselves otherwise."""
    if jnp.issubdtype(y.dtype, jnp.integer):
        return jax.nn.one_hot(y, num_outputs, dtype=dtype)
    return jnp.reshape(y, (num_outputs,)).astype(dtype)


def _sample_loss(params: Params, sample: tuple[Array, Array], static: PyTree, kind: str) -> Scalar:
    x, y = sample
    out = eqx.combine(params, static)(x)
    if kind == "cross_entropy":
        return optax.softmax_cross_entropy_with_integer_labels(out, y)
    return 0.5 * jnp.sum((out - _targets(y, out.shape[0], out.dtype)) ** 2)


def network_problem(
    model: eqx.Module,
    data: tuple[Array, Array],
    *,
    loss: Literal["mse", "cross_entropy"] = "mse",
    batch_size: int | None = None,
    replace: bool = False,
    shard: bool | Literal["local"] = False,
    name: str | None = None,
) -> Problem:
    r"""The loss of `model` (any callable `eqx.Module` on one unbatched input) on `data`:

    $$L(\theta) = \frac1n\sum_{i=1}^n \ell(f_\theta(x_i), y_i),\qquad
      \ell_{\rm mse}(f, y) = \tfrac12\|f - t(y)\|^2,\quad
      \ell_{\rm ce}(f, y) = -\log\operatorname{softmax}(f)_y,$$

    with $t(y)$ the one-hot row of an integer label (or the target itself for float $y$), the
    inputs and float targets cast to the model's floating dtype (a float32 model on float64
    data is a float32 problem). The
    parameters are the model's floating arrays (`eqx.partition(model, eqx.is_inexact_array)`:
    the model itself, non-array fields set to `None`), so `run`, `solve` and the sharpness
    tools see the network's own pytree; `eqx.combine(params, static)` rebuilds the model.

    **Arguments:**

    - `model`: an `eqx.Module` mapping one input `x[i]` to a 1-D output.
    - `data`: `(x, y)` sharing the leading sample axis; `y` integer labels (both losses) or
      float targets of the output's shape (`"mse"` only).
    - `loss`: `"mse"` or `"cross_entropy"`.
    - `batch_size`: the minibatch size of `run(..., key=...)` (sampled as `replace` says);
      `None`: the whole data set (without replacement that is the full batch: the stochastic
      loss is then the full loss, with no draw).
    - `replace`: `False` (the minibatch drawn without replacement, $B \le n$) or `True` (with
      replacement, any $B \ge 1$), as `problems.finite_sum`; `sde.SGDNoise(η, B, replace=...)`
      models either.
    - `shard`: `False`; `True`: split the sample axis of `data` (the whole data set, the
      same on every process) over all devices of all processes (`shard_data`); `"local"`:
      `data` holds only this process's rows (every process the same number), stacked process
      by process into the global data set (`shard_data(..., local=True)`: a data set too big
      for one host, each host loading its part). Checks run on the local rows.

    **Returns:** a `dynopt.Problem` (a finite sum: `data`, `sample_loss_fn`, `batch_size` set).

    **Raises:** `ValueError` when `model` holds stateful layers (`eqx.nn.BatchNorm`, ...),
    `data` is not a pair of arrays (or nested lists) with a shared leading sample axis, the
    inputs do not fit the model's input shape, the outputs are not 1-D, a label is out of
    range of the outputs, float targets meet cross-entropy, an input or float target is NaN
    or infinite, or `shard` is not one of the three above.
    """
    choice("loss", loss, LOSSES)
    # Not `choice`: 0 and 1 equal False and True.
    if not (isinstance(shard, bool | np.bool_) or (isinstance(shard, str) and shard == "local")):
        raise ValueError(f"shard must be one of [False, True, 'local'], got {shard!r}.")
    shard = shard if isinstance(shard, str) else bool(shard)
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise ValueError(
            f"data must be a pair (x, y) of arrays, got {type(data).__name__}"
            + (f" of length {len(data)}." if isinstance(data, tuple | list) else ".")
        )
    # Arrays as given (a sharded jax.Array stays so, NumPy stays on the host until sharded);
    # nested lists become NumPy arrays.
    x, y = (a if isinstance(a, jax.Array | np.ndarray) else np.asarray(a) for a in data)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(
            f"data: x and y need a leading sample axis, got shapes {x.shape} and {y.shape}."
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"data: x and y must share the sample axis, got {x.shape} and {y.shape}.")
    if x.shape[0] == 0:
        raise ValueError("data must hold at least one sample (x and y are empty).")
    is_state = lambda leaf: isinstance(leaf, eqx.nn.StateIndex)
    if any(map(is_state, jax.tree.leaves(model, is_leaf=is_state))):
        # Called as model(x), it failed deep inside, reported as a shape mismatch.
        raise ValueError(
            "model holds stateful layers (an eqx.nn.StateIndex: eqx.nn.BatchNorm, "
            "eqx.nn.SpectralNorm), called as model(x, state); network_problem "
            "takes a stateless model called as model(x): use eqx.nn.LayerNorm or no "
            "normalisation."
        )
    params, static = eqx.partition(model, eqx.is_inexact_array)
    # The data take the model's dtype: float64 data (the default with x64, e.g. `digits()`)
    # would otherwise promote a float32 model's loss to float64, or fail under strict promotion.
    leaves = jax.tree.leaves(params)
    if leaves:
        with jax.numpy_dtype_promotion("standard"):
            x = x.astype(jnp.result_type(*leaves))
    try:
        out = jax.eval_shape(model, jax.ShapeDtypeStruct(x.shape[1:], x.dtype))
    except Exception as e:  # a shape mismatch deep inside a layer
        raise ValueError(
            f"data: inputs of shape {tuple(x.shape[1:])} (x.shape = {tuple(x.shape)}) do not fit "
            f"the model {type(model).__name__}: {type(e).__name__}: {e}"
        ) from e
    if out.ndim != 1:
        raise ValueError(f"the model must return a 1-D output per sample, got shape {out.shape}.")
    (num_out,) = out.shape
    if jnp.issubdtype(y.dtype, jnp.integer):
        if y.ndim != 1 or int(jnp.min(y)) < 0 or int(jnp.max(y)) >= num_out:
            raise ValueError(
                f"data: integer labels must be a 1-D array in [0, {num_out}) (the model's "
                f"{num_out} outputs), got shape {y.shape}, range [{int(jnp.min(y))}, "
                f"{int(jnp.max(y))}]."
            )
    else:
        if loss == "cross_entropy":
            raise ValueError("loss='cross_entropy' needs integer labels y; use loss='mse'.")
        if y.shape[1:] != (num_out,) and not (num_out == 1 and y.ndim == 1):
            raise ValueError(
                f"data: float targets must have shape (n, {num_out}), got {tuple(y.shape)}."
            )
        y = y.astype(out.dtype)
    x = x.astype(out.dtype)
    for what, arr in (("inputs x", x), ("float targets y", y)):
        if jnp.issubdtype(arr.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(arr))):
            bad = int(jnp.sum(~jnp.isfinite(arr)))
            raise ValueError(
                f"data: the {what} must be finite; {bad} of their {arr.size} entries are NaN "
                "or inf."
            )
    data = (x, y)
    if shard:
        data = shard_data(data, local=shard == "local")
    n = data[0].shape[0]
    sample_loss = eqx.Partial(_sample_loss, static=static, kind=loss)
    label = name or f"{type(model).__name__}({loss}, n={n})"
    return finite_sum(
        sample_loss,
        data,
        params,
        batch_size=n if batch_size is None else batch_size,
        replace=replace,
        name=label,
    )
