"""bench/raw.py: the session is built as specified and the figures are consistent (no speed asserted)."""

from __future__ import annotations

from pathlib import Path

from bench.raw import RawRunner, measure_raw


def test_measure_raw_reports_consistent_figures(model_path: Path) -> None:
    stats = measure_raw(model_path, threads=1, seconds=0.2)
    assert stats.n >= 3 and stats.threads == 1
    assert stats.images_per_s > 0 and 0 < stats.p50_ms <= stats.p99_ms
    assert "img/s" in stats.describe()


def test_session_uses_exactly_the_threads_asked_for(model_path: Path) -> None:
    runner = RawRunner(model_path, threads=2, warmup=1)
    options = runner.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert runner.session.get_providers() == ["CPUExecutionProvider"]
    runner.measure(0.05)
    runner.measure(0.05)
    assert runner.stats().n == len(runner.latencies_ms) >= 6
