"""Signaling's Redis client: one bounded pool, shared by everything in the replica, that heals itself.

The connection budget of a signaling replica is constant: at most ``redis_max_connections`` (default
16), however many sockets or sessions it serves. Inside that budget, three connections are held for
long reads: the shared result reader (``signaling.results_reader``), the shared pub/sub of session
events (``signaling.session_events``) and the REST API's result reader; offers waiting for a bridge's
answer (a BLPOP each) take at most half the pool (``offer_slots``); everything else is short commands.
The pool is a blocking one: a burst waits up to ``redis_pool_timeout_s`` for a free connection instead
of opening more or failing at once.

After a Redis restart every pooled socket is dead. redis-py reconnects a connection when a command on
it fails with a connection error (``RETRIES`` times, with a short backoff: redis-py's default backs off
for up to 10 s per attempt, so a command begun during the outage could sleep seconds past Redis's
return), and ``health_check_interval`` makes it PING a connection that sat idle before using it, so a
stale one is replaced rather than failing a request. Pacing across an outage is the callers' job
(``runtime.redis.Outage``).
``socket_timeout`` bounds every read, so a half-open socket (a Redis host that vanished) fails within
it; it is above the longest blocking command signaling sends (a bridge's answer, ``offer_timeout_s``).
redis-py's default (5 s) was below it: an offer to a bridge slow to answer (as after a Redis restart)
failed as "Redis unavailable" instead of ``bridge_timeout``.
Connections are named ``CLIENT_NAME`` so that ``CLIENT LIST`` shows them.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from runtime.redis_url import client_options
from wire.config import SignalingSettings

CLIENT_NAME = "lookout-signaling"
"""The name of every signaling connection in ``CLIENT LIST``."""

CONNECT_TIMEOUT_S = 2.0
"""Seconds to open a connection: a Redis that is down fails fast, so the caller's backoff takes over."""

HEALTH_CHECK_INTERVAL_S = 2.0
"""A pooled connection idle for longer than this is PINGed before it is used (and replaced if dead)."""

RETRIES = 2
"""Reconnect attempts within one command, ``RETRY_BACKOFF`` apart."""

RETRY_BACKOFF = ExponentialWithJitterBackoff(base=0.05, cap=0.5)

READ_MARGIN_S = 5.0
"""``socket_timeout`` is this much above ``offer_timeout_s``, the longest blocking command."""


def signaling_redis(settings: SignalingSettings) -> Redis:
    """The replica's one Redis client (its pool never opens more than ``redis_max_connections``)."""
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=settings.offer_timeout_s + READ_MARGIN_S,
        socket_keepalive=True,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        client_name=CLIENT_NAME,
        retry=Retry(RETRY_BACKOFF, RETRIES),
        **client_options(settings),
    )
    return Redis(connection_pool=pool)


def offer_slots(settings: SignalingSettings) -> int:
    """How many offers may wait for a bridge's answer at once (each holds a connection while it waits)."""
    return max(1, settings.redis_max_connections // 2)
