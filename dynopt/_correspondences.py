r"""The correspondences, one row each: flow × discretization map × optax baseline × claimed order ×
the problems it is measured on. Tests (`tests/test_correspondences.py`), benchmarks and
experiments read this registry; a new optimizer is one row.

Each `Correspondence` says: `map(flow(), h)` is the optax optimizer `baseline(h)` (iterate for
iterate, from the map's initial state), and its iterates follow `reference(h)` (default: the
flow) at $t = k\,\Delta t(h)$ with global error $O(\Delta t^{\text{order}})$ on each problem, at
the step sizes listed (chosen in the asymptotic regime).

`AUTOMATIC` holds the rows whose flow dynopt derives itself (`modified_flow`, automatic backward
error analysis): an optax optimizer as a user writes it, tracked by its order-$p$ modified flow
with global error $O(\tau^p)$ for each $p$ a measurement lists.
"""

import dataclasses
import functools as ft
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._compare import compare
from ._flows.adamw import AdamWFlow
from ._flows.adaptive import AdamFlow, GlobalRMSPropFlow, RMSPropFlow, SignFlow
from ._flows.base import AbstractFlow
from ._flows.gradient import GradientFlow, ModifiedGradientFlow
from ._flows.lion import LionFlow
from ._flows.momentum import HeavyBall, RescaledGradientFlow
from ._flows.nesterov import NesterovODE
from ._flows.polyak import PolyakFlow
from ._flows.preconditioned import DiagonalPreconditioner, PreconditionedFlow
from ._maps import adamw, adaptive, gradient, lion, momentum, nesterov, polyak, preconditioned
from ._maps.base import AbstractMap
from ._modified import modified_flow
from ._modified.flow import MAX_ORDER, ModifiedFlow
from ._problem import AbstractProblem, Problem
from ._problems.finite_sum import mlp_regression
from ._problems.landscapes import double_well, logcosh, rosenbrock
from ._problems.quadratic import quadratic
from ._transforms.modifying import usam
from ._validation import function, positive


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One problem on which a row's order is measured: the problem (built on demand), the
    horizon `t1` and the step sizes (each with $t_1/\\Delta t(h)$ an integer); for an
    automatic row, the truncation orders $p$ measured there."""

    problem: Callable[[], Problem]
    t1: float
    step_sizes: tuple[float, ...]
    orders: tuple[int, ...] = ()

    def __post_init__(self):
        if isinstance(self.problem, AbstractProblem) or not callable(self.problem):
            raise ValueError(
                "Measurement.problem must be a builder () -> Problem (e.g. a module-level "
                f"function returning it), got {type(self.problem).__name__}."
            )
        t1 = float(positive("t1", self.t1))
        if isinstance(self.step_sizes, str | bytes) or np.ndim(self.step_sizes) != 1:
            raise ValueError(
                f"step_sizes must be a sequence of positive numbers, got {self.step_sizes!r}."
            )
        if np.size(self.step_sizes) == 0:
            raise ValueError("step_sizes must be a non-empty sequence of positive numbers, got ().")
        step_sizes = tuple(float(h) for h in positive("step_sizes", np.asarray(self.step_sizes)))
        if len(set(step_sizes)) != len(step_sizes):  # a repeat has no slope to the other
            raise ValueError(f"step_sizes must be distinct, got {list(step_sizes)}.")
        # (`True` is an `int`: not an order.)
        if not all(
            isinstance(p, int | np.integer) and not isinstance(p, bool) and p >= 1
            for p in self.orders
        ):
            raise ValueError(f"orders must be integers >= 1, got {self.orders!r}.")
        object.__setattr__(self, "t1", t1)
        object.__setattr__(self, "step_sizes", step_sizes)
        object.__setattr__(self, "orders", tuple(int(p) for p in self.orders))

    @property
    def label(self) -> str:
        """The problem builder's name (`"logcosh"`, `"mlp"`, `"quadratic[1.0, 4.0]"`)."""
        return getattr(self.problem, "__name__", "problem").strip("_")


@dataclasses.dataclass(frozen=True)
class Correspondence:
    r"""A row of the registry.

    **Fields:** `name`; `flow` (a factory with the row's hyper-parameters); `map` (an
    `AbstractMap`); `baseline` ($h \mapsto$ the raw optax transform a user would write, `None`
    where optax lacks it); `measurements` (at least two problems); `claimed_order` (in
    $\Delta t$; `None`: the map's `order`, read as `order`); `reference` ($h \mapsto$ the flow
    the iterates follow; default the flow itself, e.g. `ModifiedGradientFlow(h)` for the order-2
    row of GD).
    """

    name: str
    flow: Callable[[], AbstractFlow]
    map: AbstractMap
    baseline: Callable[[float], optax.GradientTransformation] | None
    measurements: tuple[Measurement, ...]
    claimed_order: float | None = None
    reference: Callable[[float], AbstractFlow] | None = None

    def __post_init__(self):
        if isinstance(self.flow, AbstractFlow) or not callable(self.flow):
            raise ValueError(
                "Correspondence.flow must be a factory () -> flow (e.g. the flow class, or "
                f"`lambda: {type(self.flow).__name__}(...)`), got {type(self.flow).__name__}."
            )
        if isinstance(self.map, type) or not isinstance(self.map, AbstractMap):
            what = self.map.__name__ if isinstance(self.map, type) else type(self.map).__name__
            raise ValueError(
                f"Correspondence.map must be an AbstractMap instance (e.g. `{what}()`), got "
                f"{what}{' (the class)' if isinstance(self.map, type) else ''}."
            )
        for name in ("baseline", "reference"):
            function(
                f"Correspondence.{name}",
                getattr(self, name),
                "None or a callable of the step size",
                allow_none=True,
            )
        if isinstance(self.measurements, Measurement) or not all(
            isinstance(m, Measurement) for m in self.measurements
        ):
            raise ValueError(
                "Correspondence.measurements must be a tuple of Measurement (the battery asks "
                f"at least two), got {self.measurements!r}."
            )
        object.__setattr__(self, "measurements", tuple(self.measurements))
        if self.claimed_order is not None:
            positive("claimed_order", self.claimed_order)

    @property
    def order(self) -> float:
        """The claimed global order in $\\Delta t$."""
        return float(self.map.order if self.claimed_order is None else self.claimed_order)

    def discretization(self, step_size):
        """`map(flow(), step_size)`."""
        return self.map(self.flow(), step_size)

    def reference_flow(self, step_size) -> AbstractFlow:
        """The flow the iterates follow at `step_size`."""
        return self.flow() if self.reference is None else self.reference(step_size)


def _halving(t1: float, n0: int, k: int = 3) -> tuple[float, ...]:
    return tuple(t1 / (n0 * 2**i) for i in range(k))


def _quad(eigenvalues, params0):
    def build():
        return quadratic(jnp.asarray(eigenvalues), params0=jnp.asarray(params0))

    # The measurement's label (two quadratics of one row told apart in its reports).
    build.__name__ = f"quadratic{list(eigenvalues)}"
    return build


def _rosen():
    # A mild Rosenbrock (b = 2, gradients O(1), Hessian O(10)): the step sizes below are in the
    # asymptotic regime at a few hundred steps (the classic b = 100 start needs h << 1e-3).
    return rosenbrock(b=2.0, params0=jnp.array([-0.5, 0.5]))


def _well():
    return double_well(params0=jnp.array([0.3, -1.2]))


def diagonal_preconditioner(params):
    r"""$d(\theta) = 1/(1 + \theta^2)$: a state-dependent SPD diagonal (the registry's example)."""
    return jax.tree.map(lambda x: 1.0 / (1.0 + x**2), params)


_Q = _quad([1.0, 4.0], [1.0, -1.5])
_OSC = _quad([1.0], [1.0])
_STIFF = _quad([0.5, 10.0], [1.0, 1.0])

# Hyper-parameters of the rows (the baselines repeat them by hand, as a user would).
_A = 0.5  # heavy-ball damping
_RMS = dict(kappa=2.0, eps=1e-4, initial_scale=1.0)
_ADAM = dict(a1=2.0, a2=5.0, eps=1e-6)
# Where ε is no rounding: on _Q and rosen |g| = O(1) ≫ ε, and a map that mishandles ε (passes
# ε·h, its baseline and inverse alike) fitted order 1 on both. Adam's √v̂ + ε with
# |g| = O(1e-6) = ε (the flow is Adam's with ε = 1 on _Q, by its scale invariance: O(1)
# motion); RMSprop's √(G + ε) with g² = O(1e-4) = ε once G₀ = 1 has decayed (e^(-κt) ≈ 3e-4
# at t = 4). The wrong map fits -0.02 (Adam) and 0.70 (RMSprop) there.
_ADAM_EPS = Measurement(_quad([1e-6, 4e-6], [1.0, -1.5]), 1.0, _halving(1.0, 50))
_RMS_EPS = Measurement(_quad([1e-2, 4e-2], [1.0, -1.5]), 4.0, _halving(4.0, 100))
# Each measured on _Q, on rosen and where ε matters (the global and per-coordinate RMSprop rows
# alike, the Adam and AdamW rows alike).
_Q_ROSEN = (Measurement(_Q, 1.0, _halving(1.0, 50)), Measurement(_rosen, 0.5, _halving(0.5, 50)))
_RMS_MEASURED, _ADAM_MEASURED = (*_Q_ROSEN, _RMS_EPS), (*_Q_ROSEN, _ADAM_EPS)
_WD = 0.5
_LION = dict(a2=3.0, b1=0.9, weight_decay=0.5, width=0.0)
_BETA = 0.9


def _sgd_momentum(alpha, beta):
    return optax.sgd(alpha, momentum=beta)


REGISTRY: tuple[Correspondence, ...] = (
    Correspondence(
        "gd",
        GradientFlow,
        gradient.GradientDescent(),
        lambda h: optax.sgd(h),
        (Measurement(_Q, 2.0, _halving(2.0, 40)), Measurement(_rosen, 0.5, _halving(0.5, 50))),
    ),
    Correspondence(
        "gd_modified_flow",
        GradientFlow,
        gradient.GradientDescent(),
        lambda h: optax.sgd(h),
        (Measurement(_Q, 2.0, _halving(2.0, 40)), Measurement(_well, 1.0, _halving(1.0, 100))),
        claimed_order=2.0,
        reference=ModifiedGradientFlow,
    ),
    Correspondence(
        "heavy_ball_leapfrog",
        lambda: HeavyBall(_A),
        momentum.Leapfrog(),
        lambda h: _sgd_momentum(h**2 / (1 + _A * h / 2), (1 - _A * h / 2) / (1 + _A * h / 2)),
        (Measurement(_OSC, 4.0, _halving(4.0, 40)), Measurement(_rosen, 1.0, _halving(1.0, 50))),
    ),
    Correspondence(
        "heavy_ball_leapfrog_zero_trace",
        lambda: HeavyBall(_A),
        momentum.Leapfrog(half_step=False),
        lambda h: _sgd_momentum(h**2 / (1 + _A * h / 2), (1 - _A * h / 2) / (1 + _A * h / 2)),
        (Measurement(_OSC, 4.0, _halving(4.0, 80)), Measurement(_Q, 2.0, _halving(2.0, 80))),
    ),
    Correspondence(
        "heavy_ball_euler",
        lambda: HeavyBall(_A),
        momentum.NaiveEuler(),
        lambda h: _sgd_momentum(h**2, 1 - _A * h),
        (Measurement(_OSC, 4.0, _halving(4.0, 80)), Measurement(_Q, 2.0, _halving(2.0, 80))),
    ),
    Correspondence(
        "heavy_ball_conformal",
        lambda: HeavyBall(_A),
        momentum.ConformalEuler(),
        lambda h: _sgd_momentum(h**2, jnp.exp(-_A * h)),
        (Measurement(_OSC, 4.0, _halving(4.0, 80)), Measurement(_Q, 2.0, _halving(2.0, 80))),
    ),
    Correspondence(
        "heavy_ball_nesterov",
        lambda: HeavyBall(_A),
        momentum.Lookahead(1.0),
        None,  # optax's nesterov=True holds the look-ahead point, not θ (tests/test_transforms.py)
        (Measurement(_OSC, 4.0, _halving(4.0, 80)), Measurement(_Q, 2.0, _halving(2.0, 80))),
    ),
    Correspondence(
        "heavy_ball_nesterov_midpoint",
        lambda: HeavyBall(_A),
        momentum.Lookahead(0.5),
        None,
        (Measurement(_OSC, 4.0, _halving(4.0, 80)), Measurement(_Q, 2.0, _halving(2.0, 80))),
    ),
    Correspondence(
        "heavy_ball_implicit_midpoint",
        lambda: HeavyBall(_A),
        momentum.ImplicitMidpoint(),
        None,
        (Measurement(_OSC, 4.0, _halving(4.0, 80)), Measurement(_Q, 2.0, _halving(2.0, 80))),
    ),
    Correspondence(
        "fixed_momentum",
        lambda: RescaledGradientFlow(_BETA),
        momentum.FixedMomentum(),
        lambda h: _sgd_momentum(h, _BETA),
        (Measurement(_OSC, 1.0, _halving(1.0, 200)), Measurement(_Q, 0.5, _halving(0.5, 400))),
    ),
    Correspondence(
        "nag",
        NesterovODE,
        nesterov.NAG(),
        None,  # optax has no (k-1)/(k+r-1) schedule
        (
            Measurement(_OSC, 2.0, tuple((2.0 / n) ** 2 for n in (100, 200, 400))),
            Measurement(_Q, 1.0, tuple((1.0 / n) ** 2 for n in (100, 200, 400))),
        ),
    ),
    Correspondence(
        "rmsprop",
        lambda: RMSPropFlow(**_RMS),
        adaptive.RMSProp(),
        lambda h: optax.rmsprop(
            h, decay=1 - 2.0 * h, eps=1e-4, initial_scale=1.0, eps_in_sqrt=True
        ),
        _RMS_MEASURED,
    ),
    Correspondence(
        "global_rmsprop",
        lambda: GlobalRMSPropFlow(**_RMS),
        adaptive.GlobalRMSProp(),
        None,  # optax's rmsprop is per coordinate (the same for one scalar parameter)
        _RMS_MEASURED,
    ),
    Correspondence(
        "adam",
        lambda: AdamFlow(**_ADAM),
        adaptive.Adam(),
        lambda h: optax.adam(h, b1=1 - 2.0 * h, b2=1 - 5.0 * h, eps=1e-6),
        _ADAM_MEASURED,
    ),
    Correspondence(
        "adamw",
        lambda: AdamWFlow(**_ADAM, weight_decay=_WD),
        adamw.AdamW(),
        lambda h: optax.adamw(h, b1=1 - 2.0 * h, b2=1 - 5.0 * h, eps=1e-6, weight_decay=0.5),
        _ADAM_MEASURED,
    ),
    Correspondence(
        "lion",
        lambda: LionFlow(**_LION),
        lion.Lion(),
        lambda h: optax.lion(h, b1=0.9, b2=1 - 3.0 * h, weight_decay=0.5),
        # Exact sign (width 0): horizons before any component of the momentum mix vanishes.
        (
            Measurement(_quad([1.0], [2.0]), 1.0, _halving(1.0, 50)),
            Measurement(_quad([1.0, 3.0], [2.0, -3.0]), 1.0, _halving(1.0, 50)),
        ),
    ),
    Correspondence(
        "sign",
        lambda: SignFlow(width=0.0),
        adaptive.Sign(),
        lambda h: optax.sign_sgd(h),
        # Past the arrival at the minimum sign descent chatters between x*+fh and x*-(1-f)h,
        # f = frac((x0-x*)/h): the max error is max(f, 1-f) h. With x0 = (k + 1/3) h0, f
        # alternates 1/3, 2/3 under halving, so the error is (2/3) h at every step size: the
        # exact (Filippov) closed form is the reference.
        (
            Measurement(_quad([1.0], [11 / 15]), 1.5, _halving(1.5, 15)),
            Measurement(_quad([3.0], [-13 / 30]), 1.5, _halving(1.5, 15)),
        ),
    ),
    Correspondence(
        "polyak",
        PolyakFlow,
        polyak.PolyakStep(),
        lambda h: optax.chain(
            optax.scale_by_polyak(max_learning_rate=jnp.inf), optax.scale_by_learning_rate(h)
        ),
        (Measurement(_Q, 1.0, _halving(1.0, 50)), Measurement(_rosen, 0.5, _halving(0.5, 50))),
    ),
    Correspondence(
        "polyak_truncated",
        lambda: PolyakFlow(M=0.5),
        polyak.TruncatedPolyakStep(),
        None,
        (Measurement(_Q, 1.0, _halving(1.0, 50)), Measurement(_rosen, 0.5, _halving(0.5, 50))),
    ),
    Correspondence(
        "preconditioned",
        lambda: PreconditionedFlow(DiagonalPreconditioner(diagonal_preconditioner)),
        preconditioned.PreconditionedStep(),
        None,
        (Measurement(_STIFF, 1.0, _halving(1.0, 50)), Measurement(_rosen, 0.5, _halving(0.5, 50))),
    ),
)


@dataclasses.dataclass(frozen=True)
class AutomaticCorrespondence:
    r"""A row of `AUTOMATIC`: an optax optimizer and the flows derived from it.

    `modified_flow(optimizer, h, p, **options)` is the order-$p$ flow, `flow(h, p)
    .discretize(h)` is the optimizer itself (iterate for iterate; fast-regime states start on
    their slow manifold) and its iterates follow the order-$p$ flow with global error
    $O(\tau^p)$, $\tau$ the time per step, on each measurement's problem and orders.

    **Fields:** `name`; `optimizer` ($h \mapsto$ the optax transform, as a user writes it);
    `measurements` (each with the orders $p$ it measures); `options` (keywords of
    `modified_flow`: `state`, `state_map`, `time_unit`; a dict or `(name, value)` pairs, stored
    as pairs sorted by name).

    **Raises:** `ValueError` for an optimizer that is not callable, no measurement, a
    measurement without orders (nothing the battery could fail) or with an order above
    `modified_flow`'s 4, or options that are not those keywords or not hashable.
    """

    name: str
    optimizer: Callable[[Any], optax.GradientTransformation]
    measurements: tuple[Measurement, ...]
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        function(
            "AutomaticCorrespondence.optimizer",
            self.optimizer,
            "a callable h -> optax transform (e.g. `lambda h: optax.adam(h)`)",
        )
        ms = self.measurements
        if (
            not isinstance(ms, tuple | list)
            or not ms
            or not all(isinstance(m, Measurement) for m in ms)
        ):
            raise ValueError(
                "AutomaticCorrespondence.measurements must be a non-empty tuple of Measurement, "
                f"each with the orders p it measures (orders=(1, 2)), got {ms!r}."
            )
        for i, m in enumerate(ms):
            # With no order the battery has no fit to fail: its order check would pass empty.
            if not m.orders:
                raise ValueError(
                    f"AutomaticCorrespondence.measurements[{i}] ({m.label}) lists no orders: an "
                    "automatic row measures its order-p flow at each p of `orders`; give at "
                    "least one, e.g. Measurement(problem, t1, step_sizes, orders=(1, 2))."
                )
            if max(m.orders) > MAX_ORDER:
                raise ValueError(
                    f"orders must be integers in [1, {MAX_ORDER}] (modified_flow's), got "
                    f"{m.orders} in measurements[{i}] ({m.label})."
                )
        object.__setattr__(self, "measurements", tuple(ms))
        object.__setattr__(self, "options", _automatic_options(self.options))

    def flow(self, step_size, order: int = 1) -> ModifiedFlow:
        """The order-`order` modified flow at `step_size`."""
        return modified_flow(self.optimizer, step_size, order, **dict(self.options))

    def discretization(self, step_size, order: int = 1):
        """The optimizer at `step_size` as the discretization of its flow (its initial state on
        the slow manifold in the fast regime)."""
        return self.flow(step_size, order).discretize(step_size)

    def reference(self, order: int) -> Callable[[Any], ModifiedFlow] | None:
        r"""$h \mapsto$ the order-`order` flow, for `compare`; `None` at order 1, where the
        continuum limit does not depend on $h$ (one reference solve, not one per step)."""
        if order == 1:
            return None
        return _reference(self.optimizer, order, self.options)

    def compare(self, measurement: Measurement, order: int):
        """`dynopt.compare` of the optimizer against its order-`order` flow on `measurement`
        (Tsit5 reference): the fitted order should be `order`."""
        return compare(
            self.flow(measurement.step_sizes[0], order),
            measurement.problem(),
            measurement.step_sizes,
            measurement.t1,
            reference=self.reference(order),
            solver="tsit5",
        )


# `modified_flow`'s keywords that a row may fix (`problem` is the measurement's).
_OPTIONS = ("state", "state_map", "time_unit")


def _automatic_options(options) -> tuple[tuple[str, Any], ...]:
    """`options` (a dict or `(name, value)` pairs of `_OPTIONS`) as pairs sorted by name: one
    hashable key per set of keywords (`_reference` caches by it), or a `ValueError`."""
    if isinstance(options, dict):
        pairs = list(options.items())
    elif isinstance(options, tuple | list) and all(
        isinstance(p, tuple | list) and len(p) == 2 and isinstance(p[0], str) for p in options
    ):
        pairs = [tuple(p) for p in options]
    else:
        raise ValueError(
            "AutomaticCorrespondence.options must be a dict or a tuple of (name, value) pairs "
            f"of modified_flow's keywords ({', '.join(_OPTIONS)}), got {options!r}."
        )
    names = [n for n, _ in pairs]
    unknown = [n for n in names if n not in _OPTIONS]
    if unknown or len(set(names)) != len(names):
        raise ValueError(
            f"AutomaticCorrespondence.options names {unknown or names} (each once, among "
            f"modified_flow's keywords {', '.join(_OPTIONS)})."
        )
    for name, value in pairs:
        try:
            hash(value)
        except TypeError:
            raise ValueError(
                "AutomaticCorrespondence.options must be hashable (the battery caches each "
                f"order's reference flow by them); {name}={value!r} is not: give a tuple, e.g. "
                "state_map=(forward, inverse) of module-level functions."
            ) from None
    return tuple(sorted(pairs, key=lambda p: p[0]))


@ft.cache
def _reference(optimizer, order: int, options) -> Callable[[Any], ModifiedFlow]:
    # One object per row and order: `compare` takes the reference as a static argument, so a
    # new partial per call would compile the comparison anew.
    return ft.partial(modified_flow, optimizer, order=order, **dict(options))


def _mlp():
    # A tanh MLP with pytree params (2 -> 4 -> 1, 17 parameters) on 16 full-batch samples.
    return mlp_regression(num_samples=16, dim=2, width=4, depth=1, batch_size=16, seed=1)


def heavy_ball_velocity(tau, damping: float = 1.5):
    r"""Heavy ball in $\sqrt\alpha$ time: `optax.sgd(τ², momentum=1 - aτ)`'s iterates with its trace
    in velocity units ($\tau\times$ optax's trace),

    $$m_{k+1} = (1 - a\tau)\,m_k + \tau g_k,\qquad \theta_{k+1} = \theta_k - \tau m_{k+1},$$

    a function of the time per step $\tau$: a slow state whose continuum limit is `HeavyBall(a)`
    with $v = -m$.

    **Arguments:**

    - `tau`: the time per step $\tau$ (the step size of the correspondence).
    - `damping`: the friction $a$ (default 1.5); the trace's decay is $1 - a\tau$.

    **Returns:** an `optax.GradientTransformation`, `chain(scale(τ), trace(1 - aτ), scale(-τ))`.
    """
    return optax.chain(optax.scale(tau), optax.trace(decay=1 - damping * tau), optax.scale(-tau))


_LADDER = (0.02, 0.01, 0.005)
_T1 = 0.4


def _both(orders=(1, 2, 3), step_sizes=_LADDER):
    return (
        Measurement(logcosh, _T1, step_sizes, orders),
        Measurement(_mlp, _T1, step_sizes, orders),
    )


AUTOMATIC: tuple[AutomaticCorrespondence, ...] = (
    AutomaticCorrespondence("auto_sgd", lambda h: optax.sgd(h), _both()),
    AutomaticCorrespondence("auto_heavy_ball", lambda h: optax.sgd(h, momentum=0.5), _both()),
    AutomaticCorrespondence(
        "auto_nesterov", lambda h: optax.sgd(h, momentum=0.5, nesterov=True), _both()
    ),
    AutomaticCorrespondence("auto_usam", lambda h: usam(h, rho=0.05), _both()),
    AutomaticCorrespondence(
        "auto_chain_wd_momentum",
        lambda h: optax.chain(optax.add_decayed_weights(0.1), optax.sgd(h, momentum=0.5)),
        _both(),
    ),
    # Slow state: the decay scales with h, an ODE on (θ, ν). The state relaxes at rate 2 and
    # g²/(ν + ε) is stiff: at h = 0.02 the h^(p+1) term is not yet small against the h^p one
    # (local slopes 2.69, 2.86, 2.94 from h = 0.04 at p = 3); one halving further down is closer.
    AutomaticCorrespondence(
        "auto_rmsprop_slow",
        lambda h: optax.rmsprop(h, decay=1 - 2 * h, eps=0.5),
        _both(step_sizes=(0.01, 0.005, 0.0025)),
    ),
    # Fixed decays (the fast regime, optax's defaults in kind).
    AutomaticCorrespondence(
        "auto_rmsprop",
        lambda h: optax.rmsprop(h, decay=0.6, eps=0.3),
        (Measurement(logcosh, _T1, _LADDER, (2,)),),
    ),
    # A trace after the learning rate: the state holds step-scaled updates (moves θ at h = 0,
    # manifold from M_0 = 0), one slow-manifold term more per order.
    AutomaticCorrespondence(
        "auto_rmsprop_momentum",
        lambda h: optax.rmsprop(h, decay=0.6, eps=0.3, momentum=0.5),
        (Measurement(logcosh, _T1, _LADDER, (2,)), Measurement(_mlp, _T1, _LADDER, (1,))),
    ),
    AutomaticCorrespondence(
        "auto_adam",
        lambda h: optax.adam(h, b1=0.5, b2=0.6, eps=0.3),
        (Measurement(_mlp, _T1, _LADDER, (2,)),),
    ),
    AutomaticCorrespondence(
        "auto_adamw",
        lambda h: optax.adamw(h, b1=0.5, b2=0.6, eps=0.3, weight_decay=0.1),
        # On log-cosh the ladder is pre-asymptotic at p = 2 (fit 1.89); the MLP's is not.
        (Measurement(_mlp, _T1, _LADDER, (2,)),),
    ),
    # A coupled fast state: AdaBelief's second moment reads the new first moment (the
    # manifold solved leaf after leaf, `OptimizerSpec.sweeps` = 2). eps_root > 0 because on the
    # manifold g - m = O(h): with optax's eps_root = 1e-16 the root sqrt(O(h²) + 1e-16) is not
    # analytic at the scale of h, and the order-2 flow measures order 0.93, not 2.
    AutomaticCorrespondence(
        "auto_adabelief",
        lambda h: optax.adabelief(h, b1=0.5, b2=0.6, eps=0.3, eps_root=0.2),
        (Measurement(logcosh, _T1, _LADDER, (1, 2, 3)), Measurement(_mlp, _T1, _LADDER, (2,))),
    ),
    AutomaticCorrespondence(
        "auto_heavy_ball_velocity",
        heavy_ball_velocity,
        (Measurement(logcosh, _T1, _LADDER, (3,)), Measurement(_mlp, _T1, _LADDER, (2,))),
    ),
)

BY_NAME: dict[str, Correspondence | AutomaticCorrespondence] = {
    row.name: row for row in REGISTRY + AUTOMATIC
}
