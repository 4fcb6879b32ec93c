"""Acceptance of the frame backbone: real `lookout worker` processes, a real redis-server, real video.

Two workers are shared by the tests of this module (starting one costs seconds). The tests run in file
order; the last two kill and stop those workers on purpose. Latency is never asserted against a
speed: only against the deadline the test chose, so a busy machine cannot make them fail
(``bench/bench_pipeline.py`` measures speed).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from inference.detector import Detector
from inference.images import decode_image
from tests.inference.worker_helpers import (
    StreamFields,
    ended_twice,
    frame_fields,
    outcomes_of,
    video_jpegs,
    wait_for_outcomes,
)
from tests.support.processes import REPO, LookoutProcess, wait_heartbeat, wait_until
from tests.support.redis_server import RedisServer, free_port
from wire.client import FrameClient
from wire.config import StreamSettings
from wire.keys import WORKER_GROUP, Keys
from wire.liveness import live_workers
from wire.messages import DropReason, DropRecord, Fields, Outcome, ResultMessage
from wire.outcomes import drop_counts

MODEL = "yolox_nano"
KEYS = Keys()


@dataclass
class WorkerProcess:
    id: str
    metrics_port: int
    process: LookoutProcess


@pytest.fixture(scope="module")
def backbone() -> Iterator[RedisServer]:
    """This module's own redis-server: the restart test stops and starts it under the workers."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def start_worker(name: str, server: RedisServer, shared_dir: Path) -> WorkerProcess:
    port = free_port()
    env = {
        "LOOKOUT_MODEL_DIR": str(shared_dir / "models"),
        "LOOKOUT_RESULT_STREAM_MAXLEN": "100000",  # keep every outcome, so tests can count them
        "LOOKOUT_HEARTBEAT_INTERVAL_S": "0.5",
        "LOOKOUT_CLAIM_INTERVAL_S": "0.5",
        "LOOKOUT_CLAIM_IDLE_MS": "1000",
    }
    args = ["worker", "--redis", server.url, "--id", name, "--threads", "1", "--metrics-port", str(port)]
    return WorkerProcess(name, port, LookoutProcess(name, args, env=env))


@pytest.fixture(scope="module")
def workers(backbone: RedisServer, shared_dir: Path) -> Iterator[list[WorkerProcess]]:
    started = [start_worker(f"backbone-w{i}", backbone, shared_dir) for i in range(2)]
    try:
        processes = [w.process for w in started]
        for worker in started:
            wait_heartbeat(backbone.url, KEYS.worker(worker.id), worker.id, 90, processes)
        yield started
    finally:
        for worker in started:
            worker.process.stop()


@pytest.fixture
async def redis(backbone: RedisServer) -> Any:
    client = Redis.from_url(backbone.url)
    yield client
    await client.aclose()


def client_for(redis: Redis, deadline_ms: float) -> FrameClient:
    settings = StreamSettings(frame_stream_maxlen=100_000, frame_deadline_ms=deadline_ms)
    return FrameClient(redis, settings=settings)


def dropped_metric(worker: WorkerProcess) -> Counter[str]:
    """lookout_frames_dropped{site=worker} of one worker, by reason, read from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "lookout_frames_dropped":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("site") == "worker":
                    counts[sample.labels["reason"]] += int(sample.value)
    return counts


async def test_200_video_frames_through_two_workers_end_once_with_the_detectors_detections(
    redis: Redis, workers: list[WorkerProcess], video_path: Path, nano: Detector
) -> None:
    frames = video_jpegs(video_path, 200)
    async with client_for(redis, deadline_ms=300_000) as client:
        submitted = [
            await client.submit(jpeg, model=MODEL, width=width, height=height)
            for jpeg, width, height in frames
        ]
        outcomes = [await client.wait(seq, future, model=MODEL, timeout_s=300) for seq, future in submitted]
        on_stream = await outcomes_of(redis, KEYS, client.session)
    assert all(isinstance(o, ResultMessage) for o in outcomes), [o for o in outcomes if o.kind == "drop"][:3]
    assert len(on_stream) == 200 and ended_twice(on_stream) == {}
    assert {o.worker for o in on_stream} == {w.id for w in workers}  # both replicas took a share
    labels: Counter[str] = Counter()
    for (jpeg, _w, _h), outcome in zip(frames, outcomes, strict=True):
        assert isinstance(outcome, ResultMessage)
        expected = [d for d in nano.detect(decode_image(jpeg)) if d.label in ("person", "car")]
        got = [d for d in outcome.detections if d.label in ("person", "car")]
        assert [d.label for d in got] == [d.label for d in expected], outcome.seq
        np.testing.assert_allclose([d.box for d in got], [d.box for d in expected], atol=1e-2)
        labels.update(d.label for d in got)
    assert labels["person"] > 200 and labels["car"] > 20  # the clip is full of both


async def test_garbage_is_dropped_with_a_reason_and_the_metrics_agree(
    redis: Redis, workers: list[WorkerProcess], video_path: Path
) -> None:
    jpeg = video_jpegs(video_path, 1)[0][0]
    stream = KEYS.frames(MODEL)
    tally_before = Counter(await drop_counts(redis, KEYS, MODEL))
    metric_before = sum((dropped_metric(w) for w in workers), Counter())
    garbage: list[tuple[StreamFields, DropReason | None]] = [
        (
            {k: v for k, v in frame_fields(jpeg, session="junk", seq=0).items() if k != "image"},
            DropReason.MALFORMED,
        ),
        (frame_fields(b"%PDF-1.4 not an image", session="junk", seq=1), DropReason.UNDECODABLE),
        (
            frame_fields(b"\xff\xd8\xff" + bytes(50 * 1024 * 1024), session="junk", seq=2),
            DropReason.TOO_LARGE,
        ),
        (frame_fields(jpeg, session="junk", seq=3, model="no_such_model"), DropReason.UNKNOWN_MODEL),
        (frame_fields(jpeg, session="junk", seq=4), None),
    ]
    await redis.xadd(stream, {"garbage": b"\x00\x01"})  # no session: counted, nobody to tell
    for fields, _reason in garbage:
        await redis.xadd(stream, fields)
    found = {o.seq: o for o in await wait_for_outcomes(redis, KEYS, "junk", len(garbage), timeout=60)}
    for seq, (_fields, reason) in enumerate(garbage):
        if reason is None:
            assert isinstance(found[seq], ResultMessage)
        else:
            assert isinstance(found[seq], DropRecord) and found[seq].reason is reason, found[seq]  # type: ignore[union-attr]
    expected = Counter({"malformed": 2, "undecodable": 1, "too_large": 1, "unknown_model": 1})
    assert Counter(await drop_counts(redis, KEYS, MODEL)) - tally_before == expected

    async def metrics_agree() -> bool:
        now = sum([await asyncio.to_thread(dropped_metric, w) for w in workers], Counter())
        return now - metric_before == expected

    await wait_until(metrics_agree, timeout=15, what="/metrics to count the same drops as Redis")
    assert all(w.process.alive() for w in workers)


async def test_overload_drops_stale_frames_and_accepted_latency_stays_bounded(
    redis: Redis, workers: list[WorkerProcess], video_path: Path
) -> None:
    frames = video_jpegs(video_path, 200)
    async with client_for(redis, deadline_ms=300_000) as warm:  # measure what the two workers sustain now
        started = time.monotonic()
        burst = [await warm.submit(j, model=MODEL, width=w, height=h) for j, w, h in frames[:40]]
        for seq, future in burst:
            await warm.wait(seq, future, model=MODEL, timeout_s=120)
        capacity = 40 / (time.monotonic() - started)

    deadline_ms, offer_s = 1000.0, 5.0
    # 3x what they just sustained, and at least 3x what two 1-thread workers do on a fast idle machine
    # (135 frames/s measured here): the other engineers' load can vanish between the measurement and the
    # offer, and a floor of 40/s once let two idle workers keep up with the whole offer.
    interval = 1 / (3 * max(capacity, 150.0))
    tally_before = (await drop_counts(redis, KEYS, MODEL)).get("deadline", 0)
    async with client_for(redis, deadline_ms=deadline_ms) as client:
        submitted: list[tuple[int, asyncio.Future[Outcome]]] = []
        begin = time.monotonic()
        while time.monotonic() - begin < offer_s:
            jpeg, width, height = frames[len(submitted) % len(frames)]
            submitted.append(await client.submit(jpeg, model=MODEL, width=width, height=height))
            await asyncio.sleep(max(0.0, begin + len(submitted) * interval - time.monotonic()))
        outcomes = [await client.wait(seq, future, model=MODEL, timeout_s=60) for seq, future in submitted]
        on_stream = await outcomes_of(redis, KEYS, client.session)

    assert ended_twice(on_stream) == {} and len(on_stream) == len(submitted)
    reasons = Counter(o.reason.value for o in outcomes if isinstance(o, DropRecord))
    assert set(reasons) == {"deadline"}, reasons  # no client timeout: every frame ended at a worker
    assert (await drop_counts(redis, KEYS, MODEL))["deadline"] - tally_before == reasons["deadline"]
    results = [o for o in outcomes if isinstance(o, ResultMessage)]
    latencies = [o.done_ms - o.received_ms for o in results]
    half = len(latencies) // 2
    # Without the deadline policy the queue would grow for 5 s and the last frames wait seconds.
    assert np.percentile(latencies, 99) < 2 * deadline_ms, np.percentile(latencies, 99)
    assert max(latencies[half:]) < 2 * deadline_ms
    assert results[-1].seq > submitted[len(submitted) // 2][0]  # results kept flowing to the end


async def test_workers_reconnect_after_a_redis_restart_and_carry_on(
    backbone: RedisServer, workers: list[WorkerProcess], video_path: Path
) -> None:
    backbone.restart()  # an empty Redis: streams, groups and heartbeats are gone
    redis = Redis.from_url(backbone.url)
    try:

        async def both_beat_again() -> bool:
            return {w.id for w in await live_workers(redis, KEYS, MODEL)} == {w.id for w in workers}

        await wait_until(both_beat_again, timeout=5, what="both workers to reconnect and beat again")
        jpeg, width, height = video_jpegs(video_path, 1)[0]
        async with client_for(redis, deadline_ms=60_000) as client:
            for _ in range(4):
                outcome = await client.detect(jpeg, model=MODEL, width=width, height=height, timeout_s=60)
                assert isinstance(outcome, ResultMessage), outcome
    finally:
        await redis.aclose()
    for worker in workers:
        assert worker.process.alive()
        assert "reconnected to redis" in worker.process.log()


async def test_a_worker_killed_with_sigkill_loses_no_frame_and_ends_none_twice(
    redis: Redis, workers: list[WorkerProcess], video_path: Path
) -> None:
    frames = video_jpegs(video_path, 200)
    async with client_for(redis, deadline_ms=6000) as client:
        submitted: list[tuple[int, asyncio.Future[Outcome]]] = []
        for i in range(300):
            jpeg, width, height = frames[i % len(frames)]
            submitted.append(await client.submit(jpeg, model=MODEL, width=width, height=height))

        async def both_busy() -> bool:
            found = await outcomes_of(redis, KEYS, client.session)
            return len({o.worker for o in found if isinstance(o, ResultMessage)}) == 2

        await wait_until(both_busy, timeout=60, what="both workers to deliver results")
        victim = workers[0]
        victim.process.kill9()
        killed_at = time.monotonic()
        outcomes = []
        for seq, future in submitted:
            left = max(0.1, killed_at + 10 - time.monotonic())
            outcomes.append(await client.wait(seq, future, model=MODEL, timeout_s=left))
        on_stream = await outcomes_of(redis, KEYS, client.session)
    reasons = Counter(o.reason.value for o in outcomes if isinstance(o, DropRecord))
    assert "timeout" not in reasons, f"frames lost for 10 s after the kill: {reasons}"
    assert set(reasons) <= {"deadline"}
    assert len(on_stream) == 300 and ended_twice(on_stream) == {}
    assert (await redis.xpending(KEYS.frames(MODEL), WORKER_GROUP))["pending"] == 0


async def test_sigterm_finishes_in_flight_frames_and_exits_0(
    redis: Redis, workers: list[WorkerProcess], video_path: Path
) -> None:
    frames = video_jpegs(video_path, 40)
    alive = [w for w in workers if w.process.alive()]
    timeouts_before = (await drop_counts(redis, KEYS, MODEL)).get("timeout", 0)
    async with client_for(redis, deadline_ms=120_000) as client:
        for jpeg, width, height in frames:
            await client.submit(jpeg, model=MODEL, width=width, height=height)

        async def some_done() -> bool:
            return len(await outcomes_of(redis, KEYS, client.session)) >= 5

        await wait_until(some_done, timeout=60, what="the first results")
        for worker in alive:
            worker.process.signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(worker.process.stop, 60) for worker in alive]
        on_stream = await outcomes_of(redis, KEYS, client.session)
    assert codes == [0] * len(alive), [w.process.log()[-2000:] for w in alive]
    stream = KEYS.frames(MODEL)
    assert (await redis.xpending(stream, WORKER_GROUP))["pending"] == 0
    assert ended_twice(on_stream) == {}
    assert {o.reason for o in on_stream if isinstance(o, DropRecord)} <= {DropReason.SHUTDOWN}
    group = next(
        g for g in await redis.xinfo_groups(stream) if g["name"] in (WORKER_GROUP, WORKER_GROUP.encode())
    )
    last = group["last-delivered-id"]
    waiting = cast(
        list[tuple[bytes, Fields]],
        await redis.xrange(stream, min=f"({last.decode() if isinstance(last, bytes) else last}", max="+"),
    )
    # Ended at a worker, or (those no worker read) counted as timeouts when the client closed and taken
    # off the stream, so that no later worker drops them a second time.
    timeouts = (await drop_counts(redis, KEYS, MODEL)).get("timeout", 0) - timeouts_before
    assert len(on_stream) + timeouts == len(frames) and waiting == []
    consumers = {c["name"].decode() for c in await redis.xinfo_consumers(stream, WORKER_GROUP)}
    for worker in alive:
        assert await redis.exists(KEYS.worker(worker.id)) == 0
        assert worker.id not in consumers
        assert "stopped after" in worker.process.log_path.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--redis", "nonsense://where"], "invalid Redis URL"),
        (["--batch", "0"], "invalid worker setting --batch"),
        (["--model", "no_such_model_anywhere"], "no_such_model_anywhere"),
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str], message: str, shared_dir: Path) -> None:
    env = {"LOOKOUT_MODEL_DIR": str(shared_dir / "models"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "lookout", "worker", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("lookout: error:")]
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
