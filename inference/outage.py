"""Riding out a Redis outage: log it once when it starts and once when it ends, and pace the retries."""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

REDIS_DOWN_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
"""What redis-py raises while the server is unreachable or restarting (BusyLoadingError included)."""


class Outage:
    """The Redis outage state of one loop (reading, publishing, heartbeats, claims)."""

    def __init__(self, what: str, log: logging.Logger, *, max_delay_s: float = 1.0) -> None:
        self.what = what
        self.log = log
        self.max_delay_s = max_delay_s
        self.since: float | None = None
        self._delay_s = 0.1

    @property
    def down(self) -> bool:
        return self.since is not None

    def note(self, exc: BaseException) -> None:
        """Record a failure; logs only the first of an outage."""
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning(
                "redis unavailable while %s (%s); reconnecting", self.what, exc or type(exc).__name__
            )

    async def failed(self, exc: BaseException) -> None:
        """Record a failure and wait before the caller retries (backing off up to ``max_delay_s``)."""
        self.note(exc)
        await asyncio.sleep(self._delay_s)
        self._delay_s = min(self._delay_s * 2, self.max_delay_s)

    def ok(self) -> None:
        """Record a success; logs the reconnect if an outage was going on."""
        if self.since is not None:
            self.log.info("reconnected to redis (%s) after %.1f s", self.what, time.monotonic() - self.since)
            self.since = None
        self._delay_s = 0.1
