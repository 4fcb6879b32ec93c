"""The optional API key: ``X-API-Key`` header (or ``?key=``), compared in constant time."""

from __future__ import annotations

import hmac

from aiohttp import web

from wire.rest import API_KEY_HEADER, API_KEY_QUERY


def api_key_ok(request: web.Request, expected: str) -> bool:
    """Whether the request carries the key; always true when no key is configured (``make run``)."""
    if not expected:
        return True
    given = request.headers.get(API_KEY_HEADER) or request.query.get(API_KEY_QUERY, "")
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))
