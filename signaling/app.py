"""The signaling aiohttp application: the page, ``/ws``, ``/healthz``, the REST API and ``/metrics``."""

from __future__ import annotations

import asyncio
import logging
import weakref
from pathlib import Path

from aiohttp import WSCloseCode, web
from aiohttp.typedefs import Handler
from redis.asyncio import Redis
from redis.exceptions import RedisError

from signaling.apikey import api_key_ok
from signaling.appkeys import KEYS, LIVE, REDIS, SETTINGS
from signaling.hub import SessionHub
from signaling.monitor import setup_monitor
from signaling.redis_client import signaling_redis
from signaling.rest import setup_rest
from signaling.rest_errors import error_response
from signaling.ws import ws_handler
from wire.config import SignalingSettings
from wire.keys import Keys
from wire.rest import API_KEY_HEADER

log = logging.getLogger(__name__)

BUNDLED_WEB = Path(__file__).resolve().parents[1] / "web"
SOCKETS = web.AppKey("websockets", weakref.WeakSet[web.WebSocketResponse])
METRICS_PATH = "/metrics"


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


@web.middleware
async def guard_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """/metrics on the HTTP port: absent when ``metrics_port`` serves it elsewhere, behind the API key
    with ``metrics_require_key``. It names every model and how busy the cluster is."""
    if request.path == METRICS_PATH:
        settings = request.app[SETTINGS]
        if settings.metrics_port:
            where = f"{settings.metrics_host}:{settings.metrics_port}"
            raise web.HTTPNotFound(text=f"/metrics is served on {where}, not on this port")
        if settings.metrics_require_key and not api_key_ok(request, settings.api_key):
            return error_response(
                401, "unauthorized", f"missing or wrong API key: send it in the {API_KEY_HEADER} header"
            )
    return await handler(request)


def create_app(settings: SignalingSettings | None = None, redis: Redis | None = None) -> web.Application:
    """Build the app. ``redis`` defaults to signaling's bounded client on ``settings.redis_url``
    (``signaling.redis_client``, closed on cleanup)."""
    settings = settings or SignalingSettings()
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[guard_metrics])
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
