"""Progress output (`dynopt.show_progress`): off by default, tqdm bars for `run` (fed from inside
the compiled scan) and `solve` (diffrax's meter) when on, and the same numbers either way."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tqdm.auto

import dynopt
from dynopt import flows, problems

from .helpers import run_on_host_devices


def test_progress_is_off_by_default_and_on_inside_show_progress(capsys, monkeypatch):
    # What the bars receive, recorded: what they print is throttled by time (`mininterval`), so
    # whether "50/200" is ever drawn depends on the machine's speed.
    updates: dict[str, list[int]] = {}

    class Recording(tqdm.auto.tqdm):
        def update(self, n=1):
            updates.setdefault(self.desc, []).append(int(n))
            return super().update(n)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    problem = problems.quadratic(jnp.array([0.5, 2.0]))
    disc = flows.GradientFlow().discretize(0.01)
    quiet = dynopt.run(disc, problem, 200, every=50)
    assert capsys.readouterr().err == ""
    with dynopt.show_progress():
        shown = dynopt.run(disc, problem, 200, every=50)
        raw = dynopt.run(optax.sgd(0.01), problem, 200, every=50)
        sol = dynopt.solve(flows.GradientFlow(), problem, jnp.array([0.5, 1.0]))
    err = capsys.readouterr().err
    assert "run" in err and "/200" in err
    # fed by the scan's callbacks, block by block: two runs of four blocks of 50 steps
    assert updates.get("run") == [50] * 8, updates
    assert "100.00%" in err  # diffrax's meter
    np.testing.assert_array_equal(np.asarray(quiet.params), np.asarray(shown.params))
    np.testing.assert_array_equal(np.asarray(raw.params), np.asarray(shown.params))
    assert np.all(np.isfinite(np.asarray(sol.params)))
    again = dynopt.run(disc, problem, 200, every=50)  # off again: the program without callbacks
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(np.asarray(quiet.params), np.asarray(again.params))


def test_a_sweep_bar_counts_the_steps_of_every_run_to_its_total(monkeypatch):
    """A sweep's bar had no total (no percentage, no time left) and counted in units that
    depended on how the sweep ran: the lockstep steps of a vmapped batch (200 for 3 runs of
    200), those of each chunk in turn (400), of each run in turn (600). Now every bar counts
    the steps of every run it executes, chunk padding included, up to its total."""
    bars: list = []

    class Recording(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.ticks: list[int] = []
            bars.append(self)

        def update(self, n=1):
            self.ticks.append(int(n))
            return super().update(n)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    problem = problems.quadratic(jnp.array([0.5, 2.0]))
    sweep = flows.GradientFlow().discretize(jnp.array([0.01, 0.02, 0.03]))
    keys = jax.random.split(jax.random.key(0), 2)
    sgd = problems.linear_regression(32, 2, batch_size=4)
    with dynopt.show_progress():
        dynopt.run(flows.GradientFlow().discretize(0.01), problem, 200, every=50)
        dynopt.run(sweep, problem, 200, every=50)
        dynopt.run(sweep, problem, 200, every=50, batch_size=2)  # 2 chunks of 2: 4 runs
        dynopt.run(sweep, problem, 200, every=50, batch_size=1)
        dynopt.run(sweep, sgd, 200, every=50, key=keys)
        dynopt.run(optax.sgd(0.01), sgd, 200, every=100, key=keys)
    seen = [(bar.desc, bar.total, bar.ticks) for bar in bars]
    assert seen == [
        ("run", 200, [50] * 4),
        ("run (3 runs)", 600, [150] * 4),
        ("run (3 runs)", 800, [100] * 8),
        ("run (3 runs)", 600, [50] * 12),
        ("run (6 runs)", 1200, [300] * 4),
        ("run (2 runs)", 400, [200] * 2),
    ]


SHARDED = """
import json
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import tqdm.auto
import dynopt
from dynopt import flows, problems

bars = []

class Recording(tqdm.auto.tqdm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ticks = []
        bars.append(self)

    def update(self, n=1):
        self.ticks.append(int(n))
        return super().update(n)

tqdm.auto.tqdm = Recording
problem = problems.quadratic(jnp.array([0.5, 2.0]))
sweep = flows.GradientFlow().discretize(jnp.linspace(0.01, 0.05, 5))
with dynopt.show_progress():
    dynopt.run(sweep, problem, 200, every=100)
    dynopt.run(sweep, problem, 200, every=100, batch_size=1)
print(json.dumps([[bar.desc, bar.total, sum(bar.ticks)] for bar in bars]))
"""


def test_a_sharded_sweep_bar_reaches_its_total():
    """4 devices, 5 runs: padded to 8 (2 per device), each device's blocks tick its 2 runs."""
    seen = run_on_host_devices(SHARDED)
    assert seen == [["run (5 runs)", 1600, 1600], ["run (5 runs)", 1600, 1600]]


def test_show_progress_takes_a_bool_only():
    for bad in (3, "no", None):
        with pytest.raises(ValueError, match="on must be True or False"):
            with dynopt.show_progress(bad):
                pass
    with dynopt.show_progress(np.bool_(True)):
        assert dynopt._progress.enabled()
