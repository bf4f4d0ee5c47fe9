"""Continuous-time models of optimizers (`eqx.Module`s deriving from `AbstractFlow`)."""

from ._flows.adamw import AdamWFlow as AdamWFlow
from ._flows.adaptive import (
    AdamFlow as AdamFlow,
    AdamState as AdamState,
    corrected_moments as corrected_moments,
    GlobalRMSPropFlow as GlobalRMSPropFlow,
    regularized_sign as regularized_sign,
    RMSPropFlow as RMSPropFlow,
    RMSPropState as RMSPropState,
    SignFlow as SignFlow,
)
from ._flows.base import AbstractFlow as AbstractFlow, AbstractMappedFlow as AbstractMappedFlow
from ._flows.central import central_solve as central_solve, CentralFlow as CentralFlow
from ._flows.central_rmsprop import (
    RMSPropCentralFlow as RMSPropCentralFlow,
    ScalarRMSPropCentralFlow as ScalarRMSPropCentralFlow,
)
from ._flows.gradient import (
    GradientFlow as GradientFlow,
    ModifiedGradientFlow as ModifiedGradientFlow,
)
from ._flows.lion import LionFlow as LionFlow, LionState as LionState
from ._flows.momentum import (
    damped_mode as damped_mode,
    HeavyBall as HeavyBall,
    oscillator_solution as oscillator_solution,
    rescale_momentum as rescale_momentum,
    RescaledGradientFlow as RescaledGradientFlow,
)
from ._flows.nesterov import bessel_solution as bessel_solution, NesterovODE as NesterovODE
from ._flows.polyak import PolyakFlow as PolyakFlow
from ._flows.preconditioned import (
    check_preconditioner as check_preconditioner,
    DiagonalPreconditioner as DiagonalPreconditioner,
    NewtonPreconditioner as NewtonPreconditioner,
    PreconditionedFlow as PreconditionedFlow,
)
from ._maps.momentum import (
    half_step_start as half_step_start,
    slow_manifold_start as slow_manifold_start,
)
