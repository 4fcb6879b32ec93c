"""The Worker in-process, on a real redis-server with the real yolox_nano: policy, claims, swaps, hooks.

The process-level acceptance tests (two `lookout worker` processes, kill -9, Redis restart, overload)
are in test_worker_cli.py; these cover the same rules more cheaply and deterministically.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from redis.asyncio import Redis

from inference.detector import Detector, Prepared
from inference.images import Image, decode_image
from inference.worker import Worker
from tests.inference.worker_helpers import (
    StreamFields,
    ended_twice,
    frame_fields,
    outcomes_of,
    video_jpegs,
    wait_for_outcomes,
)
from tests.support.processes import wait_until
from wire.client import FrameClient
from wire.config import StreamSettings, WorkerSettings
from wire.keys import WORKER_GROUP, Keys
from wire.liveness import live_workers
from wire.messages import DropReason, DropRecord, Fields, ResultMessage
from wire.metrics import MODEL_VERSION
from wire.outcomes import drop_counts

MODEL = "yolox_nano"
TEST_SETTINGS: dict[str, Any] = {
    "heartbeat_interval_s": 0.2,
    "claim_interval_s": 0.2,
    "claim_idle_ms": 400,
    "result_stream_maxlen": 100_000,
    "shutdown_grace_s": 5.0,
}


class Wrapped:
    """A real detector with knobs: a slow prepare, a different batch axis or version, recorded calls."""

    def __init__(
        self, inner: Detector, *, prepare_s: float = 0.0, max_batch: int | None = None, version: str = ""
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.version = version or inner.version
        self.provider = inner.provider
        self.max_batch = inner.max_batch if max_batch is None else max_batch
        self.prepare_s = prepare_s
        self.calls: list[int] = []

    def prepare(self, image: np.ndarray) -> Prepared:
        time.sleep(self.prepare_s)
        return self.inner.prepare(image)

    def run(self, batch: Sequence[Prepared]) -> list[list[np.ndarray]]:
        self.calls.append(len(batch))
        return self.inner.run(batch)

    def postprocess(self, outputs: list[np.ndarray], prepared: Prepared) -> Any:
        return self.inner.postprocess(outputs, prepared)

    def warmup(self) -> None:
        self.inner.warmup()


@contextlib.asynccontextmanager
async def running(redis: Redis, detector: Any, **settings: Any) -> AsyncIterator[Worker]:
    worker = Worker(redis, detector, WorkerSettings(**{**TEST_SETTINGS, **settings}))
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


@pytest.fixture(scope="module")
def frames(video_path: Path) -> tuple[tuple[bytes, int, int], ...]:
    return video_jpegs(video_path, 40)


def client_for(redis: Redis) -> FrameClient:
    return FrameClient(redis, settings=StreamSettings(frame_stream_maxlen=10_000))


async def test_results_are_the_detectors_own_detections(redis: Redis, nano: Detector, frames: Any) -> None:
    async with running(redis, nano) as worker, client_for(redis) as client:
        for jpeg, width, height in frames[:4]:
            outcome = await client.detect(jpeg, model=MODEL, width=width, height=height, timeout_s=60)
            assert isinstance(outcome, ResultMessage), outcome
            expected = nano.detect(decode_image(jpeg))
            assert [d.label for d in outcome.detections] == [d.label for d in expected]
            np.testing.assert_allclose(
                [d.box for d in outcome.detections], [d.box for d in expected], rtol=0, atol=1e-3
            )
            assert (outcome.worker, outcome.model_version) == (worker.id, nano.version)
            assert outcome.timings.inference_ms > 0 and outcome.timings.decode_ms > 0
            assert outcome.timings.queue_ms >= 0
        assert isinstance(outcome, ResultMessage)  # mypy forgets the loop's narrowing after the loop
        assert {"person", "car"} <= {d.label for d in outcome.detections}

        async def counted() -> bool:
            (info,) = await live_workers(redis, Keys(), MODEL)
            return info.frames_done == 4 and info.in_flight == 0

        await wait_until(counted, timeout=10, what="the heartbeat to count 4 frames")


async def test_garbage_becomes_drop_records_and_the_worker_carries_on(
    redis: Redis, keys: Keys, nano: Detector, frames: Any
) -> None:
    jpeg = frames[0][0]
    stream = keys.frames(MODEL)
    entries: list[tuple[StreamFields, DropReason | None]] = [
        (
            {k: v for k, v in frame_fields(jpeg, session="g", seq=0).items() if k != "image"},
            DropReason.MALFORMED,
        ),
        (frame_fields(b"this is not a jpeg", session="g", seq=1), DropReason.UNDECODABLE),
        (frame_fields(b"\xff\xd8" + bytes(300_000), session="g", seq=2), DropReason.TOO_LARGE),
        (frame_fields(jpeg, session="g", seq=3, width=9000), DropReason.TOO_LARGE),
        (frame_fields(jpeg, session="g", seq=4, model="other_model"), DropReason.UNKNOWN_MODEL),
        (frame_fields(jpeg, session="g", seq=5, deadline_in_ms=-1), DropReason.DEADLINE),
        ({**frame_fields(jpeg, session="g", seq=6), "deadline_ms": "nan"}, DropReason.MALFORMED),
        (frame_fields(jpeg, session="g", seq=7), None),  # a good frame after all of that
    ]
    async with running(redis, nano, max_image_bytes=200_000) as worker:
        await redis.xadd(stream, {"garbage": b"\x00\xff"})  # no session at all: counted only
        for fields, _reason in entries:
            await redis.xadd(stream, fields)
        found = {o.seq: o for o in await wait_for_outcomes(redis, keys, "g", len(entries), timeout=60)}
        for seq, (_fields, reason) in enumerate(entries):
            outcome = found[seq]
            if reason is None:
                assert isinstance(outcome, ResultMessage)
            else:
                assert isinstance(outcome, DropRecord), outcome
                assert outcome.reason is reason, (seq, outcome)
                assert outcome.detail and outcome.worker == worker.id

        async def acked() -> bool:
            pending: int = (await redis.xpending(stream, WORKER_GROUP))["pending"]
            return pending == 0

        await wait_until(acked, timeout=10, what="every entry acked")
    assert await drop_counts(redis, keys, MODEL) == {
        "malformed": 3,
        "undecodable": 1,
        "too_large": 2,
        "unknown_model": 1,
        "deadline": 1,
    }


async def test_the_deadline_is_checked_again_right_before_inference(
    redis: Redis, keys: Keys, nano: Detector, frames: Any
) -> None:
    slow = Wrapped(nano, prepare_s=2.5)  # decode + prepare outlast the frame's deadline
    async with running(redis, slow):
        await redis.xadd(
            keys.frames(MODEL), frame_fields(frames[0][0], session="d", seq=0, deadline_in_ms=1500)
        )
        (outcome,) = await wait_for_outcomes(redis, keys, "d", 1, timeout=60)
        assert isinstance(outcome, DropRecord) and outcome.reason is DropReason.DEADLINE
        assert "before inference" in outcome.detail
        assert slow.calls == []  # never reached the model


async def test_waiting_frames_are_batched_up_to_batch(
    redis: Redis, keys: Keys, nano: Detector, frames: Any
) -> None:
    dynamic = Wrapped(nano, max_batch=0)  # as a dynamic-batch export reports itself
    async with running(redis, dynamic, batch=4):
        pipe = redis.pipeline(transaction=True)  # all 12 arrive at once: the worker reads them 4 at a time
        for seq, (jpeg, width, height) in enumerate(frames[:12]):
            pipe.xadd(
                keys.frames(MODEL), frame_fields(jpeg, session="b", seq=seq, width=width, height=height)
            )
        await pipe.execute()
        found = await wait_for_outcomes(redis, keys, "b", 12, timeout=90)
    assert all(isinstance(o, ResultMessage) for o in found)
    assert max(dynamic.calls) == 4 and sum(dynamic.calls) == 12
    assert {o.batch_size for o in found if isinstance(o, ResultMessage)} == {4}


async def test_a_hot_swap_changes_the_version_between_batches_without_drops(
    redis: Redis, nano: Detector, frames: Any
) -> None:
    async with running(redis, nano) as worker, client_for(redis) as client:
        jpeg, width, height = frames[0]
        before = await client.detect(jpeg, model=MODEL, width=width, height=height, timeout_s=60)
        worker.request_swap(Wrapped(nano), "v2")
        after = [
            await client.detect(jpeg, model=MODEL, width=width, height=height, timeout_s=60) for _ in range(3)
        ]
        assert isinstance(before, ResultMessage) and before.model_version == nano.version
        assert all(isinstance(o, ResultMessage) and o.model_version == "v2" for o in after)
        assert isinstance(after[-1], ResultMessage)  # all() above does not narrow for mypy
        assert after[-1].detections == before.detections
        assert MODEL_VERSION.labels(model=MODEL, version="v2", worker=worker.id)._value.get() == 1

        async def beats_v2() -> bool:
            return [w.model_version for w in await live_workers(redis, Keys(), MODEL)] == ["v2"]

        await wait_until(beats_v2, timeout=10, what="the heartbeat to carry v2")


async def test_result_hooks_run_off_the_event_loop(redis: Redis, nano: Detector, frames: Any) -> None:
    seen: list[tuple[int, tuple[int, ...], int]] = []
    async with running(redis, nano) as worker, client_for(redis) as client:
        worker.on_result.append(
            lambda image, result: seen.append((threading.get_ident(), image.shape, result.seq))
        )

        def failing_hook(image: Image, result: ResultMessage) -> None:
            raise ZeroDivisionError("division by zero")

        worker.on_result.append(failing_hook)  # a failing hook must not hurt anything
        jpeg, width, height = frames[0]
        for _ in range(2):
            assert isinstance(
                await client.detect(jpeg, model=MODEL, width=width, height=height), ResultMessage
            )

        async def hooked() -> bool:
            return len(seen) == 2

        await wait_until(hooked, timeout=10, what="the hook calls")
    assert {thread for thread, _shape, _seq in seen} != {threading.get_ident()}
    assert [shape for _t, shape, _s in seen] == [(height, width, 3)] * 2


async def test_frames_a_dead_consumer_held_are_claimed_then_inferred_or_dropped_as_stale(
    redis: Redis, keys: Keys, nano: Detector, frames: Any
) -> None:
    stream = keys.frames(MODEL)
    await redis.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
    jpeg = frames[0][0]
    for seq, deadline_in_ms in enumerate([60_000, 60_000, 200, 200]):
        await redis.xadd(stream, frame_fields(jpeg, session="c", seq=seq, deadline_in_ms=deadline_in_ms))
    await redis.xreadgroup(WORKER_GROUP, "dead-worker", {stream: ">"})  # read, never acked: it died
    async with running(redis, nano, claim_idle_ms=400):
        found = {o.seq: o for o in await wait_for_outcomes(redis, keys, "c", 4, timeout=60)}
    assert [type(found[s]).__name__ for s in range(4)] == [
        "ResultMessage",
        "ResultMessage",
        "DropRecord",
        "DropRecord",
    ]
    assert {found[2].reason, found[3].reason} == {DropReason.DEADLINE}  # type: ignore[union-attr]
    assert (await redis.xpending(stream, WORKER_GROUP))["pending"] == 0


async def test_pending_entries_trimmed_away_are_counted(redis: Redis, keys: Keys, nano: Detector) -> None:
    stream = keys.frames(MODEL)
    await redis.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
    ids = [await redis.xadd(stream, frame_fields(b"x", session="t", seq=seq)) for seq in range(2)]
    await redis.xreadgroup(WORKER_GROUP, "dead-worker", {stream: ">"})
    await redis.xdel(stream, *ids)  # what MAXLEN does to entries nobody acked in time
    async with running(redis, nano, claim_idle_ms=200):

        async def counted() -> bool:
            return (await drop_counts(redis, keys, MODEL)).get("trimmed") == 2

        await wait_until(counted, timeout=30, what="two trimmed entries counted")
        assert (await redis.xpending(stream, WORKER_GROUP))["pending"] == 0


async def test_workers_stealing_each_others_frames_still_end_each_once(
    redis: Redis, keys: Keys, nano: Detector, frames: Any
) -> None:
    # Claims after 1 ms idle: the two workers keep taking each other's in-flight frames.
    greedy = {"claim_idle_ms": 1, "claim_interval_s": 0.02}
    async with running(redis, nano, **greedy), running(redis, Wrapped(nano), **greedy):
        for seq, (jpeg, width, height) in enumerate(frames[:16]):
            await redis.xadd(
                keys.frames(MODEL), frame_fields(jpeg, session="x", seq=seq, width=width, height=height)
            )
        await wait_for_outcomes(redis, keys, "x", 16, timeout=120)
        await asyncio.sleep(1.0)  # let any second ending attempt happen before counting
        found = await outcomes_of(redis, keys, "x")
    assert ended_twice(found) == {}
    assert len(found) == 16


async def test_stop_finishes_or_drops_in_flight_frames_and_leaves_cleanly(
    redis: Redis, keys: Keys, nano: Detector, frames: Any
) -> None:
    stream = keys.frames(MODEL)
    slow = Wrapped(nano, prepare_s=1.0)
    async with running(redis, slow, shutdown_grace_s=0.0, batch=2) as worker:
        for seq in range(4):
            await redis.xadd(stream, frame_fields(frames[seq][0], session="z", seq=seq))

        async def busy() -> bool:
            return worker.in_flight > 0

        await wait_until(busy, timeout=30, what="frames in flight")
    # No grace: what was in flight ended as SHUTDOWN drops; what was never read stays for others.
    found = await outcomes_of(redis, keys, "z")
    assert found and ended_twice(found) == {}
    assert {o.reason for o in found if isinstance(o, DropRecord)} <= {DropReason.SHUTDOWN}
    assert any(isinstance(o, DropRecord) for o in found)
    assert (await redis.xpending(stream, WORKER_GROUP))["pending"] == 0
    assert await redis.exists(keys.worker(worker.id)) == 0
    consumers = [c["name"] for c in await redis.xinfo_consumers(stream, WORKER_GROUP)]
    assert worker.id.encode() not in consumers and worker.id not in consumers
    group = (await redis.xinfo_groups(stream))[0]
    undelivered = cast(
        list[tuple[bytes, Fields]],
        await redis.xrange(stream, min=f"({group['last-delivered-id'].decode()}", max="+"),
    )
    assert len(found) + len(undelivered) == 4  # every frame ended or is still waiting on the stream
