"""Each command's flags and ``--help``, generated from its settings class: the fields are the one source.

A field ``batch`` becomes ``--batch`` (or the flags its ``json_schema_extra`` names), its description
and constraints become the help line, and ``LOOKOUT_BATCH`` stays its variable. Flags carry strings
and pydantic converts and checks them, so a bad flag and a bad variable fail the same way: one line
naming the setting and the rule it broke (``SettingsError``, exit code 2).
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import re
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, TypeVar, get_origin

import annotated_types
from dotenv import dotenv_values
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from wire.config import describe_invalid, unknown_variables
from wire.config.errors import env_name
from wire.errors import LookoutError

log = logging.getLogger("lookout.settings")

S = TypeVar("S", bound=BaseSettings)

GLOBAL_FIELDS = frozenset({"log_level"})
"""Fields that are flags of ``lookout`` itself (``lookout --log-level``), not of each command."""


class SettingsError(LookoutError):
    """A flag or ``LOOKOUT_*`` variable has a value its setting does not allow."""


def flags_of(name: str, info: FieldInfo) -> list[str]:
    """The command-line flags of one field: the ones it names, else ``--field-name``."""
    extra = info.json_schema_extra
    named = extra.get("flags") if isinstance(extra, dict) else None
    if isinstance(named, list) and named:
        return [str(flag) for flag in named]
    return ["--" + name.replace("_", "-")]


def _is_list(info: FieldInfo) -> bool:
    return get_origin(info.annotation) is list


def _is_bool(info: FieldInfo) -> bool:
    return info.annotation is bool


def rule_of(info: FieldInfo) -> str:
    """The field's constraints in words: ``1..65535``, ``> 0``, ``> 0, <= 240``, ``multiple of 32``."""
    bounds: dict[str, Any] = {}
    parts: list[str] = []
    for item in info.metadata:
        for kind in ("ge", "gt", "le", "lt"):
            if isinstance(item, getattr(annotated_types, kind.capitalize())):
                bounds[kind] = getattr(item, kind)
        if isinstance(item, annotated_types.MultipleOf):
            parts.append(f"multiple of {item.multiple_of}")
        if isinstance(item, annotated_types.MinLen) and item.min_length:
            parts.append("not empty")
    if "ge" in bounds and "le" in bounds:
        parts.insert(0, f"{bounds['ge']}..{bounds['le']}")
    else:
        words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
        parts[:0] = [f"{words[kind]} {bounds[kind]}" for kind in ("ge", "gt", "le", "lt") if kind in bounds]
    return ", ".join(parts)


def _shown_default(info: FieldInfo) -> str:
    default = info.get_default(call_default_factory=True)
    if default in (None, "", []):
        return "none"
    if isinstance(default, bool):
        return "true" if default else "false"
    return str(default)


def help_of(name: str, info: FieldInfo) -> str:
    rule = rule_of(info)
    text = (info.description or "").removesuffix(".")
    # argparse formats help with %: a literal percent sign must be doubled.
    text = text.replace("%", "%%")
    shown = _shown_default(info).replace("%", "%%")
    return f"{text}{f' [{rule}]' if rule else ''} (default: ${env_name(name)} or {shown})"


def _sections(cls: type[BaseSettings]) -> Iterator[tuple[type[BaseSettings], list[str]]]:
    """(declaring class, its fields) from the most specific class to the most shared one."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        if not (inspect.isclass(klass) and issubclass(klass, BaseSettings)) or klass is BaseSettings:
            continue
        own = [
            name for name in inspect.get_annotations(klass) if name in cls.model_fields and name not in seen
        ]
        seen.update(own)
        if own:
            yield klass, own


def _title(klass: type[BaseSettings]) -> str:
    name = klass.__name__.removesuffix("Settings").removesuffix("Section")
    return " ".join(re.findall("[A-Z][a-z]*", name)).lower() + " settings"


def add_settings_arguments(
    parser: argparse.ArgumentParser,
    cls: type[BaseSettings],
    *,
    exclude: Collection[str] = GLOBAL_FIELDS,
) -> None:
    """A flag for every field of ``cls`` (but ``exclude``), grouped by the section that declares it.

    Every flag defaults to "not given" so that the variables and built-in defaults stay in charge.
    """
    for klass, names in _sections(cls):
        doc = (inspect.getdoc(klass) or "").split("\n\n")[0].replace("\n", " ").replace("``", "`")
        doc = doc.replace("%", "%%")
        group = parser.add_argument_group(_title(klass), doc or None)
        for name in names:
            if name in exclude:
                continue
            info = cls.model_fields[name]
            options: dict[str, Any] = {
                "dest": name,
                "default": argparse.SUPPRESS,
                "help": help_of(name, info),
                "metavar": flags_of(name, info)[0].lstrip("-").upper().replace("-", "_"),
            }
            if _is_list(info):
                options["action"] = "append"
            elif _is_bool(info):
                # `--publish` alone means true; `--watch-registry false` still turns one off.
                options.update(nargs="?", const="true", metavar="true|false")
            group.add_argument(*flags_of(name, info), **options)


def flag_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Field name -> its first flag, for error messages."""
    return {name: flags_of(name, info)[0] for name, info in cls.model_fields.items()}


def given_fields(cls: type[BaseSettings], args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` set on the command line, as given (strings; lists for repeated flags).

    ``None`` is "not given" (``lookout --log-level`` defaults to it).
    """
    return {name: value for name in cls.model_fields if (value := getattr(args, name, None)) is not None}


def load_settings(cls: type[S], args: argparse.Namespace, *, command: str) -> S:
    """``cls`` from the ``LOOKOUT_*`` variables (and ``.env``), overridden by the flags in ``args``.

    Names nobody reads are warned about first (a misspelled variable is otherwise silently ignored).
    Raises ``SettingsError`` with one line naming the setting and the broken rule.
    """
    warn_unknown_variables()
    given = given_fields(cls, args)
    try:
        return cls(**given)
    except ValidationError as exc:
        line = describe_invalid(exc, command=command, flag_of=flag_names(cls), given=given)
        raise SettingsError(line) from None


def _dotenv_names(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [name for name in dotenv_values(path) if name]


_warned: set[str] = set()


def warn_unknown_variables(environ: dict[str, str] | None = None, dotenv: Path = Path(".env")) -> list[str]:
    """Log one warning per ``LOOKOUT_*`` name (environment or ``.env``) that no setting reads.

    Returns the lines warned about (each name once per process).
    """
    names = [*(os.environ if environ is None else environ), *_dotenv_names(dotenv)]
    lines = []
    for name, closest in unknown_variables(names):
        if name in _warned:
            continue
        _warned.add(name)
        hint = f"; did you mean {closest}?" if closest else ""
        where = "the environment" if name in (os.environ if environ is None else environ) else str(dotenv)
        line = f"unknown setting {name} (in {where}) is ignored{hint}"
        log.warning("%s", line)
        lines.append(line)
    return lines


def settings_argv(settings: BaseSettings, fields: Collection[str]) -> list[str]:
    """Flags that reproduce ``fields`` of ``settings`` (for a child process that parses the same flags)."""
    cls = type(settings)
    argv: list[str] = []
    for name in fields:
        info = cls.model_fields[name]
        value = getattr(settings, name)
        flag = flags_of(name, info)[0]
        if value is None:
            continue
        if isinstance(value, list):
            for item in value:
                argv.append(f"{flag}={item}")
        elif isinstance(value, bool):
            argv.append(f"{flag}={'true' if value else 'false'}")
        else:
            argv.append(f"{flag}={value}")
    return argv
