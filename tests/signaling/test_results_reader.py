"""The shared result reader: many streams on one XREAD, followed and unfollowed while a read blocks,
fanned out to the right sink, and ridden through a real Redis restart."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from signaling.results_reader import ResultsReader
from tests.support.processes import wait_until
from tests.support.redis_server import RedisServer
from tests.support.tasks import running_tasks
from wire.messages import Fields


class Collected:
    """A sink that records what it got."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, Fields]] = []

    def __call__(self, entry_id: str, fields: Fields) -> None:
        self.entries.append((entry_id, fields))

    @property
    def values(self) -> list[bytes]:
        return [fields[b"n"] for _, fields in self.entries]


async def test_each_stream_goes_to_its_own_sink_on_one_connection(redis: Redis) -> None:
    reader = ResultsReader(redis, block_ms=100)
    sinks = {f"results:{i}": Collected() for i in range(50)}
    for stream, sink in sinks.items():
        reader.follow(stream, sink)
    clients_before = len(await redis.client_list())
    async with running_tasks(reader.run()):
        for i, stream in enumerate(sinks):
            await redis.xadd(stream, {"n": str(i)})

        async def all_delivered() -> bool:
            return all(sink.values == [str(i).encode()] for i, sink in enumerate(sinks.values()))

        await wait_until(all_delivered, timeout=10, what="every stream delivered to its sink")
        # Fifty followed streams cost the reader one connection of the pool (not fifty).
        assert len(await redis.client_list()) <= clients_before + 1


async def test_a_stream_followed_while_a_read_blocks_is_read_from_its_start_id(redis: Redis) -> None:
    reader = ResultsReader(redis, block_ms=5000)  # a long block: following must not wait for it to end
    first, late = Collected(), Collected()
    reader.follow("results:first", first)
    async with running_tasks(reader.run()):
        await asyncio.sleep(0.2)  # the read is now blocked on the first stream only
        await redis.xadd("results:late", {"n": b"early"})  # published before it is followed
        reader.follow("results:late", late, start_id="0-0")
        await redis.xadd("results:first", {"n": b"wake"})  # ends the blocked read
        await wait_until(lambda: _async(late.values == [b"early"]), timeout=10, what="late stream read")
        assert first.values == [b"wake"]


async def test_an_unfollowed_stream_is_no_longer_delivered(redis: Redis) -> None:
    reader = ResultsReader(redis, block_ms=100)
    kept, dropped = Collected(), Collected()
    reader.follow("results:kept", kept)
    reader.follow("results:dropped", dropped)
    async with running_tasks(reader.run()):
        await redis.xadd("results:dropped", {"n": b"1"})
        await wait_until(lambda: _async(dropped.values == [b"1"]), timeout=10, what="first entry")
        reader.unfollow("results:dropped")
        await redis.xadd("results:dropped", {"n": b"2"})
        await redis.xadd("results:kept", {"n": b"k"})
        await wait_until(lambda: _async(kept.values == [b"k"]), timeout=10, what="kept stream")
        await asyncio.sleep(0.3)
        assert dropped.values == [b"1"] and reader.streams == ["results:kept"]


async def test_a_failing_sink_does_not_stop_the_others(redis: Redis) -> None:
    reader = ResultsReader(redis, block_ms=100)
    good = Collected()

    def broken(entry_id: str, fields: Fields) -> None:
        raise RuntimeError("a session's bug")

    reader.follow("results:broken", broken)
    reader.follow("results:good", good)
    async with running_tasks(reader.run()):
        await redis.xadd("results:broken", {"n": b"x"})
        await redis.xadd("results:good", {"n": b"1"})
        await redis.xadd("results:good", {"n": b"2"})
        await wait_until(lambda: _async(good.values == [b"1", b"2"]), timeout=10, what="good stream")


async def test_a_redis_restart_is_ridden_out_and_reported(private_redis: RedisServer) -> None:
    redis = Redis.from_url(private_redis.url, socket_connect_timeout=1)
    reconnects: list[int] = []
    reader = ResultsReader(redis, block_ms=100, on_reconnect=lambda: reconnects.append(1))
    sink = Collected()
    reader.follow("results:s", sink)
    try:
        async with running_tasks(reader.run()):
            await redis.xadd("results:s", {"n": b"before"})
            await wait_until(lambda: _async(sink.values == [b"before"]), timeout=10, what="before")
            await asyncio.to_thread(private_redis.stop)
            await wait_until(lambda: _async(reader.outage.down), timeout=10, what="the outage noticed")
            await asyncio.to_thread(private_redis.start)
            admin = Redis.from_url(private_redis.url)
            await wait_until(lambda: _async(bool(reconnects)), timeout=15, what="the reconnect reported")
            await admin.xadd("results:s", {"n": b"after"})
            await wait_until(lambda: _async(sink.values == [b"before", b"after"]), timeout=10, what="after")
            await admin.aclose()
        assert not reader.outage.down
    finally:
        await redis.aclose()


async def test_nothing_followed_means_no_reads(redis: Redis) -> None:
    reader = ResultsReader(redis, block_ms=50)
    before = await _xread_calls(redis)
    async with running_tasks(reader.run()):
        await asyncio.sleep(0.3)
    assert await _xread_calls(redis) == before  # an idle replica does not poll Redis


async def _xread_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    entry = stats.get("cmdstat_xread")
    return int(entry["calls"]) if entry else 0


async def _async(value: bool) -> bool:
    return value
