"""Helpers of the worker tests: real video frames as JPEGs, and reading back how frames ended."""

from __future__ import annotations

import asyncio
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import cast

import cv2
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from wire.keys import Keys
from wire.messages import DropRecord, Fields, FrameMessage, ResultMessage, decode_outcome, now_ms

Jpeg = tuple[bytes, int, int]
"""Encoded frame, width, height."""

StreamFields = dict[FieldT, EncodableT]
"""Stream fields as redis-py's XADD takes them."""


@lru_cache(maxsize=4)
def video_jpegs(path: Path, count: int, quality: int = 80) -> tuple[Jpeg, ...]:
    """The first ``count`` frames of a video, JPEG-encoded as a camera bridge would send them."""
    capture = cv2.VideoCapture(str(path))
    frames: list[Jpeg] = []
    try:
        while len(frames) < count:
            ok, image = capture.read()
            if not ok:
                break
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            assert ok
            frames.append((encoded.tobytes(), image.shape[1], image.shape[0]))
    finally:
        capture.release()
    assert len(frames) == count, f"{path} has fewer than {count} frames"
    return tuple(frames)


async def outcomes_of(redis: Redis, keys: Keys, session: str) -> list[ResultMessage | DropRecord]:
    """Every outcome on a session's result stream, oldest first (tests keep the stream untrimmed)."""
    entries = cast(list[tuple[bytes, Fields]], await redis.xrange(keys.results(session)))
    return [decode_outcome(fields) for _id, fields in entries]


def ended_twice(outcomes: list[ResultMessage | DropRecord]) -> dict[int, int]:
    """Seqs that ended more than once, with how often: must always be empty."""
    return {seq: n for seq, n in Counter(o.seq for o in outcomes).items() if n > 1}


async def wait_for_outcomes(
    redis: Redis, keys: Keys, session: str, count: int, timeout: float
) -> list[ResultMessage | DropRecord]:
    """Poll a session's result stream until ``count`` distinct frames ended; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + timeout
    while True:
        found = await outcomes_of(redis, keys, session)
        if len({o.seq for o in found}) >= count:
            return found
        if loop.time() > ends:
            raise AssertionError(
                f"only {len({o.seq for o in found})} of {count} frames ended in {timeout:.0f} s"
            )
        await asyncio.sleep(0.1)


def frame_fields(
    jpeg: bytes,
    *,
    session: str,
    seq: int,
    model: str = "yolox_nano",
    width: int = 480,
    height: int = 360,
    deadline_in_ms: float = 60_000,
) -> StreamFields:
    """Stream fields of a well-formed frame, for tests that XADD by hand."""
    captured = now_ms()
    frame = FrameMessage(
        session=session,
        seq=seq,
        received_ms=captured,
        deadline_ms=captured + deadline_in_ms,
        model=model,
        width=width,
        height=height,
        image=jpeg,
    )
    return frame.to_fields()
