"""What is wrong with a configuration, in one line: an invalid value, or a ``LOOKOUT_*`` name nobody reads.

A typo in ``.env`` would otherwise be silently ignored (the settings ignore extra names, because one
``.env`` serves every service); ``unknown_variables`` finds such names and the closest real one.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from wire.config.base import ENV_PREFIX

OTHER_VARIABLES = frozenset(
    {
        "LOOKOUT_CPU_IMAGE",  # docker-compose.yml's image tags, not read by Lookout itself
        "LOOKOUT_GPU_IMAGE",
        "LOOKOUT_TRAIN_KILL_AT",  # training's fault injection for the restart test
    }
)
"""``LOOKOUT_*`` names that are not settings fields but are legitimately set."""


def settings_classes() -> list[type[BaseSettings]]:
    """Every settings class (services and shared sections) of ``wire.config``."""
    import wire.config

    return [
        cls
        for cls in vars(wire.config).values()
        if inspect.isclass(cls) and issubclass(cls, BaseSettings) and cls.__module__.startswith("wire.config")
    ]


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def known_variables() -> frozenset[str]:
    """Every ``LOOKOUT_*`` name some Lookout process reads."""
    fields = {env_name(name) for cls in settings_classes() for name in cls.model_fields}
    return frozenset(fields | OTHER_VARIABLES)


def unknown_variables(names: Iterable[str]) -> list[tuple[str, str | None]]:
    """``(name, closest known name or None)`` for each ``LOOKOUT_*`` name in ``names`` nobody reads."""
    known = known_variables()
    unknown = sorted(
        {name for name in names if name.upper().startswith(ENV_PREFIX) and name.upper() not in known}
    )
    # Compare without the shared prefix, or every name would look close to every other.
    stems = sorted(name.removeprefix(ENV_PREFIX) for name in known)
    found: list[tuple[str, str | None]] = []
    for name in unknown:
        close = difflib.get_close_matches(name.upper().removeprefix(ENV_PREFIX), stems, n=1, cutoff=0.6)
        found.append((name, ENV_PREFIX + close[0] if close else None))
    return found


def _message(error: Mapping[str, Any]) -> str:
    text = str(error["msg"])
    return text.removeprefix("Value error, ").removeprefix("Assertion failed, ")


UNSHOWN_INPUTS = frozenset({"redis_url", "redis_password"})
"""Fields whose rejected value an error never repeats: a Redis URL may carry its password."""


def describe_invalid(
    exc: ValidationError,
    *,
    command: str = "",
    flag_of: Mapping[str, str] | None = None,
    given: Collection[str] = (),
) -> str:
    """One line: which setting (its flag if it was given as one, else its variable) and which rule it broke.

    ``flag_of`` maps field names to their flag (default ``--field-name``); ``given`` are the fields set
    on the command line. Any other field is named by its variable.
    """
    first = exc.errors()[0]
    what = f"invalid {command} setting" if command else "invalid setting"
    loc = [str(part) for part in first["loc"]]
    if not loc:  # a rule across several fields: the message names them
        return f"{what}s: {_message(first)}"
    field = loc[0]
    if field in given:
        name = (flag_of or {}).get(field, "--" + field.replace("_", "-"))
    else:  # from the environment, .env or a default
        name = env_name(field)
    got = first.get("input")
    shown = f" (got {got!r})" if isinstance(got, str | int | float) and first["type"] != "missing" else ""
    if field in UNSHOWN_INPUTS:
        shown = ""
    return f"{what} {name}: {_message(first)}{shown}"
