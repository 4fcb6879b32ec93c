"""Turns a session's decoded video (full frame rate) into frames for inference, without ever queueing.

The track reader calls ``push`` for every decoded frame (it must keep consuming: aiortc's receiver
queue is unbounded). At the session's sample rate a frame is *accepted*: it gets a sequence number and
from then on ends as exactly one result or one counted drop. Accepted frames wait in a one-slot mailbox
for the publisher; a newer accepted frame replaces a waiting one (the latest frame wins) and the
replaced one is dropped at the bridge: ``in_flight_limit`` when the session already has its maximum of
frames at the workers, ``superseded`` when the publisher was merely busy encoding. So latency is bounded
by one sample interval plus the in-flight frames, however slow inference is.

A Redis outage is a state the sampler lives through: it goes on sampling, and each frame it cannot
publish ends as a ``redis_unavailable`` drop (a frame replaced in the mailbox meanwhile too), counted in
the metric at once and held by a ``DropCounter`` (the bridge's ``DropTally``) for the Redis tally, like
every other drop whose record Redis could not take. It tries the newest frame again after a pause that
grows to one second, so publishing resumes within about a second of Redis answering again. The outage
is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from runtime.redis import REDIS_DOWN_ERRORS, Outage
from wire.messages import DropReason, DropRecord, DropSite, ResultMessage, now_ms
from wire.metrics import FRAMES_IN
from wire.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CLOSE_GRACE_S = 1.5
"""How long a closing session waits for its in-flight frames' outcomes."""


class FramePublisher(Protocol):
    """The part of ``wire.client.FrameClient`` the sampler uses (a fake in unit tests)."""

    session: str

    def next_seq(self) -> int: ...

    async def submit(
        self,
        jpeg: bytes,
        *,
        model: str,
        width: int,
        height: int,
        received_ms: float | None = None,
        deadline_ms: float | None = None,
        seq: int | None = None,
    ) -> tuple[int, asyncio.Future[ResultMessage | DropRecord]]: ...

    async def wait(
        self, seq: int, future: asyncio.Future[ResultMessage | DropRecord], *, model: str, timeout_s: float
    ) -> ResultMessage | DropRecord: ...

    async def drop(
        self, seq: int, *, model: str, reason: DropReason, site: DropSite, detail: str = ""
    ) -> None: ...


class DropCounter(Protocol):
    """Where drops go that Redis cannot take now (``mediabridge.tally.DropTally``; a fake in tests)."""

    def count(self, model: str, reason: DropReason) -> None: ...


class VideoFrameLike(Protocol):
    """What the sampler needs of an ``av.VideoFrame``."""

    width: int
    height: int

    def to_ndarray(self, **kwargs: Any) -> np.ndarray[Any, Any]: ...


@dataclass
class _Accepted:
    seq: int
    frame: VideoFrameLike
    received_ms: float


def encode_jpeg(frame: VideoFrameLike, quality: int) -> tuple[bytes, int, int]:
    """BGR conversion and JPEG encoding (about 1.5 ms at 640x480): run it in a thread."""
    image = frame.to_ndarray(format="bgr24")
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes(), int(image.shape[1]), int(image.shape[0])


class Sampler:
    """Samples one session's frames at ``sample_fps`` and publishes them with at most ``in_flight`` out."""

    def __init__(
        self,
        client: FramePublisher,
        *,
        held_drops: DropCounter,
        model: str,
        sample_fps: float,
        in_flight: int,
        jpeg_quality: int,
        deadline_ms: float,
    ) -> None:
        self.client = client
        self.held_drops = held_drops
        self.model = model
        self.interval_ms = 1000.0 / sample_fps
        self.in_flight_limit = in_flight
        self.jpeg_quality = jpeg_quality
        self.deadline_ms = deadline_ms
        self.accepted = 0
        self.published = 0
        self.dropped = 0
        self.drops_by_reason: Counter[DropReason] = Counter()
        """Frames dropped here, at the bridge (``dropped`` in all), by reason."""
        self.results = 0
        """Published frames that ended as a result."""
        self.later_drops: Counter[DropReason] = Counter()
        """Published frames that ended as a drop (at a worker, or a timeout of the bridge's client)."""
        self.unresolved = 0
        """Published frames still out when the session closed (ended as timeouts by ``FrameClient``)."""
        self._outage = Outage(f"publishing the frames of session {client.session}", log)
        self._next_due_ms = 0.0
        self._mailbox: _Accepted | None = None
        self._wake = asyncio.Event()
        self._in_flight = 0
        self._slot_free = asyncio.Event()
        self._slot_free.set()
        self._drops: set[asyncio.Task[None]] = set()
        self._waiters: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def redis_down(self) -> bool:
        """Whether the last publish failed because Redis is down (and none has succeeded since)."""
        return self._outage.down

    def push(self, frame: VideoFrameLike, received_ms: float | None = None) -> bool:
        """Offer a decoded frame (called for every frame); True when it was accepted for inference."""
        if self._closed:
            return False
        now = now_ms() if received_ms is None else received_ms
        if now < self._next_due_ms:
            return False
        # Keep the cadence (a late frame does not shift the next one), but after a stall or at the start
        # begin afresh rather than owe a burst.
        if now - self._next_due_ms >= self.interval_ms:
            self._next_due_ms = now + self.interval_ms
        else:
            self._next_due_ms += self.interval_ms
        accepted = _Accepted(seq=self.client.next_seq(), frame=frame, received_ms=now)
        self.accepted += 1
        FRAMES_IN.labels(site="bridge", model=self.model).inc()
        waiting = self._mailbox
        self._mailbox = accepted
        if waiting is not None:
            if self._outage.down:
                reason = DropReason.REDIS_UNAVAILABLE
            elif self._in_flight >= self.in_flight_limit:
                reason = DropReason.IN_FLIGHT_LIMIT
            else:
                reason = DropReason.SUPERSEDED
            self._drop(waiting.seq, reason, f"replaced by frame {accepted.seq}")
        self._wake.set()
        return True

    async def run(self) -> None:
        """Publish accepted frames until cancelled."""
        try:
            while True:
                await self._wake.wait()
                await self._slot_free.wait()
                item = self._mailbox
                if item is None:
                    self._wake.clear()
                    continue
                self._mailbox = None
                self._wake.clear()
                await self._publish(item)
        finally:
            self._closed = True
            if self._mailbox is not None:
                self._drop(self._mailbox.seq, DropReason.SHUTDOWN, "session closed")
                self._mailbox = None

    async def _publish(self, item: _Accepted) -> None:
        try:
            jpeg, width, height = await asyncio.to_thread(encode_jpeg, item.frame, self.jpeg_quality)
        except asyncio.CancelledError:  # the session is closing: the frame is counted, never lost
            self._drop(item.seq, DropReason.SHUTDOWN, "session closed while encoding")
            raise
        except Exception as exc:  # a frame that cannot be encoded is counted, never lost
            log.warning("session %s: frame %d not encodable: %s", self.client.session, item.seq, exc)
            self._drop(item.seq, DropReason.UNDECODABLE, f"encoding failed: {exc}")
            return
        deadline = item.received_ms + self.deadline_ms
        self._acquire()
        submitting = asyncio.ensure_future(
            self.client.submit(
                jpeg,
                model=self.model,
                width=width,
                height=height,
                received_ms=item.received_ms,
                deadline_ms=deadline,
                seq=item.seq,
            )
        )
        try:
            seq, future = await asyncio.shield(submitting)
        except asyncio.CancelledError:
            # The session is closing while the XADD is out: whether it reached Redis is not known yet, so
            # see the publish through in the background (``close`` waits for it) instead of losing it.
            self._spawn(self._waiters, self._finish_publish(item, submitting, deadline))
            raise
        except REDIS_DOWN_ERRORS as exc:
            self._release()
            self._drop(item.seq, DropReason.REDIS_UNAVAILABLE, f"redis unavailable: {exc}")
            await self._outage.failed(exc)  # frames sampled meanwhile replace each other as such drops
            return
        except Exception as exc:
            # A bug: end the frame (counted) before the crash closes the session (mediabridge.peer).
            self._release()
            self._drop(item.seq, DropReason.SHUTDOWN, f"publishing failed: {type(exc).__name__}")
            raise
        self._outage.ok()
        self.published += 1
        timeout_s = max(0.5, (deadline - now_ms()) / 1000.0 + 2.0)
        self._spawn(self._waiters, self._await_outcome(seq, future, timeout_s))

    async def _finish_publish(
        self, item: _Accepted, submitting: asyncio.Future[tuple[int, Any]], deadline: float
    ) -> None:
        try:
            seq, future = await submitting
        except REDIS_DOWN_ERRORS as exc:
            self._release()
            self._drop(item.seq, DropReason.REDIS_UNAVAILABLE, f"redis unavailable: {exc}")
            return
        except BaseException:
            # Cancelled by ``close`` past its grace, or a bug: counted as a shutdown drop.
            self._release()
            self._drop(item.seq, DropReason.SHUTDOWN, "session closed while publishing")
            raise
        self.published += 1
        timeout_s = max(0.5, (deadline - now_ms()) / 1000.0 + 2.0)
        await self._await_outcome(seq, future, timeout_s)

    async def _await_outcome(
        self, seq: int, future: asyncio.Future[ResultMessage | DropRecord], timeout_s: float
    ) -> None:
        try:
            outcome = await self.client.wait(seq, future, model=self.model, timeout_s=timeout_s)
        except asyncio.CancelledError:
            self.unresolved += 1  # closing: FrameClient.wait ends it as a counted client timeout
            raise
        finally:
            self._release()
        if isinstance(outcome, DropRecord):
            self.later_drops[outcome.reason] += 1
        else:
            self.results += 1

    def _acquire(self) -> None:
        self._in_flight += 1
        if self._in_flight >= self.in_flight_limit:
            self._slot_free.clear()

    def _release(self) -> None:
        self._in_flight -= 1
        if self._in_flight < self.in_flight_limit:
            self._slot_free.set()

    def _drop(self, seq: int, reason: DropReason, detail: str) -> None:
        self.dropped += 1
        self.drops_by_reason[reason] += 1
        if reason is DropReason.REDIS_UNAVAILABLE:
            self.held_drops.count(self.model, reason)  # no record: nowhere to write it
        else:
            self._spawn(self._drops, self._record_drop(seq, reason, detail))

    async def _record_drop(self, seq: int, reason: DropReason, detail: str) -> None:
        # FrameClient.drop counts it in FRAMES_DROPPED and the Redis tally, with its record; when Redis
        # cannot take it, the held drops count it (the record is lost, the count is not).
        try:
            await self.client.drop(seq, model=self.model, reason=reason, site=DropSite.BRIDGE, detail=detail)
        except REDIS_DOWN_ERRORS:
            self.held_drops.count(self.model, reason)

    def accounting(self) -> str:
        """What became of the session's sampled frames, for the log line of its end (after ``close``)."""
        return (
            f"{self.accepted} sampled; "
            f"{self.dropped} dropped at the bridge{_by_reason(self.drops_by_reason)}; "
            f"{self.published} published: {self.results} results, "
            f"{sum(self.later_drops.values())} dropped{_by_reason(self.later_drops)}, "
            f"{self.unresolved} unresolved at close (client timeouts)"
        )

    @staticmethod
    def _spawn(tasks: set[asyncio.Task[None]], coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(_log_failure)

    async def close(self) -> None:
        """Accept no more frames; give in-flight frames a moment to end, and finish writing drop records."""
        self._closed = True
        if self._mailbox is not None:
            self._drop(self._mailbox.seq, DropReason.SHUTDOWN, "session closed")
            self._mailbox = None
        pending = [*self._drops, *self._waiters]
        if pending:
            # Wait, don't cancel: a frame still at a worker usually ends within a frame time, and one that
            # does not is counted as a client TIMEOUT by FrameClient.close rather than lost.
            await asyncio.wait(pending, timeout=CLOSE_GRACE_S)
        await cancel_and_wait(*self._drops, *self._waiters)


def _by_reason(counts: Counter[DropReason]) -> str:
    if not counts:
        return ""
    return " (" + ", ".join(f"{reason.value} {n}" for reason, n in sorted(counts.items())) + ")"


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sampler task failed", exc_info=task.exception())
