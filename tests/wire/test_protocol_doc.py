"""docs/protocol.md names every field and value of the wire messages, each in its own section.

To cover another section, add its models (or enums) to SECTION_MODELS / SECTION_ENUMS.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

import pytest
from pydantic import BaseModel

from wire.liveness import BridgeInfo, WorkerInfo
from wire.messages import Detection, DropReason, DropRecord, DropSite, FrameMessage, ResultMessage, Timings
from wire.registry import ModelVersion

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

SECTION_MODELS: dict[str, list[type[BaseModel]]] = {
    "frames": [FrameMessage],
    "results": [ResultMessage, DropRecord, Detection, Timings],
    "heartbeats": [WorkerInfo, BridgeInfo],
    "registry": [ModelVersion],
}
SECTION_ENUMS: dict[str, list[type[Enum]]] = {"results": [DropReason, DropSite]}


def sections() -> dict[str, str]:
    """Section name -> its text, split at the ``<!-- section: NAME (owner: ...) -->`` markers."""
    text = DOC.read_text()
    marks = list(re.finditer(r"<!-- section: ([\w-]+) \(owner: [^)]*\) -->", text))
    return {
        m.group(1): text[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        for i, m in enumerate(marks)
    }


def named(text: str) -> set[str]:
    """Every backticked word of a text (a field name counts wherever it is quoted as code)."""
    return set(re.findall(r"`([^`]+)`", text)) | {
        word for code in re.findall(r"`([^`]+)`", text) for word in re.findall(r"[\w.]+", code)
    }


@pytest.mark.parametrize("section", sorted(SECTION_MODELS))
def test_every_field_is_documented_in_its_section(section: str) -> None:
    documented = named(sections()[section])
    for model in SECTION_MODELS[section]:
        missing = sorted(set(model.model_fields) - documented)
        assert not missing, f"docs/protocol.md section {section!r} does not name {model.__name__}: {missing}"


@pytest.mark.parametrize("section", sorted(SECTION_ENUMS))
def test_every_enum_value_is_documented_in_its_section(section: str) -> None:
    documented = named(sections()[section])
    for enum in SECTION_ENUMS[section]:
        missing = sorted(str(member.value) for member in enum if str(member.value) not in documented)
        assert not missing, f"docs/protocol.md section {section!r} does not name {enum.__name__}: {missing}"


def test_the_backbone_sections_are_written() -> None:
    found = sections()
    for section in ("keys", "frames", "results", "heartbeats"):
        assert len(found[section].split()) > 50, f"section {section!r} is still a placeholder"


def test_the_check_notices_a_missing_field() -> None:
    # Guard against a check that passes on anything: a field name that is nowhere in the doc.
    assert "surely_not_a_documented_field" not in named(DOC.read_text())
