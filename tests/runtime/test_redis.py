"""Riding out Redis outages: one log line when Redis goes away, one when it is back, retries that back off,
and heartbeats that keep their schedule through an outage."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runtime.redis import REDIS_DOWN_ERRORS, Outage, heartbeat_loop
from wire import redis_down

LOG = logging.getLogger("test.outage")


def test_the_tuple_is_wires_and_means_unreachable_not_refused() -> None:
    assert REDIS_DOWN_ERRORS is redis_down.REDIS_DOWN_ERRORS  # one definition, re-exported
    for down in (RedisConnectionError(), RedisTimeoutError(), BusyLoadingError(), ConnectionResetError()):
        assert isinstance(down, REDIS_DOWN_ERRORS)
    assert not isinstance(ResponseError("WRONGTYPE"), REDIS_DOWN_ERRORS)  # a bug, not an outage


async def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage("reading frames", LOG, max_delay_s=0.01)
    with caplog.at_level(logging.INFO, logger="test.outage"):
        outage.ok()  # nothing was wrong: nothing to say
        for _ in range(3):
            await outage.failed(RedisConnectionError("connection refused"))
        assert outage.down
        outage.ok()
        outage.ok()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "redis unavailable while reading frames (connection refused)" in messages[0]
    assert messages[1].startswith("reconnected to redis (reading frames) after")
    assert not outage.down


async def test_note_logs_without_waiting(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage("heartbeats", LOG)
    with caplog.at_level(logging.WARNING, logger="test.outage"):
        outage.note(OSError("down"))
        outage.note(OSError("down"))
    assert len(caplog.records) == 1 and outage.down


async def test_failed_backs_off_up_to_the_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def no_sleep(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    outage = Outage("claiming", LOG, max_delay_s=0.5)
    for _ in range(5):
        await outage.failed(OSError("down"))
    outage.ok()
    await outage.failed(OSError("down again"))
    assert waits == [0.1, 0.2, 0.4, 0.5, 0.5, 0.1]  # doubling, capped, and reset by a success


async def test_heartbeats_go_on_through_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    results: list[BaseException | None] = [None, RedisConnectionError("refused"), OSError("reset"), None]
    beats = 0
    finished = asyncio.Event()

    async def beat() -> None:
        nonlocal beats
        beats += 1
        if beats == len(results):
            finished.set()
        if beats <= len(results) and (error := results[beats - 1]) is not None:
            raise error

    outage = Outage("sending heartbeats", LOG)
    with caplog.at_level(logging.INFO, logger="test.outage"):
        task = asyncio.create_task(heartbeat_loop(beat, 0.001, outage))
        await asyncio.wait_for(finished.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not outage.down
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "redis unavailable while sending heartbeats (refused)" in messages[0]
    assert messages[1].startswith("reconnected to redis (sending heartbeats)")


async def test_a_beat_that_is_a_bug_ends_the_loop() -> None:
    async def beat() -> None:
        raise ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")

    with pytest.raises(ResponseError):
        await asyncio.wait_for(heartbeat_loop(beat, 0.001, Outage("beating", LOG)), 5)


@pytest.mark.parametrize("beat_first", [True, False])
async def test_beat_first_decides_whether_the_first_beat_waits(beat_first: bool) -> None:
    beaten = asyncio.Event()

    async def beat() -> None:
        beaten.set()

    task = asyncio.create_task(heartbeat_loop(beat, 30.0, Outage("beating", LOG), beat_first=beat_first))
    try:
        for _ in range(5):  # a beat that comes at once comes within these few turns of the loop
            await asyncio.sleep(0)
        assert beaten.is_set() is beat_first
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
