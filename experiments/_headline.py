"""Headline numbers: what a run card promises, read back from a results folder.

A card lists its `HEADLINES`: a key into `metrics.json`, a label a reader understands, and what
the mathematics predicts (a value with a tolerance, or a bound). The CLI prints them after each
run and the results page (`_page.py`) tabulates them, so a reader sees each number next to the
value it should have, not only a path.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Headline:
    """One headline number of a run card.

    **Arguments:**

    - `key`: a `/`-separated path into `metrics.json` (list items by index), e.g.
      `"problems/quadratic/order_gd_vs_flow"`.
    - `label`: what the number is, in words.
    - `expected`, `tol`: the predicted value and the absolute tolerance around it; or
    - `low`, `high`: bounds (either may be `None`) when the prediction is a bound.
    - `fmt`: the format of the number.
    - `full_only`: measured in full mode only (quick mode skips the work behind it).
    - `verdict`: for a fitted order, the key of its sweep's verdict (`dynopt.assess_order`,
      `Comparison.verdict`): a slope is an order only where the errors are in their asymptotic
      regime, so any other verdict is shown in its place (and is not "ok").
    """

    key: str
    label: str
    expected: float | None = None
    tol: float | None = None
    low: float | None = None
    high: float | None = None
    fmt: str = ".4g"
    full_only: bool = False
    verdict: str | None = None

    def __post_init__(self):
        if (self.expected is None) != (self.tol is None):
            raise ValueError(f"headline {self.key!r}: give `expected` and `tol` together.")
        if self.expected is not None and (self.low is not None or self.high is not None):
            raise ValueError(f"headline {self.key!r}: give `expected`/`tol` or `low`/`high`.")

    @property
    def band(self) -> tuple[float, float]:
        if self.expected is not None:
            return self.expected - self.tol, self.expected + self.tol
        return (
            -math.inf if self.low is None else self.low,
            math.inf if self.high is None else self.high,
        )

    def describe(self) -> str:
        """The prediction in words: `1 ± 0.1`, `≤ 1e-08`, `in [0.9, 1.1]`, or `—`."""
        if self.expected is not None:
            return f"{self.expected:g} ± {self.tol:g}"
        if self.low is not None and self.high is not None:
            return f"in [{self.low:g}, {self.high:g}]"
        if self.high is not None:
            return f"≤ {self.high:g}"
        if self.low is not None:
            return f"≥ {self.low:g}"
        return "—"


@dataclasses.dataclass(frozen=True)
class Reading:
    """A headline read from a results folder: its value (None when absent or non-finite)."""

    headline: Headline
    value: float | None
    # "ok", "off" (outside the prediction), "missing", "non-finite", "info" (no prediction),
    # "full mode only" (a quick result does not measure it), or an order's verdict other than
    # "asymptotic" ("pre-asymptotic", "unstable", "too few step sizes": no order to show)
    status: str

    def value_text(self) -> str:
        if self.value is None:
            return self.status
        return format(self.value, self.headline.fmt)


def lookup(metrics: Mapping[str, Any], key: str) -> Any:
    """The value at `key` (`a/b/0/c`) in nested dicts and lists; `KeyError` if absent."""
    node: Any = metrics
    for part in key.split("/"):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, Sequence) and not isinstance(node, str) and part.isdigit():
            if int(part) >= len(node):
                raise KeyError(key)
            node = node[int(part)]
        else:
            raise KeyError(key)
    return node


def _verdict(h: Headline, metrics: Mapping[str, Any]) -> str | None:
    """The verdict on `h`'s order saved in `metrics` (None: none named, or none saved)."""
    if h.verdict is None:
        return None
    try:
        verdict = lookup(metrics, h.verdict)
    except KeyError:  # (a result saved before its verdict was)
        return None
    return verdict if isinstance(verdict, str) else None


def read(headlines: Sequence[Headline], metrics: Mapping[str, Any]) -> list[Reading]:
    """Each headline's value in `metrics` and whether it meets its prediction."""
    readings = []
    for h in headlines:
        if h.full_only and metrics.get("quick"):
            readings.append(Reading(h, None, "full mode only"))
            continue
        if (verdict := _verdict(h, metrics)) not in (None, "asymptotic"):
            readings.append(Reading(h, None, verdict))
            continue
        try:
            raw = lookup(metrics, h.key)
        except KeyError:
            readings.append(Reading(h, None, "missing"))
            continue
        if raw is None or not isinstance(raw, (int, float)) or isinstance(raw, bool):
            status = "non-finite" if raw is None else "missing"
            readings.append(Reading(h, None, status))
            continue
        value = float(raw)
        if not math.isfinite(value):
            readings.append(Reading(h, None, "non-finite"))
            continue
        lo, hi = h.band
        if h.describe() == "—":
            status = "info"
        else:
            status = "ok" if lo <= value <= hi else "off"
        readings.append(Reading(h, value, status))
    return readings


def text(readings: Sequence[Reading]) -> str:
    """Aligned plain-text lines for the terminal: label, value, prediction, status."""
    if not readings:
        return ""
    predictions = [r.headline.describe() for r in readings]
    predictions = ["" if p == "—" else f"expected {p}" for p in predictions]
    # Each column as wide as its widest cell ("full mode only", "expected 0.707107 ± 0.001").
    width = max(len(r.headline.label) for r in readings)
    values = max(11, *(len(r.value_text()) for r in readings))
    expected = max(24, *map(len, predictions))
    lines = []
    for r, prediction in zip(readings, predictions):
        mark = {"ok": "ok", "off": "OFF", "info": "", "full mode only": ""}.get(
            r.status, r.status.upper()
        )
        lines.append(
            f"  {r.headline.label:<{width}}  {r.value_text():>{values}}  {prediction:<{expected}} "
            f"{mark}".rstrip()
        )
    return "\n".join(lines)
