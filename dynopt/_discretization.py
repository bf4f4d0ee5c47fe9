"""`Discretization`: an optax transform together with its continuous-time step."""

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._custom_types import Array, ScalarLike
from ._validation import function, positive


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
      Floating ones are stored weakly typed, as Python floats are (`weakly_typed`): optax
      computes with them as with Python floats, whatever the parameters' dtype, and a Python
      float, a NumPy scalar and a JAX array scalar give the same leaf type (no recompilation
      between them). Integer ones (a period, a count) are kept as given.
    - `dt`: the continuous time advanced by one step; an integer is taken as a float, and it
      is stored weakly typed as the floating hyper-parameters are.
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
        options = _check_arguments(factory, hyperparams, options, init_fn)
        self.factory = factory
        self.hyperparams = {k: _weak_float(_hyperparameter(k, v)) for k, v in hyperparams.items()}
        dt = jnp.asarray(dt)
        if jnp.ndim(dt) > 0 and jnp.size(dt) == 0:
            raise ValueError("dt is an empty batch of step sizes; give at least one.")
        if jnp.issubdtype(dt.dtype, jnp.integer) or jnp.issubdtype(dt.dtype, jnp.bool_):
            dt = dt.astype(float)  # an integer dt would make integer save times
        self.dt = positive("dt", _weak_float(dt))
        self.options = options
        self.init_fn = init_fn

    @property
    def transform(self) -> optax.GradientTransformation:
        """The optax transform with these hyper-parameters."""
        try:
            return self.factory(**self.hyperparams, **dict(self.options))
        except jax.errors.ConcretizationTypeError as e:
            name = getattr(self.factory, "__name__", repr(self.factory))
            raise TypeError(
                f"{name}(...) branched in Python on a hyper-parameter "
                f"({', '.join(self.hyperparams)}): dynopt passes them traced (array leaves: a "
                "new value does not recompile), so the factory must compute with them in jnp "
                "(e.g. a schedule `lambda k: lr * decay**k` instead of optax.exponential_decay, "
                "which tests `decay_rate == 0` in Python), or take the value as a static option "
                "(`Discretization.options`, recompiled per value)."
            ) from e

    def init(self, params, problem):
        """The optimizer state at step 0: `transform.init(params)` unless `init_fn` is set.
        The state `init_fn` returns must have the structure and shapes of `transform.init`'s
        (`ValueError` at trace time, naming `init_fn` and the first leaf that differs: its
        `update` reads that state, and a mismatch otherwise surfaces as a broadcasting or scan
        carry error inside the run)."""
        if self.init_fn is None:
            return self.transform.init(params)
        state = self.init_fn(self, params, problem)
        _check_like_init(self, state, jax.eval_shape(self.transform.init, params))
        return state

    def weakly_typed(self) -> "Discretization":
        """The floating hyper-parameters (not `dt`) weakly typed, as Python floats are: what
        optax computes from them alone ($1 - b_2$, $b_2^k$) stays in their own precision, and
        they take the parameters' dtype only where they meet the parameters or the state. A
        bfloat16 run with $b_2 = 0.999$ then sees $1 - b_2 = 10^{-3}$, as a hand-written loop
        with `optax.adam(lr, b2=0.999)` does, where `astype(bfloat16)` would round $b_2$ to 1
        first. A weak type combines with every float dtype also under strict promotion. The
        values stay traced leaves (a sweep compiles once)."""
        hp = {k: _weak_float(v) for k, v in self.hyperparams.items()}
        return eqx.tree_at(lambda d: d.hyperparams, self, hp)

    def astype(self, dtype) -> "Discretization":
        """Cast the floating hyper-parameters (not `dt`) to `dtype`, so that a float32 run stays
        float32 under strict dtype promotion."""
        hp = {
            k: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v
            for k, v in self.hyperparams.items()
        }
        return eqx.tree_at(lambda d: d.hyperparams, self, hp)


def _name(fn: Any) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _check_arguments(factory, hyperparams, options, init_fn) -> tuple[tuple[str, Any], ...]:
    """`ValueError` for arguments that would fail only when the transform is first built, deep
    inside a run (a `TypeError` from the factory's call): a factory that is not callable,
    hyper-parameters that are not a dict of names, options that are not `(name, value)` pairs,
    a name given twice, or a name the factory does not take (where its signature can be read
    and takes no `**kwargs`). Returns the options as a tuple of pairs (a dict is taken)."""
    function(
        "factory", factory, "a function returning an optax.GradientTransformation (e.g. optax.sgd)"
    )
    if not isinstance(hyperparams, Mapping) or not all(isinstance(k, str) for k in hyperparams):
        raise ValueError(
            "hyperparams must be a dict of the factory's numeric keyword arguments, e.g. "
            f'{{"learning_rate": 0.1}}, got {type(hyperparams).__name__}.'
        )
    if isinstance(options, Mapping):
        options = tuple(options.items())
    try:
        options = tuple((k, v) for k, v in options)
    except (TypeError, ValueError):
        options = None
    if options is None or not all(isinstance(k, str) for k, _ in options):
        raise ValueError(
            "options must be (name, value) pairs of the factory's static keyword arguments, "
            'e.g. (("nesterov", True),) or a dict.'
        )
    function(
        "init_fn",
        init_fn,
        "None or a function (discretization, params, problem) -> opt_state",
        allow_none=True,
    )
    names = [*hyperparams, *(k for k, _ in options)]
    twice = sorted({k for k in names if names.count(k) > 1})
    if twice:
        raise ValueError(f"{twice} given both as hyperparams and as options; give each once.")
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a signature that cannot be read: the call will tell
        return options
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return options
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    takes = [p.name for p in params if p.kind in named]
    unknown = [k for k in names if k not in takes]
    if unknown:
        raise ValueError(
            f"{unknown} are not keyword arguments of {_name(factory)}(...), which takes "
            f"{takes} (hyperparams and options are passed to it by name)."
        )
    return options


def _hyperparameter(name: str, value: Any) -> jax.Array:
    """`value` as an array, or a `ValueError` naming the hyper-parameter (a string, a
    function: a schedule belongs inside the factory)."""
    try:
        x = jnp.asarray(value)
    except TypeError as e:
        raise ValueError(
            f"hyperparams[{name!r}] must be a number or an array of numbers, got "
            f"{type(value).__name__}: {value!r:.60}."
        ) from e
    return x


def _weak_float(x: jax.Array) -> jax.Array:
    """A floating `x` as a weakly typed float of the default float dtype, the type of a Python
    float (`lax.full_like` gives its result the weak type of its template, here the Python
    float 0.0; a traced `x` stays traced); any other `x` unchanged."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x
    if jnp.ndim(x) > 0:
        return jax.vmap(_weak_float)(x)
    return jax.lax.full_like(0.0, x)


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


def _check_like_init(disc: "Discretization", state, expected) -> None:
    """`ValueError` unless `state` has the tree structure and leaf shapes of `expected` (the
    transform's own initial state); dtypes are the optimizer's business (a float32 leaf in a
    float64 run is warned about by `run`)."""
    name = getattr(disc.init_fn, "__name__", repr(disc.init_fn))
    factory = getattr(disc.factory, "__name__", repr(disc.factory))
    got, got_def = jax.tree_util.tree_flatten_with_path(state)
    want, want_def = jax.tree_util.tree_flatten_with_path(expected)
    if got_def != want_def:
        raise ValueError(
            f"init_fn {name} returned a state whose structure differs from "
            f"{factory}(...).init(params)'s, which the transform's update reads: got "
            f"{str(got_def)[:300]}, expected {str(want_def)[:300]}."
        )
    for (path, g), (_, w) in zip(got, want):
        if jnp.shape(g) != w.shape:
            raise ValueError(
                f"init_fn {name} returned a state whose leaf {jax.tree_util.keystr(path)} has "
                f"shape {jnp.shape(g)}, where {factory}(...).init(params) has {w.shape}."
            )
