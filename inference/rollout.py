"""Live rollout: a worker follows the model registry and switches to each promoted version.

The watcher listens on ``Keys.model_events()`` (a promotion publishes the model name) and also checks
the promoted version every ``poll_interval_s``, so that a missed message (Redis restart, subscription
gap) only delays a rollout. A new version is verified (sha256 of the file against the registry), loaded
beside the serving one and warmed up, all in a thread; only then is it handed to the worker, which
swaps between batches. A version that fails any step is refused with one clear log line and the worker
keeps serving what it has; the same file is not tried again until its registry entry changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from redis.asyncio import Redis

from runtime.redis import REDIS_DOWN_ERRORS
from wire.config import WorkerSettings
from wire.keys import Keys
from wire.registry import ModelVersion, promoted, resolve_path, sha256_file

log = logging.getLogger(__name__)


class SwapTarget(Protocol):
    """What the watcher needs of a worker (``inference.worker.Worker`` is one)."""

    model: str
    model_version: str

    def request_swap(self, detector: Any, version: str | None = None) -> None: ...


class WarmDetector(Protocol):
    def warmup(self) -> None: ...


class RefusedModelError(Exception):
    """A promoted version that this worker will not serve, with the reason."""


class RegistryWatcher:
    """Follows promotions of ``target.model`` and hands each verified, warmed-up detector to ``target``."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        target: SwapTarget,
        *,
        registry_dir: Path,
        load: Callable[[Path], WarmDetector],
        poll_interval_s: float = 5.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.target = target
        self.registry_dir = registry_dir
        self.load = load
        self.poll_interval_s = poll_interval_s
        self.requested: str | None = None
        """The version last handed to the worker (it applies it at its next batch)."""
        self.refused: dict[str, str] = {}
        """version -> sha256 of registry entries refused: not retried unless the entry changes."""

    async def run(self) -> None:
        """Check now, then on every promotion message and every poll interval, until cancelled."""
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.keys.model_events())
                await self.check()
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self.poll_interval_s
                    )
                    if message is None or _text(message.get("data")) == self.target.model:
                        await self.check()
            except REDIS_DOWN_ERRORS as exc:
                log.warning("registry watch: redis unavailable (%s); retrying", exc)
                await asyncio.sleep(min(self.poll_interval_s, 1.0))
            except Exception:  # a malformed registry entry must not end the watch (nor the worker)
                log.exception("registry watch failed; retrying in %.0f s", self.poll_interval_s)
                await asyncio.sleep(self.poll_interval_s)
            finally:
                with contextlib.suppress(*REDIS_DOWN_ERRORS, RuntimeError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def check(self) -> bool:
        """Adopt the promoted version if it is new to this worker; returns whether a swap was requested."""
        entry = await promoted(self.redis, self.keys, self.target.model)
        if entry is None or entry.version in (self.target.model_version, self.requested):
            return False
        if self.refused.get(entry.version) == entry.sha256:
            return False
        try:
            detector = await asyncio.to_thread(self._prepare, entry)
        except RefusedModelError as exc:
            self.refused[entry.version] = entry.sha256
            log.error(
                "refusing model %s version %s: %s; still serving %s",
                entry.name,
                entry.version,
                exc,
                self.target.model_version,
            )
            return False
        self.requested = entry.version
        self.target.request_swap(detector, entry.version)
        log.info(
            "model %s version %s loaded and warmed up; swapping from %s at the next batch",
            entry.name,
            entry.version,
            self.target.model_version,
        )
        return True

    def _prepare(self, entry: ModelVersion) -> WarmDetector:
        """Verify, load and warm up one version (blocking: runs in a thread beside the serving model)."""
        path = resolve_path(entry, self.registry_dir)
        try:
            digest = sha256_file(path)
        except OSError as exc:
            raise RefusedModelError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if digest != entry.sha256:
            raise RefusedModelError(
                f"{path} has sha256 {digest[:12]}..., the registry says {entry.sha256[:12]}..."
            )
        try:
            detector = self.load(path)
        except Exception as exc:
            raise RefusedModelError(f"{path} does not load: {_one_line(exc)}") from exc
        try:
            detector.warmup()
        except Exception as exc:
            raise RefusedModelError(f"{path} fails its warm-up run: {_one_line(exc)}") from exc
        return detector


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def start_watching(redis: Redis, target: SwapTarget, settings: WorkerSettings) -> asyncio.Task[None] | None:
    """The watcher task of a `lookout worker` (None when ``settings.watch_registry`` is off).

    New versions load with the worker's own provider, threads and thresholds.
    """
    if not settings.watch_registry:
        return None
    from inference.detector import Detector

    def load(path: Path) -> WarmDetector:
        return Detector.load(
            path, threads=settings.threads, provider=settings.provider, conf=settings.conf, nms=settings.nms
        )

    watcher = RegistryWatcher(
        redis,
        Keys(settings.key_prefix),
        target,
        registry_dir=settings.registry_dir,
        load=load,
        poll_interval_s=settings.registry_poll_s,
    )
    log.info("following promotions of %s in the registry (store %s)", target.model, settings.registry_dir)
    return asyncio.create_task(watcher.run(), name="registry-watch")
