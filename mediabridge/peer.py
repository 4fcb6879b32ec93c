"""One WebRTC session at the bridge: the aiortc peer connection, its track reader and its sampler.

Its tasks ride out Redis outages themselves (the sampler counts what it cannot publish); one that
crashes anyway is logged with its traceback and closes the session with the reason (announced as
failed, so signaling tells the client) rather than leaving it open with nothing running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from redis.asyncio import Redis

from mediabridge import ice, supervise
from mediabridge.sampler import DropCounter, Sampler
from wire.client import FrameClient
from wire.config import BridgeSettings
from wire.keys import Keys
from wire.messages import DropSite, now_ms
from wire.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0
"""A peer connection that is not connected this long after the answer is closed."""


class BadOfferError(ValueError):
    """The offer's SDP cannot be used (garbage, no video, no common codec)."""


class PeerSession:
    """Answers one offer, then consumes the video at full rate and feeds its sampler."""

    def __init__(
        self,
        *,
        session: str,
        model: str,
        sample_fps: float,
        redis: Redis,
        keys: Keys,
        settings: BridgeSettings,
        held_drops: DropCounter,
        on_closed: Callable[[PeerSession, str, bool, bool], Awaitable[None]],
    ) -> None:
        self.session = session
        self.model = model
        self.sample_fps = sample_fps
        self.settings = settings
        self.client = FrameClient(redis, keys=keys, settings=settings, session=session, site=DropSite.BRIDGE)
        self.sampler = Sampler(
            self.client,
            held_drops=held_drops,
            model=model,
            sample_fps=sample_fps,
            in_flight=settings.in_flight,
            jpeg_quality=settings.jpeg_quality,
            deadline_ms=settings.frame_deadline_ms,
        )
        self.frames_received = 0
        self.created_ms = now_ms()
        self._on_closed = on_closed
        self._pc = RTCPeerConnection(ice.rtc_configuration(settings.ice_servers))
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._connected = asyncio.Event()

    @property
    def connection_state(self) -> str:
        return str(self._pc.connectionState)

    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's complete offer and return the complete answer (all candidates inside)."""
        if "m=video" not in offer_sdp:
            raise BadOfferError("the offer has no video track (m=video)")
        if ice.loopback_only(ice.split_list(self.settings.ice_host_addresses)):
            offer_sdp = ice.keep_loopback_candidates(offer_sdp)
        self._pc.on("track", self._on_track)
        self._pc.on("connectionstatechange", self._on_state)
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            answer = await self._pc.createAnswer()
            await self._pc.setLocalDescription(answer)
        except Exception as exc:  # aiortc raises many kinds on bad SDP; the client just needs to know
            raise BadOfferError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
        await self.client.start()
        self._start(self.sampler.run(), "sampler")
        self._start(self._connect_watchdog(), "connect")
        return ice.advertise_address(self._pc.localDescription.sdp, self.settings.advertised_address)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video":
            log.info("session %s: receiving video", self.session)
            self._start(self._read(track), "track")

    def _start(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.create_task(coro, name=f"{what}:{self.session}")
        self._tasks.append(supervise.watch(task, f"session {self.session}'s {what} task", self._crashed))

    async def _crashed(self, exc: BaseException) -> None:
        await self.close(f"internal error: {type(exc).__name__}: {exc}", failed=True)

    async def _on_state(self) -> None:
        state = self._pc.connectionState
        log.info("session %s: peer connection %s", self.session, state)
        if state == "connected":
            self._connected.set()
        elif state in ("failed", "closed"):
            await self.close(f"peer connection {state}", failed=state == "failed")

    async def _read(self, track: MediaStreamTrack) -> None:
        # Consume every frame as it is decoded: aiortc's receiver queue is unbounded, so a reader that
        # only took what inference needs would let latency grow without end.
        try:
            while True:
                frame = await track.recv()
                self.frames_received += 1
                self.sampler.push(frame, now_ms())  # type: ignore[arg-type]
        except MediaStreamError:
            if not self._closing:
                await self.close("video track ended")

    async def _connect_watchdog(self) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), CONNECT_TIMEOUT_S)
        except TimeoutError:
            await self.close(f"not connected within {CONNECT_TIMEOUT_S:.0f} s", failed=True)

    async def close(self, reason: str, *, failed: bool = False, announce: bool = True) -> None:
        """Close the peer connection and stop everything of this session. Idempotent.

        ``announce``: publish a session event (signaling then ends the session); False when the caller
        already tells signaling itself, e.g. in the reply to a bad offer, which the client may retry.
        """
        if self._closing:
            return
        self._closing = True
        log.info("session %s: closing (%s)", self.session, reason)
        current = asyncio.current_task()
        await cancel_and_wait(*(task for task in self._tasks if task is not current))
        await self.sampler.close()
        with contextlib.suppress(Exception):
            await self._pc.close()
        await self.client.close()
        log.info("session %s: closed; frames: %s", self.session, self.sampler.accounting())
        await self._on_closed(self, reason, failed, announce)
