"""Publishing how a frame ended: a result or a counted drop, on the session's result stream."""

from __future__ import annotations

from redis.asyncio import Redis

from wire.keys import Keys
from wire.messages import DropRecord, ResultMessage, encode_outcome


async def publish_outcome(
    redis: Redis,
    keys: Keys,
    outcome: ResultMessage | DropRecord,
    *,
    maxlen: int,
    ttl_s: int,
) -> None:
    """XADD the outcome to its session's result stream (bounded, expiring); count drops per reason.

    One MULTI/EXEC round trip: a drop is never published without being counted, nor counted twice.
    """
    stream = keys.results(outcome.session)
    pipe = redis.pipeline(transaction=True)
    pipe.xadd(stream, encode_outcome(outcome), maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
    pipe.expire(stream, ttl_s)
    if isinstance(outcome, DropRecord):
        pipe.hincrby(keys.drop_counts(outcome.model or "unknown"), outcome.reason.value, 1)
    else:
        # Counted where it is published, like drops, so the monitor's scale ratio sees every worker.
        pipe.incr(keys.inferred_count(outcome.model))
    await pipe.execute()


async def drop_counts(redis: Redis, keys: Keys, model: str) -> dict[str, int]:
    """The drop tally of ``model``: reason -> count, over every session and site."""
    raw = await redis.hgetall(keys.drop_counts(model))
    return {k.decode(): int(v) for k, v in raw.items()}
