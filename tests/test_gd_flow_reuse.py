"""experiments/gd_flow.py's closed-form and Lyapunov checks read the reference `compare` solved
(`keep_reference=True`): no `solve` of their own, one compiled program each fewer (three in
all, the quick mode's costliest programs after the comparisons)."""

import dataclasses

import numpy as np
import pytest

import dynopt
from experiments import gd_flow


def test_closed_form_and_lyapunov_checks_solve_nothing_again(monkeypatch):
    config = dataclasses.replace(
        gd_flow.Config(quick=True),
        quad_dim=3,
        quad_steps=(100, 200, 400),
        rosen_steps=(400, 800, 1600),
        logistic_samples=32,
        logistic_dim=2,
        logistic_steps=(8, 16, 32),
        lyapunov_points=11,
    )

    def solve(*args, **kwargs):
        pytest.fail("gd_flow solved a reference again instead of reading compare's")

    monkeypatch.setattr(dynopt, "solve", solve)
    closed = gd_flow.closed_form(config)
    out = gd_flow.orders(config)
    assert closed.max_abs_error < 1e-8  # diffrax's tolerance, against the exact flow
    for name, result in out.items():
        assert result.lyap_ts.shape == (11,)
        assert result.lyapunov_max_rel_deviation < 1e-6, name
        assert np.all(np.isfinite(result.lyap_measured))
