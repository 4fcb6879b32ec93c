"""REST in all three encodings, through a real `lookout worker` and a real redis-server, gives the same
detections as the Detector run in-process on the same files, and echoes the ids."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from inference.detector import Detector
from inference.images import decode_image
from tests.signaling.rest_harness import check_documented, rest_app, start_worker
from tests.support.redis_server import RedisServer

Client = TestClient[Any, Any]
MEDIA = {".jpg": "image/jpeg", ".png": "image/png"}


@pytest.fixture(scope="module")
def backbone(model_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with one real worker on it, for this module only."""
    server = RedisServer()
    server.start()
    worker = start_worker("rest-encodings-worker", server.url, model_path.parent)
    yield server
    worker.stop()  # its clean exit on SIGTERM is the worker's own test
    server.stop()


@pytest.fixture(scope="module")
def images(images_dir: Path) -> list[Path]:
    return sorted(p for p in images_dir.iterdir() if p.suffix in MEDIA)


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[Client]], backbone: RedisServer
) -> AsyncIterator[Client]:
    yield await aiohttp_client(rest_app(backbone.url, rest_timeout_s=60))


def same_detections(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    """Same objects in the same order; scores and boxes equal up to float noise of thread counts."""
    if [(d["label"], d["class_id"]) for d in got] != [(d["label"], d["class_id"]) for d in expected]:
        return False
    return all(
        abs(g["score"] - e["score"]) < 1e-3
        and all(abs(a - b) < 0.5 for a, b in zip(g["box"], e["box"], strict=True))
        for g, e in zip(got, expected, strict=True)
    )


async def test_every_image_in_every_encoding_matches_the_detector(
    client: Client, images: list[Path], model_path: Path
) -> None:
    detector = await asyncio.to_thread(Detector.load, "yolox_nano", model_dir=model_path.parent)
    assert len(images) >= 9
    for path in images:
        data = path.read_bytes()
        expected = [d.model_dump(mode="json") for d in detector.detect(decode_image(data))]
        form = aiohttp.FormData()
        form.add_field("image", data, filename=path.name, content_type=MEDIA[path.suffix])
        form.add_field("id", f"form-{path.name}")
        form.add_field("model", "yolox_nano")
        responses = {
            f"json-{path.name}": await client.post(
                "/api/v1/detect", json={"id": f"json-{path.name}", "image": base64.b64encode(data).decode()}
            ),
            f"form-{path.name}": await client.post("/api/v1/detect", data=form),
            f"raw-{path.name}": await client.post(
                "/api/v1/detect",
                params={"id": f"raw-{path.name}", "model": "yolox_nano"},
                data=data,
                headers={"Content-Type": MEDIA[path.suffix]},
            ),
        }
        for request_id, response in responses.items():
            body = await response.json()
            assert response.status == 200, (request_id, body)
            check_documented(200, body)
            assert body["id"] == request_id and body["model"] == "yolox_nano"
            assert body["model_version"] == detector.version
            assert same_detections(body["detections"], expected), (request_id, body["detections"], expected)
    assert expected, "the last image (zidane.jpg) has people in it"
