"""dynopt.plotting on small fixtures: the figure rules that `save` enforces."""

import itertools
import warnings

import numpy as np
import pytest

from dynopt import plotting


def _labels(fig, axis):
    return plotting._label_boxes(fig, axis)


def test_plotting_functions_write_pngs(tmp_path):
    fig, axes = plotting.panels(4)
    hs = np.array([0.1, 0.05, 0.025])
    plotting.plot_orders(
        axes[0], hs, [(np.array([np.inf, 0.05, 0.025]), "e", 1.0), (hs**2, "f", 2.0)]
    )
    t = np.linspace(0, 1, 20)
    plotting.plot_loss_curves(
        axes[1], [(t, np.exp(-t), "a"), (t, np.exp(40 * t), "b")], diverged_at=[None, 0.5]
    )
    plotting.plot_rate_check(axes[2], t, -np.exp(-t), -np.exp(-t), label="dL/dt")
    x = np.linspace(-1, 1, 11)
    grid = x[None, :] ** 2 + x[:, None] ** 2 + 0.01
    plotting.plot_contour_paths(axes[3], grid, x, x, [(np.stack([t, t], 1), "path")])
    path = plotting.save(fig, tmp_path / "sub" / "f.png")
    assert path.exists() and path.stat().st_size > 10_000
    assert list(path.parent.iterdir()) == [path]  # no temp files left


def test_slope_guides_of_curves_on_each_other_are_drawn_once():
    """Two curves of the same order within 5% of each other get one slope guide, a third a
    decade below gets its own, a slope-1 curve its own; the key lists the slopes in order."""
    _, (ax,) = plotting.panels(1)
    hs = np.array([0.02, 0.01, 0.005])
    series = [(hs**2, "a", 2.0), (1.05 * hs**2, "b", 2.0), (0.1 * hs**2, "c", 2.0), (hs, "d", 1.0)]
    plotting.plot_orders(ax, hs, series)
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 3 + 1  # three guides and the legend's key entry
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "slope 1, 2 guides" in texts


# Ranges that collided ("3×10⁻⁴4×10⁻⁴") or showed one label over decades before.
RANGES = [(1.5e-2, 5e-1), (1.8e-3, 1.6e-2), (3e-4, 4.6e-4), (6e-5, 1e-3), (1e-60, 1e4), (2.0, 3.0)]


@pytest.mark.parametrize("lo,hi", RANGES)
@pytest.mark.parametrize("width", [2.2, 4.2])
def test_log_tick_labels_never_collide_and_are_at_least_two(lo, hi, width):
    fig, (ax,) = plotting.panels(1, width=width)
    x = np.geomspace(lo, hi, 5)
    ax.loglog(x, x**2, "o-")
    plotting.finish(fig)
    for axis in (ax.xaxis, ax.yaxis):
        boxes = _labels(fig, axis)
        assert len(boxes) >= 2, (lo, hi, [b for b, _ in boxes])
        for (_, a), (_, b) in itertools.pairwise(boxes):
            assert not a.overlaps(b), (lo, hi)


def test_log_ticks_values():
    assert plotting.log_ticks(1e-3, 1e-1) == pytest.approx([1e-3, 1e-2, 1e-1])
    assert plotting.log_ticks(1.8e-3, 1.6e-2) == pytest.approx([3e-3, 1e-2])
    # Within a decade the ticks reach across the range, not only its left half.
    assert plotting.log_ticks(0.065, 0.16) == pytest.approx([0.07, 0.08, 0.09, 0.1, 0.15])
    assert plotting.log_ticks(1.1e-16, 2.2e-16) == pytest.approx([1.1e-16, 2.2e-16])  # the ends
    assert len(plotting.log_ticks(1e-60, 1e4)) <= 6
    narrow = plotting.log_ticks(3.1e-4, 3.3e-4)
    assert len(narrow) == 2 and 3.1e-4 <= narrow[0] < narrow[1] <= 3.3e-4
    assert plotting._sci(3e-4) == "3×10⁻⁴" and plotting._sci(1e-2) == "10⁻²"


@pytest.mark.parametrize("n", range(1, 8))
def test_panels_fill_every_slot(n):
    fig, axes = plotting.panels(n)
    assert len(axes) == n == len(fig.axes)
    rows = {}
    for ax in axes:
        ss = ax.get_subplotspec()
        rows.setdefault(ss.rowspan.start, []).append(ss.colspan)
    full = max(len(r) for r in rows.values())
    for spans in rows.values():  # every row centred: equal margins left and right
        left, right = spans[0].start, 2 * full - spans[-1].stop
        assert left == right


def test_save_removes_empty_axes(tmp_path):
    fig, axes = plotting.figure(2, 2)
    for ax in axes[:3]:
        ax.plot([0, 1], [0, 1])
    plotting.save(fig, tmp_path / "f.png")
    assert len(fig.axes) == 3


def test_save_writes_the_pixels_savefig_would(tmp_path, monkeypatch):
    """`save` writes the buffer of `finish`'s last draw; a figure changed after it (stale)
    goes through `savefig`: the same pixels, size and resolution either way."""
    from PIL import Image

    def draw():
        fig, axes = plotting.panels(2)
        axes[0].loglog([1e-4, 1e-1], [1e-3, 1.0], "o-", label="a")
        axes[0].legend()
        axes[1].plot([0, 1], [2, 3])
        axes[1].set_title("a title")
        return fig

    fast = plotting.save(draw(), tmp_path / "fast.png", dpi=90)
    finish = plotting.finish

    def finish_then_touch(fig):
        finish(fig)
        fig.stale = True

    monkeypatch.setattr(plotting, "finish", finish_then_touch)
    slow = plotting.save(draw(), tmp_path / "slow.png", dpi=90)
    a, b = Image.open(fast), Image.open(slow)
    assert a.size == b.size == (round(90 * 8.4), round(90 * 3.4))
    assert a.info["dpi"] == pytest.approx(b.info["dpi"])
    assert a.info["dpi"] == pytest.approx((90, 90), abs=0.01)  # PNG stores dots per metre
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_save_compresses_pngs_fast_with_the_same_pixels(tmp_path, monkeypatch):
    """`save` writes PNGs at zlib's fastest level (a third less of the compression's CPU time
    in every `make run`, files ~6% larger), by both of its routes: the pixels are those of the
    default level, which it used to write."""
    import zlib

    from PIL import Image

    def draw():
        fig, (ax,) = plotting.panels(1)
        ax.semilogy([0, 1, 2], [1.0, 1e-2, 1e-5], "o-", label="a")
        ax.legend()
        return fig

    def zlib_level(path) -> int:  # FLEVEL of the first IDAT chunk's zlib header (RFC 1950)
        data = path.read_bytes()
        start = data.index(b"IDAT") + 4
        assert zlib.decompressobj().decompress(data[start : start + 2]) == b""  # a zlib header
        return data[start + 1] >> 6

    fast = plotting.save(draw(), tmp_path / "fast.png")
    finish = plotting.finish

    def finish_then_touch(fig):
        finish(fig)
        fig.stale = True

    monkeypatch.setattr(plotting, "finish", finish_then_touch)
    slow = plotting.save(draw(), tmp_path / "slow.png")
    monkeypatch.undo()
    fig = draw()
    plotting.finish(fig)
    default = tmp_path / "default.png"
    fig.savefig(default, dpi=120)
    assert zlib_level(default) == 2  # (the default level, 6)
    assert zlib_level(fast) == zlib_level(slow) == 0  # the fastest
    pixels = np.asarray(Image.open(default))
    np.testing.assert_array_equal(np.asarray(Image.open(fast)), pixels)
    np.testing.assert_array_equal(np.asarray(Image.open(slow)), pixels)


def test_legend_lists_only_drawn_data(tmp_path):
    fig, (ax,) = plotting.panels(1)
    ax.plot([0, 1], [0, 1], label="drawn")
    ax.plot([], [], label="empty")
    ax.plot([0, 1], [np.nan, np.nan], label="all NaN")
    ax.scatter([], [], label="empty scatter")
    plotting.key_entry(ax, "dashed: reference", "k--")
    ax.legend()
    plotting.save(fig, tmp_path / "f.png")
    shown = [t.get_text() for t in ax.get_legend().get_texts()]
    assert shown == ["drawn", "dashed: reference"]


def test_one_font_size_per_role(tmp_path):
    fig, (ax,) = plotting.panels(1)
    ax.plot([1, 2], [1, 2], label="a")
    ax.set_title("title", fontsize=20)
    ax.set_xlabel("x", fontsize=3)
    ax.legend(fontsize=15)
    plotting.save(fig, tmp_path / "f.png")
    assert ax.title.get_fontsize() == plotting.FONT["title"]
    assert ax.xaxis.label.get_fontsize() == plotting.FONT["label"]
    assert {t.get_fontsize() for t in ax.get_legend().get_texts()} == {plotting.FONT["legend"]}


def test_long_labels_are_wrapped_to_the_panel(tmp_path):
    fig, (ax,) = plotting.panels(1, width=2.5, height=2.0)
    ax.plot([1, 2], [1, 2])
    ax.set_ylabel("a very long y-axis label that is longer than the panel is high, clipped")
    plotting.save(fig, tmp_path / "f.png")
    renderer = fig.canvas.get_renderer()
    assert "\n" in ax.yaxis.label.get_text()
    assert ax.yaxis.label.get_window_extent(renderer).height <= fig.bbox.height


def test_loss_curves_clip_divergence_and_mark_its_time(tmp_path):
    fig, (ax,) = plotting.panels(1)
    t = np.linspace(0, 10, 101)
    blowup = np.where(t < 6, np.exp(10 * t), np.inf)  # 26 decades, then non-finite at t = 6
    plotting.plot_loss_curves(
        ax, [(t, np.exp(-t), "converges"), (t, blowup, "diverges")], diverged_at=[None, 6.0]
    )
    plotting.save(fig, tmp_path / "f.png")
    lo, hi = ax.get_ylim()
    assert np.log10(hi / lo) < 10  # not tens of decades
    marks = [ln for ln in ax.lines if ln.get_marker() == "x" and len(ln.get_xdata())]
    assert [float(m.get_xdata()[0]) for m in marks] == [6.0]


def test_color_norm_uses_the_whole_map():
    norm, cmap = plotting.color_norm(np.array([[-1.0, 0.0], [4.0, np.nan]]))
    assert cmap == "RdBu_r" and norm(-1.0) == 0.0 and norm(4.0) == 1.0 and norm(0.0) == 0.5
    norm, cmap = plotting.color_norm(np.array([0.5, 2.0, 300.0]), clip=10.0)
    assert norm(0.5) == 0.0 and norm(10.0) == 1.0


def test_log_floor_draws_values_below_the_floor_on_the_edge_not_as_data(tmp_path):
    fig, (ax,) = plotting.panels(1)
    line = plotting.plot_log_floor(
        ax, [1, 2, 3, 4], [1e-3, 1e-4, 0.0, 1e-12], floor=1e-9, label="distance"
    )
    ax.legend()
    plotting.save(fig, tmp_path / "f.png")
    assert list(line.get_ydata()) == [1e-3, 1e-4]  # only the values above the floor are data
    assert ax.get_ylim()[0] > 1e-6  # the axis does not reach down to the floor
    edge = [ln for ln in ax.lines if ln is not line]
    assert len(edge) == 1 and list(edge[0].get_xdata()) == [3.0, 4.0]
    shown = [t.get_text() for t in ax.get_legend().get_texts()]
    assert shown == ["distance", "distance: ≤ 1e-09 (bottom edge)"]


def test_errorbars_skip_runs_not_made_and_list_only_drawn_ones():
    _, (ax,) = plotting.panels(1)
    nan = np.full(3, np.nan)
    plotting.plot_errorbars(ax, [1, 2, 3], [1.0, np.nan, 3.0], [0.1, 0.1, np.inf], label="a")
    plotting.plot_errorbars(ax, [1, 2, 3], nan, nan, label="skipped (quick mode)")
    plotting.legend(ax)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a"]
    (line, _, (bars,)) = ax.containers[0].lines
    assert line.get_xdata().tolist() == [1.0] and len(bars.get_segments()) == 1


def test_dress_sets_the_given_properties_a_legend_of_drawn_data_and_a_grid():
    _, axes = plotting.panels(2)
    axes[0].set_xlabel("kept")
    axes[0].plot([1, 2], [3, 4], label="data")
    axes[0].plot([], [], label="undrawn")
    plotting.dress(axes[0], legend=dict(loc="upper left"), grid="both", title="T", ylabel="y")
    assert (axes[0].get_title(), axes[0].get_xlabel(), axes[0].get_ylabel()) == ("T", "kept", "y")
    texts = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert texts == ["data"] and axes[0].get_legend()._loc == 2  # upper left
    assert axes[0].xaxis.get_gridlines()[0].get_visible()
    axes[1].plot([1, 2], [3, 4], label="data")
    plotting.dress(axes[1], legend=False, grid=None, xlabel="x")
    assert axes[1].get_legend() is None and axes[1].get_xlabel() == "x"
    assert not axes[1].xaxis.get_gridlines()[0].get_visible()


def test_a_descheduled_best_legend_placement_is_not_a_warning(tmp_path, monkeypatch):
    # matplotlib warns when `loc="best"` took over 1 s of wall time, which on a loaded machine
    # happens to a 2 ms placement; a clock that jumps 5 s per reading reproduces it.
    import time
    import warnings

    import matplotlib.legend

    readings = []

    class _SlowClock:
        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def perf_counter():
            readings.append(None)
            return 5.0 * len(readings)

    fig, axes = plotting.panels(1)
    axes[0].plot(np.linspace(0, 1, 50), np.linspace(0, 1, 50), label="a")
    plotting.legend(axes[0])
    monkeypatch.setattr(matplotlib.legend, "time", _SlowClock())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plotting.save(fig, tmp_path / "f.png")
    assert readings  # the best-placement search ran on the slow clock
    assert (tmp_path / "f.png").exists()


# --- defects found by probing the helpers --------------------------------------------------


def _legend_texts(ax):
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend is not None else []


def _tick_texts(fig, axis):
    lo, hi = sorted(axis.get_view_interval())
    return [
        t.label1.get_text()
        for t in axis.get_major_ticks()
        if t.label1.get_visible() and t.label1.get_text() and lo <= t.get_loc() <= hi * 1.000001
    ]


def _edge_lines(ax, top: bool):
    """The lines drawn on the top (y = 1) or bottom (y = 0) edge in axes coordinates."""
    edge = ax.get_xaxis_transform()
    return [
        ln
        for ln in ax.lines
        if ln.get_transform() == edge
        and len(ln.get_xdata())
        and np.all(np.asarray(ln.get_ydata()) == (1.0 if top else 0.0))
    ]


def test_plot_orders_takes_the_0d_order_that_compare_returns():
    import jax.numpy as jnp

    _, (ax,) = plotting.panels(1)
    hs = jnp.asarray([0.02, 0.01, 0.005, 0.0025])
    plotting.plot_orders(ax, hs, [(0.3 * hs, "GD", jnp.asarray(1.0369))])  # Comparison.order
    assert _legend_texts(ax) == ["GD (slope 1.04)", "slope 1 guide"]


def test_an_order_is_shown_only_under_the_asymptotic_verdict():
    """`order_series`/`order_text`: a fitted slope reaches the legend (with its guide) or a
    title only where its sweep is asymptotic; any other verdict is named instead."""
    hs = np.array([0.02, 0.01, 0.005, 0.0025])
    _, (ax,) = plotting.panels(1)
    series = [
        plotting.order_series(0.3 * hs, "GD", 1.0369, "asymptotic"),
        plotting.order_series(hs**0.7, "scatter", 0.7, "pre-asymptotic"),
    ]
    assert series[1] == (series[1][0], "scatter (pre-asymptotic)", None)
    plotting.plot_orders(ax, hs, series)
    assert _legend_texts(ax) == ["GD (slope 1.04)", "scatter (pre-asymptotic)", "slope 1 guide"]
    assert plotting.order_text(1.0369, "asymptotic") == "slope 1.04"
    assert plotting.order_text(0.7, "unstable", "fitted slope {:.3f}") == "unstable"
    assert plotting.order_text(0.7, "asymptotic", "fitted slope {:.3f}") == "fitted slope 0.700"


def test_plot_orders_sets_the_panels_title_and_labels():
    """`plot_orders(..., **props)`: `ax.set` once drawn, so given labels replace the defaults."""
    _, (ax,) = plotting.panels(1)
    hs = np.array([0.02, 0.01, 0.005])
    plotting.plot_orders(ax, hs, [(hs, "GD", 1.0)], title="T", xlabel="learning rate η")
    assert (ax.get_title(), ax.get_xlabel()) == ("T", "learning rate η")
    assert ax.get_ylabel() == "max error over [0, t1]"  # the default, not given


@pytest.mark.parametrize(
    "suffix,magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<svg")]
)
def test_save_writes_the_format_its_suffix_names(tmp_path, suffix, magic):
    fig, (ax,) = plotting.panels(1)
    ax.plot([1, 2], [1, 2])
    path = plotting.save(fig, tmp_path / f"f{suffix}")
    assert magic in path.read_bytes()[:400]
    assert list(tmp_path.iterdir()) == [path]  # written atomically, no temporary file left


@pytest.mark.parametrize("name", ["f.xyz", "f"])
def test_save_refuses_a_suffix_naming_no_format(tmp_path, name):
    fig, (ax,) = plotting.panels(1)
    ax.plot([1, 2], [1, 2])
    with pytest.raises(ValueError, match="suffix naming the file format"):
        plotting.save(fig, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_tick_labels_of_a_narrow_log_range_are_distinct():
    """Errors saturated at a reference tolerance: ticks 1.28e-6 and 1.31e-6 were both labelled
    1.3×10⁻⁶; the labels get the digits that tell them apart."""
    fig, axes = plotting.panels(2)
    hs = np.array([0.1, 0.05, 0.025, 0.0125])
    saturated = [1.3135e-6, 1.29e-6, 1.28e-6, 1.2712e-6]
    plotting.plot_orders(axes[0], hs, [(saturated, "GD", 0.02)])
    axes[1].loglog([1.0, 2.0], [5e-5, 5.0001e-5], "o")
    plotting.finish(fig)
    for ax in axes:
        labels = _tick_texts(fig, ax.yaxis)
        assert len(labels) >= 2 and len(set(labels)) == len(labels), labels
    assert plotting._sci(1.28e-6, digits=3) == "1.28×10⁻⁶"


def test_ticks_set_by_the_caller_on_a_log_axis_are_labelled_and_thinned():
    fig, axes = plotting.panels(2)
    x = np.arange(1, 10) * 1e-4
    for ax in axes:
        ax.loglog(x, x**2, "o-")
    axes[0].set_xticks(x)
    axes[1].set_xticks(x[::4], ["one", "five", "nine"])  # the caller's labels stay
    plotting.finish(fig)
    labels = _tick_texts(fig, axes[0].xaxis)
    assert len(labels) >= 2 and "10⁻⁴" in labels and "5×10⁻⁴" in labels
    boxes = _labels(fig, axes[0].xaxis)
    assert not any(a.overlaps(b) for (_, a), (_, b) in itertools.pairwise(boxes))
    assert _tick_texts(fig, axes[1].xaxis) == ["one", "five", "nine"]


@pytest.mark.filterwarnings("ignore:Data has no positive values")
def test_legend_drops_data_a_log_axis_cannot_show(tmp_path):
    fig, axes = plotting.panels(2)
    t = np.linspace(0, 1, 20)
    plotting.plot_rate_check(axes[0], t, -np.exp(-t), -np.exp(-t), label="dL/dt")
    axes[0].set_yscale("log")  # the rates are negative: nothing to show
    axes[0].plot(t, np.exp(-t), label="shown")
    plotting.dress(axes[0])
    assert _legend_texts(axes[0]) == ["shown"]
    axes[1].plot(t + 1, np.exp(-t), label="positive")
    axes[1].plot(t + 1, -np.exp(-t), label="negative")
    axes[1].legend()
    axes[1].set_yscale("log")  # after the legend: `save` prunes it
    plotting.save(fig, tmp_path / "f.png")
    assert _legend_texts(axes[1]) == ["positive"]
    with pytest.raises(ValueError, match="step_sizes must be positive"):
        plotting.plot_orders(axes[1], -np.array([0.1, 0.05]), [([1.0, 0.5], "neg h", 1.0)])


def test_a_drawn_curve_keeps_its_entry_when_an_undrawn_one_has_its_label(tmp_path):
    fig, axes = plotting.panels(2)
    axes[0].plot([0, 1], [0, 1], label="a")
    axes[0].plot([0, 1], [np.nan, np.nan], label="a")
    axes[0].legend()
    t = np.linspace(0, 5, 51)
    curves = [
        (t, np.exp(-t), "GD"),
        (t, np.exp(-2 * t), "SGD"),
        (t, np.full_like(t, np.inf), "SGD"),
    ]
    plotting.plot_loss_curves(axes[1], curves)
    plotting.dress(axes[1])
    plotting.save(fig, tmp_path / "f.png")
    assert _legend_texts(axes[0]) == ["a"]
    assert _legend_texts(axes[1]) == ["GD", "SGD"]


def test_order_plots_mark_errors_a_log_axis_cannot_show_on_its_edges():
    """NaN and inf: crosses on the top edge with a key entry; 0 and below: open markers on the
    bottom edge with their own entry; an all-NaN series is named by its crosses."""
    _, axes = plotting.panels(2)
    hs = np.array([0.1, 0.05, 0.025, 0.0125])
    bad = np.array([np.inf, np.nan, 0.0, 1e-3])
    plotting.plot_orders(axes[0], hs, [(bad, "bad", 1.0), (hs**2, "ok", 2.0)])
    (top,) = _edge_lines(axes[0], top=True)
    assert top.get_xdata().tolist() == [0.1, 0.05] and top.get_marker() == "x"
    (bottom,) = _edge_lines(axes[0], top=False)
    assert bottom.get_xdata().tolist() == [0.025] and bottom.get_markerfacecolor() == "none"
    assert top.get_color() == bottom.get_color() == axes[0].lines[0].get_color()
    texts = _legend_texts(axes[0])
    assert "bad: exactly 0 (bottom edge)" in texts and plotting.DIVERGED in texts
    plotting.plot_orders(axes[1], hs, [(np.full(4, np.nan), "all NaN", None)])
    (top,) = _edge_lines(axes[1], top=True)
    assert top.get_xdata().tolist() == hs.tolist()
    assert _legend_texts(axes[1]) == ["all NaN", plotting.DIVERGED]
    assert not [c for c in axes[1].collections if len(c.get_offsets())]  # nothing mid-panel


def test_loss_curves_check_diverged_at_and_name_every_run(tmp_path):
    import jax.numpy as jnp

    t = np.linspace(0, 10, 101)
    curves = [(t, np.exp(-t), "stable"), (t, np.where(t < 6, np.exp(t), np.inf), "unstable")]
    _, (ax,) = plotting.panels(1)
    with pytest.raises(ValueError, match="diverged_at has 1 entries for 2 curves"):
        plotting.plot_loss_curves(ax, curves, diverged_at=[None])
    with pytest.raises(ValueError, match="step index"):  # Trajectory.diverged_at, a step
        plotting.plot_loss_curves(ax, curves, diverged_at=[None, jnp.asarray(60)])
    with pytest.raises(ValueError, match="outside curve 1's times"):
        plotting.plot_loss_curves(ax, curves, diverged_at=[None, 60.0])
    fig, (ax,) = plotting.panels(1)
    inf = (t, np.full_like(t, np.inf), "inf from the start")
    plotting.plot_loss_curves(ax, [*curves, inf], diverged_at=[jnp.asarray(-1), 6.0, 0.0])
    plotting.dress(ax)
    plotting.save(fig, tmp_path / "f.png")
    assert len(ax.lines[0].get_xdata()) == 101  # −1: not diverged, drawn in full
    crosses = _edge_lines(ax, top=True)
    assert [float(c.get_xdata()[0]) for c in crosses] == [6.0, 0.0]
    assert _legend_texts(ax) == ["stable", "unstable", "inf from the start", "divergence"]


def test_loss_curves_mark_nonpositive_losses_and_name_curves_with_nothing_to_draw(tmp_path):
    fig, axes = plotting.panels(2)
    t = np.linspace(0, 10, 101)
    plotting.plot_loss_curves(axes[0], [(t, np.exp(-t) - 0.5, "shifted")])
    plotting.dress(axes[0])
    (bottom,) = _edge_lines(axes[0], top=False)
    assert np.all(bottom.get_xdata() > 0.69) and len(bottom.get_xdata()) == np.sum(t > np.log(2))
    assert _legend_texts(axes[0]) == ["shifted", "shifted: ≤ 0 (bottom edge)"]
    plotting.plot_loss_curves(axes[1], [(t, 1e25 * np.exp(-t), "above clip")])
    plotting.save(fig, tmp_path / "f.png")
    assert [x.get_text() for x in axes[1].texts] == ["above clip: no loss in (0, 1e+20] to draw"]


def test_contours_ignore_nonfinite_values_and_take_any_sign_or_a_constant():
    x = np.linspace(-1, 1, 11)
    bowl = x[None, :] ** 2 + x[:, None] ** 2
    cases = {"nan": np.where(bowl > 1.9, np.nan, bowl), "negative": bowl - 5.0}
    cases["inf"] = np.where(bowl > 1.9, np.inf, bowl)
    for name, grid in cases.items():
        _, (ax,) = plotting.panels(1)
        plotting.plot_contour_paths(ax, grid, x, x, [(np.stack([x, x], 1), "path")])
        (contours,) = [c for c in ax.collections if hasattr(c, "levels")]
        levels = np.asarray(contours.levels)
        assert np.all(np.isfinite(levels)) and len(levels) == 20, name
        assert levels[0] == pytest.approx(np.nanmin(grid) + 1e-3), name
        assert any(len(p.vertices) for p in contours.get_paths()), name
    for grid in (np.zeros((11, 11)), np.full((11, 11), 3.0)):
        _, (ax,) = plotting.panels(1)
        plotting.plot_contour_paths(ax, grid, x, x, [(np.stack([x, x], 1), "path")])
        assert not ax.collections and len(ax.lines) == 1


def test_save_reseats_panels_around_an_empty_one():
    fig, axes = plotting.panels(5)
    for i, ax in enumerate(axes):
        if i != 2:
            ax.plot([0, 1], [i, i + 1])
    plotting.finish(fig)
    assert len(fig.axes) == 4
    rows = {}
    for ax in fig.axes:
        spec = ax.get_subplotspec()
        rows.setdefault(spec.rowspan.start, []).append(spec.colspan)
        ncols = spec.get_gridspec().get_geometry()[1]
    assert len(rows) == 2  # 2 × 2, every row full
    for spans in rows.values():
        assert sorted(c.start for c in spans) == list(range(0, ncols, 2))


def test_titles_with_mathtext_are_wrapped_outside_the_dollar_signs(tmp_path):
    fig, (ax,) = plotting.panels(1, width=3.0)
    ax.plot([1, 2], [1, 2])
    ax.set_title(r"the step size $h \cdot \lambda_{max}$ against a long title that goes on and on")
    plotting.save(fig, tmp_path / "f.png")
    lines = ax.get_title().split("\n")
    assert len(lines) >= 2 and all(line.count("$") % 2 == 0 for line in lines)
    renderer = fig.canvas.get_renderer()
    assert ax.title.get_window_extent(renderer).width <= fig.bbox.width


def test_bar_pairs_limits_respect_the_sign_nan_and_a_log_axis(tmp_path):
    fig, axes = plotting.panels(3)
    plotting.plot_bar_pairs(axes[0], ["a", "b"], [-1.0, -2.0], [-1.1, -2.1], labels=("p", "m"))
    plotting.plot_bar_pairs(
        axes[1], ["a", "b", "c"], [1, 2, 3], [1.1, 2.1, np.nan], labels=("p", "m")
    )
    plotting.plot_bar_pairs(axes[2], ["a", "b"], [1e-6, 2.0], [1e-6, 2.1], labels=("p", "m"))
    axes[2].set_yscale("log")
    plotting.save(fig, tmp_path / "f.png")
    lo, hi = axes[0].get_ylim()
    assert lo < -2.1 and hi == 0.0  # not inverted, every bar inside
    assert axes[1].get_ylim() == pytest.approx((0.0, 1.35 * 3.0))
    lo, hi = axes[2].get_ylim()
    assert lo < 1e-6 and hi > 2.1 and len(_tick_texts(fig, axes[2].yaxis)) >= 2


def _density_log(ax):
    plotting.plot_density_map(ax, [0, 1], [0, 1], -np.ones((2, 2)), label="v", log=True)


def _contour_1d_path(ax):
    plotting.plot_contour_paths(ax, np.ones((2, 2)), [0, 1], [0, 1], [([0, 1], "p")])


def _contour_transposed(ax):
    plotting.plot_contour_paths(ax, np.ones((3, 2)), [0, 1], [0, 1], [])


@pytest.mark.parametrize(
    "draw,match",
    [
        (lambda ax: plotting.plot_orders(ax, [0.1, 0.05], [([1.0], "e", 1.0)]), "one error per"),
        (lambda ax: plotting.plot_loss_curves(ax, [([0, 1], [1.0], "a")]), r"curves\[0\]"),
        (lambda ax: plotting.plot_phase_portrait(ax, [(np.full((3, 2), np.nan), "p")]), "finite"),
        (_contour_1d_path, r"paths\[0\].*\(n, 2\)"),
        (_contour_transposed, "loss_grid"),
        (_density_log, "positive"),
        (lambda ax: plotting.panels(3, ncols=0), "ncols"),
        (lambda ax: plotting.panels(2.5), "integer n >= 1"),
        (lambda ax: plotting.panels(None), "integer n >= 1"),
        (lambda ax: plotting.loss_on_grid(lambda p: p, [0.0, 1.0], [2.0]), "scalar"),
    ],
)  # fmt: skip
def test_wrong_inputs_raise_value_errors_naming_the_argument(draw, match):
    _, (ax,) = plotting.panels(1)
    with pytest.raises(ValueError, match=match):
        draw(ax)


def test_one_step_size_gets_no_slope_guide(tmp_path):
    fig, (ax,) = plotting.panels(1)
    plotting.plot_orders(ax, [0.01], [([1e-3], "one", 1.0)])
    plotting.save(fig, tmp_path / "f.png")
    assert _legend_texts(ax) == ["one (slope 1.00)"]
    assert not [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    lo, hi = ax.get_ylim()
    assert lo < 1e-3 / 2 and hi > 2e-3  # the point is inside, not on the edge


def test_log_floor_names_negative_values_and_marks_infinity():
    _, (ax,) = plotting.panels(1)
    y = np.array([1e-2, 1e-4, 0.0, np.nan, np.inf, -1e-3])
    plotting.plot_log_floor(ax, np.arange(6.0), y, label="d")
    plotting.legend(ax)
    assert _legend_texts(ax) == ["d", "d: ≤ 0 (bottom edge)", "d: +∞ (top edge)"]
    (top,) = _edge_lines(ax, top=True)
    assert top.get_xdata().tolist() == [4.0]


def test_slope_guide_anchors_at_the_smallest_step_with_a_finite_error():
    _, (ax,) = plotting.panels(1)
    hs = np.array([0.1, 0.05, 0.025, 0.0125])
    plotting.plot_orders(ax, hs, [(np.array([1e-1, 5e-2, 2.5e-2, np.nan]), "x", 1.0)])
    (guide,) = [ln for ln in ax.lines if ln.get_linestyle() == "--" and len(ln.get_xdata())]
    # a factor 2 below the point at h = 0.025
    np.testing.assert_allclose(np.interp(0.025, guide.get_xdata(), guide.get_ydata()), 1.25e-2)
    assert "slope 1 guide" in _legend_texts(ax)


# --- odd data (session 35's probe): a panel shows what it has, or says it has nothing ---------


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_a_loss_curve_of_one_point_is_drawn_as_a_marker(tmp_path):
    # Before: a line through one point, which draws nothing: a blank panel.
    fig, (ax,) = plotting.panels(1)
    plotting.plot_loss_curves(ax, [([0.0], [1.0], "one step")])
    plotting.save(fig, tmp_path / "f.png")
    (line,) = [ln for ln in ax.lines if ln.get_label() == "one step"]
    assert line.get_marker() == "o" and len(line.get_xdata()) == 1


def test_distances_with_nothing_to_draw_are_named_in_the_panel(tmp_path):
    # Before: an all-zero (or all-NaN) curve left a blank panel on invented axes, unexplained.
    fig, (ax,) = plotting.panels(1)
    t = np.arange(3.0)
    plotting.plot_distances(
        ax, [(t, np.zeros((3, 2)), "at rest"), (t, np.full((3, 2), np.nan), "lost"),
             ([0.0], np.ones((1, 2)), "one point")],
    )  # fmt: skip
    plotting.save(fig, tmp_path / "f.png")
    assert _texts(ax) == [
        "at rest: exactly 0, nothing to draw",
        "lost: no finite value, nothing to draw",
    ]
    (one,) = [ln for ln in ax.lines if ln.get_label() == "one point"]
    assert one.get_marker() == "o"


def test_rate_check_and_predicted_vs_measured_name_what_has_no_finite_value(tmp_path):
    # Before: both panels blank, axes at ±0.05 around nothing.
    fig, axes = plotting.panels(2)
    t = np.arange(3.0)
    plotting.plot_rate_check(axes[0], t, [np.nan] * 3, -t, label="-dL/dt")
    plotting.plot_predicted_vs_measured(axes[1], [([np.nan], [1.0], "runs")])
    plotting.save(fig, tmp_path / "f.png")
    assert _texts(axes[0]) == ["-dL/dt: measured: no finite value to draw"]
    assert _texts(axes[1]) == ["runs: no finite (predicted, measured) pair to draw"]


def test_power_law_draws_its_reference_through_the_first_point_it_can_show(tmp_path):
    # Before: a NaN first measurement made the whole reference line NaN (not drawn, and its
    # legend entry dropped); no positive value at all gave a blank panel and a warning.
    fig, (ax,) = plotting.panels(1)
    plotting.plot_power_law(ax, [1, 2, 4], [np.nan, 2.0, 1.0], slope=-1.0, label="m",
                            reference="1/κ")  # fmt: skip
    plotting.legend(ax)
    plotting.save(fig, tmp_path / "f.png")
    ref = next(ln for ln in ax.lines if ln.get_label() == "1/κ")
    np.testing.assert_allclose(ref.get_ydata(), [2.0, 1.0], rtol=1e-15)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["m", "1/κ"]
    fig, (ax,) = plotting.panels(1)
    with pytest.raises(ValueError, match="no point with positive, finite x and y"):
        plotting.plot_power_law(ax, [1, 2], [-1.0, -2.0], slope=-1.0, label="m", reference="r")


def test_bar_labels_never_print_a_nonzero_value_as_zero(tmp_path):
    # Before: the default ".4f" labelled a measured 3e-6 as 0.0000 (and -2e-7 as -0.0000).
    fig, (ax,) = plotting.panels(1)
    plotting.plot_bar_pairs(ax, ["a", "b", "c", "d"], [1, 1, 1, 1], [3e-6, -2e-7, 1.997, 0.0],
                            labels=("predicted", "measured"))  # fmt: skip
    plotting.save(fig, tmp_path / "f.png")
    assert [t.get_text() for t in ax.texts] == ["3e-06", "-2e-07", "1.9970", "0.0000"]


def test_a_huge_finite_error_is_a_divergence_not_dozens_of_empty_decades(tmp_path):
    # Before: an unstable step size's error of 1e150 was drawn, and the y-axis spanned ~155
    # decades with the asymptotic errors squeezed into its bottom few.
    fig, (ax,) = plotting.panels(1)
    h = np.array([0.4, 0.2, 0.1, 0.05])
    plotting.plot_orders(ax, h, [(np.array([1e150, 4e-3, 1e-3, 2.5e-4]), "GD", 2.0)])
    plotting.save(fig, tmp_path / "f.png")
    lo, hi = ax.get_ylim()
    assert np.log10(hi / lo) < 6
    assert plotting.DIVERGED in [t.get_text() for t in ax.get_legend().get_texts()]
    (cross,) = [ln for ln in ax.lines if ln.get_marker() == "x" and len(ln.get_xdata())]
    assert list(cross.get_xdata()) == [0.4]


def test_a_path_that_never_moves_is_drawn_as_a_marker(tmp_path):
    # Before: a run started at the minimum (every iterate equal) drew a line of length 0:
    # nothing, though the legend named it.
    fig, (ax,) = plotting.panels(1)
    x = np.linspace(-1, 1, 11)
    grid = x[None, :] ** 2 + x[:, None] ** 2
    plotting.plot_contour_paths(ax, grid, x, x, [(np.zeros((5, 2)), "at the minimum")])
    plotting.legend(ax)
    plotting.save(fig, tmp_path / "f.png")
    (line,) = [ln for ln in ax.lines if ln.get_label() == "at the minimum"]
    assert line.get_marker() == "o"


def test_bar_pairs_mark_a_value_that_is_not_finite_instead_of_printing_it(tmp_path):
    # Before: an infinite value got no visible bar, its label "inf" was placed at infinity
    # (matplotlib warned of invalid values), and a NaN left an empty slot that read as zero.
    fig, (ax,) = plotting.panels(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (no "invalid value encountered")
        plotting.plot_bar_pairs(ax, ["a", "b", "c"], [1.0, np.nan, 2.0], [np.inf, np.nan, 1.5],
                                labels=("predicted", "measured"))  # fmt: skip
        plotting.legend(ax)
        plotting.save(fig, tmp_path / "f.png")
    assert [t.get_text() for t in ax.texts] == ["", "", "1.5000"]
    crosses = [line for line in ax.lines if line.get_marker() == "x" and len(line.get_xdata())]
    xs = sorted(x for line in crosses for x in line.get_xdata())
    assert xs == pytest.approx([0.2, 1 - 0.2, 1 + 0.2])  # (the bars' places)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "not finite (no bar)" in legend and "measured" in legend
