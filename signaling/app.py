"""The signaling aiohttp application: the page, ``/ws``, ``/healthz``, the REST API and ``/metrics``."""

from __future__ import annotations

import asyncio
import logging
import weakref
from pathlib import Path

from aiohttp import WSCloseCode, web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from signaling.appkeys import KEYS, LIVE, REDIS, SETTINGS
from signaling.hub import SessionHub
from signaling.monitor import setup_monitor
from signaling.redis_client import signaling_redis
from signaling.rest import setup_rest
from signaling.ws import ws_handler
from wire.config import SignalingSettings
from wire.keys import Keys

log = logging.getLogger(__name__)

BUNDLED_WEB = Path(__file__).resolve().parents[1] / "web"
SOCKETS = web.AppKey("websockets", weakref.WeakSet[web.WebSocketResponse])


def web_dir(settings: SignalingSettings) -> Path:
    return settings.web_dir or BUNDLED_WEB


async def healthz(request: web.Request) -> web.Response:
    """200 while Redis answers; 503 with the reason otherwise."""
    try:
        await request.app[REDIS].ping()
    except (RedisError, OSError) as exc:
        return web.json_response({"ok": False, "redis": f"unavailable: {exc}"}, status=503)
    return web.json_response({"ok": True, "redis": "ok", "sessions": len(request.app[LIVE].sessions)})


async def index(request: web.Request) -> web.StreamResponse:
    page = web_dir(request.app[SETTINGS]) / "index.html"
    if not await asyncio.to_thread(page.is_file):
        raise web.HTTPNotFound(text=f"no page at {page}: the web/ folder is missing")
    return web.FileResponse(page)


async def tracked_ws(request: web.Request) -> web.StreamResponse:
    return await ws_handler(request, request.app[SOCKETS])


def create_app(settings: SignalingSettings | None = None, redis: Redis | None = None) -> web.Application:
    """Build the app. ``redis`` defaults to signaling's bounded client on ``settings.redis_url``
    (``signaling.redis_client``, closed on cleanup)."""
    settings = settings or SignalingSettings()
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[KEYS] = Keys(settings.key_prefix)
    owns_redis = redis is None
    app[REDIS] = redis if redis is not None else signaling_redis(settings)
    app[LIVE] = SessionHub(app[REDIS], app[KEYS], settings)
    app[SOCKETS] = weakref.WeakSet()

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/ws", tracked_ws)
    setup_rest(app)
    setup_monitor(app)
    app.router.add_get("/", index)
    static = web_dir(settings)
    if static.is_dir():
        app.router.add_static("/", static, show_index=False, follow_symlinks=False)
    else:
        log.warning("no web page folder at %s: only /ws, /healthz and the API are served", static)

    async def start_hub(app: web.Application) -> None:
        await app[LIVE].start()

    async def close_sockets(app: web.Application) -> None:
        # Open WebSockets would keep shutdown waiting; tell each client we are going away.
        await app[LIVE].stop()
        sockets = app[SOCKETS]
        for ws in list(sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

    async def close_redis(app: web.Application) -> None:
        if owns_redis:
            await app[REDIS].aclose()

    app.on_startup.append(start_hub)
    app.on_shutdown.append(close_sockets)
    app.on_cleanup.append(close_redis)
    return app
