"""What every service does before its real work: logging, stop signals, Redis, metrics, its id.

``lookout signaling``, ``bridge``, ``worker`` and ``train`` start the same way, and each failure here
is one line and an exit code (``LookoutError``) rather than a traceback: 2 for a configuration the
process cannot use (``lookout up`` then stops the stack), 1 for what may pass (Redis not up yet;
``lookout up`` and compose restart it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic_settings import BaseSettings

from runtime.redis_url import client_options, endpoint, redact_url, tls_refusal, transport_mismatch
from wire.config.base import SETTINGS_CONFIG
from wire.errors import LookoutError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from wire.config import CommonSettings, RegistrySection
    from wire.influx import InfluxPush

log = logging.getLogger("lookout")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class RedisUnreachableError(LookoutError):
    """Redis does not answer at start. Exit 1: it may be starting still, so a supervisor retries."""

    exit_code = 1


class RedisAuthError(LookoutError):
    """Redis refused this service's password, or wants one it was not given: a configuration to fix."""


class RedisTransportError(LookoutError):
    """TLS on one side only (a ``redis://`` URL on a TLS port, ``rediss://`` on a plain one), or a
    certificate the other side refuses: a configuration to fix."""


class MetricsPortError(LookoutError):
    """The /metrics port cannot be served (taken, or not allowed): a configuration to change."""


class _LogLevel(BaseSettings):
    # Only the level: logging starts before a command reads (and checks) its own settings.
    model_config = SETTINGS_CONFIG

    log_level: str = Field(default="INFO")


def restore_sigint() -> None:
    """Take SIGINT back where it was inherited as ignored.

    A script's background job inherits SIGINT as ignored, and Python then installs no handler for it:
    Ctrl-C and ``kill -INT`` would do nothing. Every command stops on SIGINT.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def configure_logging(level: str | None = None) -> None:
    """Log to stderr at ``level``, else ``$LOOKOUT_LOG_LEVEL``, else INFO (an unknown name: INFO)."""
    chosen = (level or _LogLevel().log_level).upper()
    logging.basicConfig(level=getattr(logging, chosen, logging.INFO), format=LOG_FORMAT, stream=sys.stderr)


@contextlib.contextmanager
def stop_requested() -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs; the handlers go when it ends.

    Call it inside a running event loop. The handlers are set even where SIGINT was inherited as
    ignored (a script's background job), so both signals always stop the command.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, _requested, stop, sig)
    try:
        yield stop
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def _requested(stop: asyncio.Event, sig: signal.Signals) -> None:
    if not stop.is_set():
        log.info("received %s: stopping", sig.name)
    stop.set()


async def connect_redis(settings: RegistrySection, *, service: str, **options: Any) -> Redis:
    """A client of ``settings.redis_url`` that has answered a PING; else one line and an exit code.

    The password and TLS files of ``settings`` apply (``runtime.redis_url.client_options``); ``options``
    go to ``Redis.from_url`` too (a service's own timeouts and retries). A refused password is
    ``RedisAuthError`` (exit 2: retrying cannot help), and so is TLS on one side only or a refused
    certificate (``RedisTransportError``); a Redis that does not answer is ``RedisUnreachableError``.
    No message shows the password.
    """
    from redis.asyncio import Redis
    from redis.exceptions import AuthenticationError, RedisError

    url = settings.redis_url
    redis = Redis.from_url(url, **{"socket_connect_timeout": 5, **client_options(settings), **options})
    try:
        await redis.ping()
    except AuthenticationError:
        await redis.aclose()
        given = bool(redis.connection_pool.connection_kwargs.get("password"))
        problem = "refused the password" if given else "needs a password (none was given)"
        raise RedisAuthError(f"{service}: Redis at {endpoint(url)} {problem}") from None
    except (RedisError, OSError) as exc:
        await redis.aclose()
        certificate = settings.redis_cert_file is not None
        transport = tls_refusal(exc) or await transport_mismatch(url, client_certificate=certificate)
        if transport is not None:
            raise RedisTransportError(f"{service}: Redis at {endpoint(url)} {transport}") from None
        raise RedisUnreachableError(f"{service}: cannot reach Redis at {redact_url(url)}: {exc}") from None
    return redis


def serve_metrics(port: int, *, service: str, host: str = "0.0.0.0") -> None:
    """Serve Prometheus ``/metrics`` on ``host:port`` (port 0: off) from a daemon thread; one line if it
    cannot."""
    if not port:
        return
    from wire.metrics import start_metrics_server

    try:
        start_metrics_server(port, host)
    except OSError as exc:
        raise MetricsPortError(
            f"{service}: cannot serve /metrics on port {port}: {exc.strerror or exc}"
        ) from None
    log.info("serving Prometheus metrics on %s:%d/metrics", host, port)


def start_push(settings: CommonSettings, *, service: str) -> InfluxPush:
    """Push the metrics to InfluxDB when ``LOOKOUT_INFLUX_URL`` is set; else a handle that does nothing."""
    from wire.influx import start_influx_push

    return start_influx_push(settings, service=service)


def service_id(given: str, *, with_pid: bool = False) -> str:
    """``given``, or a fresh id: the host name (plus the pid) and a random suffix, unique per process."""
    if given:
        return given
    middle = f"-{os.getpid()}" if with_pid else ""
    return f"{socket.gethostname()}{middle}-{uuid.uuid4().hex[:6]}"
