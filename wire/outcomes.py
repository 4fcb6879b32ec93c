"""Publishing how a frame ended: a result or a counted drop, on the session's result stream.

Every result is counted in ``Keys.inferred_count(model)``. Every drop is counted in three places at
once: the drop record on the session's stream, the Redis tally ``Keys.drop_counts(model)`` and the
Prometheus counter ``FRAMES_DROPPED``. The functions here do all three, so callers must not increment
``FRAMES_DROPPED`` themselves.

A worker ends a frame by acking its stream entry and publishing its outcome in one server-side script
(``Ack``): the publication happens only when the XACK removed the entry from the group's pending list
and its client had not marked it timed out (``claim_for_client``). So a frame that two workers both
processed (one was slow, the other claimed it), or whose client stopped waiting, still ends exactly once.

What each role's Redis ACL user needs (docs/deployment.md): a worker only writes result streams (XADD,
EXPIRE, never a read), and a client (bridge, signaling) never XACKs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from wire.keys import WORKER_GROUP, Keys
from wire.messages import DropReason, DropRecord, DropSite, ResultMessage, encode_outcome
from wire.metrics import FRAMES_DROPPED

UNKNOWN_MODEL_TALLY = "unknown"
"""Model name the drop tally uses for a drop whose model is not known."""

# KEYS: frame stream, drop tally, inferred counter, the entry's timed-out mark (``Keys.timed_out``).
# ARGV: group ('' = no ack), entry id, result stream ('' = publish nothing), maxlen, ttl, kind, body,
# reason ('' = not a drop).
# The result stream is an argument, not a declared key: Redis checks a script's declared keys for read
# and write alike, while each command the script calls is checked for what it does, so the XADD and
# EXPIRE below need only the write-only `%W~` access a worker's ACL user has to result streams.
# Returns 1 when the frame was ended here, 0 when it was ended elsewhere (or its client counted it).
_END_FRAME = """
if ARGV[1] ~= '' then
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
  -- Its client stopped waiting and counted it as a timeout (claim_for_client): publish nothing.
  if redis.call('DEL', KEYS[4]) == 1 then return 0 end
end
if ARGV[3] ~= '' then
  redis.call('XADD', ARGV[3], 'MAXLEN', '~', ARGV[4], '*', 'kind', ARGV[6], 'body', ARGV[7])
  redis.call('EXPIRE', ARGV[3], ARGV[5])
end
if ARGV[8] ~= '' then
  redis.call('HINCRBY', KEYS[2], ARGV[8], 1)
elseif ARGV[6] == 'result' then
  -- Results are counted where they are published, like drops, so the monitor sees every worker.
  redis.call('INCR', KEYS[3])
end
return 1
"""

TIMED_OUT_MARK_TTL_S = 24 * 3600
"""How long a client's timed-out mark on a frame still pending at a worker waits for that worker's end
(which deletes it). A frame left pending longer (no worker of its model for a day) could be counted
twice: once by its client, once by the worker that finally ends it."""


@dataclass(frozen=True)
class Ack:
    """The frame stream entry to XACK together with publishing its outcome."""

    stream: str
    group: str
    entry_id: str


def _tally_model(model: str) -> str:
    return model or UNKNOWN_MODEL_TALLY


def _count_metric(model: str, site: DropSite, reason: DropReason) -> None:
    FRAMES_DROPPED.labels(model=_tally_model(model), site=site.value, reason=reason.value).inc()


async def publish_outcomes(
    redis: Redis,
    keys: Keys,
    outcomes: Sequence[tuple[ResultMessage | DropRecord, Ack | None]],
    *,
    maxlen: int,
    ttl_s: int,
) -> list[bool]:
    """Publish several outcomes in one round trip; each with its optional ack (see ``publish_outcome``)."""
    if not outcomes:
        return []
    pipe = redis.pipeline(transaction=False)
    for outcome, ack in outcomes:
        reason = outcome.reason.value if isinstance(outcome, DropRecord) else ""
        encoded = encode_outcome(outcome)
        model = _tally_model(outcome.model)
        pipe.eval(
            _END_FRAME,
            4,
            ack.stream if ack else keys.frames(model),
            keys.drop_counts(model),
            keys.inferred_count(model),
            keys.timed_out(model, ack.entry_id if ack else "-"),
            ack.group if ack else "",
            ack.entry_id if ack else "",
            keys.results(outcome.session),
            maxlen,
            ttl_s,
            encoded["kind"],
            encoded["body"],
            reason,
        )
    replies = await pipe.execute()
    ended = [int(reply) == 1 for reply in replies]
    for (outcome, _ack), done in zip(outcomes, ended, strict=True):
        if done and isinstance(outcome, DropRecord):
            _count_metric(outcome.model, outcome.site, outcome.reason)
    return ended


async def publish_outcome(
    redis: Redis,
    keys: Keys,
    outcome: ResultMessage | DropRecord,
    *,
    maxlen: int,
    ttl_s: int,
    ack: Ack | None = None,
) -> bool:
    """XADD the outcome to its session's result stream (bounded, expiring); count drops per reason.

    One atomic script: a drop is never published without being counted, nor counted twice. With
    ``ack``, the entry is XACKed first and nothing is published unless that XACK removed it from the
    pending list; returns False in that case (someone else already ended the frame).
    """
    (ended,) = await publish_outcomes(redis, keys, [(outcome, ack)], maxlen=maxlen, ttl_s=ttl_s)
    return ended


async def count_drop(
    redis: Redis,
    keys: Keys,
    *,
    model: str,
    reason: DropReason,
    site: DropSite,
    ack: Ack | None = None,
) -> bool:
    """Count a drop that cannot be routed to a session (no parseable session id): tally and metric only.

    With ``ack``, the entry is acked in the same script and counted only if the ack removed it.
    """
    tally = _tally_model(model)
    reply = await redis.eval(
        _END_FRAME,
        4,
        ack.stream if ack else keys.frames(tally),
        keys.drop_counts(tally),
        keys.inferred_count(tally),
        keys.timed_out(tally, ack.entry_id if ack else "-"),
        ack.group if ack else "",
        ack.entry_id if ack else "",
        "",
        0,
        0,
        "",
        "",
        reason.value,
    )
    ended = int(reply) == 1
    if ended:
        _count_metric(model, site, reason)
    return ended


# KEYS: frame stream, drop tally, the entry's timed-out mark. ARGV: group, entry id, reason, mark ttl.
# Returns 1 when the client's drop ends the frame (counted here), 0 when a worker has ended it or will.
# No XACK: a bridge's ACL user may not ack frames. A frame still pending at a worker is marked instead,
# and the worker's end (_END_FRAME) acks it, finds the mark and publishes nothing.
_CLAIM_FOR_CLIENT = """
local function later(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if ok and #pending > 0 then
  -- Pending at a worker (alive or dead): its own end will find the mark and publish nothing.
  if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[4]) then
    return 0  -- marked before: this client's earlier claim counted it
  end
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
  return 1
end
local delivered = nil
local found, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if found then
  for _, group in ipairs(groups) do
    local name, last = nil, nil
    for i = 1, #group, 2 do
      if group[i] == 'name' then name = group[i + 1] end
      if group[i] == 'last-delivered-id' then last = group[i + 1] end
    end
    if name == ARGV[1] then delivered = last end
  end
end
if delivered ~= nil and not later(ARGV[2], delivered) then
  return 0  -- delivered and no longer pending: a worker ended it (or counted it as trimmed)
end
-- Never delivered (or its stream or group is gone, with a Redis restart): no worker will end it now.
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
return 1
"""


async def claim_for_client(
    redis: Redis,
    keys: Keys,
    *,
    model: str,
    entry_id: str,
    reason: DropReason,
    site: DropSite,
    group: str = WORKER_GROUP,
) -> bool:
    """End a frame that its client stopped waiting for as a counted drop, unless a worker ended it.

    Without this a frame could be counted twice: as the client's ``timeout`` and, once a live worker
    claimed it from a dead one, as that worker's ``deadline``. One script decides: a frame still
    pending at a worker is marked timed out here (``Keys.timed_out``; the worker's own end acks it,
    deletes the mark and publishes nothing), never acked, so that a client needs no XACK; one never
    delivered is deleted from the stream, so no worker reads it; either is counted here and True is
    returned. False means a worker already ended the frame and counted its outcome.
    """
    reply = await redis.eval(
        _CLAIM_FOR_CLIENT,
        3,
        keys.frames(model),
        keys.drop_counts(_tally_model(model)),
        keys.timed_out(model, entry_id),
        group,
        entry_id,
        reason.value,
        TIMED_OUT_MARK_TTL_S,
    )
    claimed = int(reply) == 1
    if claimed:
        _count_metric(model, site, reason)
    return claimed


async def drop_counts(redis: Redis, keys: Keys, model: str) -> dict[str, int]:
    """The drop tally of ``model``: reason -> count, over every session and site."""
    raw = cast(dict[bytes, bytes], await redis.hgetall(keys.drop_counts(model)))
    return {k.decode(): int(v) for k, v in raw.items()}
