"""The asyncio client of the frame backbone: submit a frame, then await its result or its drop.

Signaling (REST), the media bridge, the CLI and the tests all use it. One client owns one session id:
it publishes frames under that id and reads that session's result stream, so it sees its own
outcomes and nobody else's. ``iter_outcomes`` lets another process (signaling relaying a bridge's
session to a browser) follow a session's outcomes without owning it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from wire.config import StreamSettings
from wire.keys import Keys
from wire.liveness import live_workers
from wire.messages import (
    DropReason,
    DropRecord,
    DropSite,
    Fields,
    FrameMessage,
    MalformedMessageError,
    Outcome,
    decode_outcome,
    now_ms,
)
from wire.outcomes import claim_for_client, publish_outcome
from wire.redis_down import REDIS_DOWN_ERRORS
from wire.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass
class _Waiting:
    """A submitted frame whose outcome its client waits for."""

    future: asyncio.Future[Outcome]
    model: str
    entry_id: str = ""
    """Its entry on the frame stream, once XADD returned it."""


LATE_OUTCOME_WAIT_S = 1.0
"""How long a timed-out frame's outcome is still awaited when a worker turns out to have ended it."""
SETTLE_TIMEOUT_S = 30.0
"""How long a timeout drop Redis could not take is retried: it is counted once Redis answers."""
CLOSE_SETTLE_S = 5.0
"""How long ``close`` waits for such drops to be counted before it says how many were not."""
READER_RESTART_S = 1.0
"""Pause before a client's result reader starts again after it crashed (a bug, not an outage)."""

StreamReply = list[tuple[bytes, list[tuple[bytes, Fields]]]] | None
"""What XREAD / XREADGROUP return without ``decode_responses`` (RESP2)."""


async def iter_outcomes(
    redis: Redis, keys: Keys, session: str, *, start_id: str = "$", block_ms: int = 1000
) -> AsyncIterator[Outcome]:
    """Follow one session's result stream from ``start_id`` ("$": only what comes from now on).

    Survives Redis restarts: it waits and reconnects, resuming after the last entry it saw.
    """
    stream = keys.results(session)
    last_id = start_id
    if last_id == "$":
        # Resolve "$" once, so that a reconnect resumes after what we saw rather than skipping.
        last_id = await _last_id(redis, stream)
    while True:
        try:
            reply = cast(StreamReply, await redis.xread({stream: last_id}, count=64, block=block_ms))
        except REDIS_DOWN_ERRORS as exc:
            log.warning("result stream %s: redis unavailable (%s); retrying", stream, exc)
            await asyncio.sleep(0.5)
            continue
        except Exception as exc:  # a missing stream is not an error with XREAD; anything else is
            if "no such key" in str(exc).lower():
                await asyncio.sleep(0.1)
                continue
            raise
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                last_id = entry_id.decode()
                try:
                    yield decode_outcome(fields)
                except MalformedMessageError as exc:
                    log.warning("skipping malformed entry %s on %s: %s", last_id, stream, exc)


async def _last_id(redis: Redis, stream: str) -> str:
    """The id of the newest entry ever added to ``stream``; "0-0" when it does not exist (yet)."""
    try:
        info = await redis.xinfo_stream(stream)
    except ResponseError:  # no such key: nothing has been published to this session yet
        return "0-0"
    except REDIS_DOWN_ERRORS as exc:
        log.warning("result stream %s: redis unavailable (%s); reading from its start", stream, exc)
        return "0-0"
    last = info["last-generated-id"]
    return last.decode() if isinstance(last, bytes) else str(last)


class FrameClient:
    """Submits frames for one session and resolves each to its result or drop record.

    Use as ``async with FrameClient(redis) as client: outcome = await client.detect(...)``.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        keys: Keys | None = None,
        settings: StreamSettings | None = None,
        session: str | None = None,
        site: DropSite = DropSite.CLIENT,
    ) -> None:
        self.redis = redis
        self.site = site
        """Where this client's own drops (timeouts) are counted: the service that runs it."""
        self.settings = settings or StreamSettings()
        self.keys = keys or Keys(self.settings.key_prefix)
        self.session = session or f"client-{uuid.uuid4().hex[:12]}"
        self._seq = itertools.count()
        self._pending: dict[int, _Waiting] = {}
        self._settling: set[asyncio.Task[object]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> FrameClient:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start reading this session's result stream. Idempotent."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_outcomes(), name=f"results:{self.session}")
            await self._ready.wait()

    async def close(self) -> None:
        """Stop reading; waiting submitters get a client-side TIMEOUT drop (counted)."""
        if self._reader is not None:
            await cancel_and_wait(self._reader)
            self._reader = None
        pending, self._pending = self._pending, {}
        for seq, waiting in pending.items():
            if not waiting.future.done():
                waiting.future.set_result(
                    await self._timeout_drop(seq, waiting, "the client closed before the outcome came")
                )
        if self._settling:
            _done, unsettled = await asyncio.wait(list(self._settling), timeout=CLOSE_SETTLE_S)
            if unsettled:
                log.warning(
                    "session %s: %d timeout drop(s) not counted in Redis (unreachable for %.0f s)",
                    self.session,
                    len(unsettled),
                    CLOSE_SETTLE_S,
                )
                await cancel_and_wait(*unsettled)

    @property
    def in_flight(self) -> int:
        """Frames submitted whose outcome has not arrived yet."""
        return len(self._pending)

    def next_seq(self) -> int:
        return next(self._seq)

    async def submit(
        self,
        image: bytes,
        *,
        model: str,
        width: int,
        height: int,
        received_ms: float | None = None,
        deadline_ms: float | None = None,
        seq: int | None = None,
    ) -> tuple[int, asyncio.Future[Outcome]]:
        """Publish a frame; returns its sequence number and a future for its outcome."""
        await self.start()
        captured = now_ms() if received_ms is None else received_ms
        frame = FrameMessage(
            session=self.session,
            seq=self.next_seq() if seq is None else seq,
            received_ms=captured,
            deadline_ms=deadline_ms
            if deadline_ms is not None
            else captured + self.settings.frame_deadline_ms,
            model=model,
            width=width,
            height=height,
            image=image,
        )
        if frame.seq in self._pending:
            raise ValueError(f"frame {frame.seq} of session {self.session} is already in flight")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        waiting = _Waiting(future, model)
        self._pending[frame.seq] = waiting
        try:
            entry_id = await self.redis.xadd(
                self.keys.frames(model),
                frame.to_fields(),
                maxlen=self.settings.frame_stream_maxlen,
                approximate=True,
            )
        except BaseException:
            self._pending.pop(frame.seq, None)
            raise
        waiting.entry_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        return frame.seq, future

    async def wait(
        self, seq: int, future: asyncio.Future[Outcome], *, model: str, timeout_s: float
    ) -> Outcome:
        """Await a submitted frame's outcome; past ``timeout_s`` it ends as a counted TIMEOUT drop."""
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            waiting = self._pending.get(seq) or _Waiting(future, model)
            return await self._timeout_drop(seq, waiting, f"no result within {timeout_s:.1f} s")
        except asyncio.CancelledError:
            # Nobody will wait for it now: end it as a timeout in the background, so that it is counted
            # at once (a frame held by a dead worker would otherwise wait for a claim) and not left here.
            abandoned = self._pending.get(seq)
            if abandoned is not None and not future.done():
                self._in_background(self._timeout_drop(seq, abandoned, "its waiter was cancelled"))
            raise
        finally:
            self._pending.pop(seq, None)

    async def _timeout_drop(self, seq: int, waiting: _Waiting, detail: str) -> Outcome:
        """End a frame nobody waits for any more: a TIMEOUT drop, counted once, or what a worker made of it.

        The drop is counted only if no worker ended the frame (``wire.outcomes.claim_for_client``), so a
        frame held by a dead worker and claimed by a live one is not counted twice. While Redis is down
        the claim is retried in the background until it answers.
        """
        model = waiting.model
        drop = DropRecord(
            session=self.session,
            seq=seq,
            model=model,
            reason=DropReason.TIMEOUT,
            site=self.site,
            detail=detail,
        )
        if not waiting.entry_id:
            return drop
        try:
            claimed = await self._claim(waiting)
        except REDIS_DOWN_ERRORS:
            self._in_background(self._settle(waiting))
            return drop.model_copy(update={"detail": f"{detail} (counted once Redis is back)"})
        if claimed:
            return drop
        # A worker ended it: its outcome is on the result stream, counted there.
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(waiting.future), LATE_OUTCOME_WAIT_S)
        return drop.model_copy(update={"detail": f"{detail}; a worker ended it meanwhile (counted there)"})

    def _in_background(self, work: Coroutine[Any, Any, object]) -> None:
        """Settle a frame's count off the caller's path; ``close`` waits for these (CLOSE_SETTLE_S)."""
        task = asyncio.create_task(work, name=f"settle:{self.session}")
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _claim(self, waiting: _Waiting) -> bool:
        return await claim_for_client(
            self.redis,
            self.keys,
            model=waiting.model,
            entry_id=waiting.entry_id,
            reason=DropReason.TIMEOUT,
            site=self.site,
        )

    async def _settle(self, waiting: _Waiting) -> None:
        """Retry a timeout claim through a Redis outage, for up to SETTLE_TIMEOUT_S."""
        delay_s = 0.1
        loop = asyncio.get_running_loop()
        give_up = loop.time() + SETTLE_TIMEOUT_S
        while loop.time() < give_up:
            await asyncio.sleep(delay_s)
            delay_s = min(2 * delay_s, 1.0)
            try:
                await self._claim(waiting)
                return
            except REDIS_DOWN_ERRORS:
                continue
        log.warning(
            "session %s: a timeout drop of %s was not counted in Redis (unreachable for %.0f s)",
            self.session,
            waiting.model,
            SETTLE_TIMEOUT_S,
        )

    async def detect(
        self,
        image: bytes,
        *,
        model: str,
        width: int,
        height: int,
        timeout_s: float = 10.0,
        deadline_ms: float | None = None,
    ) -> Outcome:
        """Submit one frame and wait for how it ended."""
        seq, future = await self.submit(
            image, model=model, width=width, height=height, deadline_ms=deadline_ms
        )
        return await self.wait(seq, future, model=model, timeout_s=timeout_s)

    async def drop(
        self, seq: int, *, model: str, reason: DropReason, site: DropSite, detail: str = ""
    ) -> None:
        """Record a frame of this session that was dropped before it reached a worker (counted)."""
        record = DropRecord(
            session=self.session, seq=seq, model=model, reason=reason, site=site, detail=detail
        )
        await publish_outcome(
            self.redis,
            self.keys,
            record,
            maxlen=self.settings.result_stream_maxlen,
            ttl_s=self.settings.result_stream_ttl_s,
        )

    async def has_worker(self, model: str) -> bool:
        """Whether any live worker serves ``model``."""
        return bool(await live_workers(self.redis, self.keys, model))

    async def _read_outcomes(self) -> None:
        # Supervised: iter_outcomes rides out Redis outages itself; anything else it raises is a bug,
        # logged, and the reader starts again (outcomes published meanwhile end as timeouts, counted).
        while True:
            try:
                async for outcome in self._iter_with_ready():
                    waiting = self._pending.get(outcome.seq)
                    if waiting is not None and not waiting.future.done():
                        waiting.future.set_result(outcome)
            except Exception:
                log.exception("session %s: reading its results failed; reading them again", self.session)
                await asyncio.sleep(READER_RESTART_S)

    async def _iter_with_ready(self) -> AsyncIterator[Outcome]:
        # Position the reader before any submit can publish, then signal readiness.
        last_id = await _last_id(self.redis, self.keys.results(self.session))
        self._ready.set()
        async for outcome in iter_outcomes(self.redis, self.keys, self.session, start_id=last_id):
            yield outcome
