"""bench_detector runs end to end on a tiny budget and reports ratios (the figures are not judged)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bench_detector


def test_short_run_reports_ratios(
    model_path: Path, video_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    args = ["--model", str(model_path), "--video", str(video_path), "--threads", "1", "--runs", "2"]
    code = bench_detector.main([*args, "--seconds", "0.2", "--slices", "2", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "raw ORT session.run" in printed and "ratio to raw" in printed
    (result,) = json.loads(out.read_text())["results"]
    assert result["threads"] == 1 and len(result["raw"]) == len(result["detector"]) == 2
    assert result["ratio_min"] <= result["ratio_median"] <= result["ratio_max"]
    assert all(run["n"] >= 3 for run in result["detector"])
    assert "one frame, stages" in printed
    assert set(result["stages_ms"]) == {"decode", "letterbox", "model", "head"}
    assert all(ms > 0 for ms in result["stages_ms"].values())
    assert result["stages_ms"]["model"] > result["stages_ms"]["head"]


def test_sample_jpegs_are_640x480(video_path: Path) -> None:
    from runtime.images import image_size

    jpegs = bench_detector.sample_jpegs(video_path, count=4)
    assert len(jpegs) == 4 and all(image_size(j) == (640, 480) for j in jpegs)
