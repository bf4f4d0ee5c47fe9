r"""Convergence orders as fitted slopes, and whether a sweep of step sizes supports one.

A global error $e(\Delta t)$ of a method of order $p$ has the asymptotic expansion
$e(\Delta t) = C\,\Delta t^{p}\,(1 + c\,\Delta t^{q} + \dots)$ as $\Delta t \to 0$ ($q > 0$).
The slope of $\log e$ against $\log \Delta t$ is $p$ only where the correction $c\,\Delta t^q$
is negligible: the *asymptotic regime*. Outside it a least-squares slope is a number without
meaning (errors of 3.29, 3.17, 2.70, 0.196 fit a "slope" 1.24; an unstable run's 1e12, 1e7 fit
16.6). `assess_order` decides from the data which regime a sweep is in.
"""

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import Array, Float
from ._validation import interval, is_traced, positive


Verdict = Literal["asymptotic", "pre-asymptotic", "unstable", "too few step sizes"]
VERDICTS: tuple[str, ...] = ("asymptotic", "pre-asymptotic", "unstable", "too few step sizes")

# Consecutive local orders must agree to this (max - min): a quarter of the smallest gap between
# the orders a method can have (1/2 for strong SDE orders, 1 between integer orders), minus
# margin, so that the fitted order rounds to one candidate.
SLOPE_TOLERANCE = 0.2
# Every error must be below this fraction of the distance the solution travels. The slope test
# measures the expansion's correction directly; this guard catches errors that are no longer a
# perturbation of the solution (saturated at its size, where a few slopes can agree by chance).
RELATIVE_ERROR_LIMIT = 0.25
# Two local slopes are needed to see whether they agree: three step sizes.
MIN_STEP_SIZES = 3
# Agreeing local orders that still move one way by more than this get a note in the reason.
DRIFT_NOTE = 0.1
# Errors within this factor of their run's rounding level (one rounding of the iterate,
# eps * ||theta||) are at the floor of its precision: a rounding of that size alone moves a
# halving's local order by log2(1 + 1/ROUNDING_FACTOR) = DRIFT_NOTE.
ROUNDING_FACTOR = 1.0 / (2.0**DRIFT_NOTE - 1.0)


def fit_order(step_sizes: Float[Array, " k"], errors: Float[Array, " k"]) -> Float[Array, ""]:
    r"""Least-squares slope $p$ of $\log e = p\log h + c$ over the finite, positive errors.

    `compare` passes the time steps $h = \Delta t$ of the runs (not the map's step-size
    argument), so $p$ is the order in the time step whatever the discretization map. This is the
    raw fit: whether it means anything is `assess_order`'s question (`Comparison.verdict`).

    Returns `nan` when fewer than two points qualify. Works under `jit` (masking, not slicing).

    **Raises:** `ValueError` unless `step_sizes` and `errors` are 1-D arrays of one length.
    """
    h = jnp.asarray(step_sizes)
    e = jnp.asarray(errors)
    _same_length(h.shape, e.shape)
    return _fit(h, e)


@jax.jit
def _fit(h: Float[Array, " k"], e: Float[Array, " k"]) -> Float[Array, ""]:
    # One program per length (eagerly, each of these operations compiled a program of its own:
    # ~0.7 s of compilation in every process that fits an order).
    ok = jnp.isfinite(e) & (e > 0) & (h > 0)
    x = jnp.where(ok, jnp.log(jnp.where(ok, h, 1.0)), 0.0)
    y = jnp.where(ok, jnp.log(jnp.where(ok, e, 1.0)), 0.0)
    n = jnp.sum(ok)
    nf = jnp.maximum(n, 1).astype(x.dtype)
    xm = jnp.sum(x) / nf
    ym = jnp.sum(y) / nf
    sxx = jnp.sum(jnp.where(ok, (x - xm) ** 2, 0.0))
    sxy = jnp.sum(jnp.where(ok, (x - xm) * (y - ym), 0.0))
    slope = sxy / jnp.where(sxx > 0, sxx, 1.0)
    return jnp.where((n >= 2) & (sxx > 0), slope, jnp.nan)


def _same_length(h_shape: tuple, e_shape: tuple) -> None:
    """`ValueError` unless the step sizes and the errors are 1-D of one length: NumPy would
    broadcast a single error against every step size, or fail with its own message."""
    if len(h_shape) != 1 or e_shape != h_shape:
        raise ValueError(
            "step_sizes and errors must be 1-D arrays of one length (one error per step size), "
            f"got shapes {h_shape} and {e_shape}."
        )


def local_orders(step_sizes, errors) -> np.ndarray:
    r"""Slopes between consecutive entries, in the order given:
    $p_i = \log(e_i/e_{i+1}) / \log(h_i/h_{i+1})$ ($k-1$ values; `nan` where an error is not
    finite and positive or two step sizes coincide).

    **Raises:** `ValueError` unless `step_sizes` and `errors` are 1-D arrays of one length."""
    h = np.asarray(step_sizes, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    _same_length(h.shape, e.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = np.isfinite(e) & (e > 0)
        le = np.log(np.where(ok, e, np.nan))
        dh = np.diff(np.log(h))
        return np.where(dh != 0, np.diff(le) / np.where(dh != 0, dh, 1.0), np.nan)


class OrderAssessment(NamedTuple):
    """What `assess_order` concludes: the `verdict`, the `local_orders`, the `order` (the
    least-squares slope when asymptotic, else `nan`) and the `reason` in words."""

    verdict: str
    local_orders: np.ndarray
    order: float
    reason: str


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in np.asarray(values, dtype=np.float64)) + "]"


def _by_step(h: np.ndarray, slopes: np.ndarray) -> np.ndarray:
    """The local orders in order of decreasing step size (of each pair's geometric mean)."""
    return slopes[np.argsort(-np.sqrt(h[:-1] * h[1:]))]


def _flags(name: str, value, k: int) -> np.ndarray:
    """`value` as one boolean per step size (`None`: all `False`)."""
    if value is None:
        return np.zeros(k, bool)
    arr = np.asarray(value)
    if arr.shape != (k,) or arr.dtype != bool:
        raise ValueError(
            f"{name} must be one boolean per step size (shape ({k},)), got "
            f"{'dtype ' + str(arr.dtype) if arr.shape == (k,) else 'shape ' + str(arr.shape)}: "
            "a single flag would mark every step size alike."
        )
    return arr


def _checked_sweep(step_sizes, errors, scales, diverged, unstable, at_least):
    """`assess_order`'s arguments checked (`ValueError` naming the argument) and as float64
    and boolean arrays: `(h, e, scales, diverged, unstable)`."""
    for name, value in (("step_sizes", step_sizes), ("errors", errors)):
        if isinstance(value, str | bytes) or is_traced(value):
            raise ValueError(f"{name} must be a 1-D array of concrete numbers, got {value!r}.")
    try:
        h = np.asarray(step_sizes, dtype=np.float64)
        e = np.asarray(errors, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"step_sizes and errors must be 1-D arrays of numbers, got {step_sizes!r} and "
            f"{errors!r}."
        ) from exc
    _same_length(h.shape, e.shape)
    if h.size:
        positive("step_sizes", h)
        if np.unique(h).size != h.size:  # a repeated step size has no slope to the other
            raise ValueError(f"step_sizes must be distinct, got {h.tolist()}.")
    if np.any(e < 0):  # NaN and inf pass: a diverged run's error
        raise ValueError(
            f"errors must be >= 0 (norms; nan or inf for a diverged run), got {e.tolist()}."
        )
    if scales is not None:
        scales = np.asarray(interval("scales", scales, lower=0.0, allow_inf=True), np.float64)
        if scales.shape not in ((), h.shape):
            raise ValueError(
                f"scales must be one number or one per step size (shape {h.shape}), got shape "
                f"{scales.shape}."
            )
    if at_least is not None:
        # (an order a theorem guarantees as the step size goes to 0: positive)
        at_least = interval("at_least", at_least, lower=0.0, lower_open=True)
        if np.ndim(at_least):
            raise ValueError(f"at_least must be a number or None, got {at_least!r}.")
    return h, e, scales, _flags("diverged", diverged, h.size), _flags("unstable", unstable, h.size)


def assess_order(
    step_sizes,
    errors,
    *,
    scales=None,
    diverged=None,
    unstable=None,
    at_least: float | None = None,
    rounding=None,
    dtype: str | None = None,
) -> OrderAssessment:
    r"""Whether errors at several time steps $\Delta t_i$ are in the asymptotic regime of
    $e = C\Delta t^p(1 + O(\Delta t^q))$, and the order $p$ only if they are.

    Verdicts, checked in this order:

    1. `"unstable"`: some run diverged (`diverged`, non-finite or growing; see
       `dynopt.run`), or a step size is at or past a known linear stability limit (`unstable`).
       Such step sizes are never dropped silently to fit the others: the sweep as given has no
       order; remove them (the reason names them) and compare again.
    2. `"too few step sizes"`: fewer than 3. A single slope cannot show whether it is the
       limit: at least two local slopes must agree.
    3. `"asymptotic"` when all of
       - the errors are finite, positive and decrease strictly as $\Delta t$ decreases (every
         local order $p_i > 0$): convergence is visible;
       - the local orders agree, $\max_i p_i - \min_i p_i \le 0.2$ (`SLOPE_TOLERANCE`): the
         correction term no longer bends the curve (its effect on $p_i$ is
         $\approx c\,\Delta t^q (1 - 2^{-q})/\ln 2$ for a halving; it shrinks geometrically as
         $\Delta t$ does, and a spread of 0.2 still fixes $p$ to well within the gap of 1/2
         between candidate orders);
       - every error is at most 1/4 (`RELATIVE_ERROR_LIMIT`) of the solution's scale
         `scales` (the distance it travels, $D = \max_t\|\theta(t) - \theta(0)\|$): the
         discrete run is a perturbation of the solution, not another trajectory. An error that
         has saturated at the solution's size (a chaotic path, another basin) can show a few
         agreeing slopes by chance; the expansion's own correction is what the slope test
         sees (for explicit Euler on $\dot x = -\lambda x$, $e/D \approx 0.18\,h\lambda$
         and the first slope is off by 0.2 already at $e/D \approx 0.12$). Skipped when
         `scales` is `None`.
       When the local orders, taken toward smaller steps, still move one way by more than
       0.1 (`DRIFT_NOTE`), the reason says so: the fit stands, but its limit may differ by
       that much (chain(ema(0.9), scale(-h)) against its order-1 flow at h = 0.02 to 0.005:
       0.78 → 0.96, fit 0.87). Where the errors' orders are known to be `at_least` + j
       (j = 0, 1, …: the expansion's leading terms), a drifting fit more than
       `SLOPE_TOLERANCE` from all of them is `"pre-asymptotic"` (Adam against its order-1 flow
       on Rosenbrock at h = 0.02 to 0.005: 1.37 → 1.19, fit 1.28; at smaller steps 1.09,
       1.04, 1.02).
       Where the order cannot be below `at_least` as $\Delta t \to 0$ (a theorem, e.g. an order-$p$
       modified flow started where its runs start), a fit more than `SLOPE_TOLERANCE` below it
       is not the limit: `"pre-asymptotic"`, the reason saying so (default RMSprop's
       $g/\sqrt{g^2 + \varepsilon}$ bends on the scale $\sqrt\varepsilon$ = 1e-4 and fits 1.15
       against its order-2 flow at h = 0.02 to 0.005, with agreeing local orders).
    4. `"pre-asymptotic"` otherwise (too coarse, or errors at the reference's accuracy where
       the slopes scatter; the reason says which test failed). Scattered local orders above
       `at_least` that turn back toward smaller steps (not one-way, as a smooth expansion's
       approach to its order: GD on a quadratic, 1.72, 1.28) add a note: the loss may lack
       the $p + 1$ derivatives the expansion needs (Huber's loss, its Hessian jumping, against
       GD's order-2 flow: 2.72, 1.54, 1.61).

    With `rounding` $\rho_i$ (the runs' rounding level, one rounding of the iterate,
    $\varepsilon\|\theta\|$ for their dtype's $\varepsilon$), where the smallest step's error
    is within `ROUNDING_FACTOR` $= 1/(2^{0.1} - 1) \approx 13.9$ of it, the errors are at the
    floor of the runs' precision: a rounding of $\rho$ alone moves a halving's local order there
    by 0.1 (`DRIFT_NOTE`), many by more, and a smaller step does not lower them. The reason names
    that floor (and not smaller steps as the cure), and a verdict that would be
    `"asymptotic"` is `"pre-asymptotic"`: its slope is rounding's as much as the method's (a
    float32 order-2 sweep fitted 2.04 with its smallest error 8% off float64's). `compare`
    passes it for runs below float64 only (in float64 the reference's tolerance is the floor).

    **Arguments:** `step_sizes` ($\Delta t_i$, distinct), `errors` ($e_i$), and optionally
    `scales` (per step size or one), `diverged` and `unstable` (boolean per step size),
    `at_least`, the least order the errors can have as $\Delta t \to 0$, `rounding` (one number
    $\ge 0$ or one per step size) and `dtype`, the runs' dtype named with it.

    **Returns:** an `OrderAssessment` (`verdict`, `local_orders`, `order`, `reason`); the
    local orders are between consecutive step sizes in the order given when that order is
    monotone, else from the largest step size to the smallest (the sweep is sorted first).

    **Raises:** `ValueError` unless `step_sizes` are distinct finite numbers > 0 (1-D),
    `errors` one per step size and each $\ge 0$ (`nan`/`inf`: a diverged run), `scales` one
    number or one per step size, each $\ge 0$, `diverged` and `unstable` one boolean per step
    size, and `at_least` a finite number or `None`.
    """
    h, e, scales, div, beyond = _checked_sweep(
        step_sizes, errors, scales, diverged, unstable, at_least
    )
    rho = _rounding_levels(rounding, h)
    steps = np.diff(h)
    if not (np.all(steps < 0) or np.all(steps > 0)):
        # Slopes between neighbours in a shuffled sweep span non-adjacent step sizes and
        # average the curvature away ([0.01, 0.04, 0.02] hid a spread of 0.3): sorted first
        perm = np.argsort(-h)
        h, e, div, beyond = h[perm], e[perm], div[perm], beyond[perm]
        scales = scales[perm] if scales is not None and scales.ndim else scales
        rho = rho[perm] if rho is not None else None
    k = h.size
    slopes = local_orders(h, e)
    nan = float("nan")
    div = div | ~np.isfinite(e)
    if div.any() or beyond.any():
        parts = []
        if div.any():
            parts.append(f"step sizes {_fmt(h[div])} diverged")
        if beyond.any():
            parts.append(f"step sizes {_fmt(h[beyond])} are at or past the stability limit")
        reason = "; ".join(parts) + ": no order; compare again without them"
        return OrderAssessment("unstable", slopes, nan, reason)
    if k < MIN_STEP_SIZES:
        reason = f"{k} step size{'s' if k != 1 else ''}; an order needs at least {MIN_STEP_SIZES}"
        return OrderAssessment("too few step sizes", slopes, nan, reason)
    floor = _rounding_floor(h, e, rho, dtype)
    out = _regime(h, e, slopes, scales, at_least)
    if floor is None:
        return out
    if out.verdict == "asymptotic":  # (without the drift note's advice of a smaller step)
        agree = f"local orders {_fmt(slopes)} agree within {SLOPE_TOLERANCE}"
        return OrderAssessment("pre-asymptotic", slopes, nan, f"{agree}, but {floor}")
    reason = out.reason.removesuffix(": take smaller step sizes").removesuffix(
        "; take smaller step sizes"
    )
    return out._replace(reason=f"{reason}; {floor}")


def _rounding_levels(rounding, h: np.ndarray) -> np.ndarray | None:
    """`rounding` checked (`ValueError` naming it) and as one float64 per step size."""
    if rounding is None:
        return None
    rho = np.asarray(interval("rounding", rounding, lower=0.0), np.float64)
    if rho.shape not in ((), h.shape):
        raise ValueError(
            f"rounding must be one number or one per step size (shape {h.shape}), got shape "
            f"{rho.shape}."
        )
    return np.broadcast_to(rho, h.shape)


def _rounding_floor(h, e, rho, dtype) -> str | None:
    """`assess_order`'s note where the smallest step's error is within `ROUNDING_FACTOR` of its
    run's rounding level `rho`, else `None`."""
    if rho is None:
        return None
    near = e <= ROUNDING_FACTOR * rho
    if not near[np.argmin(h)]:
        return None
    what = f"{dtype} " if dtype else ""
    return (
        f"the errors at step sizes {_fmt(h[near])} are within {ROUNDING_FACTOR:.3g}x the "
        f"rounding level of the {what}runs (one rounding of the iterate, eps*|θ| = "
        f"{_fmt(rho[near])}): the floor of their precision, which no smaller step lowers, and "
        "where a slope is rounding's as much as the method's; for an order compare in float64 "
        "(params0 as float64)"
    )


def _regime(h, e, slopes, scales, at_least) -> OrderAssessment:
    """`assess_order`'s verdict for a sweep with no diverged run and enough step sizes."""
    nan = float("nan")
    if not np.all(e > 0):
        reason = (
            f"the errors at step sizes {_fmt(h[e == 0])} are exactly 0: those runs reproduce the "
            "reference to the last bit (a map exact on this problem, or a reference computed by "
            "the map itself), so they have no slope; check the reference, or fit the others"
        )
        return OrderAssessment("pre-asymptotic", slopes, nan, reason)
    if not np.all(slopes > 0):
        reason = f"errors do not decrease with the step size (local orders {_fmt(slopes)})"
        return OrderAssessment("pre-asymptotic", slopes, nan, reason)
    spread = float(slopes.max() - slopes.min())
    if spread > SLOPE_TOLERANCE:
        reason = (
            f"local orders {_fmt(slopes)} differ by {spread:.2g} > {SLOPE_TOLERANCE}: "
            "take smaller step sizes"
        )
        # Toward smaller steps the local orders of a smooth expansion move one way, toward
        # its order (GD on a quadratic: 1.72, 1.28); orders that turn back (Huber's 2.72,
        # 1.54, 1.61) are what a loss without the expansion's derivatives shows.
        turns = np.ptp(np.sign(np.diff(_by_step(h, slopes)))) > 1
        if at_least is not None and turns and np.any(slopes > at_least + SLOPE_TOLERANCE):
            # Scattered local orders above the order the errors must reach: the mark of a
            # loss without the derivatives the order-p error expansion needs.
            reason += (
                f"; or the loss may lack the {at_least + 1:g} derivatives an order-"
                f"{at_least:g} expansion needs (a non-smooth loss, e.g. Huber's, whose Hessian "
                "jumps): then smaller steps do not help"
            )
        return OrderAssessment("pre-asymptotic", slopes, nan, reason)
    if scales is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = e / np.broadcast_to(np.asarray(scales, dtype=np.float64), e.shape)
        if not np.all(rel <= RELATIVE_ERROR_LIMIT):
            reason = (
                f"errors up to {np.nanmax(rel) if np.any(np.isfinite(rel)) else np.inf:.2g} "
                f"of the solution's scale (> {RELATIVE_ERROR_LIMIT}): take smaller step sizes"
            )
            return OrderAssessment("pre-asymptotic", slopes, nan, reason)
    order = float(fit_order(h, e))
    if at_least is not None and order < at_least - SLOPE_TOLERANCE:
        reason = (
            f"local orders {_fmt(slopes)} agree, but their fit {order:.3g} is below the order "
            f"{at_least:g} the errors must reach as the step shrinks: not yet the limit (a scale "
            "in the problem or the map smaller than these steps bends the curve); take smaller "
            "step sizes"
        )
        return OrderAssessment("pre-asymptotic", slopes, nan, reason)
    reason = f"local orders {_fmt(slopes)} agree within {SLOPE_TOLERANCE}"
    # Local orders in order of decreasing step size. Agreeing within the tolerance, they may
    # still move one way by most of it: said (the verdict and the fit stand), unless the fit
    # is also far from every order the errors can have.
    by_step = _by_step(h, slopes)
    drift = float(by_step[-1] - by_step[0])
    if at_least is not None and abs(drift) > DRIFT_NOTE:
        # e = C Δt^p + D Δt^(p+1) + …: the limit is p, or p + j where leading terms vanish.
        nearest = at_least + max(0.0, round(order - at_least))
        if abs(order - nearest) > SLOPE_TOLERANCE:
            reason = (
                f"local orders {_fmt(slopes)} agree within {SLOPE_TOLERANCE} but still drift "
                f"by {drift:+.2g} toward smaller steps, and their fit {order:.3g} is more than "
                f"{SLOPE_TOLERANCE} from every order the errors can have ({at_least:g}, "
                f"{at_least + 1:g}, …): not yet the limit; take smaller step sizes"
            )
            return OrderAssessment("pre-asymptotic", slopes, nan, reason)
    if abs(drift) > DRIFT_NOTE:
        reason += (
            f", but still drift by {drift:+.2g} toward smaller steps: the limit may differ from "
            "the fit by that much; a smaller step size would confirm it"
        )
    return OrderAssessment("asymptotic", slopes, order, reason)
