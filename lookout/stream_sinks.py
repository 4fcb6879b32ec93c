"""Where `lookout stream` writes what comes back: JSON lines, or the analysed frames with boxes drawn.

Both are built in a thread and write on a thread of their own, so the event loop only hands them
messages. ``write`` takes a ``detections`` message; ``write_event`` a record of the command's own (a gap,
the summary; docs/live.md), which only the JSON lines keep.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from wire.errors import LookoutError

RECENT_FRAMES = 30


class SinkError(LookoutError):
    """The output file cannot be written."""


class RecentFrames:
    """The last frames sent, by wall-clock time, so that boxes are drawn on the frame they belong to."""

    def __init__(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamTrack

        outer = self

        class Tee(MediaStreamTrack):
            kind = "video"

            async def recv(self) -> Any:
                frame = await track.recv()
                outer.frames.append((time.time() * 1000.0, frame))
                return frame

            def stop(self) -> None:
                super().stop()
                track.stop()

        self.frames: collections.deque[tuple[float, Any]] = collections.deque(maxlen=RECENT_FRAMES)
        self.track = Tee()

    def nearest(self, wall_ms: float) -> Any | None:
        if not self.frames:
            return None
        return min(self.frames, key=lambda item: abs(item[0] - wall_ms))[1]


class JsonLines:
    """One JSON line per detections message, written off the event loop.

    Build it in a thread (``await asyncio.to_thread(JsonLines, path)``): it creates and opens the file.
    """

    def __init__(self, path: Path | None) -> None:
        self._file: IO[str] = sys.stdout
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file = path.open("w", encoding="utf-8")
            except OSError as exc:
                raise SinkError(f"cannot write {path}: {exc.strerror or exc}") from exc
        self._owned = path is not None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="jsonl")

    async def write(self, message: Any) -> None:
        await self.write_event(message.model_dump(mode="json"))

    async def write_event(self, record: dict[str, Any]) -> None:
        """One JSON line of any record (a detections message, a gap, the summary)."""
        line = json.dumps(record, separators=(",", ":")) + "\n"
        await asyncio.get_running_loop().run_in_executor(self._writer, self._write, line)

    def _write(self, line: str) -> None:
        self._file.write(line)
        self._file.flush()

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self._writer.shutdown(wait=True)
        if self._owned:
            self._file.close()


class AnnotatedVideo:
    """The frames that were analysed, with their boxes, as an H.264 MP4 at the analysis rate.

    Build it in a thread (``await asyncio.to_thread(AnnotatedVideo, ...)``): it creates the file.
    """

    def __init__(self, path: Path, recent: RecentFrames, fps: float) -> None:
        self.path = path
        self.recent = recent
        self.fps = fps
        self._container: Any = None
        self._stream: Any = None
        self.frames = 0
        self._writer = ThreadPoolExecutor(
            1, thread_name_prefix="annotate"
        )  # one thread: frames stay in order
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        except OSError as exc:
            raise SinkError(f"cannot write {path}: {exc.strerror or exc}") from exc

    async def write(self, message: Any) -> None:
        frame = self.recent.nearest(message.received_ms)
        if frame is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._draw, frame, message)

    async def write_event(self, record: dict[str, Any]) -> None:
        """Gaps and the summary are logged only: a video has no place for them."""

    def _draw(self, frame: Any, message: Any) -> None:
        import av

        from inference.annotate import draw_detections
        from wire.messages import Detection

        image = frame.to_ndarray(format="bgr24")
        height, width = image.shape[:2]
        sx, sy = width / max(message.width, 1), height / max(message.height, 1)
        boxes = [
            Detection(
                label=d.label,
                class_id=d.class_id,
                score=d.score,
                box=(d.box[0] * sx, d.box[1] * sy, d.box[2] * sx, d.box[3] * sy),
            )
            for d in message.detections
        ]
        drawn = draw_detections(image, boxes)
        if self._container is None:
            self._container = av.open(str(self.path), mode="w")
            self._stream = self._container.add_stream("libx264", rate=max(1, round(self.fps)))
            self._stream.width, self._stream.height = width - width % 2, height - height % 2
            self._stream.pix_fmt = "yuv420p"
        out = av.VideoFrame.from_ndarray(drawn[: self._stream.height, : self._stream.width], format="bgr24")
        for packet in self._stream.encode(out):
            self._container.mux(packet)
        self.frames += 1

    async def close(self) -> None:
        """Flush the encoder and close the MP4, on the writer thread after the frames queued before."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._finish)
        finally:
            await asyncio.to_thread(self._writer.shutdown, wait=True)

    def _finish(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
