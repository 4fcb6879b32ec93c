"""Which model names a client may ask for: the ones that exist, so that no other name leaves a trace.

A model name from a client ends up in Redis keys (the frame stream, the drop tally) and in Prometheus
label values. Were every name accepted, each new one would add a key that never expires and a series
that is never removed: 20,000 made-up names grew /metrics to 8 MB. So a name is used only once it is
known to exist, which is when

- a live worker serves it (its heartbeat names it; checked first, since a request needs one anyway),
- it is the configured ``default_model`` (the one a client gets when it names none), or
- it is in the model registry (``Keys.model_names``: registered with ``lookout models register`` or
  ``lookout train --publish``), so that a model whose workers are all down is told apart from a typo.

Any other name is refused with ``unknown_model`` before anything is written or counted. The set of names
that can reach a key or a label is therefore the operator's (workers, default, registry), not the
clients'.
"""

from __future__ import annotations

from redis.asyncio import Redis

from wire.keys import Keys


async def known_without_worker(redis: Redis, keys: Keys, model: str, *, default_model: str) -> bool:
    """Whether ``model`` exists although no live worker serves it: the default, or registered."""
    if model == default_model:
        return True
    return bool(await redis.sismember(keys.model_names(), model))


def unknown_model_message(model: str) -> str:
    return (
        f"unknown model {model!r}: no live worker serves it and it is neither the default model nor "
        "registered (`lookout models list`)"
    )
