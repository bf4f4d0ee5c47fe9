"""gan_dynamics' 8-Gaussian figure: the modes covered are a whole number out of 8."""

import types

import matplotlib
import numpy as np

from experiments import gan_dynamics


matplotlib.use("Agg")


def test_modes_covered_has_whole_number_ticks_over_zero_to_eight():
    """Before: a quick run covering 0 or 1 mode drew ticks 0.0, 0.2, ..., 1.0 "modes covered
    (of 8)" (fractions of a mode), its axis ending at 1 of 8."""
    import matplotlib.pyplot as plt

    steps = np.arange(0, 201, 40)
    run = types.SimpleNamespace(steps=steps, sliced_w1=np.linspace(0.9, 0.4, 6),
                                covered=np.array([0, 0, 0, 1, 0, 0]))  # fmt: skip
    fig = gan_dynamics.draw_mixture_curves(types.SimpleNamespace(mixture={"alternating": run}))
    ax = fig.axes[1]
    low, high = ax.get_ylim()
    ticks = [t for t in ax.get_yticks() if low <= t <= high]
    plt.close(fig)
    assert low <= 0 and high >= 8, (low, high)
    assert ticks == list(range(9)), ticks
