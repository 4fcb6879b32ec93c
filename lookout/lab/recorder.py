"""The lab's recording: every few seconds, one CSV row per host and a JSON summary.

`lab up` runs it as ``lookout lab record`` inside the central host's namespace, so that it scrapes every
service's ``/metrics`` over the lab's own links (a cut host's services show as down, as they would to a
real Prometheus). Per host it records:

- CPU (% of one core) and memory (RSS summed, MB) of the processes running in the host's namespace
  (psutil; every process in a lab namespace was started by the lab; the recorder leaves itself out);
- the Lookout metrics its services serve, summed over them: frames in, frames inferred, frames dropped
  (with the reasons), and latency percentiles over the interval from the histograms' bucket deltas
  (``lookout_e2e_latency_seconds`` where results are delivered, ``lookout_inference_seconds`` on
  inference hosts).

Counters are cumulative since the lab started, across restarts of a service (a counter that goes back
means a new process: it counts on from what its predecessor had). The row building is pure
(``Totals``, ``quantile``, ``host_row``, ``summary``); ``record`` is the loop.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import signal
import time
import urllib.request
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

from lookout.lab import netns
from lookout.lab.state import LabState, read_state

log = logging.getLogger("lookout.lab.recorder")

IN = "in"
INFERRED = "inferred"
DROP = "drop:"
E2E = "e2e"
INFER = "infer"
HISTOGRAMS = {"lookout_e2e_latency_seconds": E2E, "lookout_inference_seconds": INFER}


# --- reading /metrics ----------------------------------------------------------------------------
def parse_metrics(text: str) -> dict[str, float]:
    """The Lookout counters of one /metrics page, flattened: ``in``, ``inferred``, ``drop:REASON``, and
    for each latency histogram ``e2e:le=0.05`` (cumulative bucket counts), ``e2e:sum``, ``e2e:count``."""
    reading: dict[str, float] = {IN: 0.0, INFERRED: 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.name == "lookout_frames_in" and sample.name.endswith("_total"):
                reading[IN] += sample.value
            elif family.name == "lookout_frames_inferred" and sample.name.endswith("_total"):
                reading[INFERRED] += sample.value
            elif family.name == "lookout_frames_dropped" and sample.name.endswith("_total"):
                key = DROP + sample.labels.get("reason", "unknown")
                reading[key] = reading.get(key, 0.0) + sample.value
            elif family.name in HISTOGRAMS:
                prefix = HISTOGRAMS[family.name]
                if sample.name.endswith("_bucket"):
                    key = f"{prefix}:le={sample.labels['le']}"
                elif sample.name.endswith("_sum"):
                    key = f"{prefix}:sum"
                elif sample.name.endswith("_count"):
                    key = f"{prefix}:count"
                else:
                    continue
                reading[key] = reading.get(key, 0.0) + sample.value
    return reading


class Totals:
    """Cumulative counters of one service across its restarts: a reading below the last one is a new
    process, which counts on from what the previous one had reached."""

    def __init__(self) -> None:
        self._carried: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def read(self, values: Mapping[str, float]) -> None:
        if any(values.get(key, 0.0) < last for key, last in self._last.items()):
            for key, last in self._last.items():
                self._carried[key] = self._carried.get(key, 0.0) + last
        self._last = dict(values)

    def totals(self) -> dict[str, float]:
        keys = set(self._carried) | set(self._last)
        return {key: self._carried.get(key, 0.0) + self._last.get(key, 0.0) for key in keys}


def add(readings: Iterable[Mapping[str, float]]) -> dict[str, float]:
    summed: dict[str, float] = {}
    for reading in readings:
        for key, value in reading.items():
            summed[key] = summed.get(key, 0.0) + value
    return summed


def quantile(now: Mapping[str, float], before: Mapping[str, float], prefix: str, q: float) -> float | None:
    """The ``q`` quantile (seconds) of a histogram's observations between two readings, interpolated
    inside the bucket as Prometheus's ``histogram_quantile`` does; None without observations."""
    buckets = []
    for key, value in now.items():
        if key.startswith(f"{prefix}:le="):
            bound = key.split("=", 1)[1]
            upper = math.inf if bound == "+Inf" else float(bound)
            buckets.append((upper, value - before.get(key, 0.0)))
    buckets.sort()
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = upper, count
    return lower


def mean(now: Mapping[str, float], before: Mapping[str, float], prefix: str) -> float | None:
    count = now.get(f"{prefix}:count", 0.0) - before.get(f"{prefix}:count", 0.0)
    if count <= 0:
        return None
    return (now.get(f"{prefix}:sum", 0.0) - before.get(f"{prefix}:sum", 0.0)) / count


# --- the rows ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Usage:
    """CPU seconds (user + system) and RSS bytes of every process of one host, by (pid, start time)."""

    cpu_s: Mapping[tuple[int, float], float] = field(default_factory=dict)
    rss_bytes: int = 0

    @property
    def processes(self) -> int:
        return len(self.cpu_s)


def cpu_percent(now: Usage, before: Usage | None, seconds: float) -> float | None:
    """% of one core over the interval: each process's CPU time since the last sample (all of it for a
    process started since); None for the first sample."""
    if before is None or seconds <= 0:
        return None
    used = sum(value - before.cpu_s.get(key, 0.0) for key, value in now.cpu_s.items())
    return max(0.0, 100.0 * used / seconds)


@dataclass(frozen=True)
class Row:
    time_s: float
    host: str
    role: str
    cpu_percent: float | None
    rss_mb: float
    processes: int
    services_up: int
    services: int
    frames_in: int
    frames_inferred: int
    frames_dropped: int
    dropped_by_reason: str
    """``reason=count`` pairs joined by ``;`` (cumulative)."""
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    inference_p50_ms: float | None
    inference_p95_ms: float | None


COLUMNS = [f.name for f in fields(Row)]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


def drops_of(totals: Mapping[str, float]) -> dict[str, int]:
    return {k.removeprefix(DROP): int(v) for k, v in sorted(totals.items()) if k.startswith(DROP) and v}


def host_row(
    *,
    time_s: float,
    host: str,
    role: str,
    usage: Usage,
    usage_before: Usage | None,
    seconds: float,
    totals: Mapping[str, float],
    totals_before: Mapping[str, float],
    services_up: int,
    services: int,
) -> Row:
    """One host's row: its CPU over the interval, memory now, cumulative counters, interval latencies."""
    cpu = cpu_percent(usage, usage_before, seconds)
    drops = drops_of(totals)
    return Row(
        time_s=round(time_s, 2),
        host=host,
        role=role,
        cpu_percent=None if cpu is None else round(cpu, 1),
        rss_mb=round(usage.rss_bytes / 1e6, 1),
        processes=usage.processes,
        services_up=services_up,
        services=services,
        frames_in=int(totals.get(IN, 0)),
        frames_inferred=int(totals.get(INFERRED, 0)),
        frames_dropped=sum(drops.values()),
        dropped_by_reason=";".join(f"{k}={v}" for k, v in drops.items()),
        latency_p50_ms=_ms(quantile(totals, totals_before, E2E, 0.5)),
        latency_p95_ms=_ms(quantile(totals, totals_before, E2E, 0.95)),
        inference_p50_ms=_ms(quantile(totals, totals_before, INFER, 0.5)),
        inference_p95_ms=_ms(quantile(totals, totals_before, INFER, 0.95)),
    )


def summary(
    lab: str,
    rows: list[Row],
    totals: Mapping[str, Mapping[str, float]],
    roles: Mapping[str, str],
    *,
    interval_s: float,
) -> dict[str, Any]:
    """The JSON summary: per host, CPU and memory over the run, cumulative counters, latency over the
    whole run, and each inference host's share of the frames served (inferred) by all of them."""
    served = {host: totals[host].get(INFERRED, 0.0) for host, role in roles.items() if role == "inference"}
    all_served = sum(served.values())
    hosts: dict[str, Any] = {}
    for host, role in roles.items():
        mine = [row for row in rows if row.host == host]
        cpu = [row.cpu_percent for row in mine if row.cpu_percent is not None]
        total = totals.get(host, {})
        drops = drops_of(total)
        hosts[host] = {
            "role": role,
            "cpu_percent": {
                "mean": _round(sum(cpu) / len(cpu)) if cpu else None,
                "max": max(cpu, default=None),
            },
            "rss_mb": {
                "max": max((row.rss_mb for row in mine), default=None),
                "last": mine[-1].rss_mb if mine else None,
            },
            "frames_in": int(total.get(IN, 0)),
            "frames_inferred": int(total.get(INFERRED, 0)),
            "frames_dropped": sum(drops.values()),
            "dropped_by_reason": drops,
            "latency_ms": {
                "p50": _ms(quantile(total, {}, E2E, 0.5)),
                "p95": _ms(quantile(total, {}, E2E, 0.95)),
            },
            "inference_ms": {
                "p50": _ms(quantile(total, {}, INFER, 0.5)),
                "p95": _ms(quantile(total, {}, INFER, 0.95)),
            },
            "scrapes_failed": sum(row.services - row.services_up for row in mine),
        }
    return {
        "lab": lab,
        "interval_s": interval_s,
        "samples": len({row.time_s for row in rows}),
        "duration_s": rows[-1].time_s if rows else 0.0,
        "served_frames": int(all_served),
        "inference_share": {h: round(n / all_served, 3) if all_served else 0.0 for h, n in served.items()},
        "hosts": hosts,
    }


def _round(value: float) -> float:
    return round(value, 1)


# --- the loop ------------------------------------------------------------------------------------
def sample_usage(state: LabState, exclude: int) -> dict[str, Usage]:
    """CPU and memory of every process in each host's namespace (found by the namespace's inode)."""
    inode_host = {}
    for host in state.hosts:
        with contextlib.suppress(OSError):
            inode_host[netns.namespace_inode(host.namespace)] = host.name
    cpu: dict[str, dict[tuple[int, float], float]] = {host.name: {} for host in state.hosts}
    rss = dict.fromkeys(cpu, 0)
    for process in psutil.process_iter(["pid"]):
        owner = inode_host.get(netns.process_namespace_inode(process.pid) or -1)
        if owner is None or process.pid == exclude:
            continue
        try:
            with process.oneshot():
                times = process.cpu_times()
                cpu[owner][(process.pid, process.create_time())] = times.user + times.system
                rss[owner] += process.memory_info().rss
        except psutil.Error:
            continue
    return {host: Usage(cpu[host], rss[host]) for host in cpu}


SCRAPE_TIMEOUT_S = 1.5
"""Below the 2 s recording interval, and long enough for a page to cross a capped link on a busy host."""


def scrape(url: str) -> dict[str, float] | None:
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as reply:
            return parse_metrics(reply.read().decode())
    except (OSError, ValueError):
        return None


class Recorder:
    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file
        self.state = read_state(state_file)
        self.csv_path = self.state.record_csv
        self.started = time.monotonic()
        self.service_totals: dict[str, Totals] = {}
        self.service_host: dict[str, str] = {}
        """Every service seen, by host: one that is down (killed, restarting, stopped by `lab down`) is
        gone from the state file, but what it counted stays in its host's totals."""
        self.usage: dict[str, Usage] = {}
        self.host_totals: dict[str, dict[str, float]] = {}
        self.rows: list[Row] = []
        self.last_tick = time.monotonic()
        self.stopping = False
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="scrape")

    def tick(self) -> None:
        with contextlib.suppress(Exception):  # keep the last good state while it is being rewritten
            self.state = read_state(self.state_file)
        now = time.monotonic()
        seconds = now - self.last_tick
        self.last_tick = now
        services = [p for p in self.state.processes if p.metrics_url]
        readings = dict(
            zip(
                (p.name for p in services),
                self.pool.map(scrape, [p.metrics_url for p in services]),
                strict=True,
            )
        )
        for p in services:
            self.service_host[p.name] = p.host
        for name, reading in readings.items():
            if reading is not None:
                self.service_totals.setdefault(name, Totals()).read(reading)
        usage = sample_usage(self.state, exclude=os.getpid())
        new_rows = []
        for host in self.state.hosts:
            mine = [p for p in services if p.host == host.name]
            ever = [name for name, at in self.service_host.items() if at == host.name]
            totals = add(self.service_totals[name].totals() for name in ever if name in self.service_totals)
            new_rows.append(
                host_row(
                    time_s=now - self.started,
                    host=host.name,
                    role=host.role.value,
                    usage=usage[host.name],
                    usage_before=self.usage.get(host.name),
                    seconds=seconds,
                    totals=totals,
                    totals_before=self.host_totals.get(host.name, {}),
                    services_up=sum(readings[p.name] is not None for p in mine),
                    services=len(mine),
                )
            )
            self.host_totals[host.name] = totals
        self.usage = usage
        self.rows += new_rows
        self.write(new_rows)

    def write(self, rows: list[Row]) -> None:
        fresh = not self.csv_path.exists()
        with self.csv_path.open("a", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=COLUMNS)
            if fresh:
                writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if v is None else v for k, v in asdict(row).items()})
        roles = {host.name: host.role.value for host in self.state.hosts}
        document = summary(
            self.state.lab, self.rows, self.host_totals, roles, interval_s=self.state.record_interval_s
        )
        temporary = self.state.summary_json.with_suffix(".tmp")
        temporary.write_text(json.dumps(document, indent=1) + "\n")
        os.replace(temporary, self.state.summary_json)

    def request_stop(self, _signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> None:
        interval = self.state.record_interval_s
        while not self.stopping and self.state_file.exists():
            deadline = time.monotonic() + interval
            self.tick()
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.05)
        self.pool.shutdown(wait=False)


def record(state_file: Path) -> int:
    recorder = Recorder(state_file)
    signal.signal(signal.SIGTERM, recorder.request_stop)
    signal.signal(signal.SIGINT, recorder.request_stop)
    print(
        f"lookout lab record: writing {recorder.csv_path} every {recorder.state.record_interval_s:g} s",
        flush=True,
    )
    recorder.run()
    return 0
