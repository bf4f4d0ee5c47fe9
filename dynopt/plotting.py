"""All of dynopt's figures. Pure functions of saved results; matplotlib's object API (no pyplot
state, no GUI backend needed). Each `plot_*` draws on a given `Axes`; `save` writes atomically."""

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 4.2, height: float = 3.4):
    """A new `Figure` with an `nrows x ncols` grid of axes (returned as a flat list)."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    return fig, axes


def save(fig: Figure, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Write `fig` as PNG via a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png.tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def plot_error_vs_step_size(
    ax: Axes,
    step_sizes,
    errors,
    *,
    label: str,
    order: float | None = None,
    marker: str = "o",
    color=None,
) -> None:
    """Log-log error against step size, with the fitted order in the legend. Non-finite errors
    (diverged runs) are drawn as crosses on the top edge."""
    h, e = np.asarray(step_sizes, float), np.asarray(errors, float)
    ok = np.isfinite(e) & (e > 0)
    text = label if order is None or not np.isfinite(order) else f"{label} (slope {order:.2f})"
    (line,) = ax.loglog(h[ok], e[ok], marker=marker, label=text, color=color)
    if np.any(~ok):
        top = np.max(e[ok]) * 3 if np.any(ok) else 1.0
        ax.scatter(h[~ok], np.full((~ok).sum(), top), marker="x", color=line.get_color())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("step size h")
    ax.set_ylabel("max error over [0, t1]")
    ax.grid(True, which="both", alpha=0.3)


def plot_slope_guide(ax: Axes, step_sizes, anchor_error: float, order: float, **kwargs) -> None:
    """A dashed line of slope `order` through (max h, anchor_error)."""
    h = np.asarray(step_sizes, float)
    hs = np.array([h.min(), h.max()])
    ax.loglog(hs, anchor_error * (hs / h.max()) ** order, "k--", lw=0.8, alpha=0.6, **kwargs)


def plot_loss_curves(
    ax: Axes,
    curves: Sequence[tuple[np.ndarray, np.ndarray, str]],
    *,
    diverged_at: Sequence[float | None] | None = None,
    clip: float = 1e20,
) -> None:
    """Loss against time on a log scale, cut at `clip` (diverging runs leave the axes there);
    `diverged_at[i]` not None marks run i's last drawn point with a cross."""
    for i, (t, loss, label) in enumerate(curves):
        t, loss = np.asarray(t, float), np.asarray(loss, float)
        ok = np.isfinite(loss) & (loss > 0) & (loss <= clip)
        (line,) = ax.semilogy(t[ok], loss[ok], label=label)
        if diverged_at is not None and diverged_at[i] is not None and np.any(ok):
            ax.plot(t[ok][-1], loss[ok][-1], "x", color=line.get_color(), ms=9, mew=2)
    ax.set_xlabel("t")
    ax.set_ylabel("loss")
    ax.grid(True, which="both", alpha=0.3)


def plot_rate_check(ax: Axes, t, measured, predicted, *, label: str) -> None:
    """A measured rate (e.g. dL/dt) against its predicted identity."""
    ax.plot(np.asarray(t), np.asarray(measured), lw=2, alpha=0.6, label=f"{label}: measured")
    ax.plot(np.asarray(t), np.asarray(predicted), "k:", label=f"{label}: predicted identity")
    ax.set_xlabel("t")
    ax.grid(True, alpha=0.3)


def plot_contour_paths(
    ax: Axes,
    loss_grid: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    paths: Sequence[tuple[np.ndarray, str]],
) -> None:
    """Log-spaced contours of a 2-D loss with parameter paths (arrays of shape (n, 2)) on top."""
    levels = np.geomspace(max(np.min(loss_grid), 1e-3), np.max(loss_grid), 20)
    ax.contour(xs, ys, loss_grid, levels=levels, colors="0.7", linewidths=0.6)
    for path, label in paths:
        path = np.asarray(path)
        path = path[np.all(np.isfinite(path), axis=1)]
        ax.plot(path[:, 0], path[:, 1], ".-", ms=2, lw=1, label=label)
    ax.set_xlabel(r"$\theta_1$")
    ax.set_ylabel(r"$\theta_2$")


def plot_phase_portrait(
    ax: Axes,
    paths: Sequence[tuple[np.ndarray, str]],
    *,
    window: float | None = None,
    equilibrium=(0.0, 0.0),
) -> None:
    """2-D trajectories (arrays of shape (n, 2), e.g. a generator's θ) with their start marked by
    a dot and the equilibrium by a red dot; `window` sets the axes to ±window."""
    for path, label in paths:
        path = np.asarray(path)
        path = path[np.all(np.isfinite(path), axis=1)]
        (line,) = ax.plot(path[:, 0], path[:, 1], lw=0.8, label=label)
        ax.plot(path[0, 0], path[0, 1], "o", color=line.get_color(), ms=4)
    ax.plot([equilibrium[0]], [equilibrium[1]], "o", color="red", ms=6)
    if window is not None:
        ax.set_xlim(-window, window)
        ax.set_ylim(-window, window)
    ax.set_aspect("equal")
    ax.set_xlabel(r"$\theta_1$")
    ax.set_ylabel(r"$\theta_2$")
    ax.grid(True, alpha=0.3)


def plot_predicted_vs_measured(
    ax: Axes, groups: Sequence[tuple[np.ndarray, np.ndarray, str]], *, marker: str = "o"
) -> None:
    """Measured values against predicted ones, one marker series per group, on the y = x line."""
    lo, hi = np.inf, -np.inf
    for predicted, measured, label in groups:
        p, m = np.asarray(predicted, float), np.asarray(measured, float)
        ax.plot(p, m, marker, ls="none", label=label, alpha=0.8)
        ok = np.isfinite(p) & np.isfinite(m)
        if np.any(ok):
            lo, hi = min(lo, p[ok].min(), m[ok].min()), max(hi, p[ok].max(), m[ok].max())
    if np.isfinite(lo):
        pad = 0.05 * (hi - lo) if hi > lo else 0.01
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8, label="y = x")
    ax.set_xlabel("predicted")
    ax.set_ylabel("measured")
    ax.grid(True, alpha=0.3)


def plot_scalar_field(ax: Axes, x, y, values, *, label: str, clip: float = 10.0) -> None:
    """A scalar field on a regular grid (`values[j, i]` at `(x[i], y[j])`) as a diverging colour
    map clipped to ±`clip`; NaN (outside the computed region) stays blank."""
    v = np.clip(np.asarray(values, float), -clip, clip)
    mesh = ax.pcolormesh(x, y, v, cmap="RdBu_r", vmin=-clip, vmax=clip, shading="auto")
    ax.figure.colorbar(mesh, ax=ax, label=label, shrink=0.85)


def plot_characteristic_curves(
    ax: Axes, x, y, *, every: int = 1, color="0.35", alpha: float = 0.6
) -> None:
    """Characteristic curves: row i of `x`, `y` (shape (m, T)) is one curve; NaN ends it."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    for xi, yi in zip(x[::every], y[::every]):
        ax.plot(xi, yi, "-", color=color, lw=0.6, alpha=alpha)


def plot_density_vs_histogram(ax: Axes, x, density, edges, histogram) -> None:
    """A density curve (e.g. by characteristics) over a normalised histogram (e.g. Monte Carlo)."""
    ax.stairs(
        np.asarray(histogram, float),
        np.asarray(edges, float),
        fill=True,
        alpha=0.35,
        color="C0",
        label="Monte-Carlo histogram",
    )
    ax.plot(
        np.asarray(x, float), np.asarray(density, float), "C3-", lw=1.2, label="characteristics"
    )
    ax.set_xlabel("x")
    ax.set_ylabel("density")


def plot_density_error_2d(
    ax: Axes, x, y, error, *, exact_x, exact_y, exact, scale: float, label: str
) -> None:
    """A 2-D density route's pointwise error `error[i, j]` at `(x[i], y[j])` (diverging map,
    ±`scale`), over the exact density's contours (`exact[i, j]` at `(exact_x[i], exact_y[j])`)."""
    e = np.asarray(error, float).T
    mesh = ax.pcolormesh(
        np.asarray(x), np.asarray(y), e, cmap="RdBu_r", vmin=-scale, vmax=scale, shading="auto"
    )
    ax.contour(
        np.asarray(exact_x),
        np.asarray(exact_y),
        np.asarray(exact, float).T,
        6,
        colors="k",
        linewidths=0.6,
        alpha=0.7,
    )
    ax.figure.colorbar(mesh, ax=ax, label=label, shrink=0.85)
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
