"""dynopt.lyapunov: an empty time grid is refused as such."""

import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import flows, lyapunov, problems


def test_an_empty_time_grid_says_so():
    """An empty ts was refused as "ts must be in [0, 1], got []" (a range it does not leave)."""
    problem = problems.quadratic(jnp.asarray([1.0, 3.0]))
    ref = dynopt.solve(flows.GradientFlow(), problem, jnp.linspace(0.0, 1.0, 3))
    for fn in (lyapunov.rates, lyapunov.loss_values, lyapunov.identity_deviation):
        with pytest.raises(ValueError, match=r"ts must be a 1-D array of times, not empty"):
            fn(ref, problem, np.zeros(0))
