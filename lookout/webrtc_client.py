"""A pure-Python WebRTC publisher for Lookout: sends a video track to a bridge, receives detections.

It speaks the same ``/ws`` protocol as the web page (``wire.signaling``), so tests, benchmarks and
``lookout stream`` exercise the real path: signaling, a media bridge and the workers.

Two levels of API:

* ``publish(source_track, server_url, model=..., on_message=...)`` runs one session until ``stop`` is
  set or the server ends it, calling ``on_message`` for every server message; returns the last one.
* ``LiveClient`` (``async with LiveClient(url) as client``) for step-by-step control: ``join``,
  ``offer``, ``wait_for``, ``bye``; every message received is kept in ``client.received``.

``LoopingVideoTrack(path)`` plays a video file in a loop (aiortc's ``MediaPlayer(loop=True)`` stops after
the first pass), opening, decoding and closing the file in a thread of its own so the event loop never
blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import av
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from mediabridge import ice
from wire import PROTOCOL_VERSION
from wire.errors import LookoutError
from wire.signaling import (
    AnswerMessage,
    ByeMessage,
    ErrorMessage,
    HelloMessage,
    JoinedMessage,
    parse_server_message,
)

log = logging.getLogger(__name__)

WS_HEARTBEAT_S = 20.0
"""WebSocket ping interval: a signaling host that vanishes without closing the socket shows within 1.5x."""
SOCKET_GONE_ERRORS = (ConnectionError, aiohttp.ClientError, RuntimeError)
"""What aiohttp raises writing to a socket that is closing or gone (reset, closed transport)."""

ServerMessage = Any  # one of wire.signaling's server messages (a pydantic model with .type)
OnMessage = Callable[[ServerMessage], Awaitable[None] | None]


class LiveClientError(LookoutError):
    """The server answered with an ``error`` message (``code`` says which) or did not answer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.detail = message


class LoopingVideoTrack(VideoStreamTrack):
    """Frames of a video file, looped forever, paced and stamped by aiortc's ``next_timestamp``.

    One thread does all the file work, so closing on ``stop`` waits for a decode in flight instead of
    pulling the container from under it.
    """

    def __init__(self, path: str | Path, *, fps: float | None = None) -> None:
        super().__init__()
        self.path = str(path)
        self._frames: Iterator[av.VideoFrame] | None = None
        self._container: Any = None
        self._fps = fps
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="looping-track")
        self.frames_sent = 0

    def _next_frame(self) -> av.VideoFrame:
        for _attempt in range(2):
            if self._frames is None:
                self._container = av.open(self.path)
                self._frames = self._container.decode(video=0)
            try:
                return next(self._frames)
            except StopIteration:
                self._container.close()
                self._frames = None
        raise RuntimeError(f"{self.path} has no video frames")

    async def recv(self) -> av.VideoFrame:
        if self._fps:
            pts, time_base = await self._paced(self._fps)
        else:
            pts, time_base = await self.next_timestamp()
        try:
            frame = await asyncio.get_running_loop().run_in_executor(self._decoder, self._next_frame)
        except RuntimeError as exc:  # stopped meanwhile: the decoding thread takes no more work
            if self.readyState == "live":
                raise
            raise MediaStreamError from exc
        frame.pts = pts
        frame.time_base = time_base
        self.frames_sent += 1
        return frame

    async def _paced(self, fps: float) -> tuple[int, fractions.Fraction]:
        clock = 90000
        if not hasattr(self, "_start"):
            self._start = time.monotonic()
            self._count = 0
        else:
            self._count += 1
            wait = self._start + self._count / fps - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        return int(self._count * clock / fps), fractions.Fraction(1, clock)

    def stop(self) -> None:
        """Stop at once; the file is closed on the decoding thread, after a decode in flight."""
        super().stop()
        with contextlib.suppress(RuntimeError):  # stopped twice: the thread is already shut down
            self._decoder.submit(self._close)
        self._decoder.shutdown(wait=False)

    def _close(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
            self._frames = None


def force_codec(pc: RTCPeerConnection, sender: RTCRtpSender, codec: str) -> None:
    """Offer only ``codec`` (``vp8`` or ``h264``) for the sender's transceiver (plus rtx)."""
    wanted = f"video/{codec.lower()}"
    capabilities = RTCRtpSender.getCapabilities("video")
    chosen = [c for c in capabilities.codecs if c.mimeType.lower() == wanted]
    if not chosen:
        raise LookoutError(f"codec {codec!r} is not available (have: VP8, H264)")
    rtx = [c for c in capabilities.codecs if c.mimeType.lower() == "video/rtx"]
    for transceiver in pc.getTransceivers():
        if transceiver.sender is sender:
            transceiver.setCodecPreferences(chosen + rtx)


class LiveClient:
    """One signaling WebSocket and, after ``offer``, one outgoing peer connection."""

    def __init__(
        self,
        server_url: str,
        *,
        api_key: str = "",
        on_message: OnMessage | None = None,
        ice_host_addresses: list[str] | None = None,
        timeout_s: float = 15.0,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.api_key = api_key
        self.on_message = on_message
        self.timeout_s = timeout_s
        self.received: list[ServerMessage] = []
        self.hello: HelloMessage | None = None
        self.joined: JoinedMessage | None = None
        self.pc: RTCPeerConnection | None = None
        self._ice_host_addresses = ice_host_addresses
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._cursor = 0
        self._arrived = asyncio.Condition()
        self.closed = asyncio.Event()

    async def __aenter__(self) -> LiveClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def ws_url(self) -> str:
        base = self.server_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        return f"{base}/ws"

    async def connect(self) -> HelloMessage:
        if self._ice_host_addresses is not None:
            ice.restrict_host_addresses(self._ice_host_addresses)
        self._http = aiohttp.ClientSession()
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        try:
            self._ws = await self._http.ws_connect(
                self.ws_url, headers=headers, max_msg_size=0, heartbeat=WS_HEARTBEAT_S
            )
        except aiohttp.WSServerHandshakeError as exc:
            await self._http.close()
            code = "unauthorized" if exc.status == 401 else "handshake_failed"
            raise LiveClientError(code, f"{self.ws_url}: HTTP {exc.status}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            await self._http.close()
            raise LiveClientError("unreachable", f"{self.ws_url}: {exc or type(exc).__name__}") from exc
        self._reader = asyncio.create_task(self._read(), name="live-client-reader")
        hello = await self.wait_for("hello")
        assert isinstance(hello, HelloMessage)
        self.hello = hello
        return hello

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    message = parse_server_message(msg.data)
                except ValueError:
                    log.warning("unparseable server message: %.200s", msg.data)
                    continue
                async with self._arrived:
                    self.received.append(message)
                    self._arrived.notify_all()
                if self.on_message is not None:
                    result = self.on_message(message)
                    if result is not None:
                        await result
        finally:
            self.closed.set()
            async with self._arrived:
                self._arrived.notify_all()

    @property
    def close_reason(self) -> str:
        """Why the socket closed, in words (for the one line a client prints)."""
        if self._ws is None:
            return "signaling connection not open"
        error = self._ws.exception()
        if error is not None:
            return f"signaling connection lost ({error or type(error).__name__})"
        code = self._ws.close_code
        return "signaling closed the connection" + (f" (code {code})" if code is not None else "")

    async def send(self, message: dict[str, Any] | str) -> None:
        """Send a raw message (a dict gets ``v``: PROTOCOL_VERSION added unless it has one).

        Raises LiveClientError ``closed`` when the socket is closing or gone, never a socket error.
        """
        assert self._ws is not None, "connect first"
        if self._ws.closed or self.closed.is_set():
            raise LiveClientError("closed", self.close_reason)
        try:
            if isinstance(message, dict):
                await self._ws.send_json({"v": PROTOCOL_VERSION, **message})
            else:
                await self._ws.send_str(message)
        except SOCKET_GONE_ERRORS as exc:
            raise LiveClientError("closed", f"signaling connection lost while sending: {exc}") from exc

    async def wait_for(
        self, *types: str, timeout_s: float | None = None, predicate: Callable[[Any], bool] | None = None
    ) -> ServerMessage:
        """The next message (after the previous wait's) of one of ``types``; raises on timeout or close."""

        def find() -> ServerMessage | None:
            for index in range(self._cursor, len(self.received)):
                message = self.received[index]
                if message.type in types and (predicate is None or predicate(message)):
                    self._cursor = index + 1
                    return message
            return None

        async def wait() -> ServerMessage:
            async with self._arrived:
                while True:
                    found = find()
                    if found is not None:
                        return found
                    if self.closed.is_set():
                        raise LiveClientError("closed", self.close_reason)
                    await self._arrived.wait()

        try:
            return await asyncio.wait_for(wait(), timeout_s or self.timeout_s)
        except TimeoutError as exc:
            raise LiveClientError(
                "timeout", f"no {'/'.join(types)} within {timeout_s or self.timeout_s} s"
            ) from exc

    async def request(self, message: dict[str, Any], reply: str) -> ServerMessage:
        """Send ``message`` and return the reply of type ``reply``; an ``error`` reply raises."""
        await self.send(message)
        answer = await self.wait_for(reply, "error")
        if isinstance(answer, ErrorMessage):
            raise LiveClientError(answer.code.value, answer.message)
        return answer

    async def join(self, model: str | None = None, sample_fps: float | None = None) -> JoinedMessage:
        body: dict[str, Any] = {"type": "join"}
        if model is not None:
            body["model"] = model
        if sample_fps is not None:
            body["sample_fps"] = sample_fps
        joined = await self.request(body, "joined")
        assert isinstance(joined, JoinedMessage)
        self.joined = joined
        return joined

    async def offer(self, track: MediaStreamTrack, *, codec: str | None = None) -> AnswerMessage:
        """Negotiate media (non-trickle: aiortc gathers every candidate in setLocalDescription)."""
        await self._close_pc()
        self.pc = RTCPeerConnection(ice.rtc_configuration(""))
        sender = self.pc.addTrack(track)
        if codec:
            force_codec(self.pc, sender, codec)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await self.request({"type": "offer", "sdp": self.pc.localDescription.sdp}, "answer")
        assert isinstance(answer, AnswerMessage)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))
        return answer

    async def bye(self) -> None:
        with contextlib.suppress(LiveClientError):
            await self.request({"type": "bye"}, "bye")
        await self._close_pc()

    async def _close_pc(self) -> None:
        if self.pc is not None:
            await self.pc.close()
            self.pc = None

    def of_type(self, kind: str) -> list[ServerMessage]:
        return [m for m in self.received if m.type == kind]

    async def close(self) -> None:
        """Close the peer connection and the socket; quiet when signaling is already gone."""
        await self._close_pc()
        if self._ws is not None:
            with contextlib.suppress(*SOCKET_GONE_ERRORS, TimeoutError):
                await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._http is not None:
            await self._http.close()


async def publish(
    source_track: MediaStreamTrack,
    server_url: str,
    *,
    model: str | None = None,
    sample_fps: float | None = None,
    codec: str | None = None,
    api_key: str = "",
    on_message: OnMessage | None = None,
    stop: asyncio.Event | None = None,
    ice_host_addresses: list[str] | None = None,
) -> ServerMessage:
    """Publish ``source_track`` to a Lookout server until ``stop`` is set or the server ends the session.

    Returns the message that ended it (``bye`` or ``error``), or a ``bye`` after ``stop``. Raises
    LiveClientError when joining or negotiating fails (``no_worker``, ``no_bridge``, ...), and ``closed``
    when the signaling socket closes under the session. ``lookout stream`` keeps its sessions going with
    ``lookout.reconnect`` instead.
    """
    stop = stop or asyncio.Event()
    async with LiveClient(
        server_url, api_key=api_key, on_message=on_message, ice_host_addresses=ice_host_addresses
    ) as client:
        await client.join(model=model, sample_fps=sample_fps)
        await client.offer(source_track, codec=codec)
        stopper = asyncio.create_task(stop.wait())
        ender = asyncio.create_task(client.wait_for("bye", "error", timeout_s=365 * 24 * 3600.0))
        try:
            done, _ = await asyncio.wait({stopper, ender}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            ender.cancel()
        if ender in done and not ender.cancelled():
            return ender.result()  # the ending message, or LiveClientError("closed"): not a stop
        await client.bye()
        return ByeMessage(reason="stopped by the client")
