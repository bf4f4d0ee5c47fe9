"""The registry of correspondences (flow × map × optax baseline × claimed order × problems)."""

from ._correspondences import (
    AUTOMATIC as AUTOMATIC,
    AutomaticCorrespondence as AutomaticCorrespondence,
    BY_NAME as BY_NAME,
    Correspondence as Correspondence,
    diagonal_preconditioner as diagonal_preconditioner,
    heavy_ball_velocity as heavy_ball_velocity,
    Measurement as Measurement,
    REGISTRY as REGISTRY,
)
