"""The WebSocket protocol models: parsing order (JSON, version, type, fields) and the error codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from wire.bridge_rpc import BridgeReply, HangupRequest, OfferRequest, SessionEvent, SessionRecord
from wire.messages import Detection, Timings
from wire.signaling import (
    CLIENT_TYPES,
    MAX_SDP_CHARS,
    AnswerMessage,
    ByeMessage,
    DetectionsMessage,
    ErrorCode,
    ErrorMessage,
    HelloMessage,
    JoinedMessage,
    JoinMessage,
    ModelAvailability,
    ModelsMessage,
    OfferMessage,
    SignalingProtocolError,
    StatsMessage,
    parse_client_message,
    parse_server_message,
)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{", ErrorCode.BAD_JSON),
        ("[1, 2]", ErrorCode.BAD_JSON),
        ('"join"', ErrorCode.BAD_JSON),
        ('{"type": "join"}', ErrorCode.BAD_VERSION),
        ('{"v": 3, "type": "join"}', ErrorCode.BAD_VERSION),
        ('{"v": 0, "type": "join"}', ErrorCode.BAD_VERSION),
        ('{"v": true, "type": "join"}', ErrorCode.BAD_VERSION),
        ('{"v": "1", "type": "join"}', ErrorCode.BAD_VERSION),
        ('{"v": 2}', ErrorCode.UNKNOWN_TYPE),
        ('{"v": 2, "type": "teleport"}', ErrorCode.UNKNOWN_TYPE),
        ('{"v": 2, "type": "offer"}', ErrorCode.BAD_MESSAGE),
        ('{"v": 2, "type": "offer", "sdp": 5}', ErrorCode.BAD_MESSAGE),
        ('{"v": 2, "type": "join", "sample_fps": 0}', ErrorCode.BAD_MESSAGE),
        ('{"v": 2, "type": "join", "model": "../../etc/passwd"}', ErrorCode.BAD_MESSAGE),
        ('{"v": 2, "type": "join", "model": ".hidden"}', ErrorCode.BAD_MESSAGE),  # the common name rule
        ('{"v": 2, "type": "join", "model": "-rf"}', ErrorCode.BAD_MESSAGE),
        (json.dumps({"v": 2, "type": "offer", "sdp": "x" * (MAX_SDP_CHARS + 1)}), ErrorCode.TOO_LARGE),
        ("[" * 1000 + "]" * 1000, ErrorCode.BAD_JSON),  # json.loads alone raises RecursionError on these
        ('{"v": 2, "type": "ping", "x": ' + "[" * 100_000, ErrorCode.BAD_JSON),
        ('{"v": 2, "type": "join", "x": ' + "[" * 33 + "]" * 33 + "}", ErrorCode.BAD_JSON),
    ],
)
def test_bad_messages_get_a_specific_code(text: str, code: ErrorCode) -> None:
    with pytest.raises(SignalingProtocolError) as caught:
        parse_client_message(text)
    assert caught.value.code == code
    assert str(caught.value)  # a human explanation goes with every code


def test_good_messages_parse_into_their_type() -> None:
    join = parse_client_message('{"v":1,"type":"join","model":"yolox_nano","sample_fps":10}')
    assert isinstance(join, JoinMessage) and join.model == "yolox_nano" and join.sample_fps == 10
    bare = parse_client_message('{"v":1,"type":"join"}')
    assert isinstance(bare, JoinMessage) and bare.model is None and bare.sample_fps is None
    offer = parse_client_message('{"v":1,"type":"offer","sdp":"v=0","extra":"ignored"}')
    assert isinstance(offer, OfferMessage) and offer.sdp == "v=0"
    for kind in ("bye", "ping", "list_models"):
        assert parse_client_message(json.dumps({"v": 2, "type": kind})).type == kind


def test_version_1_client_messages_are_still_read() -> None:
    assert parse_client_message('{"v": 1, "type": "join", "model": "m"}').type == "join"


def test_version_1_detections_are_read_with_capture_ms() -> None:
    v1 = {
        "v": 1,
        "type": "detections",
        "session": "s",
        "seq": 1,
        "capture_ms": 5.0,
        "width": 4,
        "height": 3,
        "model": "m",
        "model_version": "1",
        "worker": "w",
        "detections": [],
        "timings": {},
        "latency_ms": 2.0,
    }
    message = parse_server_message(json.dumps(v1))
    assert isinstance(message, DetectionsMessage) and message.received_ms == 5.0
    assert "capture_ms" not in message.model_dump() and message.model_dump()["received_ms"] == 5.0


def test_server_messages_carry_version_and_type_and_round_trip() -> None:
    hello = HelloMessage(models=[], default_model="yolox_nano", sample_fps=10, max_sample_fps=30)
    data = json.loads(hello.model_dump_json())
    assert data["v"] == 2 and data["type"] == "hello"
    models = ModelsMessage(models=[], default_model="m", sample_fps=1, max_sample_fps=2)
    assert parse_server_message(models.model_dump_json()).type == "models"
    error = json.loads(ErrorMessage(code=ErrorCode.NO_WORKER, message="none").model_dump_json())
    assert error == {"v": 2, "type": "error", "code": "no_worker", "message": "none"}
    detections = DetectionsMessage(
        session="s",
        seq=1,
        received_ms=1.0,
        width=640,
        height=480,
        model="m",
        model_version="1",
        worker="w",
        detections=[{"label": "person", "class_id": 0, "score": 0.9, "box": (1, 2, 3, 4)}],  # type: ignore[list-item]
        timings={"inference_ms": 5.0},  # type: ignore[arg-type]
        latency_ms=20.0,
    )
    back = parse_server_message(detections.model_dump_json())
    assert isinstance(back, DetectionsMessage) and back.detections[0].box == (1, 2, 3, 4)


def _section(name: str) -> str:
    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    start = text.index(f"<!-- section: {name} ")
    end = text.find("\n## ", start)
    return text[start : end if end != -1 else len(text)]


@pytest.mark.parametrize(
    ("section", "models"),
    [
        (
            "signaling",
            [
                JoinMessage,
                OfferMessage,
                ByeMessage,
                HelloMessage,
                ModelsMessage,
                JoinedMessage,
                AnswerMessage,
                DetectionsMessage,
                StatsMessage,
                ErrorMessage,
                ModelAvailability,
                Detection,
                Timings,
            ],
        ),
        ("bridge-rpc", [OfferRequest, HangupRequest, BridgeReply, SessionEvent, SessionRecord]),
    ],
)
def test_protocol_doc_names_every_field(section: str, models: list[type[BaseModel]]) -> None:
    doc = _section(section)
    missing = [
        f"{m.__name__}.{f}" for m in models for f in m.model_fields if f"`{f}`" not in doc and f != "v"
    ]
    assert not missing, f"docs/protocol.md section {section} does not name: {missing}"
    assert "`v`" in doc or '"v": 2' in doc


def test_protocol_doc_names_every_error_code_and_message_type() -> None:
    doc = _section("signaling")
    assert not [code.value for code in ErrorCode if f"`{code.value}`" not in doc]
    for kind in (
        *CLIENT_TYPES,
        "hello",
        "models",
        "joined",
        "answer",
        "detections",
        "stats",
        "error",
        "pong",
    ):
        assert f"`{kind}`" in doc, kind
