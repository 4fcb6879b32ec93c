"""A live session as signaling sees it: its Redis record, its bridge, and delivery to its one WebSocket.

State that other replicas need lives in Redis (the session record, refreshed here with a TTL, and the
bridge registry); this object only holds what belongs to the WebSocket it serves. Results and drop
records come from the session's own result stream, which only this session's id names, and go to this
session's socket only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from runtime.redis import REDIS_DOWN_ERRORS, Outage, heartbeat_loop
from wire.bridge_rpc import (
    HangupRequest,
    SessionEvent,
    SessionRecord,
    delete_session,
    refresh_session,
    save_session,
    send_request,
)
from wire.client import iter_outcomes
from wire.config import SignalingSettings
from wire.keys import Keys
from wire.messages import DropRecord, ResultMessage, now_ms
from wire.metrics import E2E_LATENCY_SECONDS, LIVE_SESSIONS
from wire.signaling import (
    ByeMessage,
    DetectionsMessage,
    ErrorCode,
    ErrorMessage,
    StatsMessage,
)
from wire.tasks import cancel_and_wait

log = logging.getLogger(__name__)

Send = Callable[[ErrorMessage | DetectionsMessage | StatsMessage | ByeMessage], Awaitable[None]]
"""Sends one server message to the session's WebSocket."""

STATS_MIN_GAP_S = 0.2
"""Stats triggered by drops are sent at most this often (a drop storm must not flood the socket)."""


def new_session_id() -> str:
    """Unguessable (128 random bits): knowing a session id is what it takes to read its results."""
    return f"s-{secrets.token_hex(16)}"


class LiveSession:
    """One joined session: keeps its record alive, delivers its outcomes, watches its bridge."""

    def __init__(
        self,
        *,
        record: SessionRecord,
        redis: Redis,
        keys: Keys,
        settings: SignalingSettings,
        send: Send,
        on_end: Callable[[LiveSession], None],
    ) -> None:
        self.record = record
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.answered = False
        self.inferred = 0
        self.dropped = 0
        self.by_reason: Counter[str] = Counter()
        self._send = send
        self._on_end = on_end
        self._tasks: list[asyncio.Task[None]] = []
        self._ended = False
        self._stats_due = asyncio.Event()

    @property
    def id(self) -> str:
        return self.record.session

    @property
    def bridge(self) -> str:
        return self.record.bridge

    async def start(self) -> None:
        """Write the record (before the bridge sees the offer: it checks the record) and start the tasks."""
        await save_session(self.redis, self.keys, self.record, ttl_s=self.settings.session_ttl_s)
        LIVE_SESSIONS.labels(site="signaling").inc()
        for name, coro in (
            ("refresh", self._refresh_loop()),
            ("deliver", self._deliver()),
            ("stats", self._stats_loop()),
            ("bridge", self._watch_bridge()),
            ("events", self._watch_events()),
        ):
            self._tasks.append(asyncio.create_task(coro, name=f"{name}:{self.id}"))

    async def end(self, *, hang_up: bool = True) -> None:
        """Stop delivery, tell the bridge (unless it is gone) and delete the record. Idempotent."""
        if self._ended:
            return
        self._ended = True
        LIVE_SESSIONS.labels(site="signaling").dec()
        current = asyncio.current_task()
        others = [t for t in self._tasks if t is not current]
        await cancel_and_wait(*others)  # re-cancels: redis-py can swallow a cancellation
        with contextlib.suppress(*REDIS_DOWN_ERRORS):
            if hang_up:
                request = HangupRequest(session=self.id, deadline_ms=now_ms() + 10_000)
                await send_request(self.redis, self.keys, self.bridge, request)
            await delete_session(self.redis, self.keys, self.id)
        self._on_end(self)
        log.info("session %s ended (%d inferred, %d dropped)", self.id, self.inferred, self.dropped)

    async def _fail(self, code: ErrorCode, message: str) -> None:
        # Runs inside one of our own tasks: end() skips cancelling the current one. End first, so that
        # a client reacting to the error at once can join again (no bad_state) and finds no stale record.
        await self.end(hang_up=code != ErrorCode.BRIDGE_LOST)
        with contextlib.suppress(Exception):
            await self._send(ErrorMessage(code=code, message=message))

    async def _refresh_loop(self) -> None:
        # The record was saved when the session started: the first refresh waits one interval.
        interval = max(0.2, self.settings.session_ttl_s / 3)
        outage = Outage(f"refreshing session {self.id}'s record", log)
        await heartbeat_loop(self._refresh_record, interval, outage, beat_first=False)

    async def _refresh_record(self) -> None:
        ttl_s = self.settings.session_ttl_s
        if not await refresh_session(self.redis, self.keys, self.id, ttl_s=ttl_s):
            # Redis lost it (restart, flush): put it back, the session still runs.
            await save_session(self.redis, self.keys, self.record, ttl_s=ttl_s)

    async def _deliver(self) -> None:
        async for outcome in iter_outcomes(self.redis, self.keys, self.id, start_id="0-0"):
            if outcome.session != self.id:
                continue  # never another session's data, even if a producer mislabelled it
            if isinstance(outcome, ResultMessage):
                await self._send_result(outcome)
            elif isinstance(outcome, DropRecord):
                self.dropped += 1
                self.by_reason[outcome.reason.value] += 1
                self._stats_due.set()

    async def _send_result(self, result: ResultMessage) -> None:
        latency_ms = now_ms() - result.received_ms
        self.inferred += 1
        await self._send(
            DetectionsMessage(
                session=result.session,
                seq=result.seq,
                received_ms=result.received_ms,
                width=result.width,
                height=result.height,
                model=result.model,
                model_version=result.model_version,
                worker=result.worker,
                detections=result.detections,
                timings=result.timings,
                latency_ms=latency_ms,
            )
        )
        E2E_LATENCY_SECONDS.labels(model=result.model, path="webrtc").observe(max(0.0, latency_ms) / 1000.0)

    async def _stats_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stats_due.wait(), self.settings.stats_interval_s)
            self._stats_due.clear()
            await self._send(
                StatsMessage(inferred=self.inferred, dropped=self.dropped, by_reason=dict(self.by_reason))
            )
            await asyncio.sleep(STATS_MIN_GAP_S)

    async def _watch_bridge(self) -> None:
        # The bridge's heartbeat key expiring is how a killed bridge shows (it cannot say goodbye).
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            try:
                alive = bool(await self.redis.exists(self.keys.bridge(self.bridge)))
            except REDIS_DOWN_ERRORS:
                continue
            if not alive:
                await self._fail(
                    ErrorCode.BRIDGE_LOST, f"media bridge {self.bridge} stopped; join again to get another"
                )
                return

    async def _watch_events(self) -> None:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.keys.session_events(self.id))
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                try:
                    event = SessionEvent.model_validate_json(message["data"])
                except ValueError:
                    continue
                if event.event == "failed":
                    await self._fail(ErrorCode.BRIDGE_LOST, f"the media connection failed: {event.detail}")
                    return
                if event.event == "closed":
                    await self.end(hang_up=False)
                    with contextlib.suppress(Exception):
                        await self._send(ByeMessage(reason=f"media connection closed: {event.detail}"))
                    return
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


class SessionTable:
    """The sessions this replica serves (to end them all on shutdown)."""

    def __init__(self) -> None:
        self.sessions: dict[str, LiveSession] = {}

    def add(self, session: LiveSession) -> None:
        self.sessions[session.id] = session

    def remove(self, session: LiveSession) -> None:
        self.sessions.pop(session.id, None)

    async def end_all(self) -> None:
        await asyncio.gather(*(s.end() for s in list(self.sessions.values())), return_exceptions=True)
