r"""NAG's stability limit $s\lambda < 4/3$ (`dynopt.maps.NAG.stability_limit`), checked against
long runs on $\tfrac\lambda2x^2$ for several $r$, and `compare`'s verdict past it."""

import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import problems
from dynopt.correspondences import BY_NAME, stability_limit_check


def test_nag_declares_its_limit_and_the_battery_confirms_it():
    checks = stability_limit_check(BY_NAME["nag"])
    assert checks is not None and len(checks) == 2
    for check in checks:
        assert check.limit == pytest.approx(4.0 / (3.0 * check.lambda_max), rel=1e-15)
        assert check.below <= 1.0 and not np.isfinite(check.above)


@pytest.mark.parametrize("r", [0.5, 3.0, 10.0])
def test_nag_limit_against_runs(r):
    # At beta = 1 the larger root's modulus is c + sqrt(c^2 + c), c = s*lam - 1: at
    # s*lam = 4/3 * (1 -+ 0.02) it is 0.94 / 1.06 per step once the momentum is near 1.
    lam = 7.0
    flow = dynopt.flows.NesterovODE(r)
    row = BY_NAME["nag"]
    limit = row.map.stability_limit(flow, lam)
    assert limit == pytest.approx(4.0 / (3.0 * lam), rel=1e-15)
    disc = row.map(flow, jnp.array([0.98 * limit, 1.02 * limit]))
    traj = dynopt.run(disc, problems.quadratic(jnp.array([lam])), 8000, every=8000)
    final = np.abs(np.asarray(traj.final_params)[:, 0])
    assert traj.diverged_at[0] == -1 and final[0] < 1e-20
    assert traj.diverged_at[1] >= 0


def test_compare_past_the_limit_is_unstable():
    problem = problems.quadratic(jnp.array([10.0, 0.3]))
    row = BY_NAME["nag"]
    cmp = dynopt.compare(row.flow(), problem, [0.16, 0.04, 0.01], 8.0, map=row.map)
    # s*lambda_max = 1.6: its 20 steps grow (error 62) but do not yet pass run's threshold.
    assert not np.asarray(cmp.diverged).any()
    assert cmp.verdict == "unstable" and np.isnan(cmp.order)


def test_nag_limit_refuses_bad_curvature():
    with pytest.raises(ValueError, match="lambda_max"):
        BY_NAME["nag"].map.stability_limit(dynopt.flows.NesterovODE(), 0.0)
