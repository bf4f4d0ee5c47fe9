r"""Input validation in three tiers, in one place (as diffrax does it):

1. **construction** — a concrete value out of range raises `ValueError` naming the argument and
   the valid range, before anything is compiled;
2. **trace time** — the same functions on a traced value (inside `jit`/`vmap`/`grad`) cannot
   inspect it, so they
3. **wrap it in `eqx.error_if`**: a bad value at run time raises inside the compiled program
   (under `vmap`, if any entry is bad) instead of silently producing a negative decay or a NaN.

`eqx.error_if` is a host callback, and JAX's persistent compilation cache refuses every program
that holds one (most of an experiment's time is compilation). So dynopt's own entry points
(`compare`, `solve`, the Lyapunov rates) validate every input on the host (each step size's map
and reference constructed concretely, the save times checked) and trace their program inside
`host_validated()`: there tier 3 turns a bad value into NaN instead (no callback; for inputs
already checked it never fires, and a value computed inside the program that is out of range
still poisons the result rather than passing silently, which the caller reports as a failed
solve or a diverged run).

Every numeric hyper-parameter of a flow or a discretization map goes through `interval` (or
one of its shorthands); flows declare their fields with `hyperparameter(...)`, which makes them
array leaves (no recompilation for new values) and validates them on construction.

```python
kappa: Array = hyperparameter("kappa", lower=0.0, lower_open=True)
eps: Array = hyperparameter("eps", default=1e-8, lower=0.0)
```
"""

import contextlib
import dataclasses
import functools as ft
import math
import threading
from collections.abc import Iterator
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def is_traced(value: Any) -> bool:
    """Whether any leaf of `value` is a JAX tracer (its value is unknown at trace time): a
    check of your own branches on it, raising `ValueError` on a concrete value and wrapping a
    traced one with `check`. Checks nothing itself."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(value))


_state = threading.local()


def inputs_validated() -> bool:
    """Whether the program being traced (this thread) runs inside `host_validated()`."""
    return getattr(_state, "validated", False)


@contextlib.contextmanager
def host_validated() -> Iterator[None]:
    """Trace a program whose inputs were all validated on the host: inside, the runtime tier
    (`interval` on traced values, `check`) poisons a bad value with NaN instead of adding an
    `eqx.error_if` host callback, so the compiled program can enter JAX's persistent cache.

    Only an entry point that checked every input concretely may use it, and only around the
    call that traces (a program traced here is cached as such by its `jit`)."""
    previous = inputs_validated()
    _state.validated = True
    try:
        yield
    finally:
        _state.validated = previous


def _poison(value: Any, bad: Any) -> Any:
    """`value` with every inexact leaf NaN where `bad` (a scalar or broadcastable mask)."""

    def one(x):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            return x
        return jnp.where(bad, jnp.asarray(jnp.nan, x.dtype), x)

    return jax.tree.map(one, value)


def check(value: Any, bad: Any, msg: str) -> Any:
    """The runtime tier (inside `jit`) for a condition computed inside a program:
    `eqx.error_if(value, bad, msg)`, or, inside `host_validated()`, `value` poisoned with NaN
    where `bad` (no host callback; the caller reports the non-finite result).

    **Arguments:**

    - `value`: the pytree to guard.
    - `bad`: a boolean array, true where the condition fails.
    - `msg`: the error message.

    **Returns:** `value`, guarded (use the returned value, or the check does not run).
    """
    if inputs_validated():
        return _poison(value, jnp.any(bad))
    return eqx.error_if(value, bad, msg)


def _fmt(x: float) -> str:
    return f"{x:g}" if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def describe_range(
    lower: float | None, upper: float | None, lower_open: bool, upper_open: bool
) -> str:
    """'(0, 1]', '>= 0', '> 0', ... for an error message."""
    if lower is not None and upper is not None:
        left, right = "(" if lower_open else "[", ")" if upper_open else "]"
        return f"in {left}{_fmt(lower)}, {_fmt(upper)}{right}"
    if lower is not None:
        return f"{'>' if lower_open else '>='} {_fmt(lower)}"
    if upper is not None:
        return f"{'<' if upper_open else '<='} {_fmt(upper)}"
    return "finite"


def _bad_mask(xp, arr, lower, upper, lower_open, upper_open, allow_inf):
    # xp: numpy for concrete values (no tracers even inside a jit trace), jax.numpy for traced.
    bad = xp.isnan(arr) if allow_inf else ~xp.isfinite(arr)
    if lower is not None:
        bad = bad | ((arr <= lower) if lower_open else (arr < lower))
    if upper is not None:
        bad = bad | ((arr >= upper) if upper_open else (arr > upper))
    return bad


def _scalar_in_range(value, lower, upper, lower_open, upper_open, allow_inf) -> bool:
    """`True` when the Python number `value` passes `interval`'s check (else the full check
    runs, and says why it fails)."""
    try:
        x = float(value)
    except OverflowError:  # an int beyond float64
        return False
    if math.isnan(x) or (math.isinf(x) and not allow_inf):
        return False
    if lower is not None and (x <= lower if lower_open else x < lower):
        return False
    return upper is None or not (x >= upper if upper_open else x > upper)


def interval(
    name: str,
    value: Any,
    *,
    lower: float | None = None,
    upper: float | None = None,
    lower_open: bool = False,
    upper_open: bool = False,
    allow_inf: bool = False,
    hint: str = "",
) -> Any:
    r"""Check that every entry of `value` is a real number in the given range.

    Concrete values: raise `ValueError("{name} must be {range}, got {value}. {hint}")`.
    Traced values: return `value` wrapped in `eqx.error_if` with the same message, so the check
    runs inside the compiled program (inside `host_validated()`: NaN where bad, see `check`).
    The caller must use the *returned* value for the check to take effect under `jit`.

    **Arguments:** `name` (as the user wrote it), `value` (scalar or array), the bounds
    (`None`: unbounded; `*_open`: strict inequality), `allow_inf` (accept $\pm\infty$ within the
    bounds), `hint` (what to write instead).

    **Returns:** `value` (unchanged when concrete).

    **Raises:** `ValueError` for a concrete value out of range or not a real number.
    """
    if getattr(_state, "zero_step", False):
        return value
    # A plain Python number in range, the common case on the host: no array, no message built
    # (a repeated small `solve` pays these checks on every call).
    if type(value) in (float, int) and _scalar_in_range(
        value, lower, upper, lower_open, upper_open, allow_inf
    ):
        return value
    rng = describe_range(lower, upper, lower_open, upper_open)
    if not allow_inf and rng != "finite" and (lower is None or upper is None):
        rng += " and finite"  # "must be > 0, got inf" would contradict itself
    msg = f"{name} must be {rng}, got {{}}." + (f" {hint}" if hint else "")
    if is_traced(value):
        arr = jnp.asarray(value)
        if not jnp.issubdtype(arr.dtype, jnp.number) or jnp.issubdtype(
            arr.dtype, jnp.complexfloating
        ):
            raise ValueError(msg.format(f"a traced value of dtype {arr.dtype}"))
        bad = jnp.any(_bad_mask(jnp, arr, lower, upper, lower_open, upper_open, allow_inf))
        return check(value, bad, msg.format("a value out of range (inside jit/vmap)"))
    # Not a number at all (a string, None, a complex or ragged value): say what is expected.
    kind = "a finite real number" if rng == "finite" else f"a real number {rng}"
    not_real = f"{name} must be {kind}, got {{!r}} (a {type(value).__name__})." + (
        f" {hint}" if hint else ""
    )
    if isinstance(value, str | bytes) or value is None:
        raise ValueError(not_real.format(value))
    try:
        arr = np.asarray(value)
    except Exception as e:  # ragged lists and other non-arrays
        raise ValueError(not_real.format(value)) from e
    # A bool is not a number here (`discretize(True)` would step by 1 with times of dtype bool).
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.integer)
        or np.issubdtype(arr.dtype, np.floating)
        or str(arr.dtype) == "bfloat16"
    ):
        raise ValueError(not_real.format(value))
    if arr.size == 0:  # ("s must be finite, got []" named a range, not what was wrong)
        raise ValueError(
            f"{name} must not be empty (every entry {rng}), got an array of shape {arr.shape}."
            + (f" {hint}" if hint else "")
        )
    arr = arr.astype(np.float64)
    bad = _bad_mask(np, arr, lower, upper, lower_open, upper_open, allow_inf)
    if np.any(bad):
        shown = (
            value
            if arr.size <= 8
            else f"an array of {arr.size} entries, {int(np.sum(bad))} of them out of range"
        )
        raise ValueError(msg.format(shown))
    return value


def positive(name: str, value: Any, *, hint: str = "") -> Any:
    r"""`interval(name, value, lower=0, lower_open=True)`: every entry finite and $> 0$.

    All three tiers: `ValueError` for a concrete value, `eqx.error_if` inside `jit` for a traced
    one.

    **Arguments:**

    - `name`: the argument's name, as the user wrote it (for the message).
    - `value`: a scalar or array, concrete or traced.
    - `hint`: what to write instead, appended to the message.

    **Returns:** `value` (unchanged when concrete; use the returned value).

    **Raises:** `ValueError` for a concrete value with an entry $\le 0$, non-finite or not real.
    """
    return interval(name, value, lower=0.0, lower_open=True, hint=hint)


@contextlib.contextmanager
def at_zero_step() -> Iterator[None]:
    """Inside, `interval` (and its shorthands) return values unchecked: `modified_flow` expands
    an `h -> Discretization` optimizer (e.g. a flow's `discretize`) at $h = 0$, where a map's
    own checks (`step_size > 0`, `dt > 0`, a decay $1 - ah < 1$) refuse the very point the
    expansion is taken at. The same optimizer is checked at positive step sizes first."""
    previous = getattr(_state, "zero_step", False)
    _state.zero_step = True
    try:
        yield
    finally:
        _state.zero_step = previous


def nonnegative(name: str, value: Any, *, hint: str = "") -> Any:
    r"""`interval(name, value, lower=0)`: every entry finite and $\ge 0$.

    **Arguments:**

    - `name`: the argument's name (for the message).
    - `value`: a scalar or array, concrete or traced.
    - `hint`: what to write instead, appended to the message.

    **Returns:** `value` (use the returned value: a traced one is checked inside `jit`).

    **Raises:** `ValueError` for a concrete value with an entry $< 0$, non-finite or not real.
    """
    return interval(name, value, lower=0.0, hint=hint)


def decay(name: str, value: Any, *, hint: str = "") -> Any:
    """`interval(name, value, lower=0, upper=1, upper_open=True)`: an EMA decay or momentum, every
    entry in $[0, 1)$.

    **Arguments:**

    - `name`: the argument's name (for the message).
    - `value`: a scalar or array, concrete or traced.
    - `hint`: what to write instead, appended to the message.

    **Returns:** `value` (use the returned value: a traced one is checked inside `jit`).

    **Raises:** `ValueError` for a concrete value with an entry outside $[0, 1)$ or not real.
    """
    return interval(name, value, lower=0.0, upper=1.0, upper_open=True, hint=hint)


def _convert(name: str, bounds: dict, value: Any) -> jax.Array:
    value = interval(name, value, **bounds)
    if is_traced(value) or isinstance(value, jax.Array):
        return jnp.asarray(value)
    if np.ndim(value) == 0:
        # Concrete scalars (Python or NumPy, int or float) become weakly typed float arrays
        # alike: `F(3)`, `F(0.1)` and `F(np.float64(0.1))` share one compiled program, and a weak
        # scalar adopts the dtype of the float32/bfloat16 parameters it multiplies.
        return jnp.asarray(float(value))
    arr = np.asarray(value)
    return jnp.asarray(arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(float))


def as_hyperparameter(name: str, value: Any, **bounds) -> jax.Array:
    """`value` validated by `interval(name, value, **bounds)` and converted as a `hyperparameter`
    field stores it: a concrete Python or NumPy scalar becomes a weakly typed float of the
    default dtype (a NumPy float32 learning rate does not make the rates derived from it, and
    the decays derived from those, float32), a JAX array or traced value keeps its dtype."""
    return _convert(name, bounds, value)


_MISSING = object()


def hyperparameter(name: str, *, default: Any = _MISSING, **bounds) -> Any:
    """An `eqx.field` for a numeric hyper-parameter: converted to an array leaf (so a new value
    never recompiles) and validated by `interval(name, ..., **bounds)` on construction (concrete
    values) or inside the compiled program (traced values).

    **Arguments:** `name` (the field's name, for messages), `default` (optional), and the keyword
    bounds of `interval`.
    """
    converter = ft.partial(_convert, name, bounds)
    metadata = {"hyperparameter": True}
    if default is _MISSING:
        return eqx.field(converter=converter, metadata=metadata)
    return eqx.field(converter=converter, default=default, metadata=metadata)


def check_unbatched(flow: Any, who: str, *, what: str = "flow") -> None:
    """`ValueError` where a concrete hyper-parameter of `flow` (a `hyperparameter` field), or of
    a module it holds (a game flow's scheme: `GameFlow(Consensus(gamma))`), is not a scalar:
    `run` takes such a flow's discretization as a batch of runs, one per entry, so a reference
    solve of it would mean something else (one flow with per-coordinate values). `what` names
    the object in the message ("flow", "scheme")."""
    _check_unbatched(flow, type(flow).__name__, who, what)


def _check_unbatched(obj: Any, path: str, who: str, what: str) -> None:
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name, None)
        if f.metadata.get("hyperparameter") and not is_traced(value) and jnp.ndim(value) > 0:
            raise ValueError(
                f"{who} takes one {what}: {path}.{f.name} has shape "
                f"{jnp.shape(value)}, which `run` treats as a batch of runs. Give it a scalar "
                "and solve or compare one value at a time (or sweep it with run)."
            )
        # (a batched hyper-parameter of a nested module, e.g. a scheme's, failed later with a
        # raw broadcasting TypeError)
        _check_unbatched(value, f"{path}.{f.name}", who, what)


def choice(name: str, value: Any, options: tuple) -> Any:
    """Check that a static option is one of the allowed ones (construction only, never traced).

    **Arguments:**

    - `name`: the argument's name (for the message).
    - `value`: the option given, e.g. a string or a flag.
    - `options`: the tuple of allowed values.

    **Returns:** `value`.

    **Raises:** `ValueError` unless `value in options`.
    """
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}.")
    return value


def flag(name: str, value: Any) -> bool:
    """`value` as a Python bool.

    **Arguments:**

    - `name`: the argument's name (for the message).
    - `value`: `True` or `False` (a NumPy bool too).

    **Returns:** `bool(value)`.

    **Raises:** `ValueError` for anything else, e.g. the string `"no"` (which `bool()` would
    read as `True`) or `0`/`1`.
    """
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def positive_int(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """`ValueError` unless `value` is a Python (or NumPy) integer >= 1 (bool is not; `None`
    where `allow_none`): construction only, for static sizes and counts, never traced. Returns
    it as an `int`.

    **Arguments:**

    - `name`: the argument's name (for the message).
    - `value`: the size or count.
    - `allow_none`: accept `None` too (returned as is).
    """
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a positive integer{extra}, got {value!r}.")
    return int(value)


def _shown(value: Any) -> str:
    """`value` for a message: its type and a short repr (`int 3`, `str 'relu'`), or `None`."""
    if value is None:
        return "None"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def function(name: str, value: Any, expected: str = "callable", *, allow_none: bool = False):
    """`value` unchanged when it is callable (or `None` where `allow_none`); else
    `ValueError("{name} must be {expected}, got {type} {repr}.")`, where `expected` says what
    to pass (`"callable (x, t) -> scalar"`, `"a function params -> scalar"`). Construction
    only: a function is static, never traced. (A non-callable reached Python's `TypeError`
    "'int' object is not callable" deep inside the first trace that called it.)"""
    if callable(value) or (allow_none and value is None):
        return value
    raise ValueError(f"{name} must be {expected}, got {_shown(value)}.")


def instance(name: str, value: Any, cls: type, expected: str, *, hint: str = "") -> Any:
    """`value` unchanged when it is a `cls`; else `ValueError("{name} must be {expected}, got
    {type}{hint}.")`, `expected` naming the class as the user knows it (`"a dynopt.Problem (a
    loss)"`) and `hint` how the call is written. (Anything else failed later as an
    `AttributeError` on a missing method, far from the argument.)"""
    if isinstance(value, cls):
        return value
    raise ValueError(f"{name} must be {expected}, got {type(value).__name__}{hint}.")


def one_key(name: str, key: Any) -> Any:
    """`key` unchanged when it is one PRNG key: a typed `jax.random.key(seed)` (shape `()`) or
    a legacy `uint32[2]` `jax.random.PRNGKey`, concrete or traced (its dtype and shape are
    known at trace time: a vmapped ensemble checks one key per member). Else `ValueError`
    naming `name`: an integer seed failed inside `jax.random.split`/`normal` with JAX's
    `TypeError` "invalid PRNG key data", a batch of keys with a shape error."""
    if isinstance(key, jax.Array):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
            return key
        if key.dtype == jnp.uint32 and key.shape == (2,):
            return key
    shown = f"{key.dtype}{list(key.shape)}" if isinstance(key, jax.Array) else _shown(key)
    raise ValueError(f"{name} must be one jax.random.key (e.g. jax.random.key(0)), got {shown}.")


# Seeds: what both NumPy (`default_rng`: non-negative integers) and JAX (`jax.random.key`:
# a C long, with or without x64) accept, as the experiments' `--seed`.
SEED_BOUND = 2**32


def seed(name: str, value: Any) -> int:
    """`value` as an `int` when it is an integer (Python or NumPy; not a bool) in
    $[0, 2^{32})$, the seeds that NumPy's `default_rng` and `jax.random.key` both take (NumPy
    refuses a negative one, JAX one beyond a C long, and a negative seed and its two's
    complement name different JAX keys): the one rule of every data constructor. Else
    `ValueError` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer in [0, 2**32), got {_shown(value)}.")
    if not 0 <= int(value) < SEED_BOUND:
        raise ValueError(f"{name} must be an integer in [0, 2**32), got {int(value)}.")
    return int(value)


def solver_options(rtol: Any, atol: Any, max_steps: Any) -> tuple[float, float, int]:
    r"""An adaptive solve's `(rtol, atol, max_steps)` as Python numbers (construction only: static
    solver options, never traced).

    **Arguments:**

    - `rtol`: relative tolerance, in $[\epsilon_{64}, 1)$ with $\epsilon_{64}$ float64's machine
      epsilon.
    - `atol`: absolute tolerance, finite and $> 0$.
    - `max_steps`: a positive integer (10.5 is refused, not truncated).

    **Returns:** `(rtol, atol, max_steps)` as `(float, float, int)`.

    **Raises:** `ValueError` for a tolerance that is not a finite number $> 0$, `rtol` outside
    $[\epsilon_{64}, 1)$, or `max_steps` not an integer $\ge 1$.
    """

    def tolerance(x) -> float | None:
        if isinstance(x, bool | str | bytes):
            return None
        try:
            value = float(x)
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) and value > 0 else None

    rtol_f, atol_f = tolerance(rtol), tolerance(atol)
    if rtol_f is None or atol_f is None:
        raise ValueError(f"rtol and atol must be > 0 and finite, got rtol={rtol!r}, atol={atol!r}.")
    if rtol_f >= 1.0:  # an error as large as the solution itself: no accuracy asked at all
        raise ValueError(f"rtol must be in [{_RTOL_MIN:.3g}, 1), got {rtol!r}.")
    if rtol_f < _RTOL_MIN:
        raise ValueError(
            f"rtol must be in [{_RTOL_MIN:.3g}, 1) (float64's machine epsilon: a smaller "
            "relative error per step is below the rounding of the state itself, which no step "
            f"size meets; the solve would only take more steps), got {rtol!r}."
        )
    return rtol_f, atol_f, positive_int("max_steps", max_steps)


# The smallest rtol a float64 solve can meet: the state's own rounding.
_RTOL_MIN = float(np.finfo(np.float64).eps)


def increasing(name: str, values: Any, *, start: float | None = None, min_size: int = 1):
    """`values` as a 1-D float64 NumPy array of finite, strictly increasing numbers (at least
    `min_size` of them), with `values[0] >= start` and `values[-1] > start` when `start` is
    given; otherwise `ValueError` naming `name`.

    For save times and characteristic parameters: the message names the user's argument.
    """
    interval(name, values)  # real and finite (strings, None, NaN refused here)
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size < min_size:
        raise ValueError(
            f"{name} must be a 1-D array of at least {min_size} value(s), got shape {arr.shape}."
        )
    steps = np.diff(arr)
    if np.any(steps <= 0):
        i = int(np.argmax(steps <= 0))
        raise ValueError(
            f"{name} must be strictly increasing, got {name}[{i}]={arr[i]:g} followed by "
            f"{name}[{i + 1}]={arr[i + 1]:g}. Sort it (np.sort) and drop repeated values."
        )
    if start is not None:
        if arr[0] < start:
            raise ValueError(f"{name} must start at or after {start:g}, got {name}[0]={arr[0]:g}.")
        if arr[-1] <= start:
            raise ValueError(f"{name}[-1] must be > {start:g}, got {arr[-1]:g}.")
    return arr


__all__ = [
    "check",
    "choice",
    "decay",
    "describe_range",
    "function",
    "host_validated",
    "hyperparameter",
    "increasing",
    "inputs_validated",
    "interval",
    "is_traced",
    "nonnegative",
    "one_key",
    "positive",
    "positive_int",
    "seed",
]
