"""Heartbeats in a real Redis: listed while fresh, gone after their TTL, foreign formats ignored."""

from __future__ import annotations

from redis.asyncio import Redis

from tests.support.processes import wait_until
from wire.keys import Keys
from wire.liveness import BridgeInfo, WorkerInfo, beat, live_bridges, live_workers


async def test_live_workers_lists_fresh_heartbeats_by_model(redis: Redis, keys: Keys) -> None:
    for worker_id, model in (("w2", "a"), ("w1", "a"), ("w3", "b")):
        await beat(
            redis, keys.worker(worker_id), WorkerInfo(id=worker_id, model=model, in_flight=2), ttl_s=30
        )
    assert [w.id for w in await live_workers(redis, keys)] == ["w1", "w2", "w3"]
    assert [w.id for w in await live_workers(redis, keys, "a")] == ["w1", "w2"]
    (w3,) = await live_workers(redis, keys, "b")
    assert w3.in_flight == 2 and w3.host


async def test_a_heartbeat_expires_after_its_ttl(redis: Redis, keys: Keys) -> None:
    await beat(redis, keys.worker("w1"), WorkerInfo(id="w1", model="a"), ttl_s=0.3)
    assert await live_workers(redis, keys)

    async def gone() -> bool:
        return not await live_workers(redis, keys)

    await wait_until(gone, timeout=10, what="the heartbeat to expire")


async def test_unparseable_heartbeats_are_skipped(redis: Redis, keys: Keys) -> None:
    await redis.set(keys.worker("weird"), b"{not json")
    await beat(redis, keys.worker("ok"), WorkerInfo(id="ok", model="a"), ttl_s=30)
    assert [w.id for w in await live_workers(redis, keys)] == ["ok"]


async def test_bridges_are_listed_apart_from_workers(redis: Redis, keys: Keys) -> None:
    await beat(redis, keys.bridge("b1"), BridgeInfo(id="b1", sessions=3), ttl_s=30)
    await beat(redis, keys.worker("w1"), WorkerInfo(id="w1", model="a"), ttl_s=30)
    (bridge,) = await live_bridges(redis, keys)
    assert (bridge.id, bridge.sessions) == ("b1", 3)
    assert [w.id for w in await live_workers(redis, keys)] == ["w1"]


async def test_no_heartbeats_no_peers(redis: Redis, keys: Keys) -> None:
    assert await live_workers(redis, keys) == []
    assert await live_bridges(redis, keys) == []
