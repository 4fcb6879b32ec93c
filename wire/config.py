"""Typed configuration, read from ``LOOKOUT_*`` environment variables (and ``.env``).

One class per service, all here, because compose files and ``.env`` set them across process
boundaries. Every field has a description; ``compose/.env.example`` documents each variable and a
test keeps it complete. Command-line flags override these values.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Settings every Lookout process reads."""

    model_config = SettingsConfigDict(env_prefix="LOOKOUT_", env_file=".env", extra="ignore")

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis server all services share.")
    key_prefix: str = Field(default="lookout", description="Prefix of every Redis key, to share one Redis.")
    model_dir: Path = Field(default=Path("models"), description="Folder where model names are looked up.")
    registry_dir: Path = Field(
        default=Path("registry"),
        description="Model registry file store (a shared volume): a folder per model, a file per version.",
    )
    log_level: str = Field(default="INFO", description="Python logging level: DEBUG, INFO, WARNING, ERROR.")
    heartbeat_interval_s: float = Field(default=1.0, description="Seconds between liveness heartbeats.")
    heartbeat_ttl_s: float = Field(
        default=5.0, description="Seconds after the last heartbeat a process is dead."
    )
    influx_url: str = Field(default="", description="InfluxDB 2 URL to push metrics to; empty disables it.")
    influx_token: str = Field(default="", description="InfluxDB 2 API token.")
    influx_org: str = Field(default="lookout", description="InfluxDB 2 organisation.")
    influx_bucket: str = Field(default="lookout", description="InfluxDB 2 bucket.")
    influx_interval_s: float = Field(default=5.0, description="Seconds between InfluxDB pushes.")


class StreamSettings(CommonSettings):
    """Limits of the frame and result streams (read by producers and workers alike)."""

    frame_stream_maxlen: int = Field(
        default=256, description="Approximate cap (MAXLEN ~) of each frame stream."
    )
    result_stream_maxlen: int = Field(
        default=64, description="Approximate cap of each session's result stream."
    )
    result_stream_ttl_s: int = Field(default=60, description="Idle seconds before a result stream expires.")
    max_image_bytes: int = Field(default=8 * 1024 * 1024, description="Largest encoded image accepted.")
    max_image_side: int = Field(default=4096, description="Largest width or height accepted, in pixels.")
    frame_deadline_ms: float = Field(
        default=1000.0, description="Default time a frame may wait before it is stale."
    )


class WorkerSettings(StreamSettings):
    """``lookout worker``: one inference worker process."""

    model: str = Field(default="yolox_nano", description="Model name (or .onnx path) this worker serves.")
    worker_id: str = Field(
        default="", description="Worker id; empty picks host name, pid and a random suffix."
    )
    shutdown_grace_s: float = Field(
        default=5.0, description="Seconds a stopping worker finishes in-flight frames."
    )
    batch: int = Field(default=1, ge=1, description="Most frames taken per read and inferred together.")
    threads: int = Field(default=1, ge=1, description="ONNX Runtime intra-op threads of this worker.")
    conf: float = Field(default=0.3, ge=0.0, le=1.0, description="Score threshold of reported detections.")
    nms: float = Field(default=0.45, ge=0.0, le=1.0, description="IoU threshold of non-maximum suppression.")
    provider: str = Field(default="auto", description="Execution provider: auto, tensorrt, cuda or cpu.")
    claim_interval_s: float = Field(default=2.0, description="Seconds between XAUTOCLAIM sweeps.")
    claim_idle_ms: int = Field(
        default=3000, description="Pending entries idle this long belong to a dead worker."
    )
    metrics_port: int = Field(
        default=0, description="Port of the Prometheus /metrics endpoint; 0 disables it."
    )
    hard_examples_dir: Path | None = Field(
        default=None, description="Store for uncertain frames; unset: off."
    )
    hard_examples_low: float = Field(default=0.3, description="Lower bound of the uncertain score band.")
    hard_examples_high: float = Field(default=0.6, description="Upper bound of the uncertain score band.")
    hard_examples_max: int = Field(default=1000, description="Most frames the hard-example store keeps.")
    hard_examples_every: int = Field(default=10, description="Sample at most one uncertain frame in N.")
    watch_registry: bool = Field(default=True, description="Follow promotions in the model registry.")
    registry_poll_s: float = Field(default=5.0, gt=0, description="Seconds between registry checks.")


class TrainSettings(CommonSettings):
    """``lookout train``: fine-tuning runs (torchrun) and publishing to the model registry."""

    train_dir: Path = Field(default=Path("runs/train"), description="Run folder: checkpoint, exported model.")
    train_batch: int = Field(default=8, ge=1, description="Images per rank and optimizer step.")
    train_lr: float = Field(
        default=1e-5, gt=0, description="SGD learning rate of fine-tuning runs (low: no collapse)."
    )
    checkpoint_every: int = Field(default=50, ge=1, description="Optimizer steps between checkpoints.")
    max_restarts: int = Field(
        default=3, ge=0, description="Elastic restarts torchrun allows after a failure."
    )


class BridgeSettings(StreamSettings):
    """``lookout bridge``: one aiortc media bridge."""

    bridge_id: str = Field(default="", description="Bridge id; empty picks host name plus a random suffix.")
    sample_fps: float = Field(default=10.0, gt=0, description="Default frames per second sent to inference.")
    max_sample_fps: float = Field(
        default=30.0, gt=0, description="Highest sample rate a session may ask for."
    )
    in_flight: int = Field(default=2, ge=1, description="Most frames of one session in flight at once.")
    jpeg_quality: int = Field(default=80, ge=10, le=100, description="JPEG quality of published frames.")
    max_sessions: int = Field(default=16, ge=1, description="Sessions one bridge accepts at most.")
    ice_servers: str = Field(default="", description="Comma-separated STUN/TURN URLs; empty: host only.")
    advertised_address: str = Field(
        default="", description="Address put in ICE candidates (NAT, containers)."
    )
    udp_port_min: int = Field(default=0, description="Lowest UDP port for media; 0 lets the OS choose.")
    udp_port_max: int = Field(default=0, description="Highest UDP port for media; 0 lets the OS choose.")
    ice_host_addresses: str = Field(
        default="",
        description="Comma-separated local IPs for ICE host candidates (127.0.0.1 for loopback-only "
        "tests); empty: every interface but loopback. When only loopback is listed, non-loopback "
        "remote candidates are ignored.",
    )
    metrics_port: int = Field(
        default=0, description="Port of the Prometheus /metrics endpoint; 0 disables it."
    )


class SignalingSettings(StreamSettings):
    """``lookout signaling``: the web page, WebSocket signaling and the REST API."""

    host: str = Field(default="0.0.0.0", description="Address the HTTP server binds.")
    port: int = Field(default=8080, description="Port of the page, /ws, /api and /metrics.")
    web_dir: Path | None = Field(
        default=None, description="Folder served as the page; unset: the bundled web/."
    )
    api_key: str = Field(
        default="", description="Key required in the X-API-Key header (or ?key=); empty: off."
    )
    default_model: str = Field(default="yolox_nano", description="Model used when a client names none.")
    offer_timeout_s: float = Field(default=10.0, description="Seconds to wait for a bridge's SDP answer.")
    rest_timeout_s: float = Field(default=10.0, description="Seconds a REST request waits for its result.")
    max_ws_message_bytes: int = Field(default=256 * 1024, description="Largest WebSocket message accepted.")
    max_body_bytes: int = Field(default=10 * 1024 * 1024, description="Largest REST request body accepted.")
    joins_per_minute: int = Field(default=30, description="Joins one WebSocket may make per minute.")
    session_ttl_s: float = Field(
        default=10.0,
        description="Seconds a session record outlives its signaling replica (refreshed while open).",
    )
    stats_interval_s: float = Field(default=1.0, description="Seconds between stats messages to a session.")
    monitor_interval_s: float = Field(
        default=2.0,
        gt=0,
        description="Seconds between refreshes of the cluster gauges (queues, workers, scale).",
    )
    scale_window_s: float = Field(
        default=30.0, gt=0, description="Sliding window of the scale ratio, in seconds."
    )
    sample_fps: float = Field(default=10.0, gt=0, description="Default frames per second sent to inference.")
    max_sample_fps: float = Field(default=30.0, gt=0, description="Highest sample rate a join may ask for.")


def describe_invalid(exc: ValidationError) -> str:
    """One line naming the command-line flag of the first invalid setting and what is wrong with it."""
    first = exc.errors()[0]
    flag = "--" + "-".join(str(part) for part in first["loc"]).replace("_", "-")
    return f"{flag}: {first['msg']}"
