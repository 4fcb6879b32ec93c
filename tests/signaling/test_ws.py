"""/ws through aiohttp's test client: every kind of bad input gets a clear error and the server stays up.

Real Redis, the real app and a real in-process media bridge; FakeWorker stands in for inference.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY
from pytest_aiohttp import AiohttpClient
from redis.asyncio import Redis

from lookout.webrtc_client import LiveClient, LiveClientError
from signaling.app import create_app
from tests.signaling.rest_harness import FakeWorker
from tests.signaling.ws_harness import Client, StillTrack, receive, running_bridge, signaling_settings
from tests.support.processes import wait_until
from tests.support.redis_server import RedisServer
from wire.keys import Keys
from wire.liveness import BridgeInfo, beat

MODEL = "yolox_nano"


async def ask(
    ws: aiohttp.ClientWebSocketResponse, message: str | dict[str, Any], *types: str
) -> dict[str, Any]:
    if isinstance(message, dict):
        await ws.send_json(message)
    else:
        await ws.send_str(message)
    return await receive(ws, *types)


@pytest.fixture
async def worker(redis: Redis, keys: Keys) -> AsyncIterator[FakeWorker]:
    async with FakeWorker(redis, keys, MODEL) as fake:
        yield fake


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, redis_server: RedisServer, redis: Redis) -> Client:
    app = create_app(signaling_settings(redis_server.url, joins_per_minute=30))
    return await aiohttp_client(app)


async def connect(client: Client, **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
    # With **kwargs of Any, mypy cannot pick a ws_connect overload (decode_text) and infers Any.
    ws: aiohttp.ClientWebSocketResponse = await client.ws_connect("/ws", **kwargs)
    hello = await receive(ws, "hello")
    assert hello["default_model"] == MODEL and hello["sample_fps"] > 0
    return ws


async def healthy(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200 and (await response.json())["ok"] is True


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("this is not json", "bad_json"),
        ("[]", "bad_json"),
        ('{"type":"join"}', "bad_version"),
        ('{"v":7,"type":"join"}', "bad_version"),
        ('{"v":1,"type":"self_destruct"}', "unknown_type"),
        ('{"v":1}', "unknown_type"),
        ('{"v":1,"type":"offer"}', "bad_message"),  # a missing field is found before the state is looked at
        ('{"v":1,"type":"join","sample_fps":"fast"}', "bad_message"),
    ],
)
async def test_malformed_messages_get_an_error_and_the_socket_stays(
    client: Client, message: str, code: str
) -> None:
    ws = await connect(client)
    errors_before = REGISTRY.get_sample_value("lookout_ws_errors_total", {"code": code}) or 0.0
    error = await ask(ws, message, "error")
    assert error["code"] == code and error["message"]
    assert REGISTRY.get_sample_value("lookout_ws_errors_total", {"code": code}) == errors_before + 1
    assert (await ask(ws, {"v": 2, "type": "ping"}, "pong"))["type"] == "pong"
    await ws.close()


async def test_binary_frames_and_state_errors(client: Client) -> None:
    ws = await connect(client)
    await ws.send_bytes(b"\x00\x01")
    assert (await receive(ws, "error"))["code"] == "bad_json"
    offer = await ask(ws, {"v": 2, "type": "offer", "sdp": "v=0"}, "error")
    assert offer["code"] == "bad_state" and "join" in offer["message"]
    assert (await ask(ws, {"v": 2, "type": "bye"}, "bye"))["reason"]
    await ws.close()


async def test_join_without_worker_or_bridge_says_so(client: Client, redis: Redis, keys: Keys) -> None:
    ws = await connect(client)
    error = await ask(ws, {"v": 2, "type": "join"}, "error")
    assert error["code"] == "no_worker" and MODEL in error["message"]
    async with FakeWorker(redis, keys, MODEL):
        error = await ask(ws, {"v": 2, "type": "join"}, "error")
        assert error["code"] == "no_bridge"
        other = await ask(ws, {"v": 2, "type": "join", "model": "nonexistent"}, "error")
        assert other["code"] == "unknown_model" and "nonexistent" in other["message"]
        await redis.sadd(keys.model_names(), "registered")  # known to the registry, but no worker serves it
        other = await ask(ws, {"v": 2, "type": "join", "model": "registered"}, "error")
        assert other["code"] == "no_worker" and MODEL in other["message"]  # names the models that exist
        models = await ask(ws, {"v": 2, "type": "list_models"}, "models")
        assert models["models"] == [{"name": MODEL, "workers": 1}]
    await ws.close()


async def test_silent_bridge_is_a_bridge_timeout(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, redis: Redis, keys: Keys, worker: FakeWorker
) -> None:
    client = await aiohttp_client(create_app(signaling_settings(redis_server.url, offer_timeout_s=0.5)))
    await beat(redis, keys.bridge("mute"), BridgeInfo(id="mute"), 30)  # registered, but never answers
    ws = await connect(client)
    joined = await ask(ws, {"v": 2, "type": "join"}, "joined")
    assert joined["bridge"] == "mute"
    error = await ask(ws, {"v": 2, "type": "offer", "sdp": "v=0\r\nm=video 9 UDP 96\r\n"}, "error")
    assert error["code"] == "bridge_timeout"
    assert not await redis.exists(keys.session(joined["session"]))  # the session was cleaned up
    await ws.close()


async def test_api_key_is_required_when_set(
    aiohttp_client: AiohttpClient, redis_server: RedisServer, redis: Redis
) -> None:
    client = await aiohttp_client(create_app(signaling_settings(redis_server.url, api_key="s3cret")))
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws")
    assert refused.value.status == 401
    response = await client.get("/ws")
    assert response.status == 401 and (await response.json())["code"] == "unauthorized"
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await client.ws_connect("/ws", headers={"X-API-Key": "wrong"})
    ws = await connect(client, headers={"X-API-Key": "s3cret"})
    await ws.close()
    ws = await connect(client, params={"key": "s3cret"})
    await ws.close()


async def test_abuse_then_a_fresh_session_still_works(
    client: Client, redis_server: RedisServer, redis: Redis, keys: Keys, worker: FakeWorker
) -> None:
    async with running_bridge(redis_server.url, "bridge-a"):
        # 1. A 10 MB message: too_large (or, past aiohttp's hard cap, close code 1009).
        ws = await connect(client)
        await ws.send_str(json.dumps({"v": 2, "type": "offer", "sdp": "x" * (10 * 1024 * 1024)}))
        msg = await ws.receive(timeout=30)
        if msg.type == aiohttp.WSMsgType.TEXT:
            assert json.loads(msg.data)["code"] == "too_large"
        else:
            assert ws.close_code == 1009
        await ws.close()

        # 2. 200 rapid joins on one socket: one session, the rest refused (bad_state, then rate_limited).
        ws = await connect(client)
        for _ in range(200):
            await ws.send_json({"v": 2, "type": "join"})
        replies = [await receive(ws, "joined", "error") for _ in range(200)]
        kinds = [r["type"] if r["type"] == "joined" else r["code"] for r in replies]
        assert kinds.count("joined") == 1
        assert kinds.count("bad_state") == 29 and kinds.count("rate_limited") == 170
        session = replies[0]["session"]
        assert await redis.exists(keys.session(session))

        # 3. A garbage SDP on that session: bad_sdp from the real bridge, and the session may offer again.
        error = await ask(ws, {"v": 2, "type": "offer", "sdp": "v=0\r\nm=video garbage\r\n"}, "error")
        assert error["code"] == "bad_sdp"
        error = await ask(ws, {"v": 2, "type": "offer", "sdp": "no video here"}, "error")
        assert error["code"] == "bad_sdp"
        await ws.close()

        # 4. The server is healthy and a fresh session gets detections.
        await healthy(client)

        async def session_gone() -> bool:  # closing the socket ends its session (server side, async)
            return not await redis.exists(keys.session(session))

        await wait_until(session_gone, timeout=20, what="the closed socket's session to end")
        url = str(client.make_url("/")).rstrip("/")
        async with LiveClient(url, ice_host_addresses=["127.0.0.1"], timeout_s=30) as live:
            joined = await live.join(sample_fps=5)
            await live.offer(StillTrack())
            detections = await live.wait_for("detections", timeout_s=30)
            assert detections.session == joined.session and detections.detections[0].label == "person"
            assert detections.width == 320 and detections.height == 240
            await live.bye()


async def test_a_second_offer_on_an_answered_session_is_refused(
    client: Client, redis_server: RedisServer, worker: FakeWorker
) -> None:
    async with running_bridge(redis_server.url, "bridge-b"):
        url = str(client.make_url("/")).rstrip("/")
        async with LiveClient(url, ice_host_addresses=["127.0.0.1"], timeout_s=30) as live:
            await live.join()
            answer = await live.offer(StillTrack())
            assert "a=candidate:" in answer.sdp  # non-trickle: the answer carries its candidates
            with pytest.raises(LiveClientError) as refused:
                await live.request({"type": "offer", "sdp": answer.sdp}, "answer")
            assert refused.value.code == "bad_state"
