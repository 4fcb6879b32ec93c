"""Helpers of the REST API tests: a minimal signaling app, a stand-in worker and the OpenAPI checker.

The app is built here, not with signaling's app factory, so that the REST API is tested on its own and
never depends on the WebSocket side.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import cv2
import jsonschema
import numpy as np
from aiohttp import web
from redis.asyncio import Redis

from signaling.appkeys import KEYS, REDIS, SETTINGS
from signaling.openapi import openapi_document
from signaling.rest import setup_rest
from tests.support.processes import LookoutProcess, wait_heartbeat, wait_http
from tests.support.redis_server import RedisServer, free_port
from wire.config import SignalingSettings
from wire.keys import WORKER_GROUP, Keys
from wire.liveness import WorkerInfo, beat
from wire.messages import Detection, DropReason, DropRecord, DropSite, Fields, FrameMessage, ResultMessage
from wire.outcomes import publish_outcome


def rest_app(redis_url: str, **settings: Any) -> web.Application:
    """A bare aiohttp app with the app keys signaling's factory sets, plus the REST routes."""
    app = web.Application()
    app[SETTINGS] = SignalingSettings(redis_url=redis_url, **settings)
    app[KEYS] = Keys(app[SETTINGS].key_prefix)

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        app[REDIS] = Redis.from_url(redis_url)
        yield
        await app[REDIS].aclose()

    app.cleanup_ctx.append(redis_ctx)
    setup_rest(app)
    return app


class FakeWorker:
    """Serves one model's stream like a worker: decodes with cv2, answers one fixed detection.

    Only for unit tests of the REST routing (drops, timeouts); the real worker is tested in
    test_rest_encodings.py and test_rest_fuzz.py.
    """

    def __init__(self, redis: Redis, keys: Keys, model: str = "fake", *, consume: bool = True) -> None:
        self.redis, self.keys, self.model, self.consume = redis, keys, model, consume
        self.seen: list[FrameMessage] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FakeWorker:
        stream = self.keys.frames(self.model)
        with contextlib.suppress(Exception):  # BUSYGROUP: the group exists already
            await self.redis.xgroup_create(stream, WORKER_GROUP, id="$", mkstream=True)
        await self._beat()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Stop between reads rather than cancelling one: a cancelled blocking XREADGROUP can leave the
        # shared connection mid-reply.
        assert self._task is not None
        self._stop.set()
        await asyncio.wait_for(self._task, 10)
        await self.redis.delete(self.keys.worker("fake-worker"))

    async def _beat(self) -> None:
        await beat(
            self.redis, self.keys.worker("fake-worker"), WorkerInfo(id="fake-worker", model=self.model), 30
        )

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self._beat()
            if not self.consume:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.2)
                continue
            reply = await self.redis.xreadgroup(
                WORKER_GROUP, "fake-worker", {self.keys.frames(self.model): ">"}, count=8, block=200
            )
            for _stream, entries in cast(list[tuple[bytes, list[tuple[bytes, Fields]]]], reply or []):
                for entry_id, fields in entries:
                    frame = FrameMessage.from_fields(fields)
                    self.seen.append(frame)
                    await publish_outcome(self.redis, self.keys, self._outcome(frame), maxlen=64, ttl_s=60)
                    await self.redis.xack(self.keys.frames(self.model), WORKER_GROUP, entry_id)

    def _outcome(self, frame: FrameMessage) -> ResultMessage | DropRecord:
        image = cv2.imdecode(np.frombuffer(frame.image, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return DropRecord(
                session=frame.session,
                seq=frame.seq,
                model=frame.model,
                reason=DropReason.UNDECODABLE,
                site=DropSite.WORKER,
                worker="fake-worker",
                detail="cv2 could not decode it",
            )
        height, width = image.shape[:2]
        return ResultMessage(
            session=frame.session,
            seq=frame.seq,
            received_ms=frame.received_ms,
            model=frame.model,
            model_version="fake-1",
            worker="fake-worker",
            width=width,
            height=height,
            detections=[
                Detection(label="person", class_id=0, score=0.9, box=(0.0, 0.0, width / 2, height / 2))
            ],
        )


def response_validator(status: int) -> Callable[[Any], None]:
    """Validates a response body against the schema the OpenAPI document gives for ``status``."""
    document = openapi_document()
    responses = document["paths"]["/api/v1/detect"]["post"]["responses"]
    schema = dict(responses[str(status)]["content"]["application/json"]["schema"])
    schema["components"] = document["components"]
    validator = jsonschema.Draft202012Validator(schema)
    validate: Callable[[Any], None] = validator.validate
    return validate


def check_documented(status: int, body: Any) -> None:
    """Fail unless ``status`` is documented and ``body`` matches its schema."""
    response_validator(status)(body)


def jpeg_bytes(width: int = 64, height: int = 48) -> bytes:
    image = np.full((height, width, 3), 127, np.uint8)
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return encoded.tobytes()


def png_bytes(width: int = 64, height: int = 48) -> bytes:
    image = np.full((height, width, 3), 200, np.uint8)
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def start_worker(name: str, redis_url: str, model_dir: Path, *extra: str) -> LookoutProcess:
    """A real `lookout worker` process for yolox_nano; waits (generously) until its heartbeat is up."""
    worker = LookoutProcess(
        name,
        ["worker", "--model", "yolox_nano", "--model-dir", str(model_dir), "--redis", redis_url, *extra],
    )
    try:
        wait_heartbeat(redis_url, Keys().worker_pattern(), "the worker", 90, [worker])
    except AssertionError:
        worker.stop()
        raise
    return worker


@contextlib.contextmanager
def rest_stack(name: str, model_dir: Path, workers: int = 1, *worker_args: str) -> Iterator[str]:
    """A private redis, ``workers`` real workers and one real `lookout signaling`; yields its base URL."""
    redis = RedisServer()
    redis.start()
    started: list[LookoutProcess] = []
    signaling: LookoutProcess | None = None
    try:
        for i in range(workers):
            started.append(start_worker(f"{name}-worker{i}", redis.url, model_dir, *worker_args))
        port = free_port()
        signaling = LookoutProcess(
            f"{name}-signaling",
            ["signaling", "--host", "127.0.0.1", "--port", str(port), "--redis", redis.url],
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/api/v1/openapi.json", "signaling", 60, [signaling])
        yield url
    finally:
        if signaling is not None:
            signaling.stop()
        for worker in started:
            worker.stop()
        redis.stop()
