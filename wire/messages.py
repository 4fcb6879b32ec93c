"""Messages on the Redis streams: frames in, results and drop records out.

A frame is a Redis stream entry with one field per attribute (the JPEG stays raw bytes, no base64).
Results and drop records share the per-session result stream; each is one entry whose ``kind`` field
says which it is and whose ``body`` field is the JSON of the model below. ``docs/protocol.md`` documents
every field, and ``tests/wire/test_protocol_doc.py`` keeps the two in step.
"""

from __future__ import annotations

import json
import math
import time
from enum import StrEnum
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from redis.typing import EncodableT, FieldT

from wire import PROTOCOL_VERSION

Fields = dict[bytes, bytes]
"""A Redis stream entry as redis-py returns it without ``decode_responses``."""


def now_ms() -> float:
    """Wall-clock time in milliseconds: the clock every timestamp on the wire uses."""
    return time.time() * 1000.0


class MalformedMessageError(ValueError):
    """A stream entry lacks a field, or a field does not parse."""


class DropReason(StrEnum):
    """Why a frame ended without a result. Every drop is counted under one of these."""

    DEADLINE = "deadline"
    """The frame's deadline passed before a worker could infer it."""
    SHUTDOWN = "shutdown"
    """The worker stopped before the frame could be inferred, and it was too late to hand it on."""
    UNDECODABLE = "undecodable"
    """The bytes are not a decodable JPEG/PNG image."""
    UNKNOWN_MODEL = "unknown_model"
    """The frame names a model that the worker reading it does not serve."""
    MALFORMED = "malformed"
    """The stream entry is missing fields or has fields that do not parse."""
    TOO_LARGE = "too_large"
    """The image bytes or dimensions exceed the configured limits."""
    SUPERSEDED = "superseded"
    """The media bridge replaced a waiting frame with a newer one (the latest frame wins)."""
    IN_FLIGHT_LIMIT = "in_flight_limit"
    """The session already had its maximum of frames in flight, so the bridge did not publish."""
    TIMEOUT = "timeout"
    """The client stopped waiting: no result or drop arrived within its timeout."""
    NO_WORKER = "no_worker"
    """No live worker serves the requested model."""
    INFERENCE_ERROR = "inference_error"
    """The model raised while running this frame."""
    TRIMMED = "trimmed"
    """The frame stream's MAXLEN trimmed the entry before a worker finished it (session unknown)."""
    REDIS_UNAVAILABLE = "redis_unavailable"
    """Redis was down when the bridge sampled the frame, so it could not be published (tallied later)."""


class DropSite(StrEnum):
    """Where a drop happened."""

    BRIDGE = "bridge"
    """The media bridge (superseded, in-flight limit, its own timeouts)."""
    WORKER = "worker"
    """An inference worker."""
    SIGNALING = "signaling"
    """Signaling's REST API (no worker, timeouts of REST requests); v1 recorded these as client."""
    CLIENT = "client"
    """A program using ``FrameClient`` directly (``lookout stream`` and the like)."""


class FrameMessage(BaseModel):
    """One frame waiting for inference, on ``Keys.frames(model)``."""

    model_config = ConfigDict(frozen=True)

    session: str = Field(
        min_length=1, max_length=128, description="Session or stream id; results go back to it."
    )
    seq: int = Field(ge=0, description="Frame sequence number within the session.")
    received_ms: float = Field(
        allow_inf_nan=False,
        description=(
            "Wall-clock time the frame entered Lookout, in ms since the epoch: when the bridge received the"
            " decoded video frame, when signaling received the REST request, or when a client submitted it."
            " Not the camera's capture time, which comes earlier by the uplink delay (v1: capture_ms)."
        ),
    )
    deadline_ms: float = Field(
        allow_inf_nan=False, description="Wall-clock time after which the frame is stale and is dropped."
    )
    model: str = Field(min_length=1, max_length=128, description="Model name; also picks the stream.")
    width: int = Field(ge=0, description="Image width in pixels, as encoded.")
    height: int = Field(ge=0, description="Image height in pixels, as encoded.")
    image: bytes = Field(
        repr=False,
        description="The encoded image: JPEG from bridges, JPEG or PNG from the REST API (v1: jpeg).",
    )
    submitted_ms: float = Field(
        default_factory=now_ms, allow_inf_nan=False, description="When the frame was put on the stream."
    )
    v: int = Field(default=PROTOCOL_VERSION, description="Protocol version.")

    def to_fields(self) -> dict[FieldT, EncodableT]:
        """The stream entry's fields, typed as redis-py's ``xadd`` takes them."""
        return {
            "v": self.v,
            "session": self.session,
            "seq": self.seq,
            "received_ms": repr(self.received_ms),
            "deadline_ms": repr(self.deadline_ms),
            "submitted_ms": repr(self.submitted_ms),
            "model": self.model,
            "width": self.width,
            "height": self.height,
            "image": self.image,
        }

    @classmethod
    def from_fields(cls, fields: Fields) -> FrameMessage:
        """Parse a stream entry; raises MalformedMessageError with a reason when it is not a frame."""
        try:
            fields = _upgrade_v1_frame(fields)
            text = {k.decode(): v for k, v in fields.items() if k != b"image"}
            if b"image" not in fields:
                raise MalformedMessageError("missing field 'image'")
            data: dict[str, object] = {k: v.decode() for k, v in text.items()}
            data["image"] = fields[b"image"]
            return cls.model_validate(data)
        except UnicodeDecodeError as exc:
            raise MalformedMessageError(f"field is not UTF-8: {exc}") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "entry"
            raise MalformedMessageError(f"{where}: {first['msg']}") from exc


V1_FRAME_FIELDS = {b"jpeg": b"image", b"capture_ms": b"received_ms"}
"""Protocol v1 names of frame fields that v2 renamed: v2 readers still read v1 frames."""


def _upgrade_v1_frame(fields: Fields) -> Fields:
    """A v1 frame entry with its fields renamed to v2 (a v2 entry is returned as it is)."""
    if not any(old in fields for old in V1_FRAME_FIELDS):
        return fields
    return {V1_FRAME_FIELDS.get(name, name): value for name, value in fields.items()}


def partial_ids(fields: Fields) -> tuple[str, int, float, str]:
    """Best-effort (session, seq, received_ms, model) of an entry that failed to parse, for its drop."""

    def text(name: str, default: str) -> str:
        raw = fields.get(name.encode())
        try:
            return raw.decode()[:128] if raw is not None else default
        except UnicodeDecodeError:
            return default

    def number(name: str) -> float:
        try:
            value = float(text(name, "0"))
        except ValueError:
            return 0.0
        return value if math.isfinite(value) else 0.0

    seq = number("seq")
    return (
        text("session", ""),
        int(seq) if 0 <= seq < 2**63 else 0,
        number("received_ms") or number("capture_ms"),
        text("model", ""),
    )


class Detection(BaseModel):
    """One detected object, in pixel coordinates of the frame as sent."""

    label: str = Field(description="Class name, COCO spelling for COCO models.")
    class_id: int = Field(ge=0, description="Class index in the model's label list.")
    score: float = Field(ge=0.0, le=1.0, description="Confidence (objectness x class probability).")
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in pixels.")


class Timings(BaseModel):
    """Where a frame's time went, in milliseconds."""

    queue_ms: float = Field(default=0.0, description="From submission to the worker reading it.")
    decode_ms: float = Field(default=0.0, description="Image decoding.")
    preprocess_ms: float = Field(default=0.0, description="Letterbox and tensor layout.")
    inference_ms: float = Field(default=0.0, description="The model run (per frame share of a batch).")
    postprocess_ms: float = Field(default=0.0, description="Decode of the head, NMS and box scaling.")


class ResultMessage(BaseModel):
    """Detections for one frame, on ``Keys.results(session)``."""

    kind: Literal["result"] = "result"
    session: str = Field(description="Session id of the frame.")
    seq: int = Field(description="Sequence number of the frame.")
    received_ms: float = Field(
        validation_alias=AliasChoices("received_ms", "capture_ms"),
        description="When the frame entered Lookout, copied from it (v1: capture_ms).",
    )
    model: str = Field(description="Model name.")
    model_version: str = Field(description="Version of the model that produced the detections.")
    worker: str = Field(description="Id of the worker that produced them.")
    width: int = Field(description="Width of the frame the boxes refer to.")
    height: int = Field(description="Height of the frame the boxes refer to.")
    detections: list[Detection] = Field(default_factory=list, description="What was found.")
    timings: Timings = Field(default_factory=Timings, description="Where the time went.")
    batch_size: int = Field(default=1, description="How many frames shared the inference call.")
    done_ms: float = Field(default_factory=now_ms, description="When the worker published the result.")
    v: int = Field(default=PROTOCOL_VERSION, description="Protocol version.")


class DropRecord(BaseModel):
    """A frame that ended without a result, with the reason. Also on ``Keys.results(session)``."""

    kind: Literal["drop"] = "drop"
    session: str = Field(description="Session id of the frame.")
    seq: int = Field(description="Sequence number of the frame.")
    received_ms: float = Field(
        default=0.0,
        validation_alias=AliasChoices("received_ms", "capture_ms"),
        description="When the frame entered Lookout, when known (v1: capture_ms).",
    )
    model: str = Field(default="", description="Model name, when known.")
    reason: DropReason = Field(description="Why the frame was dropped.")
    site: DropSite = Field(description="Where it was dropped.")
    worker: str = Field(default="", description="Worker id, for drops at a worker.")
    detail: str = Field(default="", description="Human-readable detail.")
    done_ms: float = Field(default_factory=now_ms, description="When the drop was recorded.")
    v: int = Field(default=PROTOCOL_VERSION, description="Protocol version.")


Outcome = ResultMessage | DropRecord
"""How every accepted frame ends: exactly one of these (told apart by their ``kind``)."""


def encode_outcome(outcome: ResultMessage | DropRecord) -> dict[str, str]:
    """Stream fields for a result or drop record."""
    return {"kind": outcome.kind, "body": outcome.model_dump_json()}


def decode_outcome(fields: Fields) -> ResultMessage | DropRecord:
    """Parse an entry of a result stream; raises MalformedMessageError."""
    kind = fields.get(b"kind")
    body = fields.get(b"body")
    if body is None:
        raise MalformedMessageError("missing field 'body'")
    try:
        if kind == b"result":
            return ResultMessage.model_validate_json(body)
        if kind == b"drop":
            return DropRecord.model_validate_json(body)
    except ValidationError as exc:
        raise MalformedMessageError(str(exc.errors()[0]["msg"])) from exc
    raise MalformedMessageError(f"unknown kind {kind!r}")


def dumps(data: object) -> str:
    """Compact JSON, the form used for every JSON value on the wire."""
    return json.dumps(data, separators=(",", ":"))
