"""Intake: the pure refusal rules, how an entry parses into a frame or a drop, and decode failures."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from inference.detector import Prepared
from inference.errors import ImageTooLargeError, UndecodableImageError
from inference.images import Image
from inference.intake import (
    Limits,
    Refused,
    Unroutable,
    decode_and_prepare_all,
    image_refusal,
    parse,
    refusal,
)
from inference.scheduler import Job
from wire.messages import DropReason, Fields, FrameMessage

NOW = 1_000_000.0
LIMITS = Limits(model="m", max_image_bytes=1000, max_image_side=640)


def frame(**overrides: Any) -> FrameMessage:
    values: dict[str, Any] = {
        "session": "s",
        "seq": 3,
        "received_ms": NOW - 10,
        "deadline_ms": NOW + 100,
        "model": "m",
        "width": 640,
        "height": 480,
        "image": b"x" * 1000,
    }
    return FrameMessage(**{**values, **overrides})


def test_a_frame_within_every_limit_is_accepted() -> None:
    assert refusal(frame(), LIMITS, NOW) is None
    assert refusal(frame(deadline_ms=NOW), LIMITS, NOW) is None  # at its deadline: not late yet


@pytest.mark.parametrize(
    ("overrides", "reason", "detail"),
    [
        ({"model": "other"}, DropReason.UNKNOWN_MODEL, "frame asks for model 'other'; this stream serves m"),
        ({"image": b"x" * 1001}, DropReason.TOO_LARGE, "image is 1001 bytes, over 1000"),
        ({"width": 641}, DropReason.TOO_LARGE, "image is 641x480, over 640 px per side"),
        ({"height": 700}, DropReason.TOO_LARGE, "image is 640x700, over 640 px per side"),
        ({"deadline_ms": NOW - 42}, DropReason.DEADLINE, "read 42 ms after its deadline"),
    ],
)
def test_each_refusal_rule_gives_its_reason_and_detail(
    overrides: dict[str, Any], reason: DropReason, detail: str
) -> None:
    assert refusal(frame(**overrides), LIMITS, NOW) == (reason, detail)


def test_the_wrong_model_is_refused_before_size_and_size_before_lateness() -> None:
    everything_wrong = frame(model="other", image=b"x" * 5000, deadline_ms=NOW - 1)
    assert refusal(everything_wrong, LIMITS, NOW) is not None
    assert refusal(everything_wrong, LIMITS, NOW)[0] is DropReason.UNKNOWN_MODEL  # type: ignore[index]
    too_large_and_late = frame(image=b"x" * 5000, deadline_ms=NOW - 1)
    assert refusal(too_large_and_late, LIMITS, NOW)[0] is DropReason.TOO_LARGE  # type: ignore[index]


def test_the_time_is_an_argument() -> None:
    late_later = frame(deadline_ms=NOW + 100)
    assert refusal(late_later, LIMITS, NOW + 100) is None
    assert refusal(late_later, LIMITS, NOW + 101) == (DropReason.DEADLINE, "read 1 ms after its deadline")


def fields_of(message: FrameMessage) -> Fields:
    """A frame's stream entry as Redis hands it back: bytes for every name and value."""
    return {
        name.encode(): value if isinstance(value, bytes) else str(value).encode()
        for name, value in message.to_fields().items()
        if isinstance(name, str)
    }


def test_an_entry_parses_into_its_frame_a_refusal_or_an_unroutable_drop() -> None:
    good = frame()
    assert parse(fields_of(good), LIMITS, NOW) == good
    assert parse({}, LIMITS, NOW) == Unroutable(DropReason.TRIMMED)
    nameless = parse({b"garbage": b"\x00"}, LIMITS, NOW)
    assert isinstance(nameless, Unroutable) and nameless.reason is DropReason.MALFORMED and nameless.detail
    broken = parse({b"session": b"s", b"seq": b"7", b"received_ms": b"12.5"}, LIMITS, NOW)
    assert isinstance(broken, Refused)
    assert (broken.session, broken.seq, broken.received_ms) == ("s", 7, 12.5)
    assert broken.reason is DropReason.MALFORMED and "image" in broken.detail
    late = parse(fields_of(frame(deadline_ms=NOW - 5)), LIMITS, NOW)
    assert late == Refused("s", 3, NOW - 10, DropReason.DEADLINE, "read 5 ms after its deadline")
    wrong = parse(fields_of(frame(model="other")), LIMITS, NOW)
    assert isinstance(wrong, Refused) and wrong.reason is DropReason.UNKNOWN_MODEL


def test_decode_failures_map_to_drop_reasons() -> None:
    assert image_refusal(ImageTooLargeError("big")) == (DropReason.TOO_LARGE, "big")
    assert image_refusal(UndecodableImageError("junk")) == (DropReason.UNDECODABLE, "junk")
    assert image_refusal(ZeroDivisionError("bug")) == (DropReason.INFERENCE_ERROR, "ZeroDivisionError('bug')")


def test_decode_and_prepare_all_prepares_the_good_frames_and_reports_the_bad() -> None:
    ok, encoded = cv2.imencode(".png", np.full((48, 64, 3), 128, np.uint8))
    assert ok
    limits = Limits(model="m", max_image_bytes=100_000, max_image_side=640)
    good = Job(entry_id="1-0", frame=frame(image=encoded.tobytes(), width=64, height=48), read_ms=NOW)
    bad = Job(entry_id="2-0", frame=frame(image=b"not an image"), read_ms=NOW)
    marker = object()

    def prepare(image: Image) -> Prepared:
        return Prepared(tensor=np.zeros((3, 8, 8), np.float32), scale=1.0, original=image.shape[:2])

    failures = decode_and_prepare_all([good, bad], prepare, marker, limits)
    assert failures[0] is None and isinstance(failures[1], UndecodableImageError)
    assert good.image is not None and good.image.shape == (48, 64, 3)
    assert good.prepared is not None and good.prepared.original == (48, 64) and good.prepared_by is marker
    assert good.decode_ms >= 0 and good.preprocess_ms >= 0
    assert bad.prepared is None and bad.image is None
