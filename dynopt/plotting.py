"""All of dynopt's figures. Pure functions of saved results; matplotlib's object API (no pyplot
state, no GUI backend needed).

`panels(n)` gives exactly n axes (no blank slots); each `plot_*` draws on a given `Axes`; `save`
finishes a figure before writing it atomically: one font size per role (`FONT`), legends that list
only drawn data, log axes whose tick labels never collide and always show at least two labels,
axis labels and titles wrapped to their panel, and empty axes removed. Figure defects are fixed
here, once, not in each experiment.
"""

import itertools
import math
import os
import tempfile
import textwrap
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from matplotlib import colors as mcolors, image as mimage
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import Collection, PathCollection
from matplotlib.container import Container
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter


# The one font-size setting (points), by role; `save` applies it to every figure.
FONT = {"title": 9.0, "label": 9.0, "tick": 8.0, "legend": 7.0, "text": 8.0, "suptitle": 10.0}
KEY = "key"  # gid of legend-only proxy artists that explain a style (see `key_entry`)


# --- figures and panels -----------------------------------------------------------------------


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 4.2, height: float = 3.4):
    """A new `Figure` with an `nrows x ncols` grid of axes (returned as a flat list). Prefer
    `panels(n)`, which never leaves a blank slot; `save` removes axes left empty."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    return fig, axes


def panels(n: int, *, ncols: int | None = None, width: float = 4.2, height: float = 3.4):
    """A new `Figure` with exactly `n` axes in rows of `ncols` (default: one row up to 4, else
    rows of 3 or 4); a shorter last row is centred, so no slot is left blank."""
    if n < 1:
        raise ValueError(f"panels needs n >= 1, got {n}")
    if ncols is None:
        ncols = n if n <= 4 else min((4, 3), key=lambda c: (-n % c, -c))  # fullest last row
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    grid = fig.add_gridspec(nrows, 2 * ncols)
    axes = [fig.add_subplot(grid[row, a:b]) for row, a, b in _grid_slots(ncols, n)]
    return fig, axes


@contextmanager
def _wall_clock_legend_warning_off():
    # matplotlib warns when placing a `loc="best"` legend took over one second of *wall* time.
    # dynopt's legends take milliseconds (at most ~2 ms measured); the warning fires only when
    # the process is descheduled mid-draw (a loaded CI machine), so it says nothing about the
    # figure and must not turn into an error or a message for the user.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message='Creating legend with loc="best"')
        yield


def save(fig: Figure, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """`finish` the figure at `dpi`, then write it as PNG via a temporary file and an atomic
    rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png.tmp")
    os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)  # the user's umask, not mkstemp's 0600
    before = fig.dpi
    fig.set_dpi(dpi)  # `finish` lays the figure out and draws it at the saved resolution
    engine = fig.get_layout_engine()
    try:
        finish(fig)
        canvas = fig.canvas
        size = tuple(round(v * dpi) for v in fig.get_size_inches())
        if not fig.stale and isinstance(canvas, FigureCanvasAgg):
            # `finish`'s last draw is the figure as saved: write its pixels (what `savefig`
            # does after drawing it once more, a third of a figure's cost).
            pixels = np.asarray(canvas.buffer_rgba())
            if pixels.shape[1::-1] == size:
                mimage.imsave(tmp, pixels, format="png", origin="upper", dpi=dpi)
                os.replace(tmp, path)
                return path
        # Keep `finish`'s layout (constrained layout is the larger half of a draw, and
        # running it again moves nothing).
        fig.set_layout_engine("none")
        with _wall_clock_legend_warning_off():
            fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    finally:
        fig.set_layout_engine(engine)
        fig.set_dpi(before)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def finish(fig: Figure) -> None:
    """Apply dynopt's figure rules in place (idempotent); `save` calls it."""
    with _wall_clock_legend_warning_off():
        _finish(fig)


def _finish(fig: Figure) -> None:
    if not hasattr(fig.canvas, "get_renderer"):
        FigureCanvasAgg(fig)  # text extents need a renderer
    empty = [ax for ax in fig.axes if _is_empty(ax)]
    for ax in empty:
        ax.remove()
    if empty:
        _close_gaps(fig)
    for ax in fig.axes:
        _fonts(ax)
        _prune_legend(ax)
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() in ("log", "symlog"):
                _log_ticks(ax, axis)
    if fig._suptitle is not None:
        fig._suptitle.set_fontsize(FONT["suptitle"])
    for text in fig.texts:
        text.set_fontsize(FONT["text"])
    fig.canvas.draw()
    _wrap_labels(fig)
    log_axes = [
        axis
        for ax in fig.axes
        for axis in (ax.xaxis, ax.yaxis)
        if axis.get_scale() in ("log", "symlog")
    ]
    for _ in range(4):  # one draw per round for all axes (a draw is most of a figure's cost)
        if not [axis for axis in log_axes if _thin_colliding(fig, axis)]:
            break
        fig.canvas.draw()


def _grid_slots(ncols: int, n: int):
    """(row, first column, last column) of n panels in rows of ncols on a grid of 2·ncols
    columns, a short last row centred."""
    for i in range(n):
        row, col = divmod(i, ncols)
        start = 2 * col + (ncols - min(ncols, n - row * ncols))
        yield row, start, start + 2


def _close_gaps(fig: Figure) -> None:
    """Re-seat the axes left in a grid after empty ones were removed, so no slot stays blank."""
    grids: dict = {}
    for ax in fig.axes:
        spec = ax.get_subplotspec()
        if spec is not None and not hasattr(ax, "_colorbar"):
            grids.setdefault(id(spec.get_gridspec()), []).append(ax)
    for axes in grids.values():
        gs = axes[0].get_subplotspec().get_gridspec()
        nrows, ncols = gs.get_geometry()
        if len(axes) == nrows * ncols or any(
            a.get_subplotspec().num1 != a.get_subplotspec().num2 for a in axes
        ):
            continue  # full, or panels spanning several cells (e.g. from `panels`)
        axes.sort(key=lambda a: a.get_subplotspec().num1)
        n = len(axes)  # fewest blank slots in at most as many rows, then the widest rows
        ncols = min(
            (c for c in range(min(ncols, n), 0, -1) if math.ceil(n / c) <= nrows),
            key=lambda c: (-n % c, -c),
        )
        grid = fig.add_gridspec(math.ceil(n / ncols), 2 * ncols)
        for ax, (row, a, b) in zip(axes, _grid_slots(ncols, len(axes))):
            ax.set_subplotspec(grid[row, a:b])
    fig.set_size_inches(fig.get_size_inches())  # constrained layout recomputes on draw


def _is_empty(ax: Axes) -> bool:
    if hasattr(ax, "_colorbar"):  # a colorbar's axes
        return False
    return not (ax.has_data() or ax.texts or ax.tables or ax.artists or ax.get_legend())


def _fonts(ax: Axes) -> None:
    ax.title.set_fontsize(FONT["title"])
    for side in (ax._left_title, ax._right_title):
        side.set_fontsize(FONT["title"])
    ax.xaxis.label.set_fontsize(FONT["label"])
    ax.yaxis.label.set_fontsize(FONT["label"])
    ax.tick_params(labelsize=FONT["tick"])
    for text in ax.texts:
        text.set_fontsize(FONT["text"])
    legend = ax.get_legend()
    if legend is not None:
        for text in legend.get_texts():
            text.set_fontsize(FONT["legend"])
        if legend.get_title().get_text():
            legend.get_title().set_fontsize(FONT["legend"])


def _drawn(artist) -> bool:
    """Whether a legend handle shows data in its axes (or is a declared style key)."""
    if isinstance(artist, Container):  # bars, error bars: drawn if any part is
        return any(_drawn(child) for child in artist.get_children())
    if artist.get_gid() == KEY:
        return True
    if not artist.get_visible():
        return False
    if isinstance(artist, Line2D):
        x, y = (np.asarray(v, float) for v in artist.get_data())
        return bool(np.any(np.isfinite(x) & np.isfinite(y)))
    if isinstance(artist, PathCollection):  # scatter: a marker per offset
        off = np.asarray(artist.get_offsets(), float)
        return bool(off.size) and bool(np.any(np.all(np.isfinite(off), axis=-1)))
    if isinstance(artist, Collection):
        return any(np.isfinite(p.vertices).all(axis=1).any() for p in artist.get_paths())
    return True


def _prune_legend(ax: Axes) -> None:
    legend = ax.get_legend()
    if legend is None:
        return
    handles, labels = legend.legend_handles, [t.get_text() for t in legend.get_texts()]
    artists, artist_labels = ax.get_legend_handles_labels()
    by_label = dict(zip(artist_labels, artists))
    keep = [
        (h, lab) for h, lab in zip(handles, labels) if lab not in by_label or _drawn(by_label[lab])
    ]
    if len(keep) == len(labels):
        return
    if not keep:
        legend.remove()
        return
    ax.legend(
        [by_label.get(lab, h) for h, lab in keep],
        [lab for _, lab in keep],
        loc=legend._loc,
        ncols=legend._ncols,
        fontsize=FONT["legend"],
    )


def legend(ax: Axes, **kwargs) -> None:
    """`ax.legend` over the labelled artists that show data (and `key_entry` proxies)."""
    handles, labels = ax.get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels) if _drawn(h)]
    if keep:
        ax.legend(*zip(*keep), fontsize=FONT["legend"], **kwargs)


def key_entry(ax: Axes, label: str, *args, **style) -> None:
    """A legend-only entry explaining a style used by several drawn curves (e.g. "dashed:
    reference"); `fmt` and `style` as for `ax.plot`."""
    (line,) = ax.plot([], [], *args, label=label, **style)
    line.set_gid(KEY)


# --- tick labels ------------------------------------------------------------------------------

_SUP = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _sci(v: float, _pos=None) -> str:
    """`10⁻³`, `3×10⁻⁴`, `2.5×10²`: compact, unambiguous log-axis tick labels."""
    if v <= 0 or not np.isfinite(v):
        return ""
    e = math.floor(math.log10(v) + 1e-9)
    m = v / 10.0**e
    exp = f"10{str(e).translate(_SUP)}"
    if abs(m - 1) < 1e-6:
        return "1" if e == 0 else exp
    if 0 <= e <= 2:
        return f"{v:.3g}"
    return f"{m:.2g}×{exp}"


def log_ticks(lo: float, hi: float, *, max_ticks: int = 6) -> list[float]:
    """At least two and at most `max_ticks` round values in [lo, hi] for a log axis, reaching
    across at least half of it: powers of ten when the range spans a few decades, 1-3, 1-2-5 or
    1-1.5-2-…-9 mantissas within a decade, and the two ends rounded to two digits over a range
    too narrow for any of those."""
    lo, hi = min(lo, hi), max(lo, hi)
    if not (lo > 0 and np.isfinite(hi)):
        return []
    tol = 1e-9
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    # 1.5 in the last set: [0.065, 0.16] gets 0.07-0.15, not 0.07-0.1 (its left half only).
    every = (1.0, 1.5, *(float(m) for m in range(2, 10)))
    for subs in ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), every):
        ticks = [
            m * 10.0**k
            for k in range(k0, k1 + 1)
            for m in subs
            if lo * (1 - tol) <= m * 10.0**k <= hi * (1 + tol)
        ]
        # Labels that reach across at least half the range (in log), or the ends below.
        if len(ticks) >= 2 and math.log(ticks[-1] / ticks[0]) >= 0.5 * math.log(hi / lo):
            if len(ticks) > max_ticks:  # many decades: every n-th power of ten
                decades = [t for t in ticks if abs(math.log10(t) - round(math.log10(t))) < tol]
                stride = math.ceil(len(decades) / max_ticks)
                ticks = decades[::stride] if len(decades) >= 2 else ticks[:: len(ticks) // 2]
            return ticks
    # Narrower than the gap between two 1..9 mantissas: the ends, rounded inwards.
    e = math.floor(math.log10(hi))
    for digits in range(1, 5):
        step = 10.0 ** (e - digits)
        a = float(f"{math.ceil(lo / step - tol) * step:.{digits + 1}g}")
        b = float(f"{math.floor(hi / step + tol) * step:.{digits + 1}g}")
        if b > a:
            return [a, b]
    return [lo, hi]


def _log_ticks(ax: Axes, axis) -> None:
    if isinstance(axis.get_major_locator(), FixedLocator):
        axis.set_minor_formatter(NullFormatter())
        return  # ticks chosen by the caller (e.g. the sample counts); only thinned if colliding
    lo, hi = ax.get_xlim() if axis is ax.xaxis else ax.get_ylim()  # autoscaled, not stale
    if axis.get_scale() == "symlog" and not min(lo, hi) >= axis.get_transform().linthresh:
        return  # a symlog axis through 0 keeps matplotlib's ticks
    ticks = log_ticks(lo, hi)
    if len(ticks) < 2:
        return
    axis.set_major_locator(FixedLocator(ticks))
    plain = all(1e-2 <= t < 1e3 for t in ticks)  # one style per axis: 0.3, 1, 10 or 10⁻⁴
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}" if plain else _sci(v)))
    axis.set_minor_locator(LogLocator(subs="auto"))
    axis.set_minor_formatter(NullFormatter())


def _label_boxes(fig: Figure, axis):
    renderer = fig.canvas.get_renderer()
    lo, hi = sorted(axis.get_view_interval())
    out = []
    for tick in axis.get_major_ticks():
        label = tick.label1
        if label.get_visible() and label.get_text() and lo <= tick.get_loc() <= hi * 1.000001:
            out.append((tick.get_loc(), label.get_window_extent(renderer)))
    return sorted(out, key=lambda p: p[0])


def _collide(boxes, pad: float = 2.0) -> bool:
    for (_, a), (_, b) in itertools.pairwise(boxes):
        if a.x1 + pad > b.x0 and b.x1 + pad > a.x0 and a.y1 + pad > b.y0 and b.y1 + pad > a.y0:
            return True
    return False


def _thin_colliding(fig: Figure, axis) -> bool:
    """Drop every other major tick label if any two overlap (at least two remain); whether it
    did (the caller redraws and asks again)."""
    boxes = _label_boxes(fig, axis)
    if len(boxes) <= 2 or not _collide(boxes):
        return False
    keep = [loc for loc, _ in boxes][::2]
    if len(keep) < 2:
        keep = [boxes[0][0], boxes[-1][0]]
    axis.set_major_locator(FixedLocator(keep))
    return True


def _wrap_labels(fig: Figure) -> None:
    """Wrap axis labels and titles longer than their panel (clipped or colliding otherwise)."""
    renderer = fig.canvas.get_renderer()
    changed = False
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        for text, length in (
            (ax.xaxis.label, box.width),
            (ax.yaxis.label, box.height),
            (ax.title, box.width),
        ):
            s = text.get_text()
            size = text.get_window_extent(renderer)
            extent = max(size.width, size.height)
            if s and "\n" not in s and "$" not in s and extent > length > 0:
                width = max(12, int(len(s) * length / extent))
                text.set_text(textwrap.fill(s, width))
                changed = True
    if changed:
        fig.canvas.draw()


# --- the plots --------------------------------------------------------------------------------


def plot_error_vs_step_size(
    ax: Axes,
    step_sizes,
    errors,
    *,
    label: str,
    order: float | None = None,
    marker: str = "o",
    color=None,
    **style,
) -> None:
    """Log-log error against step size, with the fitted order in the legend. Non-finite errors
    (diverged runs) are drawn as crosses on the top edge."""
    h, e = np.asarray(step_sizes, float), np.asarray(errors, float)
    ok = np.isfinite(e) & (e > 0)
    text = label if order is None or not np.isfinite(order) else f"{label} (slope {order:.2f})"
    (line,) = ax.loglog(h[ok], e[ok], marker=marker, label=text, color=color, **style)
    if np.any(~ok):
        top = np.max(e[ok]) * 3 if np.any(ok) else 1.0
        ax.scatter(h[~ok], np.full((~ok).sum(), top), marker="x", color=line.get_color())
    ax.set_xlabel("step size h")
    ax.set_ylabel("max error over [0, t1]")
    ax.grid(True, which="both", alpha=0.3)


def plot_slope_guide(ax: Axes, step_sizes, anchor_error: float, order: float, **kwargs) -> None:
    """A dashed line of slope `order` through (max h, anchor_error)."""
    h = np.asarray(step_sizes, float)
    hs = np.array([h.min(), h.max()])
    ax.loglog(hs, anchor_error * (hs / h.max()) ** order, "k--", lw=0.8, alpha=0.6, **kwargs)


def plot_orders(
    ax: Axes,
    step_sizes,
    series: Sequence[tuple[np.ndarray, str, float | None]],
    *,
    guides: Sequence[float | None] | None = None,
) -> None:
    """Errors against step size, one `(errors, label, fitted order)` per series, each with a
    dashed slope guide of `guides[i]` (default: the order rounded) through its smallest-h point,
    where the asymptotic regime is. A guide that would lie within a factor 2 of one already
    drawn with the same slope (two curves nearly on each other) is drawn once."""
    h = np.asarray(step_sizes, float)
    markers, drawn = "osD^v<>", []
    for i, (errors, label, order) in enumerate(series):
        plot_error_vs_step_size(ax, h, errors, label=label, order=order, marker=markers[i % 7])
        guide = (guides[i] if guides is not None else None) or (
            round(order) if order is not None and np.isfinite(order) else None
        )
        e = np.asarray(errors, float)
        j = int(np.argmin(h))
        if guide and np.isfinite(e[j]) and e[j] > 0:  # a factor 2 below the data, visible
            anchor = 0.5 * e[j] * (h.max() / h[j]) ** guide
            if not any(g == guide and abs(np.log(anchor / a)) < np.log(2) for g, a in drawn):
                plot_slope_guide(ax, h, anchor, guide)
                drawn.append((guide, anchor))
    if drawn:
        orders = [f"{g:g}" for g in sorted({g for g, _ in drawn})]
        text = f"slope {', '.join(orders)} guide{'s' if len(orders) > 1 else ''}"
        key_entry(ax, text, "k--", lw=0.8, alpha=0.6)
    legend(ax)


_STYLES = (
    dict(ls="-", lw=2.4, alpha=0.6),
    dict(ls="--", lw=1.3),
    dict(ls="-.", lw=1.3),
    dict(ls=":", lw=1.6),
    dict(ls=(0, (5, 1, 1, 1, 1, 1)), lw=1.2),
)


def plot_loss_curves(
    ax: Axes,
    curves: Sequence[tuple[np.ndarray, np.ndarray, str]],
    *,
    diverged_at: Sequence[float | None] | None = None,
    clip: float = 1e20,
    headroom: float = 100.0,
    decades: float = 20.0,
) -> None:
    """Loss against time on a log scale. `diverged_at[i]` is run i's divergence time (or None):
    it is marked by a cross at that time on the top edge. The y-range covers the runs that did not
    diverge (and every run's start) with `headroom`, so a diverging run leaves the axes instead of
    stretching them over tens of decades."""
    diverged_at = list(diverged_at) if diverged_at is not None else [None] * len(curves)
    lo, hi = np.inf, 0.0
    lines = []
    for (t, loss, label), div in zip(curves, diverged_at):
        t, loss = np.asarray(t, float), np.asarray(loss, float)
        ok = np.isfinite(loss) & (loss > 0) & (loss <= clip)
        if div is not None:
            ok &= t <= div
        style = _STYLES[len(lines) % len(_STYLES)]
        (line,) = ax.semilogy(t[ok], loss[ok], label=label, **style)
        lines.append(line)
        if np.any(ok):
            lo = min(lo, loss[ok].min())
            hi = max(hi, loss[ok][0] if div is not None else loss[ok].max())
    if np.isfinite(lo) and hi > 0:
        top = hi * headroom
        ax.set_ylim(max(lo / 3, top / 10.0**decades), top)
    for line, div in zip(lines, diverged_at):
        if div is not None:
            ax.plot(
                [div], [1.0], "x", color=line.get_color(), ms=9, mew=2,
                transform=ax.get_xaxis_transform(), clip_on=False,
            )  # fmt: skip
    if any(d is not None for d in diverged_at):
        key_entry(ax, "× divergence (non-finite)", "kx", ls="none")
    ax.set_xlabel("t")
    ax.set_ylabel("loss")
    ax.grid(True, which="both", alpha=0.3)


def plot_log_floor(ax: Axes, x, y, fmt: str = "o", *, floor: float = 0.0, label: str, **style):
    """`y` against `x` on a log y-axis; values at or below `floor` (e.g. exact zeros, or a
    converged run's distance) are not data at an invented level: they are drawn as open markers on
    the bottom edge, with their own legend entry."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    above = np.isfinite(y) & (y > floor)
    (line,) = ax.semilogy(x[above], y[above], fmt, label=label, **style)
    below = np.isfinite(y) & ~above
    if np.any(below):
        what = "exactly 0" if floor == 0 else f"≤ {floor:g}"
        ax.plot(
            x[below], np.zeros(below.sum()), fmt[0] if fmt[0] in "os^vD.x" else "o",
            color=line.get_color(), mfc="none", ms=5, clip_on=False,
            transform=ax.get_xaxis_transform(), label=f"{label}: {what} (bottom edge)",
        )  # fmt: skip
    return line


def plot_errorbars(ax: Axes, x, mean, se, *, label: str, k: float = 3.0, fmt: str = "o", **style):
    """Monte-Carlo means with ±`k` standard errors; non-finite entries (runs a mode skipped) are
    not drawn, so they get no legend entry."""
    x, mean, se = (np.asarray(v, float) for v in (x, mean, se))
    ok = np.isfinite(mean) & np.isfinite(se)
    style = {"ms": 4, "capsize": 2, **style}
    return ax.errorbar(x[ok], mean[ok], k * se[ok], fmt=fmt, label=label, **style)


def plot_rate_check(ax: Axes, t, measured, predicted, *, label: str) -> None:
    """A measured rate (e.g. dL/dt) against its predicted identity: measured as a wide pale band,
    predicted as a dark dashed line with markers, so both stay visible where they coincide."""
    t = np.asarray(t)
    ax.plot(t, np.asarray(measured), lw=5, alpha=0.35, label=f"{label}: measured")
    every = max(1, t.size // 12)
    ax.plot(
        t, np.asarray(predicted), "--", color="k", lw=1, marker="o", ms=3, markevery=every,
        label=f"{label}: predicted identity",
    )  # fmt: skip
    ax.set_xlabel("t")
    ax.grid(True, alpha=0.3)


def plot_contour_paths(
    ax: Axes,
    loss_grid: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    paths: Sequence[tuple[np.ndarray, str]],
) -> None:
    """Log-spaced contours of a 2-D loss with parameter paths (arrays of shape (n, 2)) on top;
    later paths are drawn thinner and dashed, so one over another stays visible."""
    levels = np.geomspace(max(np.min(loss_grid), 1e-3), np.max(loss_grid), 20)
    ax.contour(xs, ys, loss_grid, levels=levels, colors="0.7", linewidths=0.6)
    for i, (path, label) in enumerate(paths):
        path = np.asarray(path)
        path = path[np.all(np.isfinite(path), axis=1)]
        style = dict(lw=3, alpha=0.45) if i == 0 else dict(lw=1, ls=("--", ":", "-.")[i % 3])
        ax.plot(path[:, 0], path[:, 1], label=label, **style)
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
    a dot and the equilibrium by a red dot; `window` sets the axes to ±window. Later paths are
    dashed, so coinciding paths stay distinguishable."""
    for i, (path, label) in enumerate(paths):
        path = np.asarray(path)
        path = path[np.all(np.isfinite(path), axis=1)]
        ls = ("-", "--", ":", "-.")[i % 4]
        (line,) = ax.plot(path[:, 0], path[:, 1], lw=0.9 if i else 1.6, ls=ls, label=label)
        ax.plot(path[0, 0], path[0, 1], "o", color=line.get_color(), ms=4)
    ax.plot([equilibrium[0]], [equilibrium[1]], "o", color="red", ms=6, label="equilibrium")
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


def color_norm(values, *, clip: float | None = None) -> tuple[mcolors.Normalize, str]:
    """A colour scale that uses the whole map for `values` (NaN ignored, |v| capped at `clip`):
    `(norm, cmap)`, diverging around 0 with each sign stretched to its own extreme when the
    values take both signs, sequential otherwise."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if clip is not None:
        v = np.clip(v, -clip, clip)
    if v.size == 0:
        return mcolors.Normalize(0.0, 1.0), "viridis"
    lo, hi = float(v.min()), float(v.max())
    if lo < 0 < hi:
        return mcolors.TwoSlopeNorm(0.0, lo, hi), "RdBu_r"
    if hi <= 0:
        return mcolors.Normalize(lo, hi if hi > lo else lo + 1), "Blues_r"
    return mcolors.Normalize(lo, hi if hi > lo else lo + 1), "Reds"


def plot_density_map(
    ax: Axes, x, y, values, *, label: str, clip: float | None = None, log: bool = False
) -> None:
    """A field on a regular grid (`values[j, i]` at `(x[i], y[j])`) with a colour scale over the
    whole map (`color_norm`; `log=True`: a log scale over the positive values), NaN blank."""
    v = np.asarray(values, float)
    if log:
        pos = v[np.isfinite(v) & (v > 0)]
        norm, cmap = mcolors.LogNorm(pos.min(), pos.max()), "viridis"
        v = np.where(v > 0, v, np.nan)
    else:
        norm, cmap = color_norm(v, clip=clip)
        if clip is not None:
            v = np.clip(v, -clip, clip)
    mesh = ax.pcolormesh(x, y, v, cmap=cmap, norm=norm, shading="auto")
    bar = ax.figure.colorbar(mesh, ax=ax, label=label, shrink=0.85)
    if isinstance(norm, mcolors.TwoSlopeNorm):  # ticks on both sides, each at its own scale
        lo, hi = norm.vmin, norm.vmax
        bar.set_ticks([lo, lo / 2, 0.0, hi / 2, hi])
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))


def plot_scalar_field(ax: Axes, x, y, values, *, label: str, clip: float = 10.0) -> None:
    """`plot_density_map` with |values| capped at `clip` (kept for older callers)."""
    plot_density_map(ax, x, y, values, label=label, clip=clip)


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


# --- helpers for cards gan_dynamics..gd_flow ---

_add_legend = legend  # `dress` takes a `legend` argument


def dress(ax: Axes, *, legend: bool | dict = True, grid: str | None = "major", **props) -> Axes:
    """Finish a panel in one call: `ax.set(**props)` (title, xlabel, ylabel, limits, scales),
    a legend of the drawn data, and a light grid.

    **Arguments:**

    - `ax`: the panel.
    - `legend`: `True` (a legend of the labelled, drawn artists), `False` (none), or the keyword
      arguments of `legend` (e.g. `dict(loc="lower left")`).
    - `grid`: the ticks that get grid lines, `"major"` or `"both"`; `None` for no grid.
    - `props`: passed to `ax.set`.

    **Returns:** `ax`.
    """
    ax.set(**props)
    if legend:
        _add_legend(ax, **({} if legend is True else legend))
    if grid is not None:
        ax.grid(True, which=grid, alpha=0.3)
    return ax


def plot_power_law(
    ax: Axes, x, y, *, slope: float, label: str, reference: str, fmt: str = "o-"
) -> None:
    r"""Measured `y` against `x` on log-log axes with the reference power law
    $y_0 (x/x_0)^{p}$ (dashed, through the first point), e.g. an error that should fall as
    $1/\kappa$ ($p = -1$).

    **Arguments:**

    - `x`, `y`: the measurements (positive).
    - `slope`: the predicted exponent $p$.
    - `label`, `reference`: legend entries of the measurements and of the reference line.
    - `fmt`: the measurements' format.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ax.loglog(x, y, fmt, label=label)
    ax.loglog(x, y[0] * (x / x[0]) ** slope, "k--", lw=0.8, label=reference)


def plot_bar_pairs(
    ax: Axes, names: Sequence[str], first, second, *, labels: tuple[str, str], fmt: str = ".4f"
) -> None:
    """Two bars per name (e.g. predicted and measured), the second labelled with its value, with
    headroom above the bars for a legend.

    **Arguments:**

    - `names`: the categories (x tick labels).
    - `first`, `second`: the two values per name.
    - `labels`: legend entries of the two series.
    - `fmt`: the number format of the second series' bar labels.
    """
    x = np.arange(len(names))
    first, second = np.asarray(first, float), np.asarray(second, float)
    ax.bar(x - 0.2, first, width=0.4, label=labels[0])
    bars = ax.bar(x + 0.2, second, width=0.4, label=labels[1])
    ax.bar_label(bars, labels=[f"{v:{fmt}}" for v in second])
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylim(0.0, 1.35 * max(first.max(), second.max()))


def loss_on_grid(loss, xs, ys) -> np.ndarray:
    """A 2-D loss evaluated on the grid `xs × ys`: `out[j, i] = loss([xs[i], ys[j]])`, the layout
    `plot_contour_paths` takes (one vmapped, jitted evaluation).

    **Arguments:**

    - `loss`: a function of a parameter vector of length 2 (e.g. `problem.loss`).
    - `xs`, `ys`: the grid's coordinates.

    **Returns:** an array of shape `(len(ys), len(xs))`.
    """
    import jax
    import jax.numpy as jnp

    grid = jnp.stack(jnp.meshgrid(jnp.asarray(xs), jnp.asarray(ys)), axis=-1)
    return np.asarray(jax.jit(jax.vmap(jax.vmap(loss)))(grid))


# --- helpers for h4 ---


def plot_distances(ax: Axes, curves: Sequence[tuple], **props) -> Axes:
    r"""Distances $\|x(t)\|$ (e.g. of iterates to an equilibrium) against time on a log y-axis,
    one line per curve; an exact zero is a gap, not a value at an invented level. Then
    `dress(ax, grid="both", **props)`.

    **Arguments:**

    - `ax`: the panel.
    - `curves`: `(t, x, label)` or `(t, x, label, style)`, `x` of shape `(len(t), d)` (the
      distance is the norm over the last axis) and `style` the keyword arguments of `ax.plot`.
    - `props`: passed to `dress` (title, xlabel, ylabel, legend, grid, ...).

    **Returns:** `ax`.
    """
    for t, x, label, *style in curves:
        d = np.linalg.norm(np.asarray(x, float), axis=-1)
        ax.semilogy(np.asarray(t), np.where(d > 0, d, np.nan), label=label, **(style or [{}])[0])
    return dress(ax, **{"grid": "both", **props})


# --- helpers for h5 ---


def plot_characteristics_with_events(
    ax: Axes, x, y, event_x, event_y, *, label: str, every: int = 1, color="0.35", ms: float = 6.0
) -> Axes:
    """Characteristic curves (`plot_characteristic_curves`) and the events that end them
    (blow-ups, crossings) as red crosses.

    **Arguments:**

    - `x`, `y`: `(m, T)`, row i one curve (NaN ends it).
    - `event_x`, `event_y`: each curve's event (broadcast against each other); a non-finite one
      means no event and is not drawn.
    - `label`: the events' legend entry; `every`, `color`: which curves and their colour; `ms`:
      the crosses' size.

    **Returns:** `ax`.
    """
    plot_characteristic_curves(ax, x, y, every=every, color=color)
    ex, ey = np.broadcast_arrays(np.asarray(event_x, float), np.asarray(event_y, float))
    hit = np.isfinite(ex) & np.isfinite(ey)
    ax.plot(ex[hit], ey[hit], "rx", ms=ms, label=label)
    return ax
