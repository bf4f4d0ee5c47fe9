"""The registry of correspondences (flow × map × optax baseline × claimed order × problems)."""

from ._correspondences import (
    BY_NAME as BY_NAME,
    Correspondence as Correspondence,
    diagonal_preconditioner as diagonal_preconditioner,
    Measurement as Measurement,
    REGISTRY as REGISTRY,
)
