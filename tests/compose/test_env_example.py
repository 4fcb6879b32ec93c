"""compose/.env.example lists every LOOKOUT_* setting (with its real default) and every compose variable."""

from __future__ import annotations

import re
from typing import Any

from tests.compose.composefile import COMPOSE_FILE, ENV_EXAMPLE, HOST_NETWORK_FILE, REDIS_TLS_FILE, variables
from wire.config.errors import settings_classes

LINE = re.compile(r"^#?\s*(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def documented() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = LINE.match(line.strip())
        if match:
            assert match.group("name") not in found, f"{match.group('name')} is listed twice"
            found[match.group("name")] = match.group("value").strip()
    return found


def settings_fields() -> dict[str, Any]:
    """LOOKOUT_<FIELD> -> default, over every settings class (and shared section) of wire.config."""
    fields: dict[str, Any] = {}
    for cls in settings_classes():
        assert cls.model_config.get("env_prefix") == "LOOKOUT_", cls
        for name, info in cls.model_fields.items():
            fields[f"LOOKOUT_{name.upper()}"] = info.default
    return fields


def as_env(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_every_setting_is_documented_with_its_default() -> None:
    listed = documented()
    fields = settings_fields()
    assert len(fields) > 50
    missing = sorted(set(fields) - set(listed))
    assert not missing, f"add these to compose/.env.example: {missing}"
    wrong = {
        name: (listed[name], as_env(default))
        for name, default in fields.items()
        if listed[name] != as_env(default)
    }
    assert not wrong, f"documented default != wire.config default: {wrong}"


def test_every_setting_has_a_description_above_it() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        match = LINE.match(line.strip())
        if match and match.group("name").startswith("LOOKOUT_"):
            above = lines[index - 1].strip()
            assert above.startswith("#") and not LINE.match(above) and len(above) > 10, match.group("name")


def all_variables() -> dict[str, str | None]:
    return {**variables(REDIS_TLS_FILE), **variables(HOST_NETWORK_FILE), **variables(COMPOSE_FILE)}


def test_every_compose_variable_is_documented() -> None:
    listed = documented()
    missing = sorted(set(all_variables()) - set(listed))
    assert not missing, f"docker-compose.yml uses these, .env.example does not list them: {missing}"
    assert "COMPOSE_PROFILES" in listed


def test_compose_only_defaults_match_the_compose_file() -> None:
    listed = documented()
    settings = settings_fields()
    for name, default in all_variables().items():
        if name not in settings and default is not None:
            assert listed[name] == default, f"{name}: .env.example says {listed[name]!r}, compose {default!r}"


def test_nothing_is_set_by_default() -> None:
    # Every line is commented: copying the example changes nothing until a line is uncommented.
    for line in ENV_EXAMPLE.read_text().splitlines():
        assert not line.strip() or line.lstrip().startswith("#"), line
