r"""`ODECell`: an explicit Runge–Kutta step of a parametrised vector field, unrolled as an RNN.

Post 5's observation: the Euler scheme $x_{n+1} = x_n + h f(x_n, nh)$ is a recursion
$y_t = F(y_{t-1}, t)$, i.e. an RNN whose weights are the ODE's parameters. The cell below is that
recursion for any explicit tableau; `lax.scan` plays the role of Keras' `K.rnn`.
"""

from collections.abc import Callable
from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, ArrayLike, Float, Params, PyTree, ScalarLike
from .._validation import check, flag, function, interval, is_traced, positive, positive_int


VectorField = Callable[[Float[Array, ""], Array, PyTree], Array]


class _Tableau(NamedTuple):
    r"""An explicit Butcher tableau: stage i evaluates f at $t + c_i h$,
    $y + h\sum_{j<i} a_{ij} k_j$; the step is $y + h\sum_i b_i k_i$."""

    a: tuple[tuple[float, ...], ...]  # rows 2..s of the strictly lower triangle
    b: tuple[float, ...]
    c: tuple[float, ...]  # c_1 = 0 included


def _from_diffrax(solver) -> _Tableau:
    # diffrax's own coefficients, so the cell and the solver it is tested against cannot disagree
    # on the method, only on the arithmetic.
    tab = solver.tableau
    return _Tableau(
        a=tuple(tuple(float(x) for x in row) for row in tab.a_lower),
        b=tuple(float(x) for x in tab.b_sol),
        c=(0.0, *(float(x) for x in tab.c)),
    )


# Classic RK4 (Kutta 1901); diffrax ships no solver with this tableau.
RK4_TABLEAU = _Tableau(
    a=((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    c=(0.0, 0.5, 0.5, 1.0),
)
TABLEAUS: dict[str, _Tableau] = {
    "euler": _Tableau(a=(), b=(1.0,), c=(0.0,)),
    "heun": _from_diffrax(diffrax.Heun),
    "midpoint": _from_diffrax(diffrax.Midpoint),
    "ralston": _from_diffrax(diffrax.Ralston),
    "bosh3": _from_diffrax(diffrax.Bosh3),
    "rk4": RK4_TABLEAU,
}
ORDERS = {"euler": 1, "heun": 2, "midpoint": 2, "ralston": 2, "bosh3": 3, "rk4": 4}


_LOG_PARAMS_MSG = (
    "log_params=True needs every parameter finite and > 0 (they are stored as logs), got {}. "
    "Use log_params=False for parameters that may be <= 0."
)


def as_array(x) -> Array:
    """`jnp.asarray(x)` (the same dtype and weak type), with no compiled program for a NumPy
    array or a Python scalar: JAX lifts those through `lax.stage`, a program of its own per shape
    and dtype; `jax.device_put` transfers them (a copy of an array: no aliasing of the
    caller's)."""
    if type(x) is np.ndarray:  # (not a masked array: its mask would be dropped)
        return jax.device_put(np.array(x))
    if isinstance(x, np.generic | bool | int | float | complex):
        return jax.device_put(x)
    return jnp.asarray(x)


def _positive_params(params: PyTree) -> PyTree:
    """`params` checked finite and > 0: a `ValueError` for a concrete leaf, `check` (inside
    `jit`/`vmap`) for a traced one, whose log would otherwise be a silent NaN."""

    def one(leaf):
        if is_traced(leaf):
            bad = ~jnp.all(jnp.isfinite(leaf) & (leaf > 0))
            return check(
                leaf, bad, _LOG_PARAMS_MSG.format("a value out of range (inside jit/vmap)")
            )
        arr = np.asarray(leaf, dtype=float)
        if not np.all(np.isfinite(arr) & (arr > 0)):
            raise ValueError(_LOG_PARAMS_MSG.format(arr))
        return leaf

    return jax.tree.map(one, params)


_STEP_HINT = "(The method is a keyword argument: ODECell(f, params, h, method='rk4').)"


def _real_params(params: PyTree) -> PyTree:
    """`params` checked: a pytree whose concrete leaves are finite real numbers (a
    string leaf failed in JAX's conversion, a NaN one gave a NaN unroll; traced leaves, a
    cell built inside `jit`, pass as they are)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if not is_traced(leaf):
            interval(f"params{jax.tree_util.keystr(path)}", leaf)
    return params


class ODECell(eqx.Module):
    r"""An RNN cell that is one explicit Runge–Kutta step of $\dot y = f(t, y; \theta)$.

    $$y_{n+1} = y_n + h\sum_{i=1}^s b_i k_i,\qquad
      k_i = \tilde f\Big(t_n + c_i h,\; y_n + h\sum_{j<i} a_{ij}k_j\Big),\qquad
      \tilde f = \operatorname{clip}(f, -M, M),$$

    so with `method="euler"` this is post 5's eq. (6), $x((n+1)h) = x(nh) + h f(x(nh), nh)$.
    The cell's weights are $\theta$; unrolling it over $n$ steps (`cell(y0, n)`, one `lax.scan`)
    solves the ODE on the grid $t_n = t_0 + nh$, and differentiating through the unroll is
    discretise-then-optimise parameter inference (post 5's "backward pass").

    **Arguments:**

    - `vector_field`: `f(t, y, params) -> dy/dt` (the diffrax `ODETerm` signature), with `y` an
      array; keep it a module-level function (it is static, so a new closure recompiles).
    - `params`: the ODE parameters $\theta$ (any pytree of floating arrays), in natural units.
    - `step_size`: $h > 0$, a scalar.
    - `method`: `"euler"`, `"heun"`, `"midpoint"`, `"ralston"`, `"bosh3"` (diffrax's tableaus) or
      `"rk4"` (classic).
    - `clip`: `None` or $M > 0$: clip every evaluation of $f$ to $[-M, M]$ (post 5 uses
      $M = 10^5$ "to prevent gradient explosion"). The cell then integrates $\tilde f$ exactly as
      the named method would. $M$ is an array leaf: a new value reuses the compiled unroll.
    - `log_params`: store $\log\theta$ as the trainable leaves (positivity by construction; also
      makes gradients scale-free when parameters span orders of magnitude).

    The state is real: `cell(y0, n)` unrolls in the result dtype of `y0` and the parameters
    (standard promotion; an integer `y0` counts as `step_size`'s float dtype), so a float32
    `y0` with float64 parameters unrolls in float64.

    **Raises:** `ValueError` for $h \le 0$ or a non-scalar $h$, an unknown method, $M \le 0$ or
    a non-scalar $M$, a `log_params` that is not `True` or `False`, or non-positive parameters
    with `log_params=True`.
    """

    vector_field: VectorField = eqx.field(static=True)
    params: PyTree  # the trainable leaves: θ, or log θ when log_params
    step_size: Float[Array, ""]
    method: str = eqx.field(static=True)
    clip: Float[Array, ""] | None  # a leaf: a new clip value reuses the compiled unroll
    log_params: bool = eqx.field(static=True)

    def __init__(
        self,
        vector_field: VectorField,
        params: Params,
        step_size: ScalarLike,
        *,
        method: str = "euler",
        clip: float | None = None,
        log_params: bool = False,
    ):
        function("vector_field", vector_field, "callable f(t, y, params)")
        # Inside jit/vmap a traced step is checked at run time (eqx.error_if): a negative one
        # would integrate backwards without a word. Checked before the conversion, which
        # raised JAX's TypeError for a string (`ODECell(f, p, "euler")`, a method given
        # positionally).
        step_size = as_array(positive("step_size", step_size, hint=_STEP_HINT))
        if step_size.ndim != 0:  # one h per cell: an array would fail only when unrolled
            raise ValueError(f"step_size must be a scalar, got shape {step_size.shape}.")
        if not isinstance(method, str) or method not in TABLEAUS:  # (a list is unhashable)
            raise ValueError(f"method must be one of {sorted(TABLEAUS)}, got {method!r}.")
        if clip is not None:
            clip = as_array(positive("clip", clip))
            if clip.ndim != 0:
                raise ValueError(f"clip must be a scalar, got shape {clip.shape}.")
        # A string such as "no" is truthy: it silently stored the logs of the parameters.
        log_params = flag("log_params", log_params)
        params = jax.tree.map(as_array, _real_params(params))
        if log_params:
            params = jax.tree.map(jnp.log, _positive_params(params))
        self.vector_field = vector_field
        self.params = params
        self.step_size = step_size
        self.method = method
        self.clip = clip
        self.log_params = log_params

    @property
    def parameters(self) -> Params:
        """$\\theta$ in natural units (`exp` of the stored leaves when `log_params`)."""
        return self.natural(self.params)

    def natural(self, raw: PyTree) -> Params:
        """Map trainable leaves (as stored in `params`) to natural parameters $\\theta$."""
        return jax.tree.map(jnp.exp, raw) if self.log_params else raw

    def with_params(self, raw: PyTree) -> "ODECell":
        """The same cell with new trainable leaves (in the stored, possibly log, units)."""
        return eqx.tree_at(lambda c: c.params, self, raw)

    def field(self, t: ScalarLike, y: Array) -> Array:
        """$\\tilde f(t, y) = \\operatorname{clip}(f(t, y; \\theta), -M, M)$."""
        dy = self.vector_field(t, y, self.parameters)
        if self.clip is None:
            return dy
        clip = self.clip.astype(dy.dtype)  # M rounds to the field's dtype, as f does
        return jnp.clip(dy, -clip, clip)

    def step(self, t: ScalarLike, y: Array) -> Array:
        """One RNN step $y_n \\mapsto y_{n+1}$ from time $t = t_n$."""
        tab, h = TABLEAUS[self.method], self.step_size.astype(y.dtype)
        ks = []
        for i, c_i in enumerate(tab.c):
            row = tab.a[i - 1] if i > 0 else ()
            incr = [a * k for a, k in zip(row, ks) if a != 0.0]
            y_i = y + h * sum(incr[1:], incr[0]) if incr else y
            ks.append(self.field(t + c_i * h, y_i))
        incr = [b * k for b, k in zip(tab.b, ks) if b != 0.0]
        return y + h * sum(incr[1:], incr[0])

    def times(self, num_steps: int, t0: ScalarLike = 0.0, *, dtype=None) -> Float[Array, " n+1"]:
        """The grid $t_n = t_0 + nh$, $n = 0..N$, computed in the widest of the dtypes of $h$,
        $t_0$ and `dtype` and returned in `dtype` (default: $h$'s and $t_0$'s, as standard
        promotion gives).

        So a float32 or bfloat16 step rounds neither $t_0$ nor $nh$ of a float64 unroll (from
        $t_0 = 0.1$, the bfloat16 grid of $h = 0.125$ was up to 0.35 off by $n = 1000$, the
        float32 one of $h = 0.1$ 4.5e-6), and an integer step keeps a fractional $t_0$ (it was
        truncated).

        **Raises:** `ValueError` unless `num_steps` is a non-negative integer (`times(-2)` was
        an empty grid), `t0` is a finite real scalar (a NaN one made every time NaN) and
        `dtype` is `None` or an inexact dtype (an integer one truncated the times)."""
        integer = isinstance(num_steps, int | np.integer) and not isinstance(num_steps, bool)
        if not integer or num_steps < 0:  # (0.0 and False passed as the 0-step grid)
            raise ValueError(f"num_steps must be a non-negative integer, got {num_steps!r}.")
        if not is_traced(t0):
            interval("t0", t0)
            if np.ndim(t0) != 0:
                raise ValueError(f"t0 must be a scalar, got shape {np.shape(t0)}.")
        if dtype is not None:
            try:
                inexact = jnp.issubdtype(dtype, jnp.inexact)
            except TypeError:
                inexact = False
            if not inexact:
                raise ValueError(f"dtype must be None or a floating dtype, got {dtype!r}.")
        h = self.step_size
        with jax.numpy_dtype_promotion("standard"):
            out = jnp.result_type(h, t0) if dtype is None else jnp.dtype(dtype)
            # Formed in the widest dtype, a weak (Python) step or t0 counting as the default
            # float, and rounded once: a float32 unroll with a Python step keeps its grid.
            wide = jnp.result_type(h.dtype, jnp.asarray(t0).dtype, out)
        grid = jnp.asarray(t0, wide) + h.astype(wide) * jnp.arange(num_steps + 1, dtype=wide)
        return grid.astype(out)

    def _initial_state(self, y0: ArrayLike, t0: ScalarLike) -> Array:
        """`y0` in the dtype the unroll carries, checked against the vector field (traced once,
        abstractly): a mismatch is a `ValueError` here, not a `lax.scan` or `dot_general` error."""
        y0 = as_array(y0)
        if not jnp.issubdtype(y0.dtype, jnp.inexact):  # integer data: the state is real
            h = self.step_size.dtype
            y0 = y0.astype(h if jnp.issubdtype(h, jnp.inexact) else jnp.result_type(float))
        # The scan carry must keep one dtype, and f(t, y; θ) computes in the promoted dtype of y
        # and θ: start there (float32 y0 with float64 θ is a float64 unroll).
        with jax.numpy_dtype_promotion("standard"):
            dtype = jnp.result_type(y0, *jax.tree.leaves(self.params))
        y0 = y0.astype(dtype)
        t = jax.ShapeDtypeStruct((), dtype)  # t0 as the unroll's times (only their type counts)
        try:
            out = jax.eval_shape(lambda cell, t, y: cell.field(t, y), self, t, y0)
        except (TypeError, ValueError, IndexError) as e:
            raise ValueError(
                f"vector_field(t, y, params) fails for y0 of shape {y0.shape} and dtype "
                f"{y0.dtype} (params: {jax.tree.map(jnp.shape, self.params)}): {e}"
            ) from e
        if not hasattr(out, "shape") or out.shape != y0.shape:
            shape = getattr(out, "shape", type(out).__name__)
            raise ValueError(
                f"vector_field(t, y0, params) has shape {shape}; it must match y0's {y0.shape}."
            )
        with jax.numpy_dtype_promotion("standard"):
            wider = jnp.result_type(y0.dtype, out.dtype) != y0.dtype
        if wider:
            raise ValueError(
                f"vector_field(t, y, params) returns dtype {out.dtype} for a state of dtype "
                f"{y0.dtype} (the promoted dtype of y0 and params); return dy/dt in y's dtype."
            )
        return y0

    def __call__(
        self, y0: Array, num_steps: int, *, t0: ScalarLike = 0.0
    ) -> Float[Array, "n+1 ..."]:
        """Unroll the cell: $y_0, y_1, \\dots, y_N$ at `times(num_steps, t0)` (one `lax.scan`), in
        the promoted dtype of `y0` and the parameters.

        **Raises:** `ValueError` for a `num_steps` that is not a positive (Python or NumPy)
        integer, a non-finite `t0`, a `y0` that is not finite (given concretely) or whose
        shape or dtype the vector field does not accept or return.
        """
        num_steps = positive_int("num_steps", num_steps)
        if not is_traced(t0):  # a NaN t0 made every time, so a non-autonomous field, NaN
            interval("t0", t0)
        if not is_traced(y0):  # a NaN or inf start was a NaN unroll, a string JAX's TypeError
            interval("y0", y0)
        y0 = self._initial_state(y0, t0)
        return _unroll(self, y0, self.times(num_steps, t0, dtype=y0.dtype))


@eqx.filter_jit
def _unroll(cell: ODECell, y0: Array, ts: Array) -> Array:
    r"""$y_0, \dots, y_N$ on the grid `ts`, one compiled program per cell type and shapes: an
    eager `lax.scan` closing over the cell compiled anew for every new step size or parameter
    value."""

    def body(y, t):
        y = cell.step(t, y)
        return y, y

    _, ys = jax.lax.scan(body, y0, ts[:-1])
    return jnp.concatenate([y0[None], ys])
