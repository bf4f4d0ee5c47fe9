"""What a characteristics solve returns: the points, the blow-up report, interpolation to a grid."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Bool, Float, Int


NO_BLOWUP, CROSSING, DIVERGENCE, ESCAPE = 0, 1, 2, 3
KIND_NAMES = {
    NO_BLOWUP: "none",
    CROSSING: "characteristics cross (dx/dsigma -> 0)",
    DIVERGENCE: "u diverges",
    ESCAPE: "the characteristic escapes to infinity (|x| -> inf)",
}


class BlowUp(eqx.Module):
    r"""Where each characteristic stops being a classical solution, one entry per characteristic.

    - `kind`: 0 none before the horizon, 1 crossing ($\det[\partial x/\partial\sigma,\ dx/ds]$
      reaches 0, with or without a sign change: neighbouring characteristics meet, a shock,
      caustic or focus), 2 divergence
      ($|u|$ reached `u_max`), 3 escape ($|x|$ reached `u_max`: the characteristic leaves every
      bounded set in finite $s$, e.g. $dx/dt = 1 + x^2$). (The determinant also vanishes where
      the characteristic speed $dx/ds$ does; the PDEs here have a non-vanishing speed.)
    - `s`: the parameter value of the event ($+\infty$ where none). For a crossing, diffrax's
      event root find locates $|\det/\det_0|$ = `rtol` on the dense solution and one step of
      Newton's method on $\det/\det'$ (quadratic for a zero of any order) extrapolates to
      $\det = 0$. For a divergence, the root find locates
      $|u| = u_{\max}$ and one Newton step on $1/|u| = 0$ extrapolates to the pole (exact to
      $O(u_{\max}^{-2})$ for a simple pole $u \sim c/(s^*-s)$); an escape likewise on
      $1/|x| = 0$.
    - `x`, `u`: the place and value there (NaN where none; `u` is the value at the event for a
      divergence, extrapolated like `s` for a crossing; `x` and `u` are the values at the event,
      $|x| = u_{\max}$, for an escape).
    """

    kind: Int[Array, " m"]
    s: Float[Array, " m"]
    x: Float[Array, "m n"]
    u: Array

    @property
    def happened(self) -> Bool[Array, " m"]:
        return self.kind != NO_BLOWUP

    def first(self) -> dict | None:
        """The earliest blow-up over all characteristics as a dict (`index`, `s`, `x`, `kind`),
        or `None` if there is none before the horizon."""
        kind = np.asarray(self.kind)
        if not np.any(kind != NO_BLOWUP):
            return None
        s = np.where(kind != NO_BLOWUP, np.asarray(self.s), np.inf)
        i = int(np.argmin(s))
        return {
            "index": i,
            "s": float(s[i]),
            "x": np.asarray(self.x)[i].tolist(),
            "kind": KIND_NAMES[int(kind[i])],
            "count": int(np.sum(kind != NO_BLOWUP)),
        }


class BlowUpError(ValueError):
    """The requested horizon lies past a detected blow-up; `.blowup` holds the full report."""

    def __init__(self, message: str, blowup: BlowUp):
        super().__init__(message)
        self.blowup = blowup


class Characteristics(eqx.Module):
    r"""Characteristic curves $s \mapsto (x, u[, p])$ launched from an initial manifold
    $\sigma \mapsto (x_0(\sigma), u_0(\sigma))$: the solution surface as scattered points.

    Shapes: `m` characteristics (one per `sigma`), `T` saved parameter values `s`, `n` independent
    variables. Entries past a characteristic's blow-up are NaN and `valid` is False there.

    - `sigma`: `(m,)` or `(m, n-1)`, the initial-manifold parameters.
    - `s`: `(T,)`; `x`: `(m, T, n)`; `u`: `(m, T)` (scalar PDE) or `(m, T, k)` (system).
    - `p`: `(m, T, n)` for Charpit solves ($p = \nabla u$), else `None`.
    - `det`: `(m, T)`, $\det[\partial x/\partial\sigma,\ dx/ds]$ normalised to 1 at $s=0$; it
      reaches 0 where characteristics cross.
    - `residual`: `(m, T)`, $F(x, u, p)$ along Charpit characteristics (0 in exact arithmetic),
      else `None`.
    - `blowup`: a `BlowUp` report; `solver`: the diffrax solver's name.
    """

    sigma: Array
    s: Float[Array, " T"]
    x: Float[Array, "m T n"]
    u: Array
    p: Array | None
    det: Float[Array, "m T"]
    residual: Array | None
    blowup: BlowUp
    solver: str = eqx.field(static=True)

    @property
    def valid(self) -> Bool[Array, "m T"]:
        """Saved points before the characteristic's blow-up (the others are NaN)."""
        return jnp.all(jnp.isfinite(self.x), axis=-1)

    def on_grid(self, points) -> np.ndarray:
        r"""$u$ at `points` (shape `(..., n)`), piecewise linear on the characteristic mesh.

        For $n = 2$ the triangles are the cells of the $(\sigma_i, s_j)$ mesh whose corners are
        all valid, so nothing is interpolated across a blow-up or a gap between characteristics
        (a Delaunay triangulation would bridge them); for $n > 2$ it falls back to `to_grid`.
        Points outside the mesh get NaN (a point within round-off of it, 1.5e-8 of a cell's size,
        counts as on it). Only the saves up to the first crossing (`blowup`, kind 1) are used:
        past it the characteristics overlap (a shock's fold, a caustic) and carry several values
        at one point, none of them the PDE's solution near the crossing; points later than it
        get NaN. Host-side post-processing.

        The cells join neighbours in $\sigma$, in increasing order whatever the order `sigma`
        was given in. No cell whose corners are all valid (every characteristic past its
        blow-up by the second save): NaN everywhere.

        **Raises:** `ValueError` if the cells used still overlap: characteristics that met
        between two samples $\sigma_i, \sigma_{i+1}$ (no sampled one reached its crossing),
        or sheets from distant parts of the initial manifold. Sample $\sigma$ finer, or save
        only up to where they meet. For $n = 2$, also with fewer than 2 characteristics or
        2 saves (no cell at all); for $n > 2$, as `to_grid`."""
        x, u = np.asarray(self.x, float), np.asarray(self.u, float)
        crossed = np.asarray(self.blowup.kind) == CROSSING
        if np.any(crossed):
            late = np.asarray(self.s) > np.min(np.asarray(self.blowup.s)[crossed])
            x = np.where(late[None, :, None], np.nan, x)
        if x.shape[-1] != 2 or np.ndim(self.sigma) != 1:
            return to_grid(x, u, points)
        m, T = x.shape[:2]
        if m < 2 or T < 2:  # (NumPy's "zero-size array to reduction operation maximum" else)
            raise ValueError(
                f"on_grid interpolates on the cells between neighbouring characteristics and "
                f"saves: it needs at least 2 of each, got {m} sigma and {T} s."
            )
        # Cells join neighbours in sigma: a shuffled sigma joined distant characteristics, an
        # overlapping mesh that was refused as a crossing.
        order = np.argsort(np.asarray(self.sigma), kind="stable")
        return _mesh_interpolate(x[order], u[order], np.asarray(points, float))


def _mesh_interpolate(x, u, points) -> np.ndarray:
    from matplotlib.tri import LinearTriInterpolator, Triangulation

    if points.shape[-1] != 2:
        raise ValueError(f"points must have last dimension n=2, got {points.shape}.")
    m, T = x.shape[:2]
    values = u.reshape(m, T, -1)
    ok = np.all(np.isfinite(x), -1) & np.all(np.isfinite(values), -1)
    index = np.full((m, T), -1)
    index[ok] = np.arange(ok.sum())
    i, j = np.meshgrid(np.arange(m - 1), np.arange(T - 1), indexing="ij")
    corners = [index[i, j], index[i + 1, j], index[i + 1, j + 1], index[i, j + 1]]
    tris = np.concatenate(
        [
            np.stack([corners[0], corners[1], corners[2]], -1).reshape(-1, 3),
            np.stack([corners[0], corners[2], corners[3]], -1).reshape(-1, 3),
        ]
    )
    tris = tris[np.all(tris >= 0, axis=1)]
    if not tris.size:  # no cell with all corners valid: every point lies outside the mesh
        return np.full((*points.shape[:-1], *u.shape[2:]), np.nan)
    xs = x[ok]
    tri = Triangulation(xs[:, 0], xs[:, 1], tris)
    # Drop degenerate (zero-area) triangles, e.g. where characteristics meet.
    a, b = xs[tris[:, 1]] - xs[tris[:, 0]], xs[tris[:, 2]] - xs[tris[:, 0]]
    area = np.abs(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])
    tri.set_mask(area <= 1e-14 * max(area.max(), 1e-300))
    try:
        finder = tri.get_trifinder()
    except RuntimeError as error:  # matplotlib's check of the mesh: overlapping triangles
        raise ValueError(
            "on_grid: the characteristic mesh overlaps itself, so u is multivalued there: "
            "neighbouring characteristics crossed between two samples of sigma (none of them "
            "reached its own crossing, so blowup does not report it), or characteristics from "
            "distant parts of the initial manifold met. Sample sigma finer near where they "
            "converge, or save s only up to where they meet."
        ) from error
    flat = points.reshape(-1, 2)
    out = np.stack(
        [
            np.ma.filled(
                LinearTriInterpolator(tri, col, trifinder=finder)(flat[:, 0], flat[:, 1]), np.nan
            )
            for col in values[ok].T
        ],
        -1,
    )
    # Points on the mesh's edges that round-off puts just outside it.
    miss = np.any(np.isnan(out), -1) & np.all(np.isfinite(flat), -1)
    if np.any(miss):
        scale = np.ptp(xs, axis=0)
        found = _nudged_cells(lambda q: finder(q[:, 0], q[:, 1]), flat[miss], scale)
        out[miss] = _on_simplices(xs, tris, values[ok], flat[miss], found)
    out = out.reshape(*points.shape[:-1], values.shape[-1])
    return out[..., 0] if u.ndim == 2 else out


# How far outside a cell, in its barycentric coordinates, a point still counts as on it. The
# vertices carry the solve's error (rtol, and at least the round-off accumulated over its steps:
# e.g. t = 3 - 4e-15 for t = 3), so a point within sqrt(eps) ~ 1.5e-8 of a cell, relative to its
# size, lies on the cell to the accuracy the data have; extrapolating the linear interpolant that
# far moves the value by 1.5e-8 of the cell's range of u, far below the O(h^2) interpolation
# error.
_EDGE_TOL = float(np.sqrt(np.finfo(float).eps))


def _on_simplices(verts, simplices, values, points, found) -> np.ndarray:
    """Linear interpolation of `values` (V, k) at `points` (P, n) on the simplex `found[p]` (an
    index into `simplices`, (S, n+1) vertex indices; -1: none) where the point lies on it within
    `_EDGE_TOL` in barycentric coordinates; NaN elsewhere."""
    n = verts.shape[1]
    out = np.full((points.shape[0], values.shape[1]), np.nan)
    rows = np.flatnonzero(found >= 0)
    if not rows.size:
        return out
    corners = verts[simplices[found[rows]]]  # (R, n+1, n)
    M = np.swapaxes(corners[:, :n] - corners[:, n:], 1, 2)  # columns v_i - v_n
    good = np.abs(np.linalg.det(M)) > 0
    rows, corners, M = rows[good], corners[good], M[good]
    b = np.linalg.solve(M, (points[rows] - corners[:, n])[..., None])[..., 0]
    bary = np.concatenate([b, 1.0 - b.sum(-1, keepdims=True)], -1)  # (R, n+1)
    inside = bary.min(-1) >= -_EDGE_TOL
    vals = np.einsum("ri,rik->rk", bary, values[simplices[found[rows]]])
    out[rows] = np.where(inside[:, None], vals, np.nan)
    return out


def _nudged_cells(find, points, scale) -> np.ndarray:
    """The cell `find(q)` returns (or -1) for each of `points` moved by `_EDGE_TOL * scale` along
    each axis either way, the first hit: the cell a point just outside the mesh by round-off
    lies on (an O(log) search per point, where a scan of every cell would be O(cells))."""
    found = np.full(points.shape[0], -1)
    for axis in range(points.shape[1]):
        for sign in (1.0, -1.0):
            todo = found < 0
            if not np.any(todo):
                return found
            q = points[todo].copy()
            q[:, axis] += sign * _EDGE_TOL * scale[axis]
            found[todo] = find(q)
    return found


def _real(name: str, value) -> np.ndarray:
    """`value` as a float64 NumPy array; `ValueError` naming `name` unless it holds real
    numbers (a complex one lost its imaginary part with a warning, a string was NumPy's
    error)."""
    try:
        a = np.asarray(value)
    except (TypeError, ValueError):
        a = None
    if a is None or a.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be an array of real numbers, got {value!r:.80}.")
    return a.astype(float)


def to_grid(x, u, points) -> np.ndarray:
    r"""Interpolate scattered values `u` (shape `(..., )` or `(..., k)`) at scattered points `x`
    (shape `(..., n)`, NaN entries ignored) onto `points` (shape `(..., n)`), piecewise linearly
    on a Delaunay triangulation. Outside the convex hull of the points: NaN (a point within
    round-off of it, 1.5e-8 of a cell's size, counts as on it).

    **Arguments:**

    - `x`: the scattered points, shape `(..., n)` (NaN entries ignored).
    - `u`: the values at them, shape `(...,)` or `(..., k)`.
    - `points`: where to interpolate, shape `(..., n)`.

    **Returns:** a NumPy array of the values at `points` (NaN outside the hull).

    **Raises:** `ValueError` if the shapes disagree, an array is not real, or the finite
    entries of `x` span no cell (none for $n = 1$; for $n > 1$ fewer than $n + 1$ points not
    on one hyperplane, where Qhull raised its own error).
    """
    from scipy.interpolate import griddata

    x, u, points = (_real(name, a) for name, a in (("x", x), ("u", u), ("points", points)))
    n = x.shape[-1]
    if points.shape[-1] != n:
        raise ValueError(
            f"points must have last dimension n={n} (the characteristics' x), got {points.shape}."
        )
    lead = x.shape[:-1]
    if u.shape[: len(lead)] != lead:
        raise ValueError(f"u has shape {u.shape}; its leading axes must match x's {lead}.")
    xs = x.reshape(-1, n)
    us = u.reshape(xs.shape[0], -1)
    ok = np.all(np.isfinite(xs), axis=1) & np.all(np.isfinite(us), axis=1)
    # Qhull's centred-rank test: n + 1 points in general position make one n-simplex.
    spanned = np.linalg.matrix_rank(xs[ok] - xs[ok].mean(0)) if ok.sum() > 1 else 0
    if (n == 1 and not ok.any()) or (n > 1 and spanned < n):
        raise ValueError(
            f"to_grid: the {int(ok.sum())} points of x with finite x and u span {spanned} of "
            f"n={n} dimensions: no cell to interpolate on (needs "
            f"{'one point' if n == 1 else f'{n + 1} points not on one hyperplane'})."
        )
    if n == 1:
        order = np.argsort(xs[ok, 0])
        line = xs[ok, 0][order]
        # The ends, to within _EDGE_TOL of the extent (as the cells' edges for n > 1).
        slack = _EDGE_TOL * (line[-1] - line[0]) if line.size else 0.0
        q = points[..., 0]
        q = np.where((q < line[0]) & (q >= line[0] - slack), line[0], q) if line.size else q
        q = np.where((q > line[-1]) & (q <= line[-1] + slack), line[-1], q) if line.size else q
        out = np.stack(
            [np.interp(q, line, col[order], left=np.nan, right=np.nan) for col in us[ok].T],
            axis=-1,
        )
    else:
        from scipy.spatial import QhullError

        flat = points.reshape(-1, n)
        try:
            out = griddata(xs[ok], us[ok], flat, method="linear").reshape(-1, us.shape[1])
        except QhullError as error:  # flat beyond the rank test's round-off: Qhull's own
            raise ValueError(
                f"to_grid: Qhull finds the points of x flat in n={n} dimensions (no cell to "
                "interpolate on)."
            ) from error
        # Points on the hull that round-off puts just outside it.
        miss = np.any(np.isnan(out), -1) & np.all(np.isfinite(flat), -1)
        if np.any(miss):
            from scipy.spatial import Delaunay

            tri = Delaunay(xs[ok])
            found = tri.find_simplex(flat[miss], bruteforce=True, tol=_EDGE_TOL)
            out[miss] = _on_simplices(tri.points, tri.simplices, us[ok], flat[miss], found)
        out = out.reshape(*points.shape[:-1], us.shape[1])
    return out[..., 0] if u.ndim == len(lead) else out
