"""The media bridge process: heartbeats, signaling requests from Redis, and its peer sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

from redis.asyncio import Redis

from mediabridge import ice
from mediabridge.peer import BadOfferError, PeerSession
from runtime.redis import REDIS_DOWN_ERRORS, Outage, heartbeat_loop
from wire.bridge_rpc import (
    BridgeReply,
    HangupRequest,
    OfferRequest,
    SessionEvent,
    next_request,
    publish_event,
    send_reply,
    session_alive,
)
from wire.config import BridgeSettings
from wire.keys import Keys
from wire.liveness import BridgeInfo, beat
from wire.messages import now_ms
from wire.metrics import LIVE_SESSIONS
from wire.tasks import cancel_and_wait

log = logging.getLogger(__name__)

REPLY_TTL_S = 30.0


def default_bridge_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


class MediaBridge:
    """Serves offers for its own request list, and keeps each session only while signaling wants it."""

    def __init__(self, settings: BridgeSettings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = Keys(settings.key_prefix)
        self.id = settings.bridge_id or default_bridge_id()
        self.sessions: dict[str, PeerSession] = {}
        self.started_ms = now_ms()
        self._handlers: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then close every session and withdraw the heartbeat."""
        ice.install_udp_port_range(
            asyncio.get_running_loop(), self.settings.udp_port_min, self.settings.udp_port_max
        )
        log.info("bridge %s: serving requests on %s", self.id, self.keys.bridge_requests(self.id))
        await self._beat()
        tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._request_loop(), name="requests"),
            asyncio.create_task(self._watchdog_loop(), name="watchdog"),
        ]
        try:
            await stop.wait()
        finally:
            await cancel_and_wait(*tasks)  # re-cancels: redis-py can swallow a cancellation
            await self.shutdown()

    async def shutdown(self) -> None:
        await cancel_and_wait(*self._handlers)
        sessions = list(self.sessions.values())
        await asyncio.gather(*(s.close("bridge shutting down") for s in sessions), return_exceptions=True)
        with contextlib.suppress(*REDIS_DOWN_ERRORS):
            await self.redis.delete(self.keys.bridge(self.id))
        log.info("bridge %s: stopped (%d sessions closed)", self.id, len(sessions))

    def info(self) -> BridgeInfo:
        return BridgeInfo(
            id=self.id,
            pid=os.getpid(),
            sessions=len(self.sessions),
            max_sessions=self.settings.max_sessions,
            started_ms=self.started_ms,
        )

    async def _beat(self) -> None:
        await beat(self.redis, self.keys.bridge(self.id), self.info(), self.settings.heartbeat_ttl_s)

    async def _heartbeat_loop(self) -> None:
        # run() has just beaten: the loop's first beat waits one interval.
        outage = Outage(f"sending the heartbeats of bridge {self.id}", log)
        await heartbeat_loop(self._beat, self.settings.heartbeat_interval_s, outage, beat_first=False)

    async def _request_loop(self) -> None:
        while True:
            try:
                request = await next_request(self.redis, self.keys, self.id, timeout_s=1.0)
            except REDIS_DOWN_ERRORS as exc:
                log.warning("bridge %s: redis unavailable (%s); retrying", self.id, exc)
                await asyncio.sleep(0.5)
                continue
            if request is None:
                continue
            task = asyncio.create_task(self._handle(request), name=f"request:{request.request_id}")
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _handle(self, request: OfferRequest | HangupRequest) -> None:
        if isinstance(request, HangupRequest):
            existing = self.sessions.get(request.session)
            if existing is not None:
                await existing.close("hung up by signaling")
            return
        if now_ms() > request.deadline_ms:
            log.info("bridge %s: ignoring stale offer for session %s", self.id, request.session)
            return
        reply = await self._offer(request)
        try:
            await send_reply(self.redis, self.keys, reply, ttl_s=REPLY_TTL_S)
        except REDIS_DOWN_ERRORS as exc:
            log.warning("bridge %s: could not reply to %s (%s)", self.id, request.request_id, exc)

    async def _offer(self, request: OfferRequest) -> BridgeReply:
        def fail(code: str, message: str) -> BridgeReply:
            log.info("bridge %s: offer for session %s refused: %s", self.id, request.session, message)
            return BridgeReply(request_id=request.request_id, ok=False, code=code, message=message)

        old = self.sessions.get(request.session)
        if old is not None:
            await old.close("replaced by a new offer", announce=False)
        if len(self.sessions) >= self.settings.max_sessions:
            return fail("no_bridge", f"bridge {self.id} is full ({self.settings.max_sessions} sessions)")
        sample_fps = min(request.sample_fps, self.settings.max_sample_fps)
        peer = PeerSession(
            session=request.session,
            model=request.model,
            sample_fps=sample_fps,
            redis=self.redis,
            keys=self.keys,
            settings=self.settings,
            on_closed=self._closed,
        )
        self.sessions[request.session] = peer
        self._update_gauge()
        try:
            sdp = await peer.answer(request.sdp)
        except BadOfferError as exc:
            await peer.close("bad offer", announce=False)
            return fail("bad_sdp", f"the offer could not be used: {exc}")
        except Exception as exc:
            log.exception("bridge %s: offer for session %s failed", self.id, request.session)
            await peer.close("internal error", announce=False)
            return fail("internal", f"the bridge failed to answer: {type(exc).__name__}")
        log.info(
            "bridge %s: session %s answered (model %s, %.1f fps)",
            self.id,
            request.session,
            peer.model,
            sample_fps,
        )
        with contextlib.suppress(*REDIS_DOWN_ERRORS):
            await self._beat()  # tell signaling our new load at once
        return BridgeReply(request_id=request.request_id, ok=True, sdp=sdp)

    async def _closed(self, peer: PeerSession, reason: str, failed: bool, announce: bool) -> None:
        if self.sessions.get(peer.session) is peer:
            del self.sessions[peer.session]
        self._update_gauge()
        if not announce:
            return
        event = SessionEvent(
            session=peer.session, bridge=self.id, event="failed" if failed else "closed", detail=reason
        )
        with contextlib.suppress(*REDIS_DOWN_ERRORS):
            await publish_event(self.redis, self.keys, event)

    async def _watchdog_loop(self) -> None:
        # A session whose record expired has no signaling replica behind it any more (tab gone,
        # replica crashed): its peer connection must not run on.
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            for session_id, peer in list(self.sessions.items()):
                try:
                    alive = await session_alive(self.redis, self.keys, session_id)
                except REDIS_DOWN_ERRORS:
                    break
                if not alive:
                    await peer.close("session record expired")

    def _update_gauge(self) -> None:
        LIVE_SESSIONS.labels(site="bridge").set(len(self.sessions))
