"""dynopt.plotting's helpers for the run cards gan_dynamics..gd_flow, on small fixtures."""

import jax
import numpy as np
import pytest

from dynopt import plotting

from .helpers import count_backend_compiles


def test_dress_sets_properties_lists_drawn_data_and_grids():
    _fig, (ax,) = plotting.panels(1)
    ax.plot([1, 2], [3, 4], label="drawn")
    ax.plot([], [], label="not drawn")
    assert plotting.dress(ax, title="T", xlabel="x", xlim=(0, 5), grid="both") is ax
    assert (ax.get_title(), ax.get_xlabel(), ax.get_xlim()) == ("T", "x", (0.0, 5.0))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["drawn"]
    assert ax.xaxis.get_gridlines()[0].get_visible()
    assert ax.xaxis._minor_tick_kw.get("gridOn")  # grid="both": minor ticks too


def test_dress_legend_options_and_no_grid():
    _fig, axes = plotting.panels(2)
    for ax in axes:
        ax.plot([1, 2], [3, 4], label="a")
    plotting.dress(axes[0], legend=dict(loc="lower left"), grid=None)
    plotting.dress(axes[1], legend=False)
    assert axes[0].get_legend()._loc == 3  # lower left
    assert not axes[0].xaxis.get_gridlines()[0].get_visible()
    assert axes[1].get_legend() is None


def test_power_law_reference_goes_through_the_first_point_with_the_slope():
    _fig, (ax,) = plotting.panels(1)
    x = np.array([10.0, 100.0, 1000.0])
    plotting.plot_power_law(ax, x, 3.0 / x, slope=-1.0, label="m", reference="slope -1")
    measured, reference = ax.get_lines()
    np.testing.assert_allclose(reference.get_ydata(), [3.0 / 10, 3.0 / 100, 3.0 / 1000])
    assert (measured.get_label(), reference.get_label()) == ("m", "slope -1")
    assert ax.get_xscale() == ax.get_yscale() == "log"


def test_bar_pairs_label_the_second_series_and_leave_headroom(tmp_path):
    fig, (ax,) = plotting.panels(1)
    plotting.plot_bar_pairs(ax, ["a", "b"], [1.0, 2.0], [1.5, 1.0], labels=("p", "m"))
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["1.0000", "1.5000"]
    assert ax.get_ylim() == pytest.approx((0.0, 1.35 * 2.0))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert plotting.save(fig, tmp_path / "bars.png").stat().st_size > 5_000


def test_loss_on_grid_layout_is_rows_y_columns_x():
    xs, ys = np.array([0.0, 1.0, 2.0]), np.array([-1.0, 1.0])
    out = plotting.loss_on_grid(lambda p: p[0] + 10.0 * p[1], xs, ys)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, xs[None, :] + 10.0 * ys[:, None])


def test_loss_on_grid_compiles_one_program():
    """The grid is built on the host: only the vmapped loss is compiled (eagerly, the
    conversion, the meshgrid's broadcasts and the stack were four programs more)."""
    jax.clear_caches()  # the grid's shapes compiled by an earlier test would hide a program
    xs, ys = np.linspace(-1.0, 1.0, 7), np.linspace(0.0, 2.0, 5)
    count, out = count_backend_compiles(plotting.loss_on_grid, lambda p: p[0] * p[1], xs, ys)
    assert count == 1
    np.testing.assert_array_equal(out, xs[None, :] * ys[:, None])


# --- helpers for h4 ---


def test_plot_distances_draws_norms_on_a_log_axis_with_zeros_as_gaps():
    _fig, (ax,) = plotting.panels(1)
    t = np.arange(3.0)
    x = np.array([[3.0, 4.0], [0.0, 0.0], [0.6, 0.8]])
    out = plotting.plot_distances(ax, [(t, x, "a"), (t, 2 * x, "b", dict(ls="--"))], title="T")
    assert out is ax and ax.get_yscale() == "log" and ax.get_title() == "T"
    (a, b) = ax.get_lines()
    np.testing.assert_array_equal(a.get_ydata(), [5.0, np.nan, 1.0])
    assert b.get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    assert ax.yaxis._major_tick_kw.get("gridOn")


# --- helpers for h5 ---


def test_characteristics_with_events_draws_every_curve_and_only_the_finite_events():
    _fig, (ax,) = plotting.panels(1)
    x = np.array([[0.0, 1.0, 2.0], [0.0, -1.0, np.nan], [1.0, 1.0, 1.0]])
    t = np.tile([0.0, 0.5, 1.0], (3, 1))
    plotting.plot_characteristics_with_events(
        ax, x, t, 0.0, np.array([0.7, np.inf, np.nan]), label="events", every=2, ms=4
    )
    *curves, events = ax.get_lines()
    assert [c.get_xdata().tolist() for c in curves] == [[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]
    assert events.get_xdata().tolist() == [0.0] and events.get_ydata().tolist() == [0.7]
    assert events.get_marker() == "x" and events.get_markersize() == 4
    assert events.get_label() == "events"
