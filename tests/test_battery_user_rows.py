"""The battery on rows a user writes outside the package, following the README's recipe (a flow,
an `AbstractMap`, a `Correspondence`, `verify`): a correct row passes, and a row wrong in one
respect fails on that check (a battery that passes a wrong row is the worst defect it can have).

The user's optimizer here is SGD with decoupled weight decay, `optax.chain(add_decayed_weights(λ),
sgd(h))`, explicit Euler for $\\dot\\theta = -\\nabla L - \\lambda\\theta$ with $t = kh$, stable on
$\\tfrac\\mu2x^2$ iff $h < 2/(\\mu + \\lambda)$.
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dynopt import flows, maps, problems
from dynopt.correspondences import (
    Correspondence,
    fitted_orders,
    flow_retraces,
    inverse_round_trip,
    Measurement,
    verify,
)


WD = 0.3


class _AbstractParamsFlow(flows.AbstractFlow):
    """A user's flow whose state is its parameters (both flows below)."""

    def init(self, params):
        return params

    def params(self, state):
        return state


def _decay_flow_holding(held):
    """The weight-decay flow with its decay held as `held` says: a plain float default, or an
    `eqx.field(...)`."""

    class DecayFlow(_AbstractParamsFlow):
        r"""$\dot\theta = -\nabla L - \lambda\theta$."""

        weight_decay: float = held

        def vector_field(self, t, params, problem):
            g = problem.grad(params)
            return jax.tree.map(lambda gi, x: -gi - self.weight_decay * x, g, params)

        def discretize(self, h):
            return SGDW()(self, h)

    return DecayFlow


WeightDecayFlow = _decay_flow_holding(eqx.field(converter=jnp.asarray, default=WD))


def sgdw(learning_rate, weight_decay):
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate))


class AbstractSGDW(maps.AbstractMap):
    """SGDW's order, factory and hyper-parameters: the correct map and each map wrong in one
    respect below add only their own inverse and stability limit."""

    order: ClassVar[float] = 1.0
    factory: ClassVar = staticmethod(sgdw)

    def hyperparams(self, flow, h):
        return {"learning_rate": h, "weight_decay": flow.weight_decay}


class SGDW(AbstractSGDW):
    def inverse(self, learning_rate, weight_decay):
        return WeightDecayFlow(weight_decay), learning_rate

    def stability_limit(self, flow, lambda_max):
        return 2.0 / (float(lambda_max) + float(flow.weight_decay))


class SGDWInverseHoldsTheRow(AbstractSGDW):
    """Wrong: the inverse returns the row's own weight decay, whatever it is given."""

    def inverse(self, learning_rate, weight_decay):
        del weight_decay
        return WeightDecayFlow(WD), learning_rate


class SGDWLimitWithoutDecay(AbstractSGDW):
    """Wrong: the stability limit 2/μ forgets that the decay adds to the curvature."""

    def stability_limit(self, flow, lambda_max):
        return 2.0 / float(lambda_max)


def one_mode():
    return problems.quadratic([1.0], params0=jnp.array([1.0]))


def two_modes():
    return problems.quadratic([1.0, 4.0], params0=jnp.array([1.0, -1.5]))


def _row(map=None, flow=WeightDecayFlow, **changes):
    return Correspondence(
        "sgdw",
        flow,
        SGDW() if map is None else map,
        lambda h: optax.chain(optax.add_decayed_weights(WD), optax.sgd(h)),
        (
            Measurement(one_mode, 2.0, (0.05, 0.025, 0.0125)),
            Measurement(two_modes, 1.0, (0.025, 0.0125, 0.00625)),
        ),
        **changes,
    )


def test_a_correct_user_row_passes_every_check():
    report = verify(_row())
    assert report.passed, str(report)
    assert report.checks["lyapunov"].passed is None  # no closed-form loss_rate declared
    for check in ("identity", "order", "conformance", "inverse", "stability", "retrace"):
        assert report.checks[check].passed, (check, str(report))
    for fit in report.checks["order"].measured:
        assert fit.verdict == "asymptotic" and abs(fit.order - 1.0) <= 0.1, fit
    # GD on (μ + λ)/2 x² (the decay is the extra curvature): the limit 2/(μ + λ) at
    # μ = 1 (one_mode's curvature) and 100: |x_N| decays at 0.98 h*, grows at 1.02 h*.
    stability = report.checks["stability"].measured
    assert [c.lambda_max for c in stability] == pytest.approx([1.0, 100.0], rel=1e-10)
    assert [c.limit for c in stability] == pytest.approx([2 / 1.3, 2 / 100.3], rel=1e-15)
    assert all(c.below < 1e-50 and c.above == np.inf for c in stability)


def test_a_wrong_stability_limit_fails():
    """2/μ instead of 2/(μ + λ): at μ = 1 the declared h* = 2 is 30% past the true 1.54, so
    the run at 0.98 h* diverges. The battery had no stability check: the row passed."""
    report = verify(_row(SGDWLimitWithoutDecay()), ["stability"])
    assert report.failed == ("stability",), str(report)
    at_one = report.checks["stability"].measured[0]
    assert at_one.limit == 2.0 and at_one.below == np.inf


def test_an_inverse_that_holds_the_rows_hyperparameters_fails():
    """An inverse that returns the row's own weight decay round-trips at the row's flow (the
    only point `verify` tried): it must fail away from it. At scale 0.8 the recovered decay
    0.3 is 25% off the 0.24 it was given."""
    assert inverse_round_trip(_row(SGDWInverseHoldsTheRow())).hyperparameter_error == 0.0
    report = verify(_row(SGDWInverseHoldsTheRow()), ["inverse"])
    assert report.failed == ("inverse",), str(report)
    measured = report.checks["inverse"].measured
    assert measured.hyperparameter_error == pytest.approx(0.06 / (0.24 + 1e-5), rel=1e-6)


def test_an_inverse_that_holds_the_step_size_fails():
    """Likewise an inverse that returns the row's own step size."""

    class HeldStep(AbstractSGDW):
        def inverse(self, learning_rate, weight_decay):
            del learning_rate
            return WeightDecayFlow(weight_decay), jnp.asarray(0.05)

    report = verify(_row(HeldStep()), ["inverse"])
    assert report.failed == ("inverse",), str(report)
    assert report.checks["inverse"].measured.step_size_error == pytest.approx(3.0)  # 0.05/0.0125


def _stiff(eigenvalue):
    def stiff():
        return problems.quadratic([1.0, eigenvalue], params0=jnp.array([1.0, 1.0]))

    return stiff


def test_a_pre_asymptotic_fit_against_a_closed_form_is_no_order():
    """GD on ½(x² + 10y²) at h = 0.1, 0.05, 0.025 (and ½(x² + 20y²) at half those): local
    orders 1.64, 1.20, a least-squares "order" 1.42. Against the closed form the battery fitted
    that slope and asked nothing else, so a row claiming order 1.5 passed. It is the
    pre-asymptotic regime (`compare` says so), and the row fails with that verdict."""
    row = Correspondence(
        "gd_claims_order_1.5",
        flows.GradientFlow,
        maps.GradientDescent(),
        lambda h: optax.sgd(h),
        (
            Measurement(_stiff(10.0), 0.8, (0.1, 0.05, 0.025)),
            Measurement(_stiff(20.0), 0.8, (0.05, 0.025, 0.0125)),
        ),
        claimed_order=1.5,
    )
    fits = fitted_orders(row)
    for fit in fits:
        np.testing.assert_allclose(fit.local_orders, [1.642, 1.195], atol=1e-3)
        assert fit.order == pytest.approx(1.419, abs=1e-3)
        assert fit.verdict == "pre-asymptotic" and "differ by 0.45" in fit.reason, fit
    report = verify(row, ["order"])
    assert report.failed == ("order",)
    assert "pre-asymptotic" in str(report)


def test_python_float_hyperparameter_retraces():
    """A flow whose hyper-parameter is a plain float is static under `filter_jit`: each new
    value compiles anew, and the battery says so."""

    report = verify(_row(flow=_decay_flow_holding(WD)), ["retrace"])
    assert report.failed == ("retrace",) and report.checks["retrace"].measured == 2


class FieldPreconditionedFlow(_AbstractParamsFlow):
    r"""$\dot\theta = -c\,d(\theta)\odot\nabla L$ with the user's diagonal $d$ held as a plain
    (non-static) field: a function leaf of the flow's pytree."""

    diagonal: object
    c: jax.Array = eqx.field(converter=jnp.asarray, default=1.0)

    def vector_field(self, t, params, problem):
        d = self.diagonal(params)
        return jax.tree.map(lambda di, gi: -self.c * di * gi, d, problem.grad(params))

    def discretize(self, h):
        raise NotImplementedError


def _decay(params):
    return jax.tree.map(lambda x: 1.0 / (1.0 + x**2), params)


def test_a_function_held_by_the_flow_is_not_scaled():
    """The retrace and inverse checks scale the flow's floating hyper-parameters; a function
    leaf (the user's diagonal) is kept, not multiplied (a TypeError before)."""

    def preconditioned_sgd(learning_rate, c):
        def scale(updates, params):
            return jax.tree.map(lambda d, u: c * d * u, _decay(params), updates)

        return optax.chain(optax.stateless(scale), optax.sgd(learning_rate))

    class Map(maps.AbstractMap):
        order: ClassVar[float] = 1.0
        factory: ClassVar = staticmethod(preconditioned_sgd)

        def hyperparams(self, flow, h):
            return {"learning_rate": h, "c": flow.c}

    row = Correspondence(
        "field_preconditioned",
        lambda: FieldPreconditionedFlow(_decay, 2.0),
        Map(),
        None,
        (
            Measurement(one_mode, 1.0, (0.05, 0.025, 0.0125)),
            Measurement(two_modes, 1.0, (0.025, 0.0125, 0.00625)),
        ),
    )
    assert flow_retraces(row) == 0


def test_a_static_float_hyperparameter_retraces():
    """A hyper-parameter held as a static field is compiled in: every new value retraces.
    Scaling only the pytree's leaves left it unchanged, and the battery reported 0 retraces."""

    report = verify(_row(flow=_decay_flow_holding(eqx.field(static=True, default=WD))), ["retrace"])
    assert report.failed == ("retrace",) and report.checks["retrace"].measured == 2


def test_a_row_written_wrongly_is_refused_naming_the_argument():
    """The usual slips of a row written by hand: a flow or problem instance where a builder
    belongs, a map class, a single Measurement, a bad step size or horizon. Each was a
    TypeError deep inside the battery ('WDFlow' object is not callable), or nothing at all."""
    m = Measurement(one_mode, 1.0, (0.1, 0.05, 0.025))
    with pytest.raises(ValueError, match=r"Correspondence.flow must be a factory"):
        Correspondence("x", WeightDecayFlow(), SGDW(), None, (m, m))
    with pytest.raises(ValueError, match=r"AbstractMap instance \(e.g. `SGDW\(\)`\)"):
        Correspondence("x", WeightDecayFlow, SGDW, None, (m, m))
    with pytest.raises(ValueError, match=r"measurements must be a tuple of Measurement"):
        Correspondence("x", WeightDecayFlow, SGDW(), None, m)
    with pytest.raises(ValueError, match=r"claimed_order must be > 0"):
        Correspondence("x", WeightDecayFlow, SGDW(), None, (m, m), claimed_order=-1.0)
    with pytest.raises(ValueError, match=r"Measurement.problem must be a builder"):
        Measurement(one_mode(), 1.0, (0.1, 0.05))
    with pytest.raises(ValueError, match=r"step_sizes must be > 0"):
        Measurement(one_mode, 1.0, (0.1, -0.05))
    with pytest.raises(ValueError, match=r"step_sizes must be a sequence"):
        Measurement(one_mode, 1.0, 0.1)
    with pytest.raises(ValueError, match=r"t1 must be > 0"):
        Measurement(one_mode, 0.0, (0.1, 0.05))


def test_a_horizon_that_is_no_multiple_of_the_step_is_refused_against_a_closed_form():
    """t1 = 1 with h = 0.3: `compare` refuses it; against the closed form the battery rounded
    t1/h to 3 steps and fitted the errors of another horizon."""
    row = Correspondence(
        "gd",
        flows.GradientFlow,
        maps.GradientDescent(),
        lambda h: optax.sgd(h),
        (
            Measurement(two_modes, 1.0, (0.3, 0.15, 0.075)),
            Measurement(two_modes, 1.0, (0.05, 0.025, 0.0125)),
        ),
    )
    with pytest.raises(ValueError, match=r"t1=1.0 must be a positive integer multiple"):
        fitted_orders(row)


def test_a_curvature_whose_limit_the_map_refuses_is_skipped_and_said():
    """Heavy ball with damping 5 under the naive map on ½x²: h* = √29 - 5 = 0.385, where
    a·h* = 1.93 > 1 gives a negative momentum and the map refuses it; at 100 times the curvature
    the limit (√4.25 - 0.5)/10 = 0.156 runs and holds."""
    row = Correspondence(
        "heavy_ball_euler_damped",
        lambda: flows.HeavyBall(5.0),
        maps.NaiveEuler(),
        None,
        (
            Measurement(one_mode, 1.0, (0.05, 0.025, 0.0125)),
            Measurement(two_modes, 1.0, (0.05, 0.025, 0.0125)),
        ),
    )
    check = verify(row, ["stability"]).checks["stability"]
    refused, ran = check.measured
    assert refused.passed is None and "step_size <= 1/damping" in refused.refused
    assert refused.limit == pytest.approx(np.sqrt(29.0) - 5.0, rel=1e-9)
    assert ran.limit == pytest.approx((np.sqrt(4.25) - 0.5) / 10, rel=1e-9)
    assert ran.passed and check.passed
