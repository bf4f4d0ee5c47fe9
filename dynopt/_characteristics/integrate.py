"""The shared engine: characteristic ODEs with their tangent (variational) equations, integrated by
diffrax for every characteristic (`map_batch`: one after another on a CPU), with a blow-up
`Event`."""

from collections.abc import Callable
from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from .. import _solve
from .._batching import map_batch
from .._saving import SaveAtTimes, saved
from .._solve import _pick_solver, _require_x64, raise_for_result
from .._validation import function, increasing, solver_options
from .solution import (
    BlowUp,
    BlowUpError,
    Characteristics,
    CROSSING,
    DIVERGENCE,
    ESCAPE,
    KIND_NAMES,
    NO_BLOWUP,
)


class Options(NamedTuple):
    """The options every characteristics solve takes (validated by `check_options`)."""

    on_blowup: str
    u_max: float
    solver: object
    rtol: float
    atol: float
    max_steps: int


def check_options(
    on_blowup: str, u_max: float, solver, rtol: float, atol: float, max_steps: int
) -> Options:
    _require_x64()
    if on_blowup not in ("raise", "stop"):
        raise ValueError(f"on_blowup must be 'raise' or 'stop', got {on_blowup!r}.")
    # A real number (a string raised NumPy's TypeError, True passed as 1.0), one threshold.
    value = real_array(u_max)
    if not (
        value is not None
        and value.dtype.kind in "iuf"
        and value.ndim == 0
        and np.isfinite(value)
        and value > 0
    ):
        raise ValueError(f"u_max must be finite and > 0 (a real scalar), got {u_max!r}.")
    rtol, atol, max_steps = solver_options(rtol, atol, max_steps)
    return Options(on_blowup, float(u_max), solver, rtol, atol, max_steps)


def real_array(value) -> np.ndarray | None:
    """`value` as a NumPy array of real numbers (bool, integer or float), or `None` where it is
    not one (complex would lose its imaginary part, with a ComplexWarning, once cast to float)."""
    try:
        a = np.asarray(value)
    except (TypeError, ValueError):
        return None
    return a if a.dtype.kind in "biuf" else None


class OnRows(eqx.Module):
    """`fn` of the caller's sigma as a function of one row of the `(m, q)` sigma the solvers
    map over: the row's one entry where sigma was given as `(m,)`, else the row."""

    fn: Callable
    scalar: bool = eqx.field(static=True)

    def __call__(self, row):
        return self.fn(row[0] if self.scalar else row)


def on_device(value) -> jax.Array:
    """A real array `value` as a JAX array, moved to the device: `jnp.asarray` of a NumPy array
    compiles a program (one per shape), `jax.device_put` does not."""
    return value if isinstance(value, jax.Array) else jax.device_put(np.asarray(value))


def check_initial(
    initial: Callable, sigma
) -> tuple[np.ndarray, OnRows, jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
    """Validate the initial manifold `sigma -> (x0, u0)`: returns `sigma` as a float64 NumPy
    array `(m, q)` (the launch program traces it), `initial` on its rows (`OnRows`) and the
    shapes of `x0` `(n,)` and `u0`. The manifold must be `(n-1)`-dimensional (q = n - 1)."""
    function("initial", initial, "a function sigma -> (x0, u0)")
    sig = real_array(sigma)
    if sig is None:
        raise ValueError(f"sigma must be a real array, got {sigma!r:.80}.")
    sig = sig.astype(np.float64)
    if sig.ndim not in (1, 2) or sig.shape[0] == 0:
        raise ValueError(
            f"sigma must have shape (m,) or (m, n-1) with m >= 1, got shape {sig.shape}."
        )
    if not np.all(np.isfinite(sig)):
        raise ValueError("sigma must be finite.")
    out = jax.eval_shape(initial, jax.ShapeDtypeStruct(sig.shape[1:], sig.dtype))
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError("initial(sigma) must return a pair (x0, u0).")
    x0, u0 = out
    for name, a in (("x0", x0), ("u0", u0)):
        if not isinstance(a, jax.ShapeDtypeStruct):
            raise ValueError(
                f"initial(sigma) must return a pair of arrays (x0, u0); its {name} is a "
                f"{type(a).__name__}, not an array."
            )
    if len(x0.shape) != 1 or x0.shape[0] < 2:
        raise ValueError(
            f"initial(sigma)[0] (x0) must be a 1-D array of n >= 2 coordinates, got shape "
            f"{x0.shape}."
        )
    n = x0.shape[0]
    q = 1 if sig.ndim == 1 else sig.shape[1]
    if q != n - 1:
        raise ValueError(
            f"the initial manifold must have dimension n-1 = {n - 1} for x in R^{n}: pass sigma "
            f"of shape (m,{'' if n == 2 else f' {n - 1}'}), got {sig.shape}."
        )
    if len(u0.shape) > 1:
        raise ValueError(
            f"initial(sigma)[1] (u0) must be a scalar or a 1-D vector, got shape {u0.shape}."
        )
    rows = OnRows(initial, sig.ndim == 1)
    return (sig if sig.ndim == 2 else sig[:, None]), rows, x0, u0


def check_finite_start(z0s, Z0s, sigma, what: str = "initial(sigma)") -> None:
    """`ValueError` naming the first sigma where the initial data `(x0, u0)` or their derivative
    in sigma (NumPy arrays) are not finite (a NaN start otherwise fails the solve as a linear
    solver's 'nonfinite_input', or reads as a characteristic initial curve)."""
    ok = np.all(np.isfinite(z0s.reshape(z0s.shape[0], -1)), 1) & np.all(
        np.isfinite(Z0s.reshape(Z0s.shape[0], -1)), 1
    )
    bad = np.flatnonzero(~ok)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{what} is not finite at sigma={np.asarray(sigma)[i].tolist()} ({bad.size} of "
            f"{ok.size} sigma), or its derivative in sigma is not: the initial data (x0, u0) "
            "must be finite and differentiable at every sigma. Restrict sigma to where they are."
        )


def check_transversal(det0, sigma) -> None:
    det0 = np.asarray(det0)
    bad = np.flatnonzero(~(np.abs(det0) > 1e-8))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"the initial curve is characteristic at sigma={np.asarray(sigma)[i].tolist()} "
            f"(sine of the angle between dx0/dsigma and dx/ds: {det0[i]:.3g}): the "
            "characteristic direction is tangent to it, so the Cauchy problem is ill-posed "
            "there. Choose an initial curve the characteristics cross transversally."
        )


def tangents(z0_fn: Callable, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`z0(sigma)` and its Jacobian `dz0/dsigma` `(N, q)` for every row of `sigma` `(m, q)`."""

    def one(sig):
        z0 = z0_fn(sig)
        return z0, jax.jacfwd(z0_fn)(sig).reshape(z0.shape[0], -1)

    return jax.vmap(one)(sigma)


def _det(field, n, z, Z):
    dz = field(z)
    return jnp.linalg.det(jnp.concatenate([Z[:n], dz[:n, None]], axis=1))


def _flow(field, z, Z):
    """dz/ds, dZ/ds and d^2z/ds^2 = Dg(z) g(z)."""
    tangent = lambda c: jax.jvp(field, (z,), (c,))
    dz, ddz = tangent(field(z))
    return dz, jax.vmap(lambda c: tangent(c)[1], in_axes=1, out_axes=1)(Z), ddz


def _det_rates(field, n, z, Z):
    """det[dx/dsigma, dx/ds] and its first two derivatives in s along the flow."""
    flow = lambda y: _flow(field, *y)[:2]
    det = lambda y: _det(field, n, *y)
    rate = lambda y: jax.jvp(det, (y,), (flow(y),))[1]
    d, d1 = jax.jvp(det, ((z, Z),), (flow((z, Z)),))
    return d, d1, jax.jvp(rate, ((z, Z),), (flow((z, Z)),))[1]


def _vector_field(s, y, args):
    """(z, Z, w): the characteristic, its tangent, and w = log|det J|, J = [dx/dsigma, dx/ds].

    w is integrated only so that the step-size controller sees det: at a zero of det of any
    order w -> -inf, so steps shrink onto it instead of stepping over it (at a point focus in
    3-D det ~ (s* - s)^2 has no sign change for the event to see). By Jacobi's formula
    d(log|det J|)/ds = tr(J^-1 dJ/ds), with dJ/ds = [d(dx/dsigma)/ds, d^2x/ds^2]."""
    field, n = args[0], args[1]
    del s
    if len(y) == 2:  # n = 2: one column of dx/dsigma, a zero of det is simple (a sign change)
        z, Z = y
        dZ = jax.vmap(lambda c: jax.jvp(field, (z,), (c,))[1], in_axes=1, out_axes=1)(Z)
        return field(z), dZ
    dz, dZ, ddz = _flow(field, y[0], y[1])
    J = jnp.concatenate([y[1][:n], dz[:n, None]], axis=1)
    dJ = jnp.concatenate([dZ[:n], ddz[:n, None]], axis=1)
    return dz, dZ, jnp.trace(jnp.linalg.solve(J, dJ))


def _pole(q, u_max):
    """(M^2 - q)/(M(1 + q)) for q = |v|^2, M = u_max: positive below |v| = M, 0 there, with an
    O(1) slope there for a pole v ~ 1/(s* - s), so that the root find's |cond| < atol tests s
    and not round-off in v. (|v|^2, not |v|: smooth at v = 0.)"""
    return (u_max**2 - q) / (u_max * (1.0 + q))


def _conditions(y, args):
    """The three blow-up conditions, positive at s = 0 and 0 at the blow-up: for crossings
    (d - eps)/(1 - eps) with d = det/det0, `_pole(|u|^2)` for a divergence of u and
    `_pole(|x|^2)` for a characteristic that escapes to infinity in finite s (dx/dt = 1 + x^2:
    without it the solver shrank its steps onto the pole until `max_steps`).

    The crossing one reaches 0 where d falls to eps, before a zero of det of any order (a fold, or a
    point focus in 3-D where d ~ (s* - s)^2 has no sign change to detect), and the steps
    cannot jump over that (`_vector_field`'s w). eps = rtol: each column of dx/dsigma carries an
    error of about rtol relative to its size at s = 0, so |d| < rtol is 0 to the accuracy the
    solve was asked for, while a minimum of |d| above it is no crossing. `integrate` then
    extrapolates from |d| = eps to d = 0."""
    field, n, det0, (ulo, uhi), u_max, eps = args
    u, x = y[0][ulo:uhi], y[0][:n]
    d = _det(field, n, y[0], y[1]) / det0
    return (d - eps) / (1.0 - eps), _pole(jnp.sum(u * u), u_max), _pole(jnp.sum(x * x), u_max)


def _blowup_condition(t, y, args, **kwargs):
    # One float condition, the smallest of the three: its first zero is the first blow-up of any
    # kind. Newton then locates it on the dense solution.
    return jnp.min(jnp.stack(_conditions(y, args)))


def initial_det(field: Callable, n: int, z0s: jax.Array, Z0s: jax.Array) -> jax.Array:
    """det[dx0/dsigma, dx/ds] over the product of its column norms (Hadamard): the sine of the
    angle between the characteristic direction and the initial manifold, scale-free (for
    `check_transversal`; traced in the solvers' launch programs)."""

    def one(z, Z):
        cols = jnp.concatenate([Z[:n], field(z)[:n, None]], axis=1)
        return jnp.linalg.det(cols) / jnp.prod(jnp.linalg.norm(cols, axis=0))

    return jax.vmap(one)(z0s, Z0s)


@eqx.filter_jit
def _integrate(field, n, u_shape, z0s, Z0s, ss, solver, rtol, atol, max_steps, u_max, whole):
    """Every characteristic's solve and what the host needs of it, in one program: the saved
    points split into x, u, p (NaN past the blow-up; with `whole`, unsplit too) and det there,
    the state at the end, and the solve's outcome (no eager operation after it: each was a
    program per shape)."""
    event = diffrax.Event(_blowup_condition, optx.Newton(rtol=1e-12, atol=1e-12))
    ulo, uhi = n, n + int(np.prod(u_shape))

    # n >= 3 only: a point focus (n - 1 >= 2 columns of dx/dsigma vanishing together) is a zero
    # of det of even order. In 2-D every zero is simple: the plain sign test, no log|det| to
    # integrate, no margin eps, no extrapolation (a smaller program, compiled faster).
    focus = n >= 3

    def one(z0, Z0):
        det0 = _det(field, n, z0, Z0)
        args = (field, n, det0, (ulo, uhi), u_max, rtol if focus else 0.0)
        y0 = (z0, Z0, jnp.zeros(())) if focus else (z0, Z0)
        # Saved at `ss` by the solver (no diffrax checks of traced `ss`: `integrate` checked it).
        sol = _solve.integrate(
            diffrax.ODETerm(_vector_field),
            SaveAtTimes(solver, ss),
            0.0,
            ss[-1],
            y0,
            args=args,
            saveat=diffrax.SaveAt(t1=True, solver_state=True),
            controller=diffrax.PIDController(rtol=rtol, atol=atol),
            event=event,
            max_steps=max_steps,
        )
        zs, Zs = saved(sol, ss, 0.0, y0)[:2]
        zf, Zf = sol.ys[0][0], sol.ys[1][0]
        dets = jax.vmap(lambda a, b: _det(field, n, a, b))(zs, Zs) / det0
        # Which condition reached 0: 0 crossing, 1 divergence, 2 escape.
        which = jnp.argmin(jnp.stack(_conditions((zf, Zf), args)))
        zero = jnp.zeros((), zf.dtype)
        d, d1, d2 = _det_rates(field, n, zf, Zf) if focus else (zero, zero, zero)
        # Past the blow-up (inf, as diffrax leaves unsaved times): NaN.
        zs = jnp.where(jnp.isfinite(zs), zs, jnp.nan)
        dets = jnp.where(jnp.all(jnp.isfinite(zs), -1), dets, jnp.nan)
        points = (zs[:, :n], zs[:, ulo:uhi].reshape(ss.shape[0], *u_shape), zs[:, uhi:])
        # An event ends the solve with `event_occurred`: `is_okay` (not `is_successful`) says
        # whether anything else went wrong.
        okay = diffrax.is_okay(sol.result)
        result = diffrax.RESULTS.where(okay, diffrax.RESULTS.successful, sol.result)
        fired = sol.result == diffrax.RESULTS.event_occurred
        end = (zf, field(zf), sol.ts[0], which, (d, d1, d2))
        # The points unsplit for the residual, which is evaluated in a program of its own (F
        # inside this one rounded otherwise, by an ulp).
        return points, zs if whole else None, dets, end, (fired, result)

    return map_batch(one, z0s, Z0s)


def integrate(
    field: Callable,
    n: int,
    u_shape: tuple[int, ...],
    z0s: jax.Array,
    Z0s: jax.Array,
    det0: jax.Array,
    sigma,
    s,
    options: Options,
    residual: Callable | None = None,
) -> Characteristics:
    r"""Integrate $dz/ds = g(z)$, $dZ/ds = Dg(z)\,Z$ from every `(z0, Z0)` to `s[-1]`, where
    $z = (x, u, p)$ is flat with $x$ = `z[:n]`, $u$ = `z[n:n+k]` and $p$ the rest (if any), and
    $Z = \partial z / \partial\sigma$. Stops each characteristic at a crossing or divergence
    event. `z0s`, `Z0s` and `det0` (`initial_det`) are checked here.

    Returns the `Characteristics` (NaN past blow-up), with `residual(zs)` (`zs`: `(m, T, N)`)
    as its residual when given.
    """
    on_blowup, u_max, solver, rtol, atol, max_steps = options
    ss = increasing("s", s, start=0.0)  # named as the user's argument
    k = int(np.prod(u_shape))
    solver_obj, name, _ = _pick_solver("tsit5" if solver is None else solver, None, None, None)
    check_finite_start(np.asarray(z0s)[:, : n + k], np.asarray(Z0s)[:, : n + k], sigma)
    check_transversal(det0, sigma)
    # The tolerances and u_max as float64 arrays, traced (as `solve`'s): a new value does not
    # recompile the solve (as Python floats they were static: one program per value).
    tols = (np.float64(rtol), np.float64(atol))
    (x, u, p), zs, dets, end, (fired, result) = _integrate(
        field,
        n,
        u_shape,
        z0s,
        Z0s,
        ss,
        solver_obj,
        *tols,
        max_steps,
        np.float64(u_max),
        residual is not None,
    )
    raise_for_result(
        result, what=f"characteristics solve ({name})", max_steps=max_steps, rtol=rtol, atol=atol
    )
    zf, dzf, s_end, which, d, d1, d2 = (np.asarray(a) for a in jax.tree.leaves(end))
    fired = np.asarray(fired)
    kind = np.where(fired, np.array([CROSSING, DIVERGENCE, ESCAPE])[which], NO_BLOWUP)
    crossing, divergence, escape = (kind == c for c in (CROSSING, DIVERGENCE, ESCAPE))
    u_f, du_f = zf[:, n : n + k], dzf[:, n : n + k]
    # Divergence: one Newton step on 1/|u| = 0, i.e. ds = |u|^2 / (u . du/ds); an escape
    # likewise on 1/|x| = 0.
    x_f, dx_f = zf[:, :n], dzf[:, :n]
    size = np.where(escape, np.sum(x_f * x_f, 1), np.sum(u_f * u_f, 1))
    rate = np.where(escape, np.sum(x_f * dx_f, 1), np.sum(u_f * du_f, 1))
    pole = (divergence | escape) & (rate != 0)
    ds = np.divide(size, rate, out=np.zeros_like(rate), where=pole)
    # Crossing, stopped where d = rtol: one step of Newton's method on d/d' (Schroeder's,
    # quadratic for a zero of any order: ds = (s* - s)(1 + O(s* - s)) for d = c (s* - s)^k).
    den = d1 * d1 - d * d2
    step = np.divide(-d * d1, den, out=np.zeros_like(den), where=crossing & (den != 0))
    ds = np.where(crossing, np.clip(step, 0.0, None), ds)
    s_b = np.where(kind != NO_BLOWUP, s_end + ds, np.inf)
    # (An escape's place is where |x| reached u_max: the pole itself is at infinity.)
    x_move = np.where(escape, 0.0, ds)
    x_b = np.where((kind != NO_BLOWUP)[:, None], zf[:, :n] + x_move[:, None] * dzf[:, :n], np.nan)
    moved = crossing & (ds > 0)  # extrapolated to det = 0 (n >= 3; else stopped there)
    u_b = np.where(moved[:, None], u_f + ds[:, None] * du_f, u_f)
    u_b = np.where((kind != NO_BLOWUP)[:, None], u_b, np.nan).reshape(-1, *u_shape)
    blowup = BlowUp(*(jax.device_put(a) for a in (kind, s_b, x_b, u_b)))
    first = blowup.first()
    if on_blowup == "raise" and first is not None:
        sig = np.asarray(sigma)[first["index"]].tolist()
        raise BlowUpError(
            f"blow-up before the horizon s1={ss[-1]:g}: {first['kind']} at "
            f"s={first['s']:.10g}, x={np.round(first['x'], 10).tolist()} (characteristic "
            f"sigma={sig}; {first['count']} of {kind.size} characteristics blow up). The "
            f"classical solution ends there: shorten the horizon below s={first['s']:.6g}, or "
            "pass on_blowup='stop' to get the solution up to the blow-up and the report.",
            blowup,
        )
    return Characteristics(
        sigma=on_device(sigma),
        s=jax.device_put(ss),
        x=x,
        u=u,
        p=p if p.shape[-1] else None,
        det=dets,
        residual=None if residual is None else residual(zs),
        blowup=blowup,
        solver=name,
    )


__all__ = [
    "KIND_NAMES",
    "OnRows",
    "Options",
    "check_finite_start",
    "check_initial",
    "check_options",
    "initial_det",
    "integrate",
    "real_array",
    "tangents",
]
