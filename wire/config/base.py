"""The settings every process reads, the sections several services share, and the constrained types.

A field is described once, here, and its description is both the ``--help`` line of its flag
(``runtime.settings_cli``) and the comment above it in ``compose/.env.example``. A field whose flag is
not ``--field-name`` says so in ``json_schema_extra={"flags": [...]}`` (see ``flags``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import AfterValidator, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "LOOKOUT_"

SETTINGS_CONFIG = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def flags(*names: str) -> dict[str, Any]:
    """``json_schema_extra`` naming a field's command-line flags, where they are not ``--field-name``."""
    return {"flags": list(names)}


def _redis_url(url: str) -> str:
    if not url.startswith(REDIS_SCHEMES):
        raise ValueError(f"invalid Redis URL: must start with {', '.join(REDIS_SCHEMES)}")
    return url


Port = Annotated[int, Field(ge=1, le=65535)]
"""A TCP or UDP port that must be given."""
OptionalPort = Annotated[int, Field(ge=0, le=65535)]
"""A port where 0 means off (or: let the OS choose)."""
Seconds = Annotated[float, Field(gt=0)]
RedisUrl = Annotated[str, AfterValidator(_redis_url)]


def ttl_above_interval(ttl_name: str, ttl: float, interval_name: str, interval: float) -> None:
    """A record refreshed every ``interval`` must live longer than that, or it expires between refreshes."""
    if ttl <= interval:
        raise ValueError(f"{ttl_name} ({ttl:g}) must be greater than {interval_name} ({interval:g})")


class RegistrySection(BaseSettings):
    """Where the shared state is: Redis (and its key prefix) and the model registry's file store."""

    model_config = SETTINGS_CONFIG

    redis_url: RedisUrl = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis server all services share.",
        json_schema_extra=flags("--redis-url", "--redis"),
    )
    redis_username: str = Field(
        default="",
        max_length=128,
        description="ACL user of that Redis (one per role), used when the URL names none.",
    )
    redis_password: str = Field(
        default="",
        repr=False,
        description="Password of that Redis (requirepass or an ACL user's), used when the URL carries none.",
    )
    redis_ca_file: Path | None = Field(
        default=None, description="CA certificate that signs the Redis server's (rediss:// URLs)."
    )
    redis_cert_file: Path | None = Field(
        default=None, description="Client certificate for a Redis that verifies clients (rediss://)."
    )
    redis_key_file: Path | None = Field(default=None, description="Private key of redis_cert_file.")
    key_prefix: str = Field(
        default="lookout", min_length=1, description="Prefix of every Redis key, to share one Redis."
    )
    registry_dir: Path = Field(
        default=Path("registry"),
        description="Model registry file store (a shared volume): a folder per model, a file per version.",
    )


class CommonSettings(RegistrySection):
    """Settings every Lookout process reads."""

    model_dir: Path = Field(default=Path("models"), description="Folder where model names are looked up.")
    log_level: str = Field(
        default="INFO",
        pattern="(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$",
        description="Python logging level: DEBUG, INFO, WARNING, ERROR.",
    )
    heartbeat_interval_s: Seconds = Field(default=1.0, description="Seconds between liveness heartbeats.")
    heartbeat_ttl_s: Seconds = Field(
        default=5.0, description="Seconds after the last heartbeat a process is dead."
    )
    influx_url: str = Field(default="", description="InfluxDB 2 URL to push metrics to; empty disables it.")
    influx_token: str = Field(default="", description="InfluxDB 2 API token.")
    influx_org: str = Field(default="lookout", description="InfluxDB 2 organisation.")
    influx_bucket: str = Field(default="lookout", description="InfluxDB 2 bucket.")
    influx_interval_s: Seconds = Field(default=5.0, description="Seconds between InfluxDB pushes.")

    @model_validator(mode="after")
    def _heartbeat_outlives_its_interval(self) -> Self:
        ttl_above_interval(
            "heartbeat_ttl_s", self.heartbeat_ttl_s, "heartbeat_interval_s", self.heartbeat_interval_s
        )
        return self


class StreamSettings(CommonSettings):
    """Limits of the frame and result streams (read by producers and workers alike)."""

    frame_stream_maxlen: int = Field(
        default=256, ge=1, description="Approximate cap (MAXLEN ~) of each frame stream."
    )
    result_stream_maxlen: int = Field(
        default=64, ge=1, description="Approximate cap of each session's result stream."
    )
    result_stream_ttl_s: int = Field(
        default=60, ge=1, description="Idle seconds before a result stream expires."
    )
    max_image_bytes: int = Field(default=8 * 1024 * 1024, ge=1, description="Largest encoded image accepted.")
    max_image_side: int = Field(
        default=4096, ge=1, description="Largest width or height accepted, in pixels."
    )
    frame_deadline_ms: float = Field(
        default=1000.0, gt=0, description="Default time a frame may wait before it is stale."
    )


class SessionSection(BaseSettings):
    """The live-session record (``wire.bridge_rpc``): kept by signaling, checked by the bridges."""

    model_config = SETTINGS_CONFIG

    session_ttl_s: Seconds = Field(
        default=10.0,
        description="Seconds a session record outlives its signaling replica (refreshed while open).",
    )

    @property
    def session_refresh_s(self) -> float:
        """The longest the record's owner waits between refreshes: ``session_refresh_interval(ttl)``."""
        return session_refresh_interval(self.session_ttl_s)


def session_refresh_interval(ttl_s: float) -> float:
    """The longest an owner waits between refreshes of a session record with ``ttl_s`` (re-saving it when
    Redis lost it): a third of its TTL, at least 0.2 s. Signaling refreshes every
    ``session_refresh_interval_s``, which its settings hold to at most this. A bridge tolerates a record
    missing for about twice this long (``mediabridge.orphans``)."""
    return max(0.2, ttl_s / 3)


class MetricsSection(BaseSettings):
    """The Prometheus endpoint of a process on a port of its own (the worker, the bridge, signaling).

    Signaling serves /metrics on its HTTP port unless this port is set (it then binds ``metrics_host``).
    """

    model_config = SETTINGS_CONFIG

    metrics_port: OptionalPort = Field(
        default=0,
        description="Port of the Prometheus /metrics endpoint; 0 disables it (signaling: serves it on "
        "its HTTP port).",
    )


class SampleRateSection(BaseSettings):
    """The cap on a session's sample rate, enforced by signaling (at join) and by the bridge (again)."""

    model_config = SETTINGS_CONFIG

    max_sample_fps: float = Field(
        default=30.0, gt=0, le=240, description="Highest frames per second a session may ask for."
    )
