"""A worker's frames on their way from intake to outcome, across the event loop and its two threads.

The scheduler (``inference.scheduler``) decides; this module does what it decides, without blocking
the event loop:

* taking read entries: the intake (``inference.intake``) refuses garbage and stale frames at once;
* one "cpu" thread decodes and letterboxes the next frames while the model runs, then postprocesses;
* one "infer" thread runs the model, so ONNX Runtime uses exactly the threads it was configured with;
* every frame ends exactly once, as a result or a counted drop (``inference.ending``); then the
  scheduler forgets it, and the freed room is used at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from inference.consumer import Entry
from inference.ending import Ending
from inference.intake import (
    Limits,
    Refused,
    Unroutable,
    decode_and_prepare_all,
    elapsed_ms,
    image_refusal,
    parse,
)
from inference.scheduler import Job, Late, Scheduler
from wire.messages import (
    Detection,
    DropReason,
    DropSite,
    FrameMessage,
    MalformedMessageError,
    Outcome,
    ResultMessage,
    now_ms,
)
from wire.metrics import BATCH_SIZE, FRAMES_IN, FRAMES_INFERRED, INFERENCE_SECONDS, QUEUE_WAIT_SECONDS

if TYPE_CHECKING:
    from inference.detector import Prepared

Image = NDArray[np.uint8]
Outputs = list[NDArray[np.float32]]
ResultHook = Callable[[Image, ResultMessage], None]
"""Called off the event loop with the decoded frame and its result (hard-example sampling, ...)."""

WAKE_MS = 500
"""Longest the infer loop and a full reader wait for news: also how soon they notice a stop."""
MAX_PENDING_HOOK_CALLS = 8
"""Result hooks are skipped while this many calls are queued: a slow hook must not hold frames in memory."""

T = TypeVar("T")


class FrameDetector(Protocol):
    """What the worker needs of a detector (``inference.detector.Detector`` is one)."""

    name: str
    version: str
    max_batch: int
    provider: str

    def prepare(self, image: Image) -> Prepared: ...

    def run(self, batch: Sequence[Prepared]) -> list[Outputs]: ...

    def postprocess(self, outputs: Outputs, prepared: Prepared) -> list[Detection]: ...

    def warmup(self) -> None: ...


class Serving(Protocol):
    """What the pipeline reads of its worker: the model it serves now (a hot swap changes it)."""

    detector: FrameDetector
    model_version: str

    def apply_swap(self) -> None: ...


class Pipeline:
    """The frames one worker holds, moved along as its ``Scheduler`` says; see the module docstring."""

    def __init__(
        self, serving: Serving, scheduler: Scheduler, ending: Ending, limits: Limits, log: logging.Logger
    ) -> None:
        self.serving = serving
        self.scheduler = scheduler
        self.ending = ending
        self.limits = limits
        self.model = limits.model
        self.log = log
        self.on_result: list[ResultHook] = []
        self.frames_done = 0
        self.freed = asyncio.Event()  # a held entry ended
        self._ready = asyncio.Event()  # a frame became ready for the model
        self._tasks: set[asyncio.Task[Any]] = set()
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{self.model}")
        self._cpu_pool = ThreadPoolExecutor(1, thread_name_prefix=f"decode-{self.model}")
        self._hook_pool = ThreadPoolExecutor(1, thread_name_prefix="result-hooks")
        self._hook_calls = 0

    # --- intake -----------------------------------------------------------------------------------
    async def take(self, entries: list[Entry]) -> int:
        """Refuse what cannot be inferred (counted drops, one round trip), queue the rest; how many queued."""
        jobs: list[Job] = []
        refused: list[tuple[str, Outcome]] = []
        for entry_id, fields in entries:
            FRAMES_IN.labels(site=DropSite.WORKER.value, model=self.model).inc()
            taken = parse(fields, self.limits, now_ms())
            if isinstance(taken, Unroutable):
                if taken.detail:
                    self.log.warning("dropping entry %s: %s (no session to tell)", entry_id, taken.detail)
                await self.end_unroutable(entry_id, taken.reason)
            elif isinstance(taken, Refused):
                refused.append((entry_id, self.ending.refused(taken)))
            else:
                job = Job(entry_id=entry_id, frame=taken, read_ms=now_ms())
                wait_s = max(0.0, job.read_ms - taken.submitted_ms) / 1000
                QUEUE_WAIT_SECONDS.labels(model=self.model).observe(wait_s)
                jobs.append(job)
        self.scheduler.accept(jobs)
        self.feed()
        if refused:
            await self.end(refused)
        return len(jobs)

    def feed(self) -> None:
        """Start decoding the groups of backlog frames the scheduler has room for; drop the late ones."""
        groups, late = self.scheduler.next_groups(now_ms())
        for group in groups:
            self.spawn(self._prepare(group))
        if late:
            self.spawn(self.end(self._late_drops(late)))

    async def _prepare(self, jobs: list[Job]) -> None:
        """Decode and prepare a group of frames on the cpu thread; refuse the ones that fail."""
        detector = self.serving.detector
        try:
            failures = await self.in_thread(
                self._cpu_pool, decode_and_prepare_all, jobs, detector.prepare, detector, self.limits
            )
        except RuntimeError as exc:  # the pool was shut down under us: the worker is stopping
            failures = [exc for _job in jobs]
        refused = []
        for job, failure in zip(jobs, failures, strict=True):
            if failure is None:
                self.scheduler.prepared(job)
                continue
            reason, detail = image_refusal(failure)
            if reason is DropReason.INFERENCE_ERROR:
                self.log.error("preparing frame %s/%d failed: %r", job.frame.session, job.frame.seq, failure)
            refused.append((job.entry_id, self.ending.drop(job.frame, reason, detail)))
        self._ready.set()
        if refused:
            await self.end(refused)

    # --- inference --------------------------------------------------------------------------------
    async def infer_loop(self) -> None:
        """Run batches of prepared frames through the model, one at a time, until cancelled."""
        while True:
            self.serving.apply_swap()  # between batches: a swap never splits one
            if not self.scheduler.ready:
                await wait_anew(self._ready)
                continue
            fresh, late = self.scheduler.next_batch(now_ms())
            if late:
                self.spawn(self.end(self._late_drops(late)))
            if not fresh:
                continue
            detector, version = self.serving.detector, self.serving.model_version
            started = time.perf_counter()
            try:
                outputs = await self.in_thread(self._infer_pool, _run_model, detector, fresh)
            except Exception as exc:
                self.log.exception("inference of %d frame(s) failed", len(fresh))
                self.spawn(self.end(self._drops(fresh, DropReason.INFERENCE_ERROR, repr(exc))))
                continue
            inference_ms = elapsed_ms(started) / len(fresh)
            size = _call_size(detector, len(fresh))
            for _call in range(-(-len(fresh) // size)):
                BATCH_SIZE.labels(model=self.model).observe(size)
            for _frame in fresh:
                INFERENCE_SECONDS.labels(model=self.model).observe(inference_ms / 1000)
            self.spawn(self._finish(fresh, outputs, detector, version, inference_ms))

    async def _finish(
        self,
        jobs: list[Job],
        outputs: list[Outputs],
        detector: FrameDetector,
        version: str,
        inference_ms: float,
    ) -> None:
        try:
            found = await self.in_thread(self._cpu_pool, _postprocess, detector, jobs, outputs)
        except Exception as exc:
            self.log.exception("postprocessing %d frame(s) failed", len(jobs))
            await self.end(self._drops(jobs, DropReason.INFERENCE_ERROR, repr(exc)))
            return
        size = _call_size(detector, len(jobs))
        results = [
            self.ending.result(
                job,
                detections,
                version=version,
                inference_ms=inference_ms,
                postprocess_ms=post_ms,
                batch_size=size,
            )
            for job, (detections, post_ms) in zip(jobs, found, strict=True)
        ]
        ended = await self.end([(job.entry_id, result) for job, result in zip(jobs, results, strict=True)])
        for job, result, done in zip(jobs, results, ended, strict=True):
            if done:
                FRAMES_INFERRED.labels(model=self.model, worker=self.ending.worker_id).inc()
                if job.image is not None:
                    self._run_hooks(job.image, result)

    def _run_hooks(self, image: Image, result: ResultMessage) -> None:
        if not self.on_result:
            return
        if self._hook_calls >= MAX_PENDING_HOOK_CALLS:
            self.log.debug("result hooks are behind; skipping frame %s/%d", result.session, result.seq)
            return
        self._hook_calls += 1
        future = asyncio.get_running_loop().run_in_executor(self._hook_pool, self._call_hooks, image, result)
        future.add_done_callback(self._hook_done)

    def _hook_done(self, _future: asyncio.Future[None]) -> None:
        self._hook_calls -= 1

    def _call_hooks(self, image: Image, result: ResultMessage) -> None:
        for hook in list(self.on_result):
            try:
                hook(image, result)
            except Exception:
                self.log.exception("result hook %r failed", hook)

    # --- ending -----------------------------------------------------------------------------------
    def _drops(self, jobs: list[Job], reason: DropReason, detail: str) -> list[tuple[str, Outcome]]:
        return [(job.entry_id, self.ending.drop(job.frame, reason, detail)) for job in jobs]

    def _late_drops(self, late: list[Late]) -> list[tuple[str, Outcome]]:
        return [(x.job.entry_id, self.ending.drop(x.job.frame, x.reason, x.detail)) for x in late]

    async def end(self, outcomes: Sequence[tuple[str, Outcome]]) -> list[bool]:
        """Ack and publish (``Ending.publish``); then the entries are no longer held, whatever happened."""
        entry_ids = [entry_id for entry_id, _outcome in outcomes]
        self.scheduler.end(entry_ids)
        ended = [False] * len(entry_ids)
        try:
            ended = await self.ending.publish(outcomes)
        finally:
            self._forget(entry_ids, ended)
        return ended

    async def end_unroutable(self, entry_id: str, reason: DropReason) -> None:
        """Count and ack an entry whose session is unknown (``Ending.count_unroutable``)."""
        self.scheduler.end([entry_id])
        done = False
        try:
            done = await self.ending.count_unroutable(entry_id, reason)
        finally:
            self._forget([entry_id], [done])

    async def drop_all(self, entries: list[Entry], reason: DropReason, detail: str) -> None:
        """End each entry as a drop: a drop record for its session, or only counted when it has none."""
        for entry_id, fields in entries:
            try:
                frame = FrameMessage.from_fields(fields)
            except MalformedMessageError:
                await self.end_unroutable(entry_id, reason)
                continue
            await self.end([(entry_id, self.ending.drop(frame, reason, detail))])

    def _forget(self, entry_ids: list[str], ended: list[bool]) -> None:
        self.scheduler.forget(entry_ids)
        self.frames_done += sum(ended)
        self.freed.set()
        self.feed()

    # --- plumbing ---------------------------------------------------------------------------------
    async def in_thread(self, pool: ThreadPoolExecutor, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, func, *args)

    async def warmup(self) -> None:
        """Warm the model up on the infer thread (the thread that will run it)."""
        await self.in_thread(self._infer_pool, self.serving.detector.warmup)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def tasks(self) -> list[asyncio.Task[Any]]:
        """The decodes, postprocessings and publications running now."""
        return list(self._tasks)

    async def drained(self) -> None:
        """Return once nothing is held any more."""
        while len(self.scheduler):
            self.freed.clear()
            await self.freed.wait()

    def close(self) -> None:
        for pool in (self._infer_pool, self._cpu_pool, self._hook_pool):
            pool.shutdown(wait=False, cancel_futures=True)


async def wait_anew(event: asyncio.Event, timeout_ms: float = WAKE_MS) -> None:
    """Wait for ``event`` to be set anew, at most ``timeout_ms`` (so that loops notice a stop)."""
    event.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_ms / 1000)


def _run_model(detector: FrameDetector, jobs: list[Job]) -> list[Outputs]:
    for job in jobs:  # prepared for a model swapped out since: prepare again (rare)
        if job.prepared_by is not detector and job.image is not None:
            job.prepared, job.prepared_by = detector.prepare(job.image), detector
    return detector.run([job.prepared for job in jobs if job.prepared is not None])


def _call_size(detector: FrameDetector, frames: int) -> int:
    """Frames per model call: a fixed-batch export (``max_batch``) runs a larger batch in several calls."""
    return frames if detector.max_batch == 0 else min(frames, detector.max_batch)


def _postprocess(
    detector: FrameDetector, jobs: list[Job], outputs: list[Outputs]
) -> list[tuple[list[Detection], float]]:
    found = []
    for job, output in zip(jobs, outputs, strict=True):
        started = time.perf_counter()
        assert job.prepared is not None
        found.append((detector.postprocess(output, job.prepared), elapsed_ms(started)))
    return found
