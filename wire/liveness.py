"""Heartbeats: who is alive, kept in Redis with a TTL so that any process can list live peers."""

from __future__ import annotations

import socket
from typing import TypeVar

from pydantic import BaseModel, Field, ValidationError
from redis.asyncio import Redis

from wire.keys import Keys
from wire.messages import now_ms


class WorkerInfo(BaseModel):
    """What a live inference worker says about itself on every heartbeat."""

    id: str = Field(description="Worker id, unique per process.")
    model: str = Field(description="Model name it serves (the frame stream it reads).")
    model_version: str = Field(default="", description="Version of the model now loaded.")
    host: str = Field(default_factory=socket.gethostname, description="Host name.")
    pid: int = Field(default=0, description="Process id.")
    provider: str = Field(default="", description="Execution provider in use (CPUExecutionProvider, ...).")
    batch: int = Field(default=1, description="Most frames per inference call.")
    threads: int = Field(default=1, description="Intra-op threads.")
    in_flight: int = Field(default=0, description="Frames read but not yet ended.")
    frames_done: int = Field(default=0, description="Frames ended (results plus drops) since start.")
    started_ms: float = Field(default_factory=now_ms, description="Start time.")
    beat_ms: float = Field(default_factory=now_ms, description="Time of this heartbeat.")


class BridgeInfo(BaseModel):
    """What a live media bridge says about itself on every heartbeat."""

    id: str = Field(description="Bridge id, unique per process.")
    host: str = Field(default_factory=socket.gethostname, description="Host name.")
    pid: int = Field(default=0, description="Process id.")
    sessions: int = Field(default=0, description="Live WebRTC sessions.")
    max_sessions: int = Field(default=16, description="Sessions it accepts at most.")
    started_ms: float = Field(default_factory=now_ms, description="Start time.")
    beat_ms: float = Field(default_factory=now_ms, description="Time of this heartbeat.")


Info = TypeVar("Info", WorkerInfo, BridgeInfo)


async def beat(redis: Redis, key: str, info: BaseModel, ttl_s: float) -> None:
    """Publish one heartbeat that expires after ``ttl_s`` unless renewed."""
    await redis.set(key, info.model_dump_json(), px=max(1, int(ttl_s * 1000)))


async def _live(redis: Redis, pattern: str, model: type[Info]) -> list[Info]:
    keys = [key async for key in redis.scan_iter(match=pattern, count=500)]
    if not keys:
        return []
    found: list[Info] = []
    for raw in await redis.mget(keys):
        if raw is None:
            continue  # expired between SCAN and MGET
        try:
            found.append(model.model_validate_json(raw))
        except ValidationError:
            continue  # a newer or older peer's format: not ours to judge here
    return sorted(found, key=lambda info: info.id)


async def live_workers(redis: Redis, keys: Keys, model: str | None = None) -> list[WorkerInfo]:
    """Workers whose heartbeat has not expired, optionally only those serving ``model``."""
    workers = await _live(redis, keys.worker_pattern(), WorkerInfo)
    return [w for w in workers if model is None or w.model == model]


async def live_bridges(redis: Redis, keys: Keys) -> list[BridgeInfo]:
    """Bridges whose heartbeat has not expired."""
    return await _live(redis, keys.bridge_pattern(), BridgeInfo)
