"""Bad arguments to the density and characteristics routes and to `discretize`: one-line
`ValueError`s that name the user's argument and say what is wrong (not a third-party traceback,
a misleading remedy or an internal name)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynopt import characteristics as ch, densities as D, flows

# u_t + x u_x = u^2, x = (t, x): the PDE of tests/test_characteristics.py
from .test_characteristics import _alpha1 as _alpha, _beta1 as _beta, _initial1 as _initial


def test_discretize_names_the_step_size():
    for bad in ("0.1", None, [0.1, "x"]):
        with pytest.raises(
            ValueError, match=r"^step_size must be a real number > 0 and finite, got"
        ):
            flows.GradientFlow().discretize(bad)
    with pytest.raises(ValueError, match=r"step_size must be > 0 and finite, got -0\.1"):
        flows.HeavyBall(1.0).discretize(-0.1)
    # Numbers of every kind still work, and give the same hyper-parameters.
    for h in (0.1, np.float64(0.1), jnp.asarray(0.1)):
        assert float(flows.GradientFlow().discretize(h).hyperparams["learning_rate"]) == 0.1


def test_linear_vector_sde_refuses_non_finite_drift():
    with pytest.raises(ValueError, match="A must be finite"):
        D.linear_vector_sde(jnp.array([[jnp.nan, 0.0], [0.0, -1.0]]), 1.0)
    with pytest.raises(ValueError, match="A must be finite"):
        D.linear_vector_sde([[np.inf, 0.0], [0.0, -1.0]], 1.0)
    # Inside jit the check runs in the compiled program.
    with pytest.raises(Exception, match="A must be finite"):
        jax.jit(lambda a: D.linear_vector_sde(a, 1.0).drift_fn.A)(jnp.full((2, 2), jnp.nan))


def test_fokker_planck_says_the_initial_density_is_negative():
    """Today: 'the grid does not cover the mass ... Widen the grid' for a negative start."""
    sde = D.linear_sde(1.0, 0.5)
    grid = np.linspace(-3.0, 3.0, 61)
    good = np.exp(-0.5 * grid**2 / 0.1)
    good /= good.sum() * (grid[1] - grid[0])
    bad = good.copy()
    bad[10] = -0.2
    with pytest.raises(ValueError, match=r"initial must be a density, >= 0 everywhere: 1 grid"):
        D.fokker_planck(sde, bad, grid, 0.1, 0.2)
    with pytest.raises(ValueError, match="initial must be finite, got an array of 61 entries, 30"):
        D.fokker_planck(sde, np.where(grid > 0, np.nan, good), grid, 0.1, 0.2)
    with pytest.raises(ValueError, match=r"initial density has mass 2 on the grid .* Normalise"):
        D.fokker_planck(sde, 2 * good, grid, 0.1, 0.2)


def test_random_walk_says_the_window_is_reversed():
    sde = D.linear_sde(1.0, 0.5)
    with pytest.raises(ValueError, match=r"coordinate 0 has \(3, -3\), which is reversed: write"):
        D.random_walk(sde, 0.0, 0.5, 0.01, (3.0, -3.0))
    with pytest.raises(ValueError, match=r"\(1, 1\), which is empty"):
        D.random_walk(sde, 1.0, 0.5, 0.01, (1.0, 1.0))
    with pytest.raises(ValueError, match="window must be a finite real number"):
        D.random_walk(sde, 0.0, 0.5, 0.01, ("a", 3.0))


def test_quasilinear_names_the_users_argument_s():
    sig = jnp.linspace(-1.0, 1.0, 5)
    with pytest.raises(ValueError, match=r"^s must be strictly increasing, got s\[1\]=1"):
        ch.quasilinear(_alpha, _beta, _initial, sig, jnp.array([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match=r"^s must start at or after 0, got s\[0\]=-1"):
        ch.quasilinear(_alpha, _beta, _initial, sig, jnp.array([-1.0, 0.5]))
    with pytest.raises(ValueError, match=r"^s must be a finite real number, got 'abc'"):
        ch.quasilinear(_alpha, _beta, _initial, sig, "abc")
