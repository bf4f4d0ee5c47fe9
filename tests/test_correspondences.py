"""The battery generated from `dynopt.correspondences.REGISTRY`, through its public checks
(`dynopt.correspondences`: the same functions a row written outside the package is checked
with). Every row is tested for

- identity with its optax baseline (iterates of `run` vs a hand-written `lax.scan` of the raw
  optax transform, float64, from the map's initial state) to 1e-12;
- its claimed order (slope of log error against log Δt) within ±0.1 on each of its problems;
- optax conformance: float32 kept, no retrace for new step sizes, inside `optax.chain`, under
  `optax.inject_hyperparams`;
- the inverse map (hypothesis round trip);
- the declared stability limit h* (stable at 0.98 h*, unstable at 1.02 h*, two curvatures);
- the Lyapunov identity where the flow declares a closed-form `loss_rate`;
- zero retraces for new flow hyper-parameter values;

and every row of `AUTOMATIC` (flows derived by `modified_flow`) for
- identity of its discretization with the optimizer as the user wrote it (to 1e-13);
- its order p on each measurement: both local slopes and the fit within 0.15 of p.

`verify` runs the same checks on one row at the same tolerances; a deliberately wrong row fails
it on the check that is wrong, and only there.
"""

import dataclasses
from typing import ClassVar

import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

from dynopt import flows, maps, problems
from dynopt.correspondences import (
    AUTOMATIC,
    automatic_identity,
    automatic_order,
    baseline_identity,
    closed_form_deviation,
    Correspondence,
    fitted_orders,
    flow_retraces,
    inverse_round_trip,
    lyapunov_residual,
    Measurement,
    optax_conformance,
    REGISTRY,
    verify,
)
from dynopt.flows import AbstractFlow


ROWS = {row.name: row for row in REGISTRY}
WITH_BASELINE = [name for name, row in ROWS.items() if row.baseline is not None]


@pytest.mark.parametrize("name", WITH_BASELINE)
def test_identity_with_the_optax_baseline(name):
    diff = baseline_identity(ROWS[name])
    assert diff <= 1e-12, (name, diff)


WITH_CLOSED_FORM = [
    name
    for name, row in ROWS.items()
    if any(row.flow().closed_form(m.problem()) is not None for m in row.measurements)
]


@pytest.mark.parametrize("name", WITH_CLOSED_FORM)
def test_closed_form_solves_the_field(name):
    """The order check fits against a declared closed form: it must solve the flow's field."""
    assert closed_form_deviation(ROWS[name]) < 1e-6, name


@pytest.mark.parametrize("name", list(ROWS))
def test_claimed_order(name):
    row = ROWS[name]
    fits = fitted_orders(row)
    assert len(fits) >= 2
    for fit in fits:
        # Against a closed form as against `compare`'s reference: the step sizes are in the
        # asymptotic regime (`assess_order`), so the fitted slope is an order.
        assert fit.verdict == "asymptotic", (name, fit.problem, fit.reason)
        errs = fit.errors
        assert np.all(np.isfinite(errs)) and np.all(errs > 0), (name, fit.problem, errs)
        assert abs(fit.order - row.order) <= 0.1, (name, fit.problem, fit.order, errs)


@pytest.mark.parametrize("name", list(ROWS))
def test_optax_conformance(name):
    # Pytree params, float32 kept, no recompilation for a new step size; inside optax.chain
    # and under inject_hyperparams the same iterates (float64).
    c = optax_conformance(ROWS[name])
    assert c.retraces == 0, name
    assert c.float32_kept and c.finite, (name, c)
    assert c.chain_error <= 1e-12, (name, c)


@pytest.mark.parametrize("name", list(ROWS))
@settings(max_examples=10, deadline=None)
@given(step_factor=st.floats(0.2, 1.0), leaf_factor=st.floats(0.8, 1.0))
def test_inverse_map_round_trip(name, step_factor, leaf_factor):
    row = ROWS[name]
    h = row.measurements[0].step_sizes[0] * step_factor
    r = inverse_round_trip(row, h, scale=leaf_factor)
    if r is None:
        pytest.skip("no inverse")
    assert r.step_size_error <= 1e-12, (name, r)
    assert r.hyperparameter_error <= 1e-10, (name, r)
    assert r.dt_error <= 1e-12, (name, r)


def _declares_stability_limit(row) -> bool:
    return type(row.map).stability_limit is not maps.AbstractMap.stability_limit


@pytest.mark.parametrize("name", [n for n, row in ROWS.items() if _declares_stability_limit(row)])
def test_stability_limit(name):
    """The map's closed-form limit against runs on either side of it, at the top curvature
    of the row's first problem and 100 times it (a bounded run at 0.98 h*, a growing one at
    1.02 h*)."""
    check = verify(ROWS[name], ["stability"]).checks["stability"]
    assert check.passed, (name, check)
    assert all(c.passed for c in check.measured), (name, check)


def _declares_loss_rate(flow) -> bool:
    return type(flow).loss_rate is not AbstractFlow.loss_rate


@pytest.mark.parametrize("name", [n for n, row in ROWS.items() if _declares_loss_rate(row.flow())])
def test_lyapunov_identity(name):
    """The declared closed-form dL/dt against the derivative of L along the diffrax solution."""
    assert lyapunov_residual(ROWS[name]) < 1e-6, name


@pytest.mark.parametrize("name", list(ROWS))
def test_no_retrace_for_new_flow_hyperparameters(name):
    assert flow_retraces(ROWS[name]) == 0, name


AUTO = {row.name: row for row in AUTOMATIC}


@pytest.mark.parametrize("name", list(AUTO))
def test_automatic_identity_with_the_optimizer(name):
    """`flow.discretize(h)` is the user's optimizer: its iterates from the same initial state
    (the slow manifold in the fast regime) are a hand-written scan of the raw transform's."""
    diff = automatic_identity(AUTO[name])
    assert diff <= 1e-13, (name, diff)


# One test per (row, problem, order) (xdist distributes them), one compiled `compare` program
# each: the step sizes are traced, so the three runs and the three order-p references share it.
# The cost is compilation (the program runs in ~0.1 s; compile ~70%, tracing ~25%): three step
# sizes (the fewest that give two local slopes to agree) and a short horizon (t1 = 0.4, 20-80
# steps) change nothing of it, nor does the reference tolerance.
AUTO_CASES = [
    pytest.param(name, i, p, id=f"{name}-{m.label}-p{p}")
    for name, row in AUTO.items()
    for i, m in enumerate(row.measurements)
    for p in m.orders
]


@pytest.mark.parametrize("name, index, p", AUTO_CASES)
def test_automatic_order(name, index, p):
    """The discrete run against the order-p automatic flow: global order p. Both local slopes
    (between consecutive step sizes) within 0.15 of p, not only the fit: the regime is
    asymptotic, not a pre-asymptotic fit that happens to land near p."""
    fit = automatic_order(AUTO[name], index, p)
    assert fit.verdict == "asymptotic", fit
    np.testing.assert_allclose(fit.local_orders, p, atol=0.15, err_msg=str(fit))
    assert abs(fit.order - p) < 0.15, fit


def _gd_row(**changes) -> Correspondence:
    """Gradient descent on two quadratics with closed forms (the cheapest row to verify)."""
    row = Correspondence(
        "gd",
        flows.GradientFlow,
        maps.GradientDescent(),
        lambda h: optax.sgd(h),
        (
            Measurement(lambda: problems.quadratic([1.0, 4.0]), 1.0, (0.05, 0.025, 0.0125)),
            Measurement(
                lambda: problems.quadratic([0.5, 2.0], rotate=True), 1.0, (0.05, 0.025, 0.0125)
            ),
        ),
    )
    return dataclasses.replace(row, **changes)


class _GDLimitTooLarge(maps.AbstractMap):
    """Gradient descent declaring the limit 2.2/λ (10% past the true 2/λ)."""

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(optax.sgd)

    def hyperparams(self, flow, step_size):
        return {"learning_rate": step_size}

    def stability_limit(self, flow, lambda_max):
        return 2.2 / float(lambda_max)


WRONG_ROWS = {
    # GD is first order against gradient flow: a row claiming order 2 fits 1.
    "order": _gd_row(name="gd_claims_order_2", claimed_order=2.0),
    # A baseline that is not the map's optimizer: twice the learning rate.
    "identity": _gd_row(name="gd_wrong_baseline", baseline=lambda h: optax.sgd(2 * h)),
    # A stability limit past the true one: the run at 0.98 h* already grows.
    "stability": _gd_row(name="gd_wrong_limit", map=_GDLimitTooLarge()),
}


def test_verify_fails_a_wrong_row_on_the_wrong_check():
    """The battery can fail: a row wrong in one respect fails `verify` on that check alone.
    (One test for both rows: the second reuses the first's compiled programs.)"""
    reports = {check: verify(row) for check, row in WRONG_ROWS.items()}
    for check, report in reports.items():
        assert not report.passed
        assert report.failed == (check,), str(report)
    # What was measured: GD is first order; twice the learning rate is far from optax.sgd(h).
    assert all(abs(f.order - 1.0) <= 0.1 for f in reports["order"].checks["order"].measured)
    assert reports["identity"].checks["identity"].measured > 1e-3
    assert all(c.below > 1.0 for c in reports["stability"].checks["stability"].measured)
