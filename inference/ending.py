"""How a worker ends the frames it read: exactly once, as a result or a counted drop, through outages.

Every outcome is published in the server-side script that XACKs its entry, and only if that XACK
removed it and its client had not marked it timed out (``wire.outcomes``): a frame two workers both
processed, or one whose client gave up on it, still ends once. While Redis is
down, publications are retried (``retry``, the one loop that rides out an outage, which the worker's
setup steps use too) until the worker gives up: ``give_up_at`` sets the one deadline after which no
publication retries; an entry left unpublished stays pending in Redis, and a live worker claims it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from redis.asyncio import Redis

from inference.consumer import StreamConsumer
from inference.intake import Refused
from inference.scheduler import Job
from runtime.redis import REDIS_DOWN_ERRORS, Outage
from wire.config import WorkerSettings
from wire.keys import Keys
from wire.messages import (
    Detection,
    DropReason,
    DropRecord,
    DropSite,
    FrameMessage,
    Outcome,
    ResultMessage,
    Timings,
)
from wire.outcomes import Ack, count_drop, publish_outcomes

T = TypeVar("T")


class GaveUpError(Exception):
    """Redis stayed down until the caller gave up on the step."""


async def retry(step: Callable[[], Awaitable[T]], outage: Outage, giving_up: Callable[[], bool]) -> T:
    """Run ``step`` until Redis does not fail it, backing off; raise GaveUpError once ``giving_up()``.

    The first attempt is always made; ``giving_up`` is asked after each failure and before each retry.
    """
    while True:
        try:
            result = await step()
        except REDIS_DOWN_ERRORS as exc:
            if giving_up():
                raise GaveUpError(outage.what) from exc
            await outage.failed(exc)
            if giving_up():
                raise GaveUpError(outage.what) from exc
            continue
        outage.ok()
        return result


class Ending:
    """One worker's outcomes: the records it signs, and their publication with the ack of their entry."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: WorkerSettings,
        consumer: StreamConsumer,
        *,
        model: str,
        worker_id: str,
        log: logging.Logger | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.consumer = consumer
        self.model = model
        self.worker_id = worker_id
        self.log = log or logging.getLogger(__name__)
        self._gives_up_at = math.inf  # time.monotonic() after which publications are not retried

    # --- giving up --------------------------------------------------------------------------------
    def give_up_at(self, deadline: float) -> None:
        """Retry no publication after ``deadline`` (a ``time.monotonic()`` time): the worker is leaving."""
        self._gives_up_at = deadline

    def giving_up(self) -> bool:
        return time.monotonic() >= self._gives_up_at

    # --- outcomes ---------------------------------------------------------------------------------
    def drop(self, frame: FrameMessage, reason: DropReason, detail: str) -> DropRecord:
        return self.drop_record(frame.session, frame.seq, frame.received_ms, reason, detail)

    def refused(self, refused: Refused) -> DropRecord:
        return self.drop_record(
            refused.session, refused.seq, refused.received_ms, refused.reason, refused.detail
        )

    def drop_record(
        self, session: str, seq: int, received_ms: float, reason: DropReason, detail: str
    ) -> DropRecord:
        return DropRecord(
            session=session,
            seq=seq,
            received_ms=received_ms,
            model=self.model,
            reason=reason,
            site=DropSite.WORKER,
            worker=self.worker_id,
            detail=detail,
        )

    def result(
        self,
        job: Job,
        detections: list[Detection],
        *,
        version: str,
        inference_ms: float,
        postprocess_ms: float,
        batch_size: int,
    ) -> ResultMessage:
        frame = job.frame
        return ResultMessage(
            session=frame.session,
            seq=frame.seq,
            received_ms=frame.received_ms,
            model=self.model,
            model_version=version,
            worker=self.worker_id,
            width=frame.width,
            height=frame.height,
            detections=detections,
            timings=Timings(
                queue_ms=max(0.0, job.read_ms - frame.submitted_ms),
                decode_ms=job.decode_ms,
                preprocess_ms=job.preprocess_ms,
                inference_ms=inference_ms,
                postprocess_ms=postprocess_ms,
            ),
            batch_size=batch_size,
        )

    # --- publication ------------------------------------------------------------------------------
    def _ack(self, entry_id: str) -> Ack:
        return Ack(self.consumer.stream, self.consumer.group, entry_id)

    async def publish(self, outcomes: Sequence[tuple[str, Outcome]]) -> list[bool]:
        """Ack and publish (one round trip); False where the frame was ended elsewhere or left pending."""
        items = [(outcome, self._ack(entry_id)) for entry_id, outcome in outcomes]
        ended = [False] * len(items)

        async def publish() -> list[bool]:
            return await publish_outcomes(
                self.redis,
                self.keys,
                items,
                maxlen=self.settings.result_stream_maxlen,
                ttl_s=self.settings.result_stream_ttl_s,
            )

        try:
            ended = await retry(publish, Outage("publishing outcomes", self.log), self.giving_up)
        except GaveUpError:
            pass  # left pending in Redis: a live worker will claim it
        except Exception:
            self.log.exception("publishing %d outcome(s) failed; their entries stay pending", len(items))
        for (entry_id, _outcome), done in zip(outcomes, ended, strict=True):
            if not done:
                self.log.debug(
                    "entry %s was no longer pending: already ended elsewhere, or Redis lost it", entry_id
                )
        return ended

    async def count_unroutable(self, entry_id: str, reason: DropReason) -> bool:
        """Count and ack an entry whose session is unknown, so that no drop record can be sent."""

        async def count() -> bool:
            return await count_drop(
                self.redis,
                self.keys,
                model=self.model,
                reason=reason,
                site=DropSite.WORKER,
                ack=self._ack(entry_id),
            )

        try:
            return await retry(count, Outage("counting a drop", self.log), self.giving_up)
        except GaveUpError:
            return False
