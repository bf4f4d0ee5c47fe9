"""`assess_order` and `compare` on sweeps built to mislead a fitted slope: each verdict true,
and its reason saying what to change."""

import math

import numpy as np
import pytest

import dynopt
from dynopt import flows, problems
from dynopt._order import assess_order, SETTLE_TOLERANCE


def test_an_error_that_changes_sign_names_the_step_sizes_and_the_cure():
    """e = |h - 10h²| crosses zero at h = 0.1 (the leading terms cancel): local orders 2.58,
    53.7, -50.7 mean nothing. The reason said only "errors do not decrease"; it now names the
    pair (0.025 at 0.05 above 1.4e-17 at 0.1), the sign change, and smaller steps past it."""
    h = np.array([0.4, 0.2, 0.1, 0.05])
    a = assess_order(h, np.abs(h - 10 * h**2), scales=10.0)
    assert a.verdict == "pre-asymptotic" and math.isnan(a.order)
    assert "0.025 at 0.05, 1.39e-17 at 0.1" in a.reason, a.reason
    assert "changes sign between them" in a.reason and "take smaller step sizes" in a.reason


def test_zero_errors_name_their_step_sizes():
    """Before: "some errors are zero", nothing to change named."""
    h = 0.1 * 0.5 ** np.arange(4)
    a = assess_order(h, np.array([0.1, 0.0, 0.025, 0.0125]), scales=1.0)
    assert a.verdict == "pre-asymptotic" and math.isnan(a.order)
    assert "errors at step sizes [0.05] are zero" in a.reason, a.reason
    assert "compare on a problem where the method errs" in a.reason


def test_two_step_sizes_say_to_add_one():
    """Before: "2 step sizes; an order needs at least 3", not what to add."""
    c = dynopt.compare(flows.GradientFlow(), problems.quadratic([1.0]), [0.1, 0.05], 1.0)
    assert c.verdict == "too few step sizes" and math.isnan(float(c.order))
    assert "add step sizes, e.g. halvings of the smallest" in c.reason, c.reason


def test_step_sizes_not_in_geometric_progression():
    """h = 0.1, 0.09, 0.03, 0.001, e = h(1 + 3h): local orders 1.22, 1.14, 1.02 over uneven
    ratios. Their moves compare only over equal ratios (Aitken's ratio needs them), so the
    bound is the last move's with its own ratio: settled, the fit 1.05 within 0.1 of 1."""
    h = np.array([0.1, 0.09, 0.03, 0.001])
    a = assess_order(h, h * (1 + 3 * h), scales=1.0)
    assert a.verdict == "asymptotic" and abs(a.order - 1.0) <= SETTLE_TOLERANCE, a


def test_superconvergence_is_the_order_it_shows():
    """A symmetric case where the leading term vanishes (e = h² for a method of order 1):
    asymptotic at 2, `at_least=1` allowing p + 1."""
    h = 0.1 * 0.5 ** np.arange(4)
    a = assess_order(h, 0.3 * h**2 * (1 + 0.1 * h**2), scales=1.0, at_least=1)
    assert a.verdict == "asymptotic" and abs(a.order - 2.0) < 1e-2, a


@pytest.mark.parametrize("where", [0, 2])
def test_nan_errors_are_unstable_and_named(where):
    h = 0.1 * 0.5 ** np.arange(4)
    e = h.copy()
    e[where] = np.nan
    a = assess_order(h, e, scales=1.0)
    assert a.verdict == "unstable" and math.isnan(a.order)
    assert f"step sizes [{h[where]:.3g}] diverged" in a.reason
    assert "compare again without them" in a.reason


def test_duplicate_step_sizes_are_refused():
    with pytest.raises(ValueError, match="step_sizes must be distinct"):
        assess_order([0.1, 0.1, 0.05], [0.1, 0.1, 0.05])
    with pytest.raises(ValueError, match="step_sizes must be distinct"):
        dynopt.compare(flows.GradientFlow(), problems.quadratic([1.0]), [0.1, 0.1, 0.05], 1.0)


def test_errors_at_the_references_accuracy_say_to_tighten_it():
    """Heavy ball (order 2) at h = 5e-4 to 6.25e-5 against a reference solved at rtol = 1e-6:
    errors 1.1e-8, 3.0e-9, 3.3e-9, 3.5e-9 stop falling at the reference's own error. Before, the
    reason said only "errors do not decrease"; it now names the reference's accuracy and its
    cure (at the default rtol = 1e-10 the same sweep is asymptotic, 2.00)."""
    problem, hs = problems.quadratic([1.0, 3.0]), 5e-4 * 0.5 ** np.arange(4)
    c = dynopt.compare(flows.HeavyBall(1.0), problem, hs, 0.08, rtol=1e-6, atol=1e-8)
    assert c.verdict == "pre-asymptotic" and math.isnan(float(c.order))
    assert "errors at the reference's accuracy (tighten rtol and atol)" in c.reason, c.reason
    c = dynopt.compare(flows.HeavyBall(1.0), problem, hs, 0.08)
    assert c.verdict == "asymptotic" and abs(float(c.order) - 2.0) < 0.01, c.reason
