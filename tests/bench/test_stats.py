"""bench/stats.py: the nearest-rank percentile and the median-with-spread summary."""

from __future__ import annotations

import math

from bench.stats import percentile, summary


def test_percentile_and_summary() -> None:
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0
    assert percentile([float(i) for i in range(101)], 0.99) == 99.0
    assert math.isnan(percentile([], 0.5))
    assert summary([2.0]) == "2.0"
    assert summary([1.0, 2.0, 9.0]) == "2.0 (min 1.0, max 9.0)"
