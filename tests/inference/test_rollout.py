"""Live rollout: the registry watcher against a real Redis (unit), and real `lookout worker` processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from inference.rollout import RegistryWatcher
from tests.support.processes import wait_until
from wire import registry
from wire.keys import Keys


class FakeWorker:
    """Records swaps and applies them at once (the real worker applies them at its next batch)."""

    def __init__(self) -> None:
        self.model = "m"
        self.model_version = "base"
        self.swaps: list[tuple[Any, str | None]] = []

    def request_swap(self, detector: Any, version: str | None = None) -> None:
        self.swaps.append((detector, version))
        self.model_version = version or "?"


class FakeDetector:
    def __init__(self, path: Path, fail_warmup: bool) -> None:
        self.path = path
        self.fail_warmup = fail_warmup
        self.warmed = False

    def warmup(self) -> None:
        if self.fail_warmup:
            raise RuntimeError("Non-zero status code returned while running Conv node")
        self.warmed = True


def _loader(loaded: list[Path]) -> Any:
    def load(path: Path) -> FakeDetector:
        loaded.append(path)
        content = path.read_bytes()
        if content.startswith(b"broken"):
            raise ValueError("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model failed")
        return FakeDetector(path, fail_warmup=content.startswith(b"nowarm"))

    return load


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, content in {
        "good": b"good model",
        "broken": b"broken model",
        "nowarm": b"nowarm model",
    }.items():
        out[name] = tmp_path / f"{name}.onnx"
        out[name].write_bytes(content)
    return out


async def test_promotion_is_verified_loaded_warmed_and_handed_over(
    redis: Redis, keys: Keys, tmp_path: Path, files: dict[str, Path]
) -> None:
    store = tmp_path / "store"
    worker = FakeWorker()
    loaded: list[Path] = []
    watcher = RegistryWatcher(redis, keys, worker, registry_dir=store, load=_loader(loaded))
    assert not await watcher.check()  # nothing promoted: keep serving
    entry = await registry.register(redis, keys, store, "m", files["good"])
    await registry.promote(redis, keys, "m", entry.version)
    assert await watcher.check()
    ((detector, version),) = worker.swaps
    assert version == "v1" and detector.warmed and loaded == [store / "m" / "v1.onnx"]
    assert not await watcher.check()  # already serving it


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("broken", "does not load: ValueError: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF"),
        ("nowarm", "fails its warm-up run: RuntimeError"),
        ("tampered", "has sha256"),
        ("missing", "cannot read"),
    ],
)
async def test_a_bad_version_is_refused_and_the_old_one_kept(
    redis: Redis,
    keys: Keys,
    tmp_path: Path,
    files: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
    kind: str,
    reason: str,
) -> None:
    store = tmp_path / "store"
    worker = FakeWorker()
    loaded: list[Path] = []
    watcher = RegistryWatcher(redis, keys, worker, registry_dir=store, load=_loader(loaded))
    entry = await registry.register(
        redis, keys, store, "m", files["good" if kind in ("tampered", "missing") else kind]
    )
    stored = registry.resolve_path(entry, store)
    if kind == "tampered":
        stored.write_bytes(b"good model, changed after registration")
    if kind == "missing":
        stored.unlink()
    await registry.promote(redis, keys, "m", "v1")
    with caplog.at_level(logging.ERROR, logger="inference.rollout"):
        assert not await watcher.check()
    assert worker.swaps == [] and worker.model_version == "base"
    (line,) = [r.getMessage() for r in caplog.records]
    assert (
        line.startswith("refusing model m version v1: ")
        and reason in line
        and line.endswith("still serving base")
    )
    tries = len(loaded)
    assert not await watcher.check()  # refused once, not reloaded on every check
    assert len(loaded) == tries


async def test_pubsub_and_poll_drive_the_watcher(
    redis: Redis, keys: Keys, tmp_path: Path, files: dict[str, Path]
) -> None:
    store = tmp_path / "store"
    worker = FakeWorker()
    loaded: list[Path] = []
    # A poll interval far beyond the test: only the promotion message can trigger the check in time.
    watcher = RegistryWatcher(
        redis, keys, worker, registry_dir=store, load=_loader(loaded), poll_interval_s=300
    )
    task = asyncio.create_task(watcher.run())
    try:
        await wait_until(lambda: _subscribed(redis, keys), timeout=30, what="the watcher's subscription")
        for _ in range(2):
            await registry.register(redis, keys, store, "m", files["good"])
        await registry.promote(redis, keys, "m", "v1")
        await wait_until(lambda: _is(worker, "v1"), timeout=30, what="the swap to v1")
        await registry.promote(redis, keys, "m", "v2")
        await wait_until(lambda: _is(worker, "v2"), timeout=30, what="the swap to v2")
        await registry.rollback(redis, keys, "m")
        await wait_until(lambda: _is(worker, "v1"), timeout=30, what="the rollback to v1")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _subscribed(redis: Redis, keys: Keys) -> bool:
    counts = await redis.pubsub_numsub(keys.model_events())
    return bool(counts and counts[0][1] >= 1)


async def _is(worker: FakeWorker, version: str) -> bool:
    return worker.model_version == version


# --- real `lookout worker` processes under load ------------------------------------------------------
def _versioned_copy(source: Path, target: Path, version: str) -> Path:
    """The same weights with other metadata: another file (sha256) that serves the same detections."""
    import onnx

    model = onnx.load(str(source))
    entry = model.metadata_props.add()
    entry.key, entry.value = "lookout_build", version
    onnx.save(model, str(target))
    return target


def _truncated_copy(source: Path, target: Path) -> Path:
    """A truncated upload: the registry accepts it (its sha256 is what was copied), workers cannot load it."""
    target.write_bytes(source.read_bytes()[:200_000])
    return target


async def _versions(redis: Redis, keys: Keys) -> dict[str, str]:
    from wire.liveness import live_workers

    return {w.id: w.model_version for w in await live_workers(redis, keys, "yolox_nano")}


async def test_promotion_reaches_running_workers_under_load_without_losing_frames(
    redis: Redis, redis_server: Any, keys: Keys, tmp_path: Path, model_path: Path, images_dir: Path
) -> None:
    import cv2

    from tests.support.images import imread
    from tests.support.processes import LookoutProcess
    from wire.client import FrameClient
    from wire.messages import ResultMessage, now_ms

    store = tmp_path / "registry"
    v1 = await registry.register(redis, keys, store, "yolox_nano", model_path)
    await registry.promote(redis, keys, "yolox_nano", v1.version)
    v2_file = _versioned_copy(model_path, tmp_path / "candidate.onnx", "2")
    corrupt = _truncated_copy(model_path, tmp_path / "corrupt.onnx")

    args = ["worker", "--model=yolox_nano", f"--model-dir={model_path.parent}", f"--redis={redis_server.url}",
            f"--registry-dir={store}", "--threads=1", "--registry-poll-s=2"]  # fmt: skip
    workers = [LookoutProcess(f"rollout-worker{i}", [*args, f"--id=rollout-{i}"]) for i in range(2)]
    outcomes: list[Any] = []
    stop = asyncio.Event()
    image = imread(images_dir / "dog.jpg")
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    height, width = image.shape[:2]

    async def load(client: FrameClient) -> None:
        while not stop.is_set():  # one frame in flight per client, a long deadline: nothing may drop
            captured = now_ms()
            outcome = await client.detect(
                jpeg,
                model="yolox_nano",
                width=width,
                height=height,
                timeout_s=60,
                deadline_ms=captured + 60_000,
            )
            outcomes.append(outcome)

    try:
        await wait_until(
            lambda: _all_serve(redis, keys, 2, "v1"),
            timeout=90,
            what="two workers serving v1 from the registry",
        )
        async with FrameClient(redis, keys=keys) as first, FrameClient(redis, keys=keys) as second:
            loaders = [asyncio.create_task(load(first)), asyncio.create_task(load(second))]
            try:
                await wait_until(lambda: _count(outcomes, 6), timeout=60, what="results under load")
                v2 = await registry.register(redis, keys, store, "yolox_nano", v2_file)
                promoted_ms = now_ms()
                await registry.promote(redis, keys, "yolox_nano", v2.version)
                await wait_until(
                    lambda: _results_of(outcomes, "v2", {"rollout-0", "rollout-1"}),
                    timeout=60,
                    what="v2 results from both workers",
                )
                # A corrupt version: refused, and v2 keeps serving.
                v3 = await registry.register(redis, keys, store, "yolox_nano", corrupt)
                await registry.promote(redis, keys, "yolox_nano", v3.version)
                await wait_until(
                    lambda: _logged(workers, "refusing model yolox_nano version v3"),
                    timeout=60,
                    what="both workers refusing v3",
                )
                seen = len(outcomes)
                await wait_until(lambda: _count(outcomes, seen + 6), timeout=60, what="results after refusal")
            finally:
                stop.set()
                await asyncio.gather(*loaders)
    finally:
        codes = [w.stop() for w in workers]
    logs = [w.log_path.read_text(errors="replace") for w in workers]
    assert codes == [0, 0], "\n".join(log[-2000:] for log in logs)

    results = [o for o in outcomes if isinstance(o, ResultMessage)]
    assert len(results) == len(outcomes), [o for o in outcomes if not isinstance(o, ResultMessage)]
    assert {r.model_version for r in results} == {"v1", "v2"}
    # Results switch version within 5 s of the promotion, on every worker.
    for worker in ("rollout-0", "rollout-1"):
        late_v1 = [
            r for r in results if r.worker == worker and r.model_version == "v1" and r.done_ms > promoted_ms
        ]
        assert all(r.done_ms - promoted_ms < 5000 for r in late_v1)
        first_v2 = min(r.done_ms for r in results if r.worker == worker and r.model_version == "v2")
        assert first_v2 - promoted_ms < 5000
    # After the refusal of v3, everything is still v2 (the results after the last v1 one).
    tail = results[-6:]
    assert {r.model_version for r in tail} == {"v2"}
    for log in logs:
        (line,) = [x for x in log.splitlines() if "refusing model yolox_nano version v3" in x]
        assert "does not load" in line and line.endswith("still serving v2")
        assert "swapped: v1 -> v2" in log


async def _all_serve(redis: Redis, keys: Keys, count: int, version: str) -> bool:
    versions = await _versions(redis, keys)
    return len(versions) == count and set(versions.values()) == {version}


async def _count(outcomes: list[Any], count: int) -> bool:
    return len(outcomes) >= count


async def _results_of(outcomes: list[Any], version: str, workers: set[str]) -> bool:
    return workers <= {o.worker for o in outcomes if getattr(o, "model_version", None) == version}


async def _logged(workers: list[Any], text: str) -> bool:
    return all(text in w.log_path.read_text(errors="replace") for w in workers)


async def test_the_watch_survives_a_redis_restart(
    private_redis: Any, keys: Keys, tmp_path: Path, files: dict[str, Path]
) -> None:
    redis = Redis.from_url(private_redis.url)
    worker = FakeWorker()
    loaded: list[Path] = []
    store = tmp_path / "store"
    watcher = RegistryWatcher(
        redis, keys, worker, registry_dir=store, load=_loader(loaded), poll_interval_s=0.5
    )
    task = asyncio.create_task(watcher.run())
    try:
        await wait_until(lambda: _subscribed(redis, keys), timeout=30, what="the watcher's subscription")
        await asyncio.to_thread(private_redis.restart)
        admin = Redis.from_url(private_redis.url)  # a fresh client: the watcher's has to reconnect by itself
        try:
            await registry.register(admin, keys, store, "m", files["good"])
            await registry.promote(admin, keys, "m", "v1")
        finally:
            await admin.aclose()
        await wait_until(lambda: _is(worker, "v1"), timeout=30, what="the swap after the restart")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await redis.aclose()
