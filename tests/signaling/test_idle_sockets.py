"""Acceptance of issue 12: 500 idle sockets, joined and never offering, do not take signaling down.

The real app on aiohttp's test server, a private real redis-server, a real in-process media bridge and
FakeWorker for inference. With 500 joined sockets open: /healthz stays 200, a REST detection and a live
WebRTC session beside them work, and signaling's connections to Redis (``CLIENT LIST``, by name), sampled
all along, never exceed ``redis_max_connections``, the replica's stated budget. The per-client limits are
raised for the test, since every socket comes from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp
from pytest_aiohttp import AiohttpClient
from redis.asyncio import Redis

from lookout.webrtc_client import LiveClient
from signaling.app import create_app
from signaling.redis_client import CLIENT_NAME
from tests.signaling.rest_harness import FakeWorker, jpeg_bytes
from tests.signaling.ws_harness import StillTrack, receive, running_bridge, signaling_settings
from tests.support.redis_server import RedisServer
from wire.keys import Keys

log = logging.getLogger(__name__)

MODEL = "yolox_nano"
IDLE_SOCKETS = 500
BUDGET = 16
"""``redis_max_connections`` of the replica under test (the default)."""


async def signaling_connections(admin: Redis) -> int:
    return sum(1 for c in await admin.client_list() if c.get("name") == CLIENT_NAME)


async def test_500_idle_joined_sockets_leave_health_rest_and_live_sessions_working(
    aiohttp_client: AiohttpClient, private_redis: RedisServer
) -> None:
    started = time.monotonic()
    settings = signaling_settings(
        private_redis.url,
        redis_max_connections=BUDGET,
        max_sessions_per_replica=IDLE_SOCKETS + 10,
        max_sessions_per_client=IDLE_SOCKETS + 10,
        joins_per_minute_per_client=IDLE_SOCKETS + 50,
        join_offer_timeout_s=120.0,
    )
    client = await aiohttp_client(create_app(settings))
    admin = Redis.from_url(private_redis.url)
    keys = Keys()
    most_seen = 0

    async def sample() -> None:
        nonlocal most_seen
        while True:
            most_seen = max(most_seen, await signaling_connections(admin))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    # The test client's own session pools at most 100 connections: the idle sockets get their own.
    idle = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    gate = asyncio.Semaphore(50)

    async def join_idle() -> str:
        async with gate:
            ws = await idle.ws_connect(client.make_url("/ws"))
            sockets.append(ws)
            await receive(ws, "hello")
            await ws.send_json({"v": 2, "type": "join"})
            joined = await receive(ws, "joined", "error")
            assert joined["type"] == "joined", joined
            return str(joined["session"])

    try:
        async with running_bridge(private_redis.url, "bridge-idle"), FakeWorker(admin, keys, MODEL):
            sessions = await asyncio.gather(*(join_idle() for _ in range(IDLE_SOCKETS)))
            joined_at = time.monotonic()
            assert len(set(sessions)) == IDLE_SOCKETS
            assert await admin.exists(*(keys.session(s) for s in sessions)) == IDLE_SOCKETS

            health = await client.get("/healthz")
            assert health.status == 200, await health.text()
            assert (await health.json())["sessions"] == IDLE_SOCKETS

            rest = await client.post(
                "/api/v1/detect", data=jpeg_bytes(), headers={"Content-Type": "image/jpeg"}
            )
            assert rest.status == 200, await rest.text()
            assert (await rest.json())["detections"][0]["label"] == "person"

            url = str(client.make_url("/")).rstrip("/")
            async with LiveClient(url, ice_host_addresses=["127.0.0.1"], timeout_s=30) as live:
                joined = await live.join(sample_fps=5)
                await live.offer(StillTrack())
                detections = await live.wait_for("detections", timeout_s=30)
                assert detections.session == joined.session
                await live.bye()

            assert (await client.get("/healthz")).status == 200
            assert await admin.exists(*(keys.session(s) for s in sessions)) == IDLE_SOCKETS
            now_seen = await signaling_connections(admin)
    finally:
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        await idle.close()
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await admin.aclose()

    elapsed = time.monotonic() - started
    log.warning(
        "%d idle sockets joined in %.1f s; signaling held %d Redis connections (at most %d seen, "
        "budget %d); the whole test took %.1f s",
        IDLE_SOCKETS,
        joined_at - started,
        now_seen,
        most_seen,
        BUDGET,
        elapsed,
    )
    assert 0 < most_seen <= BUDGET
    assert elapsed < 30
