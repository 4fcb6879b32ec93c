"""The inference worker: reads a model's frame stream in the shared consumer group, detects, publishes.

It reads only as many frames as it can start now (``inference.scheduler`` decides), so that it never
reads far ahead and latency stays flat under overload; ``inference.pipeline`` takes them through the
intake, decoding and the model, and ``inference.ending`` ends each one exactly once, as a result or a
counted drop. This module is the wiring and the lifecycle: the reader, heartbeats, claims of entries
left pending by dead workers (XAUTOCLAIM), hot swaps, and a shutdown that finishes or drops (SHUTDOWN)
what is in flight and leaves the group.
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
from typing import Any

from redis.asyncio import Redis

from inference.consumer import Entry, StreamConsumer
from inference.ending import Ending, GaveUpError, retry
from inference.intake import Limits
from inference.pipeline import FrameDetector, Pipeline, ResultHook, wait_anew
from inference.scheduler import Job, Scheduler
from runtime.redis import REDIS_DOWN_ERRORS, Outage, heartbeat_loop
from wire.config import WorkerSettings
from wire.keys import Keys
from wire.liveness import WorkerInfo, beat
from wire.messages import DropReason, now_ms
from wire.metrics import MODEL_VERSION
from wire.tasks import cancel_and_wait

__all__ = ["FrameDetector", "Job", "ResultHook", "Worker", "default_worker_id"]

log = logging.getLogger(__name__)

READ_BLOCK_MS = 500
"""Longest a read waits for frames: also how soon a stop request is noticed by the reader."""
SHUTDOWN_REDIS_TIMEOUT_S = 5.0
"""How long the last Redis steps of a shutdown (finish publishing, drop leftovers, leave) may take."""


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


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
        self.settings = settings = settings or WorkerSettings()
        self.keys = keys or Keys(settings.key_prefix)
        self.detector = detector
        self.model = detector.name
        """The model name: it picks the stream; a hot swap keeps it."""
        self.model_version = model_version or detector.version
        self.id = worker_id or settings.worker_id or default_worker_id()
        self.batch = settings.batch
        self.scheduler = Scheduler(self.batch)
        self.started_ms = now_ms()
        self.consumer = StreamConsumer(redis, self.keys.frames(self.model), self.id)
        self.ending = Ending(
            redis, self.keys, settings, self.consumer, model=self.model, worker_id=self.id, log=log
        )
        limits = Limits(self.model, settings.max_image_bytes, settings.max_image_side)
        self.pipeline = Pipeline(self, self.scheduler, self.ending, limits, log)
        self.on_result: list[ResultHook] = self.pipeline.on_result
        self._stopping = asyncio.Event()  # set by stop()
        self._intake_lock = asyncio.Lock()  # a read and an own-pending sweep must not both take an entry
        self._swap: tuple[FrameDetector, str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    # --- the public controls ----------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Frames read and not ended yet."""
        return len(self.scheduler)

    @property
    def frames_done(self) -> int:
        """Frames this worker ended (results and drops)."""
        return self.pipeline.frames_done

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

    def apply_swap(self) -> None:
        """Switch to the requested detector, if any: the pipeline calls this between batches."""
        swap, self._swap = self._swap, None
        if swap is None:
            return
        old_version = self.model_version
        self.detector, self.model_version = swap
        with contextlib.suppress(KeyError):
            MODEL_VERSION.remove(self.model, old_version, self.id)
        MODEL_VERSION.labels(model=self.model, version=self.model_version, worker=self.id).set(1)
        log.info("model %s swapped: %s -> %s", self.model, old_version, self.model_version)

    async def run(self) -> None:
        """Serve frames until ``stop()``; then finish (or drop as SHUTDOWN) what is in flight and leave."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await self.pipeline.warmup()
        try:
            if self._stopping.is_set():
                raise GaveUpError("stopped before it started")
            outage = Outage("creating the consumer group", log)
            await retry(self.consumer.ensure_group, outage, self._stopping.is_set)
        except GaveUpError:
            self._close()
            return
        MODEL_VERSION.labels(model=self.model, version=self.model_version, worker=self.id).set(1)
        served = f"{self.model} {self.model_version} from {self.consumer.stream}"
        log.info("worker %s serving %s (batch %d, %s)", self.id, served, self.batch, self.detector.provider)
        background = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._claim_loop(), name="claims"),
            asyncio.create_task(self.pipeline.infer_loop(), name="infer"),
        ]
        try:
            await self._read_loop()
        finally:
            await self._shutdown(background)

    # --- reading, heartbeats, claims --------------------------------------------------------------
    async def _read_loop(self) -> None:
        outage = Outage("reading frames", log)
        while not self._stopping.is_set():
            count = self.scheduler.read_count()
            if not count:
                await wait_anew(self.pipeline.freed, READ_BLOCK_MS)
                continue
            try:
                async with self._intake_lock:
                    entries = await self.consumer.read(count, READ_BLOCK_MS)
                    self.scheduler.register(entry_id for entry_id, _fields in entries)
            except REDIS_DOWN_ERRORS as exc:
                await outage.failed(exc)
                continue
            outage.ok()
            self.scheduler.read_done(len(entries), await self.pipeline.take(entries))

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            model=self.model,
            model_version=self.model_version,
            pid=os.getpid(),
            provider=self.detector.provider,
            batch=self.batch,
            threads=self.settings.threads,
            in_flight=len(self.scheduler),
            frames_done=self.frames_done,
            started_ms=self.started_ms,
        )

    async def _heartbeat_loop(self) -> None:
        await heartbeat_loop(
            lambda: beat(self.redis, self.keys.worker(self.id), self.info(), self.settings.heartbeat_ttl_s),
            self.settings.heartbeat_interval_s,
            Outage("sending heartbeats", log),
        )

    async def _claim_loop(self) -> None:
        """Take over frames left pending by dead workers (and any of ours that got lost in transit)."""
        outage = Outage("claiming idle frames", log)
        held = self.scheduler.holds
        while True:
            await asyncio.sleep(self.settings.claim_interval_s)
            try:
                async with self._intake_lock:
                    limit = max(16, self.scheduler.capacity)
                    claimed = await self.consumer.claim_idle(self.settings.claim_idle_ms, limit)
                    # Fetch the fields (JPEGs) only when something it holds is not in flight here.
                    orphans: list[Entry] = []
                    if not all(held(i) for i in await self.consumer.own_pending_ids()):
                        orphans = [(i, f) for i, f in await self.consumer.own_pending() if not held(i)]
                    self.scheduler.register(entry_id for entry_id, _fields in orphans)
                outage.ok()
            except REDIS_DOWN_ERRORS as exc:
                outage.note(exc)
                continue
            if claimed or orphans:
                log.info("claimed %d idle frame(s); handling %d pending frame(s)", len(claimed), len(orphans))
            await self.pipeline.take(orphans)

    # --- shutdown ---------------------------------------------------------------------------------
    async def _shutdown(self, background: list[asyncio.Task[Any]]) -> None:
        grace = self.settings.shutdown_grace_s
        held = len(self.scheduler)
        log.info("worker %s stopping: finishing %d in-flight frame(s) (up to %.0f s)", self.id, held, grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pipeline.drained(), grace)
        await cancel_and_wait(*background)
        # Give up on what is still held: decode nothing more, and retry no publication past the deadline.
        self.scheduler.close()
        deadline = time.monotonic() + SHUTDOWN_REDIS_TIMEOUT_S
        self.ending.give_up_at(deadline)
        if self.pipeline.tasks:
            await asyncio.wait(self.pipeline.tasks, timeout=1.0)  # the decodes and publications running
        await cancel_and_wait(*self.pipeline.tasks)
        try:
            await asyncio.wait_for(self._leave(), max(0.0, deadline - time.monotonic()))
        except (*REDIS_DOWN_ERRORS, TimeoutError) as exc:
            log.warning("could not leave cleanly (redis: %s); pending frames will be claimed by others", exc)
        self._close()
        log.info("worker %s stopped after %d frame(s)", self.id, self.frames_done)

    async def _leave(self) -> None:
        """Drop what this consumer still holds as SHUTDOWN, leave the group, forget the heartbeat."""
        left = await self.consumer.own_pending()
        if left:
            log.info("dropping %d frame(s) it could not finish as %s", len(left), DropReason.SHUTDOWN.value)
        await self.pipeline.drop_all(left, DropReason.SHUTDOWN, "the worker stopped")
        if await self.consumer.leave():
            log.info("left consumer group %s of %s", self.consumer.group, self.consumer.stream)
        await self.redis.delete(self.keys.worker(self.id))

    def _close(self) -> None:
        with contextlib.suppress(KeyError):  # never set if it stopped before serving
            MODEL_VERSION.remove(self.model, self.model_version, self.id)
        self.pipeline.close()
