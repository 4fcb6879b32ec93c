"""wire.bounded_json: the depth limit holds for every shape of nesting, and nothing but ValueError escapes."""

from __future__ import annotations

import json
import random

import pytest

from wire.bounded_json import MAX_JSON_DEPTH, JsonTooDeepError, loads, nesting_exceeds


def nested(depth: int, kind: str = "[") -> str:
    if kind == "[":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("kind", ["[", "{"])
def test_the_limit_is_exact(kind: str) -> None:
    assert loads(nested(MAX_JSON_DEPTH, kind)) is not None
    with pytest.raises(JsonTooDeepError, match=f"deeper than {MAX_JSON_DEPTH}"):
        loads(nested(MAX_JSON_DEPTH + 1, kind))


def test_depth_is_measured_like_json_does_for_random_documents() -> None:
    rng = random.Random(12)

    def leaf() -> object:
        return rng.choice([1, "x[{", 'q"]}\\', None, [], {}, [[]]])

    def build(depth: int) -> object:
        # One branch goes on down; its siblings are shallow, so that the size stays linear in the depth.
        if depth == 0:
            return leaf()
        children = [leaf() for _ in range(rng.randint(0, 2))]
        children.insert(rng.randint(0, len(children)), build(depth - 1))
        if rng.random() < 0.5:
            return children
        return {f"k{i}]": child for i, child in enumerate(children)}

    def depth_of(value: object) -> int:
        if isinstance(value, list):
            return 1 + max((depth_of(v) for v in value), default=0)
        if isinstance(value, dict):
            return 1 + max((depth_of(v) for v in value.values()), default=0)
        return 0

    for _ in range(300):
        value = build(rng.randint(1, 45))
        text = json.dumps(value)
        assert nesting_exceeds(text, 20) == (depth_of(value) > 20), text


def test_brackets_inside_strings_and_escapes_do_not_count() -> None:
    text = json.dumps({"s": "[" * 1000 + '\\"{{{' + "]" * 3})
    assert loads(text) == json.loads(text)
    assert loads(json.dumps(["\\", ["\\\\"]])) == ["\\", ["\\\\"]]


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"a":' * 100_000, "[" * 5000 + "]" * 4000, '["' * 5000, "]" * 10_000 + "[" * 10_000],
)
def test_deep_or_unbalanced_input_is_a_value_error_never_a_recursion_error(text: str) -> None:
    with pytest.raises(ValueError):  # any ValueError is the point: not a RecursionError
        loads(text)


def test_bytes_are_decoded_as_json_loads_decodes_them() -> None:
    assert loads('{"a": "é"}'.encode("utf-16")) == {"a": "é"}
    with pytest.raises(UnicodeDecodeError):
        loads(b'{"a": "\xff\xfe\xfd"}')
    with pytest.raises(JsonTooDeepError):
        loads(nested(100).encode())


def test_shallow_documents_parse_exactly_as_json_loads() -> None:
    for text in ['{"v": 2, "type": "join"}', "[]", "1", '"x"', "null", '{"a": [1, {"b": [2]}]}']:
        assert loads(text) == json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        loads("{not json")
