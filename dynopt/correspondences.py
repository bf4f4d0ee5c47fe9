"""The registry of correspondences (flow × map × optax baseline × claimed order × problems), and
the battery that checks a row: one function per check, and `verify` for all of them."""

from ._battery import (
    automatic_identity as automatic_identity,
    automatic_order as automatic_order,
    baseline_identity as baseline_identity,
    Check as Check,
    closed_form_deviation as closed_form_deviation,
    Conformance as Conformance,
    fitted_orders as fitted_orders,
    flow_retraces as flow_retraces,
    initial_state as initial_state,
    inverse_round_trip as inverse_round_trip,
    InverseRoundTrip as InverseRoundTrip,
    lyapunov_residual as lyapunov_residual,
    optax_conformance as optax_conformance,
    OrderFit as OrderFit,
    stability_limit_check as stability_limit_check,
    StabilityCheck as StabilityCheck,
    Verification as Verification,
    verify as verify,
)
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
