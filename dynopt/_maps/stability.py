r"""Measured stability limits of a map on a quadratic, to check its closed-form
`stability_limit` (and for maps that have none)."""

import jax.numpy as jnp
import numpy as np

from .._flows.base import AbstractFlow
from .._problems.quadratic import quadratic
from .._run import run
from .base import AbstractMap


def measure_stability_limit(
    map: AbstractMap,
    flow: AbstractFlow,
    lambda_max: float,
    *,
    num_steps: int,
    grid: int,
    rounds: int,
    bracket: tuple[float, float] = (0.05, 3.0),
) -> tuple[float, float]:
    r"""Bracket `[stable, unstable]` of the largest stable $z = h\sqrt{\lambda_{\max}}$ of
    `map(flow, h)` on $\frac{\lambda_{\max}}{2}x^2$ from $x_0 = 1$.

    Each of `rounds` rounds runs `grid` values of $z$ over the current bracket in one batched run
    (one compiled program); a run is unstable when it diverged or $|x_N| > |x_0|$ after
    `num_steps` steps, and the next bracket is the first unstable value and its predecessor.

    **Returns:** `(lo, hi)`; `(bracket[1], inf)` when no value is unstable, `(nan, first)` when
    the first already is.
    """
    if not (grid >= 2 and rounds >= 1 and num_steps >= 1 and lambda_max > 0):
        raise ValueError(
            "measure_stability_limit needs grid >= 2, rounds >= 1, num_steps >= 1 and "
            f"lambda_max > 0, got {grid}, {rounds}, {num_steps}, {lambda_max}"
        )
    problem = quadratic(jnp.array([lambda_max]))
    lo, hi = bracket
    for _ in range(rounds):
        zs = np.linspace(lo, hi, grid)
        h = jnp.asarray(zs / np.sqrt(lambda_max))
        traj = run(map(flow, h), problem, num_steps, every=num_steps)
        final = np.abs(np.asarray(traj.params)[:, -1, 0])
        unstable = np.asarray(traj.diverged) | (final > 1.0)
        if not unstable.any():
            return float(hi), float("inf")
        first = int(np.argmax(unstable))
        if first == 0:
            return float("nan"), float(zs[0])
        lo, hi = float(zs[first - 1]), float(zs[first])
    return lo, hi
