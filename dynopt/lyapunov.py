"""Lyapunov checks: measured loss rates along reference trajectories vs the rates flows predict."""

from ._lyapunov import (
    chain_rule_rate as chain_rule_rate,
    gradient_l1_norm as gradient_l1_norm,
    gradient_norm_sq as gradient_norm_sq,
    identity_deviation as identity_deviation,
    loss_rate as loss_rate,
    loss_values as loss_values,
    max_relative_deviation as max_relative_deviation,
    preconditioned_norm_sq as preconditioned_norm_sq,
    predicted_rate as predicted_rate,
    rates as rates,
)
