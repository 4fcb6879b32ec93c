"""The recorder's rows, from real /metrics text and crafted process samples (no lab needed)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from lookout.lab.recorder import (
    COLUMNS,
    Totals,
    Usage,
    add,
    cpu_percent,
    host_row,
    mean,
    parse_metrics,
    quantile,
    summary,
)
from wire.metrics import LATENCY_BUCKETS


def metrics_text(inferred: int, dropped: dict[str, int], inference_s: list[float]) -> str:
    """A worker's /metrics page, made by prometheus-client with the names of wire.metrics."""
    registry = CollectorRegistry()
    frames_in = Counter("lookout_frames_in", "", ["site", "model"], registry=registry)
    frames_inferred = Counter("lookout_frames_inferred", "", ["model", "worker"], registry=registry)
    frames_dropped = Counter("lookout_frames_dropped", "", ["model", "site", "reason"], registry=registry)
    seconds = Histogram(
        "lookout_inference_seconds", "", ["model"], buckets=LATENCY_BUCKETS, registry=registry
    )
    frames_in.labels(site="worker", model="m").inc(inferred + sum(dropped.values()))
    frames_inferred.labels(model="m", worker="w0").inc(inferred)
    for reason, count in dropped.items():
        frames_dropped.labels(model="m", site="worker", reason=reason).inc(count)
    for value in inference_s:
        seconds.labels(model="m").observe(value)
    return generate_latest(registry).decode()


def test_a_metrics_page_is_flattened_into_counters_and_buckets() -> None:
    reading = parse_metrics(metrics_text(7, {"deadline": 2, "superseded": 1}, [0.012, 0.04]))
    assert reading["in"] == 10 and reading["inferred"] == 7
    assert reading["drop:deadline"] == 2 and reading["drop:superseded"] == 1
    assert reading["infer:count"] == 2 and reading["infer:sum"] == pytest.approx(0.052)
    assert reading["infer:le=0.01"] == 0 and reading["infer:le=0.02"] == 1 and reading["infer:le=+Inf"] == 2


def test_totals_carry_on_across_a_restart_that_counts_from_zero() -> None:
    totals = Totals()
    totals.read({"inferred": 10, "drop:deadline": 2})
    totals.read({"inferred": 15, "drop:deadline": 2})
    totals.read({"inferred": 3})  # a new process: its counters start again
    assert totals.totals() == {"inferred": 18, "drop:deadline": 2}
    assert add([{"a": 1}, {"a": 2, "b": 1}]) == {"a": 3, "b": 1}


def test_interval_quantiles_come_from_bucket_deltas() -> None:
    before = parse_metrics(metrics_text(0, {}, [0.5] * 10))
    now = parse_metrics(metrics_text(0, {}, [0.5] * 10 + [0.015] * 4))
    # Only the 4 new observations count: all in (0.01, 0.02], the median interpolated inside the bucket.
    assert quantile(now, before, "infer", 0.5) == pytest.approx(0.015)
    assert quantile(now, before, "infer", 1.0) == pytest.approx(0.02)
    assert quantile(before, before, "infer", 0.5) is None
    assert mean(now, before, "infer") == pytest.approx(0.015)
    assert quantile(now, {}, "e2e", 0.5) is None  # a histogram the page does not have


def test_cpu_percent_is_the_cpu_time_of_the_interval_over_its_length() -> None:
    before = Usage({(1, 10.0): 5.0, (2, 10.0): 1.0}, 100)
    now = Usage({(1, 10.0): 6.0, (3, 20.0): 0.5}, 200)  # 2 ended, 3 started during the interval
    assert cpu_percent(now, before, 2.0) == pytest.approx(75.0)
    assert cpu_percent(now, None, 2.0) is None


def test_a_host_row_and_the_summary_with_each_inference_hosts_share() -> None:
    totals_a = parse_metrics(metrics_text(30, {"deadline": 3}, [0.02] * 30))
    totals_b = parse_metrics(metrics_text(10, {}, [0.02] * 10))
    row = host_row(
        time_s=4.0,
        host="infa",
        role="inference",
        usage=Usage({(1, 1.0): 2.0}, 150_000_000),
        usage_before=Usage({(1, 1.0): 1.0}, 150_000_000),
        seconds=2.0,
        totals=totals_a,
        totals_before={},
        services_up=1,
        services=1,
    )
    assert list(vars(row)) == COLUMNS
    assert (row.cpu_percent, row.rss_mb, row.frames_in, row.frames_inferred, row.frames_dropped) == (
        50.0,
        150.0,
        33,
        30,
        3,
    )
    assert row.dropped_by_reason == "deadline=3" and row.inference_p50_ms == pytest.approx(20.0, abs=5)
    assert row.latency_p50_ms is None
    document = summary(
        "t1",
        [row],
        {"infa": totals_a, "infb": totals_b, "central": {}},
        {"infa": "inference", "infb": "inference", "central": "central"},
        interval_s=2.0,
    )
    assert document["inference_share"] == {"infa": 0.75, "infb": 0.25}
    assert document["served_frames"] == 40
    assert document["hosts"]["infa"]["dropped_by_reason"] == {"deadline": 3}
    assert document["hosts"]["infa"]["cpu_percent"] == {"mean": 50.0, "max": 50.0}
    assert document["hosts"]["central"]["frames_in"] == 0
