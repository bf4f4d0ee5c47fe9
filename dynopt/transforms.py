"""optax-compatible transforms that optax lacks (`GradientTransformationExtraArgs` where they need
the loss or the gradient function)."""

from ._maps.base import (
    standard_promotion as standard_promotion,
    with_standard_promotion as with_standard_promotion,
)
from ._transforms.adaptive import (
    adam as adam,
    adamw as adamw,
    global_rmsprop as global_rmsprop,
    polyak_sgd as polyak_sgd,
    preconditioned_sgd as preconditioned_sgd,
    scale_by_adam as scale_by_adam,
    scale_by_global_rms as scale_by_global_rms,
    scale_by_polyak_step as scale_by_polyak_step,
    scale_by_preconditioner as scale_by_preconditioner,
    scale_by_truncated_polyak as scale_by_truncated_polyak,
    ScaleByGlobalRmsState as ScaleByGlobalRmsState,
    truncated_polyak_sgd as truncated_polyak_sgd,
)
from ._transforms.modifying import modifying as modifying, usam as usam
from ._transforms.nesterov import (
    implicit_midpoint_momentum as implicit_midpoint_momentum,
    ImplicitMomentumState as ImplicitMomentumState,
    MomentumState as MomentumState,
    nag as nag,
    NagState as NagState,
    nesterov_momentum as nesterov_momentum,
)
