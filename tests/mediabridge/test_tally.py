"""The drop tally of the bridge: drops Redis could not take are counted at once and flushed later."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from mediabridge.bridge import redis_options
from mediabridge.tally import DropTally
from runtime.redis import REDIS_DOWN_ERRORS
from tests.support.redis_server import free_port
from wire.keys import Keys
from wire.messages import DropReason
from wire.outcomes import drop_counts


def dropped_metric(model: str, reason: str) -> float:
    labels = {"model": model, "site": "bridge", "reason": reason}
    return REGISTRY.get_sample_value("lookout_frames_dropped_total", labels) or 0.0


async def test_held_drops_are_in_the_metric_at_once_and_in_the_tally_after_a_flush(
    redis: Redis, keys: Keys
) -> None:
    tally = DropTally(redis, keys)
    before = dropped_metric("m-tally", "redis_unavailable")
    held_before = REGISTRY.get_sample_value("lookout_drops_held_total", {"site": "bridge"}) or 0.0
    for _ in range(3):
        tally.count("m-tally", DropReason.REDIS_UNAVAILABLE)
    tally.count("m-tally", DropReason.SUPERSEDED)
    tally.count("", DropReason.SHUTDOWN)  # a drop of no known model goes where the workers put those
    assert dropped_metric("m-tally", "redis_unavailable") == before + 3
    assert REGISTRY.get_sample_value("lookout_drops_held_total", {"site": "bridge"}) == held_before + 5
    assert tally.pending == 5
    assert await tally.flush() == 5
    assert await drop_counts(redis, keys, "m-tally") == {"redis_unavailable": 3, "superseded": 1}
    assert await drop_counts(redis, keys, "unknown") == {"shutdown": 1}
    assert tally.pending == 0 and tally.flushed == 5
    assert await tally.flush() == 0  # nothing twice
    assert (await drop_counts(redis, keys, "m-tally"))["redis_unavailable"] == 3


async def test_a_flush_while_redis_is_down_keeps_the_drops_held(keys: Keys) -> None:
    nowhere = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", **redis_options())
    tally = DropTally(nowhere, keys)
    tally.count("m", DropReason.REDIS_UNAVAILABLE)
    with pytest.raises(REDIS_DOWN_ERRORS):
        await tally.flush()
    assert tally.pending == 1
    await tally.close()  # logs what it could not add; raises nothing
    assert tally.pending == 1
    await nowhere.aclose()
