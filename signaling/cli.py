"""`lookout signaling`: serve the page, the signaling WebSocket, the REST API and /metrics."""

from __future__ import annotations

import argparse
import asyncio
import logging

from runtime import bootstrap
from runtime.settings_cli import add_settings_arguments, load_settings
from wire.config import SignalingSettings
from wire.errors import LookoutError

log = logging.getLogger(__name__)


class SignalingListenError(LookoutError):
    """The HTTP address cannot be bound (taken, or not this host's)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's commands to `lookout`."""
    parser = subparsers.add_parser(
        "signaling",
        help="serve the web page, WebSocket signaling (/ws), the REST API and /metrics",
        description="Run one signaling replica (aiohttp). Browsers load the page and negotiate WebRTC "
        "with a media bridge over /ws; results come back on the same socket. State lives in Redis, so "
        "several replicas can run behind one address. Every option also reads LOOKOUT_<OPTION>.",
    )
    add_settings_arguments(parser, SignalingSettings)
    parser.set_defaults(func=run_signaling)


def run_signaling(args: argparse.Namespace) -> int:
    from aiohttp import web

    from signaling.app import create_app
    from signaling.exposure import check_exposure

    settings = load_settings(SignalingSettings, args, command="signaling")
    warning = check_exposure(settings)  # refuses (exit 2) to serve beyond loopback with no key by accident
    if warning:
        log.warning("%s", warning)
    asyncio.run(_check_redis(settings))
    # With metrics_port, /metrics leaves the HTTP port for its own address (create_app drops the route).
    bootstrap.serve_metrics(settings.metrics_port, service="signaling", host=settings.metrics_host)
    app = create_app(settings)
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "", "::") else settings.host
    try:
        # run_app turns SIGINT and SIGTERM into a graceful shutdown and returns: exit 0.
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            shutdown_timeout=3.0,
            print=lambda _: print(
                f"lookout signaling: serving on http://{shown}:{settings.port}/", flush=True
            ),
            access_log=None,
        )
    except OSError as exc:
        raise SignalingListenError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from exc
    return 0


async def _check_redis(settings: SignalingSettings) -> None:
    redis = await bootstrap.connect_redis(settings, service="signaling")
    await redis.aclose()


def register_models(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's actions to `lookout models`."""
