"""The media bridge driven directly through Redis (no signaling): offers, limits, cleanup, drops, metrics.

The bridge is the real MediaBridge in this event loop with a real redis-server; the sender is a real
aiortc peer. No worker runs, so frames pile up exactly as they would behind a stalled pipeline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from mediabridge import bridge as bridge_module
from mediabridge import ice
from mediabridge.bridge import MediaBridge
from tests.signaling.ws_harness import StillTrack, running_bridge
from tests.support.processes import wait_until
from tests.support.redis_server import RedisServer, free_port
from wire.bridge_rpc import (
    BridgeTimeoutError,
    OfferRequest,
    SessionRecord,
    call_bridge,
    delete_session,
    save_session,
)
from wire.keys import Keys
from wire.liveness import live_bridges
from wire.messages import Fields, decode_outcome, now_ms
from wire.outcomes import drop_counts

MODEL = "yolox_nano"


@pytest.fixture
async def bridge(redis_server: RedisServer, redis: Redis) -> AsyncIterator[MediaBridge]:
    async with running_bridge(redis_server.url, "bridge-t", max_sessions=1, in_flight=2) as running:
        yield running


async def offer_sdp(pc: RTCPeerConnection) -> str:
    pc.addTrack(StillTrack())
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


async def open_session(redis: Redis, keys: Keys, session: str, pc: RTCPeerConnection) -> None:
    await save_session(
        redis, keys, SessionRecord(session=session, bridge="bridge-t", model=MODEL, sample_fps=10), ttl_s=60
    )
    request = OfferRequest(
        session=session, sdp=await offer_sdp(pc), model=MODEL, sample_fps=10, deadline_ms=now_ms() + 20_000
    )
    reply = await call_bridge(redis, keys, "bridge-t", request, timeout_s=20)
    assert reply.ok, reply.message
    await pc.setRemoteDescription(RTCSessionDescription(sdp=reply.sdp, type="answer"))


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_stalled_pipeline_gives_counted_bridge_drops_not_a_queue(
    bridge: MediaBridge, redis: Redis, keys: Keys
) -> None:
    frames_in = sample("lookout_frames_in_total", {"site": "bridge", "model": MODEL})
    ice.restrict_host_addresses(["127.0.0.1"])
    pc = RTCPeerConnection(ice.rtc_configuration(""))
    try:
        await open_session(redis, keys, "s-stall", pc)
        assert sample("lookout_live_sessions", {"site": "bridge"}) == 1
        info = (await live_bridges(redis, keys))[0]
        assert info.id == "bridge-t" and info.sessions == 1

        async def some_drops() -> bool:
            return await redis.xlen(keys.results("s-stall")) >= 3

        await wait_until(some_drops, timeout=60, what="bridge drop records")
        # Nobody consumes: at most `in_flight` frames are out at once, the rest are dropped, none queue.
        sampler = bridge.sessions["s-stall"].sampler
        assert sampler.in_flight <= 2
        published_before = sampler.published
        on_stream = await redis.xlen(keys.frames(MODEL))
        assert published_before <= on_stream <= sampler.published + 1  # (a publish may be mid-flight)
        assert sampler.accepted - sampler.published - sampler.dropped in (0, 1)  # one may wait in the mailbox
        entries = cast(list[tuple[bytes, Fields]], await redis.xrange(keys.results("s-stall")))
        drops = [decode_outcome(fields) for _, fields in entries]
        assert all(d.kind == "drop" and d.site.value == "bridge" for d in drops)
        assert {d.reason.value for d in drops} <= {"in_flight_limit", "superseded"}  # type: ignore[union-attr]
        assert sum((await drop_counts(redis, keys, MODEL)).values()) >= 3
        assert sample("lookout_frames_in_total", {"site": "bridge", "model": MODEL}) >= frames_in + 5
        assert (
            sample(
                "lookout_frames_dropped_total",
                {"model": MODEL, "site": "bridge", "reason": "in_flight_limit"},
            )
            >= 1
        )
    finally:
        await pc.close()


async def test_a_full_bridge_refuses_and_an_expired_session_is_closed(
    bridge: MediaBridge, redis: Redis, keys: Keys
) -> None:
    ice.restrict_host_addresses(["127.0.0.1"])
    first = RTCPeerConnection(ice.rtc_configuration(""))
    second = RTCPeerConnection(ice.rtc_configuration(""))
    try:
        await open_session(redis, keys, "s-one", first)
        full = OfferRequest(
            session="s-two",
            sdp=await offer_sdp(second),
            model=MODEL,
            sample_fps=10,
            deadline_ms=now_ms() + 9e3,
        )
        reply = await call_bridge(redis, keys, "bridge-t", full, timeout_s=20)
        assert not reply.ok and reply.code == "no_bridge" and "full" in reply.message
        # The session record expiring (its signaling replica died) closes the peer connection.
        await delete_session(redis, keys, "s-one")

        async def closed() -> bool:
            return not bridge.sessions

        await wait_until(closed, timeout=30, what="the orphaned session closed")
    finally:
        await first.close()
        await second.close()


async def test_an_offer_that_crashes_the_bridge_is_answered_internal(
    bridge: MediaBridge, redis: Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**kwargs: object) -> None:
        raise RuntimeError("constructor bug")

    monkeypatch.setattr(bridge_module, "PeerSession", broken)
    offer = OfferRequest(session="s-bug", sdp="v=0", model=MODEL, sample_fps=10, deadline_ms=now_ms() + 9e3)
    reply = await call_bridge(redis, keys, "bridge-t", offer, timeout_s=20)
    assert not reply.ok and reply.code == "internal" and "RuntimeError" in reply.message
    assert not bridge.sessions


async def test_a_stale_offer_is_ignored(bridge: MediaBridge, redis: Redis, keys: Keys) -> None:
    stale = OfferRequest(session="s-old", sdp="v=0", model=MODEL, sample_fps=10, deadline_ms=now_ms() - 1)
    with pytest.raises(BridgeTimeoutError):
        await call_bridge(redis, keys, "bridge-t", stale, timeout_s=1.5)
    assert not bridge.sessions


async def test_port_range_and_advertised_address_shape_the_answer(
    redis_server: RedisServer, redis: Redis, keys: Keys
) -> None:
    low = free_port()
    async with running_bridge(
        redis_server.url,
        "bridge-nat",
        udp_port_min=low,
        udp_port_max=low + 20,
        advertised_address="198.51.100.7",
    ):
        ice.restrict_host_addresses(["127.0.0.1"])
        pc = RTCPeerConnection(ice.rtc_configuration(""))
        try:
            await save_session(
                redis,
                keys,
                SessionRecord(session="s-nat", bridge="bridge-nat", model=MODEL, sample_fps=5),
                ttl_s=60,
            )
            request = OfferRequest(
                session="s-nat",
                sdp=await offer_sdp(pc),
                model=MODEL,
                sample_fps=5,
                deadline_ms=now_ms() + 20_000,
            )
            reply = await call_bridge(redis, keys, "bridge-nat", request, timeout_s=20)
        finally:
            await pc.close()
    assert reply.ok, reply.message
    candidates = [line.split() for line in reply.sdp.splitlines() if line.startswith("a=candidate:")]
    assert candidates
    for parts in candidates:
        assert parts[4] == "198.51.100.7" and low <= int(parts[5]) <= low + 20
