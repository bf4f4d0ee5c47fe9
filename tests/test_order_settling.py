"""`assess_order`: an order is reported only where the local orders have settled.

With $e = C\\Delta t^p(1 + a\\Delta t^q)$ the local orders converge to $p$ geometrically as the
step shrinks; their last move bounds how far they still are from $p$. Agreeing local orders that
still move (1.72, 1.78, 1.84) are on their way to the order, not at it."""

import itertools
import math

import numpy as np
import pytest

import dynopt
from dynopt import flows, problems
from dynopt._order import assess_order, SETTLE_TOLERANCE


def _from_slopes(h, slopes, e0=0.1):
    """Errors at step sizes `h` whose consecutive local orders are `slopes`."""
    steps = np.log(h[1:] / h[:-1])
    return e0 * np.exp(np.concatenate([[0.0], np.cumsum(np.asarray(slopes) * steps)]))


def test_local_orders_still_moving_are_not_asymptotic():
    """QHM corrected by `transforms.modifying` (last session's note): local orders 1.72, 1.78,
    1.84 over halvings agree within 0.2 and were called "asymptotic, 1.78" (a drift note only
    above 0.1 per halving). Their moves do not shrink, as those of local orders converging to
    the order do: pre-asymptotic, the reason saying so. Moves that shrink (1.62, 1.72, 1.79: by
    0.7) put the limit between 1.79 and 1.95 (Aitken's extrapolation), 0.24 from the fit:
    pre-asymptotic too; one halving on (1.94, 1.97, 1.985) they have settled within 0.15."""
    h = 0.04 * 0.5 ** np.arange(4)
    a = assess_order(h, _from_slopes(h, [1.72, 1.78, 1.84]), scales=1.0)
    assert a.verdict == "pre-asymptotic" and math.isnan(a.order), a
    assert "have not settled" in a.reason and "[0.06, 0.06] do not shrink" in a.reason, a.reason
    assert "take smaller step sizes" in a.reason
    a = assess_order(h, _from_slopes(h, [1.62, 1.72, 1.79]), scales=1.0)
    assert a.verdict == "pre-asymptotic" and math.isnan(a.order), a
    assert "limit is between 1.79 and 1.95" in a.reason, a.reason
    assert "up to 0.242 from their fit 1.71 (> 0.15)" in a.reason, a.reason
    settled = assess_order(h, _from_slopes(h, [1.94, 1.97, 1.985]), scales=1.0)
    assert settled.verdict == "asymptotic" and abs(settled.order - 2.0) <= SETTLE_TOLERANCE
    assert "have settled: their limit is between 1.99 and 2," in settled.reason, settled.reason


def test_an_asymptotic_fit_is_within_the_settle_tolerance_of_the_order():
    """Every sweep of $e = \\Delta t^p(1 + a\\Delta t^q)$ ($p$ = 1, 2; $q$ = 1, 2; $a$ of either
    sign from 0.1 to 300; halvings, ratio 0.7, and mixed ratios; 3 to 5 step sizes) in the
    expansion's regime ($|a|\\Delta t_0^q \\le 1/4$) that is called asymptotic fits $p$ to within
    `SETTLE_TOLERANCE` $(1 + |a|\\Delta t_0^q)$ (the rule's bound is first order in the
    correction). Before, 14 of 3566 asymptotic sweeps were further, up to 0.26 (1.61, 1.80)."""
    far, asymptotic = [], 0
    for p, q, a, h0, ratios, k in itertools.product(
        (1.0, 2.0),
        (1.0, 2.0),
        np.concatenate([np.geomspace(0.1, 300, 25), -np.geomspace(0.1, 300, 25)]),
        (0.1, 0.05, 0.02),
        ((0.5,) * 4, (0.7,) * 4, (0.5, 0.7, 0.4, 0.6)),
        (3, 4, 5),
    ):
        c = abs(a) * h0**q
        if c > 0.25:
            continue
        h = h0 * np.cumprod((1.0, *ratios[: k - 1]))
        r = assess_order(h, h**p * (1 + a * h**q), scales=1e9)
        if r.verdict == "asymptotic":
            asymptotic += 1
            if abs(r.order - p) > SETTLE_TOLERANCE * (1 + c):
                far.append((p, q, a, h0, ratios, k, r.order))
    assert not far, far[:5]
    assert asymptotic > 3000  # (3330 of 3600: the rule is not vacuous)


@pytest.mark.parametrize(
    "errors",
    [
        lambda h: _from_slopes(h, [1.3, 1.0]),  # local orders differ by 0.3
        lambda h: h * (1 + 30 * h),  # local orders 1.46, 1.30: not settled
        lambda h: h**2 * (1 + 0.5 * h),  # settled
        lambda h: np.array([1e-2, 3e-3, 4e-4]),  # scattered
    ],
)
def test_the_verdict_does_not_depend_on_the_order_the_step_sizes_are_given_in(errors):
    """Local orders are slopes between consecutive entries as given; a slope across a
    non-neighbour averages those between neighbours. Local orders 1.3, 1.0 (sorted: they differ
    by 0.3, pre-asymptotic) given as [0.01, 0.04, 0.02] read 1.15, 1.3 and were "asymptotic";
    h(1 + 30h) read 1.38, 1.46 with no drift noted (sorted 1.46, 1.30: a drift). The verdict
    and order are now those of the sorted sweep, whatever the order given; `local_orders` keep
    the order given."""
    h = np.array([0.04, 0.02, 0.01])
    e = errors(h)
    ref = assess_order(h, e, scales=1.0)
    for perm in itertools.permutations(range(3)):
        p = list(perm)
        a = assess_order(h[p], e[p], scales=np.full(3, 1.0))
        assert a.verdict == ref.verdict, (perm, a, ref)
        assert a.order == ref.order or (math.isnan(a.order) and math.isnan(ref.order))
        np.testing.assert_allclose(
            a.local_orders, np.diff(np.log(e[p])) / np.diff(np.log(h[p])), rtol=1e-12
        )
        if p != [0, 1, 2]:
            assert "sorted largest first" in a.reason


def test_compare_of_gd_whose_local_orders_still_move():
    """GD against gradient flow on λ = 1, 7 at h = 0.09, 0.045, 0.0225 (t1 = 0.9): local
    orders 1.27, 1.11 agree within 0.2 and were "asymptotic, 1.19", 0.19 above GD's order 1.
    Their last move -0.16 puts the limit between 0.956 and 1.11: pre-asymptotic. One halving
    on they have settled and the fit is within 0.15 of 1; the step sizes given in another
    order give the same verdicts."""
    problem = problems.quadratic([1.0, 7.0])
    for hs, verdict in (
        ([0.09, 0.045, 0.0225], "pre-asymptotic"),
        ([0.045, 0.0225, 0.01125], "asymptotic"),
    ):
        for given in (hs, [hs[2], hs[0], hs[1]]):
            c = dynopt.compare(flows.GradientFlow(), problem, given, 0.9)
            assert c.verdict == verdict, c.reason
        if verdict == "asymptotic":
            assert abs(float(c.order) - 1.0) <= SETTLE_TOLERANCE
        else:
            assert "have not settled" in c.reason and "limit is between 0.956 and 1.11" in c.reason
