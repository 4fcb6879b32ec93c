"""Typed aiohttp application keys shared by the signaling modules (app, ws, rest, monitor)."""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from signaling.hub import SessionHub
from wire.config import SignalingSettings
from wire.keys import Keys

SETTINGS = web.AppKey("settings", SignalingSettings)
REDIS = web.AppKey("redis", Redis)
KEYS = web.AppKey("keys", Keys)
LIVE = web.AppKey("live_sessions", SessionHub)
"""The WebSocket sessions this replica serves (ended on shutdown) and their shared Redis readers."""
