"""One blocking XREAD over the result streams of every session of this replica, fanned out in process.

A reader per session held one Redis connection per joined socket, so fifty idle joins emptied the
pool and took health, REST and live sessions down with them. Here one task reads every followed stream
in one command and hands each entry to the sink its session registered: one connection, whatever the
number of sessions.

Following a stream while a read is blocked takes effect at the next read, within ``block_ms`` (short,
so a new session is read promptly; a follower starts from an explicit id, so it misses nothing it
publishes meanwhile). Entries of a stream unfollowed during a read are discarded. A Redis outage is
ridden out (``runtime.redis.Outage``): the reader keeps each stream's last id and resumes after it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from runtime.redis import REDIS_DOWN_ERRORS, Outage
from wire.client import StreamReply
from wire.messages import Fields

log = logging.getLogger(__name__)

Sink = Callable[[str, Fields], None]
"""Receives one entry (its id and fields). Called on the reader's task: it must not block or await."""


@dataclass(eq=False)
class _Follower:
    sink: Sink
    last_id: str


class ResultsReader:
    """Reads many streams with one blocking XREAD and calls each stream's sink with its entries."""

    def __init__(
        self,
        redis: Redis,
        *,
        block_ms: int = 200,
        count: int = 64,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self.redis = redis
        self.block_ms = block_ms
        self.count = count
        self.on_reconnect = on_reconnect
        """Called when a read succeeds after an outage (the owner may restore what Redis lost)."""
        self.outage = Outage("reading the sessions' result streams", log)
        self._followers: dict[str, _Follower] = {}
        self._changed = asyncio.Event()

    @property
    def streams(self) -> list[str]:
        return list(self._followers)

    def follow(self, stream: str, sink: Sink, *, start_id: str = "0-0") -> None:
        """Deliver the entries of ``stream`` after ``start_id`` to ``sink`` (replaces an earlier follower)."""
        self._followers[stream] = _Follower(sink, start_id)
        self._changed.set()

    def unfollow(self, stream: str) -> None:
        self._followers.pop(stream, None)

    async def run(self) -> NoReturn:
        """Read until cancelled."""
        while True:
            if not self._followers:
                self._changed.clear()
                await self._changed.wait()
                continue
            await self.read_once()

    async def read_once(self) -> None:
        """One XREAD over every followed stream (blocking up to ``block_ms``), delivered to the sinks."""
        followers = dict(self._followers)
        try:
            reply = cast(
                StreamReply,
                await self.redis.xread(
                    {stream: f.last_id for stream, f in followers.items()},
                    count=self.count,
                    block=self.block_ms,
                ),
            )
        except REDIS_DOWN_ERRORS as exc:
            await self.outage.failed(exc)
            return
        except ResponseError as exc:  # e.g. a key of the wrong type: a bug to see, not a reason to stop
            log.error("reading result streams failed: %s", exc)
            await self.outage.failed(exc)
            return
        was_down = self.outage.down
        self.outage.ok()
        if was_down and self.on_reconnect is not None:
            self.on_reconnect()
        for raw_stream, entries in reply or []:
            stream = raw_stream.decode()
            follower = followers.get(stream)
            if follower is None or self._followers.get(stream) is not follower:
                continue  # unfollowed (or followed anew) while the read was blocked
            for raw_id, fields in entries:
                follower.last_id = raw_id.decode()
                try:
                    follower.sink(follower.last_id, fields)
                except Exception:  # one session's bug must not stop the others' delivery
                    log.exception("delivering %s of %s failed", follower.last_id, stream)
