"""The battery's order check sees ε: an adaptive map that mishandles ε (here it passes ε·h, with
its baseline and inverse written alike, so identity and inverse hold) fitted order 1 on the
registry's problems, whose gradients make ε a rounding (|g| = O(1) ≫ ε = 1e-6 for Adam; the
initial scale G₀ = 1 ≫ ε = 1e-4 for RMSprop). The rows now also measure where ε is comparable to
√v (`_ADAM_EPS`, `_RMS_EPS` in dynopt/_correspondences.py), and such a row fails there, on
`order` alone."""

import dataclasses

import numpy as np
import optax
import pytest

from dynopt._battery import verify
from dynopt._correspondences import REGISTRY
from dynopt._flows.adaptive import AdamFlow, RMSPropFlow
from dynopt._maps import adaptive


ROWS = {row.name: row for row in REGISTRY}


class AdamEpsTimesStep(adaptive.Adam):
    def hyperparams(self, flow, h):
        return {**super().hyperparams(flow, h), "eps": flow.eps * h}

    def inverse(self, learning_rate, b1, b2, eps=1e-8):
        flow, lr = super().inverse(learning_rate, b1, b2, eps)
        return AdamFlow(flow.a1, flow.a2, eps / lr), lr


class RMSPropEpsTimesStep(adaptive.RMSProp):
    def hyperparams(self, flow, h):
        return {**super().hyperparams(flow, h), "eps": flow.eps * h}

    def inverse(self, learning_rate, decay, eps=1e-8, initial_scale=0.0):
        flow, lr = super().inverse(learning_rate, decay, eps, initial_scale)
        return RMSPropFlow(flow.kappa, eps / lr, flow.initial_scale), lr


def _adam_wrong():
    return dataclasses.replace(
        ROWS["adam"],
        map=AdamEpsTimesStep(),
        baseline=lambda h: optax.adam(h, b1=1 - 2.0 * h, b2=1 - 5.0 * h, eps=1e-6 * h),
    )


def _rmsprop_wrong():
    return dataclasses.replace(
        ROWS["rmsprop"],
        map=RMSPropEpsTimesStep(),
        baseline=lambda h: optax.rmsprop(
            h, decay=1 - 2.0 * h, eps=1e-4 * h, initial_scale=1.0, eps_in_sqrt=True
        ),
    )


@pytest.mark.parametrize("make", [_adam_wrong, _rmsprop_wrong], ids=["adam", "rmsprop"])
def test_a_map_that_scales_eps_with_the_step_fails_on_order(make):
    """Identity (to its own baseline) and inverse hold; on the first two problems the fitted
    order is still 1 ± 0.1 (the battery passed the row), on the third, where ε matters, it is
    not (Adam: -0.02, errors flat in h; RMSprop: 0.70)."""
    row = make()
    report = verify(row, ["identity", "order", "inverse"])
    assert report.failed == ("order",), str(report)
    fits = report.checks["order"].measured
    assert len(fits) == 3
    assert all(abs(f.order - 1.0) <= 0.1 for f in fits[:2]), str(report)
    assert not abs(fits[2].order - 1.0) <= 0.3, str(report)
    assert np.all(np.isfinite(fits[2].errors)), str(report)
