import numpy as np

from dynopt import plotting


def test_plotting_functions_write_pngs(tmp_path):
    fig, axes = plotting.figure(2, 2)
    hs = np.array([0.1, 0.05, 0.025])
    plotting.plot_error_vs_step_size(
        axes[0], hs, np.array([np.inf, 0.05, 0.025]), label="e", order=1.0
    )
    plotting.plot_slope_guide(axes[0], hs, 0.1, 1.0)
    t = np.linspace(0, 1, 20)
    plotting.plot_loss_curves(
        axes[1], [(t, np.exp(-t), "a"), (t, np.exp(40 * t), "b")], diverged_at=[None, 10]
    )
    plotting.plot_rate_check(axes[2], t, -np.exp(-t), -np.exp(-t), label="dL/dt")
    x = np.linspace(-1, 1, 11)
    grid = x[None, :] ** 2 + x[:, None] ** 2 + 0.01
    plotting.plot_contour_paths(axes[3], grid, x, x, [(np.stack([t, t], 1), "path")])
    path = plotting.save(fig, tmp_path / "sub" / "f.png")
    assert path.exists() and path.stat().st_size > 10_000
    assert list(path.parent.iterdir()) == [path]  # no temp files left
