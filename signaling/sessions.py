"""A live session as signaling sees it: its Redis record, its bridge, and delivery to its one WebSocket.

State that other replicas need lives in Redis (the session record, kept alive with a TTL, and the
bridge registry); this object only holds what belongs to the WebSocket it serves. Results and drop
records come from the session's own result stream, which only this session's id names, and go to this
session's socket only.

A session holds no Redis connection of its own: the replica's shared reader (``ResultsReader``) and
pub/sub (``SessionEvents``) feed it, and ``SessionUpkeep`` refreshes its record and watches its bridge
(``signaling.hub`` owns all three). Its own tasks are local: delivery to the socket, stats, and the
deadline for its first offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from runtime.redis import REDIS_DOWN_ERRORS
from signaling.results_reader import ResultsReader
from signaling.session_events import SessionEvents
from wire.bridge_rpc import (
    HangupRequest,
    SessionEvent,
    SessionRecord,
    delete_session,
    save_session,
    send_request,
)
from wire.config import SignalingSettings
from wire.keys import Keys
from wire.messages import (
    DropRecord,
    Fields,
    MalformedMessageError,
    Outcome,
    ResultMessage,
    decode_outcome,
    now_ms,
)
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

INBOX_LIMIT = 1024
"""Outcomes waiting for a slow socket; past this the oldest are discarded (the client is stuck)."""


def new_session_id() -> str:
    """Unguessable (128 random bits): knowing a session id is what it takes to read its results."""
    return f"s-{secrets.token_hex(16)}"


@dataclass(frozen=True)
class SharedRedis:
    """What every session of a replica shares: the client, its keys, settings, reader and pub/sub."""

    redis: Redis
    keys: Keys
    settings: SignalingSettings
    results: ResultsReader
    events: SessionEvents


class LiveSession:
    """One joined session: delivers its outcomes and events, and ends when told, failed or never offered."""

    def __init__(
        self,
        *,
        record: SessionRecord,
        shared: SharedRedis,
        send: Send,
        on_end: Callable[[LiveSession], None],
    ) -> None:
        self.record = record
        self.shared = shared
        self.redis = shared.redis
        self.keys = shared.keys
        self.settings = shared.settings
        self.answered = False
        self.inferred = 0
        self.dropped = 0
        self.by_reason: Counter[str] = Counter()
        self._send = send
        self._on_end = on_end
        self._tasks: list[asyncio.Task[None]] = []
        self._ended = False
        self._stats_due = asyncio.Event()
        self._inbox: asyncio.Queue[Outcome] = asyncio.Queue()
        self._offers_in_flight = 0
        self._offer_done = asyncio.Event()

    @property
    def id(self) -> str:
        return self.record.session

    @property
    def bridge(self) -> str:
        return self.record.bridge

    @property
    def ended(self) -> bool:
        return self._ended

    async def start(self) -> None:
        """Write the record (before the bridge sees the offer: it checks the record) and start delivery."""
        LIVE_SESSIONS.labels(site="signaling").inc()  # first: a failed start ends (and decrements) it
        await save_session(self.redis, self.keys, self.record, ttl_s=self.settings.session_ttl_s)
        self.shared.results.follow(self.keys.results(self.id), self._on_entry, start_id="0-0")
        self._spawn("deliver", self._deliver())
        self._spawn("stats", self._stats_loop())
        self._spawn("offer-deadline", self._offer_deadline())
        await self.shared.events.watch(self.keys.session_events(self.id), self._on_event)

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"{name}:{self.id}"))

    async def end(self, *, hang_up: bool = True) -> None:
        """Stop delivery, tell the bridge (unless it is gone) and delete the record. Idempotent."""
        if self._ended:
            return
        self._ended = True
        LIVE_SESSIONS.labels(site="signaling").dec()
        self.shared.results.unfollow(self.keys.results(self.id))
        self.shared.events.unwatch(self.keys.session_events(self.id))
        current = asyncio.current_task()
        others = [t for t in self._tasks if t is not current]
        await cancel_and_wait(*others)
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
        if self._ended:
            return  # already ended (a second event, a bye): the client was told once
        await self.end(hang_up=code != ErrorCode.BRIDGE_LOST)
        with contextlib.suppress(Exception):
            await self._send(ErrorMessage(code=code, message=message))

    def bridge_lost(self) -> None:
        """The bridge's heartbeat is gone (called by the upkeep)."""
        if not self._ended:
            message = f"media bridge {self.bridge} stopped; join again to get another"
            self._spawn("bridge-lost", self._fail(ErrorCode.BRIDGE_LOST, message))

    @contextlib.asynccontextmanager
    async def offering(self) -> AsyncIterator[None]:
        """Marks an offer in flight: the first-offer deadline waits for its outcome."""
        self._offers_in_flight += 1
        self._offer_done.clear()
        try:
            yield
        finally:
            self._offers_in_flight -= 1
            self._offer_done.set()

    async def _offer_deadline(self) -> None:
        # An idle joined session holds a record, a seat and a bridge's attention: it may not wait forever.
        await asyncio.sleep(self.settings.join_offer_timeout_s)
        while self._offers_in_flight and not self.answered:
            await self._offer_done.wait()
            self._offer_done.clear()
        if not self.answered:
            await self._fail(
                ErrorCode.NO_OFFER,
                f"no offer within {self.settings.join_offer_timeout_s:g} s of the join; the session "
                "has ended, join again when ready to offer",
            )

    def _on_entry(self, entry_id: str, fields: Fields) -> None:
        try:
            outcome = decode_outcome(fields)
        except MalformedMessageError as exc:
            log.warning("skipping malformed entry %s of session %s: %s", entry_id, self.id, exc)
            return
        if outcome.session != self.id:
            return  # never another session's data, even if a producer mislabelled it
        if self._inbox.qsize() >= INBOX_LIMIT:
            self._inbox.get_nowait()
            log.warning("session %s: socket too slow, discarding its oldest undelivered outcome", self.id)
        self._inbox.put_nowait(outcome)

    async def _deliver(self) -> None:
        while True:
            outcome = await self._inbox.get()
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

    def _on_event(self, data: bytes) -> None:
        try:
            event = SessionEvent.model_validate_json(data)
        except ValueError:
            return
        if event.session != self.id or self._ended:
            return
        if event.event == "failed":
            message = f"the media connection failed: {event.detail}"
            self._spawn("event", self._fail(ErrorCode.BRIDGE_LOST, message))
        elif event.event == "closed":
            self._spawn("event", self._closed(event.detail))

    async def _closed(self, detail: str) -> None:
        await self.end(hang_up=False)
        with contextlib.suppress(Exception):
            await self._send(ByeMessage(reason=f"media connection closed: {detail}"))
