"""Continuous-time models of optimizers (`eqx.Module`s deriving from `AbstractFlow`)."""

from ._flows.base import AbstractFlow as AbstractFlow
from ._flows.gradient import (
    GradientFlow as GradientFlow,
    ModifiedGradientFlow as ModifiedGradientFlow,
)
