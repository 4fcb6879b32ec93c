"""The settings of the long-running services: ``lookout worker``, ``bridge``, ``signaling`` and ``up``."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings

from wire.config.base import (
    REDIS_SCHEMES,
    SETTINGS_CONFIG,
    MetricsSection,
    OptionalPort,
    Port,
    SampleRateSection,
    Seconds,
    SessionSection,
    StreamSettings,
    flags,
    ttl_above_interval,
)

SESSION_TTL_REFRESHES = 3
"""A session record's TTL spans at least this many refresh intervals."""


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


class ServedModelSection(BaseSettings):
    """The model a worker serves (and the one ``lookout up`` starts its workers with)."""

    model_config = SETTINGS_CONFIG

    model: str = Field(
        default="yolox_nano", min_length=1, description="Model name (or .onnx path) the workers serve."
    )


class HttpSection(BaseSettings):
    """Where signaling serves the page, /ws, /api and /metrics (``lookout up`` passes them on to it)."""

    model_config = SETTINGS_CONFIG

    host: str = Field(
        default="127.0.0.1",
        description="Address the HTTP server binds; 0.0.0.0 for every interface (needs an API key, "
        "or insecure_no_auth).",
    )
    port: Port = Field(default=8080, description="Port of the page, /ws, /api and /metrics.")


class WorkerSettings(StreamSettings, MetricsSection, ServedModelSection):
    """``lookout worker``: one inference worker process."""

    worker_id: str = Field(
        default="",
        description="Worker id; empty picks host name, pid and a random suffix.",
        json_schema_extra=flags("--id"),
    )
    shutdown_grace_s: float = Field(
        default=5.0, ge=0, description="Seconds a stopping worker finishes in-flight frames."
    )
    batch: int = Field(
        default=1, ge=1, le=1024, description="Most frames taken per read and inferred together."
    )
    threads: int = Field(
        default=1, ge=1, le=1024, description="ONNX Runtime intra-op threads of this worker."
    )
    conf: float = Field(default=0.3, ge=0.0, le=1.0, description="Score threshold of reported detections.")
    nms: float = Field(default=0.45, ge=0.0, le=1.0, description="IoU threshold of non-maximum suppression.")
    provider: str = Field(
        default="auto",
        pattern="^(auto|tensorrt|cuda|cpu)$",
        description="Execution provider: auto, tensorrt, cuda or cpu.",
    )
    claim_interval_s: Seconds = Field(default=2.0, description="Seconds between XAUTOCLAIM sweeps.")
    claim_idle_ms: int = Field(
        default=3000, ge=1, description="Pending entries idle this long belong to a dead worker."
    )
    hard_examples_dir: Path | None = Field(
        default=None,
        description="Store for uncertain frames; unset: off.",
        json_schema_extra=flags("--hard-examples"),
    )
    hard_examples_low: float = Field(
        default=0.3, ge=0.0, le=1.0, description="Lower bound of the uncertain score band."
    )
    hard_examples_high: float = Field(
        default=0.6, ge=0.0, le=1.0, description="Upper bound of the uncertain score band."
    )
    hard_examples_max: int = Field(
        default=1000, ge=1, description="Most frames the hard-example store keeps."
    )
    hard_examples_every: int = Field(default=10, ge=1, description="Sample at most one uncertain frame in N.")
    watch_registry: bool = Field(default=True, description="Follow promotions in the model registry.")
    registry_poll_s: Seconds = Field(default=5.0, description="Seconds between registry checks.")

    @model_validator(mode="after")
    def _band_is_a_band(self) -> Self:
        if self.hard_examples_low >= self.hard_examples_high:
            raise ValueError(
                f"hard_examples_low ({self.hard_examples_low:g}) must be below "
                f"hard_examples_high ({self.hard_examples_high:g})"
            )
        return self


class BridgeSettings(StreamSettings, MetricsSection, SampleRateSection, SessionSection):
    """``lookout bridge``: one aiortc media bridge."""

    bridge_id: str = Field(
        default="",
        description="Bridge id; empty picks host name plus a random suffix.",
        json_schema_extra=flags("--id"),
    )
    in_flight: int = Field(
        default=2, ge=1, le=64, description="Most frames of one session in flight at once."
    )
    jpeg_quality: int = Field(default=80, ge=10, le=100, description="JPEG quality of published frames.")
    max_sessions: int = Field(default=16, ge=1, description="Sessions one bridge accepts at most.")
    ice_servers: str = Field(default="", description="Comma-separated STUN/TURN URLs; empty: host only.")
    advertised_address: str = Field(
        default="", description="IP address put in ICE candidates (NAT, containers); empty: the real one."
    )
    udp_port_min: OptionalPort = Field(
        default=0, description="Lowest UDP port for media; 0 (with the highest 0 too) lets the OS choose."
    )
    udp_port_max: OptionalPort = Field(
        default=0, description="Highest UDP port for media; 0 (with the lowest 0 too) lets the OS choose."
    )
    ice_host_addresses: str = Field(
        default="",
        description="Comma-separated local IPs for ICE host candidates (127.0.0.1 for loopback-only "
        "tests); empty: every interface but loopback. When only loopback is listed, non-loopback "
        "remote candidates are ignored.",
    )

    @field_validator("advertised_address")
    @classmethod
    def _an_ip_address(cls, value: str) -> str:
        if value:
            ipaddress.ip_address(value)  # its ValueError names the bad address
        return value

    @field_validator("ice_host_addresses")
    @classmethod
    def _ip_addresses(cls, value: str) -> str:
        for item in _split(value):
            ipaddress.ip_address(item)
        return value

    @model_validator(mode="after")
    def _a_port_range(self) -> Self:
        low, high = self.udp_port_min, self.udp_port_max
        if (low == 0) != (high == 0):
            raise ValueError(f"set both udp_port_min and udp_port_max, or neither (got {low} and {high})")
        if low > high:
            raise ValueError(f"udp_port_min ({low}) must not be above udp_port_max ({high})")
        return self


class SignalingSettings(StreamSettings, HttpSection, SampleRateSection, SessionSection, MetricsSection):
    """``lookout signaling``: the web page, WebSocket signaling and the REST API."""

    web_dir: Path | None = Field(
        default=None, description="Folder served as the page; unset: the bundled web/."
    )
    api_key: str = Field(
        default="", description="Key required in the X-API-Key header (or ?key=); empty: off."
    )
    insecure_no_auth: bool = Field(
        default=False,
        description="Serve beyond loopback without an API key (anyone who reaches the port may use it).",
    )
    metrics_require_key: bool = Field(
        default=False, description="/metrics on the HTTP port needs the API key too (if one is set)."
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address signaling's separate /metrics port binds (metrics_port)."
    )
    body_read_timeout_s: Seconds = Field(
        default=10.0, description="Seconds a REST request body may take to arrive; slower gets 408."
    )
    default_model: str = Field(
        default="yolox_nano", min_length=1, description="Model used when a client names none."
    )
    offer_timeout_s: Seconds = Field(default=10.0, description="Seconds to wait for a bridge's SDP answer.")
    rest_timeout_s: Seconds = Field(default=10.0, description="Seconds a REST request waits for its result.")
    max_ws_message_bytes: int = Field(
        default=256 * 1024, ge=1024, description="Largest WebSocket message accepted."
    )
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="Largest REST request body accepted."
    )
    joins_per_minute: int = Field(default=30, ge=1, description="Joins one WebSocket may make per minute.")
    session_refresh_interval_s: Seconds = Field(
        default=1.0,
        description="Seconds between re-saves of this replica's session records (all in one pipeline); "
        "records lost to a Redis restart are re-saved as soon as Redis answers again.",
    )
    join_offer_timeout_s: Seconds = Field(
        default=30.0,
        description="Seconds a joined session may go without an accepted offer before it is ended "
        "(error no_offer).",
    )
    max_sessions_per_replica: int = Field(
        default=256, ge=1, description="Live sessions (joined or streaming) one signaling replica serves."
    )
    max_sessions_per_client: int = Field(
        default=8, ge=1, description="Live sessions one client address may hold on one replica."
    )
    joins_per_minute_per_client: int = Field(
        default=60, ge=1, description="Joins one client address may make per minute on one replica."
    )
    redis_max_connections: int = Field(
        default=16,
        ge=8,
        le=1024,
        description="Most Redis connections one signaling replica opens, whatever its sessions; "
        "commands beyond wait for a free one.",
    )
    redis_pool_timeout_s: Seconds = Field(
        default=5.0, description="Seconds a Redis command waits for a free connection before it fails."
    )
    stats_interval_s: Seconds = Field(default=1.0, description="Seconds between stats messages to a session.")
    monitor_interval_s: Seconds = Field(
        default=2.0, description="Seconds between refreshes of the cluster gauges (queues, workers, scale)."
    )
    scale_window_s: Seconds = Field(
        default=30.0, description="Sliding window of the scale ratio, in seconds."
    )
    sample_fps: float = Field(
        default=10.0, gt=0, description="Frames per second sampled for inference when a join names no rate."
    )

    @field_validator("web_dir")
    @classmethod
    def _a_folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a folder")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.sample_fps > self.max_sample_fps:
            raise ValueError(
                f"sample_fps ({self.sample_fps:g}) must not be above max_sample_fps ({self.max_sample_fps:g})"
            )
        ttl_above_interval(
            "scale_window_s", self.scale_window_s, "monitor_interval_s", self.monitor_interval_s
        )
        # A record must survive two missed refreshes (a slow pipeline, a Redis failover) comfortably.
        ttl_above_interval(
            "session_ttl_s",
            self.session_ttl_s,
            "3 x session_refresh_interval_s",
            SESSION_TTL_REFRESHES * self.session_refresh_interval_s,
        )
        return self


class UpSettings(HttpSection, ServedModelSection):
    """``lookout up``: the whole stack on one machine (every LOOKOUT_* variable reaches every part)."""

    workers: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Inference workers, one ONNX Runtime thread each; unset: one per core but one.",
    )
    bridges: int = Field(default=1, ge=1, le=64, description="WebRTC media bridges.")
    stack_redis: str = Field(
        default="embedded",
        description="Redis to use, or 'embedded' to start a private redis-server.",
        json_schema_extra=flags("--redis-url"),
    )
    redis_port: OptionalPort = Field(default=0, description="Port of the embedded Redis; 0: a free port.")

    @field_validator("stack_redis")
    @classmethod
    def _embedded_or_a_url(cls, value: str) -> str:
        if value != "embedded" and not value.startswith(REDIS_SCHEMES):
            raise ValueError(f"must be 'embedded' or a Redis URL ({', '.join(REDIS_SCHEMES)})")
        return value
