"""dynopt/_densities/path_integral.py: the compiled programs of the time-sliced path integral."""

import jax
import numpy as np

from dynopt import densities as D

from .helpers import count_backend_compiles


def test_one_program_serves_every_slice_count_and_every_drift_of_a_structure():
    """A convergence study in the slice count (the `path_integral` experiment: 4 slice counts ×
    2 conventions, then OU and the double well at 128 and 768 slices on the same grid) compiled
    one program per slice count: `num_slices`, a Python int, was a static argument of the
    jitted composition. Now a new slice count, or a drift of the same structure with other
    coefficients, compiles nothing."""
    grid = np.linspace(-4.0, 4.5, 101)
    lin, ou = D.linear_sde(1.0, 0.5), D.linear_sde(-1.0, 0.5)
    well = D.ScalarSDE(D.Polynomial([0.0, 1.0, 0.0, -1.0]), 0.5)
    for convention in ("ito", "midpoint"):
        D.path_integral(lin, 0.3, 0.5, grid, 4, convention=convention)
        count, _ = count_backend_compiles(
            D.path_integral, lin, 0.3, 0.5, grid, 8, convention=convention
        )
        assert count == 0, (convention, count)
    for sde, x0, t1, n in ((ou, 0.3, 1.0, 16), (well, 0.0, 6.0, 96)):
        count, _ = count_backend_compiles(D.path_integral, sde, x0, t1, grid, n, mass_tol=None)
        assert count == 0, (t1, count)
    # The same in 2-D.
    sde = D.linear_vector_sde(np.array([[-1.0, 2.0], [-0.5, -1.0]]), 0.5)
    axes = (np.linspace(-2.3, 2.5, 23), np.linspace(-2.4, 2.0, 21))
    D.path_integral_nd(sde, np.array([0.5, -0.3]), 0.5, axes, 4)
    count, _ = count_backend_compiles(D.path_integral_nd, sde, np.array([0.5, -0.3]), 0.5, axes, 8)
    assert count == 0, count


def test_the_slices_compose_as_explicit_kernel_products():
    """The traced loop is the composition itself: $n$ slices of the short-time propagator,
    the first from the point $x_0$, the rest trapezoid sums over the grid (written out here
    with the public kernel), for every convention and with $t_0 \\neq 0$ (each slice at its
    own time)."""
    grid = np.linspace(-3.0, 3.5, 61)
    h = grid[1] - grid[0]
    sde = D.ScalarSDE(lambda x, t: -x + 0.5 * jax.numpy.sin(3.0 * t), 0.5)
    t0, t1, n, x0 = 0.2, 0.8, 5, 0.3
    eps = (t1 - t0) / n
    for convention in ("ito", "midpoint", "trapezoid"):
        kern = jax.vmap(
            jax.vmap(
                lambda xn, xo, t, c=convention: D.short_time_propagator(sde, xn, xo, t, eps, c),
                in_axes=(None, 0, None),
            ),
            in_axes=(0, None, None),
        )
        P = np.asarray(kern(grid, np.array([x0]), t0))[:, 0]
        for k in range(1, n):
            P = np.asarray(kern(grid, grid, t0 + k * eps)) @ P * h
        res = D.path_integral(sde, x0, t1, grid, n, convention=convention, t0=t0)
        np.testing.assert_allclose(res.density, P, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(res.mass, np.sum(P) * h, rtol=1e-12)
        np.testing.assert_allclose(res.lost_mass, 1.0 - np.sum(P) * h, rtol=1e-9, atol=1e-15)
