"""A hostile corpus against the real signaling app: no 5xx, no socket dropped, a healthy server after.

The app is signaling's own (``create_app``: REST, /ws, /metrics, the monitor) on a real TCP port with a
real redis-server and FakeWorker behind it. The corpus is generated here from a fixed seed, so that every
run sends the same requests: over 2,000 HTTP requests (JSON nested deep, wrong types, unknown and invalid
model names, binary garbage under every content type, broken multipart forms, oversized bodies, broken
headers and request lines, bodies that never finish, other methods and paths, and valid images) and over
1,000 WebSocket messages (deep JSON, oversized, wrong types, unknown types and versions, binary frames,
joins for unknown models, state errors). The only socket close allowed is the documented size cap (1009).
test_rest_fuzz.py fuzzes the REST API from its OpenAPI document with a real worker; this one is faster
and aims at what the document does not describe.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient
from redis.asyncio import Redis

from signaling.app import create_app
from tests.signaling.rest_harness import FakeWorker, jpeg_bytes, png_bytes
from tests.signaling.ws_harness import Client, signaling_settings
from tests.support.redis_server import RedisServer
from wire.keys import Keys

MODEL = "fake"
MAX_BODY = 64 * 1024
MAX_WS = 4096
HARD_CAP = MAX_WS * 64
BODY_TIMEOUT_S = 0.5
SEED = 1212
DETECT = "/api/v1/detect"


@dataclass
class Http:
    """One request through aiohttp's client."""

    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Raw:
    """One request written byte for byte to a socket (what aiohttp's client refuses to send)."""

    data: bytes
    expect: int | None = None


def nested(rng: random.Random, depth: int) -> str:
    kind = rng.choice(["[", "{", "mixed", "unclosed"])
    if kind == "[":
        return "[" * depth + "]" * depth
    if kind == "{":
        return '{"a":' * depth + "1" + "}" * depth
    if kind == "mixed":
        opens = [rng.choice(["[", '{"k":']) for _ in range(depth)]
        return "".join(opens) + "0" + "".join("]" if o == "[" else "}" for o in reversed(opens))
    return "[" * depth


def junk_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            0,
            -1,
            10**30,
            1.5,
            True,
            None,
            [],
            {},
            [1, "x"],
            {"a": {"b": []}},
            "",
            "x" * rng.randint(1, 3000),
            "é\u0000\u202e",
            "../../etc/passwd",
            "\ud7ff" * 5,
        ]
    )


def model_name(rng: random.Random) -> str:
    return rng.choice(
        [
            f"unknown-{rng.randrange(10**9)}",
            "x" * 129,
            ".hidden",
            "-rf",
            "a b",
            "a:b",
            "*",
            "é",
            "",
            "yolox_nano",
            f"m{rng.randrange(10**6)}.onnx",
        ]
    )


def rest_corpus(rng: random.Random) -> tuple[list[Http], list[Raw]]:
    image = jpeg_bytes(32, 24)
    b64 = base64.b64encode(image).decode()
    http: list[Http] = []
    raw: list[Raw] = []
    json_type = {"Content-Type": "application/json"}
    for _ in range(250):  # JSON nested deep, at the top or in a field
        deep = nested(rng, rng.choice([33, 100, 1000, 20_000]))
        if rng.random() < 0.5:
            deep = f'{{"image": "{b64}", "{rng.choice(["id", "model", "extra"])}": {deep}}}'
        http.append(Http("POST", DETECT, deep.encode(), json_type))
    for _ in range(400):  # wrong types for every field, and bodies that are no object
        fields = {name: junk_value(rng) for name in ("id", "image", "model") if rng.random() < 0.7}
        body_value: Any = fields if rng.random() < 0.8 else junk_value(rng)
        http.append(Http("POST", DETECT, json.dumps(body_value).encode(), json_type))
    for _ in range(250):  # model names: unknown, invalid, in the body or the query
        if rng.random() < 0.5:
            payload = json.dumps({"image": b64, "model": model_name(rng)}).encode()
            http.append(Http("POST", DETECT, payload, json_type))
        else:
            http.append(
                Http("POST", DETECT, image, {"Content-Type": "image/jpeg"}, {"model": model_name(rng)})
            )
    content_types = [
        "application/json",
        "image/jpeg",
        "image/png",
        "multipart/form-data; boundary=b",
        "multipart/form-data",
        "text/plain",
        "application/octet-stream",
        "image/gif",
        "application/json; charset=utf-16",
        "multipart/mixed; boundary=x",
        ";;;",
        "a/b/c",
    ]
    for _ in range(400):  # binary garbage under every content type, some with a real header first
        prefix = rng.choice([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"{", b"--b\r\n", image[:40]])
        body = prefix + rng.randbytes(rng.randint(0, 4000))
        http.append(Http("POST", DETECT, body, {"Content-Type": rng.choice(content_types)}))
    for _ in range(150):  # multipart forms: broken, nested, too many parts, fields that are not text
        boundary = "bnd"
        parts = []
        for _ in range(rng.choice([0, 1, 2, 3, 20])):
            name = rng.choice(["image", "id", "model", "other", '"'])
            content = rng.choice([image, rng.randbytes(50), b"\xff\xfe", b"yolox_nano", b"x" * 300])
            kind = rng.choice(["image/jpeg", "multipart/mixed; boundary=inner", "text/plain"])
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="f"\r\n'
                f"Content-Type: {kind}\r\n\r\n".encode()
                + content
                + b"\r\n"
            )
        body = b"".join(parts) + (f"--{boundary}--\r\n".encode() if rng.random() < 0.7 else b"")
        header = rng.choice(
            [
                f"multipart/form-data; boundary={boundary}",
                "multipart/form-data",
                "multipart/form-data; boundary=",
            ]
        )
        http.append(Http("POST", DETECT, body, {"Content-Type": header}))
    for _ in range(60):  # over max_body_bytes, declared or not
        http.append(Http("POST", DETECT, image + b"\0" * (MAX_BODY + 1), {"Content-Type": "image/jpeg"}))
    for _ in range(40):
        raw.append(
            Raw(
                b"POST /api/v1/detect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: application/json\r\nConnection: close\r\n\r\n"
                + b"".join(b"%x\r\n%s\r\n" % (8000, b"[" * 8000) for _ in range(10))
                + b"0\r\n\r\n",
                413,
            )
        )
    bad_heads = [
        b"Content-Length: abc",
        b"Content-Length: -1",
        b"Content-Length: 5\r\nContent-Length: 6",
        b"Content-Length: 99999999999999999999999",
        b"Transfer-Encoding: gzip, chunked",
        b"Transfer-Encoding: chunked\r\nContent-Length: 3",
        b"X-API-Key: \xff\xfe\x00",
        b"Content-Type: \xc3\x28",
        b"X-Long: " + b"a" * 9000,
        b"Bad Header Name: x",
        b": empty name",
        b'Content-Type: image/jpeg; boundary="unclosed',
    ]
    request_lines = [
        b"POST /api/v1/detect HTTP/1.1",
        b"POST /api/v1/detect?model=%ff%fe&id=%00 HTTP/1.1",
        b"POST /api/v1/detect HTTP/1.0",
        b"POST http://evil/api/v1/detect HTTP/1.1",
        b"POST /api/v1/../v1/detect HTTP/1.1",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1",
        b"POST /api/v1/detect HTTP/9.9",
        b"BREW /api/v1/detect HTTP/1.1",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00",  # a TLS client hello
        b"POST  /api/v1/detect  HTTP/1.1",
    ]
    for _ in range(250):  # broken request lines and headers
        head = rng.choice(request_lines) + b"\r\nHost: x\r\nConnection: close\r\n" + rng.choice(bad_heads)
        raw.append(Raw(head + b"\r\n\r\n" + rng.randbytes(rng.randint(0, 30))))
    for _ in range(10):
        raw.append(Raw(rng.randbytes(rng.randint(1, 2000)) + b"\r\n\r\n"))
    for _ in range(60):  # bodies declared longer than sent: answered 408 once body_read_timeout_s passes
        declared = rng.choice([100_000 // 2, 5000, 1001])
        raw.append(
            Raw(
                b"POST /api/v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: "
                + rng.choice([b"image/jpeg", b"application/json", b"multipart/form-data; boundary=b"])
                + b"\r\nContent-Length: %d\r\n\r\n" % declared
                + b"\xff" * 1000,
                408,
            )
        )
    paths = [
        "/healthz",
        "/api/v1/openapi.json",
        "/metrics",
        "/ws",
        "/",
        "/index.html",
        "/js/../../etc/passwd",
        "/api/v1/detect/",
        "/api/v2/detect",
        "/%2e%2e/%2e%2e/",
        "/api/v1/detect?" + "x=1&" * 500,
    ]
    for _ in range(230):  # other methods and paths
        method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "POST"])
        path = rng.choice([DETECT, *paths])
        http.append(Http(method, path, rng.randbytes(rng.randint(0, 100)) if method != "GET" else None))
    for i in range(100):  # valid requests in between: they must keep working
        encoding = i % 3
        if encoding == 0:
            http.append(Http("POST", DETECT, image, {"Content-Type": "image/jpeg"}, {"id": f"v{i}"}))
        elif encoding == 1:
            http.append(Http("POST", DETECT, json.dumps({"id": f"v{i}", "image": b64}).encode(), json_type))
        else:
            http.append(Http("POST", DETECT, png_bytes(), {"Content-Type": "image/png"}, {"id": f"v{i}"}))
    rng.shuffle(http)
    rng.shuffle(raw)
    return http, raw


def ws_corpus(rng: random.Random) -> list[str | bytes]:
    messages: list[str | bytes] = []
    for _ in range(1100):
        kind = rng.randrange(10)
        if kind == 0:
            messages.append(nested(rng, rng.choice([33, 500, 1000, 1500])))
        elif kind == 1:
            messages.append(
                json.dumps({"v": 2, "type": "ping", "pad": "x" * rng.randint(MAX_WS, HARD_CAP // 2)})
            )
        elif kind == 2:
            kind_name = rng.choice(["join", "offer", "bye", "ping", "list_models"])
            fields = {
                name: junk_value(rng)
                for name in ("model", "sample_fps", "sdp", "reason")
                if rng.random() < 0.5
            }
            messages.append(json.dumps({"v": 2, "type": kind_name, **fields}))
        elif kind == 3:
            messages.append(json.dumps({"v": junk_value(rng), "type": junk_value(rng)}))
        elif kind == 4:
            messages.append(rng.randbytes(rng.randint(0, 3000)))
        elif kind == 5:
            messages.append(
                rng.choice(["", " ", "null", "[]", "{", "}{", '{"v":2,"type":"join"', "NaN", "1e999"])
            )
        elif kind == 6:
            messages.append(json.dumps({"v": 2, "type": "join", "model": model_name(rng)}))
        elif kind == 7:
            sample = rng.choice([0, -1, 1e309, "fast", None, 0.001, 10**6])
            messages.append(json.dumps({"v": 2, "type": "join", "sample_fps": sample}))
        elif kind == 8:
            messages.append(
                json.dumps({"v": 2, "type": "offer", "sdp": rng.choice(["v=0", "x" * 70_000, ""])})
            )
        else:
            messages.append(json.dumps({"v": 2, "type": rng.choice(["ping", "list_models", "bye", "join"])}))
    return messages


async def send_raw(port: int, request: Raw) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request.data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readline(), BODY_TIMEOUT_S + 5)
    except ConnectionResetError:
        return 0  # refused mid-write: nothing to judge but the absence of a 5xx
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1."), (request.data[:200], head)
    return int(head.split()[1])


async def ws_session(client: Client, messages: list[str | bytes], replies: Counter[str]) -> None:
    ws = await client.ws_connect("/ws")
    assert json.loads((await ws.receive(timeout=10)).data)["type"] == "hello"
    for message in messages:
        if isinstance(message, bytes):
            await ws.send_bytes(message)
        else:
            await ws.send_str(message)
        while True:
            reply = await ws.receive(timeout=10)
            assert reply.type == aiohttp.WSMsgType.TEXT, (reply, str(message)[:200])
            data = json.loads(reply.data)
            if data["type"] != "stats":
                break
        assert data["type"] in ("error", "pong", "models", "bye"), data
        replies[data.get("code", data["type"])] += 1
    await ws.send_json({"v": 2, "type": "ping"})
    assert json.loads((await ws.receive(timeout=10)).data)["type"] == "pong"
    await ws.close()


@pytest.fixture
async def fuzzed(aiohttp_client: AiohttpClient, redis_server: RedisServer) -> Client:
    settings = signaling_settings(
        redis_server.url,
        default_model=MODEL,
        max_body_bytes=MAX_BODY,
        max_ws_message_bytes=MAX_WS,
        body_read_timeout_s=BODY_TIMEOUT_S,
        joins_per_minute=10_000,
    )
    client: Client = await aiohttp_client(create_app(settings))
    return client


@pytest.fixture
async def worker(redis: Redis, keys: Keys) -> AsyncIterator[FakeWorker]:
    async with FakeWorker(redis, keys, MODEL) as fake:
        yield fake


async def gather_limited(count: int, jobs: list[Callable[[], Any]]) -> list[Any]:
    gate = asyncio.Semaphore(count)

    async def run(job: Callable[[], Any]) -> Any:
        async with gate:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


async def test_a_hostile_corpus_gets_no_5xx_and_no_dropped_socket(fuzzed: Client, worker: FakeWorker) -> None:
    rng = random.Random(SEED)
    http, raw = rest_corpus(rng)
    messages = ws_corpus(rng)
    assert len(http) + len(raw) >= 2000 and len(messages) >= 1000
    port = fuzzed.port
    assert port is not None
    started = time.monotonic()

    async def send(request: Http) -> int:
        async with fuzzed.request(
            request.method, request.path, data=request.body, headers=request.headers, params=request.params
        ) as response:
            await response.read()
            return response.status

    statuses = await gather_limited(16, [lambda r=r: send(r) for r in http])  # type: ignore[misc]
    raw_statuses = await gather_limited(64, [lambda r=r: send_raw(port, r) for r in raw])  # type: ignore[misc]
    replies: Counter[str] = Counter()
    sockets = 8
    await asyncio.gather(*(ws_session(fuzzed, messages[i::sockets], replies) for i in range(sockets)))

    # The one documented close: a frame over 64 times max_ws_message_bytes is refused with 1009.
    capped = await fuzzed.ws_connect("/ws")
    await capped.receive(timeout=10)
    await capped.send_str("x" * (HARD_CAP + 1))
    closed = await capped.receive(timeout=10)
    assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    elapsed = time.monotonic() - started

    by_status = Counter(statuses + raw_statuses)
    print(
        f"\n{len(http) + len(raw)} HTTP requests and {len(messages)} WebSocket messages in {elapsed:.1f} s; "
        f"statuses {dict(sorted(by_status.items()))}; replies {dict(sorted(replies.items()))}"
    )
    assert not [s for s in by_status if s >= 500], by_status
    assert sum(replies.values()) == len(messages)
    expected = [r.expect for r in raw]
    assert all(e is None or s in (e, 0) for s, e in zip(raw_statuses, expected, strict=True))
    assert by_status[200] >= 100 and by_status[408] >= 55 and replies["unknown_model"] > 0

    # Healthy afterwards: health, a valid image, a fresh socket.
    assert (await fuzzed.get("/healthz")).status == 200
    valid = await fuzzed.post(DETECT, data=jpeg_bytes(), headers={"Content-Type": "image/jpeg"})
    assert valid.status == 200 and (await valid.json())["detections"]
    ws = await fuzzed.ws_connect("/ws")
    await ws.receive(timeout=10)
    await ws.send_json({"v": 2, "type": "ping"})
    assert json.loads((await ws.receive(timeout=10)).data)["type"] == "pong"
    await ws.close()


async def test_a_failure_in_the_message_loop_answers_internal_and_keeps_the_socket(
    fuzzed: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from signaling.ws import SignalingSocket

    real = SignalingSocket.on_text

    async def breaks_on_boom(self: SignalingSocket, text: str) -> None:
        if text == "boom":
            raise RecursionError("what a JSON nested 1,000 deep used to raise here")
        await real(self, text)

    monkeypatch.setattr(SignalingSocket, "on_text", breaks_on_boom)
    ws = await fuzzed.ws_connect("/ws")
    await ws.receive(timeout=10)
    await ws.send_str("boom")
    error = json.loads((await ws.receive(timeout=10)).data)
    assert error["type"] == "error" and error["code"] == "internal"
    await ws.send_json({"v": 2, "type": "ping"})
    assert json.loads((await ws.receive(timeout=10)).data)["type"] == "pong"
    await ws.close()
