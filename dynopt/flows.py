"""Continuous-time models of optimizers (`eqx.Module`s deriving from `AbstractFlow`)."""

from ._flows.adaptive import (
    AdamFlow as AdamFlow,
    AdamState as AdamState,
    RMSPropFlow as RMSPropFlow,
    RMSPropState as RMSPropState,
    SignFlow as SignFlow,
)
from ._flows.base import AbstractFlow as AbstractFlow
from ._flows.gradient import (
    GradientFlow as GradientFlow,
    ModifiedGradientFlow as ModifiedGradientFlow,
)
from ._flows.momentum import (
    half_step_start as half_step_start,
    HeavyBall as HeavyBall,
    rescale_momentum as rescale_momentum,
    RescaledGradientFlow as RescaledGradientFlow,
    slow_manifold_start as slow_manifold_start,
)
from ._flows.nesterov import NesterovODE as NesterovODE
from ._flows.polyak import PolyakFlow as PolyakFlow
from ._flows.preconditioned import (
    check_preconditioner as check_preconditioner,
    DiagonalPreconditioner as DiagonalPreconditioner,
    NewtonPreconditioner as NewtonPreconditioner,
    PreconditionedFlow as PreconditionedFlow,
)
