"""One worker's side of a model's frame stream: its consumer in the shared group, and the group itself.

The group (``WORKER_GROUP``) is created on demand, and again after a Redis restart wiped it (NOGROUP).
Reads only take what the worker can start now; claims move the idle pending entries of dead workers
to this one; ``own_pending`` lists what this consumer holds, for claims and for shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from wire.keys import WORKER_GROUP
from wire.messages import Fields

log = logging.getLogger(__name__)

Entry = tuple[str, Fields]
"""A stream entry: its id and its fields (empty when the entry was trimmed or deleted)."""

T = TypeVar("T")


def _is_nogroup(exc: ResponseError) -> bool:
    return str(exc).startswith("NOGROUP")


def _entries(raw: object) -> list[Entry]:
    """Entries of an XREADGROUP / XAUTOCLAIM reply part; trimmed entries come back with empty fields."""
    found: list[Entry] = []
    for item in cast(list[tuple[bytes | None, Fields | None] | None], raw or []):
        entry_id, fields = item if item is not None else (None, None)
        if entry_id is None:
            continue  # Redis 6.2 XAUTOCLAIM of a deleted entry: no id; own_pending finds it instead
        found.append((entry_id.decode(), fields or {}))
    return found


class StreamConsumer:
    """The consumer ``name`` of the worker group on ``stream``."""

    def __init__(self, redis: Redis, stream: str, name: str, group: str = WORKER_GROUP) -> None:
        self.redis = redis
        self.stream = stream
        self.name = name
        self.group = group

    async def ensure_group(self) -> None:
        """Create the group (and the stream) unless it exists; new groups start at the stream's start."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            log.info("created consumer group %s on %s", self.group, self.stream)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _with_group(self, command: Callable[[], Awaitable[T]]) -> T:
        """Run a group command; if the group is gone (Redis restarted empty), recreate it and retry once."""
        try:
            return await command()
        except ResponseError as exc:
            if not _is_nogroup(exc):
                raise
            log.warning(
                "consumer group %s on %s is missing (Redis restarted?); recreating it",
                self.group,
                self.stream,
            )
            await self.ensure_group()
            return await command()

    async def read(self, count: int, block_ms: int) -> list[Entry]:
        """Up to ``count`` entries never delivered to any consumer, waiting up to ``block_ms``."""

        async def command() -> object:
            return await self.redis.xreadgroup(
                self.group, self.name, {self.stream: ">"}, count=count, block=block_ms
            )

        reply = cast(list[tuple[bytes, object]] | None, await self._with_group(command))
        return [entry for _stream, raw in reply or [] for entry in _entries(raw)]

    async def claim_idle(self, min_idle_ms: int, count: int) -> list[str]:
        """Take over entries pending longer than ``min_idle_ms`` at any consumer; returns their ids.

        Redis 7 also drops deleted entries from the pending list here; Redis 6.2 hands them over
        with no id, and ``own_pending`` then shows them with empty fields.
        """

        async def command() -> object:
            return await self.redis.xautoclaim(
                self.stream, self.group, self.name, min_idle_ms, start_id="0-0", count=count, justid=True
            )

        # redis-py parses a JUSTID reply down to the list of claimed ids (no cursor, no deleted ids).
        ids = cast(list[bytes | None], await self._with_group(command))
        return [entry_id.decode() for entry_id in ids if isinstance(entry_id, bytes)]

    async def own_pending(self, count: int = 256) -> list[Entry]:
        """Entries delivered to this consumer and not acked yet, with their fields (empty if trimmed)."""
        found: list[Entry] = []
        start = "0-0"
        while True:

            async def command(start: str = start) -> object:
                return await self.redis.xreadgroup(self.group, self.name, {self.stream: start}, count=count)

            reply = cast(list[tuple[bytes, object]] | None, await self._with_group(command))
            page = [entry for _stream, raw in reply or [] for entry in _entries(raw)]
            found.extend(page)
            if len(page) < count:
                return found
            start = page[-1][0]

    async def own_pending_ids(self, count: int = 1024) -> list[str]:
        """Ids of the entries this consumer holds unacked (no fields: cheap enough for every sweep)."""

        async def command() -> object:
            return await self.redis.xpending_range(
                self.stream, self.group, min="-", max="+", count=count, consumername=self.name
            )

        rows = cast(list[dict[str, Any]], await self._with_group(command))
        return [row["message_id"].decode() for row in rows]

    async def pending_count(self) -> int:
        """How many entries this consumer holds unacked."""
        return len(await self.own_pending())

    async def leave(self) -> bool:
        """Delete this consumer from the group if it holds nothing; returns whether it did."""
        if await self.pending_count():
            return False
        try:
            await self.redis.xgroup_delconsumer(self.stream, self.group, self.name)
        except ResponseError as exc:
            if not _is_nogroup(exc):
                raise
        return True
