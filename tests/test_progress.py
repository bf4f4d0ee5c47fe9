"""Progress output (`dynopt.show_progress`): off by default, tqdm bars for `run` (fed from inside
the compiled scan) and `solve` (diffrax's meter) when on, and the same numbers either way."""

import jax.numpy as jnp
import numpy as np
import optax

import dynopt
from dynopt import flows, problems


def test_progress_is_off_by_default_and_on_inside_show_progress(capsys):
    problem = problems.quadratic(jnp.array([0.5, 2.0]))
    disc = flows.GradientFlow().discretize(0.01)
    quiet = dynopt.run(disc, problem, 200, every=50)
    assert capsys.readouterr().err == ""
    with dynopt.show_progress():
        shown = dynopt.run(disc, problem, 200, every=50)
        raw = dynopt.run(optax.sgd(0.01), problem, 200, every=50)
        sol = dynopt.solve(flows.GradientFlow(), problem, jnp.array([0.5, 1.0]))
    err = capsys.readouterr().err
    assert "run:" in err and "50/200" in err  # fed by the scan's callbacks, block by block
    assert "100.00%" in err  # diffrax's meter
    np.testing.assert_array_equal(np.asarray(quiet.params), np.asarray(shown.params))
    np.testing.assert_array_equal(np.asarray(raw.params), np.asarray(shown.params))
    assert np.all(np.isfinite(np.asarray(sol.params)))
    again = dynopt.run(disc, problem, 200, every=50)  # off again: the program without callbacks
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(np.asarray(quiet.params), np.asarray(again.params))
