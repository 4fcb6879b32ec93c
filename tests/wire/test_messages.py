"""Frame, result and drop messages: round trips, and a clear MalformedMessageError for anything else."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.messages import (
    Detection,
    DropReason,
    DropRecord,
    DropSite,
    FrameMessage,
    MalformedMessageError,
    ResultMessage,
    Timings,
    decode_outcome,
    encode_outcome,
    partial_ids,
)


def _fields(frame: FrameMessage) -> dict[bytes, bytes]:
    """What redis-py hands back for an entry written with ``frame.to_fields()``."""

    def raw(value: object) -> bytes:
        return value if isinstance(value, bytes) else str(value).encode()

    return {raw(k): raw(v) for k, v in frame.to_fields().items()}


def _frame(**overrides: object) -> FrameMessage:
    values: dict[str, object] = {
        "session": "s1",
        "seq": 7,
        "received_ms": 1_700_000_000_123.25,
        "deadline_ms": 1_700_000_001_123.25,
        "model": "yolox_nano",
        "width": 640,
        "height": 480,
        "image": b"\xff\xd8\xff\x00binary\x00\xff\xd9",
    }
    values.update(overrides)
    return FrameMessage.model_validate(values)


def test_a_version_1_frame_is_read_under_its_v2_names() -> None:
    frame = _frame()
    fields = _fields(frame)
    v1 = {
        b"jpeg" if k == b"image" else b"capture_ms" if k == b"received_ms" else k: v
        for k, v in fields.items()
    }
    v1[b"v"] = b"1"
    read = FrameMessage.from_fields(v1)
    assert (read.image, read.received_ms, read.v) == (frame.image, frame.received_ms, 1)
    assert partial_ids({b"session": b"s", b"seq": b"2", b"capture_ms": b"7.5"})[:3] == ("s", 2, 7.5)


def test_version_1_outcomes_are_read_with_capture_ms() -> None:
    drop = DropRecord(session="s", seq=1, received_ms=3.0, reason=DropReason.TIMEOUT, site=DropSite.CLIENT)
    body = drop.model_dump_json().replace('"received_ms"', '"capture_ms"').replace('"v":2', '"v":1')
    read = decode_outcome({b"kind": b"drop", b"body": body.encode()})
    assert isinstance(read, DropRecord) and read.received_ms == 3.0 and read.v == 1


def test_frames_are_written_under_v2_names() -> None:
    fields = _frame().to_fields()
    assert {"image", "received_ms"} <= set(map(str, fields)) and not {"jpeg", "capture_ms"} & set(
        map(str, fields)
    )
    assert fields["v"] == 2


def test_frame_round_trip_keeps_every_field_and_raw_bytes() -> None:
    frame = _frame()
    assert FrameMessage.from_fields(_fields(frame)) == frame


@given(
    session=st.text(min_size=1, max_size=128).filter(lambda s: "\x00" not in s),
    seq=st.integers(min_value=0, max_value=2**62),
    capture=st.floats(min_value=0, max_value=4e12, allow_nan=False),
    jpeg=st.binary(max_size=256),
)
def test_frame_round_trip_property(session: str, seq: int, capture: float, jpeg: bytes) -> None:
    frame = _frame(session=session, seq=seq, received_ms=capture, deadline_ms=capture + 1000, image=jpeg)
    assert FrameMessage.from_fields(_fields(frame)) == frame


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda f: f.pop(b"image"), "image"),
        (lambda f: f.pop(b"session"), "session"),
        (lambda f: f.__setitem__(b"seq", b"seven"), "seq"),
        (lambda f: f.__setitem__(b"seq", b"-1"), "seq"),
        (lambda f: f.__setitem__(b"deadline_ms", b"nan"), "deadline_ms"),
        (lambda f: f.__setitem__(b"received_ms", b"inf"), "received_ms"),
        (lambda f: f.__setitem__(b"session", b""), "session"),
        (lambda f: f.__setitem__(b"session", b"\xff\xfe"), "UTF-8"),
        (lambda f: f.__setitem__(b"model", b"m" * 200), "model"),
    ],
)
def test_malformed_frames_say_which_field(change, field: str) -> None:  # type: ignore[no-untyped-def]
    fields = _fields(_frame())
    change(fields)
    with pytest.raises(MalformedMessageError, match=field):
        FrameMessage.from_fields(fields)


def test_partial_ids_of_garbage_never_raise() -> None:
    assert partial_ids({}) == ("", 0, 0.0, "")
    garbage = {b"session": b"abc", b"seq": b"nan", b"received_ms": b"inf", b"model": b"\xff"}
    assert partial_ids(garbage) == ("abc", 0, 0.0, "")
    assert partial_ids({b"seq": b"1e300"}) == ("", 0, 0.0, "")
    assert partial_ids({b"session": b"s" * 500, b"seq": b"12"})[:2] == ("s" * 128, 12)


def test_outcomes_round_trip_through_stream_fields() -> None:
    result = ResultMessage(
        session="s",
        seq=3,
        received_ms=1.5,
        model="m",
        model_version="v1",
        worker="w",
        width=10,
        height=20,
        detections=[Detection(label="person", class_id=0, score=0.9, box=(1, 2, 3, 4))],
        timings=Timings(queue_ms=1, decode_ms=2, preprocess_ms=3, inference_ms=4, postprocess_ms=5),
    )
    drop = DropRecord(session="s", seq=4, reason=DropReason.DEADLINE, site=DropSite.WORKER, detail="late")
    for outcome in (result, drop):
        fields = {k.encode(): v.encode() for k, v in encode_outcome(outcome).items()}
        assert decode_outcome(fields) == outcome


@pytest.mark.parametrize(
    "fields",
    [{}, {b"kind": b"result"}, {b"kind": b"other", b"body": b"{}"}, {b"kind": b"drop", b"body": b"{nope"}],
)
def test_malformed_outcomes_raise(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(MalformedMessageError):
        decode_outcome(fields)


def test_drop_reasons_are_stable_strings() -> None:
    assert DropReason("deadline") is DropReason.DEADLINE
    assert all(reason.value == reason.value.lower() for reason in DropReason)
    assert not math.isnan(_frame().submitted_ms)
