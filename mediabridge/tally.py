"""The bridge's drops that Redis could not take yet: counted here at once, added to the tally later.

Every drop is counted in the Redis tally ``Keys.drop_counts(model)`` and the ``lookout_frames_dropped``
metric (``wire.outcomes``). While Redis is down the bridge still samples and drops frames (as
``redis_unavailable``, or ``superseded``, ``in_flight_limit`` ... whose records could not be written), so
that "every sampled frame ends once" holds through an outage: ``DropTally.count`` counts such a drop in
the metric at once and keeps it per (model, reason); ``flush_loop`` adds what it holds to the Redis
tally, in one transaction per flush, as soon as Redis answers again.

A flush whose reply is lost (Redis dies after EXEC) is retried and may count its drops twice; one that
cannot happen before the bridge stops is logged with its counts, so that no drop goes unreported.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from redis.asyncio import Redis

from runtime.redis import REDIS_DOWN_ERRORS, Outage
from wire.keys import Keys
from wire.messages import DropReason, DropSite
from wire.metrics import DROPS_HELD, FRAMES_DROPPED
from wire.outcomes import UNKNOWN_MODEL_TALLY

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
"""How often held drops are offered to Redis: soon after it returns, without a busy loop."""


class DropTally:
    """Drops counted while Redis could not take them, per (model, reason), until flushed."""

    def __init__(self, redis: Redis, keys: Keys, *, site: DropSite = DropSite.BRIDGE) -> None:
        self.redis = redis
        self.keys = keys
        self.site = site
        self.held: Counter[tuple[str, DropReason]] = Counter()
        self.flushed = 0
        """Drops added to the Redis tally so far (for logs and tests)."""
        self._outage = Outage("adding the drops counted during an outage to the tally", log)

    @property
    def pending(self) -> int:
        return sum(self.held.values())

    def count(self, model: str, reason: DropReason) -> None:
        """Count one drop now (metric) and hold it for the Redis tally."""
        model = model or UNKNOWN_MODEL_TALLY
        FRAMES_DROPPED.labels(model=model, site=self.site.value, reason=reason.value).inc()
        DROPS_HELD.labels(site=self.site.value).inc()
        self.held[(model, reason)] += 1

    async def flush(self) -> int:
        """Add the held drops to the Redis tally; returns how many. Raises REDIS_DOWN_ERRORS (nothing
        is lost then: they stay held)."""
        batch = Counter(self.held)
        if not batch:
            return 0
        pipe = self.redis.pipeline(transaction=True)
        for (model, reason), count in batch.items():
            pipe.hincrby(self.keys.drop_counts(model), reason.value, count)
        await pipe.execute()
        self.held.subtract(batch)  # drops counted while the flush ran stay held
        self.held = +self.held
        total = sum(batch.values())
        self.flushed += total
        log.info(
            "added %d drops counted while redis was unavailable to the tally (%s)", total, _describe(batch)
        )
        return total

    async def flush_loop(self) -> None:
        """Flush every ``FLUSH_INTERVAL_S`` while something is held, through outages, until cancelled."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            if not self.held:
                continue
            try:
                await self.flush()
            except REDIS_DOWN_ERRORS as exc:
                self._outage.note(exc)
            else:
                self._outage.ok()

    async def close(self) -> None:
        """A last flush; what Redis still cannot take is logged with its counts (the metric has them)."""
        try:
            await self.flush()
        except REDIS_DOWN_ERRORS:
            if self.held:
                log.warning(
                    "%d drops counted while redis was unavailable could not be added to the tally: %s",
                    self.pending,
                    _describe(self.held),
                )


def _describe(counts: Counter[tuple[str, DropReason]]) -> str:
    return ", ".join(f"{model} {reason.value} {count}" for (model, reason), count in sorted(counts.items()))
