"""A live session through a real Redis stop and start, and the watchdog's race with a record re-saved.

The real MediaBridge (with the bridge's own Redis client options) in this event loop, a real aiortc
sender at 15 fps, a stand-in worker that answers every frame, and a redis-server of the test's own that
the test stops and starts. Signaling is played by the test: it saves the session record and, after the
restart, saves it again as signaling's refresh loop does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import cast

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from mediabridge import ice
from mediabridge.bridge import MediaBridge, redis_options
from mediabridge.sampler import CLOSE_GRACE_S
from runtime.redis import REDIS_DOWN_ERRORS
from tests.signaling.ws_harness import StillTrack
from tests.support.processes import wait_until
from tests.support.redis_server import RedisServer
from wire.bridge_rpc import OfferRequest, SessionRecord, call_bridge, delete_session, save_session
from wire.client import StreamReply
from wire.config import BridgeSettings
from wire.keys import Keys
from wire.messages import DropReason, FrameMessage, ResultMessage
from wire.outcomes import drop_counts, publish_outcome

MODEL = "yolox_nano"
BRIDGE = "bridge-outage"
SESSION_TTL_S = 1.5
"""Refresh interval 0.5 s, so the watchdog's grace is 1 s: the race is quick to run."""


@pytest.fixture
async def bridge(private_redis: RedisServer) -> AsyncIterator[MediaBridge]:
    settings = BridgeSettings(
        redis_url=private_redis.url,
        bridge_id=BRIDGE,
        ice_host_addresses="127.0.0.1",
        heartbeat_interval_s=0.2,
        session_ttl_s=SESSION_TTL_S,
        frame_deadline_ms=500,
    )
    ice.restrict_host_addresses(["127.0.0.1"])
    redis = Redis.from_url(private_redis.url, **redis_options())
    bridge = MediaBridge(settings, redis)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    try:
        yield bridge
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await redis.aclose()


async def stand_in_worker(url: str, keys: Keys) -> None:
    """Answers every frame of MODEL with an empty result, riding out the restart as a worker does."""
    redis = Redis.from_url(url, **redis_options())
    last_id = "$"
    try:
        while True:
            try:
                reply = cast(
                    StreamReply, await redis.xread({keys.frames(MODEL): last_id}, count=16, block=200)
                )
            except REDIS_DOWN_ERRORS:
                last_id = "0-0"  # the restarted Redis holds nothing older
                await asyncio.sleep(0.1)
                continue
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last_id = entry_id.decode()
                    frame = FrameMessage.from_fields(fields)
                    result = ResultMessage(
                        session=frame.session,
                        seq=frame.seq,
                        received_ms=frame.received_ms,
                        model=MODEL,
                        model_version="1",
                        worker="stand-in",
                        width=frame.width,
                        height=frame.height,
                    )
                    with contextlib.suppress(*REDIS_DOWN_ERRORS):
                        await publish_outcome(redis, keys, result, maxlen=64, ttl_s=60)
    finally:
        await redis.aclose()


async def open_session(redis: Redis, keys: Keys, session: str, pc: RTCPeerConnection) -> None:
    record = SessionRecord(session=session, bridge=BRIDGE, model=MODEL, sample_fps=10)
    await save_session(redis, keys, record, ttl_s=SESSION_TTL_S)
    pc.addTrack(StillTrack())
    await pc.setLocalDescription(await pc.createOffer())
    request = OfferRequest(
        session=session,
        sdp=pc.localDescription.sdp,
        model=MODEL,
        sample_fps=10,
        deadline_ms=time.time() * 1000 + 20_000,
    )
    reply = await call_bridge(redis, keys, BRIDGE, request, timeout_s=20)
    assert reply.ok, reply.message
    await pc.setRemoteDescription(RTCSessionDescription(sdp=reply.sdp, type="answer"))


async def keep_record(redis: Redis, keys: Keys, session: str) -> None:
    """Signaling's refresh loop: every refresh interval, extend the record or save it again."""
    record = SessionRecord(session=session, bridge=BRIDGE, model=MODEL, sample_fps=10)
    while True:
        await asyncio.sleep(SESSION_TTL_S / 3)
        with contextlib.suppress(*REDIS_DOWN_ERRORS):
            if not await redis.pexpire(keys.session(session), int(SESSION_TTL_S * 1000)):
                await save_session(redis, keys, record, ttl_s=SESSION_TTL_S)


def unavailable_metric() -> float:
    labels = {"model": MODEL, "site": "bridge", "reason": "redis_unavailable"}
    return REGISTRY.get_sample_value("lookout_frames_dropped_total", labels) or 0.0


async def test_a_live_session_samples_through_a_redis_restart_and_resumes_within_5_s(
    bridge: MediaBridge, private_redis: RedisServer, keys: Keys
) -> None:
    signaling = Redis.from_url(private_redis.url, **redis_options())
    worker = asyncio.create_task(stand_in_worker(private_redis.url, keys))
    pc = RTCPeerConnection(ice.rtc_configuration(""))
    refresher: asyncio.Task[None] | None = None
    metric_before = unavailable_metric()
    try:
        await open_session(signaling, keys, "s-live", pc)
        refresher = asyncio.create_task(keep_record(signaling, keys, "s-live"))
        sampler = bridge.sessions["s-live"].sampler

        async def results_flow() -> bool:
            return sampler.results >= 5

        await wait_until(results_flow, timeout=30, what="results before the outage")

        await asyncio.to_thread(private_redis.stop)
        down_at = time.monotonic()

        async def counting_while_down() -> bool:
            return sampler.drops_by_reason[DropReason.REDIS_UNAVAILABLE] >= 10

        await wait_until(counting_while_down, timeout=20, what="redis_unavailable drops while down")
        assert sampler.redis_down
        assert unavailable_metric() >= metric_before + 10  # in the metric at once
        sampled_while_down = sampler.accepted
        await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - down_at)))

        await asyncio.to_thread(private_redis.start)
        back_at = time.monotonic()
        published_at_return = sampler.published

        async def publishing_again() -> bool:
            return sampler.published > published_at_return

        await wait_until(publishing_again, timeout=10, interval=0.02, what="publishing resumed")
        resumed_s = time.monotonic() - back_at
        assert resumed_s < 5.0, f"publishing resumed {resumed_s:.1f} s after Redis returned"
        assert sampler.accepted > sampled_while_down  # sampling never stopped

        unavailable = sampler.drops_by_reason[DropReason.REDIS_UNAVAILABLE]

        async def flushed() -> bool:
            counts = await drop_counts(signaling, keys, MODEL)
            return counts.get("redis_unavailable", 0) == unavailable and bridge.tally.pending == 0

        await wait_until(flushed, timeout=10, what="the held drops added to the Redis tally")

        async def results_again() -> bool:
            return bool(await signaling.get(keys.inferred_count(MODEL)))

        await wait_until(results_again, timeout=10, what="results after the restart")
        # Past the watchdog's grace: the session was never closed for its record's short absence.
        await asyncio.sleep(2 * SESSION_TTL_S)
        assert "s-live" in bridge.sessions
        print(
            f"resumed {resumed_s:.2f} s after Redis returned; {unavailable} frames counted as "
            f"redis_unavailable; {sampler.accounting()}"
        )
    finally:
        if refresher is not None:
            refresher.cancel()
        worker.cancel()
        await asyncio.gather(worker, *([refresher] if refresher else []), return_exceptions=True)
        await pc.close()
        await signaling.aclose()


async def test_the_watchdog_spares_a_record_being_saved_again_and_closes_one_gone_for_good(
    bridge: MediaBridge, private_redis: RedisServer, keys: Keys
) -> None:
    signaling = Redis.from_url(private_redis.url)
    pc = RTCPeerConnection(ice.rtc_configuration(""))
    record = SessionRecord(session="s-race", bridge=BRIDGE, model=MODEL, sample_fps=10)
    grace_s = bridge.orphans.grace_s("s-race")
    assert grace_s == pytest.approx(2 * SESSION_TTL_S / 3)
    try:
        await open_session(signaling, keys, "s-race", pc)
        # Deleted (a Redis restart) and saved again within the refresh interval, several times over.
        for _ in range(4):
            await delete_session(signaling, keys, "s-race")
            await asyncio.sleep(SESSION_TTL_S / 3)  # the watchdog checks every 0.2 s meanwhile
            await save_session(signaling, keys, record, ttl_s=SESSION_TTL_S)
            await asyncio.sleep(0.3)
        assert "s-race" in bridge.sessions
        # Gone for good: closed once missing past the grace, not before.
        await delete_session(signaling, keys, "s-race")
        gone_at = time.monotonic()

        async def closed() -> bool:
            return "s-race" not in bridge.sessions

        await wait_until(closed, timeout=10, interval=0.02, what="the orphaned session closed")
        closed_after = time.monotonic() - gone_at
        # (closing waits up to CLOSE_GRACE_S for the frames in flight: no worker answers here)
        assert grace_s < closed_after < grace_s + CLOSE_GRACE_S + 1.5
    finally:
        await pc.close()
        await signaling.aclose()
