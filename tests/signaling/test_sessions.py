"""Session delivery through the real app and Redis: isolation, stats, bridge loss, cleanup, metrics.

Outcomes are published straight onto the result streams (as workers do) and bridges are heartbeat
records, so these tests need no media; tests/lookout/test_webrtc_client.py runs the same with real parts.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client import REGISTRY
from pytest_aiohttp import AiohttpClient
from redis.asyncio import Redis

from signaling.app import create_app
from signaling.sessions import new_session_id
from signaling.ws import pick_bridge
from tests.signaling.rest_harness import FakeWorker
from tests.signaling.ws_harness import Client, receive, signaling_settings
from tests.support.processes import wait_until
from tests.support.redis_server import RedisServer
from wire.bridge_rpc import HangupRequest, SessionEvent, load_session, next_request, publish_event
from wire.keys import Keys
from wire.liveness import BridgeInfo, beat
from wire.messages import Detection, DropReason, DropRecord, DropSite, ResultMessage, now_ms
from wire.outcomes import publish_outcome

MODEL = "yolox_nano"


async def joined_socket(client: Client) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await client.ws_connect("/ws")
    await receive(ws, "hello")
    await ws.send_json({"v": 2, "type": "join", "sample_fps": 5})
    return ws, await receive(ws, "joined", "error")


def result(session: str, seq: int) -> ResultMessage:
    return ResultMessage(
        session=session,
        seq=seq,
        received_ms=now_ms() - 30,
        model=MODEL,
        model_version="v1",
        worker="w1",
        width=640,
        height=480,
        detections=[Detection(label="person", class_id=0, score=0.9, box=(1, 2, 3, 4))],
    )


async def test_each_session_gets_only_its_own_results_and_stats(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, redis: Redis, keys: Keys
) -> None:
    client = await aiohttp_client(create_app(signaling_settings(redis_server.url)))
    await beat(redis, keys.bridge("quiet"), BridgeInfo(id="quiet"), 60)
    async with FakeWorker(redis, keys, MODEL, consume=False):
        ws_a, joined_a = await joined_socket(client)
        ws_b, joined_b = await joined_socket(client)
    a, b = joined_a["session"], joined_b["session"]
    assert a != b and len(a) >= 32  # server-generated and unguessable
    latency = (
        REGISTRY.get_sample_value("lookout_e2e_latency_seconds_count", {"model": MODEL, "path": "webrtc"})
        or 0.0
    )
    for seq in range(3):
        await publish_outcome(redis, keys, result(a, seq), maxlen=64, ttl_s=60)
        await publish_outcome(redis, keys, result(b, 100 + seq), maxlen=64, ttl_s=60)
    drop = DropRecord(session=a, seq=3, model=MODEL, reason=DropReason.DEADLINE, site=DropSite.WORKER)
    await publish_outcome(redis, keys, drop, maxlen=64, ttl_s=60)

    got_a = [await receive(ws_a, "detections") for _ in range(3)]
    got_b = [await receive(ws_b, "detections") for _ in range(3)]
    assert [d["seq"] for d in got_a] == [0, 1, 2] and {d["session"] for d in got_a} == {a}
    assert [d["seq"] for d in got_b] == [100, 101, 102] and {d["session"] for d in got_b} == {b}
    assert got_a[0]["latency_ms"] >= 30 and got_a[0]["width"] == 640
    assert got_a[0]["detections"][0]["box"] == [1, 2, 3, 4]

    async def stats_with_drop() -> dict[str, Any]:
        while True:
            stats = await receive(ws_a, "stats")
            if stats["dropped"]:
                return stats

    stats_a = await stats_with_drop()
    assert stats_a["dropped"] == 1 and stats_a["by_reason"] == {"deadline": 1} and stats_a["inferred"] == 3
    stats_b = await receive(ws_b, "stats")
    assert stats_b["dropped"] == 0
    after = REGISTRY.get_sample_value("lookout_e2e_latency_seconds_count", {"model": MODEL, "path": "webrtc"})
    assert after == latency + 6
    await ws_a.close()
    await ws_b.close()


async def test_bridge_death_is_reported_and_a_rejoin_gets_a_live_bridge(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, redis: Redis, keys: Keys
) -> None:
    client = await aiohttp_client(create_app(signaling_settings(redis_server.url)))
    await beat(redis, keys.bridge("doomed"), BridgeInfo(id="doomed"), 60)
    async with FakeWorker(redis, keys, MODEL, consume=False):
        ws, joined = await joined_socket(client)
        assert joined["bridge"] == "doomed"
        await redis.delete(keys.bridge("doomed"))  # what a killed bridge looks like: its heartbeat ends
        await beat(redis, keys.bridge("spare"), BridgeInfo(id="spare"), 60)
        error = await receive(ws, "error")
        assert error["code"] == "bridge_lost" and "doomed" in error["message"]
        assert not await redis.exists(keys.session(joined["session"]))
        await ws.send_json({"v": 2, "type": "join"})
        again = await receive(ws, "joined")
        assert again["bridge"] == "spare" and again["session"] != joined["session"]
    await ws.close()


async def test_closing_the_socket_hangs_up_and_deletes_the_record(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, redis: Redis, keys: Keys
) -> None:
    client = await aiohttp_client(create_app(signaling_settings(redis_server.url)))
    await beat(redis, keys.bridge("b1"), BridgeInfo(id="b1"), 60)
    async with FakeWorker(redis, keys, MODEL, consume=False):
        ws, joined = await joined_socket(client)
    session = joined["session"]
    assert await redis.ttl(keys.session(session)) > 0  # the record has a TTL even while refreshed
    await ws.close()

    async def gone() -> bool:
        return not await redis.exists(keys.session(session))

    await wait_until(gone, timeout=20, what="session record deleted")
    request = await next_request(redis, keys, "b1", timeout_s=5)
    assert isinstance(request, HangupRequest) and request.session == session


async def test_a_bridge_event_ends_the_session(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, redis: Redis, keys: Keys
) -> None:
    client = await aiohttp_client(create_app(signaling_settings(redis_server.url)))
    await beat(redis, keys.bridge("b1"), BridgeInfo(id="b1"), 60)
    async with FakeWorker(redis, keys, MODEL, consume=False):
        ws, joined = await joined_socket(client)
        session = joined["session"]

        async def subscribed() -> bool:
            counts = await redis.pubsub_numsub(keys.session_events(session))
            return bool(counts and counts[0][1])

        await wait_until(subscribed, timeout=20, what="signaling subscribed to session events")
        await publish_event(
            redis, keys, SessionEvent(session=session, bridge="b1", event="failed", detail="ice")
        )
        error = await receive(ws, "error")
        assert error["code"] == "bridge_lost" and "ice" in error["message"]
        ws2, joined2 = await joined_socket(client)
        await wait_until(
            lambda: _subscribed(redis, keys, joined2["session"]), timeout=20, what="second session subscribed"
        )
        event = SessionEvent(session=joined2["session"], bridge="b1", event="closed", detail="peer left")
        await publish_event(redis, keys, event)
        assert "peer left" in (await receive(ws2, "bye"))["reason"]
    await ws.close()
    await ws2.close()


async def _subscribed(redis: Redis, keys: Keys, session: str) -> bool:
    counts = await redis.pubsub_numsub(keys.session_events(session))
    return bool(counts and counts[0][1])


def test_session_ids_are_unique_and_long() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 34 for i in ids)


def test_the_least_loaded_bridge_with_room_is_picked() -> None:
    bridges = [
        BridgeInfo(id="busy", sessions=5, max_sessions=16),
        BridgeInfo(id="full", sessions=2, max_sessions=2),
        BridgeInfo(id="light", sessions=1, max_sessions=16),
    ]
    assert pick_bridge(bridges).id == "light"  # type: ignore[union-attr]
    assert pick_bridge([BridgeInfo(id="full", sessions=2, max_sessions=2)]) is None
    assert pick_bridge([]) is None


async def test_replicas_share_state_through_redis(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, redis: Redis, keys: Keys
) -> None:
    one = await aiohttp_client(create_app(signaling_settings(redis_server.url)))
    two = await aiohttp_client(create_app(signaling_settings(redis_server.url)))
    await beat(redis, keys.bridge("loaded"), BridgeInfo(id="loaded", sessions=3), 60)
    await beat(redis, keys.bridge("idle"), BridgeInfo(id="idle", sessions=0), 60)
    gauge = REGISTRY.get_sample_value("lookout_live_sessions", {"site": "signaling"}) or 0.0
    async with FakeWorker(redis, keys, MODEL, consume=False):
        ws_one, joined_one = await joined_socket(one)
        ws_two, joined_two = await joined_socket(two)
    # Each replica picked from the same registry, and wrote its session where any replica can see it.
    assert joined_one["bridge"] == joined_two["bridge"] == "idle"
    record = await load_session(redis, keys, joined_one["session"])
    assert record is not None and record.bridge == "idle" and record.model == MODEL
    assert REGISTRY.get_sample_value("lookout_live_sessions", {"site": "signaling"}) == gauge + 2
    # Results reach the socket of the session, whichever replica serves it.
    await publish_outcome(redis, keys, result(joined_two["session"], 7), maxlen=64, ttl_s=60)
    assert (await receive(ws_two, "detections"))["seq"] == 7
    await ws_one.close()
    await ws_two.close()
