"""Keep one source streaming through lost sessions: rejoin with backoff, and own up to the gap.

`lookout stream` runs its sessions here. A session ends in one of three ways:

* as asked (stop: Ctrl-C, SIGTERM, ``--duration``, or the source ran out): ``bye``, and the run is fine;
* lost (the server sent ``bye`` or an ``error`` such as ``bridge_lost``, or signaling's socket closed),
  with ``reconnect`` off or for a reason that a retry cannot fix (``unauthorized``, ``unknown_model``):
  the run ends with that reason, one line, and the command exits 1;
* lost with ``reconnect`` on: a fresh socket, join and offer after ``backoff_delay`` (exponential, with
  jitter, capped), again until one works or the run is stopped. The source keeps playing meanwhile
  (drained, so that no backlog bursts out later) and the frames it produced during the gap, at the
  sample rate, are counted as drops (``stream_ledger.GAP_REASON``).

A peer connection stops its track when it closes (aiortc's sender does), so each session sends a
``SessionTrack`` that relays the one source and leaves it running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from lookout.stream_ledger import Gap, SessionTally, StreamLedger, wall_ms
from lookout.webrtc_client import LiveClient, LiveClientError
from wire.signaling import ErrorCode

log = logging.getLogger("lookout.stream")

INITIAL_DELAY_S = 0.5
MAX_DELAY_S = 10.0
JITTER = 0.25
"""Each delay is its step times a uniform factor in [1 - JITTER, 1]: clients lost together spread out."""
STALL_WARN_S = 10.0
"""Frames sent this long with no result or drop reported for any: warn that they are ending nowhere."""
FOREVER_S = 365 * 24 * 3600.0

PERMANENT_CODES = frozenset(
    code.value
    for code in (
        ErrorCode.UNAUTHORIZED,
        ErrorCode.UNKNOWN_MODEL,
        ErrorCode.BAD_SDP,
        ErrorCode.BAD_MESSAGE,
        ErrorCode.BAD_JSON,
        ErrorCode.BAD_VERSION,
        ErrorCode.UNKNOWN_TYPE,
        ErrorCode.TOO_LARGE,
    )
)
"""Errors that the same request will meet again: reconnecting cannot help."""


def backoff_delay(
    attempt: int,
    *,
    initial_s: float = INITIAL_DELAY_S,
    max_s: float = MAX_DELAY_S,
    jitter: float = JITTER,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before reconnect ``attempt`` (0 first): ``initial_s`` doubling up to ``max_s``,
    times a uniform factor in ``[1 - jitter, 1]``, so never above the cap."""
    step = min(max_s, initial_s * 2.0 ** min(attempt, 64))
    factor = 1.0 - jitter * (rng or random).random()
    return step * factor


def wants_reconnect(source: str) -> bool:
    """The default of ``--reconnect``: on for a camera (RTSP, V4L2 device), off for a file."""
    return source.startswith(("rtsp://", "rtsps://", "/dev/video"))


class SessionTrack(MediaStreamTrack):
    """One session's view of the source: relays its frames; stopping it leaves the source running."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack, on_frame: Callable[[], None]) -> None:
        super().__init__()
        self._source = source
        self._on_frame = on_frame

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._source.recv()
        self._on_frame()
        return frame


async def drain(source: MediaStreamTrack) -> None:
    """Read and discard the source's frames while no session sends them (until cancelled or it ends)."""
    with contextlib.suppress(MediaStreamError):
        while True:
            await source.recv()


@dataclass(frozen=True)
class SessionOptions:
    server_url: str
    api_key: str
    model: str | None
    sample_fps: float | None
    codec: str | None
    ice_host_addresses: list[str] | None


@dataclass(frozen=True)
class _Ended:
    asked: bool  # stopped as asked (or the source ended)
    live: bool  # the session had been answered
    reason: str = ""
    code: str = ""


class StreamSessions:
    """Sessions for one source until stopped; ``run`` returns None, or why the stream was lost."""

    def __init__(
        self,
        source: MediaStreamTrack,
        options: SessionOptions,
        *,
        reconnect: bool,
        ledger: StreamLedger,
        on_message: Callable[[Any], Awaitable[None]],
        on_gap: Callable[[Gap], Awaitable[None]],
        native_fps: float,
    ) -> None:
        self.source = source
        self.options = options
        self.reconnect = reconnect
        self.ledger = ledger
        self._on_message = on_message
        self._on_gap = on_gap
        self._native_fps = native_fps
        self._drain: asyncio.Task[None] | None = None
        self._gap_from_ms: float | None = None
        self._gap_reason = ""
        self._gap_rate = 0.0
        self._attempt = 0
        self._ever_live = False
        self._last: SessionTally | None = None

    async def run(self, stop: asyncio.Event) -> str | None:
        """Stream until ``stop``; raises LiveClientError if the first session cannot start."""
        try:
            while True:
                ended = await self._session(stop)
                if ended.asked:
                    return None if self._gap_from_ms is None else await self._unrecovered()
                if not self._ever_live:
                    raise LiveClientError(ended.code, ended.reason)  # never started: as before, exit 2
                if ended.live and self._gap_from_ms is None and self._last is not None:
                    # The gap starts at the last sign of life: frames after it ended nowhere we know of.
                    self._gap_from_ms = self._last.last_progress_ms or self._last.started_ms
                    self._gap_rate = min(self._last.sample_fps, self._native_fps)
                if not self.reconnect or ended.code in PERMANENT_CODES:
                    self._gap_reason = self._gap_reason or ended.reason
                    await self._close_gap(wall_ms(), None)  # the frames since the last sign of life
                    return f"lost the stream: {ended.reason}"
                if not await self._pause(stop, ended.reason):
                    return await self._unrecovered()
        finally:
            await self._stop_drain()

    def _source_ended(self) -> bool:
        return self.source.readyState == "ended"

    async def _session(self, stop: asyncio.Event) -> _Ended:
        tally = self.ledger.new_session()

        async def on_message(message: Any) -> None:
            tally.observe(message)
            await self._on_message(message)

        options = self.options
        client = LiveClient(
            options.server_url,
            api_key=options.api_key,
            on_message=on_message,
            ice_host_addresses=options.ice_host_addresses,
        )
        live = False
        try:
            await client.connect()
            joined = await client.join(model=options.model, sample_fps=options.sample_fps)
            await self._stop_drain()
            await client.offer(SessionTrack(self.source, self.ledger.frame_sent), codec=options.codec)
            live = self._ever_live = True
            self._last = tally
            tally.session, tally.sample_fps = joined.session, joined.sample_fps
            tally.started_ms = wall_ms()
            await self._recovered(joined.session, tally.started_ms)
            return await self._until_end(client, tally, stop)
        except LiveClientError as exc:
            if stop.is_set() or self._source_ended():
                return _Ended(asked=True, live=live)
            return _Ended(asked=False, live=live, reason=str(exc), code=exc.code)
        finally:
            await client.close()
            if not live:
                self.ledger.sessions.remove(tally)

    async def _until_end(self, client: LiveClient, tally: SessionTally, stop: asyncio.Event) -> _Ended:
        stopper = asyncio.create_task(stop.wait())
        ender = asyncio.create_task(client.wait_for("bye", "error", timeout_s=FOREVER_S))
        watcher = asyncio.create_task(self._watch_stall(tally))
        try:
            await asyncio.wait({stopper, ender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopper, ender, watcher):
                task.cancel()
            await asyncio.gather(stopper, ender, watcher, return_exceptions=True)
        if stop.is_set() or self._source_ended():
            await client.bye()
            return _Ended(asked=True, live=True)
        if ender.cancelled():
            return _Ended(asked=False, live=True, reason="the session ended", code="closed")
        error = ender.exception()
        if isinstance(error, LiveClientError):
            reason = error.detail if error.code == "closed" else str(error)  # "closed: signaling closed..."
            return _Ended(asked=False, live=True, reason=reason, code=error.code)
        if error is not None:
            raise error
        message = ender.result()
        if message.type == "error":
            code = message.code.value
            return _Ended(asked=False, live=True, reason=f"{code}: {message.message}", code=code)
        said = message.reason or "no reason"
        return _Ended(asked=False, live=True, reason=f"the server sent bye: {said}", code="bye")

    async def _watch_stall(self, tally: SessionTally) -> None:
        warned = False
        while True:
            await asyncio.sleep(1.0)
            stalled = self.ledger.stalled_s(tally, wall_ms())
            if stalled >= STALL_WARN_S and not warned:
                log.warning(
                    "no result or drop reported for %.0f s while frames were sent: the server is not "
                    "accounting for them (they end as neither)",
                    stalled,
                )
            warned = stalled >= STALL_WARN_S

    async def _pause(self, stop: asyncio.Event, reason: str) -> bool:
        """Wait out the next backoff delay, draining the source; False if stopped meanwhile."""
        if self._gap_from_ms is None:
            self._gap_from_ms = wall_ms()  # lost before it was ever answered: no rate known yet
        if not self._gap_reason:
            self._gap_reason = reason
        if self._drain is None and not self._source_ended():
            self._drain = asyncio.create_task(drain(self.source), name="drain-source")
        delay = backoff_delay(self._attempt)
        self._attempt += 1
        log.warning("stream lost (%s); reconnecting in %.1f s (attempt %d)", reason, delay, self._attempt)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        return not (stop.is_set() or self._source_ended())

    async def _unrecovered(self) -> str:
        reason = self._gap_reason
        await self._close_gap(wall_ms(), None)
        return f"lost the stream ({reason}) and did not get it back before the stop"

    async def _recovered(self, session: str, now_ms: float) -> None:
        await self._close_gap(now_ms, session)

    async def _close_gap(self, now_ms: float, session: str | None) -> None:
        """Count the gap's frames as drops and write its record; ``session``: the one that ended it."""
        if self._gap_from_ms is None:
            return
        rate = self._gap_rate or min(self.options.sample_fps or 0.0, self._native_fps)
        gap = self.ledger.gap(self._gap_from_ms, now_ms, rate, self._gap_reason)
        seconds = (gap.to_ms - gap.from_ms) / 1000.0
        if session is None:
            log.warning(
                "%d sampled frames of the last %.1f s counted as dropped (%s)",
                gap.dropped,
                seconds,
                gap.reason,
            )
        else:
            log.info(
                "stream back after %.1f s and %d attempt(s) (new session %s); %d sampled frames of the gap "
                "counted as dropped (%s)",
                seconds,
                self._attempt,
                session,
                gap.dropped,
                gap.reason,
            )
        self._gap_from_ms, self._gap_reason, self._gap_rate, self._attempt = None, "", 0.0, 0
        await self._on_gap(gap)

    async def _stop_drain(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError, MediaStreamError):
                await self._drain
            self._drain = None
