"""Progress output (`dynopt.show_progress`): off by default, tqdm bars for `run` (fed from inside
the compiled scan) and `solve` (diffrax's meter) when on, and the same numbers either way."""

import jax.numpy as jnp
import numpy as np
import optax
import tqdm.auto

import dynopt
from dynopt import flows, problems


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
