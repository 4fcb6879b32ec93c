"""The WebSocket signaling protocol between a browser (or any client) and ``/ws``.

Every message is one JSON text frame with ``"v": 1`` and a ``type`` that picks its schema (a pydantic
discriminated union). ``parse_client_message`` turns raw text into a typed message or raises
``SignalingProtocolError`` carrying the error ``code`` the server sends back, so that malformed input
always gets an ``error`` message and never a dropped socket. ``docs/protocol.md`` (section signaling)
documents every message.

Flow: the server sends ``hello`` on connect; the client sends ``join`` (gets ``joined``), then ``offer``
with a complete (non-trickle) SDP (gets ``answer``); from then on the server pushes ``detections`` and
``stats`` until either side sends ``bye``. A client may ``join`` again after ``bye`` or after an
``error`` with code ``bridge_lost``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from wire import PROTOCOL_VERSION, SUPPORTED_VERSIONS, bounded_json
from wire.messages import Detection, Timings
from wire.names import MODEL_NAME_PATTERN

MAX_SDP_CHARS = 64 * 1024
"""Longest SDP accepted in an offer (a complete offer with all candidates is a few KB)."""


class ErrorCode(StrEnum):
    """Machine-readable ``code`` of an ``error`` message."""

    BAD_JSON = "bad_json"
    """The message is not valid JSON text, not a JSON object, or nested too deep (``MAX_JSON_DEPTH``)."""
    BAD_MESSAGE = "bad_message"
    """A field is missing, has the wrong type or is out of range."""
    UNKNOWN_TYPE = "unknown_type"
    """``type`` is missing or names no message of this protocol."""
    BAD_VERSION = "bad_version"
    """``v`` is missing or is not a version this server speaks."""
    BAD_STATE = "bad_state"
    """The message does not fit now (an offer before join, a second join while a session is live)."""
    TOO_LARGE = "too_large"
    """The message (or its SDP) exceeds the size limit."""
    RATE_LIMITED = "rate_limited"
    """Too many joins on this socket, or from this client address, within a minute."""
    TOO_MANY_SESSIONS = "too_many_sessions"
    """This client address, or this server, holds as many live sessions as it may; end one or retry later."""
    NO_OFFER = "no_offer"
    """No offer was accepted within ``join_offer_timeout_s`` of the join; the session has ended."""
    NO_BRIDGE = "no_bridge"
    """No live media bridge has room for a session."""
    NO_WORKER = "no_worker"
    """No live inference worker serves the requested model."""
    UNKNOWN_MODEL = "unknown_model"
    """The model is not known: no live worker serves it, it is not in the registry nor the default."""
    BAD_SDP = "bad_sdp"
    """The bridge could not use the offer's SDP."""
    BRIDGE_TIMEOUT = "bridge_timeout"
    """The bridge did not answer in time."""
    BRIDGE_LOST = "bridge_lost"
    """The session's bridge stopped (its heartbeat expired); join again to get another one."""
    UNAUTHORIZED = "unauthorized"
    """An API key is required and was missing or wrong."""
    INTERNAL = "internal"
    """Something failed on the server; the message says what."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = Field(default=PROTOCOL_VERSION, description="Protocol version (PROTOCOL_VERSION).")


# --- client -> server ----------------------------------------------------------------------------


class JoinMessage(_Message):
    """Ask for a session. Both fields are optional; the server fills in its defaults."""

    type: Literal["join"] = "join"
    model: str | None = Field(default=None, pattern=MODEL_NAME_PATTERN, description="Model name.")
    sample_fps: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="Frames per second to send to inference (capped by the server).",
    )


class OfferMessage(_Message):
    """The client's complete SDP offer (ICE gathering finished, all candidates inside)."""

    type: Literal["offer"] = "offer"
    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS, description="SDP offer text.")


class ByeMessage(_Message):
    """End the session (either direction). The socket stays open; the client may join again."""

    type: Literal["bye"] = "bye"
    reason: str = Field(default="", max_length=512, description="Why, for logs.")


class PingMessage(_Message):
    """Keep-alive; answered with ``pong``."""

    type: Literal["ping"] = "ping"


class ListModelsMessage(_Message):
    """Ask for the current ``models`` list (same shape as ``hello``)."""

    type: Literal["list_models"] = "list_models"


ClientMessage = Annotated[
    JoinMessage | OfferMessage | ByeMessage | PingMessage | ListModelsMessage, Field(discriminator="type")
]
CLIENT_TYPES = ("join", "offer", "bye", "ping", "list_models")


# --- server -> client ----------------------------------------------------------------------------


class ModelAvailability(BaseModel):
    """One model and how many live workers serve it."""

    name: str = Field(description="Model name.")
    workers: int = Field(description="Live workers serving it.")


class _Offer(_Message):
    """What the server offers: the fields ``hello`` and ``models`` share."""

    models: list[ModelAvailability] = Field(description="Models with live workers.")
    default_model: str = Field(description="Model used when join names none.")
    sample_fps: float = Field(description="Default sample rate.")
    max_sample_fps: float = Field(description="Highest sample rate a join may ask for.")


class HelloMessage(_Offer):
    """Sent on connect: what the server offers."""

    type: Literal["hello"] = "hello"


class ModelsMessage(_Offer):
    """Reply to ``list_models``: same fields as ``hello``."""

    type: Literal["models"] = "models"


class JoinedMessage(_Message):
    """A session was created on a bridge; send the offer next."""

    type: Literal["joined"] = "joined"
    session: str = Field(description="Server-generated session id.")
    bridge: str = Field(description="Id of the media bridge that will receive the video.")
    model: str = Field(description="Model the session's frames go to.")
    sample_fps: float = Field(description="Frames per second sampled for inference.")


class AnswerMessage(_Message):
    """The bridge's complete SDP answer."""

    type: Literal["answer"] = "answer"
    sdp: str = Field(description="SDP answer text.")


class DetectionsMessage(_Message):
    """Detections for one sampled frame. Boxes are in that frame's pixels (width x height)."""

    type: Literal["detections"] = "detections"
    session: str = Field(description="Session id.")
    seq: int = Field(description="Frame sequence number within the session.")
    received_ms: float = Field(
        validation_alias=AliasChoices("received_ms", "capture_ms"),
        description="Wall clock (ms since the epoch) when the bridge received the frame (v1: capture_ms).",
    )
    width: int = Field(description="Width of the sampled frame.")
    height: int = Field(description="Height of the sampled frame.")
    model: str = Field(description="Model name.")
    model_version: str = Field(description="Model version that produced the boxes.")
    worker: str = Field(description="Worker id.")
    detections: list[Detection] = Field(description="label, class_id, score, box [x1, y1, x2, y2].")
    timings: Timings = Field(description="Where the worker's time went (ms).")
    latency_ms: float = Field(description="Server's now minus received_ms when it sent this message.")


class StatsMessage(_Message):
    """Per-session counters: sent about once a second and soon after drops."""

    type: Literal["stats"] = "stats"
    inferred: int = Field(description="Frames of this session that ended as a result.")
    dropped: int = Field(description="Frames of this session that ended as a drop.")
    by_reason: dict[str, int] = Field(description="Drops by DropReason value.")


class ErrorMessage(_Message):
    """Something the client sent or asked for failed. The socket stays open unless said otherwise."""

    type: Literal["error"] = "error"
    code: ErrorCode = Field(description="Machine-readable code.")
    message: str = Field(description="Human-readable explanation.")


class PongMessage(_Message):
    """Reply to ``ping``."""

    type: Literal["pong"] = "pong"


ServerMessage = Annotated[
    HelloMessage
    | ModelsMessage
    | JoinedMessage
    | AnswerMessage
    | DetectionsMessage
    | StatsMessage
    | ErrorMessage
    | ByeMessage
    | PongMessage,
    Field(discriminator="type"),
]

_client_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
_server_adapter: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)


class SignalingProtocolError(ValueError):
    """A client message that cannot be used; ``code`` and ``str()`` become the error message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if p not in CLIENT_TYPES) or "message"
    return f"{where}: {first['msg']}"


def parse_client_message(text: str | bytes) -> ClientMessage:
    """Parse one client message, checking JSON, version, type and fields in that order."""
    try:
        data: Any = bounded_json.loads(text)
    except bounded_json.JsonTooDeepError as exc:
        raise SignalingProtocolError(ErrorCode.BAD_JSON, str(exc)) from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SignalingProtocolError(ErrorCode.BAD_JSON, f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SignalingProtocolError(ErrorCode.BAD_JSON, "a message must be a JSON object")
    version = data.get("v")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:  # True == 1 in Python: not a version
        speaks = " or ".join(f"v={v}" for v in SUPPORTED_VERSIONS)
        raise SignalingProtocolError(
            ErrorCode.BAD_VERSION, f"unsupported protocol version {version!r}; this server speaks {speaks}"
        )
    kind = data.get("type")
    if kind not in CLIENT_TYPES:
        raise SignalingProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown message type {kind!r}; expected one of {', '.join(CLIENT_TYPES)}",
        )
    if kind == "offer" and isinstance(data.get("sdp"), str) and len(data["sdp"]) > MAX_SDP_CHARS:
        raise SignalingProtocolError(ErrorCode.TOO_LARGE, f"sdp is longer than {MAX_SDP_CHARS} characters")
    try:
        return _client_adapter.validate_python(data)
    except ValidationError as exc:
        raise SignalingProtocolError(ErrorCode.BAD_MESSAGE, _describe(exc)) from exc


def parse_server_message(text: str | bytes) -> ServerMessage:
    """Parse one server message (for clients in Python: tests, ``lookout stream``); raises ValidationError."""
    return _server_adapter.validate_json(text)
