"""The inference worker: reads a model's frame stream in the shared consumer group, detects, publishes.

Three stages overlap so that the model is never waiting for Python:

* the event loop reads frames (only as many as the worker can start now, so that it never reads far
  ahead and latency stays flat under overload), refuses garbage and stale frames at once, and publishes;
* one "cpu" thread decodes and letterboxes the next frames while the model runs, then postprocesses;
* one "infer" thread runs the model, so ONNX Runtime uses exactly the threads it was configured with.

Every frame read ends exactly once, as a result or a counted drop: the outcome is published in the
same server-side script that XACKs the entry, and only if that XACK removed it (``wire.outcomes``).
Frames whose deadline passed are dropped (DEADLINE), checked at read and again right before inference.
Entries left pending by a dead worker are claimed (XAUTOCLAIM) and processed or dropped as stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray
from redis.asyncio import Redis

from inference.consumer import Entry, StreamConsumer
from inference.errors import ImageError, ImageTooLargeError
from inference.images import decode_image
from runtime.redis import REDIS_DOWN_ERRORS, Outage
from wire.config import WorkerSettings
from wire.keys import Keys
from wire.liveness import WorkerInfo, beat
from wire.messages import (
    Detection,
    DropReason,
    DropRecord,
    DropSite,
    FrameMessage,
    MalformedMessageError,
    ResultMessage,
    Timings,
    now_ms,
    partial_ids,
)
from wire.metrics import (
    BATCH_SIZE,
    FRAMES_IN,
    FRAMES_INFERRED,
    INFERENCE_SECONDS,
    MODEL_VERSION,
    QUEUE_WAIT_SECONDS,
)
from wire.outcomes import Ack, count_drop, publish_outcomes
from wire.tasks import cancel_and_wait

if TYPE_CHECKING:
    from inference.detector import Prepared

log = logging.getLogger(__name__)

Image = NDArray[np.uint8]
Outputs = list[NDArray[np.float32]]
ResultHook = Callable[[Image, ResultMessage], None]
"""Called off the event loop with the decoded frame and its result (hard-example sampling, ...)."""

READ_BLOCK_MS = 500
"""Longest a read waits for frames: also how soon a stop request is noticed by the reader."""
MAX_SKIP_READ = 64
"""Most entries one read takes while it is dropping a backlog of stale frames."""
MAX_PENDING_HOOK_CALLS = 8
"""Result hooks are skipped while this many calls are queued: a slow hook must not hold frames in memory."""
SHUTDOWN_REDIS_TIMEOUT_S = 5.0
"""How long the last Redis steps of a shutdown (drop leftovers, leave group, forget heartbeat) may take."""

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


@dataclass
class Job:
    """A frame the worker accepted, on its way through decode, inference and publication."""

    entry_id: str
    frame: FrameMessage
    read_ms: float
    image: Image | None = None
    prepared: Prepared | None = None
    prepared_by: FrameDetector | None = None
    decode_ms: float = 0.0
    preprocess_ms: float = 0.0
    active: bool = False
    """Decoding, waiting for or in the model, or being published (not waiting in the backlog)."""


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


class Worker:
    """One replica of a model's workers. ``await run()`` until ``stop()``; see the module docstring."""

    def __init__(
        self,
        redis: Redis,
        detector: FrameDetector,
        settings: WorkerSettings | None = None,
        *,
        keys: Keys | None = None,
        worker_id: str | None = None,
        model_version: str | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings or WorkerSettings()
        self.keys = keys or Keys(self.settings.key_prefix)
        self.detector = detector
        self.model = detector.name
        """The model name: it picks the stream; a hot swap keeps it."""
        self.model_version = model_version or detector.version
        self.id = worker_id or self.settings.worker_id or default_worker_id()
        self.batch = self.settings.batch
        self.capacity = 2 * self.batch
        """Frames held at once: one batch in the model, the next one being decoded."""
        self.on_result: list[ResultHook] = []
        self.frames_done = 0
        self.started_ms = now_ms()
        self.consumer = StreamConsumer(redis, self.keys.frames(self.model), self.id)
        self._jobs: dict[str, Job | None] = {}  # entry id -> job (None while its intake decides)
        self._backlog: deque[Job] = deque()  # accepted by a bulk read, not decoded until there is room
        self._active = 0  # jobs that left the backlog and have not ended
        self._ready: deque[Job] = deque()  # decoded and prepared, in stream order
        self._ready_event = asyncio.Event()
        self._freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._intake_lock = asyncio.Lock()  # a read and an own-pending sweep must not both take an entry
        self._swap: tuple[FrameDetector, str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{self.model}")
        self._cpu_pool = ThreadPoolExecutor(1, thread_name_prefix=f"decode-{self.model}")
        self._hook_pool = ThreadPoolExecutor(1, thread_name_prefix="result-hooks")
        self._hook_calls = 0
        self._giving_up = False  # set at the end of a shutdown: stop retrying publications

    # --- the public controls ----------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Frames read and not ended yet."""
        return len(self._jobs)

    def stop(self) -> None:
        """Ask the worker to finish its in-flight frames and return from ``run``. Thread-safe, idempotent."""
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._stopping.set)
        else:
            self._stopping.set()

    def request_swap(self, detector: FrameDetector, version: str | None = None) -> None:
        """Serve ``detector`` from the next batch on (load it beside the current one first). Thread-safe.

        No frame is dropped for a swap: frames prepared for the old model are prepared again.
        """
        self._swap = (detector, version or detector.version)

    async def run(self) -> None:
        """Serve frames until ``stop()``; then finish (or drop as SHUTDOWN) what is in flight and leave."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await self._in_thread(self._infer_pool, self.detector.warmup)
        if not await self._until_done("creating the consumer group", self.consumer.ensure_group):
            await self._close()
            return
        MODEL_VERSION.labels(model=self.model, version=self.model_version, worker=self.id).set(1)
        log.info(
            "worker %s serving %s %s from %s (batch %d, %s)",
            self.id,
            self.model,
            self.model_version,
            self.consumer.stream,
            self.batch,
            self.detector.provider,
        )
        background = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._claim_loop(), name="claims"),
        ]
        inferer = asyncio.create_task(self._infer_loop(), name="infer")
        try:
            await self._read_loop()
        finally:
            await self._shutdown(background, inferer)

    # --- reading ----------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        outage = Outage("reading frames", log)
        stale_reads = 0
        while not self._stopping.is_set():
            free = self.capacity - len(self._jobs)
            if free <= 0:
                self._freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), READ_BLOCK_MS / 1000)
                continue
            try:
                async with self._intake_lock:
                    # One read is one batch: its frames are decoded together and inferred together.
                    # Reads that found only stale frames used no capacity: while they do, read more at
                    # once, so that a backlog is dropped in bulk and the model is not kept waiting.
                    count = min(free, self.batch) if not stale_reads else min(MAX_SKIP_READ, 2**stale_reads)
                    entries = await self.consumer.read(count, READ_BLOCK_MS)
                    self._register(entries)
            except REDIS_DOWN_ERRORS as exc:
                await outage.failed(exc)
                continue
            outage.ok()
            accepted = await self._take(entries)
            stale_reads = min(stale_reads + 1, 8) if entries and not accepted else 0

    def _register(self, entries: list[Entry]) -> None:
        for entry_id, _fields in entries:
            self._jobs.setdefault(entry_id, None)

    async def _take(self, entries: list[Entry]) -> int:
        """Refuse what cannot be inferred (counted drops, one round trip) and start decoding the rest.

        Returns how many frames were accepted.
        """
        jobs: list[Job] = []
        refused: list[tuple[str, ResultMessage | DropRecord]] = []
        for entry_id, fields in entries:
            taken = await self._accept(entry_id, fields)
            if isinstance(taken, Job):
                jobs.append(taken)
            elif isinstance(taken, DropRecord):
                refused.append((entry_id, taken))
        self._backlog.extend(jobs)
        self._feed()
        if refused:
            await self._end(refused)
        return len(jobs)

    async def _accept(self, entry_id: str, fields: dict[bytes, bytes]) -> Job | DropRecord | None:
        """The entry's job, the drop record that refuses it, or None once it was counted without one."""
        FRAMES_IN.labels(site=DropSite.WORKER.value, model=self.model).inc()
        if not fields:
            await self._end_unroutable(entry_id, DropReason.TRIMMED)
            return None
        try:
            frame = FrameMessage.from_fields(fields)
        except MalformedMessageError as exc:
            session, seq, capture_ms, _model = partial_ids(fields)
            if not session:
                log.warning("dropping entry %s: %s (no session to tell)", entry_id, exc)
                await self._end_unroutable(entry_id, DropReason.MALFORMED)
                return None
            return self._drop_record(session, seq, capture_ms, DropReason.MALFORMED, str(exc))
        refusal = self._refusal(frame)
        if refusal is not None:
            return self._drop(frame, *refusal)
        job = Job(entry_id=entry_id, frame=frame, read_ms=now_ms())
        QUEUE_WAIT_SECONDS.labels(model=self.model).observe(max(0.0, job.read_ms - frame.submitted_ms) / 1000)
        self._jobs[entry_id] = job
        return job

    def _refusal(self, frame: FrameMessage) -> tuple[DropReason, str] | None:
        """Why a parsed frame cannot be inferred, before spending any work on it."""
        limits = self.settings
        if frame.model != self.model:
            return (
                DropReason.UNKNOWN_MODEL,
                f"frame asks for model {frame.model!r}; this stream serves {self.model}",
            )
        if len(frame.jpeg) > limits.max_image_bytes:
            return DropReason.TOO_LARGE, f"image is {len(frame.jpeg)} bytes, over {limits.max_image_bytes}"
        if max(frame.width, frame.height) > limits.max_image_side:
            size = f"{frame.width}x{frame.height}"
            return DropReason.TOO_LARGE, f"image is {size}, over {limits.max_image_side} px per side"
        late = now_ms() - frame.deadline_ms
        if late > 0:
            return DropReason.DEADLINE, f"read {late:.0f} ms after its deadline"
        return None

    # --- decoding and inference -------------------------------------------------------------------
    def _decode_and_prepare_all(self, jobs: list[Job], detector: FrameDetector) -> list[Exception | None]:
        failures: list[Exception | None] = []
        for job in jobs:
            try:
                self._decode_and_prepare(job, detector)
                failures.append(None)
            except Exception as exc:
                failures.append(exc)
        return failures

    def _decode_and_prepare(self, job: Job, detector: FrameDetector) -> None:
        started = time.perf_counter()
        image = decode_image(
            job.frame.jpeg, max_bytes=self.settings.max_image_bytes, max_side=self.settings.max_image_side
        )
        job.decode_ms = _elapsed_ms(started)
        started = time.perf_counter()
        job.prepared, job.prepared_by = detector.prepare(image), detector
        job.preprocess_ms = _elapsed_ms(started)
        job.image = image

    async def _prepare(self, jobs: list[Job]) -> None:
        """Decode and prepare a group of frames on the cpu thread; refuse the ones that fail."""
        try:
            failures = await self._in_thread(
                self._cpu_pool, self._decode_and_prepare_all, jobs, self.detector
            )
        except RuntimeError as exc:  # the pool was shut down under us: the worker is stopping
            failures = [exc for _job in jobs]
        refused = []
        for job, failure in zip(jobs, failures, strict=True):
            if failure is None:
                self._ready.append(job)
            else:
                refused.append((job.entry_id, self._drop(job.frame, *self._image_refusal(job, failure))))
        self._ready_event.set()
        if refused:
            await self._end(refused)

    def _image_refusal(self, job: Job, failure: Exception) -> tuple[DropReason, str]:
        if isinstance(failure, ImageTooLargeError):
            return DropReason.TOO_LARGE, str(failure)
        if isinstance(failure, ImageError):
            return DropReason.UNDECODABLE, str(failure)
        log.error("preparing frame %s/%d failed: %r", job.frame.session, job.frame.seq, failure)
        return DropReason.INFERENCE_ERROR, repr(failure)

    async def _next_batch(self) -> list[Job]:
        """Up to ``batch`` prepared frames, waiting for the first; applies a requested swap first."""
        while True:
            self._apply_swap()
            if not self._ready:
                self._ready_event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready_event.wait(), READ_BLOCK_MS / 1000)
                continue
            jobs = [self._ready.popleft() for _ in range(min(self.batch, len(self._ready)))]
            self._apply_swap()
            return jobs

    async def _infer_loop(self) -> None:
        while True:
            jobs = await self._next_batch()
            now = now_ms()
            stale = [job for job in jobs if now > job.frame.deadline_ms]
            fresh = [job for job in jobs if now <= job.frame.deadline_ms]
            if stale:
                drops = [
                    (j.entry_id, self._drop(j.frame, DropReason.DEADLINE, "deadline passed before inference"))
                    for j in stale
                ]
                self._spawn(self._end(drops))
            if not fresh:
                continue
            detector, version = self.detector, self.model_version
            started = time.perf_counter()
            try:
                outputs = await self._in_thread(self._infer_pool, self._run_model, detector, fresh)
            except Exception as exc:
                log.exception("inference of %d frame(s) failed", len(fresh))
                self._spawn(
                    self._end(
                        [
                            (j.entry_id, self._drop(j.frame, DropReason.INFERENCE_ERROR, repr(exc)))
                            for j in fresh
                        ]
                    )
                )
                continue
            inference_ms = _elapsed_ms(started) / len(fresh)
            self._observe_batch(detector, len(fresh), inference_ms)
            self._spawn(self._finish(fresh, outputs, detector, version, inference_ms))

    @staticmethod
    def _run_model(detector: FrameDetector, jobs: list[Job]) -> list[Outputs]:
        for job in jobs:  # prepared for a model swapped out since: prepare again (rare)
            if job.prepared_by is not detector and job.image is not None:
                job.prepared, job.prepared_by = detector.prepare(job.image), detector
        return detector.run([job.prepared for job in jobs if job.prepared is not None])

    def _call_size(self, detector: FrameDetector, frames: int) -> int:
        return frames if detector.max_batch == 0 else min(frames, detector.max_batch)

    def _observe_batch(self, detector: FrameDetector, frames: int, inference_ms: float) -> None:
        size = self._call_size(detector, frames)
        for _call in range(-(-frames // size)):
            BATCH_SIZE.labels(model=self.model).observe(size)
        for _frame in range(frames):
            INFERENCE_SECONDS.labels(model=self.model).observe(inference_ms / 1000)

    @staticmethod
    def _postprocess(
        detector: FrameDetector, jobs: list[Job], outputs: list[Outputs]
    ) -> list[tuple[list[Detection], float]]:
        found = []
        for job, output in zip(jobs, outputs, strict=True):
            started = time.perf_counter()
            assert job.prepared is not None
            found.append((detector.postprocess(output, job.prepared), _elapsed_ms(started)))
        return found

    async def _finish(
        self,
        jobs: list[Job],
        outputs: list[Outputs],
        detector: FrameDetector,
        version: str,
        inference_ms: float,
    ) -> None:
        try:
            found = await self._in_thread(self._cpu_pool, self._postprocess, detector, jobs, outputs)
        except Exception as exc:
            log.exception("postprocessing %d frame(s) failed", len(jobs))
            await self._end(
                [(j.entry_id, self._drop(j.frame, DropReason.INFERENCE_ERROR, repr(exc))) for j in jobs]
            )
            return
        call_size = self._call_size(detector, len(jobs))
        results = [
            ResultMessage(
                session=job.frame.session,
                seq=job.frame.seq,
                capture_ms=job.frame.capture_ms,
                model=self.model,
                model_version=version,
                worker=self.id,
                width=job.frame.width,
                height=job.frame.height,
                detections=detections,
                timings=Timings(
                    queue_ms=max(0.0, job.read_ms - job.frame.submitted_ms),
                    decode_ms=job.decode_ms,
                    preprocess_ms=job.preprocess_ms,
                    inference_ms=inference_ms,
                    postprocess_ms=post_ms,
                ),
                batch_size=call_size,
            )
            for job, (detections, post_ms) in zip(jobs, found, strict=True)
        ]
        ended = await self._end([(job.entry_id, result) for job, result in zip(jobs, results, strict=True)])
        for job, result, done in zip(jobs, results, ended, strict=True):
            if done:
                FRAMES_INFERRED.labels(model=self.model, worker=self.id).inc()
                if job.image is not None:
                    self._run_hooks(job.image, result)

    # --- ending frames ----------------------------------------------------------------------------
    def _drop_record(
        self, session: str, seq: int, capture_ms: float, reason: DropReason, detail: str
    ) -> DropRecord:
        return DropRecord(
            session=session,
            seq=seq,
            capture_ms=capture_ms,
            model=self.model,
            reason=reason,
            site=DropSite.WORKER,
            worker=self.id,
            detail=detail,
        )

    def _drop(self, frame: FrameMessage, reason: DropReason, detail: str) -> DropRecord:
        return self._drop_record(frame.session, frame.seq, frame.capture_ms, reason, detail)

    async def _end(self, outcomes: Sequence[tuple[str, ResultMessage | DropRecord]]) -> list[bool]:
        """Ack and publish, retrying through Redis outages; False where the frame was ended elsewhere."""
        items = [(o, Ack(self.consumer.stream, self.consumer.group, entry_id)) for entry_id, o in outcomes]
        outage = Outage("publishing outcomes", log)
        ended = [False] * len(items)
        try:
            while True:
                try:
                    ended = await publish_outcomes(
                        self.redis,
                        self.keys,
                        items,
                        maxlen=self.settings.result_stream_maxlen,
                        ttl_s=self.settings.result_stream_ttl_s,
                    )
                    outage.ok()
                    break
                except REDIS_DOWN_ERRORS as exc:
                    if self._giving_up:
                        break  # left pending in Redis: a live worker will claim it
                    await outage.failed(exc)
        except Exception:
            log.exception("publishing %d outcome(s) failed; their entries stay pending", len(items))
        finally:
            self._forget([entry_id for entry_id, _o in outcomes], ended)
        for (entry_id, _outcome), done in zip(outcomes, ended, strict=True):
            if not done:
                log.debug(
                    "entry %s was no longer pending: already ended elsewhere, or Redis lost it", entry_id
                )
        return ended

    async def _end_unroutable(self, entry_id: str, reason: DropReason) -> None:
        """Count and ack an entry whose session is unknown, so that no drop record can be sent."""
        ack = Ack(self.consumer.stream, self.consumer.group, entry_id)
        outage = Outage("counting a drop", log)
        done = False
        try:
            while True:
                try:
                    done = await count_drop(
                        self.redis, self.keys, model=self.model, reason=reason, site=DropSite.WORKER, ack=ack
                    )
                    outage.ok()
                    break
                except REDIS_DOWN_ERRORS as exc:
                    if self._giving_up:
                        break
                    await outage.failed(exc)
        finally:
            self._forget([entry_id], [done])

    def _forget(self, entry_ids: list[str], ended: list[bool]) -> None:
        for entry_id in entry_ids:
            job = self._jobs.pop(entry_id, None)
            if job is not None and job.active:
                self._active -= 1
        self.frames_done += sum(ended)
        self._freed.set()
        self._feed()

    def _feed(self) -> None:
        """Start decoding backlog frames while there is room, in groups of ``batch``; drop the stale ones.

        Decoding only what the model can take next keeps the cpu thread free for postprocessing, so a
        bulk read under overload does not delay the results of the frames being inferred.
        """
        if self._giving_up:
            return
        stale: list[Job] = []
        while self._backlog and self._active < self.capacity:
            group: list[Job] = []
            while self._backlog and len(group) < self.batch and self._active + len(group) < self.capacity:
                job = self._backlog.popleft()
                (stale if now_ms() > job.frame.deadline_ms else group).append(job)
            for job in group:
                job.active = True
            self._active += len(group)
            if group:
                self._spawn(self._prepare(group))
        if stale:
            detail = "deadline passed while it waited on the worker"
            self._spawn(
                self._end([(j.entry_id, self._drop(j.frame, DropReason.DEADLINE, detail)) for j in stale])
            )

    def _run_hooks(self, image: Image, result: ResultMessage) -> None:
        if not self.on_result:
            return
        if self._hook_calls >= MAX_PENDING_HOOK_CALLS:
            log.debug("result hooks are behind; skipping frame %s/%d", result.session, result.seq)
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
                log.exception("result hook %r failed", hook)

    # --- heartbeats, claims, swaps ----------------------------------------------------------------
    def info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            model=self.model,
            model_version=self.model_version,
            pid=os.getpid(),
            provider=self.detector.provider,
            batch=self.batch,
            threads=self.settings.threads,
            in_flight=len(self._jobs),
            frames_done=self.frames_done,
            started_ms=self.started_ms,
        )

    async def _heartbeat_loop(self) -> None:
        outage = Outage("sending heartbeats", log)
        while True:
            try:
                await beat(self.redis, self.keys.worker(self.id), self.info(), self.settings.heartbeat_ttl_s)
                outage.ok()
            except REDIS_DOWN_ERRORS as exc:
                outage.note(exc)
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def _claim_loop(self) -> None:
        """Take over frames left pending by dead workers (and any of ours that got lost in transit)."""
        outage = Outage("claiming idle frames", log)
        while True:
            await asyncio.sleep(self.settings.claim_interval_s)
            try:
                async with self._intake_lock:
                    claimed = await self.consumer.claim_idle(
                        self.settings.claim_idle_ms, max(16, self.capacity)
                    )
                    # Fetch the fields (JPEGs) only when something it holds is not in flight here.
                    orphans: list[Entry] = []
                    if any(i not in self._jobs for i in await self.consumer.own_pending_ids()):
                        orphans = [
                            (i, f) for i, f in await self.consumer.own_pending() if i not in self._jobs
                        ]
                    self._register(orphans)
                outage.ok()
            except REDIS_DOWN_ERRORS as exc:
                outage.note(exc)
                continue
            if claimed or orphans:
                log.info("claimed %d idle frame(s); handling %d pending frame(s)", len(claimed), len(orphans))
            await self._take(orphans)

    def _apply_swap(self) -> None:
        swap, self._swap = self._swap, None
        if swap is None:
            return
        old_version = self.model_version
        self.detector, self.model_version = swap
        with contextlib.suppress(KeyError):
            MODEL_VERSION.remove(self.model, old_version, self.id)
        MODEL_VERSION.labels(model=self.model, version=self.model_version, worker=self.id).set(1)
        log.info("model %s swapped: %s -> %s", self.model, old_version, self.model_version)

    # --- plumbing ---------------------------------------------------------------------------------
    async def _in_thread(self, pool: ThreadPoolExecutor, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, func, *args)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _until_done(self, what: str, step: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Retry ``step`` through Redis outages until it succeeds (True) or the worker is stopped (False)."""
        outage = Outage(what, log)
        while not self._stopping.is_set():
            try:
                await step()
                outage.ok()
                return True
            except REDIS_DOWN_ERRORS as exc:
                await outage.failed(exc)
        return False

    async def _shutdown(self, background: list[asyncio.Task[None]], inferer: asyncio.Task[None]) -> None:
        grace = self.settings.shutdown_grace_s
        log.info(
            "worker %s stopping: finishing %d in-flight frame(s) (up to %.0f s)",
            self.id,
            len(self._jobs),
            grace,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained(), grace)
        await cancel_and_wait(*background, inferer)
        self._giving_up = True
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        await cancel_and_wait(*self._tasks)
        try:
            await asyncio.wait_for(self._leave(), SHUTDOWN_REDIS_TIMEOUT_S)
        except (*REDIS_DOWN_ERRORS, TimeoutError) as exc:
            log.warning("could not leave cleanly (redis: %s); pending frames will be claimed by others", exc)
        await self._close()
        log.info("worker %s stopped after %d frame(s)", self.id, self.frames_done)

    async def _drained(self) -> None:
        while self._jobs:
            self._freed.clear()
            await self._freed.wait()

    async def _leave(self) -> None:
        """Drop what this consumer still holds as SHUTDOWN, leave the group, forget the heartbeat."""
        left = await self.consumer.own_pending()
        if left:
            log.info("dropping %d frame(s) it could not finish as %s", len(left), DropReason.SHUTDOWN.value)
        self._giving_up = False  # these last publications may retry until the shutdown timeout
        for entry_id, fields in left:
            try:
                frame = FrameMessage.from_fields(fields)
            except MalformedMessageError:
                await self._end_unroutable(entry_id, DropReason.SHUTDOWN)
                continue
            await self._end([(entry_id, self._drop(frame, DropReason.SHUTDOWN, "the worker stopped"))])
        if await self.consumer.leave():
            log.info("left consumer group %s of %s", self.consumer.group, self.consumer.stream)
        await self.redis.delete(self.keys.worker(self.id))

    async def _close(self) -> None:
        with contextlib.suppress(KeyError):
            MODEL_VERSION.remove(self.model, self.model_version, self.id)
        for pool in (self._infer_pool, self._cpu_pool, self._hook_pool):
            pool.shutdown(wait=False, cancel_futures=True)
