"""The shared engine: characteristic ODEs with their tangent (variational) equations, integrated by
diffrax for every characteristic at once (`vmap`), with a blow-up `Event`."""

from collections.abc import Callable
from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from .. import _solve
from .._saving import SaveAtTimes, saved
from .._solve import _pick_solver, _require_x64, raise_for_result
from .._validation import increasing, solver_options
from .solution import (
    BlowUp,
    BlowUpError,
    Characteristics,
    CROSSING,
    DIVERGENCE,
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
    if not (np.isfinite(u_max) and u_max > 0):
        raise ValueError(f"u_max must be finite and > 0, got {u_max}.")
    rtol, atol, max_steps = solver_options(rtol, atol, max_steps)
    return Options(on_blowup, float(u_max), solver, rtol, atol, max_steps)


def check_initial(initial: Callable, sigma) -> tuple[jax.Array, int, tuple[int, ...]]:
    """Validate the initial manifold `sigma -> (x0, u0)`: returns `sigma` as `(m, q)`, `n` and
    the shape of `u0`. The manifold must be `(n-1)`-dimensional (q = n - 1)."""
    if not callable(initial):
        raise ValueError(
            f"initial must be a function sigma -> (x0, u0), got {type(initial).__name__}."
        )
    sig = np.asarray(sigma, dtype=np.float64)
    if sig.ndim not in (1, 2) or sig.shape[0] == 0:
        raise ValueError(
            f"sigma must have shape (m,) or (m, n-1) with m >= 1, got shape {sig.shape}."
        )
    if not np.all(np.isfinite(sig)):
        raise ValueError("sigma must be finite.")
    one = jnp.asarray(sig[0])
    out = jax.eval_shape(initial, one)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError("initial(sigma) must return a pair (x0, u0).")
    x0, u0 = out
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
    return jnp.asarray(sig if sig.ndim == 2 else sig[:, None]), n, tuple(u0.shape)


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


def _vector_field(s, y, args):
    field = args[0]
    del s
    z, Z = y
    dZ = jax.vmap(lambda c: jax.jvp(field, (z,), (c,))[1], in_axes=1, out_axes=1)(Z)
    return field(z), dZ


def _conditions(y, args):
    """Both blow-up conditions, positive at s = 0 and 0 at the blow-up, with slope O(1) in s
    there: the normalised det[dx/dsigma, dx/ds], and (M^2 - |u|^2)/(M(1 + |u|^2)) for M = u_max,
    whose slope at |u| = M is O(1) for a pole u ~ 1/(s* - s), so that the root find's
    |cond| < atol tests s and not round-off in u. (|u|^2, not |u|: smooth at u = 0.)"""
    field, n, det0, (ulo, uhi), u_max = args
    u = y[0][ulo:uhi]
    q = jnp.sum(u * u)
    return _det(field, n, *y) / det0, (u_max**2 - q) / (u_max * (1.0 + q))


def _blowup_condition(t, y, args, **kwargs):
    # One float condition, the smaller of the two: its first zero is the first blow-up of either
    # kind. Newton then locates it on the dense solution.
    return jnp.minimum(*_conditions(y, args))


@eqx.filter_jit
def _initial_det(field, n, z0s, Z0s):
    """det[dx0/dsigma, dx/ds] over the product of its column norms (Hadamard): the sine of the
    angle between the characteristic direction and the initial manifold, scale-free."""

    def one(z, Z):
        cols = jnp.concatenate([Z[:n], field(z)[:n, None]], axis=1)
        return jnp.linalg.det(cols) / jnp.prod(jnp.linalg.norm(cols, axis=0))

    return jax.vmap(one)(z0s, Z0s)


@eqx.filter_jit
def _integrate(field, n, ulo, uhi, z0s, Z0s, ss, solver, rtol, atol, max_steps, u_max):
    event = diffrax.Event(_blowup_condition, optx.Newton(rtol=1e-12, atol=1e-12))

    def one(z0, Z0):
        args = (field, n, _det(field, n, z0, Z0), (ulo, uhi), u_max)
        # Saved at `ss` by the solver (no diffrax checks of traced `ss`: `integrate` checked it).
        sol = _solve.integrate(
            diffrax.ODETerm(_vector_field),
            SaveAtTimes(solver, ss),
            0.0,
            ss[-1],
            (z0, Z0),
            args=args,
            saveat=diffrax.SaveAt(t1=True, solver_state=True),
            controller=diffrax.PIDController(rtol=rtol, atol=atol),
            event=event,
            max_steps=max_steps,
        )
        zs, Zs = saved(sol, ss, 0.0, (z0, Z0))
        zf, Zf = sol.ys
        dets = jax.vmap(lambda a, b: _det(field, n, a, b))(zs, Zs) / args[2]
        crossing, divergence = _conditions((zf[0], Zf[0]), args)
        return zs, dets, zf[0], field(zf[0]), sol.ts[0], crossing <= divergence, sol.result

    return jax.vmap(one)(z0s, Z0s)


def integrate(
    field: Callable,
    n: int,
    u_shape: tuple[int, ...],
    z0s: jax.Array,
    Z0s: jax.Array,
    sigma: jax.Array,
    s,
    options: Options,
    residual: Callable | None = None,
) -> Characteristics:
    r"""Integrate $dz/ds = g(z)$, $dZ/ds = Dg(z)\,Z$ from every `(z0, Z0)` to `s[-1]`, where
    $z = (x, u, p)$ is flat with $x$ = `z[:n]`, $u$ = `z[n:n+k]` and $p$ the rest (if any), and
    $Z = \partial z / \partial\sigma$. Stops each characteristic at a crossing or divergence
    event.

    Returns the `Characteristics` (NaN past blow-up), with `residual(zs)` (`zs`: `(m, T, N)`)
    as its residual when given.
    """
    on_blowup, u_max, solver, rtol, atol, max_steps = options
    ss = jnp.asarray(increasing("s", s, start=0.0))  # named as the user's argument
    k = int(np.prod(u_shape))
    solver_obj, name, _ = _pick_solver("tsit5" if solver is None else solver, None, None, None)
    check_transversal(_initial_det(field, n, z0s, Z0s), sigma)
    zs, dets, zf, dzf, s_end, is_crossing, result = _integrate(
        field, n, n, n + k, z0s, Z0s, ss, solver_obj, rtol, atol, max_steps, u_max
    )
    # An event ends the solve with `event_occurred`: `is_okay` (not `is_successful`) says whether
    # anything else went wrong.
    raise_for_result(
        jax.vmap(
            lambda r: diffrax.RESULTS.where(diffrax.is_okay(r), diffrax.RESULTS.successful, r)
        )(result),
        what=f"characteristics solve ({name})",
        max_steps=max_steps,
        rtol=rtol,
        atol=atol,
    )
    fired = np.asarray(result == diffrax.RESULTS.event_occurred)
    crossing, divergence = fired & np.asarray(is_crossing), fired & ~np.asarray(is_crossing)
    kind = np.where(crossing, CROSSING, np.where(divergence, DIVERGENCE, NO_BLOWUP))
    zf, dzf, s_end = np.asarray(zf), np.asarray(dzf), np.asarray(s_end)
    u_f, du_f = zf[:, n : n + k], dzf[:, n : n + k]
    # Divergence: one Newton step on 1/|u| = 0, i.e. ds = |u|^2 / (u . du/ds).
    rate = np.sum(u_f * du_f, 1)
    ds = np.divide(np.sum(u_f * u_f, 1), rate, out=np.zeros_like(rate), where=divergence)
    s_b = np.where(kind != NO_BLOWUP, s_end + ds, np.inf)
    x_b = np.where((kind != NO_BLOWUP)[:, None], zf[:, :n] + ds[:, None] * dzf[:, :n], np.nan)
    u_b = np.where((kind != NO_BLOWUP)[:, None], u_f, np.nan).reshape(-1, *u_shape)
    blowup = BlowUp(
        kind=jnp.asarray(kind), s=jnp.asarray(s_b), x=jnp.asarray(x_b), u=jnp.asarray(u_b)
    )
    zs = np.asarray(zs)
    zs = np.where(np.isfinite(zs), zs, np.nan)
    dets = np.where(np.all(np.isfinite(zs), -1), np.asarray(dets), np.nan)
    first = blowup.first()
    if on_blowup == "raise" and first is not None:
        sig = np.asarray(sigma)[first["index"]].tolist()
        raise BlowUpError(
            f"blow-up before the horizon s1={float(ss[-1]):g}: {first['kind']} at "
            f"s={first['s']:.10g}, x={np.round(first['x'], 10).tolist()} (characteristic "
            f"sigma={sig}; {first['count']} of {kind.size} characteristics blow up). The "
            f"classical solution ends there: shorten the horizon below s={first['s']:.6g}, or "
            "pass on_blowup='stop' to get the solution up to the blow-up and the report.",
            blowup,
        )
    m, T, N = zs.shape
    zs = jnp.asarray(zs)
    return Characteristics(
        sigma=sigma,
        s=ss,
        x=zs[..., :n],
        u=zs[..., n : n + k].reshape(m, T, *u_shape),
        p=zs[..., n + k :] if N > n + k else None,
        det=jnp.asarray(dets),
        residual=None if residual is None else residual(zs),
        blowup=blowup,
        solver=name,
    )


__all__ = ["KIND_NAMES", "Options", "check_initial", "check_options", "integrate", "tangents"]
