"""FrameClient and iter_outcomes against a real redis-server (a small in-test responder plays the worker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from tests.support.redis_server import RedisServer
from wire import client as client_module
from wire.client import FrameClient, StreamReply, iter_outcomes
from wire.config import StreamSettings
from wire.keys import WORKER_GROUP, Keys
from wire.liveness import WorkerInfo, beat
from wire.messages import (
    DropReason,
    DropRecord,
    DropSite,
    Fields,
    FrameMessage,
    Outcome,
    ResultMessage,
    decode_outcome,
)
from wire.metrics import FRAMES_DROPPED
from wire.outcomes import Ack, drop_counts, publish_outcome
from wire.tasks import cancel_and_wait

MODEL = "m"


async def _respond(redis: Redis, keys: Keys, *, ignore: set[int] | None = None) -> None:
    """Answer every frame on the model's stream with an empty result, except the seqs in ``ignore``
    (those stay pending, as with a worker that died holding them)."""
    stream = keys.frames(MODEL)
    with contextlib.suppress(Exception):
        await redis.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
    while True:
        reply = cast(
            StreamReply, await redis.xreadgroup(WORKER_GROUP, "fake", {stream: ">"}, count=10, block=200)
        )
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                frame = FrameMessage.from_fields(fields)
                if ignore and frame.seq in ignore:
                    continue  # left pending, as by a worker that died holding it
                await redis.xack(stream, WORKER_GROUP, entry_id)
                result = ResultMessage(
                    session=frame.session,
                    seq=frame.seq,
                    received_ms=frame.received_ms,
                    model=MODEL,
                    model_version="v",
                    worker="fake",
                    width=frame.width,
                    height=frame.height,
                )
                await publish_outcome(redis, keys, result, maxlen=100, ttl_s=60)


async def _published(redis: Redis, keys: Keys, session: str) -> AsyncIterator[Outcome]:
    """The outcomes on ``session``'s result stream, oldest first."""
    entries = cast(list[tuple[bytes, Fields]], await redis.xrange(keys.results(session)))
    for _entry_id, fields in entries:
        yield decode_outcome(fields)


@pytest.fixture
async def responder(redis: Redis, keys: Keys) -> AsyncIterator[None]:
    task = asyncio.create_task(_respond(redis, keys, ignore={1}))
    yield
    await cancel_and_wait(task)


async def test_detect_resolves_to_the_frames_own_result(redis: Redis, keys: Keys, responder: None) -> None:
    async with FrameClient(redis, keys=keys) as client:
        outcome = await client.detect(b"jpeg", model=MODEL, width=4, height=3, timeout_s=30)
        assert isinstance(outcome, ResultMessage)
        assert (outcome.session, outcome.seq, outcome.width) == (client.session, 0, 4)
        assert client.in_flight == 0


async def test_a_frame_without_outcome_times_out_as_a_counted_drop(
    redis: Redis, keys: Keys, responder: None
) -> None:
    async with FrameClient(redis, keys=keys) as client:
        await client.detect(b"jpeg", model=MODEL, width=1, height=1, timeout_s=30)  # seq 0
        before = FRAMES_DROPPED.labels(model=MODEL, site="client", reason="timeout")._value.get()
        outcome = await client.detect(
            b"jpeg", model=MODEL, width=1, height=1, timeout_s=0.5
        )  # seq 1: ignored
        assert isinstance(outcome, DropRecord)
        assert (outcome.reason, outcome.site, outcome.seq) == (DropReason.TIMEOUT, DropSite.CLIENT, 1)
        assert (await drop_counts(redis, keys, MODEL))["timeout"] == 1
        assert FRAMES_DROPPED.labels(model=MODEL, site="client", reason="timeout")._value.get() == before + 1
        assert client.in_flight == 0


async def test_a_timed_out_frame_is_counted_once_even_when_a_worker_ends_it_later(
    redis: Redis, keys: Keys, responder: None
) -> None:
    async with FrameClient(redis, keys=keys) as client:
        outcome = await client.detect(b"jpeg", model=MODEL, width=1, height=1, timeout_s=30)  # seq 0
        outcome = await client.detect(b"jpeg", model=MODEL, width=1, height=1, timeout_s=0.5)  # seq 1
        assert isinstance(outcome, DropRecord) and outcome.reason is DropReason.TIMEOUT
        session = client.session
    # A live worker claims the dead one's frame later and drops it as late: that end publishes nothing.
    stream = keys.frames(MODEL)
    claimed = await redis.xautoclaim(stream, WORKER_GROUP, "live", min_idle_time=0, start_id="0-0")
    [(entry, _fields)] = claimed[1]  # the client did not ack it (a bridge may not): it marked it
    entry_id = entry.decode()
    assert await redis.exists(keys.timed_out(MODEL, entry_id)) == 1
    late = DropRecord(session=session, seq=1, model=MODEL, reason=DropReason.DEADLINE, site=DropSite.WORKER)
    ack = Ack(stream, WORKER_GROUP, entry_id)
    assert not await publish_outcome(redis, keys, late, maxlen=100, ttl_s=60, ack=ack)
    assert (await redis.xpending(stream, WORKER_GROUP))["pending"] == 0
    assert await redis.exists(keys.timed_out(MODEL, entry_id)) == 0
    assert await drop_counts(redis, keys, MODEL) == {"timeout": 1}
    assert [o.seq async for o in _published(redis, keys, session)] == [0]


async def test_a_cancelled_wait_ends_its_frame_as_a_counted_timeout_at_once(
    redis: Redis, keys: Keys, responder: None
) -> None:
    async with FrameClient(redis, keys=keys) as client:
        await client.detect(b"jpeg", model=MODEL, width=1, height=1, timeout_s=30)  # seq 0
        seq, future = await client.submit(b"jpeg", model=MODEL, width=1, height=1)  # seq 1: left pending
        waiter = asyncio.create_task(client.wait(seq, future, model=MODEL, timeout_s=30))
        await asyncio.sleep(0.3)
        await cancel_and_wait(waiter)
        assert client.in_flight == 0
        for _ in range(50):
            if (await drop_counts(redis, keys, MODEL)).get("timeout") == 1:
                break
            await asyncio.sleep(0.05)
    assert await drop_counts(redis, keys, MODEL) == {"timeout": 1}
    # Still pending at the worker that holds it, marked: that worker's end will publish nothing.
    [row] = await redis.xpending_range(keys.frames(MODEL), WORKER_GROUP, min="-", max="+", count=10)
    assert await redis.exists(keys.timed_out(MODEL, cast(bytes, row["message_id"]).decode())) == 1


async def test_a_frame_no_worker_read_is_counted_and_taken_off_the_stream(redis: Redis, keys: Keys) -> None:
    stream = keys.frames(MODEL)
    await redis.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
    async with FrameClient(redis, keys=keys) as client:
        outcome = await client.detect(b"jpeg", model=MODEL, width=1, height=1, timeout_s=0.3)
        assert isinstance(outcome, DropRecord) and outcome.reason is DropReason.TIMEOUT
    assert await redis.xlen(stream) == 0  # no worker will read it and drop it a second time
    assert await drop_counts(redis, keys, MODEL) == {"timeout": 1}


async def test_a_frame_a_worker_ended_is_not_counted_again_by_the_client(redis: Redis, keys: Keys) -> None:
    stream = keys.frames(MODEL)
    await redis.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
    async with FrameClient(redis, keys=keys) as client:
        seq, future = await client.submit(b"jpeg", model=MODEL, width=1, height=1)
        reply = cast(StreamReply, await redis.xreadgroup(WORKER_GROUP, "w", {stream: ">"}, count=1))
        assert reply
        await redis.xack(stream, WORKER_GROUP, reply[0][1][0][0])  # ended at a worker, outcome not seen
        outcome = await client.wait(seq, future, model=MODEL, timeout_s=0.3)
        assert isinstance(outcome, DropRecord) and "a worker ended it" in outcome.detail
    assert await drop_counts(redis, keys, MODEL) == {}


async def test_close_resolves_waiting_frames_with_a_drop(redis: Redis, keys: Keys) -> None:
    client = FrameClient(redis, keys=keys)
    seq, future = await client.submit(b"jpeg", model=MODEL, width=1, height=1)
    await client.close()
    outcome = future.result()
    assert isinstance(outcome, DropRecord) and outcome.reason is DropReason.TIMEOUT and outcome.seq == seq
    assert client.in_flight == 0


async def test_a_seq_in_flight_cannot_be_submitted_twice(redis: Redis, keys: Keys) -> None:
    async with FrameClient(redis, keys=keys) as client:
        await client.submit(b"a", model=MODEL, width=1, height=1, seq=5)
        with pytest.raises(ValueError, match="already in flight"):
            await client.submit(b"b", model=MODEL, width=1, height=1, seq=5)


async def test_frames_carry_the_default_deadline_and_the_stream_is_bounded(redis: Redis, keys: Keys) -> None:
    settings = StreamSettings(frame_stream_maxlen=20, frame_deadline_ms=750)
    async with FrameClient(redis, keys=keys, settings=settings) as client:
        for _ in range(300):
            await client.submit(b"x", model=MODEL, width=1, height=1, received_ms=1000.0)
        entries = cast(list[tuple[bytes, Fields]], await redis.xrange(keys.frames(MODEL), count=1))
        frame = FrameMessage.from_fields(entries[0][1])
        assert frame.deadline_ms == 1750.0 and frame.session == client.session
        assert await redis.xlen(keys.frames(MODEL)) < 150  # trimmed (MAXLEN ~), not 300


async def test_each_client_sees_only_its_own_session(redis: Redis, keys: Keys, responder: None) -> None:
    async with FrameClient(redis, keys=keys) as first, FrameClient(redis, keys=keys) as second:
        a = await first.detect(b"1", model=MODEL, width=1, height=1, timeout_s=30)
        b = await second.detect(b"2", model=MODEL, width=1, height=1, timeout_s=30)
        assert (a.session, b.session) == (first.session, second.session)
        assert first.session != second.session


async def test_drop_publishes_a_counted_record(redis: Redis, keys: Keys) -> None:
    async with FrameClient(redis, keys=keys) as client:
        await client.drop(
            9, model=MODEL, reason=DropReason.IN_FLIGHT_LIMIT, site=DropSite.BRIDGE, detail="full"
        )
        ((_id, fields),) = cast(list[tuple[bytes, Fields]], await redis.xrange(keys.results(client.session)))
        assert b"in_flight_limit" in fields[b"body"]
        assert await drop_counts(redis, keys, MODEL) == {"in_flight_limit": 1}


async def test_has_worker_follows_heartbeats(redis: Redis, keys: Keys) -> None:
    async with FrameClient(redis, keys=keys) as client:
        assert not await client.has_worker(MODEL)
        await beat(redis, keys.worker("w1"), WorkerInfo(id="w1", model=MODEL), ttl_s=30)
        assert await client.has_worker(MODEL)
        assert not await client.has_worker("other")


async def test_iter_outcomes_starts_now_on_a_missing_stream_and_skips_garbage(
    redis: Redis, keys: Keys
) -> None:
    seen: list[int] = []

    async def follow() -> None:
        async for outcome in iter_outcomes(redis, keys, "s9", block_ms=200):
            seen.append(outcome.seq)

    task = asyncio.create_task(follow())
    try:
        await asyncio.sleep(0.3)  # the follower resolved "$" on a stream that does not exist yet
        await redis.xadd(keys.results("s9"), {"kind": "result", "body": "{broken"})
        for seq in (1, 2):
            record = DropRecord(session="s9", seq=seq, reason=DropReason.DEADLINE, site=DropSite.WORKER)
            await publish_outcome(redis, keys, record, maxlen=10, ttl_s=10)
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.1)
        assert seen == [1, 2]
    finally:
        await cancel_and_wait(task)


async def test_iter_outcomes_rides_out_a_redis_restart(private_redis: RedisServer, keys: Keys) -> None:
    redis = Redis.from_url(private_redis.url)
    seen: list[int] = []

    async def follow() -> None:
        async for outcome in iter_outcomes(redis, keys, "s1", block_ms=200):
            seen.append(outcome.seq)

    task = asyncio.create_task(follow())
    try:
        await asyncio.sleep(0.3)
        private_redis.restart()
        record = DropRecord(session="s1", seq=42, reason=DropReason.DEADLINE, site=DropSite.WORKER)
        for _ in range(150):
            if seen:
                break
            with contextlib.suppress(Exception):
                await publish_outcome(redis, keys, record, maxlen=10, ttl_s=10)
            await asyncio.sleep(0.2)
        assert 42 in seen
    finally:
        await cancel_and_wait(task)
        await redis.aclose()


async def test_a_crashed_result_reader_is_logged_and_reads_again(
    redis: Redis,
    keys: Keys,
    responder: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real = client_module.iter_outcomes
    calls = 0

    def crashing_once(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("reader bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(client_module, "iter_outcomes", crashing_once)
    monkeypatch.setattr(client_module, "READER_RESTART_S", 0.05)
    caplog.set_level(logging.ERROR, logger="wire.client")
    async with FrameClient(redis, keys=keys) as client:
        await asyncio.sleep(0.2)  # the reader has crashed and started again
        outcome = await client.detect(b"img", model=MODEL, width=4, height=4, timeout_s=10)
    assert isinstance(outcome, ResultMessage) and calls >= 2
    crash = next(r for r in caplog.records if "reading its results failed" in r.getMessage())
    assert crash.exc_info is not None
