"""`solve`: the diffrax reference solution of a flow; `integrate`: the one place that calls
`diffrax.diffeqsolve`; `raise_for_result`: the one translation of its failures to `SolveError`."""

import dataclasses
import functools as ft
import hashlib
import math
import weakref
from collections.abc import Callable
from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.extend.core
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optax
import optimistix as optx
from jax.flatten_util import ravel_pytree

from . import _progress
from ._custom_types import ArrayLike, Params, PyTree, ScalarLike
from ._flows.base import AbstractFlow
from ._problem import AbstractProblem, Problem, raveled_loss as _raveled_loss
from ._saving import _where_rows as _rows_where, SaveAtTimes, saved
from ._trajectory import Trajectory
from ._validation import (
    check_unbatched,
    host_validated,
    instance,
    interval,
    is_traced,
    solver_options,
)


SOLVERS = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "kvaerno5": diffrax.Kvaerno5,
}
_ALIASES = {"explicit": "tsit5", "implicit": "kvaerno5"}
STIFFNESS_THRESHOLD = 1e4
# The ratio is read off computed eigenvalues: the slowest one carries an absolute rounding error
# of order eps * (fastest), so the ratio a relative one of order eps * ratio (measured up to
# 1.1e-13 at 1e4 on rotated quadratics). A ratio this close to the threshold counts as at it,
# so that a condition number of exactly 1e4 picks one solver whatever the rotation.
_THRESHOLD_RTOL = 1e-9
_DENSE_HESSIAN_MAX_DIM = 1000


class SolveError(RuntimeError):
    """A reference solve failed; the message names the cause and what to change."""


def _require_x64() -> None:
    if not jax.config.jax_enable_x64:
        raise ValueError(
            "reference solves run in float64: call jax.config.update('jax_enable_x64', True) "
            "at the start of your program (dynopt does not change global JAX config on import)."
        )


def check_times(ts: ArrayLike, t0: ScalarLike) -> jax.Array:
    """Validate save times: a non-empty, finite, strictly increasing 1-D array with ts[0] >= t0."""
    return jnp.asarray(_check_times(ts, t0))


def _on_host(what: str, **values) -> None:
    """`ValueError` where one of `values` is traced: `what` runs on the host."""
    for name, value in values.items():
        if is_traced(value):
            raise ValueError(
                f"{name} must be concrete: {what} is called on the host, outside jax.jit and "
                "jax.vmap, since its checks, solver choice and save times are decided there "
                "(it compiles its own program). To solve for several flows or times, call it in "
                "a Python loop: new hyper-parameter values and times do not recompile. (jax.grad "
                "may differentiate solve's result with respect to the flow's and the problem's "
                f"arrays, not its times.)"
            )


def _differentiated(what: str, **values) -> dict:
    """`values` with each traced leaf replaced by its value, where that is known on the host: a
    leaf differentiated by reverse-mode autodiff outside `jit` (`jax.grad`, `jax.vjp`,
    `jax.jacrev`), which `solve` passes to its compiled program (diffrax differentiates the
    solve) while deciding its checks and solver on the values. Any other traced leaf (under
    `jax.vmap` or `jax.jit`): `_on_host`'s `ValueError`."""

    def value(x):
        if not isinstance(x, jax.core.Tracer):
            return x
        try:
            return jax.extend.core.concrete_or_error(None, x)
        except jax.errors.ConcretizationTypeError:
            return x

    host = {name: jax.tree.map(value, v) for name, v in values.items()}
    _on_host(what, **host)
    return host


def _check_times(ts: ArrayLike, t0: ScalarLike) -> np.ndarray:
    _on_host("solve", ts=ts)
    try:
        arr = None if isinstance(ts, str | bytes) else np.asarray(ts, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None:
        raise ValueError(f"ts must be a non-empty 1-D array of times, got {ts!r}.")
    # Every check below at once where they pass (every call): increasing steps between finite
    # ends leave no room for a NaN or an infinity.
    if (
        arr.ndim == 1
        and arr.size
        and math.isfinite(arr[0])
        and math.isfinite(arr[-1])
        and arr[0] >= t0
        and arr[-1] > t0
        and (arr.size == 1 or bool(np.all(np.diff(arr) > 0)))
    ):
        return arr
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"ts must be a non-empty 1-D array of times, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError("ts must be finite.")
    if arr.size > 1 and not np.all(np.diff(arr) > 0):
        raise ValueError("ts must be strictly increasing.")
    if arr[0] < t0:
        raise ValueError(f"ts must start at or after t0={t0}, got ts[0]={arr[0]}.")
    if arr[-1] <= t0:
        raise ValueError(f"the horizon ts[-1] must be > t0={t0}, got {arr[-1]}.")
    return arr


@eqx.filter_jit
def _hessian_matrix(problem: Problem, params: Params) -> jax.Array:
    flat, f = _raveled_loss(problem, params)
    hess = jax.hessian(f)(flat)
    return 0.5 * (hess + hess.T)


def _raveled_field(flow: AbstractFlow, problem: Problem, t0, state):
    """`(flat, field)`: the state raveled, and the flow's vector field at `t0` on flat states."""
    # float64, as the solve's state (`dense_solve`)
    flat, unravel = ravel_pytree(jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), state))

    def field(z):
        y = unravel(z)
        dy = flow.vector_field(t0, y, problem)
        check_field_like_state(flow, y, dy)  # refused as the solve refuses it, on shapes
        return ravel_pytree(dy)[0]

    return flat, field


def _field_jacobian(flow: AbstractFlow, problem: Problem, t0, state, forward: bool):
    """`(value, jacobian)`: the field (raveled) and its dense Jacobian at `(t0, state)`: one
    `jax.jit` dispatch of the array leaves, the static ones a static argument (no `filter_jit`
    partition: ~0.1 ms a call at d = 2)."""
    flat = _flatten((flow, problem, t0, state))
    return _jacobian_program(flat.treedef, flat.static, forward, flat.arrays)


@ft.partial(jax.jit, static_argnums=(0, 1, 2))
def _jacobian_program(treedef, static, forward: bool, arrays):
    it = iter(arrays)
    flow, problem, t0, state = jax.tree.unflatten(
        treedef, [next(it) if x is None else x for x in static]
    )
    flat, field = _raveled_field(flow, problem, t0, state)

    def with_value(z):
        y = field(z)
        return y, y

    # The value comes with the Jacobian (autodiff computes it anyway): a start where the field
    # is not finite is refused before any solve (`_pick_solver`).
    jac, value = (jax.jacfwd if forward else jax.jacrev)(with_value, has_aux=True)(flat)
    return value, jac


@eqx.filter_jit
def _field_product(flow: AbstractFlow, problem: Problem, t0, state, v, forward: bool):
    r"""`(f, Jv)`: the field $f$ (raveled) and $Jv$ for its Jacobian $J$ (`forward`), else
    $J^\top v$ (same spectrum)."""
    flat, field = _raveled_field(flow, problem, t0, state)
    if forward:
        return jax.jvp(field, (flat,), (v,))
    value, vjp = jax.vjp(field, flat)
    return value, vjp(v)[0]


# The eigenvalues of largest magnitude found matrix-free (ARPACK), and their tolerance: the
# choice needs their order of magnitude and the sign of their real parts only. 1e-3, not 1e-6:
# on a clustered top of the spectrum (a network's) ARPACK took 10x the products to reach 1e-6
# (d = 50,000 spread over [0.5, 2]: 2,903 products against 300, found to 7e-4 relative).
_DOMINANT_K, _DOMINANT_TOL = 6, 1e-3


def _dominant_eigenvalues(flow, problem, t0, state, size: int, forward: bool) -> np.ndarray:
    """The `_DOMINANT_K` eigenvalues of largest magnitude of the field's Jacobian (complex: a
    decay, a growth or an oscillation), by ARPACK (`scipy.sparse.linalg.eigs`) on
    Jacobian-vector products; those it converged where it did not converge on all (possibly
    none)."""
    # Imported here, its only use: ~0.25 s of every process's `import dynopt` otherwise.
    import scipy.sparse.linalg

    matvec = lambda v: np.asarray(
        _field_product(flow, problem, t0, state, jnp.asarray(np.ravel(v)), forward)[1]
    )
    op = scipy.sparse.linalg.LinearOperator((size, size), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(size)  # deterministic: the same choice
    try:
        return scipy.sparse.linalg.eigs(
            op, k=_DOMINANT_K, which="LM", tol=_DOMINANT_TOL, v0=v0, return_eigenvectors=False
        )
    except scipy.sparse.linalg.ArpackNoConvergence as error:
        return np.asarray(error.eigenvalues, complex)


# `_field_radius`'s power iterations: 40 to converge, then the growth measured over 20 more.
_POWER_STEPS, _POWER_TAIL = 60, 20


@eqx.filter_jit
def _field_radius(flow: AbstractFlow, problem: Problem, t0, state, forward: bool) -> jax.Array:
    r"""The spectral radius $\max_i|\mu_i|$ of the field's Jacobian $J$ by power iteration on
    Jacobian-vector products (`forward`; else vector-Jacobian products, $J^\top$'s, of the same
    spectrum): the mean growth per step of $\|J^k v\|$ over the last `_POWER_TAIL` steps (a
    dominant complex pair turns $v$ within its plane, so a single step's growth oscillates
    about $|\mu|$; over several steps it is $|\mu|$)."""
    flat, field = _raveled_field(flow, problem, t0, state)
    product = (
        (lambda v: jax.jvp(field, (flat,), (v,))[1])
        if forward
        else (lambda v: jax.vjp(field, flat)[1](v)[0])
    )

    def body(v, _):
        jv = product(v)
        norm = jnp.linalg.norm(jv)
        return jv / jnp.where(norm > 0, norm, 1.0), norm

    v0 = jax.random.normal(jax.random.key(0), flat.shape, flat.dtype)
    _, norms = jax.lax.scan(body, v0 / jnp.linalg.norm(v0), None, length=_POWER_STEPS)
    return jnp.exp(jnp.mean(jnp.log(norms[-_POWER_TAIL:])))


class _Spectrum(NamedTuple):
    r"""What the automatic solver choice knows of the linearised flow $\dot y = J y$ at $y_0$:
    `eigenvalues` $\mu_i$ of $J$ (dense; only the `dominant` ones above
    `_DENSE_HESSIAN_MAX_DIM` state entries, by ARPACK), or only `radius` $\max_i|\mu_i|$ (power
    iteration, where ARPACK found none), or only `rates` $|\mathrm{Re}\,\mu_i|$ (a problem's own
    `time_scales`, e.g. a game's)."""

    eigenvalues: np.ndarray | None = None
    radius: float | None = None
    rates: np.ndarray | None = None
    # `eigenvalues` are only the dominant ones (matrix-free): the slowest rate is unknown.
    dominant: bool = False
    # The state's leaves (`jax.tree_util.keystr`) where the field itself is not finite at y0,
    # comma-separated with their counts; empty where it is finite (or not evaluated: a game's
    # `time_scales`). No solver can step from such a start (`_pick_solver` refuses it).
    not_finite: str = ""
    # `eigenvalues` are those of J's symmetric part, J being symmetric to rounding (a gradient
    # flow's -H): real, ascending (`np.linalg.eigvalsh`).
    symmetric: bool = False

    def fast_and_slow(self) -> tuple[float, float]:
        r"""`(fast, slow)`: the fastest decay rate $\max_i(-\mathrm{Re}\,\mu_i)^+$ and the rate
        the solution must be followed at, $\max(\min_i|\mathrm{Re}\,\mu_i|,
        \max_i(\mathrm{Re}\,\mu_i)^+)$: the slowest mode over its time scale, and a growing
        mode by any solver at its rate (0 where unknown: only the radius)."""
        if self.eigenvalues is not None:
            re = self.eigenvalues.real
            # (+ 0.0: no -0.0 from a purely imaginary spectrum)
            fast = float(np.max(np.maximum(-re, 0.0))) + 0.0
            slowest = 0.0 if self.dominant else float(np.min(np.abs(re)))
            return fast, max(slowest, self.growth())
        if self.rates is not None:
            return float(np.max(self.rates)), float(np.min(self.rates))
        return float(self.radius), 0.0

    def growth(self) -> float:
        r"""The fastest growth rate $\max_i(\mathrm{Re}\,\mu_i)^+$ (0 where unknown)."""
        if self.eigenvalues is None:
            return 0.0
        return float(np.max(np.maximum(self.eigenvalues.real, 0.0))) + 0.0


class _Modes(NamedTuple):
    r"""What `_automatic` reads of a `_Spectrum`, once per spectrum (its cache entry: a new
    horizon or step budget reuses it): `fast`, `slow` (`_Spectrum.fast_and_slow`), `growth`
    (`_Spectrum.growth`) and, for `explicit_steps`, either the modes that can decay
    ($\mathrm{Re}\,\mu_i < 0$, one of each conjugate pair: `decaying`) with their `rates`
    $-\mathrm{Re}\,\mu_i$, `sizes` $|\mu_i|$ and Tsit5 stability `radii` $r_i$ (NaN until a
    horizon first decays the mode: ~0.1 ms per ray), or only `fastest` (the radius or the
    fastest rate, where the eigenvalues are unknown)."""

    fast: float
    slow: float
    growth: float
    fastest: float | None = None
    decaying: np.ndarray | None = None
    rates: np.ndarray | None = None
    sizes: np.ndarray | None = None
    radii: np.ndarray | None = None

    @classmethod
    def of(cls, spectrum: _Spectrum) -> "_Modes":
        fast, slow = spectrum.fast_and_slow()
        if spectrum.eigenvalues is None:
            fastest = spectrum.radius if spectrum.rates is None else np.max(spectrum.rates)
            return cls(fast, slow, spectrum.growth(), float(fastest))
        mu = spectrum.eigenvalues
        mu = mu[(mu.real < 0) & (mu.imag >= 0)]  # conjugates: one of each
        radii = np.full(mu.shape, np.nan)
        return cls(fast, slow, spectrum.growth(), None, mu, -mu.real, np.abs(mu), radii)

    def explicit_steps(self, horizon: float) -> float:
        r"""Tsit5's steps over the horizon $T > 0$ set by stability alone: $T\max|\mu_i|/r_i$
        over the modes that decay below the tolerances within it ($-\mathrm{Re}\,\mu_i\,T \ge$
        `_DECAYED`), $r_i$ Tsit5's stability radius along $\mu_i$'s ray
        (`_tsit5_stability_radius`). A mode still alive must be resolved for accuracy by any
        solver (its steps are no argument for an implicit one). Only the radius or the rates
        known: every mode is taken as real and decaying, $3.5$."""
        if self.fastest is not None:
            return self.fastest * horizon / _TSIT5_STABILITY
        decayed = self.rates * horizon >= _DECAYED
        if not decayed.any():
            return 0.0
        new = decayed & np.isnan(self.radii)
        if new.any():
            self.radii[new] = _tsit5_stability_radius(self.decaying[new])
        return float(np.max(self.sizes[decayed] * horizon / self.radii[decayed]))


# A mode decayed below the default tolerances within the horizon: exp(-25) = 1.4e-11.
_DECAYED = 25.0
# A Jacobian this close to symmetric (relative to its largest entry) is taken as symmetric.
_SYMMETRIC_RTOL = 1e-10


# `_spectrum`s by the values they are computed from (`_values_key`), oldest dropped first: a
# repeated `solve` of the same flow and problem pays a digest of its arrays, not a Jacobian and
# its eigenvalues (0.3 ms at d = 2, 9 ms at d = 100, 0.2 s at d = 1000). Arrays of more than
# `_SPECTRA_MAX_BYTES` in all are not keyed: their digest (a copy to the host off a CPU) could
# cost as much as the spectrum.
_SPECTRA: dict = {}
_SPECTRA_MAX = 256
_SPECTRA_MAX_BYTES = 2**24


class _Flat(NamedTuple):
    """`jax.tree.flatten` of a pytree split in one pass: its `treedef`, `static` (its leaves,
    `None` where an array goes: no leaf is `None`) and `arrays` (`eqx.is_array`'s leaves)."""

    treedef: jax.tree_util.PyTreeDef
    static: tuple
    arrays: list


# `eqx.is_array`'s types, tested inline (a call per leaf costs more than the test).
_ARRAY_TYPES = (np.ndarray, np.generic, jax.Array)


def _flatten(tree) -> _Flat:
    leaves, treedef = jax.tree.flatten(tree)
    static, arrays = [], []
    for x in leaves:
        if isinstance(x, _ARRAY_TYPES):
            arrays.append(x)
            static.append(None)
        else:
            static.append(x)
    return _Flat(treedef, tuple(static), arrays)


def _values_key(tree) -> tuple | None:
    """A hashable key of `tree`'s structure and values: its treedef, each array leaf's shape,
    dtype, weak type and a digest of its bytes (`_array_key`), each other leaf itself (a Python
    number with its type and `repr`: -0.0 is not 0.0, 1 not 1.0); `None` where a leaf is
    traced or unhashable or the arrays hold more than `_SPECTRA_MAX_BYTES`."""
    return _flats_key(_flatten(tree))


def _flats_key(*flats: _Flat) -> tuple | None:
    """`_values_key` of the trees `flats` were flattened from, together (one byte budget)."""
    parts, size = [], 0
    for flat in flats:
        arrays = []
        for x in flat.arrays:
            if isinstance(x, jax.core.Tracer):
                return None
            part = _array_key(x)
            if part is None:
                return None
            size += part[3]
            if size > _SPECTRA_MAX_BYTES:
                return None
            arrays.append(part)
        static = tuple((type(x), repr(x)) if type(x) in _NUMBERS else x for x in flat.static)
        parts.append((flat.treedef, static, tuple(arrays)))
    key = tuple(parts)
    try:
        hash(key)
    except TypeError:
        return None
    return key


_NUMBERS = (bool, int, float, complex)


# `_array_key`s of live JAX arrays (immutable) by id, each with a weak reference to its array.
_ARRAY_KEYS: dict = {}


def _array_key(x) -> tuple | None:
    """`(shape, dtype, weak type, bytes, SHA-256 of the bytes)` of the array `x` (the bytes
    themselves where there are at most 32; `None` for a dtype without plain bytes, e.g. a PRNG
    key's); remembered for a JAX array while it lives (a NumPy array can change in place: read
    every time). The bytes alone are counted before any copy to the host."""
    jax_array = isinstance(x, jax.Array)
    if jax_array:
        found = _ARRAY_KEYS.get(id(x))
        if found is not None and found[0]() is x:
            return found[1]
    dtype = np.dtype(x.dtype) if getattr(x.dtype, "kind", "O") in "biufcV" else None
    if dtype is None:
        return None
    nbytes = x.size * dtype.itemsize
    if nbytes > _SPECTRA_MAX_BYTES:
        return (x.shape, dtype, False, nbytes, None)  # too large to key: not read
    data = np.ascontiguousarray(x).view(np.uint8).reshape(-1)
    # No longer than a digest: the bytes themselves (no hash to compute).
    digest = data.tobytes() if nbytes <= 32 else hashlib.sha256(data).digest()
    part = (x.shape, dtype, bool(getattr(x, "weak_type", False)), nbytes, digest)
    if jax_array:
        key = id(x)
        _ARRAY_KEYS[key] = (weakref.ref(x, lambda _: _ARRAY_KEYS.pop(key, None)), part)
    return part


def _spectrum(problem: Problem, params: Params, flow: AbstractFlow | None, t0: float):
    """`_Spectrum` of `flow`'s vector field at `(t0, flow.init(params))` (`None`: the gradient
    flow, whose Jacobian is minus the loss's Hessian), or the problem's own `time_scales`;
    cached by the values it is computed from (`_SPECTRA`): new values compute it anew."""
    return _spectrum_entry(problem, params, flow, t0)[0]


def _gradient_flow() -> AbstractFlow:
    """`GradientFlow()`, what `flow=None` stands for here (imported late: the flows import
    this module)."""
    from ._flows.gradient import GradientFlow

    return GradientFlow()


def _spectrum_key(problem, params, flow, t0, flat: _Flat | None = None) -> tuple | None:
    """`_SPECTRA`'s key of a spectrum: the values of `(flow, problem)` (`flat`, where the
    caller has flattened them: `solve`; `flow=None` as `GradientFlow()`, whose spectrum it is:
    one entry for `stiffness_ratio`, `top_eigenvalue` and a gradient flow's solve) and `params`
    (`_values_key`), `t0` and the dtype mode; `None` where they cannot be keyed."""
    if flat is None:
        flat = _flatten((_gradient_flow() if flow is None else flow, problem))
    values = _flats_key(flat, _flatten(params))
    if values is None:
        return None
    return values, repr(float(t0)), jax.config.jax_enable_x64


def _spectrum_entry(
    problem, params, flow, t0, flat: _Flat | None = None
) -> tuple[_Spectrum, _Modes, dict]:
    """`(spectrum, modes, choices)`: `_spectrum`, what the automatic choice reads of it
    (`_Modes`) and, from the same cache entry, a dict for the choices made from it
    (`_pick_solver`, by horizon and step budget); `flat`: `_flatten((flow, problem))`."""
    key = _spectrum_key(problem, params, flow, t0, flat)
    found = None if key is None else _SPECTRA.get(key)
    if found is None:
        spectrum = _compute_spectrum(problem, params, flow, t0)
        found = (spectrum, _Modes.of(spectrum), {})
        if key is not None:
            if len(_SPECTRA) >= _SPECTRA_MAX:
                _SPECTRA.pop(next(iter(_SPECTRA)))
            _SPECTRA[key] = found
    return found


def _compute_spectrum(problem: Problem, params: Params, flow: AbstractFlow | None, t0: float):
    rates = problem.time_scales(params)
    if rates is not None:
        return _Spectrum(rates=np.asarray(rates))
    flow = _gradient_flow() if flow is None else flow
    state = flow.init(params)
    size = sum(int(np.prod(jnp.shape(x))) for x in jax.tree.leaves(state))
    t0 = np.float64(t0)  # an array leaf for `filter_jit`: a new t0 does not recompile
    large = size > _DENSE_HESSIAN_MAX_DIM

    def spectrum_or_jacobian(forward: bool):
        if not large:
            value, jac = _field_jacobian(flow, problem, t0, state, forward)
            if bad := _non_finite_entries(state, np.asarray(value)):
                return _Spectrum(radius=float("inf"), not_finite=bad)
            return np.asarray(jac)
        probe = np.random.default_rng(0).standard_normal(size)
        value, product = _field_product(flow, problem, t0, state, jnp.asarray(probe), forward)
        if bad := _non_finite_entries(state, np.asarray(value)):
            return _Spectrum(radius=float("inf"), not_finite=bad)
        if not np.all(np.isfinite(np.asarray(product))):
            # As a dense Jacobian with NaN: ARPACK would stop with "error -9999" instead. The
            # solve then says what is not finite (`raise_for_result`).
            return _Spectrum(radius=float("inf"))
        mu = _dominant_eigenvalues(flow, problem, t0, state, size, forward)
        if mu.size and np.all(np.isfinite(mu)):
            return _Spectrum(eigenvalues=mu, dominant=True)
        # ARPACK found none: the magnitude alone, by power iteration.
        return _Spectrum(radius=float(_field_radius(flow, problem, t0, state, forward)))

    # The field as diffrax evaluates it, under standard dtype promotion.
    with jax.numpy_dtype_promotion("standard"):
        try:
            out = spectrum_or_jacobian(True)
        except TypeError as error:  # a custom_vjp in the field: no forward mode, so reverse
            if "forward-mode" not in str(error):
                raise
            try:
                out = spectrum_or_jacobian(False)
            except ValueError as reverse:  # and a while_loop: no reverse mode either
                if "Reverse-mode" not in str(reverse):
                    raise
                raise ValueError(
                    f"solver=None cannot choose a solver for {type(flow).__name__}: the choice "
                    "reads the eigenvalues of its vector field's Jacobian, and autodiff has "
                    "neither mode through it (forward: a custom_vjp; reverse: a while_loop, "
                    "e.g. an iterative eigensolver inside the field). Pass solver= (e.g. "
                    "'tsit5', or diffrax.Bosh3() as central_solve does)."
                ) from None
    if large or isinstance(out, _Spectrum):
        return out
    jac = out
    if not np.all(np.isfinite(jac)):
        return _Spectrum(radius=float("inf"))
    # Symmetric to rounding (a gradient flow's -H): the symmetric part's eigenvalues, cheaper
    # and real, within the skew part's norm of J's (Bauer-Fike; the symmetric part is normal).
    scale = np.max(np.abs(jac), initial=0.0)
    if np.max(np.abs(jac - jac.T), initial=0.0) <= _SYMMETRIC_RTOL * scale:
        sym = np.linalg.eigvalsh(0.5 * (jac + jac.T))
        return _Spectrum(eigenvalues=sym.astype(complex), symmetric=True)
    return _Spectrum(eigenvalues=np.linalg.eigvals(jac))


def _non_finite_entries(state, value: np.ndarray) -> str:
    """The leaves of `state` (`jax.tree_util.keystr`, with their counts) where `value`, a field
    raveled as `ravel_pytree(state)` is, holds a NaN or an infinity; empty where none."""
    bad = ~np.isfinite(value)
    if not bad.any():
        return ""
    parts, start = [], 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        stop = start + int(np.prod(jnp.shape(leaf)))
        if count := int(bad[start:stop].sum()):
            where = jax.tree_util.keystr(path) or "(the state itself)"
            parts.append(f"{where} ({count} of {stop - start})")
        start = stop
    return ", ".join(parts)


class NotFiniteStart(SolveError):
    """The flow's vector field is not finite at its start: refused before any solve."""


def not_finite_start(flow: AbstractFlow | None, spectrum: _Spectrum, t0: float) -> str:
    """`NotFiniteStart`'s message: where the field is not finite and the likely cause."""
    name = "GradientFlow" if flow is None else type(flow).__name__
    return (
        f"{name}'s vector field is not finite at the start (t0 = {t0:g}, the state "
        f"flow.init(params0)), at {spectrum.not_finite}: no solver can take a step from it, so "
        "none was run. Likely cause: NaN/inf in the loss or its gradient at params0 (e.g. a "
        "log or sqrt at the edge of its domain); for an automatic flow also in the optimizer's "
        "update or its derivatives (e.g. a denominator set by a tiny eps). Check the loss and "
        "the field at params0, or start elsewhere."
    )


def stiffness_ratio(
    problem: Problem,
    params: Params,
    horizon: float,
    flow: AbstractFlow | None = None,
    t0: float = 0.0,
) -> float:
    r"""$\max_i(-\mathrm{Re}\,\mu_i)^+ / \max(\min_i|\mathrm{Re}\,\mu_i|,\
    \max_i(\mathrm{Re}\,\mu_i)^+,\ 1/T)$ for the eigenvalues $\mu_i$ of the Jacobian of
    `flow`'s vector field at its initial state `flow.init(params)` and time `t0`, and the
    horizon $T$: how much faster the fastest mode decays than the solution must be followed
    (the slowest mode over its time scale or the whole horizon; a growing mode at its rate).
    Decay is what makes a flow stiff: an explicit solver must keep its steps stable on a
    decayed mode, while an oscillation ($\mathrm{Im}\,\mu$) or a growth must be resolved by
    any solver.

    `flow=None` is the gradient flow ($J = -\nabla^2 L$: the ratio of the Hessian's largest
    positive eigenvalue to its smallest in magnitude, the condition number once
    $T \ge 1/\lambda_{\min}$); a problem with its own `time_scales` (a game: the
    $|\mathrm{Re}\,\mu|$ of its Jacobian) gives those instead of a flow's. For a state of more
    than 1000 entries only the 6 eigenvalues of largest magnitude are found (ARPACK,
    `scipy.sparse.linalg.eigs`, on Jacobian-vector products): the slowest rate is unknown, so
    the denominator is $\max(\text{growth}, 1/T)$.

    **Arguments:**

    - `problem`: a `dynopt.AbstractProblem` (a loss or a game).
    - `params`: the parameters where the Jacobian is taken (through `flow.init(params)`).
    - `horizon`: the horizon $T > 0$ ($\infty$ allowed).
    - `flow`: the flow, or `None` for the gradient flow.
    - `t0`: the time of the Jacobian, finite (default 0).

    **Returns:** the ratio, a Python float (`inf` where the fastest rate is not finite).

    **Raises:** `ValueError` for a `problem` that is no `dynopt.AbstractProblem`, a `flow`
    that is neither `None` nor a flow, a `horizon` that is not $> 0$ ($\infty$ allowed) or a
    `t0` that is not finite.
    """
    instance("problem", problem, AbstractProblem, "a dynopt.AbstractProblem")
    if flow is not None and not isinstance(flow, AbstractFlow):
        raise ValueError(
            f"flow must be None (the gradient flow) or a dynopt flow, got {type(flow).__name__}."
        )
    horizon = float(interval("horizon", horizon, lower=0.0, lower_open=True, allow_inf=True))
    t0 = float(interval("t0", t0))
    fast, slow = _spectrum(problem, params, flow, t0).fast_and_slow()
    if not np.isfinite(fast):
        return float("inf")
    return fast / max(slow, 1.0 / horizon)


def top_eigenvalue(problem: Problem, params: Params) -> float | None:
    """The largest (signed) Hessian eigenvalue of the loss at `params`, for at most 1000
    parameters (dense Hessian); `None` above (a power iteration gives only the magnitude)."""
    size = sum(int(np.prod(jnp.shape(x))) for x in jax.tree.leaves(params))
    if size > _DENSE_HESSIAN_MAX_DIM:
        return None
    # The gradient flow's Jacobian is -H: its spectrum, as the automatic solver choice reads it
    # (one compiled program and one cache entry for both; `compare` reads this after choosing
    # its reference's solver). Its eigenvalues are the symmetric part's, as here (`eigvalsh`).
    spectrum = _spectrum(problem, params, None, 0.0)
    if spectrum.symmetric:
        return -float(spectrum.eigenvalues.real[0]) + 0.0  # (+ 0.0: no -0.0)
    # The field or its Jacobian not finite, or -H not symmetric to rounding: the Hessian itself.
    return float(np.linalg.eigvalsh(np.asarray(_hessian_matrix(problem, params)))[-1])


@ft.cache
def _tsit5_polynomial() -> np.ndarray:
    r"""The coefficients $c_0, \dots, c_6$ of Tsit5's stability function
    $R(z) = 1 + z\,b^\top(I - zA)^{-1}\mathbf 1 = \sum_k c_k z^k$ from diffrax's own tableau
    ($c_k = b^\top A^{k-1}\mathbf 1$; $A$ is strictly lower triangular)."""
    tab = diffrax.Tsit5.tableau
    stages = len(tab.b_sol)
    a = np.zeros((stages, stages))
    for i, row in enumerate(tab.a_lower):
        a[i + 1, : len(row)] = row
    ones, b = np.ones(stages), np.asarray(tab.b_sol)
    return np.asarray([1.0] + [b @ np.linalg.matrix_power(a, k - 1) @ ones for k in range(1, 7)])


def _tsit5_stability_radius(mu: np.ndarray) -> np.ndarray:
    r"""Per eigenvalue $\mu$ in the left half-plane, the largest $r$ (to 1e-3) with
    $|R(s\,\mu/|\mu|)| \le 1$ for all $0 < s \le r$: a stable Tsit5 step on that mode is at
    most $r/|\mu|$ long. 3.507 on the negative real axis, within 1% of 3.5 up to 60° from it
    (where the magnitude alone, the old rule, was right), 3.2 at 75°, 1.7 at 0.3° from the
    imaginary axis and 0 on it, which the region only touches."""
    # Once per distinct ray (a gradient flow's are all -1): each ray's radius is cached.
    rays = np.asarray(mu, complex) / np.abs(mu)
    return np.asarray([_ray_stability_radius(complex(ray)) for ray in rays], np.float64)


@ft.lru_cache(maxsize=4096)
def _ray_stability_radius(ray: complex) -> float:
    """`_tsit5_stability_radius` along the unit complex number `ray`."""
    s = np.arange(1, 6001) * 1e-3
    unstable = np.abs(np.polyval(_tsit5_polynomial()[::-1], s * ray)) > 1.0
    # At least the grid's first point: a lower bound on the steps stays one.
    return max(int(np.argmax(unstable)) if unstable.any() else s.size, 1) * 1e-3


@ft.cache
def _solver(name: str) -> diffrax.AbstractSolver:
    solver = SOLVERS[name]()  # immutable: one instance per name serves every call
    _SOLVER_FLATS[id(solver)] = _flatten(solver)  # (kept alive by this cache: the id is its own)
    return solver


# `_flatten` of each of `_solver`'s instances by id: `_compiled_solve` flattens no solver of
# its own.
_SOLVER_FLATS: dict = {}


# Tsit5's stability interval on the negative real axis (|R(z)| <= 1 for -3.5 <= z <= 0): a
# stable explicit step on a mode of rate lambda is at most this / lambda long.
_TSIT5_STABILITY = 3.5


def _automatic(modes: _Modes, horizon: float, max_steps: int | None) -> tuple[str, float]:
    """`_pick_solver`'s automatic `(name, stiffness ratio)` from the `_Modes` of the flow's
    spectrum."""
    fast, slow = modes.fast, modes.slow
    if not math.isfinite(fast):
        # The Jacobian is not finite at the start, the field is (`_pick_solver` refuses a field
        # that is not): an implicit solver's Newton iteration would solve with that Jacobian
        # (Kvaerno5 ran to max_steps at t0 on a |x|^{3/2} loss at 0); an explicit one reads
        # only the field.
        return "tsit5", float("inf")
    ratio = fast / max(slow, 1.0 / horizon)
    # The long-horizon regime needs the linearisation to hold: a mode growing by more than
    # exp(_DECAYED) over the horizon says it describes a transient only (e.g. RMSprop from
    # G = 0, where modes of rate +-1e7 decay and grow alike).
    too_long = (
        max_steps is not None
        and modes.growth * horizon < _DECAYED
        and modes.explicit_steps(horizon) > max_steps
    )
    stiff = ratio >= STIFFNESS_THRESHOLD * (1 - _THRESHOLD_RTOL)
    name = "kvaerno5" if stiff or too_long else "tsit5"
    return name, ratio


def _pick_solver(
    solver,
    problem: Problem,
    params0: Params,
    horizon: float,
    max_steps: int | None = None,
    *,
    flow: AbstractFlow | None = None,
    t0: float = 0.0,
    refuse_not_finite: bool = False,
    flat: _Flat | None = None,
):
    r"""`(solver, name, stiffness ratio or None)`. Automatic (`solver=None`), from the
    eigenvalues $\mu_i$ of the Jacobian of `flow`'s vector field at its initial state
    (`stiffness_ratio`; `flow=None`: the gradient flow): `Kvaerno5` when the stiffness ratio
    is at least `STIFFNESS_THRESHOLD`, or when Tsit5's stable steps alone,
    $T|\mu_i|/r(\mu_i)$ for the modes that decay within the horizon ($r \approx 3.5$, Tsit5's
    stability radius along $\mu_i$'s ray), would exceed `max_steps` (a long horizon: once the
    slow modes have decayed below atol nothing is left to resolve but the fast modes'
    stability, which costs an L-stable implicit solver nothing; not where a mode grows by more
    than $e^{25}$ over the horizon); else `Tsit5`, also for fast oscillations
    ($|\mathrm{Im}\,\mu| \gg |\mathrm{Re}\,\mu|$) and growth, which any solver must resolve
    and an explicit one does at the least cost per step. With `refuse_not_finite` (a solve from
    exactly this start: `solve`, `compare`; not a transport of samples around it), a start where
    the field itself is not finite (read with the Jacobian, at no extra cost; for a chosen
    solver where that reading is cached, `_not_finite_at_start`) is refused: `NotFiniteStart`
    naming the leaves, before any solve (each solver would spend its whole step budget there,
    an implicit one at a Newton solve per step). Where only the Jacobian is
    not finite there, `Tsit5` (an implicit solver's Newton iteration would use that Jacobian).
    `flat`: `_flatten((flow, problem))`, where the caller has it (`solve`)."""
    if solver is None:
        spectrum, modes, choices = _spectrum_entry(problem, params0, flow, t0, flat)
        # Read with the Jacobian: no solve, implicit or not, can start there.
        if refuse_not_finite and spectrum.not_finite:
            raise NotFiniteStart(not_finite_start(flow, spectrum, t0))
        choice = choices.get((horizon, max_steps))
        if choice is None:
            if len(choices) >= _SPECTRA_MAX:  # a sweep over horizons: keep the entry small
                choices.clear()
            choice = choices[horizon, max_steps] = _automatic(modes, horizon, max_steps)
        return _solver(choice[0]), *choice
    if isinstance(solver, str):
        key = _ALIASES.get(solver.lower(), solver.lower())
        if key not in SOLVERS:
            valid = sorted([*SOLVERS, *_ALIASES])
            raise ValueError(
                f"unknown solver {solver!r}; choose one of {valid} or pass a diffrax solver."
            )
        chosen = _solver(key), key, None
    elif isinstance(solver, diffrax.AbstractSolver):
        if not isinstance(solver, diffrax.AbstractAdaptiveSolver):
            raise ValueError(
                f"solver must estimate its error (an adaptive diffrax solver: Tsit5, Dopri5, "
                f"Dopri8, Kvaerno5, ...); {type(solver).__name__} has fixed steps, and a "
                "reference solve controls its step by rtol/atol. A fixed-step discretization "
                "of a flow is `run(flow.discretize(h), ...)`."
            )
        chosen = solver, type(solver).__name__.lower(), None
    else:
        raise ValueError(
            f"solver must be None, a name or a diffrax.AbstractSolver, got {solver!r}."
        )
    # A chosen solver too, where the automatic choice read the field (else it runs to
    # max_steps, then its diagnosis says the field is not finite).
    if refuse_not_finite and (bad := _not_finite_at_start(problem, params0, flow, t0, flat)):
        raise NotFiniteStart(not_finite_start(flow, _Spectrum(not_finite=bad), t0))
    return chosen


# The stage solves' absolute tolerance is at least this many times their rounding floor.
_STAGE_FLOOR = 100.0


def _stage_tolerance(solver, modes: _Modes, horizon: float, y0, atol: float):
    r"""`solver` (the automatic `Kvaerno5`), with its stage solves' absolute tolerance raised
    to `_STAGE_FLOOR` times their rounding floor where that is above `atol`.

    Kvaerno5 solves for each stage's derivative $F = T f(y)$ (in the unit time), whose rounding
    error is $\epsilon\,T\,|\mu|_{\max}|y|$, not $\epsilon|F|$: once the fast modes have
    decayed, $F$ is the slow modes' and far smaller. diffrax's chord iteration takes the step
    controller's tolerances, $|\Delta F| \le$ atol + rtol$|F|$; below that floor its
    convergence rate is a ratio of rounding errors, it reports divergence, the step is cut,
    the predictor gets better and the ratio worse (a quadratic of eigenvalues 1e-3, 1, 1e5 over
    T = 10: 2,259 of 4,096 steps failed so, at steps of 1e-7 T, before max_steps). The
    iteration stops within `kappa` = 1e-2 of that atol, an error $h\gamma\Delta F \le
    h\gamma\,T|\mu|_{\max}\,\epsilon|y|$ in $y$: no more than the rounding of the stage's
    own linear solve, whose condition number is $h\gamma\,T|\mu|_{\max}$.

    `modes`: the flow's at the start, whose fastest decay rate `fast` stands for
    $|\mu|_{\max}$ (equal for a gradient flow); `y0`: the state's leaves there."""
    scale = max((float(np.max(np.abs(np.asarray(x)), initial=0.0)) for x in y0), default=0.0)
    floor = _STAGE_FLOOR * np.finfo(np.float64).eps * horizon * modes.fast * scale
    if not (math.isfinite(floor) and floor > atol):
        return solver
    # An array leaf (a new floor reuses the compiled solve); rtol and norm stay the
    # controller's.
    return eqx.tree_at(lambda s: s.root_finder.atol, solver, jnp.asarray(floor, jnp.float64))


def floor_stage_tolerance(
    solver_obj, name: str, problem, flow, t0: float, horizon: float, atol: float, flat=None
):
    """The automatically chosen `solver_obj` (`name`), with `_stage_tolerance`'s floor where it
    is Kvaerno5 and the choice's spectrum is cached (`solve`'s and `compare`'s reference solve:
    not recomputed where it is not)."""
    if name != "kvaerno5":
        return solver_obj
    key = _spectrum_key(problem, problem.params0, flow, t0, flat)
    if (entry := None if key is None else _SPECTRA.get(key)) is None:
        return solver_obj
    y0 = jax.tree.leaves((_gradient_flow() if flow is None else flow).init(problem.params0))
    return _stage_tolerance(solver_obj, entry[1], horizon, y0, atol)


def _not_finite_at_start(problem, params0, flow, t0: float, flat: _Flat | None = None) -> str:
    """`_Spectrum.not_finite` of `flow`'s field at `(t0, flow.init(params0))` for a chosen
    solver, where the automatic choice has read it already (its cached spectrum: free); else
    "" (unknown): the solve's own failure diagnosis names a non-finite start, after running to
    `max_steps`. An evaluation before every solve costs a compile of the field (5 s of 22 s on
    an order-3 automatic AdaBelief cell of `compare`, 2026-12-06), paid by every solve that
    succeeds to spare the rare one that cannot."""
    key = _spectrum_key(problem, params0, flow, t0, flat)
    spectrum = None if key is None else _SPECTRA.get(key)
    if spectrum is not None and spectrum[0].rates is None:  # (a game's rates: not read)
        return spectrum[0].not_finite
    return ""


def check_field_like_state(flow, state, field) -> None:
    """`ValueError` naming `<Flow>.vector_field`, the leaf and both shapes unless `field` (its
    value at `state`) has the state's tree structure and, leaf for leaf, its shape and a
    dtype that casts into the state's (diffrax's `ODETerm` broadcasts a wrong shape silently:
    the solve would be of an ODE the flow does not define). Shapes only: free at run time, and
    run where the field is traced anyway (nothing is evaluated, nothing recompiles)."""
    what = f"{type(flow).__name__}.vector_field"
    flat_y, tree_y = jax.tree_util.tree_flatten_with_path(state)
    flat_f, tree_f = jax.tree_util.tree_flatten_with_path(field)
    if tree_f != tree_y:
        ys = {jax.tree_util.keystr(k) for k, _ in flat_y}
        fs = {jax.tree_util.keystr(k) for k, _ in flat_f}
        lacks, extra = sorted(ys - fs), sorted(fs - ys)
        detail = "; ".join(
            part
            for part in (
                f"it lacks the leaves {', '.join(lacks)}" if lacks else "",
                f"it has leaves the state does not: {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise ValueError(
            f"{what} must return a pytree of the state's structure (flow.init(params0)), "
            f"leaf for leaf; got {tree_f}, the state is {tree_y}"
            f"{f' ({detail})' if detail else ''}."
        )
    for (path, y), (_, d) in zip(flat_y, flat_f):
        where = jax.tree_util.keystr(path) or "(the state itself)"
        if jnp.shape(d) != jnp.shape(y):
            raise ValueError(
                f"{what} returned shape {jnp.shape(d)} at {where}, where the state's leaf has "
                f"shape {jnp.shape(y)}: the field must match the state leaf for leaf (diffrax "
                "would broadcast it silently and solve another ODE)."
            )
        with jax.numpy_dtype_promotion("standard"):
            promoted = jnp.result_type(d, y)
        if promoted != jnp.result_type(y):
            raise ValueError(
                f"{what} returned dtype {jnp.result_type(d)} at {where}, which does not cast "
                f"into the state's dtype {jnp.result_type(y)} (the solve's state)."
            )


def _unit_time_field(s, y, args):
    # The flow in s = (t - t0)/(t1 - t0): dy/ds = (t1 - t0) f(t0 + s (t1 - t0), y).
    flow, problem, t0, span = args
    field = flow.vector_field(t0 + s * span, y, problem)
    check_field_like_state(flow, y, field)  # at trace time, on shapes
    return jax.tree.map(lambda d: span * d, field)


class _FirstStepGiven(diffrax.AbstractAdaptiveStepSizeController):
    """`controller` with its first step `first` (a positive size, in either time direction)
    chosen by the caller. (`diffeqsolve(dt0=...)` with a traced step adds a runtime sign check,
    a host callback that keeps the program out of JAX's persistent cache; handed to the
    controller's `init` it needs none.)"""

    controller: diffrax.PIDController
    first: jax.Array

    # The tolerances an implicit solver's root finder takes over: the controller's own.
    @property
    def rtol(self):
        return self.controller.rtol

    @property
    def atol(self):
        return self.controller.atol

    @property
    def norm(self):
        return self.controller.norm

    def wrap(self, direction):
        # diffrax solves a backward problem forward in -t: `first` is already a step there.
        return _FirstStepGiven(self.controller.wrap(direction), self.first)

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        first = self.first if dt0 is None else dt0
        return self.controller.init(terms, t0, t1, y0, first, args, func, error_order)

    def adapt_step_size(self, *args, **kwargs):
        return self.controller.adapt_step_size(*args, **kwargs)


class UnitTimeInterpolation(diffrax.AbstractPath):
    r"""The dense output of a solve run in the unit time $s = (t - t_0)/(t_1 - t_0) \in [0, 1]$,
    read in the flow's time $t$ (what `solve`'s `Trajectory.interpolation` and `compare`'s
    reference hold).

    Why: when the end time reaching `diffrax.diffeqsolve` is traced (a new horizon must not
    recompile), diffrax unrolls 100 `prevbefore`s of it into every program (~2,200 scalar HLO
    ops in one fused kernel, about a third of a small solve's compile time); with the
    constants 0 and 1 XLA folds them away.

    **Fields:** `path` (diffrax's interpolation in $s$); `start`, `end` ($t_0$, $t_1$).
    """

    path: diffrax.DenseInterpolation
    start: jax.Array
    end: jax.Array

    def _time(self, s):
        # The ends exactly (not t0 + 1 * span, which can miss t1 by an ulp).
        return jnp.where(s == 1, self.end, jnp.where(s == 0, self.start, self._unmap(s)))

    def _unmap(self, s):
        return self.start + s * (self.end - self.start)

    def _unit(self, t):
        return (t - self.start) / (self.end - self.start)

    @property
    def t0(self):
        return self._time(self.path.t0)

    @property
    def t1(self):
        """The last time the solve reached ($t_1$ unless it stopped early)."""
        return self._time(self.path.t1)

    @property
    def ts(self):
        """The solver's step times in $t$ (`inf` past the last step, as diffrax pads)."""
        return self._time(self.path.ts)

    def _inside(self, t):
        # Kept inside the steps' span: mapping a step time t -> s can round past the last
        # step, where diffrax's buffers hold no polynomial (NaN); callers check t is in range.
        # (`where`, not `clip`: at t1 itself clip's derivative is 1/2, the tie of a minimum.)
        s, lo, hi = self._unit(t), self.path.t0, self.path.t1
        return jnp.where(s > hi, hi, jnp.where(s < lo, lo, s))

    def evaluate(self, t0, t1=None, left: bool = True):
        if t1 is not None:  # the increment (a tree map: diffrax's `-` fails on NamedTuples)
            return jax.tree.map(jnp.subtract, self.evaluate(t1, left=left), self.evaluate(t0))
        return self.path.evaluate(self._inside(t0), left=left)

    def derivative(self, t, left: bool = True):
        rate = 1.0 / (self.end - self.start)
        return jax.tree.map(lambda d: d * rate, self.path.derivative(self._inside(t), left))


DENSE_MEMORY_LIMIT = 2 * 2**30  # bytes a dense solve may preallocate before we refuse
# Above this many bytes of dense output for `max_steps` steps (a network), `solve` counts the
# steps first (a solve without dense output) and preallocates for those only; `compare` reads
# its reference off the dense output up to the same size (`_compare.DENSE_COMPARE_BYTES`).
DENSE_COUNTED_BYTES = 256 * 2**20


def dense_values_per_step(solver: diffrax.AbstractSolver) -> tuple[float, float]:
    """Values diffrax's dense output stores per step: `(per state entry, per step)`, read from
    the shapes of two small solves (`jax.eval_shape`, nothing runs): 9 per entry for
    Tsit5/Dopri5/Kvaerno5 (their stages plus the endpoints) and 16 for Dopri8, plus the step's
    time. Depends on the solver's class only: diffrax's own solvers from a table of these
    measurements (each costs several traces of a solve, seconds of CPU per process), any other
    solver measured once."""
    kind = type(solver)
    return _DENSE_VALUES.get(kind) or _dense_values_per_step(kind)


# `_dense_values_per_step` of diffrax's solvers, measured (tests/test_solve.py re-measures some).
_DENSE_VALUES = {
    diffrax.Tsit5: (9.0, 1.0),
    diffrax.Dopri5: (9.0, 1.0),
    diffrax.Dopri8: (16.0, 1.0),
    diffrax.Kvaerno3: (6.0, 1.0),
    diffrax.Kvaerno4: (7.0, 1.0),
    diffrax.Kvaerno5: (9.0, 1.0),
    diffrax.Heun: (4.0, 1.0),
    diffrax.Bosh3: (6.0, 1.0),
}


@ft.cache
def _dense_values_per_step(kind: type) -> tuple[float, float]:
    solver = kind()

    def values(size, steps):
        sol = jax.eval_shape(
            lambda: integrate(
                diffrax.ODETerm(lambda t, y, args: -y),
                solver,
                jnp.asarray(0.0),
                jnp.asarray(1.0),
                jnp.zeros(size),
                saveat=diffrax.SaveAt(t1=True, dense=True),
                controller=diffrax.PIDController(rtol=1e-6, atol=1e-6),
                max_steps=steps,
            )
        )
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(sol.interpolation))

    # Differences in the state size and in max_steps: the buffers' one extra row (the start)
    # and fixed-size leaves cancel, leaving the values per step exactly.
    per_entry = ((values(2, 16) - values(1, 16)) - (values(2, 8) - values(1, 8))) / 8
    per_step = (values(1, 16) - values(1, 8)) / 8 - per_entry
    return per_entry, per_step


def dense_bytes(flow, problem, max_steps: int, solver=None) -> tuple[float, int, float]:
    """`(bytes, state size, values per entry)` of the dense output diffrax preallocates for
    `max_steps` steps of `solver` (default Tsit5) on `flow`'s state: `max_steps` times the
    state size times the values the solver keeps per step (`dense_values_per_step`: 9 for
    Tsit5, 16 for Dopri8), in float64."""
    size = sum(int(np.prod(jnp.shape(x))) for x in jax.tree.leaves(flow.init(problem.params0)))
    per_entry, per_step = dense_values_per_step(diffrax.Tsit5() if solver is None else solver)
    return 8 * int(max_steps) * (per_entry * size + per_step), size, per_entry


def check_dense_memory(
    flow,
    problem,
    max_steps: int,
    copies: int = 1,
    solver: diffrax.AbstractSolver | None = None,
    remedy: str = "Pass dense=False to save only at ts, or lower max_steps.",
    taken: int | None = None,
) -> None:
    """Refuse a dense solve whose preallocated interpolation buffers would exceed 2 GiB
    (`dense_bytes` for `max_steps` steps, times `copies`). `remedy` is what the caller's user
    can change; `taken`: the steps the solve takes, counted (`solve`'s counted dense solve,
    `max_steps` its budget for them)."""
    need, size, per_entry = dense_bytes(flow, problem, max_steps, solver)
    need *= copies
    if need > DENSE_MEMORY_LIMIT:
        steps = f"max_steps={max_steps}"
        if taken is not None:
            steps = f"{max_steps} steps for the {taken} it takes"
        raise ValueError(
            f"dense output would preallocate about {need / 2**30:.1f} GiB ({steps} x "
            f"{size} state entries x {per_entry:.3g} values per step"
            f"{f' x {copies} references' if copies > 1 else ''}). {remedy}"
        )


# Bytes an implicit solver's dense Jacobian may take (per solve solved at once) before we refuse.
IMPLICIT_MEMORY_LIMIT = DENSE_MEMORY_LIMIT


def _jvp_bytes(flow, problem, t0: float, state, size: int) -> float:
    """XLA's temporary bytes for one Jacobian-vector product of the raveled field (the
    program the automatic choice compiled for a large state, `_field_product`: read from
    its cache; compiled here otherwise), 0 where the field has no forward mode."""
    with jax.numpy_dtype_promotion("standard"):  # as `_compute_spectrum`: its cache key
        try:
            args = (flow, problem, np.float64(t0), state, jnp.zeros(size), True)
            compiled = _field_product.lower(*args).compile()
        except TypeError as error:  # a custom_vjp: the Jacobian's own failure says so
            if "forward-mode" not in str(error):
                raise
            return 0.0
    stats = compiled.compiled.memory_analysis()  # (equinox's `Compiled` wraps JAX's)
    return 0.0 if stats is None else float(stats.temp_size_in_bytes)


def implicit_jacobian_bytes(flow, problem, t0: float = 0.0) -> tuple[float, int, float]:
    r"""`(bytes, n, per column)`: what an implicit solver's Newton iteration allocates to
    materialise the dense Jacobian of `flow`'s field on its state of $n$ entries (lineax's
    `LU` behind diffrax's `VeryChord`: `lu_factor(operator.as_matrix())`, the matrix of a
    linearised field, its $n$ columns as one batched Jacobian-vector product):

    $$\text{bytes} \approx 8n^2 + n\,b_{\rm jvp},$$

    the matrix in float64 (the solve's dtype) and the $n$-fold batch of one product's
    temporaries $b_{\rm jvp}$ (XLA's count for the compiled product), the term that dominates
    on a network: through the order-2 modified field of centred RMSprop on an 8,970-parameter
    MLP and 1,797 digits, $b_{\rm jvp}$ = 31 MiB, so 274 GiB, against XLA's 248 GiB for the
    Jacobian program itself (the matrix alone: 0.6 GiB). The product is counted above 1000 state
    entries only: below, the automatic choice materialises this Jacobian itself
    (`_jacobian_program`)."""
    state = flow.init(problem.params0)
    size = sum(int(np.prod(jnp.shape(x))) for x in jax.tree.leaves(state))
    per_column = 0.0
    if size > _DENSE_HESSIAN_MAX_DIM:
        per_column = _jvp_bytes(flow, problem, t0, state, size)
    return 8.0 * size * size + size * per_column, size, per_column


def _dense_linear_solve(solver) -> bool:
    """Whether `solver` is implicit with a root finder that materialises its Jacobian (diffrax's
    default: `VeryChord` with lineax's `AutoLinearSolver`, an LU; not an iterative linear
    solver such as `lineax.GMRES`, which needs products only)."""
    if not isinstance(solver, diffrax.AbstractImplicitSolver):
        return False
    root = solver.root_finder
    if isinstance(root, diffrax.VeryChord | optx.Chord | optx.Newton):
        linear = root.linear_solver
        if isinstance(linear, lx.Normal):  # (lineax.NormalCG: CG on the normal equations)
            linear = linear.inner_solver
        return not isinstance(linear, lx.GMRES | lx.CG | lx.BiCGStab | lx.LSMR)
    return True


def check_implicit_memory(flow, problem, solver, what: str, t0: float = 0.0, copies: int = 1):
    """Refuse (`ValueError`), before anything is allocated, an implicit solve whose dense
    Jacobian (`implicit_jacobian_bytes`, times `copies` solved at once) would exceed
    `IMPLICIT_MEMORY_LIMIT` (2 GiB), naming the state size, the bytes and what to change."""
    if not _dense_linear_solve(solver):
        return
    need, size, per_column = implicit_jacobian_bytes(flow, problem, t0)
    need *= copies
    if need <= IMPLICIT_MEMORY_LIMIT:
        return
    columns = f" + {size} columns x {per_column / 2**20:.3g} MiB of the field's derivative"
    raise ValueError(
        f"{what}: the implicit solver {type(solver).__name__} would materialise the dense "
        f"Jacobian of the flow's field on its state of {size} entries, about "
        f"{need / 2**30:.3g} GiB ({size}^2 x 8 bytes"
        f"{columns if per_column else ''}{f', x {copies} solves' if copies > 1 else ''}), "
        f"above the {IMPLICIT_MEMORY_LIMIT / 2**30:.3g} GiB limit. Pass an explicit solver "
        "(solver='tsit5': no Jacobian; slow where the flow is stiff), or make the problem "
        "smaller (fewer parameters or samples), or, for an automatic flow, a lower order "
        "(order=1: no derivatives of the optimizer's step through the field)."
    )


def integrate(
    terms: diffrax.AbstractTerm,
    solver: diffrax.AbstractSolver,
    t0: ScalarLike,
    t1: ScalarLike,
    y0: PyTree,
    *,
    controller: diffrax.AbstractStepSizeController,
    max_steps: int,
    saveat: diffrax.SaveAt | None = None,
    args: PyTree = None,
    dt0: ScalarLike | None = None,
    event: diffrax.Event | None = None,
    adjoint: diffrax.AbstractAdjoint | None = None,
    progress_meter: diffrax.AbstractProgressMeter | None = None,
) -> diffrax.Solution:
    r"""The one place where dynopt calls `diffrax.diffeqsolve` (traceable, `vmap`-able).

    Every integration in dynopt goes through here: `solve`/`compare` (adaptive ODE),
    `dynopt.sde.simulate` and `first_passage` (fixed-step SDE), the characteristics and density
    transport, the ODE-RNN observation model and the Fokker–Planck method of lines. Each call
    site keeps its deliberate choices, expressed as arguments: the `controller` (a
    `PIDController(rtol, atol)` for references, `StepTo(grid)` for SDEs and fixed-grid models),
    `saveat`, an `event`, the `adjoint`.

    It never throws (`throw=False`, as equinox advises under `vmap`): a failed solve returns
    with `sol.result` set; call `raise_for_result` on it outside `jit` to get a `SolveError`
    saying what happened and what to change (or, inside a loss, mask with
    `diffrax.is_successful(sol.result)`).

    **Arguments:** as `diffrax.diffeqsolve`, with `controller` (its `stepsize_controller`) and
    `max_steps` required (an unbounded solve can hang on a stiff flow); `adjoint=None` is
    diffrax's default `RecursiveCheckpointAdjoint`; `progress_meter=None` shows nothing.

    **Returns:** the `diffrax.Solution`.
    """
    return diffrax.diffeqsolve(
        terms,
        solver,
        t0,
        t1,
        dt0,
        y0,
        args=args,
        saveat=diffrax.SaveAt(t1=True) if saveat is None else saveat,
        stepsize_controller=controller,
        adjoint=diffrax.RecursiveCheckpointAdjoint() if adjoint is None else adjoint,
        event=event,
        max_steps=int(max_steps),
        throw=False,
        progress_meter=diffrax.NoProgressMeter() if progress_meter is None else progress_meter,
    )


# The reference solves' first step, as a fraction of [t0, t1] (see `dense_solve`).
_FIRST_STEP = 1e-6


def dense_solve(
    flow,
    problem,
    solver,
    t0,
    t1,
    ts,
    rtol,
    atol,
    max_steps,
    dense: bool = True,
    meter=None,
    reach: bool = False,
    at_times: bool = False,
    stop: bool = False,
) -> diffrax.Solution | tuple[diffrax.Solution, tuple[jax.Array, PyTree]]:
    """The reference solve of a flow's drift behind `solve` and `compare` (traceable; never
    throws): Tsit5/Kvaerno5/... with `PIDController(rtol, atol)`, saved at `ts`.

    With `dense`, the values at `ts` are read off the dense output (the same per-step
    interpolating polynomials diffrax's `SaveAt(ts=...)` evaluates), and `inf` past the last
    step reached, as diffrax leaves them: `SaveAt(ts=...)` would add diffrax's own runtime checks
    of `ts` (host callbacks, which keep the program out of JAX's persistent cache; `solve` and
    `compare` check `ts` on the host).

    With `at_times` (instead of `dense`), the solver itself writes the values at `ts` into its
    state (`SaveAtTimes` with `loop`: one row per time, `ts` non-decreasing, rows past `t1` as
    padding), the same polynomials' values as the dense read in a buffer of `len(ts)` rows
    instead of `max_steps` steps of all the stages; a row past the last step reached holds the
    state there, as the dense read (clamped to the last step) gives it.

    With `stop` (and a t1 save: `dense`, `at_times`, `reach` or a single save time), also
    `(t, y)`: the last time the solve reached, in $t$, and diffrax's state there, where a
    failed solve stopped (what its diagnosis reads: `failure_diagnosis`, no second solve)."""
    y0 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), flow.init(problem.params0))
    t0, t1 = jnp.asarray(t0, jnp.float64), jnp.asarray(t1, jnp.float64)
    # Solved in the unit time s on the constant interval [0, 1] (`UnitTimeInterpolation`).
    unit = UnitTimeInterpolation(None, t0, t1)
    # `reach` (without `dense`): the state where the solve stopped is saved too, in the first
    # row not reached (diffrax's t1 save): what a failure's diagnosis reads.
    # One save time without `dense` is the horizon itself: diffrax's t1 save, with none of
    # `SaveAt(ts=...)`'s runtime checks (host callbacks: ~0.1 ms a call on a small problem, and
    # the program stays out of the persistent cache).
    final_only = not dense and not reach and not at_times and ts.shape[0] == 1
    if dense:
        saveat = diffrax.SaveAt(t1=True, dense=True)
    elif at_times:
        saveat = diffrax.SaveAt(t1=True, solver_state=True)
        solver = SaveAtTimes(solver, unit._unit(ts), loop=True)
    elif final_only:
        saveat = diffrax.SaveAt(t1=True)
    else:
        saveat = diffrax.SaveAt(ts=unit._unit(ts), t1=reach)
    if stop and not (dense or at_times or final_only or reach):
        raise ValueError("dense_solve: stop reads diffrax's t1 save, which these saves lack.")
    controller = diffrax.PIDController(rtol=rtol, atol=atol)
    # The first step is a fixed fraction of the interval, not diffrax's heuristic (Hairer's):
    # that evaluates the vector field outside the step loop, a second copy of the field in the
    # compiled program (for an order-3 modified flow a third of its instructions, ~30% of its
    # compile time), and in the unit time s it can propose a first step that every retry
    # rejects. A tiny step is accepted and the controller grows it (at most 10x a step): ~6
    # extra steps.
    sol = integrate(
        diffrax.ODETerm(_unit_time_field),
        solver,
        0.0,
        1.0,
        y0,
        args=(flow, problem, t0, t1 - t0),
        saveat=saveat,
        controller=_FirstStepGiven(controller, jnp.asarray(_FIRST_STEP, jnp.float64)),
        max_steps=max_steps,
        progress_meter=meter,
    )

    def solution() -> diffrax.Solution:  # saved at `ts`, in the flow's time t
        if at_times:
            ss = solver.ts
            last = jax.tree.map(lambda y: y[-1], sol.ys)  # the state where the solve stopped
            ys = saved(sol, ss, 0.0, y0)
            past = ss > sol.ts[-1]
            ys = jax.tree.map(lambda y, z: _rows_where(past, z[None], y), ys, last)
            return dataclasses.replace(sol, t0=t0, t1=t1, ts=ts, ys=ys, solver_state=None)
        if final_only:  # `inf` where the solve stopped short of t1, as `SaveAt(ts=...)` leaves it
            done = diffrax.is_successful(sol.result)
            ys = jax.tree.map(lambda y: jnp.where(done, y, jnp.inf), sol.ys)
            return dataclasses.replace(sol, t0=t0, t1=t1, ts=jnp.where(done, ts, jnp.inf), ys=ys)
        if reach and not dense:  # the saved times in t (`inf` where none)
            return dataclasses.replace(sol, t0=t0, t1=t1, ts=t0 + sol.ts * (t1 - t0))
        if not dense:
            # The requested times where saved, diffrax's `inf` where the solve stopped before them.
            return dataclasses.replace(
                sol, t0=t0, t1=t1, ts=jnp.where(jnp.isfinite(sol.ts), ts, sol.ts)
            )
        interp = eqx.tree_at(lambda u: u.path, unit, sol.interpolation, is_leaf=lambda x: x is None)
        reached = ts <= interp.t1

        def at(t, ok):
            y = interp.evaluate(jnp.minimum(t, interp.t1))
            return jax.tree.map(lambda x: jnp.where(ok, x, jnp.inf), y)

        return dataclasses.replace(
            sol, t0=t0, t1=t1, ts=ts, ys=jax.vmap(at)(ts, reached), interpolation=interp
        )

    if stop:
        # diffrax's t1 save: the state where the solve stopped (at t1 where it succeeded)
        return solution(), (unit._time(sol.ts[-1]), jax.tree.map(lambda y: y[-1], sol.ys))
    return solution()


@dataclasses.dataclass
class _Compiled:
    """One jitted reference solve for a (flow, problem, solver) structure and the static
    options: the arrays come in flat, the static leaves are closed over. `run` returns
    `(ok, arrays, result)`: whether the solve succeeded, the array leaves of its `Trajectory`
    and diffrax's result; `full` the whole `diffrax.Solution` with the state where the solve
    stopped (a failure's diagnosis: compiled once per key, on the first failure);
    `outputs` holds that `Trajectory`'s treedef and its other leaves, `_FLOW_SLOT` where the
    flow goes (filled in when `run` is traced); `dense_need`: the bytes of dense output
    this key preallocates (`dense_bytes`, computed on its first dense solve)."""

    run: Callable
    full: Callable
    outputs: list
    dense_need: float | None = None

    def trajectory(self, arrays: list, flow) -> Trajectory:
        """The `Trajectory` of `run`'s `arrays` holding `flow`: unflattened from the traced
        one's treedef (no `eqx.Module.__init__`, no `eqx.combine`: ~0.1 ms a call before)."""
        treedef, template = self.outputs
        it = iter(arrays)
        leaves = [
            next(it) if x is _ARRAY_SLOT else flow if x is _FLOW_SLOT else x for x in template
        ]
        return jax.tree.unflatten(treedef, leaves)


# Placeholders in `_Compiled.outputs`' leaves: a returned array, the caller's flow.
_ARRAY_SLOT, _FLOW_SLOT = object(), object()

# Jitted solves by structure (treedef, static leaves, array shapes and dtypes), the solver's
# name and the static options: a repeated `solve` pays one `jax.jit` dispatch of the arrays, no
# `filter_jit` partition of the flow, problem and solver pytrees, and no eager op (~0.5 ms on a
# CPU before).
_COMPILED: dict = {}
_COMPILED_MAX = 256


def _compiled_solve(
    flow,
    problem,
    solver,
    max_steps: int,
    dense: bool,
    progress: bool,
    name: str | None = None,
    flat: _Flat | None = None,
):
    """`(compiled, arrays)`: the cached jitted solve for this structure and its array leaves;
    `name` the `Trajectory`'s `solver` (default: the solver's class, lower case); `flat` the
    caller's `_flatten((flow, problem))`, if it has it."""
    if name is None:
        name = type(solver).__name__.lower()
    flat = _flatten((flow, problem)) if flat is None else flat
    solver_flat = _SOLVER_FLATS.get(id(solver)) or _flatten(solver)
    treedef, solver_treedef = flat.treedef, solver_flat.treedef
    static = flat.static + solver_flat.static
    cut = len(flat.static)  # the solver's leaves come last
    arrays = flat.arrays + solver_flat.arrays
    shapes = tuple((x.shape, x.dtype) for x in arrays)
    key = (treedef, solver_treedef, static, shapes, name, max_steps, dense, progress)
    try:
        found = _COMPILED.get(key)
    except TypeError:  # an unhashable static leaf: compile for this call only
        key = found = None
    if found is not None:
        return found, arrays
    outputs: list = []

    def solution(arrays, t0, ts, rtol, atol, reach=False):
        it = iter(arrays)
        leaves = [next(it) if x is None else x for x in static]
        flow, problem = jax.tree.unflatten(treedef, leaves[:cut])
        solver = jax.tree.unflatten(solver_treedef, leaves[cut:])
        # `progress` (static) is diffrax's tqdm meter, shown under `dynopt.show_progress()`.
        meter = diffrax.TqdmProgressMeter() if progress else None
        sol = dense_solve(
            flow, problem, solver, t0, ts[-1], ts, rtol, atol, max_steps, dense, meter, reach
        )
        return flow, problem, sol

    def fn(arrays, t0, ts, rtol, atol):
        # Only what `solve` returns comes back: every output array is a buffer to hand over.
        flow, problem, sol = solution(arrays, t0, ts, rtol, atol)
        params = jax.vmap(flow.params)(sol.ys)
        traj = Trajectory(
            ts=sol.ts,
            params=params,
            loss=jax.vmap(problem.loss)(params),
            diverged_at=jnp.asarray(-1),
            interpolation=sol.interpolation if dense else None,
            flow=_FLOW_SLOT,
            solver=name,
            stats={k: v for k, v in sol.stats.items() if k != "max_steps"},
        )
        leaves, out_treedef = jax.tree.flatten(traj)
        template = [_ARRAY_SLOT if eqx.is_array(x) else x for x in leaves]
        outputs[:] = [out_treedef, template]
        ok = jnp.all(sol.result == diffrax.RESULTS.successful)
        # The result too (a scalar): a failed dense solve is diagnosed from these outputs.
        return ok, [x for x in leaves if eqx.is_array(x)], sol.result

    # The whole solution, to diagnose a failure: one jitted function per key (a `filter_jit`
    # of a new lambda at each failure compiled the solve anew every time, 0.5 s at d = 3).
    full = eqx.filter_jit(
        lambda arrays, t0, ts, rtol, atol: solution(arrays, t0, ts, rtol, atol, reach=True)[2]
    )
    compiled = _Compiled(jax.jit(fn), full, outputs)
    if key is not None:
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = compiled
    return compiled, arrays


def _advice(
    name: str, max_steps: int | None, rtol: float | None, atol: float | None, implicit: bool
) -> str:
    tol = f" (now {rtol:g}/{atol:g})" if rtol is not None and atol is not None else ""
    steps = f" (now {max_steps})" if max_steps is not None else ""
    if name == "max_steps_reached" and implicit:
        return f"raise max_steps={steps}, loosen rtol/atol{tol}, or shorten the horizon"
    if name == "max_steps_reached":
        return (
            f"raise max_steps={steps}, loosen rtol/atol{tol}, shorten the horizon, or pass "
            "solver='implicit' (Kvaerno5) if the problem is stiff"
        )
    if name == "dt_min_reached":
        return (
            "the step size underflowed: the flow may blow up or be non-smooth before t1; "
            "shorten the horizon"
        )
    if name in ("nonlinear_max_steps_reached", "nonlinear_divergence"):
        return (
            "the implicit solver's Newton iteration failed on a step it could not shrink (a "
            "fixed step, or a Jacobian that is singular or changes too fast): use an adaptive "
            f"controller or smaller steps, loosen rtol/atol{tol}, or try an explicit solver"
        )
    if name in ("singular", "breakdown", "stagnation", "conlim", "nonfinite_input"):
        return (
            "a linear solve inside the implicit solver failed (singular Jacobian or non-finite "
            "state): check the vector field for NaN/inf, or try an explicit solver"
        )
    return (
        "the state may have become non-finite (blow-up in finite time?): shorten the horizon, "
        "or try solver='implicit'"
    )


# A state this many times larger than at the start (or 1) when a solve stops early: a blow-up.
_BLOW_UP_GROWTH = 1e3
# A failed solve that stopped within this fraction of its horizon, from a start whose field would
# cover more than `_FAST_START` state sizes over it, is named as too fast a start (an optimizer's
# hyper-parameter that should scale with h: AdaBelief's eps_root = 1e-16 gives 1.4e6 at h -> 0).
_STALLED, _FAST_START = 1e-6, 1e5


def _diagnose(flow, problem, sol: diffrax.Solution, ts_host: np.ndarray, t0: float) -> str:
    """What a failed reference solve reached and why it likely stopped: the last time it
    reached (the dense output's last step, else the last finite save), the state's size there
    against the start, and the vector field's size there: non-finite, a blow-up of the state
    (`_BLOW_UP_GROWTH`-fold), or a singular field (the same growth of its norm)."""
    norm = lambda y: float(optax.tree.norm(jax.tree.map(lambda x: jnp.asarray(x, float), y)))
    y0 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), flow.init(problem.params0))
    reached, y = t0, y0
    span = max(float(ts_host[-1]) - t0, 1e-300)
    # (`ys` None: a dense solve's outputs, whose saves are its interpolation's values.)
    saved_ok = np.zeros(0, bool)
    if sol.ys is not None:
        saved_ok = np.asarray(
            jax.vmap(
                lambda y: jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(y)]))
            )(sol.ys)
        )
    if saved_ok.any():
        last = int(np.flatnonzero(saved_ok)[-1])
        reached, y = float(np.asarray(sol.ts)[last]), jax.tree.map(lambda x: x[last], sol.ys)
    interp = sol.interpolation
    if interp is not None:
        steps = np.asarray(interp.ts)
        steps = steps[np.isfinite(steps)]
        if steps.size and steps.max() > reached:
            reached = float(steps.max())
            y = interp.evaluate(reached)
    size, size0 = norm(y), norm(y0)
    speed, speed0 = (
        norm(flow.vector_field(reached, y, problem)),
        norm(flow.vector_field(t0, y0, problem)),
    )
    where = (
        f"It reached t = {reached:.10g} of [{t0:g}, {float(ts_host[-1]):g}], where the state's "
        f"norm is {size:.3g} (at t0: {size0:.3g})."
    )
    sweep = speed0 * span / max(size0, 1e-300)  # state sizes the start's speed covers in all
    if reached - t0 <= _STALLED * span and np.isfinite(sweep) and sweep > _FAST_START:
        where += (
            f" The field at t0 is already {speed0:.3g} against that norm: it would cover "
            f"{sweep:.2g} times the state's size over the horizon. For an optimizer's "
            "continuum this is the mark of a hyper-parameter held fixed as h -> 0 that its "
            "flow needs scaled with h (an eps inside a square root: AdaBelief's eps_root, "
            "which the continuum needs ∝ h): scale it with h, or pass the flow yourself."
        )
    if not (np.isfinite(size) and np.isfinite(speed)):
        cause = (
            "Likely cause: the vector field is not finite there (NaN/inf in the loss or its "
            "gradient, e.g. a log or sqrt out of its domain; for an automatic flow also in the "
            "optimizer's update or its derivatives, e.g. the sqrt of a second moment that "
            "vanishes on the slow manifold); no step budget helps. Check the loss and the "
            "field at these parameters."
        )
    elif size > _BLOW_UP_GROWTH * max(size0, 1.0):
        cause = (
            "Likely cause: the flow blows up in finite time (the state grew "
            f"{size / max(size0, 1e-300):.3g}-fold); no step budget helps. End the horizon "
            "before the blow-up, or change the problem."
        )
    elif speed > _BLOW_UP_GROWTH * max(speed0, 1.0):
        cause = (
            f"Likely cause: the vector field grows without bound there (its norm is "
            f"{speed:.3g}, at t0 {speed0:.3g}): a singularity of the gradient (e.g. 1/x, the "
            "derivative of a log or sqrt at the edge of its domain); no step budget helps. End "
            "the horizon before it, or change the problem."
        )
    elif (kinks := _kinked_gradient(flow, problem, reached, y)) is not None:
        cause = (
            f"Likely cause: the loss's gradient is not smooth in the parameters ({kinks} in "
            "the model or loss, e.g. relu, abs or max) and jumps where the flow meets a kink, "
            "here: an adaptive ODE solver cannot pass it, and no step budget, tolerance or "
            "implicit solver helps. For a reference solution use a smooth activation (tanh, "
            "gelu, softplus) or a smooth loss."
        )
    else:
        # Only now (it needs a Jacobian, dense or by products): the field changing on a tiny
        # time scale.
        radius = _radius(flow, problem, reached, y)
        radius0 = _radius(flow, problem, t0, y0) or 0.0
        if radius is not None and radius > _BLOW_UP_GROWTH * max(radius0, 1.0 / span):
            cause = (
                f"Likely cause: the flow's Jacobian there has spectral radius {radius:.3g} "
                f"(at t0: {radius0:.3g}): the field changes on a time scale of "
                f"{1 / radius:.2g}, so each step is that short. Either the flow turned stiff (an "
                "implicit solver helps) or its field is nearly discontinuous (a normalized or "
                "sign-like step switching where a gradient, one gradient coordinate or one "
                "parameter leaf's gradient vanishes, smoothed only by an eps, e.g. the continuum "
                "of optax.adam with its betas fixed as h -> 0, -g/(|g| + eps) per coordinate, or "
                "optax.novograd's per-leaf normalization: no solver helps; a larger eps widens "
                "the switch). End the horizon before "
                f"t = {reached:.4g}, or change the problem."
            )
        elif (jump := _field_jump(flow, problem, reached, y)) is not None:
            cause = (
                f"Likely cause: the flow's vector field is discontinuous there: it changes by "
                f"{jump:.3g} ({jump / max(speed, 1e-300):.3g} of its size) across the state "
                "there, a change that does not shrink with the distance (down to 1e-10 of the "
                "parameters' scale). A switch, such as the sign of a gradient component that "
                "vanishes there: the exact flow slides along it, and an adaptive ODE solver "
                "cannot pass it; no step budget, tolerance or implicit solver helps. Smooth the "
                "field (a width or eps > 0 in a sign-like flow), or end the horizon before "
                f"t = {reached:.4g}."
            )
        else:
            return where
    return f"{where} {cause}"


# A kink found along the flow: the gradient's change over +-delta at least this much of its change
# over +-3 delta (a smooth gradient's: ~1/3; across a jump: ~1), and at least `_KINK_SIZE` of
# the gradient (not rounding noise).
_KINK_JUMP = 0.7
_KINK_SIZE = 1e-6
# The half-widths delta tried, relative to the parameters' scale: 1e-10 to 1.6e-4.
_KINK_DELTAS = 1e-10 * 3.0 ** np.arange(14)


def _kinked_gradient(flow, problem, t, y) -> str | None:
    """The non-smooth primitives of the loss's gradient (`smooth.classify`: relu's `max`, `abs`,
    a `select_n` chosen by the parameters) where the flow stopped at a kink of it, else `None`.
    Syntactic alone, smooth losses would be named too (softplus and logsumexp hold `max`,
    `abs` and `select_n`): the gradient must also jump near the stopping point, along the flow
    (`_KINK_DELTAS`, `_KINK_JUMP`, `_KINK_SIZE`: a change that does not shrink with the span).
    Only on a failed solve's diagnosis."""
    from ._modified.smooth import classify

    loss = getattr(problem, "loss", None)
    if loss is None:
        return None
    try:
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), flow.params(y))
        grad = jax.grad(loss)
        found = classify(grad, params)
        names = sorted({k.split(" ")[0] for k in found.kinks | found.branches})
        if not names:
            return None
        flat, _ = ravel_pytree(params)
        step, _ = ravel_pytree(flow.params(flow.vector_field(t, y, problem)))
        step = jnp.asarray(step, jnp.float64)
        size = float(jnp.linalg.norm(step))
        if not (np.isfinite(size) and size > 0):
            return None
        g = jax.tree_util.Partial(_raveled_gradient, problem, params)
        jump = _jump(g, flat, step / size, float(jnp.linalg.norm(g(flat))))
        return ", ".join(names) if jump is not None else None
    except Exception:  # a diagnosis never hides the solve's own error
        return None


def _raveled_gradient(problem, params, z):
    """The loss's gradient at the raveled parameters `z` (`params`: their structure), raveled."""
    return ravel_pytree(jax.grad(problem.loss)(ravel_pytree(params)[1](z)))[0]


def _raveled_vector_field(flow, problem, t, y, z):
    """The flow's vector field at time `t` and the raveled state `z` (`y`: its structure),
    raveled."""
    return ravel_pytree(flow.vector_field(t, ravel_pytree(y)[1](z), problem))[0]


def _jump(fn, flat, direction, size: float) -> float | None:
    """The largest change of `fn` across `flat ± delta·scale·direction` (`direction` a unit
    vector, scale the state's size or 1) for `delta` in `_KINK_DELTAS` that is at least
    `_KINK_JUMP` of its change over 3·delta (a smooth function's: ~1/3) and at least
    `_KINK_SIZE` of `size` (the function's own size): a jump that does not shrink with the
    span. `None` where there is none. `fn`: a `jax.tree_util.Partial` of a module-level
    function, its arrays leaves, so `_changes` compiles once per structure, not per failure."""
    scale = max(float(jnp.linalg.norm(flat)), 1.0)
    c = np.asarray(_changes(fn, flat, direction, np.float64(scale), jnp.asarray(_KINK_DELTAS)))
    near, far = c[:-1], c[1:]
    jump = np.isfinite(near) & (near >= _KINK_JUMP * far) & (near > _KINK_SIZE * size)
    return float(near[jump].max()) if jump.any() else None


@eqx.filter_jit
def _changes(fn, flat, direction, scale, deltas):
    """`_jump`'s changes of `fn` across `flat ± delta·scale·direction`, one per delta."""

    def change(delta):
        shift = (delta * scale) * direction
        return jnp.linalg.norm(fn(flat + shift) - fn(flat - shift))

    return jax.vmap(change)(deltas)


def _field_jump(flow, problem, t, y) -> float | None:
    r"""The size of the jump of the flow's vector field where a solve stopped, if it jumps there:
    its change over $y \pm \delta\,\hat f$ (along the field $f$ itself) at least `_KINK_JUMP`
    of its change over $\pm 3\delta$ (a smooth field's: ~1/3) and at least `_KINK_SIZE` of
    $\|f\|$, for some $\delta$ of `_KINK_DELTAS` (relative to the state's scale); else
    `None`. A field that switches (a sign of a vanishing gradient component) stalls the
    solver without any large derivative for `_radius` to see. Only on a failed solve's
    diagnosis."""
    try:
        flat, _ = ravel_pytree(y)
        if not jnp.issubdtype(flat.dtype, jnp.floating):
            return None
        # (t an array leaf: a new stopping time does not recompile `_changes`)
        field = jax.tree_util.Partial(_raveled_vector_field, flow, problem, np.float64(t), y)
        f0 = field(flat)
        size = float(jnp.linalg.norm(f0))
        if not (np.isfinite(size) and size > 0):
            return None
        return _jump(field, flat, f0 / size, size)
    except Exception:  # a diagnosis never hides the solve's own error
        return None


def _radius(flow, problem, t, y) -> float | None:
    r"""The spectral radius of the flow's Jacobian $\partial f/\partial y$ at $(t, y)$: dense for
    states of at most `_DENSE_HESSIAN_MAX_DIM` entries, else matrix-free (`_field_radius`, the
    automatic choice's power iteration: a network's state, whose dense Jacobian is out of
    reach); `None` where it cannot be had. $1/$radius is the shortest time scale the solver
    must resolve there."""
    flat, unravel = ravel_pytree(y)
    if not jnp.issubdtype(flat.dtype, jnp.floating):
        return None
    if flat.size > _DENSE_HESSIAN_MAX_DIM:
        try:  # (`t` an array leaf: a new stopping time does not recompile)
            with jax.numpy_dtype_promotion("standard"):
                return float(_field_radius(flow, problem, np.float64(t), y, True))
        except Exception:  # a diagnosis must not replace the error it explains
            return None
    field = lambda z: ravel_pytree(flow.vector_field(t, unravel(z), problem))[0]
    try:
        jac = np.asarray(jax.jacfwd(field)(flat))
    except Exception:  # a diagnosis must not replace the error it explains
        return None
    if not np.all(np.isfinite(jac)):
        return float("inf")
    return float(np.max(np.abs(np.linalg.eigvals(jac))))


def raise_for_result(
    result,
    *,
    what: str,
    max_steps: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    stiffness: float | None = None,
    diagnosis: str | None = None,
    implicit: bool = False,
    entries: str = "batch entries",
) -> None:
    r"""Turn a diffrax `RESULTS` item (possibly batched, from `vmap`) into a `SolveError`.

    Compares the items' codes on the host (an item is a pytree of one integer array: `==`
    would dispatch a small eager program per call) and reads the message with
    `diffrax.RESULTS[item]`. The error names
    the failure, which batch entries failed, and what to change (`max_steps`, the tolerances,
    the solver, the horizon), or, given a `diagnosis` that names a likely cause (a blow-up, a
    non-finite field: `solve`'s), that instead, after the first sentence of diffrax's message
    (its own advice, e.g. "Try increasing `max_steps`", may be what the cause rules out);
    `implicit`: the solver was implicit already (no advice to switch to one); `entries`: what
    the result's axis is, in the message (`central_solve`'s: its saved intervals). After a
    terminating event, map `event_occurred` to success first (`diffrax.is_okay`).

    **Raises:** `SolveError` unless every entry is `successful`.
    """
    ok = np.atleast_1d(_code(result) == _code(diffrax.RESULTS.successful))
    bad = np.flatnonzero(~ok)
    if bad.size == 0:
        return
    first = jax.tree.map(lambda v: np.asarray(np.reshape(np.asarray(v), -1)[bad[0]]), result)
    name = next(
        (n for n in _RESULT_NAMES if _code(first) == _code(getattr(diffrax.RESULTS, n))),
        "unknown",
    )
    message = diffrax.RESULTS[first].strip()
    where = f" ({entries} {bad.tolist()} of {ok.size})" if ok.size > 1 else ""
    stiff = f"; estimated stiffness ratio {stiffness:.3g}" if stiffness is not None else ""
    if diagnosis is not None and "Likely cause" in diagnosis:
        said = message.split(". ")[0].rstrip(".")
        raise SolveError(f"{what} failed{where}: {name}: {said}. {diagnosis}")
    advice = _advice(name, max_steps, rtol, atol, implicit)
    extra = f" {diagnosis}" if diagnosis else ""
    raise SolveError(f"{what} failed{where}: {name}: {message}{extra} To fix: {advice}{stiff}.")


def _code(item) -> np.ndarray:
    """A `diffrax.RESULTS` item's integer code(s), on the host."""
    (code,) = jax.tree.leaves(item)
    return np.asarray(code)


# The failure modes `raise_for_result` gives advice for (diffrax.RESULTS item names).
_RESULT_NAMES = (
    "max_steps_reached",
    "dt_min_reached",
    "nonlinear_max_steps_reached",
    "nonlinear_divergence",
    "singular",
    "breakdown",
    "stagnation",
    "conlim",
    "nonfinite_input",
    "nonfinite",
    "max_steps_rejected",
    "event_occurred",
    "internal_error",
)


def solve(
    flow: AbstractFlow,
    problem: Problem,
    ts: ArrayLike,
    *,
    t0: ScalarLike = 0.0,
    solver=None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 16_384,
    dense: bool = True,
) -> Trajectory:
    r"""Reference solution of `flow` on `problem` by diffrax, in float64, saved at `ts`.

    The state starts at `flow.init(problem.params0)` at time `t0`. The returned `Trajectory` keeps
    the dense interpolation, so `traj.evaluate(t)` gives $\theta(t)$ at any $t \in [t_0, t_1]$.

    A flow with noise (`flow.diffusion(...)` not `None`: `dynopt.sde.Langevin`, `Kramers`,
    `SGDNoise`) is solved for its **drift** $f$ only: the noiseless flow, its small-noise limit
    and the mean-field path (e.g. `Langevin` at any temperature gives the gradient flow). Sample
    paths of the SDE come from `dynopt.sde.simulate`.

    **Arguments:**

    - `ts`: strictly increasing save times with `t0 <= ts[0]`; $t_1$ = `ts[-1]`.
    - `solver`: `None` (automatic, from the eigenvalues $\mu_i$ of the Jacobian of the flow's
      vector field at its initial state, $T = t_1 - t_0$: `Kvaerno5` when the stiffness ratio
      $\max_i(-\mathrm{Re}\,\mu_i)^+/\max(\min_i|\mathrm{Re}\,\mu_i|,
      \max_i(\mathrm{Re}\,\mu_i)^+, 1/T)$ is $\ge 10^4$ (a mode decaying that much faster
      than the solution must be followed: `stiffness_ratio`),
      or when Tsit5's stable steps alone on the modes that decay within the horizon,
      $T|\mu_i|/r(\mu_i)$, would exceed `max_steps` (a long horizon; $r$ is Tsit5's
      stability radius along $\mu_i$'s ray, 3.5 within 60° of the negative real axis, less
      towards the imaginary axis); else `Tsit5`, whose steps
      resolve fast oscillations, $|\mathrm{Im}\,\mu| \gg |\mathrm{Re}\,\mu|$, as any solver
      must, at the least cost. For a gradient flow the $\mu_i$ are minus the Hessian's
      eigenvalues; for a momentum flow damped oscillations; for a preconditioned one those of
      $-PH$. Above 1000 state entries only the dominant eigenvalues are found (ARPACK on
      Jacobian-vector products) and the slowest rate taken as $1/T$; a game gives its own
      `time_scales`), a name
      (`"tsit5"`, `"dopri5"`, `"dopri8"`, `"kvaerno5"`, `"explicit"`, `"implicit"`) or any
      `diffrax.AbstractSolver`.
    - `rtol`, `atol`: the `PIDController` tolerances (error $\le$ atol + rtol·|y| per step).
    - `max_steps`: the solver's step budget (accepted and rejected steps).
    - `dense`: keep diffrax's dense interpolation (for `evaluate`, `dynopt.lyapunov`). diffrax
      preallocates it for every step the budget allows, ~`9 * max_steps * state_size` floats;
      where that exceeds 256 MiB (a network) the steps are counted first, by a solve without
      dense output, and the dense solve preallocates for those (rounded up to a power of 2):
      the same steps, the same values, two solves' time for a fraction of the memory (a
      1,510-parameter MLP: 2.3 GB of peak memory -> 0.6 GB). Refused with a `ValueError`
      where even the steps taken need more than 2 GiB; `dense=False` saves only at `ts` and
      costs no such memory.

    **Returns:** a `Trajectory` with `solver` naming the solver used and `stats` from diffrax.

    **Raises:** `ValueError` for bad times, tolerances or solver names, or without float64,
    or, before anything is allocated, for an implicit solver whose dense Jacobian would
    exceed 2 GiB (`implicit_jacobian_bytes`: its $n^2$ entries and, above 1000 state
    entries, $n$ batched Jacobian-vector products through the field);
    `SolveError` when diffrax stops early (max steps, step-size underflow, non-finite state),
    saying what to change; `NotFiniteStart` (a `SolveError`), before any solve, where the
    vector field is not finite at the start (naming its leaves): with `solver=None`, or a
    named solver where the automatic choice has read the field at these values (otherwise the
    solve's failure says so, after `max_steps`).
    """
    _require_x64()
    call = "; the call is solve(flow, problem, ts)"
    instance("flow", flow, AbstractFlow, "a dynopt flow (AbstractFlow)", hint=call)
    games = "a dynopt.AbstractProblem (a dynopt.Problem, a dynopt.games.Game, ...)"
    instance("problem", problem, AbstractProblem, games, hint=call)
    _on_host("solve", t0=t0)
    # Flattened once: for the check below, the solver choice's key and the compiled solve.
    flat = _flatten((flow, problem))
    host_flow, host_problem, host_flat = flow, problem, flat
    if any(isinstance(x, jax.core.Tracer) for x in flat.arrays):
        # Under jax.grad the flow's and problem's arrays are traced: the host decides on their
        # values.
        host = _differentiated("solve", flow=flow, problem=problem)
        host_flow, host_problem, host_flat = host["flow"], host["problem"], None
    check_unbatched(host_flow, "solve")
    t0 = float(interval("t0", t0))
    ts_host = _check_times(ts, t0)  # the horizon from host memory: no device round trip
    rtol, atol, max_steps = solver_options(rtol, atol, max_steps)
    horizon = float(ts_host[-1]) - t0
    solver_obj, name, ratio = _pick_solver(
        solver,
        host_problem,
        host_problem.params0,
        horizon,
        max_steps,
        flow=host_flow,
        t0=t0,
        refuse_not_finite=True,
        flat=host_flat,
    )
    if solver is None:
        solver_obj = floor_stage_tolerance(
            solver_obj, name, host_problem, host_flow, t0, horizon, atol, host_flat
        )
    check_implicit_memory(host_flow, host_problem, solver_obj, "solve", t0)
    dense = bool(dense)
    progress = _progress.enabled()
    f64 = np.float64
    times = (f64(t0), ts_host, f64(rtol), f64(atol))
    traced = host_flow is not flow or host_problem is not problem

    def failed(compiled: _Compiled, arrays: list, outputs: tuple | None):
        """`raise_for_result` of a failed solve with its `_diagnose`: a dense solve's read off
        its `run`'s `outputs` (nothing compiled), else from `compiled.full`, the solve with the
        state where it stopped (compiled once per key)."""
        if outputs is not None:
            out, result = outputs
            sol = _Outputs(compiled.trajectory(out, host_flow).interpolation)
        else:
            with host_validated():
                sol = compiled.full(arrays, *times)
            result = sol.result
        raise_for_result(
            result,
            what=f"solve({name})",
            max_steps=max_steps,
            rtol=rtol,
            atol=atol,
            stiffness=ratio,
            diagnosis=_diagnose(host_flow, host_problem, sol, ts_host, t0),
            implicit=isinstance(solver_obj, diffrax.AbstractImplicitSolver),
        )

    compiled, arrays = _compiled_solve(
        flow, problem, solver_obj, max_steps, dense, progress, name, flat
    )
    steps = max_steps  # the dense output's budget
    if dense and _dense_need(compiled, host_flow, host_problem, max_steps, solver_obj) > (
        DENSE_COUNTED_BYTES
    ):
        # diffrax preallocates the dense output for every step the budget allows (1.75 GB for
        # a 1,482-parameter MLP at the default max_steps): count the steps the solve takes
        # without it, then solve again with room for those (the same controller and
        # tolerances take the same steps: the same path, bit for bit as XLA compiles by
        # default; tests/test_solve_dense_networks.py).
        counter, counted = _compiled_solve(
            host_flow,
            host_problem,
            solver_obj,
            max_steps,
            False,
            progress,
            name,
            None if traced else flat,
        )
        with host_validated():  # the horizon only: diffrax's t1 save, nothing stored
            ok, out, result = counter.run(counted, times[0], ts_host[-1:], *times[2:])
        if not bool(ok):
            failed(counter, counted, None)
        taken = int(counter.trajectory(out, host_flow).stats["num_steps"])
        steps = _counted_budget(taken, max_steps)
        compiled, arrays = _compiled_solve(
            flow, problem, solver_obj, steps, True, progress, name, flat
        )
        if _dense_need(compiled, host_flow, host_problem, steps, solver_obj) > DENSE_MEMORY_LIMIT:
            check_dense_memory(
                host_flow,
                host_problem,
                steps,
                solver=solver_obj,
                taken=taken,
                remedy="Pass dense=False to save only at ts, or loosen rtol/atol or shorten "
                "the horizon (fewer steps).",
            )
    with host_validated():  # flow, problem and times checked above: no runtime checks
        try:
            ok, out, result = compiled.run(arrays, *times)
        except TypeError as error:
            if "forward-mode" not in str(error):
                raise
            raise ValueError(
                "solve differentiates in reverse mode only (jax.grad, jax.vjp, jax.jacrev): "
                "diffrax's adjoint (RecursiveCheckpointAdjoint) has no forward-mode rule, so "
                "jax.jvp, jax.jacfwd and jax.hessian cannot pass it. Use jax.jacrev, or "
                "jax.grad per output."
            ) from None
    if not bool(ok):  # the one device-to-host transfer of a successful solve
        if traced:  # the outputs are traced: the solve again, on the values
            compiled, arrays = _compiled_solve(
                host_flow, host_problem, solver_obj, steps, dense, progress, name
            )
        failed(compiled, arrays, (out, result) if dense and not traced else None)
    return compiled.trajectory(out, flow)


def _dense_need(compiled: _Compiled, flow, problem, steps: int, solver) -> float:
    """`dense_bytes` of `compiled`'s dense output, computed once per key."""
    if compiled.dense_need is None:
        compiled.dense_need = dense_bytes(flow, problem, steps, solver)[0]
    return compiled.dense_need


def _counted_budget(taken: int, max_steps: int) -> int:
    """The dense solve's step budget after a count of the steps `taken` (accepted and
    rejected: diffrax's `max_steps` counts both): rounded up to a power of 2 (a new count
    seldom compiles anew) with at least 1/16 to spare, never above the caller's `max_steps`."""
    return min(max(16, 1 << (taken + taken // 16 - 1).bit_length()), max_steps)


class _Outputs(NamedTuple):
    """What `_diagnose` reads of a failed solve without compiling it again: a dense solve's
    interpolation, from `run`'s own outputs (no saved states: they are its values), or the
    time and state where it stopped, one save (`dense_solve(..., stop=True)`: compare's)."""

    interpolation: UnitTimeInterpolation | None
    ys: PyTree | None = None
    ts: jax.Array | None = None


def failure_diagnosis(flow, problem, t0, ts, stop: tuple) -> str:
    """`_diagnose` of a failed reference solve of `flow` on `problem` from `t0` to `ts[-1]` that
    stopped at `stop = (t, y)` (`dense_solve(..., stop=True)`, from the failed program itself:
    nothing compiled): where it stopped and why it likely did (`compare` names the cause with
    it)."""
    t, y = stop
    sol = _Outputs(None, jax.tree.map(lambda x: jnp.asarray(x)[None], y), jnp.asarray(t)[None])
    return _diagnose(flow, problem, sol, np.asarray(ts, np.float64), float(t0))
