"""Keeping this replica's session records alive, and noticing dead bridges, for all sessions at once.

Records: every ``session_refresh_interval_s`` one pipeline extends the TTL of every record this replica
owns; a record Redis lost (a restart, a flush) is saved again at once. While Redis is down the refresh
is retried with a short backoff instead of waiting an interval, and the result reader's reconnect asks
for one at once, so records are back within a fraction of a second of Redis answering again. The TTL
spans at least three intervals (``wire.config``), so a live record never expires between refreshes;
a bridge closes a peer connection whose record stays gone (its own watchdog, with its own grace).

Bridges: every ``heartbeat_interval_s`` one pipeline checks the heartbeat keys of the bridges in use. A
killed bridge cannot say goodbye, so its key expiring is how it shows. It is judged lost when its key
is missing on two checks in a row and Redis has been up for at least ``heartbeat_ttl_s``: right after a
Redis restart no bridge has beaten yet (a restart can be too quick for any command here to fail, so
Redis's own uptime is what tells).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import NoReturn

from redis.asyncio import Redis

from runtime.redis import REDIS_DOWN_ERRORS, Outage
from wire.bridge_rpc import SessionRecord
from wire.config import SignalingSettings
from wire.keys import Keys

log = logging.getLogger(__name__)


class SessionUpkeep:
    """Refreshes (and restores) the records of ``records()`` and reports bridges whose heartbeat is gone."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: SignalingSettings,
        *,
        records: Callable[[], list[SessionRecord]],
        is_live: Callable[[str], bool],
        bridge_lost: Callable[[str], None],
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.records = records
        self.is_live = is_live
        self.bridge_lost = bridge_lost
        self.restored = 0
        """Records saved again after Redis lost them (for tests and the log)."""
        self.outage = Outage("refreshing session records", log, max_delay_s=0.5)
        self._now = asyncio.Event()
        self._missing_before: set[str] = set()

    def refresh_soon(self) -> None:
        """Refresh at once (Redis is back: records may be gone)."""
        self._now.set()

    async def run_records(self) -> NoReturn:
        while True:
            try:
                await self.refresh_records()
            except REDIS_DOWN_ERRORS as exc:
                await self.outage.failed(exc)  # retried soon: a lost record cannot wait an interval
                continue
            self.outage.ok()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._now.wait(), self.settings.session_refresh_interval_s)
            self._now.clear()

    async def refresh_records(self) -> None:
        records = self.records()
        if not records:
            return
        ttl_ms = max(1, int(self.settings.session_ttl_s * 1000))
        pipe = self.redis.pipeline(transaction=False)
        for record in records:
            pipe.pexpire(self.keys.session(record.session), ttl_ms)
        extended = await pipe.execute()
        lost = [record for record, ok in zip(records, extended, strict=True) if not ok]
        if not lost:
            return
        pipe = self.redis.pipeline(transaction=False)
        for record in lost:
            key = self.keys.session(record.session)
            pipe.hset(key, mapping={k: str(v) for k, v in record.model_dump().items()})
            pipe.pexpire(key, ttl_ms)
        await pipe.execute()
        # A session that ended while its record was being restored must not leave one behind.
        ended = [record.session for record in lost if not self.is_live(record.session)]
        if ended:
            await self.redis.delete(*(self.keys.session(session) for session in ended))
        self.restored += len(lost) - len(ended)
        log.info("restored %d session records that Redis had lost", len(lost) - len(ended))

    async def run_bridges(self) -> NoReturn:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            try:
                await self.check_bridges()
            except REDIS_DOWN_ERRORS:
                self._missing_before.clear()  # an outage is no evidence against any bridge
                continue

    async def check_bridges(self) -> None:
        bridges = sorted({record.bridge for record in self.records()})
        if not bridges:
            self._missing_before.clear()
            return
        pipe = self.redis.pipeline(transaction=False)
        for bridge in bridges:
            pipe.exists(self.keys.bridge(bridge))
        alive = await pipe.execute()
        missing = {bridge for bridge, present in zip(bridges, alive, strict=True) if not present}
        judged = missing & self._missing_before
        self._missing_before = missing
        if not judged or await self._redis_uptime_s() < self.settings.heartbeat_ttl_s:
            return
        for bridge in sorted(judged):
            self.bridge_lost(bridge)

    async def _redis_uptime_s(self) -> float:
        info = await self.redis.info("server")
        return float(info.get("uptime_in_seconds", 0))
