"""`lookout stream SOURCE --server URL`: publish a video file, IP camera or V4L2 device to Lookout.

A headless WebRTC publisher (aiortc, through ``lookout.webrtc_client``) for sources that are not a
browser's webcam. Detections come back on the signaling WebSocket and are written as JSON lines
(``--out``, default stdout) or drawn onto the video (``--annotate OUT.mp4``), by ``lookout.stream_sinks``.

Sessions, reconnects and the gap accounting are ``lookout.reconnect`` and ``lookout.stream_ledger``: a
stream the server ends before it was asked to stop exits 1 with one line, unless ``--reconnect`` gets it
back (docs/live.md, "`lookout stream`: how it ends, reconnects, and what it writes").

Everything that touches the disk, a camera or a thread join (opening the source, the output files,
stopping the player, finishing the MP4) runs in a thread: the event loop only moves frames and messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.bootstrap import stop_requested
from wire.config import BridgeSettings, SignalingSettings
from wire.errors import LookoutError

log = logging.getLogger("lookout.stream")

ANNEX_B_SUFFIXES = (".ts", ".m2ts", ".mts", ".h264", ".264")
"""Files whose H.264 can pass through undecoded (aiortc needs Annex-B; MP4 stores AVCC)."""
PROGRESS_EVERY_S = 5.0


class StreamError(LookoutError):
    """The source cannot be opened or the options do not fit together."""


class StreamLostError(LookoutError):
    """The server ended the stream, or signaling went away, and it did not come back. Exit 1."""

    exit_code = 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `lookout stream`."""
    signaling = SignalingSettings.model_fields
    parser = subparsers.add_parser(
        "stream",
        help="publish a video file, IP camera or V4L2 device over WebRTC and collect its detections",
        description="Publish SOURCE to a Lookout server over WebRTC, as a browser webcam would, and write "
        "what the workers detect: one JSON line per analysed frame (--out FILE.jsonl, default stdout), or "
        "the video with boxes drawn (--annotate OUT.mp4). SOURCE is a video file, an rtsp:// or http(s):// "
        "camera URL, or a V4L2 device such as /dev/video0. Runs until the source ends, --duration passes, "
        "or Ctrl-C / SIGTERM (exit 0). A stream the server ends first, or lost with signaling, exits 1 "
        "unless --reconnect gets it back.",
    )
    parser.add_argument("source", help="video file, rtsp:// or http(s):// URL, or /dev/videoN")
    parser.add_argument(
        "--server", required=True, metavar="URL", help="Lookout server, e.g. http://127.0.0.1:8080"
    )
    parser.add_argument("--model", default=None, help="model name (default: the server's default model)")
    parser.add_argument(
        "--fps",
        type=float,
        default=None,
        help=f"frames per second analysed (default: the server's, {signaling['sample_fps'].default:g})",
    )
    parser.add_argument("--loop", action="store_true", help="play a video file again and again")
    parser.add_argument(
        "--codec",
        choices=("vp8", "h264"),
        default=None,
        help="video codec offered (default: let the two ends agree); h264 passes through undecoded "
        f"when the source allows it ({', '.join(ANNEX_B_SUFFIXES)} files, RTSP)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--out", type=Path, default=None, help="write detections as JSON lines to this file")
    output.add_argument(
        "--annotate", type=Path, default=None, metavar="OUT.mp4", help="write the annotated video"
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument(
        "--reconnect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="when the stream is lost, join again with backoff (0.5 s doubling to 10 s, jitter) and count "
        "the frames of the gap as dropped (default: on for rtsp:// and /dev/video sources, off for files)",
    )
    parser.add_argument("--api-key", default=None, help="the server's API key (default: $LOOKOUT_API_KEY)")
    parser.add_argument(
        "--ice-host",
        default=None,
        help="comma-separated local addresses for ICE (default: $LOOKOUT_ICE_HOST_ADDRESSES or all)",
    )
    parser.set_defaults(func=run_stream)


@dataclass
class Source:
    track: Any
    passthrough: bool
    native_fps: float
    describe: str


def _file_fps(path: Path) -> float:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise StreamError(f"{path} has no video stream")
            rate = container.streams.video[0].average_rate
            return float(rate) if rate else 25.0
    except av.error.FFmpegError as exc:
        raise StreamError(f"cannot open {path}: {exc}") from exc


def open_source(source: str, *, loop: bool, codec: str | None) -> Source:
    """The video track for SOURCE: a looping file track, or aiortc's MediaPlayer (file, URL, device)."""
    import av
    from aiortc.contrib.media import MediaPlayer

    from lookout.webrtc_client import LoopingVideoTrack

    path = Path(source)
    is_url = "://" in source
    is_device = source.startswith("/dev/video")
    if not (is_url or is_device or path.is_file()):
        raise StreamError(f"{source}: no such file, and not an rtsp://, http(s):// URL or /dev/videoN device")
    if loop and (is_url or is_device):
        raise StreamError("--loop plays video files only; a camera never ends")
    passthrough = codec == "h264" and (path.suffix.lower() in ANNEX_B_SUFFIXES or source.startswith("rtsp"))
    if path.is_file() and not is_device:
        fps = _file_fps(path)
        if loop and not passthrough:
            return Source(LoopingVideoTrack(path, fps=fps), False, fps, f"{path.name} (looping, {fps:g} fps)")
    try:
        if is_device:
            player = MediaPlayer(source, format="v4l2", options={"framerate": "30", "video_size": "640x480"})
            fps = 30.0
        elif source.startswith(("rtsp://", "rtsps://")):
            player = MediaPlayer(source, options={"rtsp_transport": "tcp"}, decode=not passthrough)
            fps = 30.0
        elif is_url:
            player = MediaPlayer(source)
            fps = 30.0
        else:
            # aiortc's MediaPlayer(loop=True) stops sending after one pass (its timestamps restart), so a
            # looping file is decoded by LoopingVideoTrack instead; looping H.264 is not passed through.
            player = MediaPlayer(str(path), decode=not passthrough, loop=loop)
    except (av.error.FFmpegError, OSError) as exc:
        raise StreamError(f"cannot open {source}: {exc}") from exc
    if player.video is None:
        raise StreamError(f"{source} has no video")
    how = "H.264 passed through" if passthrough else "decoded"
    return Source(player.video, passthrough, fps, f"{source} ({how})")


def run_stream(args: argparse.Namespace) -> int:
    if args.duration is not None and args.duration <= 0:
        raise StreamError("--duration must be positive")
    if args.fps is not None and args.fps <= 0:
        raise StreamError("--fps must be positive")
    # Settings read the environment and .env before the loop starts, not on it.
    return asyncio.run(_stream(args, BridgeSettings(), SignalingSettings()))


async def _stream(args: argparse.Namespace, bridge: BridgeSettings, signaling: SignalingSettings) -> int:
    from lookout.reconnect import SessionOptions, StreamSessions, wants_reconnect
    from lookout.stream_ledger import Gap, StreamLedger, describe
    from lookout.stream_sinks import AnnotatedVideo, JsonLines, RecentFrames

    source = await asyncio.to_thread(open_source, args.source, loop=args.loop, codec=args.codec)
    track = source.track
    sink: JsonLines | AnnotatedVideo
    try:
        if args.annotate is not None:
            if source.passthrough:
                raise StreamError("--annotate needs decoded video: drop --codec h264 for this source")
            recent = RecentFrames(track)
            track = recent.track
            fps = args.fps or signaling.sample_fps
            sink = await asyncio.to_thread(AnnotatedVideo, args.annotate, recent, fps)
        else:
            sink = await asyncio.to_thread(JsonLines, args.out)
    except BaseException:
        await _stop_track(track)
        raise
    loop = asyncio.get_running_loop()
    ledger = StreamLedger()
    with stop_requested() as stop:
        if hasattr(source.track, "on"):  # MediaPlayer tracks say when the source has ended
            # It may say so from the thread that stops it (_stop_track): hand the news to the loop.
            source.track.on("ended", lambda: loop.call_soon_threadsafe(stop.set))
        if args.duration is not None:
            loop.call_later(args.duration, stop.set)
        counts = {"detections": 0, "objects": 0}
        started = time.monotonic()
        last_report = [started]

        async def on_message(message: Any) -> None:
            if message.type == "detections":
                counts["detections"] += 1
                counts["objects"] += len(message.detections)
                await sink.write(message)
                now = time.monotonic()
                if now - last_report[0] >= PROGRESS_EVERY_S:
                    last_report[0] = now
                    log.info(
                        "%.0f s: %d frames analysed (%.1f/s), %d objects, latency %.0f ms",
                        now - started,
                        counts["detections"],
                        counts["detections"] / (now - started),
                        counts["objects"],
                        message.latency_ms,
                    )
            elif message.type == "error":
                log.debug("server error %s: %s", message.code.value, message.message)  # the loss says it once

        async def on_gap(gap: Gap) -> None:
            await sink.write_event(gap.record())

        key = args.api_key if args.api_key is not None else signaling.api_key
        ice_hosts = args.ice_host if args.ice_host is not None else bridge.ice_host_addresses
        options = SessionOptions(
            server_url=args.server,
            api_key=key,
            model=args.model,
            sample_fps=args.fps,
            codec=args.codec,
            ice_host_addresses=[a.strip() for a in ice_hosts.split(",") if a.strip()] or None,
        )
        reconnect = args.reconnect if args.reconnect is not None else wants_reconnect(args.source)
        sessions = StreamSessions(
            track,
            options,
            reconnect=reconnect,
            ledger=ledger,
            on_message=on_message,
            on_gap=on_gap,
            native_fps=source.native_fps,
        )
        log.info("streaming %s to %s%s", source.describe, args.server, " (reconnecting)" if reconnect else "")
        lost: str | None = None
        try:
            lost = await sessions.run(stop)
        finally:
            await _stop_track(track)
            summary = ledger.summary(lost)
            with contextlib.suppress(Exception):  # the summary must not hide why the run failed
                await sink.write_event(summary)
            await sink.close()
    elapsed = time.monotonic() - started
    log.info(
        "stopped after %.0f s: %d frames analysed, %d objects%s",
        elapsed,
        counts["detections"],
        counts["objects"],
        f"; wrote {args.annotate}" if args.annotate else (f"; wrote {args.out}" if args.out else ""),
    )
    log.info("%s", describe(summary))
    if lost is not None:
        raise StreamLostError(lost)
    return 0


async def _stop_track(track: Any) -> None:
    """Stop the source in a thread: aiortc's MediaPlayer joins its reader thread and closes the input."""
    with contextlib.suppress(Exception):
        await asyncio.to_thread(track.stop)
