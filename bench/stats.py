"""The two statistics every bench prints: a nearest-rank percentile, and a median with its spread."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of ``values``; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float], form: str = "{:.1f}") -> str:
    """One value as it is; several as their median with min and max."""
    if len(values) == 1:
        return form.format(values[0])
    low, high = form.format(min(values)), form.format(max(values))
    return f"{form.format(statistics.median(values))} (min {low}, max {high})"
