"""The REST API's routing, limits and errors, on a bare app with a stand-in worker (FakeWorker).

Detections from the real worker are checked in test_rest_encodings.py; fuzzing in test_rest_fuzz.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from signaling.app import create_app
from tests.signaling.rest_harness import FakeWorker, check_documented, jpeg_bytes, png_bytes, rest_app
from tests.support.redis_server import RedisServer
from wire.config import SignalingSettings
from wire.keys import Keys
from wire.outcomes import drop_counts

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_client(
    aiohttp_client: Callable[..., Awaitable[Client]], redis_server: RedisServer, redis: Redis
) -> MakeClient:
    async def make(**settings: Any) -> Client:
        return await aiohttp_client(rest_app(redis_server.url, default_model="fake", **settings))

    return make


async def json_of(response: aiohttp.ClientResponse) -> Any:
    body = await response.json()
    check_documented(response.status, body)
    return body


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_three_encodings_reach_the_worker_and_echo_the_id(
    make_client: MakeClient, redis: Redis, keys: Keys
) -> None:
    client = await make_client()
    image = jpeg_bytes(64, 48)
    async with FakeWorker(redis, keys) as worker:
        as_json = await client.post(
            "/api/v1/detect", json={"id": "j1", "image": base64.b64encode(image).decode()}
        )
        form = aiohttp.FormData()
        form.add_field("image", image, filename="a.jpg", content_type="image/jpeg")
        form.add_field("id", "m1")
        as_form = await client.post("/api/v1/detect", data=form)
        as_raw = await client.post(
            "/api/v1/detect", params={"id": "r1"}, data=png_bytes(), headers={"Content-Type": "image/png"}
        )
        bodies = [await json_of(r) for r in (as_json, as_form, as_raw)]
    assert [r.status for r in (as_json, as_form, as_raw)] == [200, 200, 200]
    assert [b["id"] for b in bodies] == ["j1", "m1", "r1"]
    assert all(b["detections"][0]["label"] == "person" and b["model"] == "fake" for b in bodies)
    assert bodies[0]["width"] == 64 and bodies[0]["height"] == 48
    assert [f.image for f in worker.seen] == [image, image, png_bytes()]  # bytes pass through untouched
    assert bodies[0]["timings"]["total_ms"] >= bodies[0]["timings"]["transfer_ms"] >= 0


async def test_a_missing_id_gets_a_generated_one(make_client: MakeClient, redis: Redis, keys: Keys) -> None:
    client = await make_client()
    async with FakeWorker(redis, keys):
        first = await json_of(
            await client.post("/api/v1/detect", data=jpeg_bytes(), headers={"Content-Type": "image/jpeg"})
        )
        second = await json_of(
            await client.post("/api/v1/detect", data=jpeg_bytes(), headers={"Content-Type": "image/jpeg"})
        )
    assert first["id"] and second["id"] and first["id"] != second["id"]


async def test_no_worker_is_503_and_a_counted_drop(make_client: MakeClient, redis: Redis, keys: Keys) -> None:
    client = await make_client()  # its default model, fake, exists although no worker serves it now
    before = metric("lookout_frames_dropped_total", model="fake", site="signaling", reason="no_worker")
    response = await client.post("/api/v1/detect", data=jpeg_bytes(), headers={"Content-Type": "image/jpeg"})
    body = await json_of(response)
    assert response.status == 503
    assert body["error"]["code"] == "no_worker" and "fake" in body["error"]["message"]
    assert (await drop_counts(redis, keys, "fake")) == {"no_worker": 1}
    assert (
        metric("lookout_frames_dropped_total", model="fake", site="signaling", reason="no_worker")
        == before + 1
    )


async def test_a_registered_model_without_workers_is_503(
    make_client: MakeClient, redis: Redis, keys: Keys
) -> None:
    client = await make_client()
    await redis.sadd(keys.model_names(), "registered")
    response = await client.post(
        "/api/v1/detect",
        params={"model": "registered"},
        data=jpeg_bytes(),
        headers={"Content-Type": "image/jpeg"},
    )
    assert response.status == 503 and (await json_of(response))["error"]["code"] == "no_worker"


async def test_an_unknown_model_is_404_and_leaves_no_key_and_no_series(
    make_client: MakeClient, redis: Redis
) -> None:
    client = await make_client()
    keys_before = await redis.dbsize()
    for encoding in ("raw", "json"):
        if encoding == "raw":
            response = await client.post(
                "/api/v1/detect",
                params={"model": "nobody"},
                data=b"not even an image",
                headers={"Content-Type": "image/jpeg"},
            )
        else:
            response = await client.post("/api/v1/detect", json={"image": "", "model": "nobody"})
        body = await json_of(response)
        assert response.status == 404 and body["error"]["code"] == "unknown_model", body
        assert "nobody" in body["error"]["message"]
    assert await redis.dbsize() == keys_before
    assert not [s for m in REGISTRY.collect() for s in m.samples if s.labels.get("model") == "nobody"]


async def test_a_worker_that_never_answers_gives_504_and_a_counted_timeout(
    make_client: MakeClient, redis: Redis, keys: Keys
) -> None:
    client = await make_client(rest_timeout_s=0.5)
    async with FakeWorker(redis, keys, consume=False):
        response = await client.post(
            "/api/v1/detect", data=jpeg_bytes(), headers={"Content-Type": "image/jpeg"}
        )
        body = await json_of(response)
    assert response.status == 504 and body["error"]["code"] == "timeout"
    assert (await drop_counts(redis, keys, "fake")).get("timeout") == 1


async def test_an_image_the_worker_cannot_decode_is_422(
    make_client: MakeClient, redis: Redis, keys: Keys
) -> None:
    client = await make_client()
    truncated = png_bytes(640, 480)[:100]  # a valid header, then nothing: only decoding can tell
    async with FakeWorker(redis, keys):
        response = await client.post("/api/v1/detect", data=truncated, headers={"Content-Type": "image/png"})
        body = await json_of(response)
    assert response.status == 422 and body["error"]["code"] == "undecodable"


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": b"not an image", "headers": {"Content-Type": "image/jpeg"}}, 422, "undecodable_image"),
        ({"data": b"", "headers": {"Content-Type": "image/png"}}, 422, "empty_image"),
        ({"data": b"GIF89a....", "headers": {"Content-Type": "image/gif"}}, 415, "unsupported_media_type"),
        ({"data": b"x", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "invalid_json"),
        ({"json": ["a", "list"]}, 422, "invalid_request"),
        ({"json": {"id": "x"}}, 422, "invalid_request"),
        ({"json": {"image": "%%%not base64%%%"}}, 422, "invalid_base64"),
        ({"json": {"image": "aGVsbG8=", "id": 7}}, 422, "invalid_request"),
        ({"json": {"image": "aGVsbG8=", "model": "bad model!"}}, 422, "invalid_request"),
        ({"json": {"image": "aGVsbG8=", "id": "i" * 300}}, 422, "invalid_request"),
        ({"json": {"image": "aGVsbG8="}}, 422, "undecodable_image"),
        (
            {"data": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
            400,
            "invalid_multipart",
        ),
    ],
)
async def test_bad_input_is_a_4xx_with_a_message(
    make_client: MakeClient, kwargs: dict[str, Any], status: int, code: str
) -> None:
    client = await make_client()
    response = await client.post("/api/v1/detect", **kwargs)
    body = await json_of(response)
    assert (response.status, body["error"]["code"]) == (status, code)
    assert body["error"]["message"]


async def test_a_form_without_an_image_is_422(make_client: MakeClient) -> None:
    client = await make_client()
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("id", "x")
    response = await client.post("/api/v1/detect", data=form)
    assert response.status == 422 and (await json_of(response))["error"]["code"] == "missing_image"


async def test_oversized_bodies_and_images_are_413(make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=50_000, max_image_side=1000)
    big = jpeg_bytes(64, 48) + b"\0" * 60_000
    declared = await client.post("/api/v1/detect", data=big, headers={"Content-Type": "image/jpeg"})
    assert declared.status == 413 and (await json_of(declared))["error"]["code"] == "body_too_large"

    async def chunked() -> Any:  # no Content-Length: the cap must hold while reading
        for _ in range(10):
            yield b"\0" * 10_000

    streamed = await client.post("/api/v1/detect", data=chunked(), headers={"Content-Type": "image/jpeg"})
    assert streamed.status == 413 and (await json_of(streamed))["error"]["code"] == "body_too_large"
    form = aiohttp.FormData()
    form.add_field("image", big, filename="big.jpg", content_type="image/jpeg")
    as_form = await client.post("/api/v1/detect", data=form)
    assert as_form.status == 413
    wide = await client.post(
        "/api/v1/detect", data=jpeg_bytes(1200, 16), headers={"Content-Type": "image/jpeg"}
    )
    body = await json_of(wide)
    assert (
        wide.status == 413
        and body["error"]["code"] == "image_too_large"
        and "1200x16" in body["error"]["message"]
    )
    tiny = await client.post("/api/v1/detect", data=jpeg_bytes(4, 4), headers={"Content-Type": "image/jpeg"})
    assert tiny.status == 422 and (await json_of(tiny))["error"]["code"] == "image_too_small"


async def test_the_api_key_protects_detect(make_client: MakeClient, redis: Redis, keys: Keys) -> None:
    client = await make_client(api_key="s3cret")
    missing = await client.post("/api/v1/detect", data=jpeg_bytes(), headers={"Content-Type": "image/jpeg"})
    wrong = await client.post(
        "/api/v1/detect", data=jpeg_bytes(), headers={"Content-Type": "image/jpeg", "X-API-Key": "nope"}
    )
    for response in (missing, wrong):
        body = await json_of(response)
        assert response.status == 401 and "X-API-Key" in body["error"]["message"]
    async with FakeWorker(redis, keys):
        right = await client.post(
            "/api/v1/detect", data=jpeg_bytes(), headers={"Content-Type": "image/jpeg", "X-API-Key": "s3cret"}
        )
        in_query = await client.post(
            "/api/v1/detect",
            params={"key": "s3cret"},
            data=jpeg_bytes(),
            headers={"Content-Type": "image/jpeg"},
        )
    assert (right.status, in_query.status) == (200, 200)


async def test_requests_are_counted_by_status(make_client: MakeClient, redis: Redis, keys: Keys) -> None:
    client = await make_client()
    ok_before = metric("lookout_rest_requests_total", status="200")
    bad_before = metric("lookout_rest_requests_total", status="415")
    in_before = metric("lookout_frames_in_total", site="rest", model="fake")
    latency_before = metric("lookout_e2e_latency_seconds_count", model="fake", path="rest")
    async with FakeWorker(redis, keys):
        await client.post("/api/v1/detect", data=jpeg_bytes(), headers={"Content-Type": "image/jpeg"})
    await client.post("/api/v1/detect", data=b"x", headers={"Content-Type": "text/plain"})
    assert metric("lookout_rest_requests_total", status="200") == ok_before + 1
    assert metric("lookout_rest_requests_total", status="415") == bad_before + 1
    assert metric("lookout_frames_in_total", site="rest", model="fake") == in_before + 1
    assert metric("lookout_e2e_latency_seconds_count", model="fake", path="rest") == latency_before + 1


async def test_the_openapi_document_is_served(make_client: MakeClient) -> None:
    client = await make_client(api_key="s3cret")  # behind the key, like the API it describes
    refused = await client.get("/api/v1/openapi.json")
    assert refused.status == 401 and (await refused.json())["error"]["code"] == "unauthorized"
    response = await client.get("/api/v1/openapi.json", headers={"X-API-Key": "s3cret"})
    document = await response.json()
    assert response.status == 200 and document["openapi"].startswith("3.")
    operation = document["paths"]["/api/v1/detect"]["post"]
    assert set(operation["requestBody"]["content"]) == {
        "application/json",
        "multipart/form-data",
        "image/jpeg",
        "image/png",
    }
    assert {"200", "400", "401", "404", "408", "413", "415", "422", "503", "504"} <= set(
        operation["responses"]
    )


async def test_the_real_signaling_app_serves_the_api_behind_its_key(
    aiohttp_client: Callable[..., Awaitable[Client]], redis_server: RedisServer, redis: Redis, keys: Keys
) -> None:
    settings = SignalingSettings(redis_url=redis_server.url, api_key="k3y", default_model="fake")
    client = await aiohttp_client(create_app(settings))
    async with FakeWorker(redis, keys):
        refused = await client.post(
            "/api/v1/detect", data=jpeg_bytes(), headers={"Content-Type": "image/jpeg"}
        )
        served = await client.post(
            "/api/v1/detect", data=jpeg_bytes(), headers={"Content-Type": "image/jpeg", "X-API-Key": "k3y"}
        )
    assert refused.status == 401 and (await json_of(refused))["error"]["code"] == "unauthorized"
    assert served.status == 200 and (await json_of(served))["model"] == "fake"
    assert (await client.get("/api/v1/openapi.json")).status == 401
    assert (await client.get("/api/v1/openapi.json", params={"key": "k3y"})).status == 200
    assert (await client.get("/metrics")).status == 200  # open unless metrics_require_key


@pytest.mark.parametrize(
    ("settings", "without_key", "with_key"),
    [
        ({"api_key": "k3y", "metrics_require_key": True}, 401, 200),
        ({"api_key": "k3y"}, 200, 200),
        ({"metrics_require_key": True}, 200, 200),  # no key configured: nothing to require
        ({"api_key": "k3y", "metrics_port": 9999}, 404, 404),  # served on its own address instead
    ],
)
async def test_metrics_can_be_put_behind_the_key_or_moved_off_the_http_port(
    aiohttp_client: Callable[..., Awaitable[Client]],
    redis_server: RedisServer,
    settings: dict[str, Any],
    without_key: int,
    with_key: int,
) -> None:

    client = await aiohttp_client(create_app(SignalingSettings(redis_url=redis_server.url, **settings)))
    refused = await client.get("/metrics")
    assert refused.status == without_key
    if without_key == 401:
        assert (await refused.json())["error"]["code"] == "unauthorized"
    served = await client.get("/metrics", headers={"X-API-Key": "k3y"})
    assert served.status == with_key
    if with_key == 200:
        assert "lookout_rest_requests" in await served.text()
    assert (await client.get("/healthz")).status == 200  # health stays open for load balancers


async def test_json_nested_too_deep_is_400(make_client: MakeClient) -> None:
    client = await make_client()
    for body in ("[" * 1000 + "]" * 1000, '{"image": ' + "[" * 100_000, '{"a":' * 40 + "1" + "}" * 40):
        response = await client.post(
            "/api/v1/detect", data=body, headers={"Content-Type": "application/json"}
        )
        error = (await json_of(response))["error"]
        assert (
            response.status == 400 and error["code"] == "json_too_deep" and "deeper than" in error["message"]
        )


async def test_a_body_that_does_not_arrive_in_time_is_408_and_closed(make_client: MakeClient) -> None:
    client = await make_client(body_read_timeout_s=0.3)
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    started = time.monotonic()
    writer.write(
        b"POST /api/v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 100000\r\n\r\n" + b"\xff" * 1000
    )
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 5)  # read() returns at EOF: the server closed
    elapsed = time.monotonic() - started
    writer.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), reply
    assert json.loads(body)["error"]["code"] == "body_timeout"
    assert 0.3 <= elapsed < 3, elapsed
