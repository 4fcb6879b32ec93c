"""Reading compose/docker-compose.yml the way Compose does: YAML, then ${VAR:-default} interpolation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}; $$ is a literal $.
VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def raw() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def variables() -> dict[str, str | None]:
    """Every variable docker-compose.yml interpolates, with its default (None when it has none)."""
    found: dict[str, str | None] = {}
    for match in VARIABLE.finditer(COMPOSE_FILE.read_text()):
        if match.group("name"):
            op = match.group("op") or ""
            found.setdefault(match.group("name"), match.group("arg") if "-" in op else None)
    return found


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name = match.group("name")
        if name is None:
            return "$"
        op, arg = match.group("op") or "", match.group("arg") or ""
        current = env.get(name)
        if op.startswith(":") and not current:
            current = None
        if current is None:
            if op.endswith("?"):
                raise ValueError(f"${{{name}}} is required: {arg}")
            return arg if op.endswith("-") else ""
        return current

    return VARIABLE.sub(one, value)


REQUIRED = {"LOOKOUT_API_KEY": "compose-test-key", "REDIS_PASSWORD": "compose-test-password"}
"""What an operator must set in .env: compose refuses to start without it (``${NAME:?...}``)."""


def resolved(env: Mapping[str, str] | None = None, *, required: bool = True) -> dict[str, Any]:
    """The compose file with every variable filled from ``env`` (default: none set, so the defaults),
    plus the REQUIRED ones unless ``required`` is False."""
    result = interpolate(raw(), {**(REQUIRED if required else {}), **(env or {})})
    assert isinstance(result, dict)
    return result


def services_of(profile: str, config: dict[str, Any] | None = None) -> set[str]:
    services = (config or resolved())["services"]
    return {name for name, service in services.items() if profile in service.get("profiles", [])}
