"""rnn_ode's wall times: a quick run calls each fit once, so its times are mostly XLA's
compilation; a ratio of two of them (route (b) over route (a)) says nothing about the routes
and is neither saved as the steady-state ratio nor printed on the figure."""

import types

import matplotlib
import numpy as np

from experiments import rnn_ode


matplotlib.use("Agg")


def test_a_single_timed_call_has_no_steady_state_time():
    """Before: `_timed(fn, twice=False)` returned the first call's time (compilation included)
    as the steady-state time too, saved as `route_a.wall_time_s` and divided into
    `wall_time_ratio_b_over_a` (6.5 in a quick run: compile times, not fit times)."""
    calls = []
    _, first, steady = rnn_ode._timed(lambda: calls.append(1) or np.zeros(2), twice=False)
    assert len(calls) == 1 and first > 0 and steady is None
    _, first, steady = rnn_ode._timed(lambda: calls.append(1) or np.zeros(2), twice=True)
    assert len(calls) == 3 and first > 0 and steady is not None and steady > 0


def _inverse(time_twice: bool, ratio):
    its = np.arange(0, 100, 10)
    route = dict(final_loss=0.5, warm_start_loss=3.0, lm_iterations=7)
    curve = np.ones((5, 2))
    return types.SimpleNamespace(
        inverse=types.SimpleNamespace(
            route_a=route, route_b=route, time_twice=time_twice,
            wall_time_ratio_b_over_a=ratio, loss_a_iter=its, loss_a=1.0 + its,
            loss_warm_iter=its, loss_warm=2.0 + its, curve_a_ts=np.arange(5.0), curve_a=curve,
            curve_b_ts=np.arange(5.0), curve_b=curve,
        )
    )  # fmt: skip


def test_the_inverse_figure_shows_a_wall_time_ratio_only_of_steady_state_times():
    """Before: a quick result's figure was titled "fits; wall time (b)/(a) = 6.5 (incl.
    compilation)"; a quick result saved before the fix (time_twice false, a ratio saved) is
    redrawn without it too."""
    import matplotlib.pyplot as plt

    cases = ((False, 6.524, False), (False, None, False), (True, 2.31, True))
    for time_twice, ratio, shown in cases:
        fig = rnn_ode.draw_inverse(_inverse(time_twice, ratio))
        title = fig.axes[0].get_title()
        plt.close(fig)
        assert ("wall time" in title) == shown, title
        assert "6.5" not in title and ("2.3" in title) == shown, title
