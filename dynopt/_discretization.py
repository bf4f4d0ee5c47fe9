"""`Discretization`: an optax transform together with its continuous-time step."""

import inspect
import re
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._custom_types import Array, ScalarLike
from ._validation import positive


def widest_dtype(params: Any) -> np.dtype:
    """The widest dtype of the leaves of `params` (the dtype hyper-parameters are cast to).

    Computed under standard promotion: a mixed tree (bfloat16 weights with float32 biases) has
    no implicit promotion path under `jax_numpy_dtype_promotion="strict"`, yet it is a valid
    problem; each leaf still keeps its own dtype (`dynopt._maps.base.standard_promotion`).
    """
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(*jax.tree.leaves(params))


class Discretization(eqx.Module):
    r"""A discrete optimizer and its clock: step $k$ of `transform` sits at time $t = k\,\Delta t$.

    The transform is rebuilt from `factory(**hyperparams, **options)` on access, so the numeric
    hyper-parameters are pytree leaves: a `Discretization` can be passed through `jit` and `vmap`
    (a sweep over step sizes compiles once), while `factory` (e.g. `optax.sgd`) stays static.

    **Arguments:**

    - `factory`: a function returning an `optax.GradientTransformation`, e.g. `optax.sgd`.
    - `hyperparams`: its numeric keyword arguments (the discrete hyper-parameters), as arrays.
    - `dt`: the continuous time advanced by one step.
    - `options`: static keyword arguments (booleans, names), as a tuple of `(key, value)` pairs.
    - `init_fn`: `None` (the transform's own `init`, e.g. optax's zero momentum), or a module-level
      function `(discretization, params, problem) -> opt_state` for discretizations whose
      correspondence needs another initial state (a half-step velocity, a slow-manifold momentum).
      `run` and `compare` start from `discretization.init(params, problem)`.

    **Example:** gradient descent with step $h$ is
    `Discretization(optax.sgd, {"learning_rate": h}, dt=h)`.
    """

    factory: Callable[..., optax.GradientTransformation] = eqx.field(static=True)
    hyperparams: dict[str, Array]
    dt: Array
    options: tuple[tuple[str, Any], ...] = eqx.field(static=True, default=())
    init_fn: Callable[..., Any] | None = eqx.field(static=True, default=None)

    def __init__(
        self,
        factory: Callable[..., optax.GradientTransformation],
        hyperparams: dict[str, ScalarLike],
        dt: ScalarLike,
        options: tuple[tuple[str, Any], ...] = (),
        init_fn: Callable[..., Any] | None = None,
    ):
        self.factory = factory
        self.hyperparams = {k: jnp.asarray(v) for k, v in hyperparams.items()}
        self.dt = positive("dt", jnp.asarray(dt))
        self.options = tuple(options)
        self.init_fn = init_fn

    @property
    def transform(self) -> optax.GradientTransformation:
        """The optax transform with these hyper-parameters."""
        return self.factory(**self.hyperparams, **dict(self.options))

    def init(self, params, problem):
        """The optimizer state at step 0: `transform.init(params)` unless `init_fn` is set."""
        if self.init_fn is None:
            return self.transform.init(params)
        return self.init_fn(self, params, problem)

    def astype(self, dtype) -> "Discretization":
        """Cast the floating hyper-parameters (not `dt`) to `dtype`, so that a float32 run stays
        float32 under strict dtype promotion."""
        hp = {
            k: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v
            for k, v in self.hyperparams.items()
        }
        return eqx.tree_at(lambda d: d.hyperparams, self, hp)


def accepted_extra_args(update: Callable, extra: dict[str, Any]) -> dict[str, Any]:
    """The entries of `extra` that `update` accepts by name: all of them when it takes
    `**kwargs` (optax's own transforms, or its signature cannot be read); else those it
    declares (`optax.contrib.sam` declares only `grad_fn`)."""
    try:
        params = inspect.signature(update).parameters.values()
    except (TypeError, ValueError):
        return extra
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return extra
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = {p.name for p in params if p.kind in named}
    return {k: v for k, v in extra.items() if k in names}


def update_with_extra_args(tx, updates, state, params, extra: dict[str, Any]):
    """`tx.update(updates, state, params, **extra)` with the extra arguments `tx` accepts
    (`accepted_extra_args`), dropping one that a transform inside refuses by name:
    `optax.chain` takes `**kwargs` and hands every one to each link, and a link that declares
    its own (`optax.contrib.sam`: only `grad_fn`) raises `TypeError` for the others. A dropped
    argument is one it could not have read; the retry happens at trace time only."""
    extra = accepted_extra_args(tx.update, extra)
    while True:
        try:
            return tx.update(updates, state, params, **extra)
        except TypeError as e:
            match = re.search(r"unexpected keyword argument '(\w+)'", str(e))
            if match is None or match.group(1) not in extra:
                raise
            extra = {k: v for k, v in extra.items() if k != match.group(1)}
