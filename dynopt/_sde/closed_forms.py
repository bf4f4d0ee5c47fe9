r"""Closed forms for flows with noise: the noisy quadratic whose SGD and SDE stationary laws are
known exactly, Gibbs bin probabilities, and the Eyring–Kramers escape time.

On $\frac12\lambda\theta^2$ with per-sample gradient variance $\sigma^2$, SGD with step $\eta$ and
batch $B$ has stationary variance $\eta c\sigma^2/(B\lambda(2-\eta\lambda))$ and its SDE
$\eta c\sigma^2/(2B\lambda)$ (`quadratic_stationary_covariance`), a ratio $2/(2-\eta\lambda)$.
"""

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Scalar
from .._problem import Problem
from .._problems.finite_sum import finite_sum
from .._validation import (
    function,
    interval,
    nonnegative,
    positive,
    positive_int,
    seed as check_seed,
)


def _sample_quadratic(theta: Array, x: Array, lam: Array) -> Scalar:
    return 0.5 * lam * jnp.sum(theta * theta) - jnp.sum(x * theta)


def noisy_quadratic(n: int, lam: float, sigma: float, seed: int) -> Problem:
    r"""$\ell_i(\theta) = \frac12\lambda\theta^2 - x_i\theta$, $\theta_0 = 1$, with $n$ centred
    $x_i$ of variance exactly $\sigma^2$: $L = \frac12\lambda\theta^2$ (up to a constant),
    per-sample gradient variance $\sigma^2$ (batch size 1; `SGDNoise` sets its own).

    **Arguments:** `n` samples (an integer $\ge 2$), curvature `lam` (finite), gradient noise
    `sigma` ($\ge 0$, finite), `seed` of the $x_i$ (an integer in $[0, 2^{32})$, as
    every data constructor's); else `ValueError` naming the argument.
    """
    if positive_int("n", n) < 2:
        raise ValueError(f"n must be >= 2 (a sample variance), got {n}")
    interval("lam", lam)
    nonnegative("sigma", sigma)
    seed = check_seed("seed", seed)  # the rule of every data constructor: [0, 2**32)
    x = np.random.default_rng(seed).normal(size=n)
    x = (x - x.mean()) / x.std() * sigma
    loss = eqx.Partial(_sample_quadratic, lam=jnp.asarray(lam))
    return finite_sum(loss, jnp.asarray(x)[:, None], jnp.array([1.0]), batch_size=1)


def gibbs_bin_probabilities(
    potential: Callable[[np.ndarray], np.ndarray],
    temperature: float,
    edges: np.ndarray,
    *,
    support: tuple[float, float] = (-3.0, 3.0),
    points: int = 60_001,
) -> np.ndarray:
    r"""Probabilities of the bins `edges` (may start/end at $\mp\infty$) under the 1-D Gibbs law
    $\propto e^{-L(x)/T}$, by the trapezoid rule on `points` nodes of `support` (outside it the
    law is taken as 0).

    **Arguments:** `potential` $L$ (vectorised NumPy), `temperature` $T > 0$, `edges` (strictly
    increasing, at least two), `support` $(a, b)$ with $a < b$ finite, `points` $\ge 2$.

    **Returns:** `len(edges) - 1` probabilities: summing to 1 when the edges cover the support
    (e.g. $\mp\infty$ ends), else to the law's mass between the first and the last edge.

    **Raises:** `ValueError` for a `potential` that is not callable, a `temperature` that is not
    finite and > 0, `edges` that are not strictly
    increasing (the probabilities would come out negative), a bad `support` or `points`, or a
    `potential` that is NaN on the grid.
    """
    function("potential", potential, "callable x -> L(x)")
    positive("temperature", temperature)  # finite: T = inf is the uniform law, not a Gibbs one
    edges = np.asarray(edges, float)
    if edges.ndim != 1 or edges.size < 2 or np.isnan(edges).any() or np.any(np.diff(edges) <= 0):
        raise ValueError(
            f"edges must be a strictly increasing 1-D array of >= 2 edges, got {edges}."
        )
    lo, hi = (float(x) for x in support)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"support must be finite (a, b) with a < b, got {support}.")
    if positive_int("points", points) < 2:
        raise ValueError(f"points must be an integer >= 2, got {points}.")
    grid = np.linspace(lo, hi, points)
    lp = -potential(grid) / temperature
    if np.isnan(lp).any():
        raise ValueError("potential is NaN on the support grid; give L where the law lives.")
    w = np.exp(lp - lp.max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    return np.diff(np.interp(np.clip(edges, grid[0], grid[-1]), grid, cdf))


def eyring_kramers_prefactor(curvature_min: float, curvature_saddle: float) -> float:
    r"""$2\pi/\sqrt{L''(x_{\min})\,|L''(x_s)|}$: the mean escape time of
    $dx = -L'(x)dt + \sqrt{2T}dW$ over a barrier $\Delta L$ is this times $e^{\Delta L/T}$ as
    $T \to 0$.

    **Arguments:** `curvature_min` $L''(x_{\min}) > 0$; `curvature_saddle` $L''(x_s) \ne 0$
    (negative at a barrier top; its absolute value is used).

    **Raises:** `ValueError` for a `curvature_min` that is not finite and > 0 (no minimum: the
    square root would be NaN), or a `curvature_saddle` that is not finite and non-zero."""
    positive("curvature_min", curvature_min, hint="(the curvature at the minimum)")
    interval("curvature_saddle", curvature_saddle)
    if curvature_saddle == 0:
        raise ValueError(
            "curvature_saddle must be non-zero (a barrier top has L'' < 0), got 0: the "
            "Eyring-Kramers prefactor needs a non-degenerate saddle."
        )
    return float(2 * np.pi / np.sqrt(curvature_min * abs(curvature_saddle)))
