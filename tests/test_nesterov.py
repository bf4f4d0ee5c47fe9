"""NesterovODE: the series start at the singular t = 0 against the Bessel closed forms, the
O(1/t²) bound and the Lyapunov energy for r ∈ {3, 4, 5}, and NAG's first order in √s."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import flows, problems


LAMS = jnp.array([0.5, 4.0])
QUAD = problems.quadratic(LAMS, params0=jnp.array([1.0, -2.0]))
TS = jnp.linspace(0.0, 20.0, 401)


def test_closed_form_all_r():
    """diffrax (series start) vs x₀Γ(ν+1)(2/z)^ν J_ν(z), ν = (r-1)/2: one compiled solve."""
    for r in (2.0, 3.0, 4.0, 5.0):
        traj = dynopt.solve(flows.NesterovODE(r), QUAD, TS)
        exact = flows.bessel_solution(np.asarray(TS), np.array([1.0, -2.0]), np.asarray(LAMS), r)
        # rtol 1e-10 per step, ~10² oscillation periods of the stiffer mode: 1e-8 is loose enough.
        assert np.max(np.abs(np.asarray(traj.params) - exact)) < 1e-8, r


def test_series_start_independent_of_series_time():
    """The start's error is O(t_s⁶)·λ³ in X: t_s from 1e-4 to 1e-2 changes nothing above the
    solver tolerance (with λ_max = 4: (2·10⁻²)⁶/10⁴ ≈ 6e-15)."""
    sols = [
        np.asarray(dynopt.solve(flows.NesterovODE(3.0, series_time=ts), QUAD, TS).params)
        for ts in (1e-4, 1e-3, 1e-2)
    ]
    assert np.max(np.abs(sols[0] - sols[1])) < 1e-9
    assert np.max(np.abs(sols[2] - sols[1])) < 1e-9


def _quartic(x, h):
    return 0.5 * x @ h @ x + 0.25 * jnp.sum(x**4)


def _convex_quartic():
    # f = ½ xᵀHx + ¼Σx⁴ with a rotated H: convex, x* = 0, f* = 0, not a quadratic.
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (3, 3)))
    h = q @ jnp.diag(jnp.array([0.1, 1.0, 3.0])) @ q.T
    loss = eqx.Partial(_quartic, h=h)  # a pytree: one compiled solve for every r
    return dynopt.Problem(loss, jnp.array([1.0, -0.5, 2.0]), minimizer=jnp.zeros(3))


@eqx.filter_jit
def _energy(flow, traj, problem, ts):
    states = jax.vmap(traj.interpolation.evaluate)(ts)
    return jax.vmap(lambda t, s: flow.lyapunov_energy(t, s, problem))(ts, states)


@pytest.mark.parametrize("r", [3.0, 4.0, 5.0])
def test_rate_bound_and_lyapunov(r):
    problem = _convex_quartic()
    ts = jnp.linspace(0.0, 30.0, 601)
    flow = flows.NesterovODE(r)
    traj = dynopt.solve(flow, problem, ts)
    gap = np.asarray(traj.loss)[1:]
    bound = np.asarray(flow.rate_bound(ts[1:], jnp.sum(problem.params0**2)))
    assert np.all(gap <= bound)
    energy = np.asarray(_energy(flow, traj, problem, ts))
    # Non-increasing up to the interpolation error of the dense output (~rtol).
    assert np.max(np.diff(energy)) <= 1e-8 * energy[0]
    assert energy[-1] < 0.5 * energy[0]


def test_nag_first_order_in_sqrt_s():
    problem = problems.quadratic(jnp.array([1.0]))
    t1 = 10.0
    s = (t1 / np.array([40, 80, 160, 320])) ** 2
    c = dynopt.compare(flows.NesterovODE(3.0), problem, s, t1)
    assert abs(float(c.order) - 1.0) < 0.1  # compare fits against dt = √s


def test_bad_input():
    with pytest.raises(ValueError, match="r must"):
        flows.NesterovODE(0.0)
    with pytest.raises(ValueError, match="r must"):
        flows.NesterovODE(-3.0)
    with pytest.raises(ValueError, match="series_time"):
        flows.NesterovODE(3.0, series_time=0.0)
    with pytest.raises(ValueError, match="step_size"):
        flows.NesterovODE(3.0).discretize(-1.0)
