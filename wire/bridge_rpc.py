"""Requests and replies between signaling and media bridges through Redis, and the live-session record.

Request/reply: signaling RPUSHes a JSON request onto ``Keys.bridge_requests(bridge)``; the bridge BLPOPs
it, acts, and RPUSHes one JSON reply onto ``Keys.reply(request_id)`` with an EXPIRE so that a reply
nobody waits for anymore disappears; signaling BLPOPs that key with a timeout. Requests carry a
deadline: a bridge that pops one too late ignores it (the caller has already given up).

Session record: signaling keeps ``Keys.session(session)`` (a hash: bridge, model, sample_fps, created_ms)
alive with a TTL while the WebSocket is open. A bridge closes peer connections whose record expired, so a
crashed or restarted signaling replica leaves nothing running. Bridges announce what happens to a session
(connected, closed, failed) on the pub/sub channel ``Keys.session_events(session)``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from redis.asyncio import Redis

from wire import PROTOCOL_VERSION
from wire.keys import Keys
from wire.messages import now_ms


class _Request(BaseModel):
    v: int = Field(default=PROTOCOL_VERSION, description="Protocol version.")
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, description="Where the reply goes.")
    session: str = Field(min_length=1, max_length=128, description="Signaling session id.")
    deadline_ms: float = Field(description="Wall clock after which the caller no longer waits.")


class OfferRequest(_Request):
    """Open a peer connection for a session from the client's complete SDP offer."""

    kind: Literal["offer"] = "offer"
    sdp: str = Field(description="The client's SDP offer.")
    model: str = Field(description="Model the session's frames go to.")
    sample_fps: float = Field(gt=0, description="Frames per second to sample for inference.")


class HangupRequest(_Request):
    """Close a session's peer connection (the client said bye or its WebSocket closed)."""

    kind: Literal["hangup"] = "hangup"


BridgeRequest = Annotated[OfferRequest | HangupRequest, Field(discriminator="kind")]


class BridgeReply(BaseModel):
    """The single reply to a request: ``ok`` with an SDP answer (for offers), or an error code."""

    v: int = Field(default=PROTOCOL_VERSION, description="Protocol version.")
    request_id: str = Field(description="The request this answers.")
    ok: bool = Field(description="Whether the bridge did what was asked.")
    sdp: str = Field(default="", description="SDP answer, for an offer.")
    code: str = Field(
        default="", description="On failure: an ErrorCode value of wire.signaling (bad_sdp, ...)."
    )
    message: str = Field(default="", description="On failure: what went wrong, for humans.")


class SessionEvent(BaseModel):
    """Published by the bridge on ``Keys.session_events(session)``."""

    v: int = Field(default=PROTOCOL_VERSION, description="Protocol version.")
    session: str = Field(description="Session id.")
    bridge: str = Field(description="Bridge id.")
    event: Literal["connected", "closed", "failed"] = Field(
        description="What happened to the peer connection."
    )
    detail: str = Field(default="", description="Why, for humans.")
    at_ms: float = Field(default_factory=now_ms, description="When.")


_request_adapter: TypeAdapter[BridgeRequest] = TypeAdapter(BridgeRequest)

REQUEST_LIST_TTL_S = 60
"""A bridge's request list expires when nobody pops it for this long (its bridge died)."""


class BridgeTimeoutError(Exception):
    """No reply arrived within the timeout."""


async def call_bridge(
    redis: Redis, keys: Keys, bridge_id: str, request: OfferRequest | HangupRequest, *, timeout_s: float
) -> BridgeReply:
    """Send ``request`` to a bridge and wait for its reply; raises BridgeTimeoutError."""
    await send_request(redis, keys, bridge_id, request)
    popped = await redis.blpop([keys.reply(request.request_id)], timeout=max(timeout_s, 0.01))
    if popped is None:
        raise BridgeTimeoutError(f"bridge {bridge_id} did not answer within {timeout_s:.1f} s")
    return BridgeReply.model_validate_json(popped[1])


async def send_request(
    redis: Redis, keys: Keys, bridge_id: str, request: OfferRequest | HangupRequest
) -> None:
    """Send a request without waiting for its reply (hang-ups)."""
    queue = keys.bridge_requests(bridge_id)
    pipe = redis.pipeline(transaction=True)
    pipe.rpush(queue, request.model_dump_json())
    pipe.expire(queue, REQUEST_LIST_TTL_S)
    await pipe.execute()


async def next_request(
    redis: Redis, keys: Keys, bridge_id: str, *, timeout_s: float
) -> OfferRequest | HangupRequest | None:
    """Pop the bridge's next request (None after ``timeout_s``); malformed requests are skipped."""
    popped = await redis.blpop([keys.bridge_requests(bridge_id)], timeout=timeout_s)
    if popped is None:
        return None
    try:
        return _request_adapter.validate_json(popped[1])
    except ValidationError:
        return None


async def send_reply(redis: Redis, keys: Keys, reply: BridgeReply, *, ttl_s: float) -> None:
    """RPUSH the reply and let it expire if nobody waits for it."""
    key = keys.reply(reply.request_id)
    pipe = redis.pipeline(transaction=True)
    pipe.rpush(key, reply.model_dump_json())
    pipe.expire(key, max(1, int(ttl_s)))
    await pipe.execute()


class SessionRecord(BaseModel):
    """The Redis hash ``Keys.session(session)``: which bridge and model a live session uses."""

    session: str = Field(description="Session id.")
    bridge: str = Field(description="Bridge id.")
    model: str = Field(description="Model name.")
    sample_fps: float = Field(description="Sample rate.")
    created_ms: float = Field(default_factory=now_ms, description="When the session was created.")


async def save_session(redis: Redis, keys: Keys, record: SessionRecord, *, ttl_s: float) -> None:
    """Create or replace the session record with a TTL."""
    key = keys.session(record.session)
    mapping = {k: str(v) for k, v in record.model_dump().items()}
    pipe = redis.pipeline(transaction=True)
    pipe.delete(key)
    pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
    pipe.pexpire(key, max(1, int(ttl_s * 1000)))
    await pipe.execute()


async def refresh_session(redis: Redis, keys: Keys, session: str, *, ttl_s: float) -> bool:
    """Extend the record's TTL; False when it is already gone."""
    return bool(await redis.pexpire(keys.session(session), max(1, int(ttl_s * 1000))))


async def load_session(redis: Redis, keys: Keys, session: str) -> SessionRecord | None:
    """The record, or None when it expired or never existed."""
    raw = await redis.hgetall(keys.session(session))
    if not raw:
        return None
    try:
        return SessionRecord.model_validate({_text(k): _text(v) for k, v in raw.items()})
    except (ValidationError, UnicodeDecodeError):
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def session_alive(redis: Redis, keys: Keys, session: str) -> bool:
    return bool(await redis.exists(keys.session(session)))


async def delete_session(redis: Redis, keys: Keys, session: str) -> None:
    await redis.delete(keys.session(session))


async def publish_event(redis: Redis, keys: Keys, event: SessionEvent) -> None:
    await redis.publish(keys.session_events(event.session), event.model_dump_json())
