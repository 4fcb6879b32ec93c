"""The one rule for model names, which cross every process boundary: frame stream keys
(``Keys.frames(name)``), registry keys and store folders, REST requests and WebSocket ``join``.

A name is 1-128 letters, digits, '.', '_' or '-' and starts with a letter or digit: no spaces, colons,
slashes or wildcards (it is part of Redis keys and paths), and no leading '.' or '-' (a hidden folder
in the registry store, an option on a command line). Every schema and check uses this one definition.
"""

from __future__ import annotations

import re

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""The rule as a regular expression, for schemas (pydantic ``pattern``, the OpenAPI document)."""

MODEL_NAME_RULE = "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
"""The rule in words, for error messages."""

_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)


def is_model_name(text: str) -> bool:
    """Whether ``text`` is a valid model name (the whole of it: a trailing newline is not allowed)."""
    return _MODEL_NAME.fullmatch(text) is not None
