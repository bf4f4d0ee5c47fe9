"""Post 3's 1-D example, shared by the `adaptive` and `holistic` experiments.

L(x) = x(x − 1)(x − 3)² + 1.62276 from x = 4: GD settles in the local minimum x = 3; the truncated
Polyak flow θ' = −min(1/‖∇L‖, M)·L∇L/‖∇L‖ crosses the barrier and reaches the global minimum.
"""

import jax.numpy as jnp
import numpy as np

import dynopt
from dynopt import flows


def loss(x):
    x = x[0]
    return x * (x - 1) * (x - 3) ** 2 + 1.62276


def critical_points() -> tuple[float, float, float]:
    """(global minimum, barrier, local minimum x = 3) of L, from the roots of L'."""
    coeffs = np.poly([0.0, 1.0, 3.0, 3.0])  # x(x-1)(x-3)^2
    lo, barrier, hi = np.sort(np.roots(np.polyder(coeffs)).real)
    return float(lo), float(barrier), float(hi)


def polyak_vs_gd(M: float, h: float, n: int) -> tuple[dict, dict]:
    """Truncated Polyak (bound `M`) and GD, `n` steps of `h` from x = 4: `(metrics, arrays)`."""
    prob = dynopt.Problem(loss, jnp.array([4.0]), name="post3")
    polyak = dynopt.run(flows.PolyakFlow(M=M).discretize(h), prob, n)
    gd = dynopt.run(flows.GradientFlow().discretize(h), prob, n)
    x = np.asarray(polyak.params[:, 0])
    left = np.flatnonzero(x < 1.9)  # the barrier between the two basins peaks near x ≈ 1.9
    metrics = {
        "polyak_final_x": float(x[-1]),
        "polyak_final_loss": float(polyak.loss[-1]),
        "gd_final_x": float(gd.params[-1, 0]),
        "polyak_first_left_of_barrier_t": float(left[0] * h) if left.size else None,
    }
    arrays = {
        "polyak_ts": np.asarray(polyak.ts),
        "polyak_x": x,
        "gd_x": np.asarray(gd.params[:, 0]),
    }
    return metrics, arrays
