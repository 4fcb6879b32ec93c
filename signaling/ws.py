"""``/ws``: the signaling WebSocket. One socket, at most one live session at a time.

Every client message is validated (``wire.signaling.parse_client_message``); whatever is wrong with it
is answered with an ``error`` message and the socket stays open. Only a message over aiohttp's hard
frame cap (``HARD_CAP_FACTOR`` times the configured limit) closes the socket, with code 1009.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from collections import deque
from typing import TypeVar

from aiohttp import WSMessage, WSMsgType, web
from pydantic import BaseModel

from runtime.redis import REDIS_DOWN_ERRORS
from signaling.admission import Refused, Seat
from signaling.apikey import api_key_ok
from signaling.appkeys import KEYS, LIVE, REDIS, SETTINGS
from signaling.known_models import known_without_worker, unknown_model_message
from signaling.sessions import LiveSession, new_session_id
from wire.bridge_rpc import BridgeTimeoutError, OfferRequest, SessionRecord, call_bridge
from wire.liveness import BridgeInfo, live_bridges, live_workers
from wire.messages import now_ms
from wire.metrics import WS_ERRORS, WS_MESSAGES
from wire.signaling import (
    AnswerMessage,
    ByeMessage,
    ErrorCode,
    ErrorMessage,
    HelloMessage,
    JoinedMessage,
    JoinMessage,
    ListModelsMessage,
    ModelAvailability,
    ModelsMessage,
    OfferMessage,
    PingMessage,
    PongMessage,
    SignalingProtocolError,
    parse_client_message,
)

log = logging.getLogger(__name__)

HARD_CAP_FACTOR = 64
"""aiohttp refuses (close 1009) frames this many times over the limit; smaller oversize ones get an error."""

OfferT = TypeVar("OfferT", HelloMessage, ModelsMessage)
"""The two messages that tell a client what the server offers."""


class ClientError(Exception):
    """A request that fails with an error code for the client."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def pick_bridge(bridges: list[BridgeInfo]) -> BridgeInfo | None:
    """The least-loaded bridge with room (ties broken at random, so replicas spread their picks)."""
    with_room = [b for b in bridges if b.sessions < b.max_sessions]
    if not with_room:
        return None
    least = min(b.sessions for b in with_room)
    return random.choice([b for b in with_room if b.sessions == least])


class SignalingSocket:
    """The state machine of one WebSocket: idle -> joined -> answered -> idle (bye / error)."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        app = request.app
        self.ws = ws
        self.settings = app[SETTINGS]
        self.redis = app[REDIS]
        self.keys = app[KEYS]
        self.hub = app[LIVE]
        self.session: LiveSession | None = None
        self.peer = request.remote or "?"
        self._joins: deque[float] = deque()
        self._send_lock = asyncio.Lock()

    async def send(self, message: BaseModel) -> None:
        if self.ws.closed:
            return
        if isinstance(message, ErrorMessage):
            WS_ERRORS.labels(code=message.code.value).inc()
        async with self._send_lock:
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await self.ws.send_str(message.model_dump_json())

    async def error(self, code: ErrorCode, message: str) -> None:
        log.info("ws %s: error %s: %s", self.peer, code.value, message)
        await self.send(ErrorMessage(code=code, message=message))

    async def serve(self) -> None:
        await self.send(await self.models_message(HelloMessage))
        async for msg in self.ws:
            try:
                await self.on_message(msg)
            except Exception:  # the last line of defence: a bug answers `internal`, the socket stays
                log.exception("ws %s: handling a %s message failed", self.peer, msg.type.name)
                await self.error(ErrorCode.INTERNAL, "the server failed to handle this message")

    async def on_message(self, msg: WSMessage) -> None:
        if msg.type == WSMsgType.TEXT:
            await self.on_text(msg.data)
        elif msg.type == WSMsgType.BINARY:
            WS_MESSAGES.labels(type="binary").inc()
            await self.error(ErrorCode.BAD_JSON, "binary frames are not part of the protocol; send JSON text")
        elif msg.type == WSMsgType.ERROR:
            log.info("ws %s: closed by error %s", self.peer, self.ws.exception())

    async def on_text(self, text: str) -> None:
        if len(text.encode("utf-8", "replace")) > self.settings.max_ws_message_bytes:
            WS_MESSAGES.labels(type="too_large").inc()
            await self.error(
                ErrorCode.TOO_LARGE,
                f"message of {len(text)} characters exceeds the limit of "
                f"{self.settings.max_ws_message_bytes} bytes",
            )
            return
        try:
            message = parse_client_message(text)
        except SignalingProtocolError as exc:
            WS_MESSAGES.labels(type="invalid").inc()
            await self.error(exc.code, str(exc))
            return
        WS_MESSAGES.labels(type=message.type).inc()
        try:
            await self.dispatch(message)
        except ClientError as exc:
            await self.error(exc.code, str(exc))
        except REDIS_DOWN_ERRORS as exc:
            log.warning("ws %s: redis unavailable: %s", self.peer, exc)
            await self.error(ErrorCode.INTERNAL, "the server's Redis is unavailable; try again shortly")
        except Exception:
            log.exception("ws %s: %s failed", self.peer, message.type)
            await self.error(ErrorCode.INTERNAL, f"the server failed to handle {message.type}")

    async def dispatch(
        self, message: JoinMessage | OfferMessage | ByeMessage | PingMessage | ListModelsMessage
    ) -> None:
        if isinstance(message, JoinMessage):
            await self.join(message)
        elif isinstance(message, OfferMessage):
            await self.offer(message)
        elif isinstance(message, ByeMessage):
            await self.bye(message)
        elif isinstance(message, PingMessage):
            await self.send(PongMessage())
        elif isinstance(message, ListModelsMessage):
            await self.send(await self.models_message(ModelsMessage))

    async def models_message(self, kind: type[OfferT]) -> OfferT:
        try:
            workers = await live_workers(self.redis, self.keys)
        except REDIS_DOWN_ERRORS:
            workers = []
        counts: dict[str, int] = {}
        for worker in workers:
            counts[worker.model] = counts.get(worker.model, 0) + 1
        return kind(
            models=[ModelAvailability(name=name, workers=n) for name, n in sorted(counts.items())],
            default_model=self.settings.default_model,
            sample_fps=self.settings.sample_fps,
            max_sample_fps=self.settings.max_sample_fps,
        )

    def _rate_limit(self) -> None:
        now = time.monotonic()
        while self._joins and now - self._joins[0] > 60.0:
            self._joins.popleft()
        if len(self._joins) >= self.settings.joins_per_minute:
            raise ClientError(
                ErrorCode.RATE_LIMITED,
                f"more than {self.settings.joins_per_minute} joins within a minute on this socket; "
                "wait a little",
            )
        self._joins.append(now)

    async def join(self, message: JoinMessage) -> None:
        # Every join attempt counts, so a flood is throttled whatever its state: per socket, then per
        # client address (all its sockets together).
        self._rate_limit()
        try:
            self.hub.admission.note_join(self.peer)
        except Refused as exc:
            raise ClientError(exc.code, str(exc)) from exc
        if self.session is not None:
            raise ClientError(
                ErrorCode.BAD_STATE, f"session {self.session.id} is live; send bye before joining"
            )
        try:
            seat = self.hub.admission.take_seat(self.peer)
        except Refused as exc:
            raise ClientError(exc.code, str(exc)) from exc
        try:
            await self._join(message, seat)
        except BaseException:
            seat.release()
            raise

    async def _join(self, message: JoinMessage, seat: Seat) -> None:
        model = message.model or self.settings.default_model
        sample_fps = min(message.sample_fps or self.settings.sample_fps, self.settings.max_sample_fps)
        workers = await live_workers(self.redis, self.keys, model)
        if not workers:
            if not await known_without_worker(
                self.redis, self.keys, model, default_model=self.settings.default_model
            ):
                raise ClientError(ErrorCode.UNKNOWN_MODEL, unknown_model_message(model))
            known = sorted({w.model for w in await live_workers(self.redis, self.keys)})
            raise ClientError(
                ErrorCode.NO_WORKER,
                f"no live worker serves model {model!r}"
                + (
                    f" (models with workers: {', '.join(known)})"
                    if known
                    else "; start one with `lookout worker`"
                ),
            )
        bridge = pick_bridge(await live_bridges(self.redis, self.keys))
        if bridge is None:
            raise ClientError(
                ErrorCode.NO_BRIDGE, "no live media bridge has room; start one with `lookout bridge`"
            )
        record = SessionRecord(session=new_session_id(), bridge=bridge.id, model=model, sample_fps=sample_fps)
        session = LiveSession(
            record=record,
            shared=self.hub.shared,
            send=self.send,
            on_end=lambda ended: self._session_ended(ended, seat),
        )
        self.session = session
        self.hub.add(session)
        try:
            await session.start()
        except BaseException:
            await session.end(hang_up=False)
            raise
        log.info(
            "ws %s: session %s joined on bridge %s (model %s)", self.peer, record.session, bridge.id, model
        )
        await self.send(
            JoinedMessage(session=record.session, bridge=bridge.id, model=model, sample_fps=sample_fps)
        )

    def _session_ended(self, session: LiveSession, seat: Seat) -> None:
        seat.release()
        self.hub.remove(session)
        if self.session is session:
            self.session = None

    async def offer(self, message: OfferMessage) -> None:
        session = self.session
        if session is None:
            raise ClientError(ErrorCode.BAD_STATE, "send join before offer")
        if session.answered:
            raise ClientError(ErrorCode.BAD_STATE, "this session already has an answer; send bye to restart")
        request = OfferRequest(
            session=session.id,
            sdp=message.sdp,
            model=session.record.model,
            sample_fps=session.record.sample_fps,
            deadline_ms=now_ms() + self.settings.offer_timeout_s * 1000,
        )
        try:
            # Each waiting offer holds a Redis connection (BLPOP): a bounded share of the pool.
            async with session.offering(), self.hub.offers:
                reply = await call_bridge(
                    self.redis, self.keys, session.bridge, request, timeout_s=self.settings.offer_timeout_s
                )
                session.answered = reply.ok  # before the first-offer deadline can look again
        except BridgeTimeoutError as exc:
            await session.end()
            raise ClientError(ErrorCode.BRIDGE_TIMEOUT, f"{exc}; join again") from exc
        if not reply.ok:
            code = ErrorCode(reply.code) if reply.code in ErrorCode._value2member_map_ else ErrorCode.INTERNAL
            if code != ErrorCode.BAD_SDP:  # a bad SDP may be retried on the same session
                await session.end(hang_up=False)
            raise ClientError(code, reply.message or "the bridge refused the offer")
        await self.send(AnswerMessage(sdp=reply.sdp))

    async def bye(self, message: ByeMessage) -> None:
        session = self.session
        if session is None:
            await self.send(ByeMessage(reason="no live session"))
            return
        await session.end()
        await self.send(ByeMessage(reason="session ended"))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.end()


async def ws_handler(
    request: web.Request, sockets: weakref.WeakSet[web.WebSocketResponse]
) -> web.StreamResponse:
    """Serve one signaling WebSocket; ``sockets`` tracks open ones so that shutdown can close them."""
    settings = request.app[SETTINGS]
    if not api_key_ok(request, settings.api_key):
        WS_ERRORS.labels(code=ErrorCode.UNAUTHORIZED.value).inc()
        return web.json_response(
            ErrorMessage(
                code=ErrorCode.UNAUTHORIZED, message="missing or wrong API key (X-API-Key or ?key=)"
            ).model_dump(mode="json"),
            status=401,
        )
    ws = web.WebSocketResponse(
        max_msg_size=settings.max_ws_message_bytes * HARD_CAP_FACTOR, heartbeat=30.0, compress=False
    )
    await ws.prepare(request)
    sockets.add(ws)
    sock = SignalingSocket(request, ws)
    try:
        await sock.serve()
    finally:
        sockets.discard(ws)
        await asyncio.shield(sock.close())
    return ws
