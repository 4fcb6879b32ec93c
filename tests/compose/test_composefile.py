"""tests/compose/composefile.py reads compose files as Compose v2 does: interpolation and merging."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compose.composefile import combined, substitute, variables


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "1"}, "1"),
        ("${A}", {}, ""),
        ("$A/$$B", {"A": "1"}, "1/$B"),
        ("${A:-x}", {"A": ""}, "x"),
        ("${A-x}", {"A": ""}, ""),
        ("${A:-x}", {}, "x"),
        ("${A:+y}", {"A": "1"}, "y"),
        ("${A:+y}", {}, ""),
        # Nested defaults, as Compose v2 resolves them.
        ("${URL:-redis://:${PW}@redis:6379/0}", {"PW": "s3cret"}, "redis://:s3cret@redis:6379/0"),
        ("${URL:-redis://:${PW}@redis:6379/0}", {"URL": "rediss://h:6380/0", "PW": "x"}, "rediss://h:6380/0"),
        ("${A:-${B:-${C:-deep}}}", {}, "deep"),
    ],
)
def test_substitute(text: str, env: dict[str, str], expected: str) -> None:
    assert substitute(text, env) == expected


def test_required_variables_fail_with_their_message_and_only_when_used() -> None:
    with pytest.raises(ValueError, match=r"\$\{PW\} is required: set PW"):
        substitute("${PW:?set PW}", {})
    assert substitute("${URL:-${PW:?set PW}}", {"URL": "redis://h"}) == "redis://h"
    with pytest.raises(ValueError, match="unclosed"):
        substitute("${A:-x", {})


def test_variables_include_the_nested_ones(tmp_path: Path) -> None:
    file = tmp_path / "c.yml"
    file.write_text("x: ${URL:-redis://:${PW}@redis:${PORT:-6379}/0}\ny: $${NOT_A_VARIABLE}\n")
    assert variables(file) == {"URL": "redis://:${PW}@redis:${PORT:-6379}/0", "PW": None, "PORT": "6379"}


def test_override_files_merge_as_compose_merges_them(tmp_path: Path) -> None:
    base, override = tmp_path / "a.yml", tmp_path / "b.yml"
    base.write_text(
        "services:\n  s:\n    image: i\n    command: [a, b]\n    ports: ['1:1']\n    volumes: ['v:/v']\n"
        "    environment: {A: '1', B: '2'}\n    healthcheck: {test: [CMD, x], retries: 3}\n"
    )
    override.write_text(
        "services:\n  s:\n    command: [c]\n    ports: !reset []\n    volumes: ['w:/w']\n"
        "    environment: {B: '3'}\n    healthcheck: {test: [CMD, y]}\n    network_mode: host\n"
    )
    (service,) = combined([base, override])["services"].values()
    assert service == {
        "image": "i",
        "command": ["c"],  # sequences are replaced ...
        "volumes": ["v:/v", "w:/w"],  # ... but for volumes, ports and the like, which are merged
        "environment": {"A": "1", "B": "3"},
        "healthcheck": {"test": ["CMD", "y"], "retries": 3},
        "network_mode": "host",
    }
