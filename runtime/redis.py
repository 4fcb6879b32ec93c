"""Riding out a Redis outage: log it once when it starts and once when it ends, pace the retries, and
keep heartbeats going through it.

Every service talks to Redis in loops (reading, publishing, heartbeats, claims, refreshes). Each loop
owns an ``Outage``, so that a Redis restart costs two log lines per loop instead of one per retry. The
exceptions that mean "Redis is down" are defined once, in ``wire.redis_down``, because ``wire``'s own
client needs them too and ``wire`` may not import ``runtime``; services import them from here, beside
the ``Outage`` they go with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

from wire.redis_down import REDIS_DOWN_ERRORS

__all__ = ["REDIS_DOWN_ERRORS", "Outage", "heartbeat_loop"]


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


async def heartbeat_loop(
    beat: Callable[[], Awaitable[object]], interval_s: float, outage: Outage, *, beat_first: bool = True
) -> NoReturn:
    """Call ``beat`` every ``interval_s`` seconds until cancelled, through Redis outages.

    A beat that fails because Redis is down is noted on ``outage`` (logged once per outage) and the next
    one comes on schedule: a heartbeat is not retried sooner, since the next beat renews the same TTL.
    Any other exception ends the loop, because a beat that cannot be built is a bug. With
    ``beat_first=False`` the first beat waits one interval (for callers that have just beaten).
    """
    if not beat_first:
        await asyncio.sleep(interval_s)
    while True:
        try:
            await beat()
        except REDIS_DOWN_ERRORS as exc:
            outage.note(exc)
        else:
            outage.ok()
        await asyncio.sleep(interval_s)
