"""Cluster-wide gauges, refreshed from Redis by signaling, and its ``/metrics`` route.

No single worker or bridge sees the whole cluster, so signaling computes what only Redis knows:
per model the frame stream's depth (XLEN), lag (entries past the group's last-delivered id) and
pending count (XINFO GROUPS), the live workers, and the scale ratio; plus the live bridges. Every
signaling replica exports the same values; take ``max`` across replicas in queries.

The scale ratio follows Intel's elastic-inference design: ``(infer fps + drop fps) / infer fps`` over
a sliding window, from the Redis-side counters every worker and bridge updates through
``wire.outcomes`` (``Keys.inferred_count`` and the drop tally ``Keys.drop_counts``). Only drops that
more inference capacity would have avoided count (``CAPACITY_DROPS``): an undecodable image is not a
reason to add a worker. 1 means the workers keep up; 1.5 means half again as many frames are dropped
as inferred; with drops but no results at all it is +Inf. An idle model reads 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import cast

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from redis.asyncio import Redis
from redis.exceptions import RedisError

from signaling.appkeys import KEYS, REDIS, SETTINGS
from wire.influx import InfluxPush, start_influx_push
from wire.keys import WORKER_GROUP, Keys
from wire.liveness import live_bridges, live_workers
from wire.messages import DropReason
from wire.metrics import (
    LIVE_BRIDGES,
    LIVE_WORKERS,
    MONITOR_ERRORS,
    SCALE_RATIO,
    STREAM_DEPTH,
    STREAM_LAG,
    STREAM_PENDING,
)

log = logging.getLogger(__name__)

CAPACITY_DROPS = frozenset(
    {
        DropReason.DEADLINE,
        DropReason.SUPERSEDED,
        DropReason.IN_FLIGHT_LIMIT,
        DropReason.TIMEOUT,
        DropReason.NO_WORKER,
        DropReason.TRIMMED,
    }
)
"""Drop reasons that mean "inference did not keep up": the ones the scale ratio counts."""

DEFAULT_INTERVAL_S = 2.0
"""Seconds between refreshes (``SignalingSettings.monitor_interval_s``; compose scrapes every 5 s)."""

DEFAULT_WINDOW_S = 30.0
"""Width of the scale ratio's sliding window (``SignalingSettings.scale_window_s``)."""


@dataclass(frozen=True)
class StreamStats:
    depth: int
    lag: int
    pending: int


@dataclass
class ModelCounts:
    """One model's cluster-wide counters and stream, as read in one refresh."""

    inferred: int = 0
    capacity_drops: int = 0
    stream: StreamStats | None = None
    workers: int = 0


@dataclass
class Snapshot:
    at: float
    models: dict[str, ModelCounts] = field(default_factory=dict)
    bridges: int = 0


class ScaleWindow:
    """Per model, the counter samples of the last ``window_s`` seconds, and the ratio they give."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: dict[str, deque[tuple[float, int, int]]] = {}

    def add(self, model: str, at: float, inferred: int, dropped: int) -> None:
        samples = self._samples.setdefault(model, deque())
        if samples and (inferred < samples[-1][1] or dropped < samples[-1][2]):
            samples.clear()  # the counters went back: Redis was flushed or restarted
        samples.append((at, inferred, dropped))
        # Keep one sample at or before the window's start as the baseline of the rates.
        while len(samples) >= 2 and samples[1][0] <= at - self.window_s:
            samples.popleft()

    def knows(self, model: str) -> bool:
        return model in self._samples

    def forget(self, keep: Iterable[str]) -> None:
        kept = set(keep)
        for model in [m for m in self._samples if m not in kept]:
            del self._samples[model]

    def ratio(self, model: str) -> float:
        samples = self._samples.get(model)
        if not samples or len(samples) < 2:
            return 1.0
        inferred = samples[-1][1] - samples[0][1]
        dropped = samples[-1][2] - samples[0][2]
        if inferred == 0:
            return 1.0 if dropped == 0 else math.inf
        return (inferred + dropped) / inferred


def _models_in(keys: Iterable[bytes], prefix: str) -> set[str]:
    return {key.decode()[len(prefix) :] for key in keys}


async def _scan(redis: Redis, pattern: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=pattern, count=500)]


LAG_COUNT_LIMIT = 512
"""The most waiting entries one refresh counts (the lag gauge reads this many when more wait). Counting
costs Redis time per waiting entry (each carries a JPEG): here 356 entries of 27 KB, a default stream's
most, took 33 ms; none waiting costs nothing. 512 is beyond what any alert or autoscaler here tells
apart (KEDA's target x maxReplicaCount is 160 for CPU workers, 400 for GPU ones)."""

# KEYS: the frame stream. ARGV: the group, the count limit. Returns {waiting, pending, group found (0/1)}:
# the entries past the group's last-delivered id, counted inside Redis so that no JPEG crosses the network.
_WAITING = """
local found, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not found then return {0, 0, 0} end
for _, group in ipairs(groups) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  if info['name'] == ARGV[1] then
    local waiting = #redis.call('XRANGE', KEYS[1], '(' .. info['last-delivered-id'], '+', 'COUNT', ARGV[2])
    return {waiting, info['pending'], 1}
  end
end
return {0, 0, 0}
"""


async def stream_stats(redis: Redis, stream: str) -> StreamStats:
    """Depth, lag and pending count of a frame stream's worker group.

    The lag is counted: the entries past the group's last-delivered id, up to ``LAG_COUNT_LIMIT``.
    XINFO GROUPS' own ``lag`` (Redis 7) is not used: after MAXLEN trimmed entries the group never read
    it stays too high for good, and after an XDEL of an unread entry (a client that stopped waiting)
    it is NULL, while Lookout trims and deletes under overload. tests/deploy/test_keda_trigger.py
    measures both.
    """
    depth = int(await redis.xlen(stream))
    reply = cast(list[int], await redis.eval(_WAITING, 1, stream, WORKER_GROUP, LAG_COUNT_LIMIT))
    waiting, pending, has_group = (int(n) for n in reply)
    if not has_group:  # no worker has ever read it (or it vanished between SCAN and here)
        return StreamStats(depth=depth, lag=depth, pending=0)
    return StreamStats(depth=depth, lag=waiting, pending=pending)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


async def read_snapshot(redis: Redis, keys: Keys) -> Snapshot:
    """Everything the gauges show, read from Redis (no gauge is touched here)."""
    snapshot = Snapshot(at=time.monotonic())
    stream_models = _models_in(await _scan(redis, keys.frames_pattern()), keys.frames(""))
    inferred_models = _models_in(await _scan(redis, keys.inferred_count_pattern()), keys.inferred_count(""))
    drop_models = _models_in(await _scan(redis, keys.drop_counts_pattern()), keys.drop_counts(""))
    workers = await live_workers(redis, keys)
    for name in sorted(stream_models | inferred_models | drop_models | {w.model for w in workers}):
        counts = snapshot.models.setdefault(name, ModelCounts())
        counts.inferred = int(await redis.get(keys.inferred_count(name)) or 0)
        tally = cast(dict[bytes, bytes], await redis.hgetall(keys.drop_counts(name)))
        counts.capacity_drops = sum(
            int(n) for reason, n in tally.items() if reason.decode() in CAPACITY_DROPS
        )
        if name in stream_models:
            counts.stream = await stream_stats(redis, keys.frames(name))
    for worker in workers:
        snapshot.models[worker.model].workers += 1
    snapshot.bridges = len(await live_bridges(redis, keys))
    return snapshot


class ClusterGauges:
    """Applies snapshots to the gauges, all at once (no await in between, so no scrape sees half)."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.window = ScaleWindow(window_s)
        self._shown: dict[MetricWrapperBase, set[str]] = {}
        self._last_at: float | None = None

    def apply(self, snapshot: Snapshot) -> None:
        per_model: dict[MetricWrapperBase, dict[str, float]] = {
            STREAM_DEPTH: {},
            STREAM_LAG: {},
            STREAM_PENDING: {},
            LIVE_WORKERS: {},
            SCALE_RATIO: {},
        }
        for name, counts in snapshot.models.items():
            if not self.window.knows(name) and self._last_at is not None:
                # Its keys did not exist at the last refresh: everything counted since is new, so
                # the baseline is zero then (not its first counts, which would hide a burst of drops).
                self.window.add(name, self._last_at, 0, 0)
            self.window.add(name, snapshot.at, counts.inferred, counts.capacity_drops)
            per_model[SCALE_RATIO][name] = self.window.ratio(name)
            per_model[LIVE_WORKERS][name] = counts.workers
            if counts.stream is not None:
                per_model[STREAM_DEPTH][name] = counts.stream.depth
                per_model[STREAM_LAG][name] = counts.stream.lag
                per_model[STREAM_PENDING][name] = counts.stream.pending
        self.window.forget(snapshot.models)
        for gauge, values in per_model.items():
            for name, value in values.items():
                gauge.labels(model=name).set(value)  # type: ignore[attr-defined]
            for gone in self._shown.get(gauge, set()) - values.keys():
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)
            self._shown[gauge] = set(values)
        LIVE_BRIDGES.set(snapshot.bridges)
        self._last_at = snapshot.at


class Monitor:
    """The periodic refresh task of one signaling process."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        window_s: float = DEFAULT_WINDOW_S,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.interval_s = interval_s
        self.gauges = ClusterGauges(window_s)
        self.refreshes = 0
        self._healthy = True
        self._stopping = asyncio.Event()

    async def refresh(self) -> None:
        """Read Redis once and update every gauge; a Redis failure is logged and counted, not raised."""
        try:
            snapshot = await read_snapshot(self.redis, self.keys)
        except (RedisError, OSError) as exc:
            MONITOR_ERRORS.inc()
            if self._healthy:
                log.warning("monitor: cannot read Redis (%s); gauges keep their last values", exc)
                self._healthy = False
            return
        if not self._healthy:
            log.info("monitor: Redis reachable again")
            self._healthy = True
        self.gauges.apply(snapshot)
        self.refreshes += 1

    async def run(self) -> None:
        """Refresh every ``interval_s`` until ``stop()``."""
        log.info("monitor: refreshing cluster gauges every %.1f s", self.interval_s)
        while not self._stopping.is_set():
            try:
                await self.refresh()
            except Exception:  # a bug here must not end the refreshes for the life of the process
                MONITOR_ERRORS.inc()
                log.exception("monitor: refresh failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)

    async def stop(self, task: asyncio.Task[None]) -> None:
        # The event ends the loop even when a cancellation is swallowed inside redis-py (seen here:
        # a cancelled refresh returned normally and the task went on sleeping forever).
        self._stopping.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 10)


MONITOR = web.AppKey("monitor", Monitor)


async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus exposition of this process' registry (rendered off the event loop)."""
    body = await asyncio.to_thread(generate_latest, REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup_monitor(
    app: web.Application, *, interval_s: float | None = None, window_s: float | None = None
) -> None:
    """Serve ``/metrics`` and, while the app runs, refresh the cluster gauges (and push to InfluxDB
    when ``influx_url`` is set). Needs ``REDIS``, ``KEYS`` and ``SETTINGS`` in the app by startup;
    the refresh interval and window default to ``monitor_interval_s`` and ``scale_window_s``."""
    app.router.add_get("/metrics", metrics_handler, name="metrics")

    async def monitor_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        monitor = Monitor(
            app[REDIS],
            app[KEYS],
            interval_s=interval_s or settings.monitor_interval_s,
            window_s=window_s or settings.scale_window_s,
        )
        app[MONITOR] = monitor
        task = asyncio.create_task(monitor.run(), name="cluster-monitor")
        push: InfluxPush = start_influx_push(settings, service="signaling")
        try:
            yield
        finally:
            await monitor.stop(task)
            await push.aclose()

    app.cleanup_ctx.append(monitor_ctx)
