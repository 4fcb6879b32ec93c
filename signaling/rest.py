"""The REST detection API (filled in by the REST issue)."""

from __future__ import annotations

from aiohttp import web


def setup_rest(app: web.Application) -> None:
    """Add /api/v1/detect and /api/v1/openapi.json to the signaling app."""
