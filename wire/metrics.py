"""Prometheus metrics of every Lookout service, defined once so that names never drift.

Each process registers these on prometheus-client's default registry and exposes the ones it moves
on ``/metrics``. The Grafana dashboards in ``compose/grafana`` query exactly these names; a test checks
that every queried metric exists and moves under traffic.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)

FRAMES_IN = Counter(
    "lookout_frames_in",
    "Frames accepted into the pipeline, by where (bridge, worker, rest).",
    ["site", "model"],
)
FRAMES_INFERRED = Counter("lookout_frames_inferred", "Frames that ended as a result.", ["model", "worker"])
FRAMES_DROPPED = Counter(
    "lookout_frames_dropped", "Frames that ended as a drop, by reason and site.", ["model", "site", "reason"]
)
DROPS_HELD = Counter(
    "lookout_drops_held",
    "Drops counted while Redis could not take their record, added to its tally later. A write that timed"
    " out may still have reached Redis, so each of these may be counted twice: the bound accounting uses.",
    ["site"],
)
INFERENCE_SECONDS = Histogram(
    "lookout_inference_seconds", "Model run time per frame.", ["model"], buckets=LATENCY_BUCKETS
)
QUEUE_WAIT_SECONDS = Histogram(
    "lookout_queue_wait_seconds", "Time a frame waited on its stream.", ["model"], buckets=LATENCY_BUCKETS
)
E2E_LATENCY_SECONDS = Histogram(
    "lookout_e2e_latency_seconds",
    "Capture time to result delivered to the client (observed once, where results are delivered).",
    ["model", "path"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "lookout_batch_size", "Frames per inference call.", ["model"], buckets=(1, 2, 4, 8, 16, 32)
)
STREAM_DEPTH = Gauge("lookout_stream_depth", "Entries in the frame stream of a model (XLEN).", ["model"])
STREAM_LAG = Gauge("lookout_stream_lag", "Entries not yet read by the model's consumer group.", ["model"])
STREAM_PENDING = Gauge("lookout_stream_pending", "Entries read but not yet acked (in flight).", ["model"])
LIVE_SESSIONS = Gauge(
    "lookout_live_sessions", "Live sessions (WebRTC at a bridge, WebSocket at signaling).", ["site"]
)
LIVE_WORKERS = Gauge("lookout_live_workers", "Workers with a live heartbeat, per model.", ["model"])
LIVE_BRIDGES = Gauge("lookout_live_bridges", "Media bridges with a live heartbeat.")
MODEL_VERSION = Gauge(
    "lookout_model_version_info",
    "The model version a worker serves (value 1).",
    ["model", "version", "worker"],
)
SCALE_RATIO = Gauge(
    "lookout_scale_ratio",
    "(infer fps + drop fps) / infer fps per model: above 1, more workers would be used.",
    ["model"],
)
REST_REQUESTS = Counter("lookout_rest_requests", "REST detect requests by HTTP status.", ["status"])
WS_MESSAGES = Counter("lookout_ws_messages", "WebSocket messages received, by type.", ["type"])
WS_ERRORS = Counter("lookout_ws_errors", "Error messages sent on WebSockets, by code.", ["code"])
INFLUX_POINTS = Counter(
    "lookout_influx_points", "Points of the InfluxDB push, by outcome (written, dropped).", ["outcome"]
)
INFLUX_WRITE_FAILURES = Counter(
    "lookout_influx_write_failures", "InfluxDB writes that failed (kept to retry)."
)
MONITOR_ERRORS = Counter("lookout_monitor_errors", "Monitor refreshes that failed (Redis unreachable, ...).")


def start_metrics_server(
    port: int, host: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` on ``port`` from a daemon thread (worker and bridge ``--metrics-port``).

    Port 0 picks a free port: read it back from ``server.server_port``. Call ``server.shutdown()`` to stop.
    """
    return start_http_server(port, addr=host, registry=registry)
