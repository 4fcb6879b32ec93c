"""Record upkeep: every record refreshed in one pipeline, lost records restored as soon as Redis answers
after a real restart, ended sessions not resurrected, and a bridge lost only when missing twice."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from signaling.upkeep import SessionUpkeep
from tests.signaling.ws_harness import signaling_settings
from tests.support.processes import wait_until
from tests.support.redis_server import RedisServer
from tests.support.tasks import running_tasks
from wire.bridge_rpc import SessionRecord, save_session
from wire.keys import Keys
from wire.liveness import BridgeInfo, beat


def records(n: int, bridge: str = "b1") -> list[SessionRecord]:
    return [SessionRecord(session=f"s-{i}", bridge=bridge, model="m", sample_fps=5) for i in range(n)]


async def test_records_lost_in_a_restart_are_back_within_a_second(private_redis: RedisServer) -> None:
    redis = Redis.from_url(private_redis.url, socket_connect_timeout=1)
    keys = Keys()
    live = records(20)
    # A long interval: the restore must not wait for the next scheduled refresh.
    settings = signaling_settings(private_redis.url, session_refresh_interval_s=5.0, session_ttl_s=30.0)
    upkeep = SessionUpkeep(
        redis, keys, settings, records=lambda: live, is_live=lambda s: True, bridge_lost=lambda b: None
    )
    try:
        for record in live:
            await save_session(redis, keys, record, ttl_s=30)
        async with running_tasks(upkeep.run_records(), upkeep.run_bridges()):
            await asyncio.sleep(0.2)
            await asyncio.to_thread(private_redis.stop)
            # The refresh that notices the outage comes at most one interval later; with the
            # result reader's reconnect hint (refresh_soon) it is at once.
            await asyncio.sleep(0.5)
            upkeep.refresh_soon()
            await wait_until(lambda: _async(upkeep.outage.down), timeout=10, what="the outage noticed")
            await asyncio.to_thread(private_redis.start)
            back = time.monotonic()
            admin = Redis.from_url(private_redis.url)

            async def restored() -> bool:
                return int(await admin.exists(*(keys.session(r.session) for r in live))) == len(live)

            await wait_until(restored, timeout=10, interval=0.05, what="every record restored")
            assert time.monotonic() - back < 1.5
            assert 0 < await admin.pttl(keys.session("s-0")) <= 30_000
            await admin.aclose()
        assert upkeep.restored == len(live)
    finally:
        await redis.aclose()


async def test_refresh_extends_ttls_and_does_not_resurrect_ended_sessions(redis: Redis, keys: Keys) -> None:
    live = records(3)
    ended = {"s-2"}
    settings = signaling_settings("redis://127.0.0.1:1/0", session_ttl_s=10.0)
    upkeep = SessionUpkeep(
        redis,
        keys,
        settings,
        records=lambda: live,
        is_live=lambda s: s not in ended,
        bridge_lost=lambda b: None,
    )
    await save_session(redis, keys, live[0], ttl_s=1)
    await upkeep.refresh_records()
    assert await redis.pttl(keys.session("s-0")) > 5_000  # extended, not replaced
    assert await redis.exists(keys.session("s-1"))  # lost: restored
    assert not await redis.exists(keys.session("s-2"))  # lost but ended meanwhile: not restored
    assert upkeep.restored == 1


async def redis_up_for(redis: Redis, seconds: float) -> None:
    async def up() -> bool:
        return float((await redis.info("server"))["uptime_in_seconds"]) >= seconds

    await wait_until(up, timeout=seconds + 5, what=f"redis up for {seconds} s")


async def test_a_bridge_is_lost_only_when_missing_on_two_checks(redis: Redis, keys: Keys) -> None:
    lost: list[str] = []
    live = records(2, bridge="doomed") + records(1, bridge="fine")
    await redis_up_for(redis, 1)
    upkeep = SessionUpkeep(
        redis,
        keys,
        signaling_settings("redis://127.0.0.1:1/0", heartbeat_ttl_s=1.0),
        records=lambda: live,
        is_live=lambda s: True,
        bridge_lost=lost.append,
    )
    await beat(redis, keys.bridge("fine"), BridgeInfo(id="fine"), 60)
    await upkeep.check_bridges()
    assert lost == []  # missing once: maybe Redis just restarted and the bridge has not beaten yet
    await upkeep.check_bridges()
    assert lost == ["doomed"]
    await beat(redis, keys.bridge("doomed"), BridgeInfo(id="doomed"), 60)
    await upkeep.check_bridges()
    assert lost == ["doomed"]


async def _async(value: bool) -> bool:
    return value


async def test_no_bridge_is_judged_right_after_a_redis_restart(private_redis: RedisServer) -> None:
    redis = Redis.from_url(private_redis.url)
    keys = Keys()
    lost: list[str] = []
    settings = signaling_settings(private_redis.url, heartbeat_interval_s=0.2, heartbeat_ttl_s=2.0)
    upkeep = SessionUpkeep(
        redis, keys, settings, records=lambda: records(1), is_live=lambda s: True, bridge_lost=lost.append
    )
    try:
        await asyncio.to_thread(private_redis.restart)  # every heartbeat gone; the bridges beat soon
        for _ in range(3):
            await upkeep.check_bridges()
        assert lost == []  # Redis is younger than a heartbeat TTL: no bridge had the time to beat
        await redis_up_for(redis, 2)
        await upkeep.check_bridges()
        assert lost == ["b1"]  # still missing once Redis is older than the TTL: the bridge is gone
    finally:
        await redis.aclose()
