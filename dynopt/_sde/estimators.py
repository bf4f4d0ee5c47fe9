r"""Monte-Carlo estimators for flows with noise: a sample mean or variance with its standard error,
the total variation between a histogram and a law (with the floor that sampling alone gives), and
the Arrhenius fit of escape times."""

import numpy as np

from .._validation import positive_int


def _draws(samples, axis: int) -> np.ndarray:
    """`samples` as a float array with at least one draw along `axis` (none: a mean of 0/0)."""
    try:
        x = np.asarray(samples, float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"samples must be an array of real numbers, got {samples!r}.") from e
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
        raise ValueError(f"axis must be an integer, got {axis!r}.")
    if not -x.ndim <= axis < x.ndim or x.shape[axis] == 0:
        raise ValueError(
            f"samples must hold at least one draw along axis {axis}, got shape {x.shape}."
        )
    return x


def variance_with_se(samples) -> tuple[np.ndarray, np.ndarray]:
    r"""The sample variance $\hat v = \frac1n\sum_i (x_i - \bar x)^2$ along the first axis and
    its standard error $\sqrt{(\hat m_4 - \hat v^2)/n}$ ($\hat m_4$ the fourth central moment).

    **Arguments:** `samples`: shape `(n, ...)`, the draws along the first axis.

    **Returns:** `(variance, standard_error)`, each of shape `samples.shape[1:]`.

    **Raises:** `ValueError` for `samples` with no draw (shape `(0, ...)` or a scalar).
    """
    x = _draws(samples, 0)
    d = x - x.mean(axis=0)
    v = np.mean(d**2, axis=0)
    return v, np.sqrt((np.mean(d**4, axis=0) - v**2) / x.shape[0])


def histogram_tv(samples, probs, edges, rng: np.random.Generator, *, draws: int = 400):
    r"""Total variation $\frac12\sum_b |\hat p_b - p_b|$ between the histogram of `samples` on
    `edges` and bin probabilities $p_b$, and its Monte-Carlo floor: the mean and standard
    deviation of the same distance for `draws` multinomial samples of the same size from $p$
    (what a perfect sampler would score).

    Edges that do not cover the line (finite ends) leave mass outside them: the law's
    $1 - \sum_b p_b$ and the samples beyond the ends are then one more bin, "outside", in both
    the distance and its floor (the distance between the laws on the binned line).

    **Arguments:** `samples` (1-D), `probs` (one per bin, $\ge 0$, summing to 1, or to less
    when the edges are finite: e.g. `gibbs_bin_probabilities` on finite edges), `edges`, `rng`
    (drawn from for the floor), `draws`.

    **Returns:** `(tv, floor_mean, floor_sd)`.

    **Raises:** `ValueError` for `samples` not a non-empty 1-D array of finite values, `draws`
    not a positive integer, `rng` not a `numpy.random.Generator`, or `probs` that are not one
    finite number $\ge 0$ per bin or sum to more than 1.
    """
    x = np.asarray(samples)
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        # An empty histogram is 0/0 (NaN); a NaN sample would count as "outside" every bin.
        raise ValueError(
            f"samples must be a non-empty 1-D array of finite values, got shape {x.shape}"
            + (" with NaN or inf" if x.size and not np.all(np.isfinite(x)) else "")
            + "."
        )
    positive_int("draws", draws)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got "
            f"{type(rng).__name__}."
        )
    edges, probs = np.asarray(edges, float), np.asarray(probs, float)
    if probs.shape != (edges.size - 1,) or not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError(
            f"probs must hold one finite probability >= 0 per bin ({edges.size - 1} for "
            f"{edges.size} edges), got shape {probs.shape}."
        )
    outside = 1.0 - probs.sum()
    if outside < -1e-9:
        raise ValueError(f"probs must sum to at most 1, got {probs.sum():.12g}.")
    counts = np.histogram(x, edges)[0]
    escaped = x.size - counts.sum()
    # Without the outside bin, numpy's multinomial would hand its mass to the last bin (a floor
    # of 0.075 for an exact normal sampler on [-1.5, 1.5], where the true floor is 0.010).
    if outside > 1e-12 or escaped:
        probs = np.append(probs, max(outside, 0.0))
        counts = np.append(counts, escaped)
    tv = 0.5 * np.sum(np.abs(counts / x.size - probs))
    floor = 0.5 * np.abs(rng.multinomial(x.size, probs, size=draws) / x.size - probs).sum(axis=1)
    return float(tv), float(floor.mean()), float(floor.std())


def arrhenius_fit(temperatures, mean_times) -> tuple[float, float]:
    r"""Least-squares fit of $\log\tau = \log A + \Delta L/T$ to mean escape times $\tau(T)$:
    the barrier estimate $\Delta L$ (slope against $1/T$) and the prefactor $A$ (compare with
    `eyring_kramers_prefactor`).

    **Arguments:**

    - `temperatures`: $T$, a 1-D array of at least two distinct values $> 0$.
    - `mean_times`: the mean escape times $\tau(T)$, $> 0$, of the same length.

    **Returns:** `(slope, prefactor)`.

    **Raises:** `ValueError` unless `temperatures` and `mean_times` are 1-D, of one length
    $\ge 2$, with at least two distinct temperatures, every one finite and $> 0$.
    """
    temps, times = np.asarray(temperatures, float), np.asarray(mean_times, float)
    for name, x in (("temperatures", temps), ("mean_times", times)):
        if x.ndim != 1 or x.size < 2 or not np.all(np.isfinite(x)) or np.any(x <= 0):
            raise ValueError(
                f"{name} must be a 1-D array of at least two finite values > 0 (a log and a "
                f"1/T are fitted), got {x!r}."
            )
    if temps.size != times.size:
        raise ValueError(
            f"temperatures and mean_times must have one length, got {temps.size} and {times.size}."
        )
    if np.unique(temps).size < 2:
        raise ValueError("temperatures must hold at least two distinct values (a slope is fitted).")
    slope, intercept = np.polyfit(1 / temps, np.log(times), 1)
    return float(slope), float(np.exp(intercept))


def mean_with_se(samples, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r"""The sample mean along `axis` and its standard error $\hat s/\sqrt n$ ($\hat s$ the plug-in
    standard deviation, $n$ the number of draws).

    **Arguments:**

    - `samples`: the draws, an array.
    - `axis`: the axis of the draws (default 0).

    **Returns:** `(mean, standard_error)`.

    **Raises:** `ValueError` for `samples` with no draw along `axis` (or no such axis).
    """
    x = _draws(samples, axis)
    return x.mean(axis=axis), x.std(axis=axis) / np.sqrt(x.shape[axis])
