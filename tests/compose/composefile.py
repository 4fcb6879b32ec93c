"""Reading compose/docker-compose.yml the way Compose does: YAML (anchors, merge keys), override files
merged on top, then ${VAR} interpolation, nested defaults included (``${A:-x${B}y}``, as Compose v2)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
HOST_NETWORK_FILE = COMPOSE_DIR / "docker-compose.host-network.yml"
REDIS_TLS_FILE = COMPOSE_DIR / "docker-compose.redis-tls.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class Reset:
    """Compose's ``!reset`` tag: the key is removed from what the files before defined."""


class _Loader(yaml.SafeLoader):
    pass


class _Override:
    """Compose's ``!override`` tag: the value replaces what the files before defined, never merged."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> _Override:
    if isinstance(node, yaml.SequenceNode):
        return _Override(loader.construct_sequence(node, deep=True))
    if isinstance(node, yaml.MappingNode):
        return _Override(loader.construct_mapping(node, deep=True))
    return _Override(loader.construct_scalar(node))  # type: ignore[arg-type]


_Loader.add_constructor("!reset", lambda loader, node: Reset())
_Loader.add_constructor("!override", _override)


def load(path: Path) -> dict[str, Any]:
    loaded = yaml.load(path.read_text(), Loader=_Loader)  # a SafeLoader with two more tags
    assert isinstance(loaded, dict), f"{path} is not a compose file"
    return loaded


def raw() -> dict[str, Any]:
    return load(COMPOSE_FILE)


# Sequences Compose merges (by value) instead of replacing; every other sequence is replaced.
MERGED_SEQUENCES = {"ports", "volumes", "env_file", "expose", "dns", "cap_add", "cap_drop", "devices"}


def merge(base: Any, override: Any, key: str = "") -> Any:
    """``override`` on top of ``base`` as ``docker compose -f base -f override`` merges them."""
    if isinstance(override, _Override):
        return override.value
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            if isinstance(value, Reset):
                merged.pop(name, None)
            elif name in merged:
                merged[name] = merge(merged[name], value, name)
            else:
                merged[name] = value.value if isinstance(value, _Override) else value
        return merged
    if isinstance(base, list) and isinstance(override, list) and key in MERGED_SEQUENCES:
        return base + [item for item in override if item not in base]
    return override


def combined(files: list[Path]) -> dict[str, Any]:
    """The files merged in order, like ``docker compose -f A -f B``."""
    result: dict[str, Any] = {}
    for path in files:
        result = merge(result, load(path))
    return result


def _variable_end(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``${`` at ``start``, across nested ``${...}``."""
    depth, index = 0, start
    while index < len(text):
        if text.startswith("$$", index):
            index += 2
            continue
        if text.startswith("${", index):
            depth += 1
            index += 2
            continue
        if text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    raise ValueError(f"unclosed ${{ in {text!r}")


def _split(body: str) -> tuple[str, str, str]:
    name = NAME.match(body)
    if not name:
        raise ValueError(f"invalid variable ${{{body}}}")
    rest = body[name.end() :]
    for op in OPERATORS:
        if rest.startswith(op):
            return name.group(), op, rest[len(op) :]
    if rest:
        raise ValueError(f"invalid variable ${{{body}}}")
    return name.group(), "", ""


def substitute(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one string: $$, $NAME, ${NAME}, ${NAME:-default} (default nested),
    ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alternative}, ${NAME+alternative}."""
    out: list[str] = []
    index = 0
    while index < len(text):
        if text.startswith("$$", index):
            out.append("$")
            index += 2
        elif text.startswith("${", index):
            end = _variable_end(text, index)
            name, op, arg = _split(text[index + 2 : end])
            current = env.get(name)
            unset = current is None or (op.startswith(":") and current == "")
            if op.endswith("-"):
                out.append(substitute(arg, env) if unset else str(current))
            elif op.endswith("?"):
                if unset:
                    raise ValueError(f"${{{name}}} is required: {substitute(arg, env)}")
                out.append(str(current))
            elif op.endswith("+"):
                out.append("" if unset else substitute(arg, env))
            else:
                out.append(current or "")
            index = end + 1
        elif text[index] == "$" and (bare := NAME.match(text, index + 1)):
            out.append(env.get(bare.group(), ""))
            index = bare.end()
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def _walk_variables(text: str, found: dict[str, str | None]) -> None:
    index = 0
    while (index := text.find("${", index)) >= 0:
        if index > 0 and text[index - 1] == "$":
            index += 2
            continue
        end = _variable_end(text, index)
        name, op, arg = _split(text[index + 2 : end])
        found.setdefault(name, arg if op.endswith("-") else None)
        _walk_variables(arg, found)
        index = end + 1


def variables(path: Path = COMPOSE_FILE) -> dict[str, str | None]:
    """Every variable a compose file interpolates, with its default (None when it has none)."""
    found: dict[str, str | None] = {}
    _walk_variables(path.read_text(), found)
    return found


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value
    return substitute(value, env)


REQUIRED = {"LOOKOUT_API_KEY": "compose-test-key", "REDIS_PASSWORD": "compose-test-password"}
"""What an operator must set in .env: compose refuses to start without it (``${NAME:?...}``)."""


def resolved(
    env: Mapping[str, str] | None = None, *, required: bool = True, overrides: list[Path] | None = None
) -> dict[str, Any]:
    """The compose file (with ``overrides`` merged on top) with every variable filled from ``env``
    (default: none set, so the defaults), plus the REQUIRED ones unless ``required`` is False."""
    document = combined([COMPOSE_FILE, *(overrides or [])])
    result = interpolate(document, {**(REQUIRED if required else {}), **(env or {})})
    assert isinstance(result, dict)
    return result


def services_of(profile: str, config: dict[str, Any] | None = None) -> set[str]:
    services = (config or resolved())["services"]
    return {name for name, service in services.items() if profile in service.get("profiles", [])}
