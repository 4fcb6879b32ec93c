"""The batch timing report: distributions, totals, and the side-by-side table."""

from __future__ import annotations

from lookout.report import Distribution, ImageTiming, build_report, summary_table


def timing(name: str, latency: float, ok: bool = True) -> ImageTiming:
    return ImageTiming(
        file=name,
        ok=ok,
        error="" if ok else "broken",
        detections=2 if ok else 0,
        latency_ms=latency,
        compute_ms=latency / 2,
        inference_ms=latency / 4,
        transfer_ms=latency / 2,
    )


def test_distribution_of_values_and_of_nothing() -> None:
    spread = Distribution.of([float(v) for v in range(1, 101)])
    assert spread.p50 == 50.5 and 99 < spread.p99 < 100 and spread.max == 100 and spread.mean == 50.5
    assert Distribution.of([]) == Distribution(p50=0, p99=0, mean=0, max=0)


def test_failed_images_count_but_do_not_skew_the_timings() -> None:
    report = build_report(
        [timing("b.jpg", 20), timing("a.jpg", 10), timing("bad.jpg", 9999, ok=False)],
        mode="local",
        target="m.onnx",
        model="m",
        model_version="1",
        concurrency=1,
        images=3,
        wall_s=0.5,
    )
    assert (report.ok, report.failed, report.detections) == (2, 1, 4)
    assert report.throughput_per_s == 4.0 and report.latency_ms.max == 20
    assert [t.file for t in report.per_image] == ["a.jpg", "b.jpg", "bad.jpg"]


def test_the_table_puts_runs_side_by_side() -> None:
    common = {"target": "t", "model": "m", "model_version": "1", "images": 1, "wall_s": 1.0}
    local = build_report([timing("a.jpg", 10)], mode="local", concurrency=1, **common)  # type: ignore[arg-type]
    remote = build_report([timing("a.jpg", 30)], mode="remote", concurrency=4, **common)  # type: ignore[arg-type]
    lines = summary_table([local, remote]).splitlines()
    assert lines[0].split()[-2:] == ["local", "remote"]
    latency = next(line for line in lines if line.startswith("latency"))
    assert "10.0 / 10.0" in latency and "30.0 / 30.0" in latency
