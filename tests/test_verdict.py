"""`Comparison.verdict` and `local_orders`: an order is a number only in the asymptotic regime.

The sweeps of issue 18, each of which printed a convincing but meaningless order before."""

import jax.numpy as jnp
import numpy as np
import pytest

import dynopt
from dynopt import flows, problems
from dynopt._order import (
    assess_order,
    local_orders,
    RELATIVE_ERROR_LIMIT,
    SLOPE_TOLERANCE,
    VERDICTS,
)


def test_gd_far_past_its_stability_limit_is_unstable():
    """h lambda = 5 and 2.5 on lambda = 10: both runs grow (errors 1e12 and 1e7 before), the
    fitted "order" was 16.6 with diverged_at = [-1, -1]."""
    c = dynopt.compare(flows.GradientFlow(), problems.quadratic([0.1, 1.0, 10.0]), [0.5, 0.25], 10)
    assert c.verdict == "unstable" and c.final_verdict == "unstable"
    assert np.isnan(float(c.order)) and np.isnan(float(c.final_order))
    assert np.all(np.asarray(c.diverged_at) >= 0)  # the growth criterion: finite, yet diverged
    assert "[0.5, 0.25]" in c.reason and "stability limit" in c.reason
    assert "order=nan (unstable" in repr(c)


def test_gd_at_h_lambda_one_is_pre_asymptotic():
    """GD with h lambda = 1 reaches the minimum in one step: the errors e^{-1}, ... bend, the
    local orders are 1.64 and 1.20 (the fit gave 1.4, a "1.64" with fewer points)."""
    c = dynopt.compare(flows.GradientFlow(), problems.quadratic([1.0]), [1.0, 0.5, 0.25], 4.0)
    # Closed form: e_h = max_k |(1 - h)^k - e^{-kh}| (x0 = 1).
    expected = [
        max(abs((1 - h) ** k - np.exp(-k * h)) for k in range(round(4 / h) + 1))
        for h in (1.0, 0.5, 0.25)
    ]
    np.testing.assert_allclose(c.errors, expected, rtol=1e-8)
    np.testing.assert_allclose(c.local_orders, local_orders([1.0, 0.5, 0.25], expected))
    assert float(c.local_orders[0]) - float(c.local_orders[1]) > SLOPE_TOLERANCE
    assert c.verdict == "pre-asymptotic" and np.isnan(float(c.order))
    assert "order=nan (pre-asymptotic" in repr(c)


def test_one_step_size_is_too_few():
    c = dynopt.compare(flows.GradientFlow(), problems.quadratic([1.0]), [0.1], 1.0)
    assert c.verdict == "too few step sizes" and np.isnan(float(c.order))
    assert c.local_orders.shape == (0,)
    assert "too few step sizes" in repr(c)


def test_adam_on_an_mlp_is_pre_asymptotic_at_coarse_steps():
    """AdamFlow against optax.adam (its default map) on a small MLP over t1 = 12: at
    h = 0.04 ... 0.01 the EMA decay 1 - a1 h is 0.2 ... 0.8, and errors amplified along the
    nonconvex path reach a third of the distance travelled; the local orders (2.3, 1.2) show no
    asymptotic regime, and no order is reported (a fit gave 1.8)."""
    p = problems.mlp_regression(32, 2, width=8, depth=1)
    flow = flows.AdamFlow(a1=20.0, a2=0.2, eps=1e-8)
    c = dynopt.compare(flow, p, [0.04, 0.02, 0.01], 12.0)
    assert not bool(np.any(c.diverged))
    assert c.verdict == "pre-asymptotic", c
    assert np.isnan(float(c.order))
    assert np.ptp(np.asarray(c.local_orders)) > SLOPE_TOLERANCE
    assert float(np.max(np.asarray(c.errors) / np.asarray(c.scales))) > RELATIVE_ERROR_LIMIT


def test_gd_in_its_asymptotic_regime_reports_the_fitted_order():
    c = dynopt.compare(
        flows.GradientFlow(),
        problems.quadratic([1.0, 10.0], rotate=True, seed=2),
        1.0 / jnp.array([40.0, 80.0, 160.0, 320.0]),
        1.0,
    )
    assert c.verdict == "asymptotic" and c.final_verdict == "asymptotic"
    assert abs(float(c.order) - 1.0) <= 0.1
    assert float(c.order) == pytest.approx(float(dynopt.fit_order(c.dts, c.errors)), rel=1e-12)
    assert np.ptp(np.asarray(c.local_orders)) <= SLOPE_TOLERANCE
    assert np.all(np.asarray(c.errors) <= RELATIVE_ERROR_LIMIT * np.asarray(c.scales))
    assert repr(c).startswith(f"Comparison(order={float(c.order):.3f} (asymptotic")


def test_known_stability_limit_flags_a_horizon_too_short_to_blow_up():
    """h lambda = 2.2 grows by 1.2 per step: over 5 steps the run stays bounded and its errors
    shrink with h, yet the step size is past the map's limit 2/lambda."""
    p = problems.quadratic([22.0])
    c = dynopt.compare(flows.GradientFlow(), p, [0.1, 0.05, 0.025], 0.5)
    assert not bool(np.any(c.diverged))
    assert c.verdict == "unstable" and "[0.1]" in c.reason
    # An explicit map says the same.
    c2 = dynopt.compare(
        flows.GradientFlow(), p, [0.1, 0.05, 0.025], 0.5, map=dynopt.maps.GradientDescent()
    )
    assert c2.verdict == "unstable"


@pytest.mark.parametrize(
    "errors, verdict",
    [
        # C h^p (1 + c h) with c h small: the slopes agree.
        (0.03 * 0.5 ** np.arange(4) * (1 + 0.01 * 0.5 ** np.arange(4)), "asymptotic"),
        # The same expansion with c h = 1 at the first step: the first slope bends.
        (0.03 * 0.5 ** np.arange(4) * (1 + 4.0 * 0.5 ** np.arange(4)), "pre-asymptotic"),
        # Errors that do not decrease (an inconsistent scheme or reference).
        (np.array([1e-2, 1e-2, 1e-2, 1e-2]), "pre-asymptotic"),
        # Errors at the reference's accuracy: slopes scatter.
        (np.array([3e-11, 1e-11, 2e-11, 4e-12]), "pre-asymptotic"),
        (np.array([1e-2, np.inf, 2.5e-3, 1.25e-3]), "unstable"),
        (np.array([1e-2, 0.0, 2.5e-3, 1.25e-3]), "pre-asymptotic"),
    ],
)
def test_assess_order_on_expansions(errors, verdict):
    h = 0.1 * 0.5 ** np.arange(4)
    a = assess_order(h, errors, scales=1.0)
    assert a.verdict == verdict and a.verdict in VERDICTS
    assert np.isnan(a.order) == (verdict != "asymptotic")
    assert a.local_orders.shape == (3,)


def test_assess_order_needs_errors_small_against_the_solution():
    h = 0.1 * 0.5 ** np.arange(3)
    errors = 3.0 * h  # order 1 exactly, but errors of 30% of the solution's travel
    assert assess_order(h, errors, scales=1.0).verdict == "pre-asymptotic"
    assert assess_order(h, errors, scales=10.0).verdict == "asymptotic"
    assert assess_order(h[:2], errors[:2], scales=10.0).verdict == "too few step sizes"
    flagged = assess_order(h, errors, scales=10.0, unstable=[True, False, False])
    assert flagged.verdict == "unstable" and "0.1" in flagged.reason


def test_agreeing_local_orders_that_still_drift_are_noted():
    """Local orders 1.61 -> 1.80 agree within 0.2, so the verdict is asymptotic with the fit
    1.70, but they still move one way: the reason says so, whichever order the step sizes are
    given in. A settled pair (2.00, 2.02) gets no note."""
    h = np.array([0.02, 0.01, 0.005])
    for slopes, noted in (([1.61, 1.80], True), ([2.0, 2.02], False), ([1.8, 1.61], True)):
        e = 0.1 * np.cumprod([1.0, 2.0 ** -slopes[0], 2.0 ** -slopes[1]])
        for order in (slice(None), slice(None, None, -1)):
            a = assess_order(h[order], e[order], scales=1.0)
            assert a.verdict == "asymptotic", a
            assert ("still drift" in a.reason) == noted, a.reason
    a = assess_order(h, 0.1 * np.cumprod([1.0, 2.0**-1.61, 2.0**-1.80]))
    assert "drift by +0.19 toward smaller steps" in a.reason, a.reason


def test_a_fit_below_the_least_possible_order_is_not_the_limit():
    """`at_least`: where a theorem says the errors are O(dt^p) as dt -> 0, agreeing local orders
    whose fit is more than the slope tolerance below p are not the limit (pre-asymptotic, the
    reason saying so); within the tolerance, or above p near p + j, the fit stands. Above p
    but drifting and 0.3 from both 1 and 2 (lars against its order-1 flow: 1.61, 1.80, then
    1.91, 1.98 at smaller steps), it is not the limit either."""
    h = np.array([0.02, 0.01, 0.005])
    for slopes, least, verdict, why in (
        ([1.61, 1.80], 2, "pre-asymptotic", "below the order 2"),  # fit 1.70 < 2 - 0.2
        ([1.61, 1.80], 1, "pre-asymptotic", "from every order the errors can have (1, 2, …)"),
        ([1.85, 1.9], 2, "asymptotic", ""),  # within the tolerance
        ([2.9, 3.0], 2, "asymptotic", ""),  # above: a term that vanishes on this problem
    ):
        e = 0.1 * np.cumprod([1.0, 2.0 ** -slopes[0], 2.0 ** -slopes[1]])
        a = assess_order(h, e, scales=1.0, at_least=least)
        assert a.verdict == verdict, a
        if verdict == "pre-asymptotic":
            assert np.isnan(a.order) and why in a.reason, a.reason


def test_a_flow_below_its_maps_claimed_order_is_not_the_limit():
    """A flow against itself under its default map: the map's claimed order is the least the
    errors reach as the step shrinks. RMSProp's flow from ν₀ = 0 with ε = 1e-4 errs O(√h) at
    start-up while κhg² > ε: its local orders agree near 0.47 at h = 0.04..0.01, and 0.77 at
    h 64× smaller, below the map's order 1 (pre-asymptotic, no order; it was "asymptotic,
    0.469" before). GD on the same problem keeps its order 1 fit."""
    problem = dynopt.Problem(
        lambda p: jnp.sum(jnp.log(jnp.cosh(p["w"] - 1.0))), {"w": jnp.asarray([0.3, -0.5])}
    )
    c = dynopt.compare(flows.RMSPropFlow(kappa=2.0, eps=1e-4), problem, [0.04, 0.02, 0.01], t1=1.0)
    assert c.verdict == "pre-asymptotic" and np.isnan(c.order), c.reason
    assert "below the order 1" in c.reason
    gd = dynopt.compare(flows.GradientFlow(), problem, [0.04, 0.02, 0.01], t1=1.0)
    assert gd.verdict == "asymptotic" and abs(float(gd.order) - 1.0) < 0.1


def test_a_drifting_fit_between_the_orders_the_errors_can_have_is_not_the_limit():
    """e = Δt + aΔt² with a = 41.2 at Δt = 0.02, 0.01, 0.005: local orders 1.37, 1.23 agree
    within 0.2 but drift, and fit 1.30. Knowing the orders are 1, 2, … (`at_least=1`), 1.30 is
    no limit: pre-asymptotic (a fit of 2.10 from e = Δt²(1 + 10Δt) stands)."""
    h = np.array([0.02, 0.01, 0.005])
    bent = h + 41.2 * h**2
    a = assess_order(h, bent, scales=1.0, at_least=1)
    assert a.verdict == "pre-asymptotic" and "every order the errors can have" in a.reason
    assert np.isnan(a.order)
    assert assess_order(h, bent, scales=1.0).verdict == "asymptotic"  # no known orders: noted
    near_two = assess_order(h, h**2 * (1 + 10.0 * h), scales=1.0, at_least=1)
    assert near_two.verdict == "asymptotic" and abs(near_two.order - 2.0) < 0.2


@pytest.mark.parametrize("least", [-1.0, 0.0, float("nan")])
def test_at_least_is_a_positive_order(least):
    h = 0.1 * 0.5 ** np.arange(5)
    with pytest.raises(ValueError, match="at_least"):
        assess_order(h, h**2, scales=1.0, at_least=least)


def test_a_shuffled_sweep_is_judged_as_the_sorted_one():
    # Local orders 1.5 (h = 0.04 -> 0.02) and 1.2 (0.02 -> 0.01) differ by 0.3: not asymptotic.
    # Given as [0.01, 0.04, 0.02], slopes between neighbours span 0.01 -> 0.04 (1.35, the
    # average) and 0.04 -> 0.02 (1.5): a spread of 0.15 that passed as asymptotic.
    h = np.array([0.04, 0.02, 0.01])
    e = np.array([1.0, 2**-1.5, 2**-2.7])
    perm = [2, 0, 1]
    sorted_ = dynopt.assess_order(h, e)
    shuffled = dynopt.assess_order(h[perm], e[perm])
    assert sorted_.verdict == shuffled.verdict == "pre-asymptotic"
    np.testing.assert_allclose(shuffled.local_orders, [1.5, 1.2], rtol=1e-12)
    # An increasing sweep keeps its order: its neighbours are adjacent step sizes already
    rising = dynopt.assess_order(h[::-1], e[::-1])
    np.testing.assert_allclose(rising.local_orders, [1.2, 1.5], rtol=1e-12)


def test_zero_errors_are_named_with_their_step_sizes():
    a = dynopt.assess_order([0.04, 0.02, 0.01], [1e-3, 0.0, 0.0])
    assert a.verdict == "pre-asymptotic" and np.isnan(a.order)
    assert "step sizes [0.02, 0.01] are exactly 0" in a.reason
