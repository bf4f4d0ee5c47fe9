r"""`AbstractMap`: a discretization map, flow × step size ↦ optax optimizer and clock.

A map is the second half of a correspondence (the first is the flow): it holds the optax
factory, the discrete hyper-parameters as functions of the flow and the step $h$, the time step
$\Delta t(h)$, the initial optimizer state where optax's default breaks the correspondence, the
inverse map (optax hyper-parameters ↦ flow and $h$), the stability limit where known and the
claimed global order. `map(flow, h)` returns the `Discretization`; `flow.discretize(h)` is sugar
for the flow's default map.
"""

import abc
import dataclasses
import functools as ft
import types
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import optax

from .._custom_types import Array, ScalarLike
from .._discretization import Discretization, update_with_extra_args
from .._validation import as_hyperparameter, interval, is_traced


@ft.cache
def standard_promotion(
    factory: Callable[..., optax.GradientTransformation],
) -> Callable[..., optax.GradientTransformationExtraArgs]:
    """`factory` whose transforms run `init`/`update` under standard dtype promotion and return
    updates in the gradient's dtypes and the state in its own dtypes.

    Some optax 0.2.8 blocks are not strict-promotion clean: Adam's bias correction computes
    `1 - decay**count` with an `int32` count (raises once `decay` is an array, as in a traced
    sweep), and `scale_by_polyak` mixes a float64 `jnp.array(0.0)` into float32 updates. The
    wrapped transform performs the same operations; only a final cast to the gradient's dtype is
    added (a no-op when they agree).

    Mixed-dtype parameters (bfloat16 weights with float32 biases): the hyper-parameters carry
    the widest leaf dtype, so under standard promotion a momentum or moment estimate of a
    narrower leaf would come out wider, and the state of a `lax.scan` would change type. Each
    leaf of the new state is cast back to the dtype it had (every leaf keeps its dtype; a no-op
    for a single-dtype tree). Cached, so one factory gives one wrapper: the wrapper is a
    static field of the `Discretization`, and a new object would recompile.
    """

    @ft.wraps(factory)
    def wrapped(*args, **kwargs):
        return with_standard_promotion(factory(*args, **kwargs))

    return wrapped


def _cast_numeric_like(tree, like):
    """`optax.tree.cast_like` on the numeric leaves only: a PRNG key (optax.add_noise's
    state) has no `astype`."""

    def one(t, o):
        if not hasattr(o, "dtype") or jax.dtypes.issubdtype(o.dtype, jax.dtypes.prng_key):
            return t
        return t.astype(o.dtype)

    return jax.tree.map(one, tree, like)


def with_standard_promotion(
    tx: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    """One transform under standard promotion (see `standard_promotion`)."""
    tx = optax.with_extra_args_support(tx)

    def init_fn(params):
        with jax.numpy_dtype_promotion("standard"):
            return tx.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        with jax.numpy_dtype_promotion("standard"):
            new, new_state = update_with_extra_args(tx, updates, state, params, extra_args)
        return optax.tree.cast_like(new, updates), _cast_numeric_like(new_state, state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def rate_decay(name: str, rate: ScalarLike, step_size: ScalarLike) -> Array:
    r"""The EMA decay $\beta = 1 - a h$ of a rate $a$ discretized with step $h$, validated to lie in
    $[0, 1)$.

    **Arguments:**

    - `name`: the rate's name (the message names `1 - {name} * step_size` and suggests
      `step_size <= 1/{name}`).
    - `rate`: the rate $a$, a scalar (or array), concrete or traced.
    - `step_size`: the step $h$.

    **Returns:** $1 - a h$ (use the returned value: a traced one is checked by `eqx.error_if`,
    so $a h > 1$ under `vmap` raises).

    **Raises:** `ValueError` for a concrete $1 - a h$ outside $[0, 1)$, i.e.
    $a h \notin (0, 1]$.
    """
    return interval(
        f"1 - {name} * step_size",
        1 - rate * step_size,
        lower=0.0,
        upper=1.0,
        upper_open=True,
        hint=f"Take step_size <= 1/{name}.",
    )


def concrete_scalar(name: str, value: Any, **bounds) -> float:
    """`value` as a Python float, validated by `interval(name, value, **bounds)`; `ValueError`
    for a traced value or an array of several entries. For the host-side closed forms
    (`stability_limit`), which return one Python number for one flow and one curvature."""
    if is_traced(value):
        raise ValueError(
            f"{name} must be a concrete number, got a traced value: a stability limit is a "
            "Python float computed on the host; call it outside jit/vmap/grad."
        )
    interval(name, value, **bounds)
    if jax.numpy.ndim(value) != 0:
        raise ValueError(
            f"{name} must be a scalar (one flow, one curvature), got shape "
            f"{jax.numpy.shape(value)}; for a batch, call stability_limit once per value."
        )
    return float(value)


def require_own_flow(map_: Any, flow: Any) -> None:
    """`ValueError` for a flow that names another map as its discretization. For the maps that
    read no field of their flow (gradient descent, sign descent): a wrong flow raises no
    `AttributeError` there, and `GradientDescent()(HeavyBall(1.0), h)` was plain GD, the
    discretization of another flow. A flow without `default_map` (a user's own) is taken."""
    own = getattr(type(flow), "default_map", None)
    if isinstance(own, type) and not isinstance(map_, own):
        raise ValueError(
            f"{type(map_).__name__} cannot discretize a {type(flow).__name__}: its iterates "
            f"do not depend on the flow's fields, so they would follow another flow. A "
            f"{type(flow).__name__} is discretized by {own.__name__} (flow.discretize(h)) or a "
            "map whose docstring names it."
        )


def _batched_fields(flow: Any, h: Array) -> list[str]:
    """The names of `flow`'s concrete hyper-parameters (`hyperparameter` fields) that are
    batched (1-D); `ValueError` unless they and a batched `h` are 1-D of one shared length (a
    sweep is a batch of runs, one per entry)."""
    shapes = {"step_size": jax.numpy.shape(h)} if jax.numpy.ndim(h) else {}
    if dataclasses.is_dataclass(flow):
        for f in dataclasses.fields(flow):
            value = getattr(flow, f.name, None)
            if f.metadata.get("hyperparameter") and not is_traced(value) and jax.numpy.ndim(value):
                shapes[f"{type(flow).__name__}.{f.name}"] = jax.numpy.shape(value)
    if len({s for s in shapes.values()}) > 1 or any(len(s) > 1 for s in shapes.values()):
        listed = ", ".join(f"{k} {v}" for k, v in shapes.items())
        raise ValueError(
            f"batched hyper-parameters must be 1-D and share one length (one run per entry), "
            f"got {listed}."
        )
    return [k for k in shapes if k != "step_size"]


def _is_abstract_map(cls) -> bool:
    """An abstract base of maps: named `Abstract...` (equinox's convention), or with its
    `hyperparams` still abstract."""
    name = cls.__name__.lstrip("_")
    return name.startswith("Abstract") or getattr(cls.hyperparams, "__isabstractmethod__", False)


class AbstractMap(eqx.Module):
    r"""A discretization map: `map(flow, step_size) -> Discretization`.

    Subclasses (final modules, usually without fields) implement:

    - `factory`: the optax factory, a class attribute (e.g. `staticmethod(optax.sgd)`: a plain
      function would bind as a method); it is run under standard dtype promotion
      (`standard_promotion`), so raw optax optimizers work with traced hyper-parameters under
      `jax_numpy_dtype_promotion="strict"`.
    - `hyperparams(flow, h) -> dict`: the factory's numeric keyword arguments.
    - `order`: the claimed global order of the iterates against the flow, in $\Delta t$.

    and optionally (defaults: "nothing declared"):

    - `dt(flow, h)`: the time advanced by one step (default $h$);
    - `options(flow)`: static keyword arguments of the factory;
    - `init_fn`: a module-level `(discretization, params, problem) -> opt_state` when optax's
      initial state breaks the correspondence (default: the transform's own `init`);
    - `inverse(*hyperparams) -> (flow, h)`: optax hyper-parameters to the flow they follow
      and the step, both recovered (the battery's `inverse_round_trip` checks $h$ too): a map
      that is not injective (two pairs (flow, $h$) giving one optimizer) has no inverse and
      should declare none;
    - `stability_limit(flow, lambda_max)`: the largest stable $h$ on a quadratic whose top
      Hessian eigenvalue is `lambda_max` (`None`: not known), a Python float for one concrete
      flow and `lambda_max`. It may exceed the largest $h$ the map accepts (e.g. $ah \le 1$
      for the maps with $\beta = 1 - ah$ under strong damping): then every accepted $h$ is
      stable.
    """

    # Abstract class attributes (equinox's idiom): a concrete map without them is refused
    # when its class is created (`__init_subclass__`, with what to write), and equinox refuses
    # to instantiate any class that still lacks them.
    order: eqx.AbstractClassVar[float]
    factory: eqx.AbstractClassVar[Callable[..., optax.GradientTransformation]]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        factory = cls.__dict__.get("factory")
        if isinstance(factory, types.FunctionType) and not factory.__qualname__.startswith(
            f"{cls.__qualname__}."
        ):
            # A function assigned in the class body binds as a method: `self.factory(lr=h)`
            # would call it as `factory(self, lr=h)`.
            raise TypeError(
                f"{cls.__name__}.factory is the plain function {factory.__qualname__}, which "
                "Python binds as a method (the map itself would be its first argument): write "
                f"`factory: ClassVar = staticmethod({factory.__qualname__})`."
            )
        if _is_abstract_map(cls):
            return
        missing = [n for n in ("order", "factory") if not hasattr(cls, n)]
        if missing:
            raise TypeError(
                f"{cls.__name__} (an AbstractMap) declares no {' and no '.join(missing)}: a map "
                "needs `order` (its claimed global order in Δt, e.g. `order: ClassVar[float] = "
                "1.0`, or a property of its fields) and `factory` (the optax factory, e.g. "
                "`factory: ClassVar = staticmethod(optax.sgd)`). An abstract base of several "
                "maps: name it Abstract<Name>."
            )

    @abc.abstractmethod
    def hyperparams(self, flow: Any, step_size: Array) -> dict[str, Array]:
        raise NotImplementedError

    def dt(self, flow: Any, step_size: Array) -> Array:
        del flow
        return step_size

    def options(self, flow: Any) -> tuple[tuple[str, Any], ...]:
        del flow
        return ()

    @property
    def init_fn(self) -> Callable[..., Any] | None:
        return None

    def inverse(self, *args, **kwargs) -> tuple[Any, Array]:
        raise NotImplementedError(f"{type(self).__name__} declares no inverse map.")

    def stability_limit(self, flow: Any, lambda_max: ScalarLike) -> float | None:
        del flow, lambda_max
        return None

    def __call__(self, flow: Any, step_size: ScalarLike) -> Discretization:
        """The `Discretization` of `flow` with step `step_size` (validated > 0; traced values
        inside the compiled program)."""
        # Checked before the conversion: `jnp.asarray("0.1")` would raise deep inside JAX.
        h = as_hyperparameter("step_size", step_size, lower=0.0, lower_open=True)
        if jax.numpy.issubdtype(h.dtype, jax.numpy.integer):
            # `np.int64(1)` or `[1, 2]`: the maps' arithmetic (`1 - a h`, `sqrt(h)`) mixes it
            # with float hyper-parameters, which strict promotion refuses for a strong int.
            h = h.astype(jax.numpy.result_type(float))
        batched = _batched_fields(flow, h)
        try:
            hyperparams = self.hyperparams(flow, h)
        except AttributeError as e:
            if getattr(e, "obj", None) is not flow:
                raise
            # A map reads its flow's fields: `Leapfrog()(GradientFlow(), h)` raised
            # "'GradientFlow' object has no attribute 'damping'" from inside the map.
            raise ValueError(
                f"{type(self).__name__} cannot discretize a {type(flow).__name__}: it reads the "
                f"flow's `{e.name}`, which a {type(flow).__name__} does not have. Give it the "
                "flow its docstring names (or use flow.discretize(step_size))."
            ) from e
        disc = Discretization(
            standard_promotion(self.factory),
            hyperparams,
            dt=self.dt(flow, h),
            options=self.options(flow),
            init_fn=self.init_fn,
        )
        if batched and all(jax.numpy.ndim(x) == 0 for x in (disc.dt, *disc.hyperparams.values())):
            names = ", ".join(batched)
            raise ValueError(
                f"{names} {'is' if len(batched) == 1 else 'are'} batched, but "
                f"{type(self).__name__}'s optax transform does not depend on "
                f"{'it' if len(batched) == 1 else 'them'}: `run` would make one run, not a "
                "batch. Sweep a hyper-parameter the discretization uses (or the step size)."
            )
        return disc
