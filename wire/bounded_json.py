"""JSON from clients, parsed with a nesting limit, so that no input can reach a RecursionError.

``json.loads`` recurses once per ``[`` or ``{``: a body of a thousand brackets raises ``RecursionError``,
which is not a ``ValueError`` and so escapes every "not valid JSON" handler (a 500 on REST, a dropped
WebSocket). Every client message of Lookout is at most a few levels deep, so anything deeper than
``MAX_JSON_DEPTH`` is refused before ``json.loads`` sees it.

The depth is measured without recursion and at C speed (``re``): escapes are removed, then strings (which
are opaque to nesting), then everything but brackets; each pass of removing the innermost ``[]`` and
``{}`` pairs peels one level, so more than ``MAX_JSON_DEPTH`` passes means too deep. Brackets that do not
pair up make invalid JSON, which ``json.loads`` reports itself (its own recursion guard, caught here as a
last resort, answers for unclosed ones).
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in a client message (Lookout's own need 2 at most)."""

_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


class JsonTooDeepError(ValueError):
    """The JSON nests arrays or objects deeper than the limit."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(f"JSON nested deeper than {max_depth} levels of arrays and objects")
        self.max_depth = max_depth


def nesting_exceeds(text: str, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether valid JSON ``text`` nests arrays and objects more than ``max_depth`` deep.

    For invalid JSON the answer may be either; the parser refuses it anyway.
    """
    if text.count("[") + text.count("{") <= max_depth:
        return False  # the common case, decided without copying the text
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", _ESCAPE.sub("", text)))
    for _ in range(max_depth):
        brackets, peeled = _INNERMOST.subn("", brackets)
        if not peeled:
            return False
    return _INNERMOST.search(brackets) is not None


def loads(data: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses nesting deeper than ``max_depth`` with ``JsonTooDeepError``.

    Every failure is a ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError`` or
    ``JsonTooDeepError``); nothing else escapes for any input.
    """
    # Decoded as json.loads decodes bytes (UTF-8, -16 or -32, told apart by the first bytes).
    text = data.decode(json.detect_encoding(data), "surrogatepass") if isinstance(data, bytes) else data
    if nesting_exceeds(text, max_depth):
        raise JsonTooDeepError(max_depth)
    try:
        return json.loads(text)
    except RecursionError:  # unbalanced brackets ("[[[[..."): deep, and invalid too
        raise JsonTooDeepError(max_depth) from None
