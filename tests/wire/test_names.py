"""The model-name rule: one definition, the same answer from every schema and check that uses it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from wire.names import MODEL_NAME_PATTERN, is_model_name
from wire.rest import DetectJsonRequest
from wire.signaling import JoinMessage

VALID = ["yolox_nano", "yolov7-tiny", "m", "v1.2", "A" * 128, "0abc"]
INVALID = ["", ".hidden", "-rf", "_x", "a b", "a:b", "a/b", "a*", "ü", "A" * 129, "yolox\n", "\nyolox"]


@pytest.mark.parametrize("name", VALID)
def test_valid_names(name: str) -> None:
    assert is_model_name(name)
    assert JoinMessage(model=name).model == name
    assert DetectJsonRequest(image="", model=name).model == name


@pytest.mark.parametrize("name", INVALID)
def test_invalid_names_are_refused_by_the_check_and_by_every_schema(name: str) -> None:
    assert not is_model_name(name)
    with pytest.raises(ValidationError):
        JoinMessage(model=name)
    with pytest.raises(ValidationError):
        DetectJsonRequest(image="", model=name)


def test_the_schemas_carry_the_one_pattern() -> None:
    assert JoinMessage.model_json_schema()["properties"]["model"]["anyOf"][0]["pattern"] == MODEL_NAME_PATTERN
    assert DetectJsonRequest.model_json_schema()["properties"]["model"]["anyOf"][0]["pattern"] == (
        MODEL_NAME_PATTERN
    )
