"""Push the Prometheus registry to InfluxDB 2, for sites that do not scrape.

A daemon thread reads the prometheus-client registry every ``influx_interval_s`` and writes one point
per metric and label set. It never blocks or crashes the service: the event loop only starts and stops
the thread, writes have short timeouts and no retries of their own, and points that cannot be written
wait in a bounded buffer that drops the oldest first (counted in ``lookout_influx_points``).

Point layout, one measurement per metric family (the name without ``_total``):
counters have the field ``total``, gauges ``value``, histograms ``count``, ``sum`` and one
``le_<bound>`` field per bucket, summaries ``count``, ``sum`` and ``q_<quantile>``. The labels become
tags, plus ``host`` and ``service``.

Services call it once when they start (it does nothing while ``influx_url`` is empty)::

    push = start_influx_push(settings, service="worker")
    ...
    await push.aclose()  # or push.stop() outside the event loop
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write.point import Point
from influxdb_client.client.write_api import SYNCHRONOUS, WriteApi
from influxdb_client.domain.write_precision import WritePrecision
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric

from wire.config import CommonSettings
from wire.metrics import INFLUX_POINTS, INFLUX_WRITE_FAILURES

log = logging.getLogger(__name__)

DEFAULT_PREFIXES = ("lookout_", "process_")
"""Metric families pushed by default: Lookout's own and the process' CPU and memory."""

WRITE_BATCH = 5000
"""Most points sent in one HTTP request."""


def _field_name(metric: Metric, sample_name: str, labels: Mapping[str, str]) -> str | None:
    """Field of one sample within its point; None for samples not worth pushing (``_created``)."""
    suffix = sample_name[len(metric.name) :].lstrip("_")
    if suffix == "created":
        return None
    if suffix == "bucket":
        return f"le_{labels.get('le', '')}"
    if suffix == "" and "quantile" in labels:
        return f"q_{labels['quantile']}"
    return suffix or "value"


def registry_points(
    registry: CollectorRegistry,
    tags: Mapping[str, str],
    *,
    prefixes: tuple[str, ...] = DEFAULT_PREFIXES,
    time_ns: int | None = None,
) -> list[Point]:
    """One point per (metric family, label set) of ``registry``, stamped ``time_ns``."""
    stamp = time.time_ns() if time_ns is None else time_ns
    points: list[Point] = []
    for metric in registry.collect():
        if not metric.name.startswith(prefixes):
            continue
        grouped: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
        for sample in metric.samples:
            field = _field_name(metric, sample.name, sample.labels)
            if field is None or not math.isfinite(sample.value):
                continue  # line protocol has no NaN or infinity
            series = tuple(
                sorted((k, v) for k, v in sample.labels.items() if k not in ("le", "quantile") and v)
            )
            grouped.setdefault(series, {})[field] = float(sample.value)
        for series, fields in grouped.items():
            points.append(_point(metric.name, {**tags, **dict(series)}, fields, stamp))
    return points


def _point(measurement: str, tags: Mapping[str, str], fields: Mapping[str, float], time_ns: int) -> Point:
    # influxdb-client is untyped; it escapes names and values for line protocol.
    point = Point(measurement)  # type: ignore[no-untyped-call]
    for key, value in tags.items():
        if value:  # line protocol has no empty tag values
            point.tag(key, value)  # type: ignore[no-untyped-call]
    for field, number in fields.items():
        point.field(field, number)  # type: ignore[no-untyped-call]
    return point.time(time_ns, WritePrecision.NS)  # type: ignore[no-untyped-call,no-any-return]


class InfluxPush:
    """The background pusher. ``stop()`` makes one last bounded attempt and ends the thread."""

    def __init__(
        self,
        settings: CommonSettings,
        registry: CollectorRegistry = REGISTRY,
        *,
        service: str = "",
        prefixes: tuple[str, ...] = DEFAULT_PREFIXES,
        buffer_points: int = 20_000,
        timeout_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.prefixes = prefixes
        self.timeout_s = timeout_s
        self.tags = {"host": socket.gethostname(), "service": service}
        self.enabled = bool(settings.influx_url)
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self._buffer: deque[Point] = deque(maxlen=buffer_points)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._healthy = True

    @property
    def buffered(self) -> int:
        """Points waiting for the next successful write."""
        return len(self._buffer)

    def start(self) -> InfluxPush:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="influx-push", daemon=True)
            self._thread.start()
            log.info(
                "pushing metrics to InfluxDB %s (org %s, bucket %s) every %.1f s",
                self.settings.influx_url,
                self.settings.influx_org,
                self.settings.influx_bucket,
                self.settings.influx_interval_s,
            )
        return self

    def stop(self) -> None:
        """Stop the thread after one last push; returns within about two write timeouts."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2 * self.timeout_s + 1.0)
            self._thread = None

    async def aclose(self) -> None:
        """``stop()`` from async code, without blocking the event loop while the thread ends."""
        await asyncio.to_thread(self.stop)

    def _run(self) -> None:
        # Our own timeout and no urllib3 retries: a hung InfluxDB costs one timeout per interval.
        with InfluxDBClient(
            url=self.settings.influx_url,
            token=self.settings.influx_token,
            org=self.settings.influx_org,
            timeout=int(self.timeout_s * 1000),
            retries=False,
        ) as client:
            writer = client.write_api(write_options=SYNCHRONOUS)
            while not self._stop.wait(self.settings.influx_interval_s):
                self._push_once(writer)
            self._push_once(writer)

    def _collect(self) -> None:
        points = registry_points(self.registry, self.tags, prefixes=self.prefixes)
        overflow = max(0, len(self._buffer) + len(points) - (self._buffer.maxlen or 0))
        self._buffer.extend(points)  # a full deque drops from the left: the oldest points go first
        if overflow:
            self.dropped += overflow
            INFLUX_POINTS.labels("dropped").inc(overflow)

    def _push_once(self, writer: WriteApi) -> None:
        try:
            self._collect()
            while self._buffer:
                batch = [self._buffer[i] for i in range(min(WRITE_BATCH, len(self._buffer)))]
                writer.write(bucket=self.settings.influx_bucket, org=self.settings.influx_org, record=batch)
                for _ in batch:
                    self._buffer.popleft()
                self.written += len(batch)
                INFLUX_POINTS.labels("written").inc(len(batch))
            if not self._healthy:
                log.info("InfluxDB %s reachable again", self.settings.influx_url)
                self._healthy = True
        except Exception as exc:  # any failure is the pusher's problem, never the service's
            self.failures += 1
            INFLUX_WRITE_FAILURES.inc()
            if self._healthy:
                log.warning(
                    "InfluxDB push to %s failed (%s); keeping up to %d points and retrying every %.1f s",
                    self.settings.influx_url,
                    _one_line(exc),
                    self._buffer.maxlen,
                    self.settings.influx_interval_s,
                )
                self._healthy = False
            else:
                log.debug("InfluxDB push failed again: %s", _one_line(exc))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def start_influx_push(
    settings: CommonSettings,
    registry: CollectorRegistry = REGISTRY,
    *,
    service: str = "",
    prefixes: Iterable[str] = DEFAULT_PREFIXES,
    buffer_points: int = 20_000,
    timeout_s: float = 2.0,
) -> InfluxPush:
    """Start pushing ``registry`` to InfluxDB when ``settings.influx_url`` is set; else a no-op handle."""
    return InfluxPush(
        settings,
        registry,
        service=service,
        prefixes=tuple(prefixes),
        buffer_points=buffer_points,
        timeout_s=timeout_s,
    ).start()
