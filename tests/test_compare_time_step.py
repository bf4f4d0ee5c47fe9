"""`compare` with a map whose time step is not its step size (NAG: dt = sqrt(s)): the fitted order
is the order in dt, checked against errors recomputed from the Nesterov ODE's Bessel closed
form, and a sweep whose dt does not divide t1 is refused with a hint in terms of dt."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import jv

import dynopt
from dynopt import problems
from dynopt.correspondences import BY_NAME


def _nesterov_ode_1d(lam: float, r: float, x0: float, t: np.ndarray) -> np.ndarray:
    r"""$X(t) = x_0\,\Gamma(\nu+1)(2/z)^\nu J_\nu(z)$, $z = \sqrt\lambda\,t$, $\nu = (r-1)/2$:
    the solution of $X'' + (r/t)X' + \lambda X = 0$, $X(0) = x_0$, $X'(0) = 0$ (for r = 3,
    $2J_1(z)/z$)."""
    from scipy.special import gamma

    nu = (r - 1) / 2
    z = np.sqrt(lam) * t
    safe = np.where(z == 0, 1.0, z)
    return x0 * np.where(z == 0, 1.0, gamma(nu + 1) * (2 / safe) ** nu * jv(nu, safe))


def test_nag_order_is_fitted_against_the_time_step():
    lam, t1 = 2.0, 2.0
    problem = problems.quadratic(jnp.array([lam]))
    row = BY_NAME["nag"]
    flow = row.flow()
    step_sizes = [4e-4, 1e-4, 2.5e-5]  # dt = 0.02, 0.01, 0.005
    cmp = dynopt.compare(flow, problem, step_sizes, t1, map=row.map)
    errors, dts = [], []
    for s in step_sizes:
        disc = row.map(flow, s)
        n = round(t1 / float(disc.dt))
        traj = dynopt.run(disc, problem, n)
        exact = _nesterov_ode_1d(lam, float(flow.r), 1.0, np.arange(n + 1) * float(disc.dt))
        errors.append(np.max(np.abs(np.asarray(traj.params)[:, 0] - exact)))
        dts.append(float(disc.dt))
    # The reference solve is accurate to ~1e-10; the errors are ~1e-2.
    np.testing.assert_allclose(np.asarray(cmp.errors), errors, rtol=1e-7)
    np.testing.assert_allclose(dts, np.sqrt(step_sizes), rtol=1e-15)
    slope_dt = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert cmp.verdict == "asymptotic"
    assert cmp.order == pytest.approx(slope_dt, abs=1e-9)
    assert abs(cmp.order - 1.0) < 0.05  # (against s it would read 0.5)


def test_t1_not_a_multiple_of_dt_names_the_time_steps():
    problem = problems.quadratic(jnp.array([2.0]))
    row = BY_NAME["nag"]
    # dt = sqrt(0.08) = 0.283 does not divide t1 = 4: the step sizes t1/N that the plain hint
    # suggests (0.08 = 4/50) are exactly what fails here.
    with pytest.raises(
        ValueError, match=r"time steps dt = \[0\.28.*whose dt = map\(flow, h\)\.dt is t1/N"
    ):
        dynopt.compare(row.flow(), problem, [0.08, 0.04, 0.02], 4.0, map=row.map)


def test_t1_not_a_multiple_plain_hint_when_dt_is_the_step_size():
    problem = problems.quadratic(jnp.array([2.0]))
    with pytest.raises(
        ValueError, match=r"step sizes \[0\.3\]\. Choose t1 = N \* dt \(e\.g\. step sizes t1/N"
    ):
        dynopt.compare(dynopt.flows.GradientFlow(), problem, [0.3, 0.2, 0.1], 1.0)


def test_unstable_reason_names_the_step_sizes_given():
    # s = 0.16 on lambda = 10: s*lambda = 1.6 > 4/3, NAG's limit; the reason names 0.4 (its dt)
    # and says which step size that is.
    problem = problems.quadratic(jnp.array([10.0, 0.3]))
    row = BY_NAME["nag"]
    cmp = dynopt.compare(row.flow(), problem, [0.16, 0.04, 0.01], 8.0, map=row.map)
    assert cmp.verdict == "unstable"
    assert "0.16 -> 0.4" in cmp.reason


def test_reason_unchanged_when_dt_is_the_step_size():
    problem = problems.quadratic(jnp.array([10.0, 0.3]))
    cmp = dynopt.compare(dynopt.flows.GradientFlow(), problem, [0.25, 0.1, 0.05], 1.0)
    assert cmp.verdict == "unstable"
    assert "->" not in cmp.reason
