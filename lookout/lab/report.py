"""`lookout lab report`: a plot per host (PNG, matplotlib's Agg backend) and a table, from a recording.

Each plot has three panels over the run: CPU (% of one core) with memory (MB) on a second axis; frames
per second in, inferred and dropped (from the cumulative counters' differences); and latency p50/p95 of
the interval (end to end on the central host, inference on inference hosts). The table (stdout) has
one line per host: CPU mean and max, memory max, frames in, inferred and dropped (with reasons), each
inference host's share of the frames served, and latency over the run, from the JSON summary.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from lookout.lab.model import LabFileError


def read_rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as file:
            return list(csv.DictReader(file))
    except FileNotFoundError:
        raise LabFileError(f"no recording at {path}: was the lab up long enough to record?") from None


def _float(value: str) -> float | None:
    return float(value) if value not in ("", None) else None


def rates(times: list[float], counts: list[float]) -> list[float]:
    """Per-second rate between consecutive cumulative counts (the first point is 0)."""
    out = [0.0]
    for i in range(1, len(times)):
        dt = times[i] - times[i - 1]
        out.append(max(0.0, (counts[i] - counts[i - 1]) / dt) if dt > 0 else 0.0)
    return out


def plot_host(host: str, rows: list[dict[str, str]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [float(r["time_s"]) for r in rows]
    role = rows[0]["role"] if rows else "?"
    figure, (cpu_axis, frames_axis, latency_axis) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    figure.suptitle(f"lab host {host} ({role})")
    cpu = [_float(r["cpu_percent"]) for r in rows]
    cpu_axis.plot(times, [c if c is not None else float("nan") for c in cpu], color="tab:red", label="CPU %")
    cpu_axis.set_ylabel("CPU (% of a core)")
    memory_axis = cpu_axis.twinx()
    memory_axis.plot(times, [float(r["rss_mb"]) for r in rows], color="tab:blue", label="RSS MB")
    memory_axis.set_ylabel("memory (RSS, MB)")
    cpu_axis.legend(
        handles=cpu_axis.get_lines() + memory_axis.get_lines(), loc="upper left", fontsize="small"
    )
    for column, label in (
        ("frames_in", "in"),
        ("frames_inferred", "inferred"),
        ("frames_dropped", "dropped"),
    ):
        frames_axis.plot(times, rates(times, [float(r[column]) for r in rows]), label=label)
    up = [int(r["services_up"]) < int(r["services"]) for r in rows]
    for t, down in zip(times, up, strict=True):
        if down:
            frames_axis.axvspan(t - 1, t + 1, color="grey", alpha=0.2, linewidth=0)
    frames_axis.set_ylabel("frames / s")
    frames_axis.legend(loc="best", fontsize="small", title="grey: a service unreachable")
    for column, label in (
        ("latency_p50_ms", "end to end p50"),
        ("latency_p95_ms", "end to end p95"),
        ("inference_p50_ms", "inference p50"),
        ("inference_p95_ms", "inference p95"),
    ):
        values = [_float(r[column]) for r in rows]
        if any(v is not None for v in values):
            latency_axis.plot(times, [v if v is not None else float("nan") for v in values], label=label)
    latency_axis.set_ylabel("latency (ms)")
    latency_axis.set_xlabel("seconds since the recording started")
    if latency_axis.get_lines():
        latency_axis.legend(loc="upper left", fontsize="small")
    else:
        latency_axis.text(
            0.5, 0.5, "no latency observed on this host", ha="center", transform=latency_axis.transAxes
        )
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    plt.close(figure)
    return out


def table(document: dict[str, Any]) -> str:
    """One line per host from the JSON summary."""
    header = (
        "host",
        "role",
        "cpu% mean/max",
        "rss MB",
        "in",
        "inferred",
        "share",
        "dropped (reasons)",
        "latency p50/p95 ms",
    )
    rows = [header]
    share = document.get("inference_share", {})
    for host, entry in document["hosts"].items():
        cpu = entry["cpu_percent"]
        latency = entry["latency_ms"] if entry["latency_ms"]["p50"] is not None else entry["inference_ms"]
        reasons = ", ".join(f"{k} {v}" for k, v in entry["dropped_by_reason"].items())
        rows.append(
            (
                host,
                entry["role"],
                f"{_show(cpu['mean'])}/{_show(cpu['max'])}",
                _show(entry["rss_mb"]["max"]),
                str(entry["frames_in"]),
                str(entry["frames_inferred"]),
                f"{share[host] * 100:.0f}%" if host in share else "-",
                f"{entry['frames_dropped']}" + (f" ({reasons})" if reasons else ""),
                f"{_show(latency['p50'])}/{_show(latency['p95'])}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def report(run_dir: Path, out_dir: Path | None = None) -> tuple[list[Path], str]:
    """Plot every host of the recording in ``run_dir`` into ``out_dir`` (default ``run_dir/plots``);
    returns the PNG paths and the table."""
    rows = read_rows(run_dir / "record.csv")
    try:
        document = json.loads((run_dir / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        raise LabFileError(f"no summary at {run_dir / 'summary.json'}") from None
    out_dir = out_dir or run_dir / "plots"
    hosts = list(dict.fromkeys(row["host"] for row in rows))
    plots = [
        plot_host(host, [r for r in rows if r["host"] == host], out_dir / f"{host}.png") for host in hosts
    ]
    return plots, table(document)
