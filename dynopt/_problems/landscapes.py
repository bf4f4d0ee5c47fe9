r"""Non-convex test landscapes: Rosenbrock, a double well and a smooth log-cosh loss on a pytree."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, ArrayLike, Scalar
from .._problem import Problem
from .._validation import interval, positive


def _start(name: str, params0: ArrayLike, shape: tuple[int, ...] | None) -> Array:
    params0 = interval(name, params0)  # real and finite (inside jit: checked when run)
    # A floating array keeps its dtype (float32 parameters run in float32, as a quadratic's
    # do); integers and Python numbers take the default float.
    floating = isinstance(params0, jax.Array | np.ndarray) and jnp.issubdtype(
        params0.dtype, jnp.floating
    )
    x = jnp.asarray(params0) if floating else jnp.asarray(params0, dtype=float)
    if shape is not None and x.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {x.shape}.")
    return x


def _rosenbrock(x: Array, a: float, b: float) -> Scalar:
    return jnp.sum((a - x[:-1]) ** 2 + b * (x[1:] - x[:-1] ** 2) ** 2)


def rosenbrock(
    dim: int = 2, *, a: float = 1.0, b: float = 100.0, params0: ArrayLike | None = None
) -> Problem:
    r"""$L(x) = \sum_{i<d} (a - x_i)^2 + b(x_{i+1} - x_i^2)^2$, minimizer $(a, a^2)$ for $d=2$
    and $(1, \dots, 1)$ for $a = 1$ (`problem.minimizer`; `None` for $d > 2$ with $a \ne 1$,
    where $x_{i+1} = x_i^2$ and $x_{i+1} = a$ conflict and no closed form is known).

    Default start: $(-1.2, 1, -1.2, 1, \dots)$, the classical one. A floating `params0` keeps
    its dtype (float32 parameters run in float32); a list or integers take the default float.

    `a` and `b` define the function, as the constants in a loss a user writes: they are
    compile-time constants (Python floats in the loss's `eqx.Partial`, static under
    `filter_jit`), so a new `a` or `b` compiles anew. As traced leaves they cost 2.8× per step
    on a CPU (d = 1000, float64, jax 0.10.2): XLA hoists the scalar $2b$ out of the loop into a
    temporary buffer, and its CPU fusion emitter then loads it without alias information, which
    keeps LLVM from vectorizing the gradient's loop (XLA's older elemental emitter is not
    affected).

    **Arguments:**

    - `dim`: $d$, an integer $\ge 2$.
    - `a`: finite (default 1).
    - `b`: $b > 0$ (default 100).
    - `params0`: the start, shape `(dim,)` (default $(-1.2, 1, -1.2, 1, \dots)$).

    **Raises:** `ValueError` unless `dim` is an integer $\ge 2$, `a` finite, `b > 0` and
    `params0` a finite array of shape `(dim,)`.
    """
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 2:
        raise ValueError(f"dim must be >= 2 and an integer, got {dim!r}.")
    dim = int(dim)
    a, b = interval("a", a), positive("b", b)
    # Constants built on the host and transferred: as jnp operations each was a compiled
    # program of its own (4 per process), for the same values.
    if params0 is None:
        start = [-1.2 if i % 2 == 0 else 1.0 for i in range(dim)]
        params0 = jax.device_put(np.array(start, jnp.result_type(float)))
    params0 = _start("params0", params0, (dim,))
    minimizer = np.ones(dim) if a == 1.0 else (np.array([a, a * a]) if dim == 2 else None)
    minimizer = None if minimizer is None else jax.device_put(minimizer.astype(params0.dtype))
    loss_fn = eqx.Partial(_rosenbrock, a=float(a), b=float(b))
    return Problem(
        loss_fn=loss_fn, params0=params0, name=f"rosenbrock(d={dim})", minimizer=minimizer
    )


def _double_well(x: Array, barrier: Array, tilt: Array) -> Scalar:
    barrier, tilt = barrier.astype(x.dtype), tilt.astype(x.dtype)  # the parameters' precision
    return jnp.sum(barrier * (x**2 - 1.0) ** 2 + tilt * x)


def double_well(
    *, barrier: float = 1.0, tilt: float = 0.0, params0: ArrayLike | None = None
) -> Problem:
    r"""$L(x) = \sum_i \text{barrier}\,(x_i^2-1)^2 + \text{tilt}\, x_i$: two wells near $\pm1$
    separated by a barrier of height `barrier` at 0 (a tilt makes one well deeper).

    Default start: $x_0 = 1.5$ (one coordinate). A floating `params0` keeps its dtype (float32
    parameters run in float32); a list or integers take the default float.

    **Arguments:**

    - `barrier`: the barrier height $> 0$ (default 1).
    - `tilt`: the linear tilt, finite (default 0).
    - `params0`: the start, any finite array (default $x_0 = 1.5$, one coordinate).

    **Raises:** `ValueError` unless `barrier > 0`, `tilt` finite and `params0` finite.
    """
    barrier, tilt = positive("barrier", barrier), interval("tilt", tilt)
    if params0 is None:
        params0 = jnp.array([1.5])
    params0 = _start("params0", params0, None)
    loss_fn = eqx.Partial(_double_well, barrier=jnp.asarray(barrier), tilt=jnp.asarray(tilt))
    # Two minimizers (one per well), so none is singled out.
    return Problem(loss_fn=loss_fn, params0=params0, name="double_well")


def _logcosh(p: dict[str, Array], c: Array, A: Array) -> Scalar:
    a, b = p["a"], p["b"]
    c, A = c.astype(a.dtype), A.astype(b.dtype)  # the parameters' precision
    return (
        jnp.sum(jnp.cos(a) * c)
        + 0.25 * jnp.sum(a**4)
        + jnp.sum(jnp.log(jnp.cosh(A @ b + a)))
        + 0.5 * jnp.sum(b**2)
    )


def logcosh(
    *,
    c: ArrayLike | None = None,
    A: ArrayLike | None = None,
    params0: dict[str, ArrayLike] | None = None,
) -> Problem:
    r"""$L(a, b) = \sum_i c_i\cos a_i + \tfrac14\sum_i a_i^4
    + \sum_i \log\cosh((Ab)_i + a_i) + \tfrac12\|b\|^2$ on the pytree
    `{"a": (m,), "b": (n,)}`: smooth (every derivative bounded on bounded sets), non-quadratic,
    bounded below, with non-vanishing third derivatives — the registry's test loss for
    automatic backward error analysis, where a quadratic would hide the $D^3L$ terms.

    Defaults: $m = 3$, $n = 2$, fixed $c$, $A$ and start (5 parameters). A floating `params0`
    keeps its dtype (float32 parameters run in float32); a list or integers take the default
    float.

    **Arguments:**

    - `c`: shape `(m,)` (default `[0.8, -0.4, 1.1]`).
    - `A`: shape `(m, n)` (default a fixed $3 \times 2$ matrix).
    - `params0`: the start `{"a": (m,), "b": (n,)}` (default fixed).

    **Raises:** `ValueError` unless `c` has shape `(m,)`, `A` `(m, n)` and `params0` is
    `{"a": (m,), "b": (n,)}`, all finite.
    """
    c = jnp.asarray([0.8, -0.4, 1.1]) if c is None else _start("c", c, None)
    A = jnp.asarray([[0.6, -0.3], [0.2, 0.9], [-0.7, 0.4]]) if A is None else _start("A", A, None)
    if c.ndim != 1 or A.ndim != 2 or A.shape[0] != c.shape[0]:
        raise ValueError(f"c must have shape (m,) and A shape (m, n), got {c.shape} and {A.shape}.")
    m, n = A.shape
    if params0 is None:
        params0 = {"a": jnp.asarray([0.9, -0.6, 0.3]), "b": jnp.asarray([0.5, -1.1])}
    if not isinstance(params0, dict) or set(params0) != {"a", "b"}:
        raise ValueError('params0 must be a dict with keys "a" and "b".')
    params0 = {
        "a": _start('params0["a"]', params0["a"], (m,)),
        "b": _start('params0["b"]', params0["b"], (n,)),
    }
    loss_fn = eqx.Partial(_logcosh, c=c, A=A)
    return Problem(loss_fn=loss_fn, params0=params0, name="logcosh")
