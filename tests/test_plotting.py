"""dynopt.plotting on small fixtures: the figure rules that `save` enforces."""

import itertools

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
