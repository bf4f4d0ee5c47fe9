"""All of dynopt's figures. Pure functions of saved results; matplotlib's object API (no pyplot
state, no GUI backend needed).

`panels(n)` gives exactly n axes (no blank slots); each `plot_*` draws on a given `Axes` and marks
values a log axis cannot show (non-finite, ≤ 0) on its edges instead of dropping them or drawing
them at an invented level; `save` finishes a figure before writing it atomically in the format its
suffix names: one font size per role (`FONT`), legends that list only drawn data, log axes whose
tick labels are distinct, never collide and always show at least two, axis labels and titles
wrapped to their panel, and empty axes removed (the others re-seated). Figure defects are fixed
here, once, not in each experiment.
"""

import itertools
import math
import numbers
import os
import re
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
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogFormatter,
    LogLocator,
    NullFormatter,
)


# The one font-size setting (points), by role; `save` applies it to every figure.
FONT = {"title": 9.0, "label": 9.0, "tick": 8.0, "legend": 7.0, "text": 8.0, "suptitle": 10.0}
KEY = "key"  # gid of legend-only proxy artists that explain a style (see `key_entry`)


# --- figures and panels -----------------------------------------------------------------------


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 4.2, height: float = 3.4):
    """A new `Figure` with an `nrows x ncols` grid of axes. Prefer `panels(n)`, which never leaves
    a blank slot; `save` removes axes left empty.

    **Arguments:**

    - `ncols`, `nrows`: the grid's columns and rows (default 1 each).
    - `width`, `height`: one panel's size in inches (the figure is `width * ncols` by
      `height * nrows`).

    **Returns:** `(fig, axes)`, `axes` a flat list of the `nrows * ncols` axes in row order.
    """
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    return fig, axes


def panels(n: int, *, ncols: int | None = None, width: float = 4.2, height: float = 3.4):
    """A new `Figure` with exactly `n` axes in rows of `ncols` (default: one row up to 4, else
    rows of 3 or 4); a shorter last row is centred, so no slot is left blank.

    **Arguments:**

    - `n`: the number of panels, an integer $\\ge 1$.
    - `ncols`: panels per row, an integer $\\ge 1$, or `None` (the default layout).
    - `width`, `height`: one panel's size in inches.

    **Returns:** `(fig, axes)`, `axes` a list of the `n` axes in row order.

    **Raises:** `ValueError` if `n` or `ncols` is not an integer >= 1.
    """
    if not _is_count(n):
        raise ValueError(f"panels needs an integer n >= 1 (the number of panels), got {n!r}")
    if ncols is not None and not _is_count(ncols):
        raise ValueError(f"panels needs ncols = None or an integer >= 1, got {ncols!r}")
    if ncols is None:
        ncols = n if n <= 4 else min((4, 3), key=lambda c: (-n % c, -c))  # fullest last row
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    grid = fig.add_gridspec(nrows, 2 * ncols)
    axes = [fig.add_subplot(grid[row, a:b]) for row, a, b in _grid_slots(ncols, n)]
    return fig, axes


def _is_count(n) -> bool:
    return isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1


@contextmanager
def _wall_clock_legend_warning_off():
    # matplotlib warns when placing a `loc="best"` legend took over one second of *wall* time.
    # dynopt's legends take milliseconds (at most ~2 ms measured); the warning fires only when
    # the process is descheduled mid-draw (a loaded CI machine), so it says nothing about the
    # figure and must not turn into an error or a message for the user.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message='Creating legend with loc="best"')
        yield


# PNGs are compressed at zlib's fastest level: the same pixels, files ~6% larger, a third less
# of the time spent compressing (measured over every quick-mode figure: 1.42 -> 0.95 s of CPU).
_PNG = {"compress_level": 1}


def save(fig: Figure, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """`finish` the figure at `dpi`, then write it in the format its suffix names (`.png`,
    `.pdf`, `.svg`, ...) via a temporary file and an atomic rename.

    **Arguments:**

    - `fig`: the figure.
    - `path`: the file to write; its suffix names the format.
    - `dpi`: the resolution (default 120).

    **Returns:** the written path, a `pathlib.Path`.

    **Raises:** `ValueError` if the suffix is missing or names no format matplotlib writes.
    """
    path = Path(path)
    fmt = path.suffix[1:].lower()
    formats = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in formats:
        raise ValueError(
            f"save: {path.name!r} needs a suffix naming the file format, one of "
            f"{', '.join('.' + f for f in sorted(formats))}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Named `.NAME.tmp-PID-...`: a writer killed mid-save leaves a file that the experiments'
    # runner recognises as a dead writer's, not as the user's.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-")
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
        if fmt == "png" and not fig.stale and isinstance(canvas, FigureCanvasAgg):
            # `finish`'s last draw is the figure as saved: write its pixels (what `savefig`
            # does after drawing it once more, a third of a figure's cost).
            pixels = np.asarray(canvas.buffer_rgba())
            if pixels.shape[1::-1] == size:
                mimage.imsave(tmp, pixels, format="png", origin="upper", dpi=dpi, pil_kwargs=_PNG)
                os.replace(tmp, path)
                return path
        # Keep `finish`'s layout (constrained layout is the larger half of a draw, and
        # running it again moves nothing).
        fig.set_layout_engine("none")
        options = {"pil_kwargs": _PNG} if fmt == "png" else {}
        with _wall_clock_legend_warning_off():
            fig.savefig(tmp, dpi=dpi, format=fmt, **options)
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
    emptied = {id(s.get_gridspec()) for s in (ax.get_subplotspec() for ax in empty) if s}
    for ax in empty:
        ax.remove()
    if empty:
        _close_gaps(fig, emptied)
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


def _close_gaps(fig: Figure, emptied: set[int]) -> None:
    """Re-seat the axes left in the grids (ids in `emptied`) that lost empty axes, so no slot
    stays blank: grids of single cells (`figure`) and of panels two columns wide (`panels`)."""
    grids: dict = {}
    for ax in fig.axes:
        spec = ax.get_subplotspec()
        if spec is not None and not hasattr(ax, "_colorbar"):
            grids.setdefault(id(spec.get_gridspec()), []).append(ax)
    for key, axes in grids.items():
        gs = axes[0].get_subplotspec().get_gridspec()
        nrows, ncols = gs.get_geometry()
        spans = {(len(s.rowspan), len(s.colspan)) for s in (a.get_subplotspec() for a in axes)}
        if key not in emptied or len(spans) > 1 or len(axes) * min(spans)[1] == nrows * ncols:
            continue  # untouched, full, or panels of mixed sizes (placed by hand)
        ((height, width),) = spans
        if height != 1 or width not in (1, 2) or ncols % width:
            continue
        ncols //= width  # `panels` puts each panel on two columns (a short last row centred)
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
    """Whether a legend handle shows data in its axes (or is a declared style key): a point with
    finite coordinates, positive on a log axis."""
    if isinstance(artist, Container):  # bars, error bars: drawn if any part is
        return any(_drawn(child) for child in artist.get_children())
    if artist.get_gid() == KEY:
        return True
    if not artist.get_visible():
        return False
    if isinstance(artist, Line2D):
        x, y = (np.asarray(v, float) for v in artist.get_data())
        return _any_shown(artist, artist.get_transform(), x, y)
    if isinstance(artist, PathCollection):  # scatter: a marker per offset
        off = np.asarray(artist.get_offsets(), float).reshape(-1, 2)
        return _any_shown(artist, artist.get_offset_transform(), off[:, 0], off[:, 1])
    if isinstance(artist, Collection):
        return any(
            _any_shown(artist, artist.get_transform(), p.vertices[:, 0], p.vertices[:, 1])
            for p in artist.get_paths()
        )
    return True


def _any_shown(artist, transform, x, y) -> bool:
    """Whether any point (x, y) drawn with `transform` is on the canvas: finite, and positive
    where that coordinate is data on a log axis (matplotlib drops the others)."""
    shown = np.isfinite(x) & np.isfinite(y)
    ax = artist.axes
    if ax is not None:
        for v, is_data, axis in zip((x, y), transform.contains_branch_separately(ax.transData),
                                    (ax.xaxis, ax.yaxis)):  # fmt: skip
            if is_data and axis.get_scale() == "log":
                shown &= v > 0
    return bool(np.any(shown))


def _prune_legend(ax: Axes) -> None:
    """Drop the legend entries whose artists show nothing; a label carried by several artists
    keeps as many entries as it has drawn artists."""
    legend = ax.get_legend()
    if legend is None:
        return
    handles, labels = legend.legend_handles, [t.get_text() for t in legend.get_texts()]
    carried: dict[str, list] = {}  # label -> its drawn artists, in drawing order
    for artist, label in zip(*ax.get_legend_handles_labels()):
        carried.setdefault(label, [])
        if _drawn(artist):
            carried[label].append(artist)
    keep, used = [], dict.fromkeys(carried, 0)
    for h, lab in zip(handles, labels):
        if lab not in carried:
            keep.append((h, lab))  # a handle given to the legend, not drawn in the axes
        elif used[lab] < len(carried[lab]):
            keep.append((carried[lab][used[lab]], lab))
            used[lab] += 1
    if len(keep) == len(labels):
        return
    if not keep:
        legend.remove()
        return
    ax.legend(
        [h for h, _ in keep],
        [lab for _, lab in keep],
        loc=legend._loc,
        ncols=legend._ncols,
        fontsize=FONT["legend"],
    )


def legend(ax: Axes, **kwargs) -> None:
    """`ax.legend` over the labelled artists that show data (a finite point, positive on a log
    axis), and `key_entry` proxies; no legend when none does.

    **Arguments:**

    - `ax`: the panel.
    - `**kwargs`: passed to `ax.legend` (the font size is `FONT["legend"]`).
    """
    handles, labels = ax.get_legend_handles_labels()
    keep = [(h, lab) for h, lab in zip(handles, labels) if _drawn(h)]
    if keep:
        ax.legend(*zip(*keep), fontsize=FONT["legend"], **kwargs)


def key_entry(ax: Axes, label: str, *args, **style) -> None:
    """A legend-only entry explaining a style used by several drawn curves (e.g. "dashed:
    reference"): an empty line marked as a key, which `legend` always lists.

    **Arguments:**

    - `ax`: the matplotlib `Axes` to draw on.
    - `label`: the legend text.
    - `*args`, `**style`: the format string and style, as for `ax.plot`.
    """
    (line,) = ax.plot([], [], *args, label=label, **style)
    line.set_gid(KEY)


# --- tick labels ------------------------------------------------------------------------------

_SUP = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _sci(v: float, _pos=None, *, digits: int = 2) -> str:
    """`10⁻³`, `3×10⁻⁴`, `2.5×10²`: compact, unambiguous log-axis tick labels, the mantissa to
    `digits` significant digits (one more for values in [1, 1000), written plainly)."""
    if v <= 0 or not np.isfinite(v):
        return ""
    e = math.floor(math.log10(v) + 1e-9)
    m = v / 10.0**e
    exp = f"10{str(e).translate(_SUP)}"
    if abs(m - 1) < 1e-6:
        return "1" if e == 0 else exp
    if 0 <= e <= 2:
        return f"{v:.{digits + 1}g}"
    return f"{m:.{digits}g}×{exp}"


def _tick_formatter(ticks) -> FuncFormatter:
    """One label style for a log axis's `ticks` (0.3, 1, 10 or 10⁻⁴), with the fewest digits
    that keep their labels distinct (1.28×10⁻⁶ and 1.31×10⁻⁶, not 1.3×10⁻⁶ twice)."""
    ticks = sorted({float(t) for t in ticks if t > 0 and np.isfinite(t)})
    plain = all(1e-2 <= t < 1e3 for t in ticks)

    def label(v: float, extra: int) -> str:
        return f"{v:.{6 + extra}g}" if plain else _sci(v, digits=2 + extra)

    extra = next((k for k in range(15) if len({label(t, k) for t in ticks}) == len(ticks)), 0)
    return FuncFormatter(lambda v, _: label(v, extra))


def log_ticks(lo: float, hi: float, *, max_ticks: int = 6) -> list[float]:
    r"""Round tick values in $[\text{lo}, \text{hi}]$ for a log axis, reaching across at least half
    of it (in log): powers of ten when the range spans a few decades, 1-3, 1-2-5 or 1-1.5-2-…-9
    mantissas within a decade, and the two ends rounded to two digits over a range too narrow
    for any of those.

    **Arguments:**

    - `lo`, `hi`: the axis range (either order).
    - `max_ticks`: the most ticks (many decades: every $n$-th power of ten; default 6).

    **Returns:** a sorted list of at least two and at most `max_ticks` values; empty unless
    $\min(\text{lo}, \text{hi}) > 0$ and $\max(\text{lo}, \text{hi})$ is finite.
    """
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
    locator = axis.get_major_locator()
    if isinstance(locator, FixedLocator):
        # Ticks chosen by the caller (e.g. the sample counts): labelled as ours unless the
        # caller gave the labels too, and only thinned if colliding.
        axis.set_minor_formatter(NullFormatter())
        ticks = np.asarray(locator.locs, float)
        positive = axis.get_scale() == "log" or (
            ticks.size and ticks.min() >= axis.get_transform().linthresh
        )
        if positive and isinstance(axis.get_major_formatter(), LogFormatter):
            axis.set_major_formatter(_tick_formatter(ticks))
        return
    lo, hi = ax.get_xlim() if axis is ax.xaxis else ax.get_ylim()  # autoscaled, not stale
    if axis.get_scale() == "symlog" and not min(lo, hi) >= axis.get_transform().linthresh:
        return  # a symlog axis through 0 keeps matplotlib's ticks
    ticks = log_ticks(lo, hi)
    if len(ticks) < 2:
        return
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(_tick_formatter(ticks))
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
            if s and "\n" not in s and extent > length > 0:
                wrapped = _fill(s, max(12, int(len(s) * length / extent)))
                changed |= wrapped != s
                text.set_text(wrapped)
    if changed:
        fig.canvas.draw()


# A word: non-space characters and whole `$…$` segments (mathtext, spaces included).
_WORD = re.compile(r"(?:\$[^$]*\$|[^\s$])+")


def _fill(s: str, width: int) -> str:
    """`s` in lines of about `width` characters, broken at spaces outside `$…$` (a line break
    inside one is a mathtext error); unchanged if its `$` do not pair up."""
    if "$" not in s:
        return textwrap.fill(s, width)
    if s.count("$") % 2 or "\\$" in s:
        return s
    lines = [""]
    for word in _WORD.findall(s):
        if lines[-1] and len(lines[-1]) + 1 + len(word) > width:
            lines.append(word)
        else:
            lines[-1] = f"{lines[-1]} {word}" if lines[-1] else word
    return "\n".join(lines)


# --- the plots --------------------------------------------------------------------------------


def _number(v, name: str) -> float | None:
    """`v` (a Python or NumPy number, a 0-d JAX array) as a float; None stays None."""
    if v is None:
        return None
    a = np.asarray(v, float)
    if a.size != 1:
        raise ValueError(f"{name} must be a number or None, got an array of shape {a.shape}")
    return float(a.reshape(()))


def _step_sizes(step_sizes) -> np.ndarray:
    h = np.asarray(step_sizes, float)
    if h.ndim != 1 or not h.size:
        raise ValueError(f"step_sizes must be a non-empty 1-D sequence, got shape {h.shape}")
    if not np.all(np.isfinite(h) & (h > 0)):
        raise ValueError(f"step_sizes must be positive (and finite) on a log axis, got {h}")
    return h


def _edge(ax: Axes, x, *, top: bool, marker: str, label: str | None = None, **style) -> None:
    """Markers at `x` on the top (y = 1) or bottom (y = 0) edge of the axes: values a log
    y-axis cannot show, marked where they are instead of drawn at an invented level."""
    x = np.asarray(x, float)
    ax.plot(
        x, np.full(x.shape, 1.0 if top else 0.0), ls="none", marker=marker, clip_on=False,
        transform=ax.get_xaxis_transform(), label="_nolegend_" if label is None else label,
        **style,
    )  # fmt: skip


def _below(y, floor: float) -> str:
    """What values at or below `floor` are, for a legend entry."""
    if floor != 0:
        return f"≤ {floor:g}"
    return "exactly 0" if np.all(y == 0) else "≤ 0"


def _nothing_drawn(ax: Axes, lines: Sequence[str]) -> None:
    """Name, in the middle of the panel, each series with nothing to draw and why (an empty
    panel with invented axes says nothing)."""
    for k, text in enumerate(lines):
        ax.text(0.5, 0.5 - 0.08 * k, text, transform=ax.transAxes, ha="center", va="center")


def _key_once(ax: Axes, label: str, *args, **style) -> None:
    if label not in [line.get_label() for line in ax.lines if line.get_gid() == KEY]:
        key_entry(ax, label, *args, **style)


ERROR_CLIP = 1e20  # an error above it is a diverged run's (`plot_error_vs_step_size`)


def _diverged(clip: float) -> str:
    return f"diverged (error not finite or > {clip:g})"


DIVERGED = _diverged(ERROR_CLIP)  # the key of the crosses on an error plot's top edge


def plot_error_vs_step_size(
    ax: Axes,
    step_sizes,
    errors,
    *,
    label: str,
    order: float | None = None,
    marker: str = "o",
    color=None,
    key: bool = True,
    clip: float = ERROR_CLIP,
    **style,
) -> bool:
    """Log-log error against step size, with the fitted order in the legend. Errors a log axis
    cannot show are marked on its edges, not drawn at an invented level: non-finite ones and
    those above `clip` (diverged runs, which would stretch the axis over dozens of empty
    decades) as crosses on the top edge (explained by one key entry), zero and negative ones as
    open markers on the bottom edge (with their own legend entry).

    **Arguments:**

    - `step_sizes`: positive; `errors`: one per step size.
    - `label`, `order`: the legend entry, with the order (a number, a 0-d array or None).
    - `marker`, `color`, `style`: the line's style.
    - `key`: whether to add the crosses' key entry (`plot_orders` adds one after all series).
    - `clip`: errors above it count as diverged (as `plot_loss_curves`' losses do).

    **Returns:** whether a cross was drawn.

    **Raises:** `ValueError` if a step size is not positive or `errors` does not have one entry
    per step size.
    """
    h = _step_sizes(step_sizes)
    e = np.asarray(errors, float)
    if e.shape != h.shape:
        raise ValueError(
            f"the errors of {label!r} have shape {e.shape} and step_sizes {h.shape}: one error "
            "per step size"
        )
    order = _number(order, f"the order of {label!r}")
    ok = np.isfinite(e) & (e > 0) & (e <= clip)
    text = label if order is None or not np.isfinite(order) else f"{label} (slope {order:.2f})"
    (line,) = ax.loglog(h[ok], e[ok], marker=marker, label=text, color=color, **style)
    color = line.get_color()
    low = e <= 0  # -inf too; NaN is not
    if np.any(low):
        what = f"{label}: {_below(e[low], 0.0)} (bottom edge)"
        _edge(ax, h[low], top=False, marker=marker, color=color, mfc="none", label=what)
    bad = ~ok & ~low  # not finite (NaN too), or above `clip`
    if np.any(bad):  # a series with no error to draw is named by its crosses
        _edge(ax, h[bad], top=True, marker="x", color=color, ms=8, mew=1.5,
              label=None if np.any(ok | low) else text)  # fmt: skip
        if key:
            _key_once(ax, _diverged(clip), "kx", ls="none")
    ax.set_xlabel("step size h")
    ax.set_ylabel("max error over [0, t1]")
    ax.grid(True, which="both", alpha=0.3)
    return bool(np.any(bad))


def plot_slope_guide(ax: Axes, step_sizes, anchor_error: float, order: float, **kwargs) -> None:
    r"""A dashed guide line of slope `order` on log-log axes through $(h_{\max}, e_a)$:

    $$e(h) = e_a\,(h/h_{\max})^{p},\qquad h \in [h_{\min}, h_{\max}].$$

    **Arguments:**

    - `ax`: the matplotlib `Axes` to draw on.
    - `step_sizes`: the step sizes $h$ (their range spans the line).
    - `anchor_error`: $e_a$, the error at the largest step.
    - `order`: the slope $p$.
    - `**kwargs`: passed to `ax.loglog`.
    """
    h = np.asarray(step_sizes, float)
    hs = np.array([h.min(), h.max()])
    anchor_error, order = float(anchor_error), float(order)
    ax.loglog(hs, anchor_error * (hs / h.max()) ** order, "k--", lw=0.8, alpha=0.6, **kwargs)


def plot_orders(
    ax: Axes,
    step_sizes,
    series: Sequence[tuple[np.ndarray, str, float | None]],
    *,
    guides: Sequence[float | None] | None = None,
    **props,
) -> None:
    """Errors against step size, one `(errors, label, fitted order)` per series, each with a
    dashed slope guide of `guides[i]` (default: the order rounded) through its smallest-h point
    with a finite error, where the asymptotic regime is. A guide that would lie within a factor
    2 of one already drawn with the same slope (two curves nearly on each other) is drawn once;
    one step size gets no guide.

    **Arguments:**

    - `step_sizes`: positive, one per error.
    - `series`: `(errors, label, order)`; `order` a number, a 0-d array (e.g.
      `Comparison.order`) or None.
    - `guides`: one slope (or None) per series.
    - `props`: passed to `ax.set` once drawn (title, axis labels that replace the defaults).

    **Raises:** `ValueError` if a step size is not positive, or a series or `guides` has the
    wrong length.
    """
    h = _step_sizes(step_sizes)
    series = list(series)
    if guides is not None and len(guides) != len(series):
        raise ValueError(f"guides has {len(guides)} entries for {len(series)} series")
    markers, drawn, crosses = "osD^v<>", [], False
    for i, (errors, label, order) in enumerate(series):
        crosses |= plot_error_vs_step_size(
            ax, h, errors, label=label, order=order, marker=markers[i % 7], key=False
        )
        order = _number(order, f"the order of {label!r}")
        given = _number(guides[i], f"guides[{i}]") if guides is not None else None
        guide = given or (round(order) if order is not None and np.isfinite(order) else None)
        e = np.asarray(errors, float)
        finite = np.flatnonzero(np.isfinite(e) & (e > 0) & (e <= ERROR_CLIP))  # (as drawn)
        if guide and np.isfinite(guide) and finite.size and h.max() > h.min():
            j = finite[np.argmin(h[finite])]  # a factor 2 below the data, visible
            anchor = 0.5 * e[j] * (h.max() / h[j]) ** guide
            if not any(g == guide and abs(np.log(anchor / a)) < np.log(2) for g, a in drawn):
                plot_slope_guide(ax, h, anchor, guide)
                drawn.append((guide, anchor))
    if drawn:
        orders = [f"{g:g}" for g in sorted({g for g, _ in drawn})]
        text = f"slope {', '.join(orders)} guide{'s' if len(orders) > 1 else ''}"
        key_entry(ax, text, "k--", lw=0.8, alpha=0.6)
    if crosses:
        _key_once(ax, DIVERGED, "kx", ls="none")
    legend(ax)
    ax.set(**props)


ASYMPTOTIC = "asymptotic"  # the verdict (`dynopt.assess_order`) under which a slope is an order


def order_series(errors, label: str, order, verdict: str | None) -> tuple:
    """A `plot_orders` series `(errors, label, order)` that shows the fitted order only where its
    sweep's verdict (`dynopt.assess_order`, `Comparison.verdict`) is "asymptotic": under any
    other verdict the slope of the errors is no order, so the label names the verdict and the
    series has no order (and no slope in the legend, no guide).

    **Arguments:**

    - `errors`: the sweep's errors, one per step size.
    - `label`: the series' legend label.
    - `order`: the fitted order.
    - `verdict`: the sweep's verdict (`None` counts as not asymptotic).

    **Returns:** `(errors, label, order)` when asymptotic, else
    `(errors, f"{label} ({verdict})", None)`.
    """
    if verdict == ASYMPTOTIC:
        return errors, label, order
    return errors, f"{label} ({verdict})", None


def order_text(order: float, verdict: str, template: str = "slope {:.2f}") -> str:
    """A title's slope text: `template` filled with the fitted `order` where its sweep's verdict is
    "asymptotic", else the verdict itself (e.g. "pre-asymptotic"): a slope is an order only
    there.

    **Arguments:**

    - `order`: the fitted order.
    - `verdict`: the sweep's verdict (`dynopt.assess_order`).
    - `template`: a format string with one field (default `"slope {:.2f}"`).

    **Returns:** the text, a `str`.
    """
    return template.format(order) if verdict == ASYMPTOTIC else verdict


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
    """Loss against time on a log scale. The y-range covers the runs that did not diverge (and
    every run's start) with `headroom`, so a diverging run leaves the axes instead of stretching
    them over tens of decades. A loss of 0 or below is an open marker on the bottom edge; a curve
    with nothing to draw is named in the panel.

    **Arguments:**

    - `curves`: `(t, loss, label)`, `t` and `loss` 1-D of equal length.
    - `diverged_at`: one entry per curve: the *time* at which run i diverged, marked by a cross
      on the top edge (the loss is drawn up to it), or None (or negative, as
      `Trajectory.diverged_at`'s −1) where it did not. `Trajectory.diverged_at` is a step: pass
      `ts[k]`.
    - `clip`: losses above it are treated as diverged and not drawn.

    **Raises:** `ValueError` if `diverged_at` does not have one entry per curve, a divergence
    time lies outside its curve's times or is an integer array (a step index), or a curve's `t`
    and `loss` differ in shape.
    """
    curves = list(curves)
    diverged_at = [None] * len(curves) if diverged_at is None else list(diverged_at)
    if len(diverged_at) != len(curves):
        raise ValueError(
            f"diverged_at has {len(diverged_at)} entries for {len(curves)} curves: one per "
            "curve (None where a run did not diverge)"
        )
    lo, hi = np.inf, 0.0
    lines, shown, missing = [], [], []
    for i, (t, loss, label) in enumerate(curves):
        t, loss = np.asarray(t, float), np.asarray(loss, float)
        if t.ndim != 1 or t.shape != loss.shape:
            raise ValueError(
                f"curves[{i}] ({label!r}): t has shape {t.shape} and loss {loss.shape}; they "
                "must be 1-D and of equal length"
            )
        div = diverged_at[i] = _divergence_time(diverged_at[i], t, i)
        before = t <= div if div is not None else np.ones(t.shape, bool)
        ok = before & np.isfinite(loss) & (loss > 0) & (loss <= clip)
        style = _STYLES[len(lines) % len(_STYLES)]
        if ok.sum() == 1:  # a line through one point draws nothing: a marker shows it
            style = {**style, "marker": "o", "ms": 4}
        (line,) = ax.semilogy(t[ok], loss[ok], label=label, **style)
        lines.append(line)
        low = before & (loss <= 0)
        if np.any(low):  # every n-th: a row of markers, not a bar
            what = f"{label}: {_below(loss[low], 0.0)} (bottom edge)"
            every = max(1, int(low.sum()) // 25)
            _edge(ax, t[low], top=False, marker="o", color=line.get_color(), mfc="none", ms=4,
                  markevery=every, label=what)  # fmt: skip
        shown.append(bool(np.any(ok | low)))
        if np.any(ok):
            lo = min(lo, loss[ok].min())
            hi = max(hi, loss[ok][0] if div is not None else loss[ok].max())
        elif div is None and not np.any(low):
            missing.append((label, line.get_color()))
    if np.isfinite(lo) and hi > 0:
        top = hi * headroom
        ax.set_ylim(max(lo / 3, top / 10.0**decades), top)
    for line, div, named in zip(lines, diverged_at, shown):
        if div is not None:  # a run with nothing else drawn is named by its cross
            ax.plot(
                [div], [1.0], "x", color=line.get_color(), ms=9, mew=2,
                transform=ax.get_xaxis_transform(), clip_on=False,
                label="_nolegend_" if named else line.get_label(),
            )  # fmt: skip
    if any(d is not None for d in diverged_at):
        key_entry(ax, "divergence", "kx", ls="none")
    for k, (label, color) in enumerate(missing):
        ax.text(0.5, 0.5 - 0.08 * k, f"{label}: no loss in (0, {clip:g}] to draw",
                transform=ax.transAxes, ha="center", va="center", color=color)  # fmt: skip
    ax.set_xlabel("t")
    ax.set_ylabel("loss")
    ax.grid(True, which="both", alpha=0.3)


def _divergence_time(div, t: np.ndarray, i: int) -> float | None:
    """`diverged_at[i]` as a time in curve i's range, None where the run did not diverge."""
    if div is None:
        return None
    a = np.asarray(div)
    if a.size != 1 or not (np.issubdtype(a.dtype, np.number) and a.dtype != bool):
        raise ValueError(f"diverged_at[{i}] must be a time or None, got {div!r}")
    v = float(a.reshape(()))
    if v < 0:
        return None  # `Trajectory.diverged_at`'s −1: not diverged
    if np.issubdtype(a.dtype, np.integer) and not isinstance(div, int):
        raise ValueError(
            f"diverged_at[{i}] = {v:g} is an integer array, a step index (as "
            "Trajectory.diverged_at)? diverged_at takes times: pass ts[k] (None where a run "
            "did not diverge)"
        )
    ts = t[np.isfinite(t)]
    lo, hi = (ts.min(), ts.max()) if ts.size else (v, v)
    slack = 1e-9 * max(hi - lo, abs(lo), abs(hi))
    if not (np.isfinite(v) and lo - slack <= v <= hi + slack):
        raise ValueError(
            f"diverged_at[{i}] = {v:g} lies outside curve {i}'s times [{lo:g}, {hi:g}]: it takes "
            "the time at which the run diverged (not a step index)"
        )
    return v


def plot_log_floor(ax: Axes, x, y, fmt: str = "o", *, floor: float = 0.0, label: str, **style):
    r"""`y` against `x` on a log y-axis. Values at or below `floor` (e.g. exact zeros, or a
    converged run's distance) are not data at an invented level: they are drawn as open markers
    on the bottom edge, $+\infty$ as crosses on the top edge, each with their own legend entry
    (NaN is not drawn).

    **Arguments:**

    - `ax`: the matplotlib `Axes` to draw on.
    - `x`, `y`: arrays of one shape.
    - `fmt`: the marker/line format, as for `ax.plot` (default `"o"`).
    - `floor`: the level at or below which a value is drawn on the bottom edge (default 0).
    - `label`: the series' legend label.
    - `**style`: passed to `ax.semilogy`.

    **Returns:** the `Line2D` of the values above `floor`.

    **Raises:** `ValueError` if `x` and `y` differ in shape.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape:
        raise ValueError(f"plot_log_floor: x has shape {x.shape} and y {y.shape}")
    above = np.isfinite(y) & (y > floor)
    (line,) = ax.semilogy(x[above], y[above], fmt, label=label, **style)
    below = y <= floor  # -inf too
    if np.any(below):
        what = _below(y[below], floor)
        ax.plot(
            x[below], np.zeros(below.sum()), fmt[0] if fmt[0] in "os^vD.x" else "o",
            color=line.get_color(), mfc="none", ms=5, clip_on=False,
            transform=ax.get_xaxis_transform(), label=f"{label}: {what} (bottom edge)",
        )  # fmt: skip
    inf = y == np.inf
    if np.any(inf):
        _edge(ax, x[inf], top=True, marker="x", color=line.get_color(), ms=6, mew=1.5,
              label=f"{label}: +∞ (top edge)")  # fmt: skip
    return line


def plot_errorbars(ax: Axes, x, mean, se, *, label: str, k: float = 3.0, fmt: str = "o", **style):
    r"""Monte-Carlo means with $\pm k$ standard errors; non-finite entries (runs a mode skipped) are
    not drawn, so they get no legend entry.

    **Arguments:**

    - `ax`: the matplotlib `Axes` to draw on.
    - `x`, `mean`, `se`: arrays of one shape (the abscissae, the means, their standard errors).
    - `label`: the legend label.
    - `k`: the error bars' half-width in standard errors (default 3).
    - `fmt`: the marker format (default `"o"`).
    - `**style`: passed to `ax.errorbar`.

    **Returns:** the `ErrorbarContainer`.
    """
    x, mean, se = (np.asarray(v, float) for v in (x, mean, se))
    ok = np.isfinite(mean) & np.isfinite(se)
    style = {"ms": 4, "capsize": 2, **style}
    return ax.errorbar(x[ok], mean[ok], k * se[ok], fmt=fmt, label=label, **style)


def plot_rate_check(ax: Axes, t, measured, predicted, *, label: str) -> None:
    r"""A measured rate (e.g. $\dot L$) against its predicted identity: measured as a wide pale
    band, predicted as a dark dashed line with markers, so both stay visible where they
    coincide; a series with no finite value is named in the panel.

    **Arguments:**

    - `ax`: the matplotlib `Axes` to draw on.
    - `t`: the times, shape $(n,)$.
    - `measured`, `predicted`: the two rates at `t`, shape $(n,)$.
    - `label`: the legend labels' prefix.
    """
    t = np.asarray(t, float)
    measured, predicted = np.asarray(measured, float), np.asarray(predicted, float)
    ax.plot(t, measured, lw=5, alpha=0.35, label=f"{label}: measured")
    every = max(1, t.size // 12)
    ax.plot(
        t, predicted, "--", color="k", lw=1, marker="o", ms=3, markevery=every,
        label=f"{label}: predicted identity",
    )  # fmt: skip
    _nothing_drawn(ax, [
        f"{label}: {what}: no finite value to draw"
        for what, v in (("measured", measured), ("predicted", predicted))
        if not np.any(np.isfinite(t) & np.isfinite(v))
    ])  # fmt: skip
    ax.set_xlabel("t")
    ax.grid(True, alpha=0.3)


def plot_contour_paths(
    ax: Axes,
    loss_grid: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    paths: Sequence[tuple[np.ndarray, str]],
) -> None:
    """Contours of a 2-D loss at 20 log-spaced heights above its minimum (from 10⁻³ above it,
    or 10⁻³ of its range if that is smaller, to its maximum; non-finite values ignored, any sign;
    none for a constant loss) with parameter paths (arrays of shape (n, 2)) on top; later paths
    are drawn thinner and dashed, so one over another stays visible, and a path that never
    moves is a marker.

    **Arguments:**

    - `ax`: the matplotlib `Axes` to draw on.
    - `loss_grid`: the loss on the grid, shape `(len(ys), len(xs))` (`loss_on_grid`'s layout).
    - `xs`, `ys`: the grid's axes, 1-D.
    - `paths`: a sequence of `(path, label)`, each path of shape $(n, 2)$.

    **Raises:** `ValueError` if `loss_grid` is not `(len(ys), len(xs))` or a path not `(n, 2)`.
    """
    grid = np.asarray(loss_grid, float)
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if grid.ndim != 2 or (xs.ndim == ys.ndim == 1 and grid.shape != (ys.size, xs.size)):
        raise ValueError(
            f"loss_grid has shape {grid.shape}; it must be (len(ys), len(xs)) = "
            f"({ys.size}, {xs.size}) (`loss_on_grid`'s layout)"
        )
    paths = [(np.asarray(path, float), label) for path, label in paths]
    for i, (path, label) in enumerate(paths):
        if path.ndim != 2 or path.shape[1] != 2:
            raise ValueError(f"paths[{i}] ({label!r}) has shape {path.shape}; it must be (n, 2)")
    finite = grid[np.isfinite(grid)]
    if finite.size and finite.max() > finite.min():
        low, span = finite.min(), finite.max() - finite.min()
        levels = low + np.geomspace(1e-3 * min(1.0, span), span, 20)
        ax.contour(xs, ys, np.ma.masked_invalid(grid), levels=levels, colors="0.7",
                   linewidths=0.6)  # fmt: skip
    for i, (path, label) in enumerate(paths):
        path = path[np.all(np.isfinite(path), axis=1)]
        style = dict(lw=3, alpha=0.45) if i == 0 else dict(lw=1, ls=("--", ":", "-.")[i % 3])
        if len(path) and np.all(path == path[0]):  # a path that never moves: a line draws nothing
            style.update(marker="o", ms=5)
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
    dashed, so coinciding paths stay distinguishable.

    **Arguments:**

    - `ax`: the matplotlib `Axes` to draw on.
    - `paths`: a sequence of `(path, label)`, each path of shape $(n, 2)$.
    - `window`: if given, both axes span $[-\\text{window}, \\text{window}]$.
    - `equilibrium`: the point marked in red (default the origin).

    **Raises:** `ValueError` if a path is not `(n, 2)` or has no finite point.
    """
    for i, (path, label) in enumerate(paths):
        path = np.asarray(path, float)
        if path.ndim != 2 or path.shape[1] != 2:
            raise ValueError(f"paths[{i}] ({label!r}) has shape {path.shape}; it must be (n, 2)")
        path = path[np.all(np.isfinite(path), axis=1)]
        if not path.size:
            raise ValueError(f"paths[{i}] ({label!r}) has no finite point to draw")
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
    """Measured values against predicted ones, one marker series per group, over the $y = x$ line;
    a group with no finite pair is named in the panel.

    **Arguments:**

    - `ax`: the matplotlib `Axes` to draw on.
    - `groups`: a sequence of `(predicted, measured, label)`, the two arrays of one shape.
    - `marker`: the marker format (default `"o"`).
    """
    lo, hi, empty = np.inf, -np.inf, []
    for predicted, measured, label in groups:
        p, m = np.asarray(predicted, float), np.asarray(measured, float)
        ax.plot(p, m, marker, ls="none", label=label, alpha=0.8)
        ok = np.isfinite(p) & np.isfinite(m)
        if np.any(ok):
            lo, hi = min(lo, p[ok].min(), m[ok].min()), max(hi, p[ok].max(), m[ok].max())
        else:
            empty.append(f"{label}: no finite (predicted, measured) pair to draw")
    _nothing_drawn(ax, empty)
    if np.isfinite(lo):
        pad = 0.05 * (hi - lo) if hi > lo else 0.01
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8, label="y = x")
    ax.set_xlabel("predicted")
    ax.set_ylabel("measured")
    ax.grid(True, alpha=0.3)


def color_norm(values, *, clip: float | None = None) -> tuple[mcolors.Normalize, str]:
    r"""A colour scale that uses the whole map for `values`: diverging around 0 with each sign
    stretched to its own extreme when the values take both signs, sequential otherwise.

    **Arguments:**

    - `values`: an array (non-finite entries ignored).
    - `clip`: if given, $|v|$ is capped at it first.

    **Returns:** `(norm, cmap)`: a `TwoSlopeNorm` and `"RdBu_r"` for both signs; a `Normalize`
    and `"Reds"` ($\ge 0$) or `"Blues_r"` ($\le 0$); `Normalize(0, 1)` and `"viridis"` for no
    finite value.
    """
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
    whole map (`color_norm`; `log=True`: a log scale over the positive values), NaN blank.

    **Arguments:**

    - `ax`: the matplotlib `Axes` to draw on.
    - `x`, `y`: the grid's axes, shapes $(n_x,)$ and $(n_y,)$.
    - `values`: the field, shape $(n_y, n_x)$.
    - `label`: the colour bar's label.
    - `clip`: if given, $|v|$ is capped at it (linear scale only).
    - `log`: a log colour scale over the positive values.

    **Raises:** `ValueError` if `log=True` and no value is positive.
    """
    v = np.asarray(values, float)
    if log:
        pos = v[np.isfinite(v) & (v > 0)]
        if not pos.size:
            raise ValueError(
                "plot_density_map(log=True): values has no positive finite entry for a log "
                "colour scale (log=False takes any sign)"
            )
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
    """`plot_density_map` with $|v|$ capped at `clip` (kept for older callers).

    **Arguments:**

    - `ax`: the matplotlib `Axes` to draw on.
    - `x`, `y`, `values`, `label`: as `plot_density_map`.
    - `clip`: the cap on $|v|$ (default 10).
    """
    plot_density_map(ax, x, y, values, label=label, clip=clip)


def plot_characteristic_curves(
    ax: Axes, x, y, *, every: int = 1, color="0.35", alpha: float = 0.6
) -> None:
    """Characteristic curves $(x_i(t), y_i(t))$, one thin line per curve; a NaN breaks the line.

    **Arguments:**

    - `ax`: the matplotlib `Axes` to draw on.
    - `x`, `y`: shape $(m, T)$, row $i$ one curve.
    - `every`: draw every `every`-th curve (default 1: all).
    - `color`, `alpha`: the lines' colour and opacity.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    for xi, yi in zip(x[::every], y[::every]):
        ax.plot(xi, yi, "-", color=color, lw=0.6, alpha=alpha)


def plot_density_vs_histogram(ax: Axes, x, density, edges, histogram) -> None:
    """A density curve (e.g. by characteristics) over a normalised histogram (e.g. Monte Carlo).

    **Arguments:**

    - `ax`: the matplotlib `Axes` to draw on.
    - `x`, `density`: the curve's points and values, of one shape.
    - `edges`: the histogram's bin edges, shape $(b + 1,)$.
    - `histogram`: the normalised histogram's values, shape $(b,)$.
    """
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
    r"""A 2-D density route's pointwise error on a diverging colour map, $\pm$`scale`, over the
    exact density's contours.

    **Arguments:**

    - `ax`: the matplotlib `Axes` to draw on.
    - `x`, `y`: the route's grid axes, shapes $(m_1,)$ and $(m_2,)$.
    - `error`: the error, `error[i, j]` at `(x[i], y[j])`, shape $(m_1, m_2)$.
    - `exact_x`, `exact_y`, `exact`: the exact density on its own grid, `exact[i, j]` at
      `(exact_x[i], exact_y[j])`.
    - `scale`: the colour scale's half-range ($> 0$).
    - `label`: the colour bar's label.
    """
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

    - `x`, `y`: the measurements (points without a positive, finite x and y, which a log-log
      axis cannot show, are left out; the reference runs through the first point drawn).
    - `slope`: the predicted exponent $p$.
    - `label`, `reference`: legend entries of the measurements and of the reference line.
    - `fmt`: the measurements' format.

    **Raises:** `ValueError` if no point has a positive, finite x and y.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if not np.any(ok):
        raise ValueError(
            f"plot_power_law: {label!r} has no point with positive, finite x and y (a log-log "
            "axis shows no other)"
        )
    ax.loglog(x[ok], y[ok], fmt, label=label)
    x0, y0 = x[ok][0], y[ok][0]  # (an invisible first point would give an invisible line)
    ax.loglog(x[ok], y0 * (x[ok] / x0) ** slope, "k--", lw=0.8, label=reference)


def plot_bar_pairs(
    ax: Axes, names: Sequence[str], first, second, *, labels: tuple[str, str], fmt: str = ".4f"
) -> None:
    """Two bars per name (e.g. predicted and measured), the second labelled with its value, with
    headroom above the bars for a legend (a y-range from 0 to the values' extremes, NaN not
    drawn; a log y-axis, set before or after, scales itself).

    **Arguments:**

    - `names`: the categories (x tick labels).
    - `first`, `second`: the two values per name.
    - `labels`: legend entries of the two series.
    - `fmt`: the number format of the second series' bar labels (a non-zero value that it
      would print as zero, e.g. 3e-6 as 0.0000, is printed to two significant digits).

    A value that is not finite (a limit not found, a run that diverged) has no bar and no
    number: a cross on the bottom edge where its bar would stand, explained by a key entry.
    """
    x = np.arange(len(names))
    first, second = np.asarray(first, float), np.asarray(second, float)
    crosses = False
    for values, offset, label in ((first, -0.2, labels[0]), (second, 0.2, labels[1])):
        bad = ~np.isfinite(values)
        bars = ax.bar(x + offset, np.where(bad, np.nan, values), width=0.4, label=label)
        if bad.any():  # (an infinite bar is drawn nowhere, its label at infinity)
            color = bars.patches[0].get_facecolor()
            _edge(ax, x[bad] + offset, top=False, marker="x", color=color, ms=8, mew=1.5)
            crosses = True
    texts = ["" if not np.isfinite(v) else _bar_text(v, fmt) for v in second]
    ax.bar_label(bars, labels=texts)
    if crosses:
        _key_once(ax, "not finite (no bar)", "kx", ls="none")
    ax.set_xticks(x, names, rotation=20)
    # Headroom as a margin, not fixed limits: autoscaling keeps the bars' sticky edge at 0 (so
    # 0 to 1.35·max for positive values, the sign respected for negative ones), ignores NaN,
    # and still works on a log axis.
    ax.set_ymargin(0.35)


def _bar_text(v: float, fmt: str) -> str:
    """`v` in `fmt`, unless that reads as zero for a value that is not (0.0000 for 3e-6)."""
    text = f"{v:{fmt}}"
    if v != 0 and np.isfinite(v) and not any(c in "123456789" for c in text.split("e")[0]):
        return f"{v:.2g}"
    return text


def loss_on_grid(loss, xs, ys) -> np.ndarray:
    """A 2-D loss evaluated on the grid `xs × ys`: `out[j, i] = loss([xs[i], ys[j]])`, the layout
    `plot_contour_paths` takes (one vmapped, jitted evaluation).

    **Arguments:**

    - `loss`: a function of a parameter vector of length 2 (e.g. `problem.loss`).
    - `xs`, `ys`: the grid's coordinates.

    **Returns:** an array of shape `(len(ys), len(xs))`.

    **Raises:** `ValueError` if `xs` or `ys` is not 1-D or `loss` does not return a scalar.
    """
    import jax

    xs, ys = np.asarray(xs), np.asarray(ys)
    if xs.ndim != 1 or ys.ndim != 1:
        raise ValueError(f"xs and ys must be 1-D, got shapes {xs.shape} and {ys.shape}")
    # The grid on the host (copies of the coordinates), handed to the one compiled program as
    # it is: eagerly, the conversion, each broadcast and the stack compiled a program of its own.
    grid = np.stack(np.meshgrid(xs, ys), axis=-1)
    out = np.asarray(jax.jit(jax.vmap(jax.vmap(loss)))(grid))
    if out.shape != (ys.size, xs.size):
        raise ValueError(
            f"loss must return a scalar; it returned an array of shape {out.shape[2:]} per point"
        )
    return out


# --- helpers for h4 ---


def plot_distances(ax: Axes, curves: Sequence[tuple], **props) -> Axes:
    r"""Distances $\|x(t)\|$ (e.g. of iterates to an equilibrium) against time on a log y-axis,
    one line per curve; an exact zero is a gap, not a value at an invented level, and a curve
    with nothing to draw (all zero, or not finite) is named in the panel. Then
    `dress(ax, grid="both", **props)`.

    **Arguments:**

    - `ax`: the panel.
    - `curves`: `(t, x, label)` or `(t, x, label, style)`, `x` of shape `(len(t), d)` (the
      distance is the norm over the last axis) and `style` the keyword arguments of `ax.plot`.
    - `props`: passed to `dress` (title, xlabel, ylabel, legend, grid, ...).

    **Returns:** `ax`.
    """
    empty = []
    for t, x, label, *style in curves:
        t, d = np.asarray(t, float), np.linalg.norm(np.asarray(x, float), axis=-1)
        style = dict((style or [{}])[0])
        ok = np.isfinite(t) & np.isfinite(d) & (d > 0)
        if ok.sum() == 1:  # a line through one point draws nothing: a marker shows it
            style.setdefault("marker", "o")
        ax.semilogy(t, np.where(d > 0, d, np.nan), label=label, **style)
        if not np.any(ok):  # named, not a blank panel
            zero = np.any(np.isfinite(t) & (d == 0))
            empty.append(f"{label}: {'exactly 0' if zero else 'no finite value'}, nothing to draw")
    _nothing_drawn(ax, empty)
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
