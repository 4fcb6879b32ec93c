"""`lookout worker`: one inference worker process serving one model from its Redis frame stream."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import TYPE_CHECKING, Any

from runtime import bootstrap
from runtime.settings_cli import add_settings_arguments, load_settings
from wire.config import WorkerSettings

if TYPE_CHECKING:
    from inference.worker import Worker

log = logging.getLogger("lookout.worker")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `lookout worker`."""
    parser = subparsers.add_parser(
        "worker",
        help="run an inference worker for one model (a replica: start as many as you like)",
        description="Read frames of one model from Redis (consumer group), detect objects and publish "
        "each frame's result or counted drop to its session. Workers of one model share the load; "
        "a dead worker's frames are claimed by the live ones. Stop with Ctrl-C or SIGTERM: in-flight "
        "frames are finished first.",
    )
    add_settings_arguments(parser, WorkerSettings)
    parser.set_defaults(func=run_worker)


def settings_from(args: argparse.Namespace) -> WorkerSettings:
    """The worker's settings: LOOKOUT_* variables, overridden by the flags given; its id chosen."""
    settings = load_settings(WorkerSettings, args, command="worker")
    return settings.model_copy(update={"worker_id": bootstrap.service_id(settings.worker_id, with_pid=True)})


def run_worker(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    import cv2

    # The worker decodes and letterboxes on its one cpu thread, beside the model's thread(s). OpenCV's
    # own pool would add a thread per core to that and, with one worker per core, contend with the
    # other workers' models: about 0.5 ms of CPU per frame for nothing, under bench_pipeline's two workers.
    cv2.setNumThreads(1)
    from inference.detector import Detector

    detector = Detector.load(
        settings.model,
        model_dir=settings.model_dir,
        threads=settings.threads,
        provider=settings.provider,
        conf=settings.conf,
        nms=settings.nms,
    )
    bootstrap.serve_metrics(settings.metrics_port, service="worker")
    push = bootstrap.start_push(settings, service="worker")
    try:
        return asyncio.run(_serve(detector, settings))
    finally:
        push.stop()


async def _serve(detector: Any, settings: WorkerSettings) -> int:
    from inference.worker import Worker

    redis = await bootstrap.connect_redis(settings, service="worker")
    worker: Worker = Worker(redis, detector, settings)
    from inference.hard_examples import sampler_from_settings
    from inference.rollout import start_watching

    sampler = sampler_from_settings(settings)
    if sampler is not None:
        worker.on_result.append(sampler)
    watching = start_watching(redis, worker, settings)
    with bootstrap.stop_requested() as stop:
        stopper = asyncio.create_task(_stop_when(stop, worker))
        try:
            await worker.run()
        finally:
            stopper.cancel()
            if watching is not None:
                from wire.tasks import cancel_and_wait

                await cancel_and_wait(watching)
            await redis.aclose()
    return 0


async def _stop_when(stop: asyncio.Event, worker: Worker) -> None:
    await stop.wait()
    worker.stop()
