"""StreamConsumer on a real redis-server: group creation and recovery, reads, claims, own pending, leaving."""

from __future__ import annotations

import asyncio
from typing import cast

from redis.asyncio import Redis

from inference.consumer import StreamConsumer
from wire.keys import WORKER_GROUP


async def test_the_group_is_created_once_and_starts_at_the_stream_start(redis: Redis) -> None:
    await redis.xadd("s", {"n": "0"})  # written before any worker existed: still served
    consumer = StreamConsumer(redis, "s", "c1")
    await consumer.ensure_group()
    await consumer.ensure_group()
    ((entry_id, fields),) = await consumer.read(count=10, block_ms=100)
    assert fields == {b"n": b"0"} and entry_id


async def test_reads_take_at_most_count_and_never_the_same_entry_twice(redis: Redis) -> None:
    first, second = StreamConsumer(redis, "s", "c1"), StreamConsumer(redis, "s", "c2")
    await first.ensure_group()
    for i in range(5):
        await redis.xadd("s", {"n": str(i)})
    a = await first.read(count=2, block_ms=100)
    b = await second.read(count=10, block_ms=100)
    assert len(a) == 2 and len(b) == 3
    assert not {i for i, _ in a} & {i for i, _ in b}
    assert await first.read(count=10, block_ms=50) == []


async def test_a_lost_group_is_recreated_on_the_next_read(redis: Redis) -> None:
    consumer = StreamConsumer(redis, "s", "c1")
    await consumer.ensure_group()
    await redis.delete("s")  # what a Redis restart without persistence looks like
    assert await consumer.read(count=1, block_ms=50) == []
    assert [g["name"] for g in await redis.xinfo_groups("s")] in ([WORKER_GROUP.encode()], [WORKER_GROUP])


async def test_idle_entries_of_another_consumer_are_claimed(redis: Redis) -> None:
    dead, alive = StreamConsumer(redis, "s", "dead"), StreamConsumer(redis, "s", "alive")
    await dead.ensure_group()
    ids = [cast(bytes, await redis.xadd("s", {"n": str(i)})).decode() for i in range(3)]
    await dead.read(count=10, block_ms=50)
    assert await alive.claim_idle(min_idle_ms=60_000, count=10) == []  # not idle long enough
    await asyncio.sleep(0.2)
    assert sorted(await alive.claim_idle(min_idle_ms=100, count=10)) == sorted(ids)
    assert [i for i, _ in await alive.own_pending()] == ids
    assert await alive.own_pending_ids() == ids and await dead.own_pending_ids() == []
    assert await dead.own_pending() == []


async def test_own_pending_pages_and_shows_deleted_entries_empty(redis: Redis) -> None:
    consumer = StreamConsumer(redis, "s", "c1")
    await consumer.ensure_group()
    ids = [cast(bytes, await redis.xadd("s", {"n": str(i)})).decode() for i in range(7)]
    await consumer.read(count=10, block_ms=50)
    await redis.xdel("s", ids[0])
    pending = await consumer.own_pending(count=3)
    assert [i for i, _ in pending] == ids
    assert pending[0][1] == {} and pending[1][1] == {b"n": b"1"}


async def test_a_consumer_leaves_only_when_it_holds_nothing(redis: Redis) -> None:
    consumer = StreamConsumer(redis, "s", "c1")
    await consumer.ensure_group()
    entry_id = await redis.xadd("s", {"n": "0"})
    await consumer.read(count=1, block_ms=50)
    assert not await consumer.leave()
    await redis.xack("s", WORKER_GROUP, entry_id)
    assert await consumer.leave()
    assert await redis.xinfo_consumers("s", WORKER_GROUP) == []
