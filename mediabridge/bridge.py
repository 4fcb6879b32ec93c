"""The media bridge process: heartbeats, signaling requests from Redis, and its peer sessions.

A Redis outage is a state the bridge lives through: its loops (heartbeats, requests, the session
watchdog, the drop tally's flusher) each log it once when it starts and once when it ends
(``runtime.redis.Outage``) and carry on; live sessions keep sampling and count what they cannot publish
(``mediabridge.sampler``). Every loop is supervised (``mediabridge.supervise``): a crash is logged with
its traceback and the loop starts again; a request handler that crashes is logged too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from mediabridge import ice, supervise
from mediabridge.orphans import OrphanCheck
from mediabridge.peer import BadOfferError, PeerSession
from mediabridge.tally import DropTally
from runtime.redis import REDIS_DOWN_ERRORS, Outage, heartbeat_loop
from wire.bridge_rpc import (
    BridgeReply,
    HangupRequest,
    OfferRequest,
    SessionEvent,
    next_request,
    publish_event,
    send_reply,
)
from wire.config import BridgeSettings
from wire.keys import Keys
from wire.liveness import BridgeInfo, beat
from wire.messages import now_ms
from wire.metrics import LIVE_SESSIONS
from wire.tasks import cancel_and_wait

log = logging.getLogger(__name__)

REPLY_TTL_S = 30.0
REQUEST_BLOCK_S = 1.0
"""How long one BLPOP for requests waits (the socket timeout must exceed it)."""


def redis_options() -> dict[str, Any]:
    """Options of the bridge's Redis client, so that it notices an outage soon and a restart heals.

    A command gives up within about a second while Redis is down (a few quick retries, not redis-py's
    default of ten with up to 1 s between them): the sampler then counts its frames as
    ``redis_unavailable`` instead of stalling. A read that hangs (a peer gone without a reset) times out
    after ``socket_timeout``, above the request loop's blocking pop. A pooled connection idle for the
    health-check interval is PINGed before use, so one left over from before a restart is replaced
    rather than failing a command.
    """
    return {
        "socket_connect_timeout": 2.0,
        "socket_timeout": REQUEST_BLOCK_S + 3.0,
        "health_check_interval": 2,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.25), retries=3),
    }


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
        self.tally = DropTally(redis, self.keys)
        """Drops Redis could not take when they happened, until they are added to its tally."""
        self.orphans = OrphanCheck(settings.session_ttl_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then close every session and withdraw the heartbeat."""
        ice.install_udp_port_range(
            asyncio.get_running_loop(), self.settings.udp_port_min, self.settings.udp_port_max
        )
        log.info("bridge %s: serving requests on %s", self.id, self.keys.bridge_requests(self.id))
        with contextlib.suppress(*REDIS_DOWN_ERRORS):  # Redis gone since the start: the loop beats later
            await self._beat()
        loops = {
            "heartbeat": self._heartbeat_loop,
            "requests": self._request_loop,
            "watchdog": self._watchdog_loop,
            "tally": self.tally.flush_loop,
        }
        tasks = [
            asyncio.create_task(supervise.forever(f"bridge {self.id}: the {name} loop", loop), name=name)
            for name, loop in loops.items()
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
        await self.tally.close()
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
        outage = Outage(f"reading the requests of bridge {self.id}", log)
        while True:
            try:
                request = await next_request(self.redis, self.keys, self.id, timeout_s=REQUEST_BLOCK_S)
            except REDIS_DOWN_ERRORS as exc:
                await outage.failed(exc)
                continue
            outage.ok()
            if request is None:
                continue
            task = asyncio.create_task(self._handle(request), name=f"request:{request.request_id}")
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
            task.add_done_callback(_log_crash)

    async def _handle(self, request: OfferRequest | HangupRequest) -> None:
        if isinstance(request, HangupRequest):
            existing = self.sessions.get(request.session)
            if existing is not None:
                await existing.close("hung up by signaling")
            return
        if now_ms() > request.deadline_ms:
            log.info("bridge %s: ignoring stale offer for session %s", self.id, request.session)
            return
        try:
            reply = await self._offer(request)
        except Exception as exc:  # a bug: still answer, so that signaling need not wait for its timeout
            log.exception("bridge %s: offer for session %s crashed", self.id, request.session)
            reply = BridgeReply(
                request_id=request.request_id,
                ok=False,
                code="internal",
                message=f"the bridge failed to answer: {type(exc).__name__}",
            )
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
            held_drops=self.tally,
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
            self.orphans.forget(peer.session)
        self._update_gauge()
        if not announce:
            return
        event = SessionEvent(
            session=peer.session, bridge=self.id, event="failed" if failed else "closed", detail=reason
        )
        with contextlib.suppress(*REDIS_DOWN_ERRORS):
            await publish_event(self.redis, self.keys, event)

    async def _watchdog_loop(self) -> None:
        """Close the sessions whose owner is gone, by the rule of ``mediabridge.orphans``.

        A session whose record has been missing for longer than twice its owner's refresh interval
        has no signaling replica behind it any more (tab gone, replica crashed): its peer connection
        must not run on. A record merely being saved again (after a Redis restart) is missing for less.
        Checked every ``heartbeat_interval_s``.
        """
        outage = Outage(f"checking the session records of bridge {self.id}", log)
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            try:
                await self._check_sessions()
            except REDIS_DOWN_ERRORS as exc:
                outage.note(exc)
                self.orphans.outage()
            else:
                outage.ok()

    async def _check_sessions(self) -> None:
        for session_id, peer in list(self.sessions.items()):
            pttl_ms = int(await self.redis.pttl(self.keys.session(session_id)))
            ttl_s = None if pttl_ms == -2 else max(0, pttl_ms) / 1000  # -2: missing; -1: no expiry
            now = time.monotonic()
            if self.orphans.orphaned(session_id, ttl_s=ttl_s, now=now):
                missing_s = self.orphans.missing_for(session_id, now)
                await peer.close(f"session record missing for {missing_s:.1f} s (its signaling is gone)")

    def _update_gauge(self) -> None:
        LIVE_SESSIONS.labels(site="bridge").set(len(self.sessions))


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s crashed", task.get_name(), exc_info=task.exception())
