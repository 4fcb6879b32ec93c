"""Request/reply between signaling and bridges through a real Redis, and the session record."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from wire.bridge_rpc import (
    BridgeReply,
    BridgeTimeoutError,
    HangupRequest,
    OfferRequest,
    SessionRecord,
    call_bridge,
    delete_session,
    load_session,
    next_request,
    refresh_session,
    save_session,
    send_reply,
    send_request,
    session_alive,
)
from wire.keys import Keys
from wire.messages import now_ms


async def test_offer_request_gets_its_reply(redis: Redis, keys: Keys) -> None:
    async def bridge() -> None:
        request = await next_request(redis, keys, "b1", timeout_s=10)
        assert isinstance(request, OfferRequest) and request.sdp == "v=0"
        await send_reply(
            redis, keys, BridgeReply(request_id=request.request_id, ok=True, sdp="answer"), ttl_s=5
        )

    task = asyncio.create_task(bridge())
    offer = OfferRequest(session="s1", sdp="v=0", model="m", sample_fps=10, deadline_ms=now_ms() + 10_000)
    reply = await call_bridge(redis, keys, "b1", offer, timeout_s=10)
    await task
    assert reply.ok and reply.sdp == "answer" and reply.request_id == offer.request_id
    assert await redis.ttl(keys.reply(offer.request_id)) == -2  # consumed


async def test_no_reply_is_a_timeout_and_requests_expire(redis: Redis, keys: Keys) -> None:
    offer = OfferRequest(session="s1", sdp="v=0", model="m", sample_fps=10, deadline_ms=now_ms() + 100)
    with pytest.raises(BridgeTimeoutError):
        await call_bridge(redis, keys, "nobody", offer, timeout_s=0.2)
    assert 0 < await redis.ttl(keys.bridge_requests("nobody")) <= 60


async def test_hangup_and_malformed_requests(redis: Redis, keys: Keys) -> None:
    await redis.rpush(keys.bridge_requests("b1"), b"not json")
    await send_request(redis, keys, "b1", HangupRequest(session="s1", deadline_ms=now_ms() + 1000))
    assert await next_request(redis, keys, "b1", timeout_s=1) is None  # skipped, not fatal
    hangup = await next_request(redis, keys, "b1", timeout_s=1)
    assert isinstance(hangup, HangupRequest) and hangup.session == "s1"


async def test_session_record_lifecycle(redis: Redis, keys: Keys) -> None:
    record = SessionRecord(session="s1", bridge="b1", model="m", sample_fps=10)
    await save_session(redis, keys, record, ttl_s=30)
    assert await load_session(redis, keys, "s1") == record
    assert await session_alive(redis, keys, "s1")
    assert await refresh_session(redis, keys, "s1", ttl_s=30)
    await delete_session(redis, keys, "s1")
    assert not await session_alive(redis, keys, "s1")
    assert not await refresh_session(redis, keys, "s1", ttl_s=30)
    assert await load_session(redis, keys, "s1") is None
