"""`compare` refuses, before its reference's solve, an order-p automatic flow whose truncated
series is far outside its asymptotic regime at every step size (τ‖f2‖/‖f1‖ >= 1 at θ0), where
that solve is costly: a network-sized state or an implicit solver."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
from dynopt import _compare, _solve


jax.config.update("jax_enable_x64", True)


def _no_solve(*args, **kwargs):
    raise AssertionError("the reference's solve (or its solver choice) ran")


def _logcosh(size: int) -> dynopt.Problem:
    target = jnp.linspace(-1.0, 2.0, size)
    return dynopt.Problem(
        lambda x: jnp.sum(jnp.log(jnp.cosh(x - target))), jnp.linspace(0.3, -0.2, size)
    )


def test_a_series_far_outside_its_regime_is_refused_before_the_solve(monkeypatch):
    """optax.adam at its defaults (b2 = 0.999, eps = 1e-8) on a separable 1,200-entry logcosh:
    the O(h) term carries (1 + β₂)/(2(1 - β₂)) ≈ 1000, so τ‖f2‖/‖f1‖ ≫ 1 at every step size.
    Before: the spectrum (ARPACK on the order-2 field) and the compiled comparison ran (on a
    9k-parameter MLP under AdamW, 16+ minutes) before the failed solve named the cause. Now:
    refused from one evaluation of the terms, with nothing else run, as a `ValueError` (the
    step sizes) that is also a `SolveError` (the solve not run)."""
    monkeypatch.setattr(_solve, "_SPECTRA", {})
    monkeypatch.setattr(_solve, "_spectrum_entry", _no_solve)
    monkeypatch.setattr(_compare, "_compare_jit", _no_solve)
    with pytest.raises(
        ValueError,
        match=r"step_sizes \[0\.02, 0\.01, 0\.005\] are all outside the asymptotic regime of "
        r"the order-2 modified flow, so its solve was not run: at θ0, τ‖f2‖/‖f1‖ = \S+ at the "
        r"smallest step size h = 0\.005.*compare with order=1",
    ) as info:
        dynopt.compare(lambda h: optax.adam(h), _logcosh(1200), (0.02, 0.01, 0.005), 0.4, order=2)
    assert isinstance(info.value, dynopt.OutsideSeriesRegime)  # (public, to catch)
    assert isinstance(info.value, dynopt.SolveError)


def test_the_refusal_threshold_is_a_ratio_of_one_at_the_smallest_step():
    """GD on ½λx² (1-D): f1 = -λx, f2 = -½λ²x, so τ‖f2‖/‖f1‖ = hλ/2 exactly; at λ = 50 the
    smallest step h = 0.05 gives 1.25 (refused: GD's own stability limit hλ = 2 is h = 0.04),
    h = 0.03 gives 0.75 (not refused: the band 1/2 to 1, where the series of
    (1/h) log(1 - hλ) no longer converges, still solves and reads pre-asymptotic). Only the
    smallest step size decides: the ratio grows like τ at the others."""
    problem = dynopt.problems.quadratic([50.0], params0=jnp.ones(1))
    reference = _compare._order_reference(optax.sgd, 2, problem)
    with pytest.raises(_compare.OutsideSeriesRegime, match=r"τ‖f2‖/‖f1‖ = 1\.25 at the smallest"):
        _compare._refuse_outside_series(reference, True, problem, np.asarray([0.1, 0.05]))
    _compare._refuse_outside_series(reference, True, problem, np.asarray([0.1, 0.05, 0.03]))
    # Not an automatic order-p flow: nothing to refuse.
    _compare._refuse_outside_series(
        dynopt.flows.GradientFlow(), False, problem, np.asarray([0.1, 0.05])
    )


def test_an_ordinary_order_two_compare_reads_no_series_before_its_solve(monkeypatch):
    """On a small state with an explicit solver a failed solve is cheap (its diagnosis names
    the cause after): no extra evaluation (a compile of the order-2 terms, 2-3 s on a toy
    problem) for the comparisons that succeed."""
    monkeypatch.setattr(_compare, "_refuse_outside_series", _no_solve)
    problem = dynopt.problems.quadratic([1.0, 3.0], params0=jnp.asarray([1.0, -0.5]))
    c = dynopt.compare(optax.sgd, problem, (0.04, 0.02, 0.01), 0.4, order=2)
    assert c.solver == "tsit5" and c.verdict == "asymptotic", c
