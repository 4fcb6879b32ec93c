"""publish_outcome and count_drop on a real redis-server: counted once, bounded, exactly once with an ack."""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis

from wire.keys import WORKER_GROUP, Keys
from wire.messages import DropReason, DropRecord, DropSite, Fields, ResultMessage, decode_outcome
from wire.metrics import FRAMES_DROPPED
from wire.outcomes import Ack, claim_for_client, count_drop, drop_counts, publish_outcome, publish_outcomes


def _result(seq: int, session: str = "s1") -> ResultMessage:
    return ResultMessage(
        session=session, seq=seq, received_ms=0, model="m", model_version="v", worker="w", width=1, height=1
    )


def _drop(seq: int, reason: DropReason = DropReason.DEADLINE, session: str = "s1") -> DropRecord:
    return DropRecord(session=session, seq=seq, model="m", reason=reason, site=DropSite.WORKER)


def _metric(reason: DropReason, model: str = "m", site: str = "worker") -> float:
    return cast(float, FRAMES_DROPPED.labels(model=model, site=site, reason=reason.value)._value.get())


async def _outcomes(redis: Redis, keys: Keys, session: str = "s1") -> list[ResultMessage | DropRecord]:
    entries = cast(list[tuple[bytes, Fields]], await redis.xrange(keys.results(session)))
    return [decode_outcome(fields) for _id, fields in entries]


async def test_result_and_drop_land_on_the_session_stream_and_are_counted(redis: Redis, keys: Keys) -> None:
    before = _metric(DropReason.DEADLINE)
    assert await publish_outcome(redis, keys, _result(1), maxlen=100, ttl_s=60)
    assert await publish_outcome(redis, keys, _drop(2), maxlen=100, ttl_s=60)
    assert [o.seq for o in await _outcomes(redis, keys)] == [1, 2]
    assert await drop_counts(redis, keys, "m") == {"deadline": 1}
    assert int(cast(bytes, await redis.get(keys.inferred_count("m")))) == 1
    assert _metric(DropReason.DEADLINE) == before + 1


async def test_result_stream_is_bounded_and_expires(redis: Redis, keys: Keys) -> None:
    for seq in range(500):
        await publish_outcome(redis, keys, _result(seq), maxlen=50, ttl_s=30)
    assert await redis.xlen(keys.results("s1")) < 200  # MAXLEN ~ trims in whole nodes: near 50, never 500
    assert 0 < await redis.ttl(keys.results("s1")) <= 30


async def test_with_an_ack_a_frame_ends_exactly_once(redis: Redis, keys: Keys) -> None:
    stream = keys.frames("m")
    await redis.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
    entry_id = cast(bytes, await redis.xadd(stream, {"x": "1"})).decode()
    await redis.xreadgroup(WORKER_GROUP, "w1", {stream: ">"})
    ack = Ack(stream, WORKER_GROUP, entry_id)
    before = _metric(DropReason.DEADLINE)

    # Two workers both finished the frame (one had claimed it from the other): only the first ends it.
    assert await publish_outcome(redis, keys, _drop(1), maxlen=100, ttl_s=60, ack=ack)
    assert not await publish_outcome(redis, keys, _result(1), maxlen=100, ttl_s=60, ack=ack)

    assert [o.kind for o in await _outcomes(redis, keys)] == ["drop"]
    assert await drop_counts(redis, keys, "m") == {"deadline": 1}
    assert _metric(DropReason.DEADLINE) == before + 1
    assert (await redis.xpending(stream, WORKER_GROUP))["pending"] == 0


async def test_an_ack_of_a_lost_group_publishes_nothing(redis: Redis, keys: Keys) -> None:
    # After a Redis restart the group is gone: the worker must not publish for an entry nobody tracks.
    ack = Ack(keys.frames("m"), WORKER_GROUP, "1-0")
    assert not await publish_outcome(redis, keys, _result(1), maxlen=100, ttl_s=60, ack=ack)
    assert await redis.exists(keys.results("s1")) == 0


async def test_batch_publication_reports_each_frame(redis: Redis, keys: Keys) -> None:
    stream = keys.frames("m")
    await redis.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
    ids = [cast(bytes, await redis.xadd(stream, {"x": str(i)})).decode() for i in range(3)]
    await redis.xreadgroup(WORKER_GROUP, "w1", {stream: ">"})
    await redis.xack(stream, WORKER_GROUP, ids[1])  # ended elsewhere already
    items = [(_result(i), Ack(stream, WORKER_GROUP, entry_id)) for i, entry_id in enumerate(ids)]
    assert await publish_outcomes(redis, keys, items, maxlen=100, ttl_s=60) == [True, False, True]
    assert [o.seq for o in await _outcomes(redis, keys)] == [0, 2]
    assert await publish_outcomes(redis, keys, [], maxlen=100, ttl_s=60) == []


async def test_count_drop_without_a_session_counts_and_acks(redis: Redis, keys: Keys) -> None:
    stream = keys.frames("m")
    await redis.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
    entry_id = cast(bytes, await redis.xadd(stream, {"junk": "1"})).decode()
    await redis.xreadgroup(WORKER_GROUP, "w1", {stream: ">"})
    before = _metric(DropReason.MALFORMED)
    ack = Ack(stream, WORKER_GROUP, entry_id)
    assert await count_drop(
        redis, keys, model="m", reason=DropReason.MALFORMED, site=DropSite.WORKER, ack=ack
    )
    assert not await count_drop(
        redis, keys, model="m", reason=DropReason.MALFORMED, site=DropSite.WORKER, ack=ack
    )
    assert await drop_counts(redis, keys, "m") == {"malformed": 1}
    assert _metric(DropReason.MALFORMED) == before + 1
    assert not [key async for key in redis.scan_iter(match=keys.results("*"))]


async def test_a_drop_of_an_unknown_model_is_tallied_under_unknown(redis: Redis, keys: Keys) -> None:
    record = DropRecord(session="s1", seq=1, reason=DropReason.NO_WORKER, site=DropSite.BRIDGE)
    await publish_outcome(redis, keys, record, maxlen=10, ttl_s=10)
    assert await drop_counts(redis, keys, "unknown") == {"no_worker": 1}


async def test_a_client_timeout_marks_a_held_frame_and_its_workers_end_counts_nothing(
    redis: Redis, keys: Keys
) -> None:
    stream = keys.frames("m")
    await redis.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
    held, trimmed = [cast(bytes, await redis.xadd(stream, {"x": str(i)})).decode() for i in range(2)]
    await redis.xreadgroup(WORKER_GROUP, "w1", {stream: ">"})
    for entry_id in (held, trimmed):
        for counted in (True, False):  # the second claim finds the mark of the first
            claimed = await claim_for_client(
                redis, keys, model="m", entry_id=entry_id, reason=DropReason.TIMEOUT, site=DropSite.BRIDGE
            )
            assert claimed is counted
        assert await redis.exists(keys.timed_out("m", entry_id)) == 1
    assert (await redis.xpending(stream, WORKER_GROUP))["pending"] == 2  # not acked: clients may not
    # The worker's ends: a result, and a count of an entry whose fields were trimmed; neither counts.
    assert not await publish_outcome(
        redis, keys, _result(0), maxlen=100, ttl_s=60, ack=Ack(stream, WORKER_GROUP, held)
    )
    assert not await count_drop(
        redis,
        keys,
        model="m",
        reason=DropReason.TRIMMED,
        site=DropSite.WORKER,
        ack=Ack(stream, WORKER_GROUP, trimmed),
    )
    assert await drop_counts(redis, keys, "m") == {"timeout": 2}
    assert await redis.exists(keys.results("s1")) == 0
    assert (await redis.xpending(stream, WORKER_GROUP))["pending"] == 0
    assert await redis.exists(keys.timed_out("m", held), keys.timed_out("m", trimmed)) == 0
