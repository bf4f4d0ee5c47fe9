"""What a characteristics solve returns: the points, the blow-up report, interpolation to a grid."""

import equinox as eqx
import numpy as np

from .._custom_types import Array, Bool, Float, Int


NO_BLOWUP, CROSSING, DIVERGENCE = 0, 1, 2
KIND_NAMES = {
    NO_BLOWUP: "none",
    CROSSING: "characteristics cross (dx/dsigma -> 0)",
    DIVERGENCE: "u diverges",
}


class BlowUp(eqx.Module):
    r"""Where each characteristic stops being a classical solution, one entry per characteristic.

    - `kind`: 0 none before the horizon, 1 crossing ($\det[\partial x/\partial\sigma,\ dx/ds]$
      changes sign: neighbouring characteristics meet, a shock or caustic), 2 divergence
      ($|u|$ reached `u_max`).
    - `s`: the parameter value of the event ($+\infty$ where none). Crossings are located by
      diffrax's event root find on the dense solution. For a divergence, the root find locates
      $|u| = u_{\max}$ and one Newton step on $1/|u| = 0$ extrapolates to the pole (exact to
      $O(u_{\max}^{-2})$ for a simple pole $u \sim c/(s^*-s)$).
    - `x`, `u`: the place and value there (NaN where none; `u` is the value at the event for a
      divergence).
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
            "x": np.asarray(self.x[i]).tolist(),
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
        return self.s[None, :] <= self.blowup.s[:, None]

    def on_grid(self, points) -> np.ndarray:
        """$u$ at `points` (shape `(..., n)`) by piecewise-linear interpolation of the valid
        scattered points (Delaunay triangulation, `scipy.interpolate.griddata`). Points outside
        the region swept by the characteristics get NaN. Host-side post-processing."""
        return to_grid(self.x, self.u, points)


def to_grid(x, u, points) -> np.ndarray:
    r"""Interpolate scattered values `u` (shape `(..., )` or `(..., k)`) at scattered points `x`
    (shape `(..., n)`, NaN entries ignored) onto `points` (shape `(..., n)`), piecewise linearly
    on a Delaunay triangulation. Outside the convex hull of the points: NaN.

    **Raises:** `ValueError` if the shapes disagree.
    """
    from scipy.interpolate import griddata

    x = np.asarray(x, float)
    u = np.asarray(u, float)
    points = np.asarray(points, float)
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
    if n == 1:
        order = np.argsort(xs[ok, 0])
        out = np.stack(
            [
                np.interp(points[..., 0], xs[ok, 0][order], col[order], left=np.nan, right=np.nan)
                for col in us[ok].T
            ],
            axis=-1,
        )
    else:
        out = griddata(xs[ok], us[ok], points.reshape(-1, n), method="linear")
        out = out.reshape(*points.shape[:-1], us.shape[1])
    return out[..., 0] if u.ndim == len(lead) else out
