"""Pipeline: entries taken through intake, the two threads and ending, with a fake model and no Redis.

The publication is replaced by a recorder (``Recorded``); the real one, on a real Redis with the real
model, is exercised by test_worker.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from inference.consumer import StreamConsumer
from inference.detector import Prepared
from inference.ending import Ending
from inference.images import Image
from inference.intake import Limits
from inference.pipeline import FrameDetector, Outputs, Pipeline
from inference.scheduler import Scheduler, Stage
from tests.support.processes import wait_until
from wire.config import WorkerSettings
from wire.keys import Keys
from wire.messages import (
    Detection,
    DropReason,
    DropRecord,
    Fields,
    FrameMessage,
    Outcome,
    ResultMessage,
    now_ms,
)

log = logging.getLogger("test.pipeline")
MODEL = "fake"


class FakeDetector:
    def __init__(self, version: str = "v1", max_batch: int = 0) -> None:
        self.name, self.version, self.provider, self.max_batch = MODEL, version, "cpu", max_batch
        self.prepared = 0
        self.calls: list[int] = []

    def prepare(self, image: Image) -> Prepared:
        self.prepared += 1
        return Prepared(
            tensor=np.zeros((3, 4, 4), np.float32), scale=1.0, original=(image.shape[0], image.shape[1])
        )

    def run(self, batch: Sequence[Prepared]) -> list[Outputs]:
        self.calls.append(len(batch))
        return [[np.zeros(1, np.float32)] for _ in batch]

    def postprocess(self, outputs: Outputs, prepared: Prepared) -> list[Detection]:
        return [Detection(label="thing", class_id=0, score=0.9, box=(0, 0, 1, 1))]

    def warmup(self) -> None:
        pass


class Serving:
    def __init__(self, detector: FrameDetector) -> None:
        self.detector = detector
        self.model_version = detector.version
        self.swap: FrameDetector | None = None

    def apply_swap(self) -> None:
        if self.swap is not None:
            self.detector, self.model_version, self.swap = self.swap, self.swap.version, None


class Recorded(Ending):
    """Ends every frame at once, recording the outcome instead of publishing it."""

    def __init__(self) -> None:
        consumer = StreamConsumer(None, f"frames:{MODEL}", "w1")  # type: ignore[arg-type]
        super().__init__(None, Keys(), WorkerSettings(), consumer, model=MODEL, worker_id="w1", log=log)  # type: ignore[arg-type]
        self.outcomes: dict[str, Outcome] = {}
        self.counted: dict[str, DropReason] = {}

    async def publish(self, outcomes: Sequence[tuple[str, Outcome]]) -> list[bool]:
        self.outcomes.update(outcomes)
        return [True] * len(outcomes)

    async def count_unroutable(self, entry_id: str, reason: DropReason) -> bool:
        self.counted[entry_id] = reason
        return True


def jpeg() -> bytes:
    ok, encoded = cv2.imencode(".jpg", np.full((24, 32, 3), 90, np.uint8))
    assert ok
    return bytes(encoded.tobytes())


def fields(seq: int, **overrides: Any) -> Fields:
    values: dict[str, Any] = {
        "session": "s",
        "seq": seq,
        "received_ms": now_ms(),
        "deadline_ms": now_ms() + 60_000,
        "model": MODEL,
        "width": 32,
        "height": 24,
        "image": jpeg(),
    }
    frame = FrameMessage(**{**values, **overrides})
    encoded = {name: value for name, value in frame.to_fields().items() if isinstance(name, str)}
    return {name.encode(): v if isinstance(v, bytes) else str(v).encode() for name, v in encoded.items()}


def pipeline(detector: FakeDetector, batch: int = 2) -> tuple[Pipeline, Serving, Recorded]:
    serving, ending = Serving(detector), Recorded()
    limits = Limits(MODEL, max_image_bytes=100_000, max_image_side=1000)
    return Pipeline(serving, Scheduler(batch), ending, limits, log), serving, ending


async def run_until_drained(pipe: Pipeline, *entries: list[tuple[str, Fields]]) -> None:
    inferer = asyncio.create_task(pipe.infer_loop())
    try:
        for group in entries:
            pipe.scheduler.register(entry_id for entry_id, _fields in group)
            await pipe.take(group)
        await asyncio.wait_for(pipe.drained(), 10)
    finally:
        inferer.cancel()
        pipe.close()


async def test_frames_end_as_results_of_the_model_serving_them() -> None:
    detector = FakeDetector(max_batch=0)
    pipe, _serving, ending = pipeline(detector, batch=2)
    await run_until_drained(pipe, [(f"{i}-0", fields(i)) for i in range(4)])
    results = [ending.outcomes[f"{i}-0"] for i in range(4)]
    assert all(isinstance(r, ResultMessage) for r in results)
    assert {(r.model_version, r.worker, r.batch_size) for r in results if isinstance(r, ResultMessage)} == {
        ("v1", "w1", 2)
    }
    assert detector.calls == [2, 2] and pipe.frames_done == 4 and len(pipe.scheduler) == 0


async def test_what_cannot_be_inferred_ends_as_a_drop_with_its_reason() -> None:
    pipe, _serving, ending = pipeline(FakeDetector(), batch=4)
    entries = [
        ("1-0", {}),  # trimmed: only counted
        ("2-0", {b"garbage": b"\x00"}),  # no session to tell: only counted
        ("3-0", {**fields(3), b"deadline_ms": b"nan"}),
        ("4-0", fields(4, image=b"not an image")),
        ("5-0", fields(5, model="other")),
        ("6-0", fields(6, deadline_ms=now_ms() - 1)),
        ("7-0", fields(7)),
    ]
    await run_until_drained(pipe, entries)
    assert ending.counted == {"1-0": DropReason.TRIMMED, "2-0": DropReason.MALFORMED}
    reasons = {i: o.reason for i, o in ending.outcomes.items() if isinstance(o, DropRecord)}
    assert reasons == {
        "3-0": DropReason.MALFORMED,
        "4-0": DropReason.UNDECODABLE,
        "5-0": DropReason.UNKNOWN_MODEL,
        "6-0": DropReason.DEADLINE,
    }
    assert isinstance(ending.outcomes["7-0"], ResultMessage)
    assert pipe.frames_done == 7


async def test_frames_prepared_for_a_swapped_out_model_are_prepared_again() -> None:
    old, new = FakeDetector("v1"), FakeDetector("v2")
    pipe, serving, ending = pipeline(old, batch=1)
    serving.swap = new  # requested after these frames are prepared, applied before their batch
    pipe.scheduler.register(["1-0"])
    await pipe.take([("1-0", fields(1))])

    async def prepared() -> bool:
        return pipe.scheduler.ready == 1

    await wait_until(prepared, timeout=10, what="the frame prepared for the old model")
    await run_until_drained(pipe)
    result = ending.outcomes["1-0"]
    assert isinstance(result, ResultMessage) and result.model_version == "v2"
    assert (old.prepared, new.prepared, old.calls, new.calls) == (1, 1, [], [1])


async def test_result_hooks_run_off_the_event_loop() -> None:
    pipe, _serving, _ending = pipeline(FakeDetector())
    seen: list[int] = []
    done = threading.Event()

    def hook(image: Image, result: ResultMessage) -> None:
        seen.append(threading.get_ident())
        done.set()

    pipe.on_result.append(hook)
    inferer = asyncio.create_task(pipe.infer_loop())
    try:
        pipe.scheduler.register(["1-0"])
        await pipe.take([("1-0", fields(1))])
        await asyncio.wait_for(pipe.drained(), 10)
        assert await asyncio.to_thread(done.wait, 10)
    finally:
        inferer.cancel()
        pipe.close()
    assert seen and seen[0] != threading.get_ident()


async def test_nothing_is_decoded_once_the_scheduler_is_closed() -> None:
    detector = FakeDetector()
    pipe, _serving, ending = pipeline(detector)
    pipe.scheduler.close()  # what a shutdown does once it gives up on what is held
    pipe.scheduler.register(["1-0"])
    await pipe.take([("1-0", fields(1))])
    await asyncio.sleep(0.05)
    pipe.close()
    assert detector.prepared == 0 and ending.outcomes == {}
    assert pipe.scheduler.stage("1-0") is Stage.WAITING  # left pending: the shutdown drops it
