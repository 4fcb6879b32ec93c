"""The one definition of "Redis is down": what redis-py raises while the server is unreachable.

It lives in ``wire``, not in ``runtime.redis`` beside the ``Outage`` backoff that usually handles it,
because ``wire``'s own client (``wire.client``) rides out outages too, and ``wire`` is the lowest layer:
it imports nothing of the project but itself, while ``runtime`` and the services import ``wire``.
Everything that catches a Redis outage catches exactly this tuple.
"""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

REDIS_DOWN_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
"""Unreachable, timed out or restarting (``BusyLoadingError`` is a ConnectionError); OSError covers the
socket errors redis-py lets through. Not ``RedisError``: a command the server refuses is a bug to see."""
