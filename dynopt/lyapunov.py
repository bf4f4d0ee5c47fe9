"""Lyapunov checks: measured loss rates along reference trajectories vs the rates flows predict."""

from ._lyapunov import (
    gradient_norm_sq as gradient_norm_sq,
    loss_rate as loss_rate,
    max_relative_deviation as max_relative_deviation,
)
