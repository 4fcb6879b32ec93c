"""Helpers of the signaling WebSocket tests: the real app, a real in-process media bridge, a still track.

The bridge here is the real ``MediaBridge`` (aiortc, Redis request list, heartbeats) running in the test's
event loop, with ICE restricted to 127.0.0.1. Inference is the REST tests' ``FakeWorker`` (one fixed
detection per frame), because these tests are about signaling; the real worker runs in the live tests
(tests/lookout/test_webrtc_client.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import av
import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiortc import VideoStreamTrack
from redis.asyncio import Redis

from mediabridge import ice
from mediabridge.bridge import MediaBridge
from tests.support.processes import wait_until
from wire import PROTOCOL_VERSION
from wire.config import BridgeSettings, SignalingSettings
from wire.keys import Keys

Client = TestClient[web.Request, web.Application]
"""The aiohttp test client of the signaling app."""


async def receive(ws: aiohttp.ClientWebSocketResponse, *types: str, timeout: float = 20) -> dict[str, Any]:
    """The next message of one of ``types`` (stats, which arrive on their own schedule, are skipped)."""
    while True:
        msg = await ws.receive(timeout=timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, f"socket ended: {msg}"
        data: dict[str, Any] = json.loads(msg.data)
        assert data["v"] == PROTOCOL_VERSION
        if data["type"] in types:
            return data
        assert data["type"] in ("stats", "detections", "hello", "models"), data


def signaling_settings(redis_url: str, **overrides: Any) -> SignalingSettings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "heartbeat_interval_s": 0.2,
        "heartbeat_ttl_s": 5.0,
        "offer_timeout_s": 15.0,
        "stats_interval_s": 0.5,
        **overrides,
    }
    return SignalingSettings(**values)


@contextlib.asynccontextmanager
async def running_bridge(redis_url: str, bridge_id: str, **overrides: Any) -> AsyncIterator[MediaBridge]:
    """A real MediaBridge in this event loop, registered before it is yielded."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "bridge_id": bridge_id,
        "ice_host_addresses": "127.0.0.1",
        "heartbeat_interval_s": 0.2,
        "heartbeat_ttl_s": 5.0,
        **overrides,
    }
    settings = BridgeSettings(**values)
    ice.restrict_host_addresses(["127.0.0.1"])
    redis = Redis.from_url(redis_url)
    bridge = MediaBridge(settings, redis)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    keys = Keys(settings.key_prefix)

    async def registered() -> bool:
        return bool(await redis.exists(keys.bridge(bridge_id)))

    try:
        await wait_until(registered, timeout=20, what=f"bridge {bridge_id} registered")
        yield bridge
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await redis.aclose()


class StillTrack(VideoStreamTrack):
    """A cheap synthetic camera: the same grey frame with a moving bar, at 15 fps."""

    def __init__(self, width: int = 320, height: int = 240, fps: float = 15.0) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._count = 0
        self._start = time.monotonic()

    async def recv(self) -> av.VideoFrame:
        self._count += 1
        wait = self._start + self._count / self.fps - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        image = np.full((self.height, self.width, 3), 100, np.uint8)
        x = (self._count * 4) % self.width
        image[:, x : x + 8] = 255
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = int(self._count * 90000 / self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        return frame
