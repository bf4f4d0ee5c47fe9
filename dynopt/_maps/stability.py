r"""Measured stability limits of a map on a quadratic, to check its closed-form
`stability_limit` (and for maps that have none)."""

import jax.numpy as jnp
import numpy as np

from .._flows.base import AbstractFlow
from .._problems.quadratic import quadratic
from .._run import run
from .._validation import positive, positive_int
from .base import AbstractMap, concrete_scalar


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
    (one compiled program); a run is unstable when it diverged or grew: with $q = N/4$,
    $\max_{k \ge N-q}|x_k| > 1.01\max_{q \le k \le 2q}|x_k|$ (the envelope $\rho^k$ of a
    linear recurrence rises iff its spectral radius $\rho > 1$; a stable run's transient, such
    as the slow-manifold start's first step of $2.6|x_0|$, or an undamped orbit of amplitude
    above $|x_0|$, is not growth, and the 1% covers the sampling of a marginal orbit). The next
    bracket is the first unstable value and its predecessor.

    **Arguments:**

    - `map`: the map to test (an `AbstractMap`, called as `map(flow, h)` on a batch of step
      sizes).
    - `flow`: the flow it discretizes.
    - `lambda_max`: the curvature $\lambda_{\max} > 0$ of the test quadratic.
    - `num_steps`: $N$, the steps of each run, an integer $\ge 4$.
    - `grid`: the values of $z$ per round, an integer $\ge 2$.
    - `rounds`: the refinement rounds, a positive integer.
    - `bracket`: the initial bracket $(z_{lo}, z_{hi})$, $0 < z_{lo} < z_{hi}$ (default
      `(0.05, 3.0)`).

    **Returns:** `(lo, hi)`; `(bracket[1], inf)` when no value is unstable, `(nan, first)` when
    the first already is.

    **Raises:** `ValueError` unless `num_steps` is an integer $\ge 4$, `rounds` a positive
    integer, `grid` an integer $\ge 2$, `lambda_max` $> 0$ and `bracket` a pair
    $0 < z_{lo} < z_{hi}$; or where the map refuses a step size the bracket reaches.
    """
    if positive_int("num_steps", num_steps) < 4:
        raise ValueError(f"num_steps must be an integer >= 4 (four windows), got {num_steps}.")
    rounds = positive_int("rounds", rounds)
    if positive_int("grid", grid) < 2:
        raise ValueError(f"grid must be an integer >= 2 (a bracket needs two ends), got {grid}.")
    lambda_max = concrete_scalar("lambda_max", lambda_max, lower=0.0, lower_open=True)
    if np.shape(positive("bracket", bracket)) != (2,) or not bracket[0] < bracket[1]:
        # A reversed bracket scanned z downwards and reported its first point as unstable.
        raise ValueError(f"bracket must be (lo, hi) with 0 < lo < hi, got {bracket!r}.")
    problem = quadratic(jnp.array([lambda_max]))
    lo, hi = float(bracket[0]), float(bracket[1])
    for _ in range(rounds):
        zs = np.linspace(lo, hi, grid)
        h = jnp.asarray(zs / np.sqrt(lambda_max))
        try:
            disc = map(flow, h)
        except ValueError as error:
            # The map refuses some step size of the grid (e.g. a h <= 1 under strong damping):
            # the bracket is the caller's to change, not the step size it never chose.
            raise ValueError(
                f"bracket ({lo:g}, {hi:g}) reaches step sizes h = z/sqrt(lambda_max) up to "
                f"{hi / np.sqrt(lambda_max):.4g}, which {type(map).__name__} refuses: {error} "
                "Pass a bracket inside the map's range of z."
            ) from error
        traj = run(disc, problem, num_steps)
        x = np.abs(np.asarray(traj.params)[:, :, 0])
        q = num_steps // 4
        # Growth of the envelope, not |x_N| > |x_0|: that flagged stable runs whose transient
        # exceeds |x_0| (an undamped naive-Euler orbit: limit measured 1.53 for the exact 2).
        grew = x[:, num_steps - q :].max(axis=1) > 1.01 * x[:, q : 2 * q + 1].max(axis=1)
        unstable = np.asarray(traj.diverged) | grew
        if not unstable.any():
            return float(hi), float("inf")
        first = int(np.argmax(unstable))
        if first == 0:
            return float("nan"), float(zs[0])
        lo, hi = float(zs[first - 1]), float(zs[first])
    return lo, hi
