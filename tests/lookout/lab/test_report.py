"""The report: rates from cumulative counts, the table from a summary, and a PNG per host."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from lookout.lab.recorder import COLUMNS, Row
from lookout.lab.report import rates, report, table


def row(t: float, host: str, inferred: int, up: int = 1) -> Row:
    return Row(
        t,
        host,
        "inference",
        40.0,
        160.0,
        1,
        up,
        1,
        inferred + 1,
        inferred,
        1,
        "deadline=1",
        None,
        None,
        20.0,
        30.0,
    )


def test_rates_are_per_second_differences() -> None:
    assert rates([0.0, 2.0, 4.0], [0.0, 20.0, 20.0]) == [0.0, 10.0, 0.0]


def test_the_table_has_a_line_per_host_with_its_share_and_drop_reasons() -> None:
    document = {
        "inference_share": {"infa": 0.6},
        "hosts": {
            "infa": {
                "role": "inference",
                "cpu_percent": {"mean": 40.5, "max": 80.0},
                "rss_mb": {"max": 170.2},
                "frames_in": 100,
                "frames_inferred": 90,
                "frames_dropped": 10,
                "dropped_by_reason": {"deadline": 10},
                "latency_ms": {"p50": None, "p95": None},
                "inference_ms": {"p50": 20.0, "p95": 31.5},
            },
            "central": {
                "role": "central",
                "cpu_percent": {"mean": None, "max": None},
                "rss_mb": {"max": None},
                "frames_in": 0,
                "frames_inferred": 0,
                "frames_dropped": 0,
                "dropped_by_reason": {},
                "latency_ms": {"p50": 80.0, "p95": 150.0},
                "inference_ms": {"p50": None, "p95": None},
            },
        },
    }
    lines = table(document).splitlines()
    assert lines[0].split()[:3] == ["host", "role", "cpu%"]
    assert lines[1].split() == [
        "infa",
        "inference",
        "40.5/80",
        "170.2",
        "100",
        "90",
        "60%",
        "10",
        "(deadline",
        "10)",
        "20/31.5",
    ]
    assert lines[2].split() == ["central", "central", "-/-", "-", "0", "0", "-", "0", "80/150"]


def test_a_recording_becomes_a_png_per_host(tmp_path: Path) -> None:
    rows = [row(2.0 * i, host, 10 * i, up=0 if i == 2 else 1) for i in range(5) for host in ("infa", "infb")]
    with (tmp_path / "record.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if v is None else v for k, v in asdict(r).items()})
    base = {
        "role": "inference",
        "cpu_percent": {"mean": 40.0, "max": 40.0},
        "rss_mb": {"max": 160.0},
        "frames_in": 41,
        "frames_inferred": 40,
        "frames_dropped": 1,
        "dropped_by_reason": {"deadline": 1},
        "latency_ms": {"p50": None, "p95": None},
        "inference_ms": {"p50": 20.0, "p95": 30.0},
    }
    document = {"inference_share": {"infa": 0.5, "infb": 0.5}, "hosts": {"infa": base, "infb": base}}
    (tmp_path / "summary.json").write_text(json.dumps(document))
    plots, text = report(tmp_path, tmp_path / "plots")
    assert [p.name for p in plots] == ["infa.png", "infb.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in plots)
    assert "50%" in text
