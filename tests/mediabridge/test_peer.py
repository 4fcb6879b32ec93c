"""A peer session whose own task crashes is closed with the reason, announced as failed, never left open
with nothing running (real aiortc offer, real Redis, the sampler replaced by one that crashes)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiortc import RTCPeerConnection
from redis.asyncio import Redis

from mediabridge import ice
from mediabridge.peer import PeerSession
from mediabridge.tally import DropTally
from tests.signaling.ws_harness import StillTrack
from tests.support.redis_server import RedisServer
from wire.config import BridgeSettings
from wire.keys import Keys


async def test_a_crashed_sampler_closes_its_session_as_failed_with_the_reason(
    redis_server: RedisServer, redis: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    settings = BridgeSettings(redis_url=redis_server.url, ice_host_addresses="127.0.0.1")
    ice.restrict_host_addresses(["127.0.0.1"])
    closed: asyncio.Future[tuple[str, bool, bool]] = asyncio.get_running_loop().create_future()

    async def on_closed(peer: PeerSession, reason: str, failed: bool, announce: bool) -> None:
        closed.set_result((reason, failed, announce))

    peer = PeerSession(
        session="s-crash",
        model="m",
        sample_fps=10,
        redis=redis,
        keys=keys,
        settings=settings,
        held_drops=DropTally(redis, keys),
        on_closed=on_closed,
    )

    async def crashing_run() -> None:
        raise RuntimeError("sampler bug")

    peer.sampler.run = crashing_run  # type: ignore[method-assign]
    sender = RTCPeerConnection(ice.rtc_configuration(""))
    caplog.set_level(logging.ERROR, logger="mediabridge.supervise")
    try:
        sender.addTrack(StillTrack())
        await sender.setLocalDescription(await sender.createOffer())
        await peer.answer(sender.localDescription.sdp)
        reason, failed, announce = await asyncio.wait_for(closed, 20)
    finally:
        await sender.close()
        await peer.close("test over")
    assert reason == "internal error: RuntimeError: sampler bug" and failed and announce
    crash = next(r for r in caplog.records if "sampler task crashed" in r.getMessage())
    assert crash.exc_info is not None  # with its traceback
