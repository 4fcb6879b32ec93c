"""`lookout worker`: one inference worker process serving one model from its Redis frame stream."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Any

from wire.config import WorkerSettings, describe_invalid
from wire.errors import LookoutError

if TYPE_CHECKING:
    from inference.worker import Worker

log = logging.getLogger("lookout.worker")


class WorkerConfigError(LookoutError):
    """An option or LOOKOUT_* variable of the worker has a value it cannot use."""


# flag -> WorkerSettings field; every flag defaults to the settings (LOOKOUT_* variables, then built-ins).
FLAGS: dict[str, tuple[str, type]] = {
    "--model": ("model", str),
    "--redis": ("redis_url", str),
    "--batch": ("batch", int),
    "--threads": ("threads", int),
    "--conf": ("conf", float),
    "--nms": ("nms", float),
    "--provider": ("provider", str),
    "--model-dir": ("model_dir", str),
    "--id": ("worker_id", str),
    "--metrics-port": ("metrics_port", int),
    "--claim-idle-ms": ("claim_idle_ms", int),
    "--claim-interval-s": ("claim_interval_s", float),
    "--shutdown-grace-s": ("shutdown_grace_s", float),
    "--key-prefix": ("key_prefix", str),
    "--registry-dir": ("registry_dir", str),
    "--watch-registry": ("watch_registry", str),
    "--registry-poll-s": ("registry_poll_s", float),
    "--hard-examples": ("hard_examples_dir", str),
    "--hard-examples-low": ("hard_examples_low", float),
    "--hard-examples-high": ("hard_examples_high", float),
    "--hard-examples-max": ("hard_examples_max", int),
    "--hard-examples-every": ("hard_examples_every", int),
}


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
    fields = WorkerSettings.model_fields
    for flag, (name, kind) in FLAGS.items():
        info = fields[name]
        env = f"LOOKOUT_{name.upper()}"
        default = info.default if info.default not in (None, "") else "none"
        parser.add_argument(
            flag,
            dest=name,
            type=kind,
            default=None,
            help=f"{info.description} (default: ${env} or {default})",
        )
    parser.set_defaults(func=run_worker)


def settings_from(args: argparse.Namespace) -> WorkerSettings:
    """The worker's settings: LOOKOUT_* variables, overridden by the flags given."""
    from pydantic import ValidationError

    overrides: dict[str, Any] = {name: getattr(args, name) for name, _kind in FLAGS.values()}
    try:
        return WorkerSettings(**{name: value for name, value in overrides.items() if value is not None})
    except ValidationError as exc:
        raise WorkerConfigError(f"invalid worker setting {describe_invalid(exc)}") from exc


def run_worker(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    from redis.asyncio import Redis

    try:
        redis = Redis.from_url(settings.redis_url)
    except ValueError as exc:
        raise WorkerConfigError(f"invalid Redis URL {settings.redis_url!r}: {exc}") from exc
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
    if settings.metrics_port:
        from wire.metrics import start_metrics_server

        try:
            start_metrics_server(settings.metrics_port)
        except OSError as exc:
            raise WorkerConfigError(f"cannot serve /metrics on port {settings.metrics_port}: {exc}") from exc
        log.info("serving Prometheus metrics on :%d/metrics", settings.metrics_port)
    from wire.influx import start_influx_push

    push = start_influx_push(settings, service="worker")  # a no-op unless LOOKOUT_INFLUX_URL is set
    try:
        return asyncio.run(_serve(redis, detector, settings))
    finally:
        push.stop()


async def _serve(redis: Any, detector: Any, settings: WorkerSettings) -> int:
    from inference.worker import Worker

    worker: Worker = Worker(redis, detector, settings)
    from inference.hard_examples import sampler_from_settings
    from inference.rollout import start_watching

    sampler = sampler_from_settings(settings)
    if sampler is not None:
        worker.on_result.append(sampler)
    watching = start_watching(redis, worker, settings)
    loop = asyncio.get_running_loop()

    def request_stop(sig: signal.Signals) -> None:
        log.info("received %s: stopping", sig.name)
        worker.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, request_stop, sig)
    try:
        await worker.run()
    finally:
        if watching is not None:
            from wire.tasks import cancel_and_wait

            await cancel_and_wait(watching)
        await redis.aclose()
    return 0
