"""Discretization maps (`eqx.Module`s deriving from `AbstractMap`): `map(flow, step_size)` is the
optax optimizer that discretizes `flow`, with its clock, initial state, inverse, stability limit
and claimed order. `flow.discretize(h)` is its default map."""

from ._maps.adamw import AdamW as AdamW
from ._maps.adaptive import (
    Adam as Adam,
    GlobalRMSProp as GlobalRMSProp,
    RMSProp as RMSProp,
    Sign as Sign,
)
from ._maps.base import (
    AbstractMap as AbstractMap,
    standard_promotion as standard_promotion,
    with_standard_promotion as with_standard_promotion,
)
from ._maps.gradient import GradientDescent as GradientDescent
from ._maps.lion import Lion as Lion
from ._maps.momentum import (
    ConformalEuler as ConformalEuler,
    FixedMomentum as FixedMomentum,
    half_step_start as half_step_start,
    ImplicitMidpoint as ImplicitMidpoint,
    Leapfrog as Leapfrog,
    Lookahead as Lookahead,
    NaiveEuler as NaiveEuler,
    slow_manifold_start as slow_manifold_start,
)
from ._maps.nesterov import NAG as NAG
from ._maps.polyak import PolyakStep as PolyakStep, TruncatedPolyakStep as TruncatedPolyakStep
from ._maps.preconditioned import PreconditionedStep as PreconditionedStep
from ._maps.rmsprop_orbit import (
    rmsprop_crossover_eps as rmsprop_crossover_eps,
    rmsprop_orbit_distance as rmsprop_orbit_distance,
)
from ._maps.stability import measure_stability_limit as measure_stability_limit
