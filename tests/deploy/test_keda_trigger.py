"""Which KEDA trigger scales the workers right, measured on Lookout's real streams under overload, then idle.

A real worker (the real yolox_nano, one thread) serves a real Redis 7 while real frames (video JPEGs
published by ``wire.client.FrameClient``, as the bridge and the REST API publish them) arrive several
times faster than it infers. Some clients stop waiting after a short timeout, which deletes their
unread frames (``wire.outcomes.claim_for_client``), and the stream's ``MAXLEN ~`` trims unread frames
away: both happen in production under overload. Then the clients stop and the worker ends what is left.

Every 0.25 s the test reads what each candidate trigger would read and computes the replicas KEDA would
ask for with its own rules:

- the redis-streams scaler reads ``lag`` of XINFO GROUPS (``lagCount``; a NULL lag comes back as 0 from
  go-redis), the count of XPENDING (``pendingEntriesCount``) or XLEN (``streamLength``), and is active
  when that value is above its activation threshold (``activationLagCount`` etc., default 0);
- the Prometheus scaler reads the query's value (here Lookout's ``lookout_stream_lag``, as signaling's
  monitor exports it) and is active when it is above ``activationThreshold``;
- the HPA then asks, for an AverageValue target, ``ceil(value / target)`` replicas (within the HPA's 10 %
  tolerance it keeps the current count), clamped to ``minReplicaCount..maxReplicaCount``; an inactive
  ScaledObject goes to ``minReplicaCount`` (to zero where that is 0).

The truth it is judged against is counted independently: the entries past the group's last-delivered
id (XRANGE from the test). The chosen trigger, the one in deploy/k8s, must ask for more workers under
overload, read as active whenever frames wait, and come back to ``minReplicaCount`` once idle. The
figures of every candidate go to test-output/keda_trigger.json and into the test's output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from inference.detector import Detector
from inference.worker import Worker
from signaling.monitor import Monitor
from tests.inference.worker_helpers import video_jpegs
from tests.support.processes import wait_until
from tests.support.redis_server import RedisServer
from wire.client import FrameClient
from wire.config import StreamSettings, WorkerSettings
from wire.keys import WORKER_GROUP, Keys
from wire.liveness import live_workers

REPO = Path(__file__).resolve().parents[2]
SCALED_OBJECT = REPO / "deploy" / "k8s" / "components" / "inference" / "scaledobject.yaml"
REDIS_7 = shutil.which("redis-server", path="/usr/bin")
"""Debian's redis-server 7.0: the version whose XINFO GROUPS lag the issue measured."""

MODEL = "yolox_nano"
MAXLEN = 64
"""The frame streams' cap (``LOOKOUT_FRAME_STREAM_MAXLEN``), small so that overload trims within seconds."""
DEADLINE_MS = 3000.0
"""Frames may wait 3 s: long enough for a backlog past MAXLEN to build up before they go stale."""
OVERLOAD_S = 6.0
FLOOD_SESSIONS, FLOOD_FPS = 3, 60
"""Sessions that publish without waiting for their frames: 180 frames/s against one CPU worker."""
IMPATIENT_FPS, IMPATIENT_TIMEOUT_S = 20, 0.3
"""One more session, in the first half only, whose client gives up after 0.3 s: it deletes what no
worker has read yet."""
SAMPLE_S = 0.25
CURRENT_REPLICAS = 1
HPA_TOLERANCE = 0.1


@dataclass(frozen=True)
class Trigger:
    name: str
    target: float
    activation: float


@dataclass
class Figures:
    """What one candidate read and asked for, over the samples of one phase."""

    values: list[float] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)
    inactive_while_waiting: int = 0


@dataclass(frozen=True)
class Bounds:
    min_replicas: int
    max_replicas: int


def keda_replicas(value: float, trigger: Trigger, bounds: Bounds, current: int = CURRENT_REPLICAS) -> int:
    """The replicas KEDA's HPA asks for: inactive -> minReplicaCount; else ceil(value / target) (the
    AverageValue rule), unless within the HPA's tolerance of the current count; clamped to the bounds."""
    if value <= trigger.activation:
        return bounds.min_replicas
    ratio = value / (trigger.target * current)
    desired = current if abs(ratio - 1) <= HPA_TOLERANCE else math.ceil(value / trigger.target)
    return max(bounds.min_replicas, 1, min(bounds.max_replicas, desired))


def chosen_trigger() -> tuple[Trigger, Bounds, dict[str, Any]]:
    """The trigger deploy/k8s uses, with its thresholds and the ScaledObject's bounds."""
    scaled = yaml.safe_load(SCALED_OBJECT.read_text())
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    chosen = Trigger(
        "prometheus lookout_stream_lag", float(meta["threshold"]), float(meta.get("activationThreshold", 0))
    )
    bounds = Bounds(int(scaled["spec"]["minReplicaCount"]), int(scaled["spec"]["maxReplicaCount"]))
    return chosen, bounds, trigger


@pytest.fixture
def redis7() -> Iterator[RedisServer]:
    if REDIS_7 is None:
        pytest.fail("Debian's redis-server 7 is missing at /usr/bin: `make install` installs it")
    server = RedisServer(binary=REDIS_7)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def detector(model_path: Path) -> Detector:
    return Detector.load(model_path, threads=1)


@pytest.fixture(scope="module")
def jpegs(video_path: Path) -> tuple[tuple[bytes, int, int], ...]:
    return video_jpegs(video_path, 20)


async def waiting_frames(redis: Redis, stream: str) -> int:
    """The truth, counted here: entries on the stream past the worker group's last-delivered id."""
    groups = await redis.xinfo_groups(stream)
    group = next(g for g in groups if g["name"] in (WORKER_GROUP, WORKER_GROUP.encode()))
    last = group["last-delivered-id"]
    last = last.decode() if isinstance(last, bytes) else str(last)
    return len(await redis.xrange(stream, min=f"({last}", max="+") or [])


async def read_candidates(redis: Redis, stream: str, monitor: Monitor, nulls: list[bool]) -> dict[str, float]:
    """What each trigger would read now (the monitor's gauge as Prometheus would scrape it); ``nulls``
    gets whether Redis's own lag was NULL."""
    groups = await redis.xinfo_groups(stream)
    group = next(g for g in groups if g["name"] in (WORKER_GROUP, WORKER_GROUP.encode()))
    nulls.append(group.get("lag") is None)
    pending = await redis.xpending(stream, WORKER_GROUP)
    length = int(await redis.xlen(stream))
    await monitor.refresh()
    gauge = REGISTRY.get_sample_value("lookout_stream_lag", {"model": MODEL})
    assert gauge is not None, "the monitor exported no lookout_stream_lag for the model"
    return {
        "redis-streams lagCount": float(group.get("lag") or 0),  # NULL reads as 0 in go-redis
        "redis-streams pendingEntriesCount": float(pending["pending"]),
        "redis-streams streamLength": float(length),
        "prometheus lookout_stream_lag": gauge,
    }


@contextlib.asynccontextmanager
async def running_worker(redis: Redis, detector: Detector) -> AsyncIterator[Worker]:
    settings = WorkerSettings(
        frame_stream_maxlen=MAXLEN,
        heartbeat_interval_s=0.5,
        claim_interval_s=0.5,
        claim_idle_ms=1000,
        result_stream_maxlen=100_000,
    )
    worker = Worker(redis, detector, settings)
    task = asyncio.create_task(worker.run())

    async def started() -> bool:
        if task.done():
            task.result()
        return any(w.id == worker.id for w in await live_workers(redis, Keys(), MODEL))

    try:
        await wait_until(started, timeout=30, what="the worker's first heartbeat")
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=60)


async def publish(
    client: FrameClient,
    jpegs: tuple[tuple[bytes, int, int], ...],
    fps: float,
    until: float,
    timeout_s: float | None,
) -> None:
    """Real frames at ``fps`` until ``until``; with ``timeout_s`` the client gives up on each after it."""
    waits: set[asyncio.Task[Any]] = set()
    loop = asyncio.get_running_loop()
    n = 0
    while loop.time() < until:
        jpeg, width, height = jpegs[n % len(jpegs)]
        seq, future = await client.submit(jpeg, model=MODEL, width=width, height=height)
        if timeout_s is not None:
            wait = asyncio.create_task(client.wait(seq, future, model=MODEL, timeout_s=timeout_s))
            waits.add(wait)
            wait.add_done_callback(waits.discard)
        n += 1
        await asyncio.sleep(1 / fps)
    if waits:
        await asyncio.gather(*waits)


def record(
    figures: dict[str, Figures],
    triggers: dict[str, Trigger],
    bounds: Bounds,
    values: dict[str, float],
    waiting: bool,
) -> None:
    for name, value in values.items():
        trigger = triggers[name]
        wanted = keda_replicas(value, trigger, bounds)
        figures[name].values.append(value)
        figures[name].replicas.append(wanted)
        if waiting and value <= trigger.activation:
            figures[name].inactive_while_waiting += 1


@pytest.mark.slow
async def test_the_chosen_trigger_scales_out_under_overload_and_back_in_when_idle(
    redis7: RedisServer, detector: Detector, jpegs: tuple[tuple[bytes, int, int], ...], output_dir: Path
) -> None:
    chosen, bounds, manifest = chosen_trigger()
    assert manifest["type"] == "prometheus"
    assert manifest["metadata"]["query"] == f'max(lookout_stream_lag{{model="{MODEL}"}})'
    triggers = {
        "redis-streams lagCount": Trigger("lagCount", chosen.target, 0),
        # A worker holds at most 2 x batch frames: that is what one saturated worker reads as pending.
        "redis-streams pendingEntriesCount": Trigger("pendingEntriesCount", 2.0, 0),
        "redis-streams streamLength": Trigger("streamLength", chosen.target, 0),
        chosen.name: chosen,
    }
    redis = Redis.from_url(redis7.url)
    keys, stream = Keys(), Keys().frames(MODEL)
    monitor = Monitor(redis, keys, interval_s=1, window_s=30)
    overload = {name: Figures() for name in triggers}
    idle = {name: Figures() for name in triggers}
    truth_peak = 0
    lag_nulls: list[bool] = []
    stream_settings = StreamSettings(frame_stream_maxlen=MAXLEN, frame_deadline_ms=DEADLINE_MS)
    try:
        async with running_worker(redis, detector) as worker:
            clients = [FrameClient(redis, settings=stream_settings) for _ in range(FLOOD_SESSIONS + 1)]
            loop = asyncio.get_running_loop()
            until = loop.time() + OVERLOAD_S
            publishers = [
                asyncio.create_task(publish(c, jpegs, FLOOD_FPS, until, None)) for c in clients[:-1]
            ]
            # The impatient client only in the first half: its deletions leave Redis's lag NULL while
            # they last; the trims of the second half then leave it too high for good.
            publishers.append(
                asyncio.create_task(
                    publish(clients[-1], jpegs, IMPATIENT_FPS, until - OVERLOAD_S / 2, IMPATIENT_TIMEOUT_S)
                )
            )
            started = time.monotonic()
            while not all(p.done() for p in publishers):
                before = await waiting_frames(redis, stream)
                values = await read_candidates(redis, stream, monitor, lag_nulls)
                after = await waiting_frames(redis, stream)
                truth_peak = max(truth_peak, before, after)
                record(overload, triggers, bounds, values, waiting=min(before, after) > 0)
                await asyncio.sleep(SAMPLE_S)
            await asyncio.gather(*publishers)

            async def drained() -> bool:
                pending = await redis.xpending(stream, WORKER_GROUP)
                return await waiting_frames(redis, stream) == 0 and int(pending["pending"]) == 0

            await wait_until(drained, timeout=30, what="the worker to end every frame")
            for client in clients:
                await client.close()  # the frames trimmed away end as counted timeouts
            for _ in range(4):
                values = await read_candidates(redis, stream, monitor, [])
                record(idle, triggers, bounds, values, waiting=False)
                await asyncio.sleep(SAMPLE_S)
            served = worker.frames_done
            overload_s = time.monotonic() - started
        added = int((await redis.xinfo_stream(stream))["entries-added"])
    finally:
        await redis.aclose()

    summary: dict[str, Any] = {
        "redis": REDIS_7,
        "maxlen": MAXLEN,
        "overload_and_drain_s": round(overload_s, 1),
        "published_fps": FLOOD_SESSIONS * FLOOD_FPS + IMPATIENT_FPS,
        "frames_published": added,
        "frames_ended_by_the_worker": served,
        "truth_peak_waiting": truth_peak,
        "redis_lag_null_samples": sum(lag_nulls),
        "bounds": asdict(bounds),
        "candidates": {
            name: {
                "target": triggers[name].target,
                "overload_peak_value": max(overload[name].values),
                "overload_peak_replicas": max(overload[name].replicas),
                "overload_samples": len(overload[name].values),
                "inactive_while_frames_waited": overload[name].inactive_while_waiting,
                "idle_value": idle[name].values[-1],
                "idle_replicas": idle[name].replicas[-1],
            }
            for name in triggers
        },
    }
    (output_dir / "keda_trigger.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))

    # Overload: the backlog reached the stream's cap, and most frames never reached the worker.
    assert truth_peak >= MAXLEN, f"no overload: at most {truth_peak} frames waited"
    assert added - served > 2 * MAXLEN, f"only {added - served} of {added} frames were trimmed or deleted"
    mine = summary["candidates"][chosen.name]
    assert mine["overload_peak_replicas"] > CURRENT_REPLICAS, "it never asked for more workers"
    assert mine["inactive_while_frames_waited"] == 0, "it read as inactive while frames waited"
    assert all(r == bounds.min_replicas for r in idle[chosen.name].replicas), "it did not scale back in"
    assert all(v == 0 for v in idle[chosen.name].values)
    # One reason the others are not used, on any Redis: XLEN keeps MAXLEN entries after they ended.
    assert summary["candidates"]["redis-streams streamLength"]["idle_replicas"] > bounds.min_replicas
