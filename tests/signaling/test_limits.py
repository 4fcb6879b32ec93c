"""Join limits and the first-offer deadline through the real app and Redis, and the whole replica
through a real Redis restart: the pool heals, records come back, a fresh join works."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from pytest_aiohttp import AiohttpClient
from redis.asyncio import Redis

from signaling.app import create_app
from tests.signaling.rest_harness import FakeWorker
from tests.signaling.ws_harness import Client, receive, signaling_settings
from tests.support.processes import wait_until
from tests.support.redis_server import RedisServer
from wire.keys import Keys
from wire.liveness import BridgeInfo, beat

MODEL = "yolox_nano"


async def join(client: Client) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await client.ws_connect("/ws")
    await receive(ws, "hello")
    await ws.send_json({"v": 2, "type": "join"})
    return ws, await receive(ws, "joined", "error")


async def test_a_join_without_an_offer_ends_with_no_offer(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, redis: Redis, keys: Keys
) -> None:
    client = await aiohttp_client(create_app(signaling_settings(redis_server.url, join_offer_timeout_s=0.5)))
    await beat(redis, keys.bridge("b1"), BridgeInfo(id="b1"), 60)
    async with FakeWorker(redis, keys, MODEL, consume=False):
        ws, joined = await join(client)
        assert joined["type"] == "joined"
        error = await receive(ws, "error", timeout=5)
        assert error["code"] == "no_offer" and "0.5 s" in error["message"]
        assert not await redis.exists(keys.session(joined["session"]))
        await ws.send_json({"v": 2, "type": "join"})  # the socket stays usable: join again
        assert (await receive(ws, "joined"))["session"] != joined["session"]
    await ws.close()


async def test_sessions_per_client_and_per_replica_are_capped(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, redis: Redis, keys: Keys
) -> None:
    settings = signaling_settings(redis_server.url, max_sessions_per_client=2, max_sessions_per_replica=3)
    client = await aiohttp_client(create_app(settings))
    await beat(redis, keys.bridge("b1"), BridgeInfo(id="b1"), 60)
    async with FakeWorker(redis, keys, MODEL, consume=False):
        (ws1, one), (ws2, two), (ws3, three) = [await join(client) for _ in range(3)]
        assert one["type"] == two["type"] == "joined"
        assert three["code"] == "too_many_sessions" and "127.0.0.1 holds 2" in three["message"]
        await ws1.send_json({"v": 2, "type": "bye"})
        await receive(ws1, "bye")
        await ws3.send_json({"v": 2, "type": "join"})  # the refused socket stays usable
        assert (await receive(ws3, "joined"))["type"] == "joined"
    for ws in (ws1, ws2, ws3):
        await ws.close()


async def test_joins_per_minute_per_client_count_every_socket(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, redis: Redis, keys: Keys
) -> None:
    client = await aiohttp_client(
        create_app(signaling_settings(redis_server.url, joins_per_minute_per_client=3))
    )
    sockets = []
    codes = []
    for _ in range(4):  # four sockets, one join each: no socket is over its own limit
        ws = await client.ws_connect("/ws")
        await receive(ws, "hello")
        await ws.send_json({"v": 2, "type": "join"})
        codes.append((await receive(ws, "error"))["code"])
        sockets.append(ws)
    assert codes == ["no_worker", "no_worker", "no_worker", "rate_limited"]
    for ws in sockets:
        await ws.close()


async def test_a_redis_restart_heals_the_pool_and_restores_records(
    aiohttp_client: AiohttpClient, private_redis: RedisServer
) -> None:
    keys = Keys()
    client = await aiohttp_client(create_app(signaling_settings(private_redis.url)))
    admin = Redis.from_url(private_redis.url)
    await beat(admin, keys.bridge("b1"), BridgeInfo(id="b1"), 600)
    async with FakeWorker(admin, keys, MODEL, consume=False):
        ws, joined = await join(client)
    assert joined["type"] == "joined"
    await admin.aclose()
    await asyncio.to_thread(private_redis.restart)  # no persistence: every key is gone
    admin = Redis.from_url(private_redis.url)

    async def restored() -> bool:
        return bool(await admin.exists(keys.session(joined["session"])))

    await wait_until(restored, timeout=2, interval=0.05, what="the session record restored")
    assert (await client.get("/healthz")).status == 200
    await beat(admin, keys.bridge("b1"), BridgeInfo(id="b1"), 600)
    async with FakeWorker(admin, keys, MODEL, consume=False):
        ws2, again = await join(client)  # a new client after the restart: no stale pool
    assert again["type"] == "joined", again
    await ws.close()
    await ws2.close()
    await admin.aclose()


async def test_the_offer_deadline_waits_for_an_offer_in_flight(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, redis: Redis, keys: Keys
) -> None:
    settings = signaling_settings(redis_server.url, join_offer_timeout_s=0.3, offer_timeout_s=1.0)
    client = await aiohttp_client(create_app(settings))
    await beat(redis, keys.bridge("mute"), BridgeInfo(id="mute"), 60)  # registered, never answers
    async with FakeWorker(redis, keys, MODEL, consume=False):
        ws, joined = await join(client)
        assert joined["bridge"] == "mute"
        await ws.send_json({"v": 2, "type": "offer", "sdp": "v=0\r\nm=video 9 UDP 96\r\n"})
        # The deadline passes while the offer waits for the bridge: the offer's own outcome is what
        # the client hears, once, not a no_offer on top of it.
        error = await receive(ws, "error", timeout=5)
        assert error["code"] == "bridge_timeout"
        await ws.send_json({"v": 2, "type": "ping"})
        assert (await receive(ws, "pong", "error"))["type"] == "pong"
    await ws.close()
