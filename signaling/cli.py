"""`lookout signaling`: serve the page, the signaling WebSocket, the REST API and /metrics."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pydantic import ValidationError

from wire.config import SignalingSettings, describe_invalid
from wire.errors import LookoutError

log = logging.getLogger(__name__)


class SignalingConfigError(LookoutError):
    """A signaling option is unusable."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's commands to `lookout`."""
    d = SignalingSettings()
    p = subparsers.add_parser(
        "signaling",
        help="serve the web page, WebSocket signaling (/ws), the REST API and /metrics",
        description="Run one signaling replica (aiohttp). Browsers load the page and negotiate WebRTC "
        "with a media bridge over /ws; results come back on the same socket. State lives in Redis, so "
        "several replicas can run behind one address. Every option also reads LOOKOUT_<OPTION>.",
    )
    p.add_argument("--host", default=d.host, help=f"address to bind (default: {d.host})")
    p.add_argument("--port", type=int, default=d.port, help=f"HTTP port (default: {d.port})")
    p.add_argument(
        "--redis-url", "--redis", dest="redis_url", default=d.redis_url, help=f"Redis server ({d.redis_url})"
    )
    p.add_argument(
        "--web-dir", type=Path, default=d.web_dir, help="folder served as the page (default: web/)"
    )
    p.add_argument("--api-key", default=d.api_key, help="require this key on /ws and /api (default: none)")
    p.add_argument(
        "--default-model", default=d.default_model, help=f"model when a client names none ({d.default_model})"
    )
    p.add_argument(
        "--sample-fps",
        type=float,
        default=d.sample_fps,
        help=f"frames per second sent to inference when a join names no rate (default: {d.sample_fps})",
    )
    p.add_argument(
        "--max-sample-fps",
        type=float,
        default=d.max_sample_fps,
        help=f"highest rate a join may ask for (default: {d.max_sample_fps})",
    )
    p.set_defaults(func=run_signaling)


def run_signaling(args: argparse.Namespace) -> int:
    from aiohttp import web

    from signaling.app import create_app

    try:
        settings = SignalingSettings(
            host=args.host,
            port=args.port,
            redis_url=args.redis_url,
            web_dir=args.web_dir,
            api_key=args.api_key,
            default_model=args.default_model,
            sample_fps=args.sample_fps,
            max_sample_fps=args.max_sample_fps,
        )
    except ValidationError as exc:
        raise SignalingConfigError(describe_invalid(exc)) from exc
    if not 0 < settings.port < 65536:
        raise SignalingConfigError(f"--port {settings.port} is not a TCP port (1-65535)")
    if settings.web_dir is not None and not settings.web_dir.is_dir():
        raise SignalingConfigError(f"--web-dir {settings.web_dir} is not a folder")
    if not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise SignalingConfigError(f"--redis-url must start with redis://, not {settings.redis_url!r}")
    app = create_app(settings)
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
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
        raise SignalingConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from exc
    return 0


def register_models(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's actions to `lookout models`."""
