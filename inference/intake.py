"""A worker's intake: what it makes of a stream entry, before it spends any work on the frame.

An entry becomes a frame to infer, a refusal with a drop record for its session (malformed, wrong
model, too large, already late), or, when not even its session is known, an unroutable drop that is
only counted. ``refusal`` is a pure function of the frame, the limits and the time, so every rule is
tested without Redis or a model. Decoding (on the cpu thread) can refuse a frame too: ``image_refusal``
says why, and ``decode_and_prepare_all`` turns accepted frames into model input.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from inference.errors import ImageError, ImageTooLargeError
from inference.images import Image, decode_image
from inference.scheduler import Job, Stage, overdue
from wire.messages import DropReason, Fields, FrameMessage, MalformedMessageError, partial_ids

if TYPE_CHECKING:
    from inference.detector import Prepared


@dataclass(frozen=True)
class Limits:
    """What a worker accepts: frames for its model, no larger than these."""

    model: str
    max_image_bytes: int
    max_image_side: int


@dataclass(frozen=True)
class Refused:
    """An entry refused at intake, with what its drop record says."""

    session: str
    seq: int
    received_ms: float
    reason: DropReason
    detail: str


@dataclass(frozen=True)
class Unroutable:
    """An entry whose session is unknown: its drop can only be counted, not told to anyone."""

    reason: DropReason
    detail: str = ""
    """Why, for the log; empty for trimmed entries (a normal consequence of MAXLEN)."""


def refusal(frame: FrameMessage, limits: Limits, now_ms: float) -> tuple[DropReason, str] | None:
    """Why a parsed frame cannot be inferred (the drop reason and detail), or None when it can."""
    if frame.model != limits.model:
        return (
            DropReason.UNKNOWN_MODEL,
            f"frame asks for model {frame.model!r}; this stream serves {limits.model}",
        )
    if len(frame.image) > limits.max_image_bytes:
        return DropReason.TOO_LARGE, f"image is {len(frame.image)} bytes, over {limits.max_image_bytes}"
    if max(frame.width, frame.height) > limits.max_image_side:
        size = f"{frame.width}x{frame.height}"
        return DropReason.TOO_LARGE, f"image is {size}, over {limits.max_image_side} px per side"
    late = overdue(frame, now_ms, Stage.READ)
    if late is not None:
        return DropReason.DEADLINE, late
    return None


def parse(fields: Fields, limits: Limits, now_ms: float) -> FrameMessage | Refused | Unroutable:
    """The frame an entry carries if it can be inferred; else how it is dropped."""
    if not fields:
        return Unroutable(DropReason.TRIMMED)
    try:
        frame = FrameMessage.from_fields(fields)
    except MalformedMessageError as exc:
        session, seq, received_ms, _model = partial_ids(fields)
        if not session:
            return Unroutable(DropReason.MALFORMED, str(exc))
        return Refused(session, seq, received_ms, DropReason.MALFORMED, str(exc))
    refused = refusal(frame, limits, now_ms)
    if refused is not None:
        return Refused(frame.session, frame.seq, frame.received_ms, *refused)
    return frame


def image_refusal(failure: Exception) -> tuple[DropReason, str]:
    """The drop reason and detail of a frame whose decoding or preparation raised ``failure``."""
    if isinstance(failure, ImageTooLargeError):
        return DropReason.TOO_LARGE, str(failure)
    if isinstance(failure, ImageError):
        return DropReason.UNDECODABLE, str(failure)
    return DropReason.INFERENCE_ERROR, repr(failure)


def decode_and_prepare_all(
    jobs: Sequence[Job], prepare: Callable[[Image], Prepared], prepared_by: object, limits: Limits
) -> list[Exception | None]:
    """Decode and prepare each job (on the cpu thread); each one's failure, or None where it worked."""
    failures: list[Exception | None] = []
    for job in jobs:
        try:
            _decode_and_prepare(job, prepare, prepared_by, limits)
            failures.append(None)
        except Exception as exc:
            failures.append(exc)
    return failures


def _decode_and_prepare(
    job: Job, prepare: Callable[[Image], Prepared], prepared_by: object, limits: Limits
) -> None:
    started = time.perf_counter()
    image = decode_image(job.frame.image, max_bytes=limits.max_image_bytes, max_side=limits.max_image_side)
    job.decode_ms = elapsed_ms(started)
    started = time.perf_counter()
    job.prepared, job.prepared_by = prepare(image), prepared_by
    job.preprocess_ms = elapsed_ms(started)
    job.image = image


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - started) * 1000.0
