"""The Python WebRTC client against the real stack: signaling, media bridges and ONNX workers as processes.

One stack per module (2 bridges, 2 workers). The process-loss tests run last and kill parts of it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from lookout.webrtc_client import LiveClient, LiveClientError, LoopingVideoTrack, publish
from tests.support.live_stack import LiveStack
from tests.support.redis_server import free_port
from wire.signaling import DetectionsMessage, HelloMessage

pytestmark = pytest.mark.slow

LOOPBACK = ["127.0.0.1"]


@pytest.fixture(scope="module")
def stack(shared_dir: Path) -> Iterator[LiveStack]:
    running = LiveStack("webrtc", shared_dir / "models", bridges=2, workers=2).start()
    try:
        yield running
    finally:
        running.stop()


def rtpmap_codecs(sdp: str) -> set[str]:
    return {
        line.split()[1].split("/")[0].upper() for line in sdp.splitlines() if line.startswith("a=rtpmap:")
    }


async def person_detections(client: LiveClient, count: int, timeout_s: float = 60) -> list[DetectionsMessage]:
    found: list[DetectionsMessage] = []
    while len(found) < count:
        message = await client.wait_for("detections", timeout_s=timeout_s)
        assert isinstance(message, DetectionsMessage)
        if any(d.label == "person" for d in message.detections):
            found.append(message)
    return found


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_video_in_either_codec_gives_person_detections(
    stack: LiveStack, video_path: Path, codec: str
) -> None:
    async with LiveClient(stack.url, ice_host_addresses=LOOPBACK, timeout_s=30) as client:
        assert client.hello is not None  # entering the client waited for hello
        assert {m.name for m in client.hello.models} == {"yolox_nano"}
        joined = await client.join(model="yolox_nano", sample_fps=10)
        assert joined.bridge in stack.bridges
        answer = await client.offer(LoopingVideoTrack(video_path), codec=codec)
        assert rtpmap_codecs(answer.sdp) - {"RTX"} == {codec.upper()}
        found = await person_detections(client, 3)
        for message in found:
            assert message.session == joined.session and message.worker in stack.workers
            assert (message.width, message.height) == (480, 360)  # the sampled frame's own size
            assert message.model_version and message.latency_ms > 0
            assert message.timings.inference_ms > 0
        assert len({m.seq for m in found}) == len(found)
        await client.bye()


async def test_two_sessions_at_once_each_get_only_their_own(stack: LiveStack, video_path: Path) -> None:
    async with (
        LiveClient(stack.url, ice_host_addresses=LOOPBACK, timeout_s=30) as one,
        LiveClient(stack.url, ice_host_addresses=LOOPBACK, timeout_s=30) as two,
    ):
        joined = [await one.join(sample_fps=5), await two.join(sample_fps=5)]
        await one.offer(LoopingVideoTrack(video_path))
        await two.offer(LoopingVideoTrack(video_path))
        await asyncio.gather(person_detections(one, 3), person_detections(two, 3))
        for client, mine in ((one, joined[0]), (two, joined[1])):
            sessions = {m.session for m in client.of_type("detections")}
            assert sessions == {mine.session}
        assert joined[0].session != joined[1].session
        await one.bye()
        await two.bye()


async def test_publish_runs_until_stopped(stack: LiveStack, video_path: Path) -> None:
    stop = asyncio.Event()
    seen: list[str] = []

    def on_message(message: object) -> None:
        seen.append(message.type)  # type: ignore[attr-defined]
        if seen.count("detections") >= 2:
            stop.set()

    ended = await asyncio.wait_for(
        publish(
            LoopingVideoTrack(video_path),
            stack.url,
            on_message=on_message,
            stop=stop,
            ice_host_addresses=LOOPBACK,
        ),
        90,
    )
    assert ended.type == "bye" and seen[0] == "hello" and "joined" in seen and "answer" in seen


async def test_a_socket_closed_by_the_server_raises_closed_and_closes_quietly() -> None:
    """A server that says hello and hangs up: sends, waits, bye and close never raise a socket error."""

    async def hang_up(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        hello = HelloMessage(models=[], default_model="yolox_nano", sample_fps=10, max_sample_fps=30)
        await ws.send_str(hello.model_dump_json())
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", hang_up)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        client = LiveClient(f"http://127.0.0.1:{port}", timeout_s=5)
        await client.connect()
        await asyncio.wait_for(client.closed.wait(), 5)
        with pytest.raises(LiveClientError) as sending:
            await client.send({"type": "ping"})
        assert sending.value.code == "closed" and "signaling" in str(sending.value)
        with pytest.raises(LiveClientError) as waiting:
            await client.wait_for("bye", "error")
        assert waiting.value.code == "closed"
        await client.bye()  # quiet: there is no one to say it to
        await client.close()
    finally:
        await runner.cleanup()


async def test_nothing_listening_is_unreachable_not_a_socket_error() -> None:
    with pytest.raises(LiveClientError) as refused:
        await LiveClient(f"http://127.0.0.1:{free_port()}").connect()
    assert refused.value.code == "unreachable"
    assert not isinstance(refused.value, aiohttp.ClientError)


async def test_publish_raises_closed_when_signaling_dies(stack: LiveStack, video_path: Path) -> None:
    async def kill_on_first_result(message: object) -> None:
        if getattr(message, "type", "") == "detections" and stack.signaling and stack.signaling.alive():
            await asyncio.to_thread(stack.kill_signaling)

    try:
        with pytest.raises(LiveClientError) as lost:
            await asyncio.wait_for(
                publish(
                    LoopingVideoTrack(video_path),
                    stack.url,
                    on_message=kill_on_first_result,
                    ice_host_addresses=LOOPBACK,
                ),
                90,
            )
        assert lost.value.code == "closed"  # was: a traceback from writing bye to the closed socket
    finally:
        if stack.signaling is not None and not stack.signaling.alive():
            await asyncio.to_thread(stack.restart_signaling)


async def test_a_killed_worker_does_not_end_the_session(stack: LiveStack, video_path: Path) -> None:
    async with LiveClient(stack.url, ice_host_addresses=LOOPBACK, timeout_s=30) as client:
        await client.join(sample_fps=10)
        await client.offer(LoopingVideoTrack(video_path))
        first = await client.wait_for("detections", timeout_s=60)
        victim = first.worker
        stack.workers[victim].kill9()
        survivor = next(name for name in stack.workers if name != victim)
        later = await client.wait_for(
            "detections", timeout_s=60, predicate=lambda m: m.worker == survivor and m.seq > first.seq
        )
        assert later.session == first.session
        assert not [m for m in client.of_type("error")]
        await client.bye()


async def test_a_killed_bridge_is_reported_and_a_rejoin_gets_a_live_one(
    stack: LiveStack, video_path: Path
) -> None:
    async with LiveClient(stack.url, ice_host_addresses=LOOPBACK, timeout_s=30) as client:
        joined = await client.join(sample_fps=10)
        await client.offer(LoopingVideoTrack(video_path))
        await client.wait_for("detections", timeout_s=60)
        stack.bridges[joined.bridge].signal(signal.SIGKILL)
        lost = await client.wait_for("error", timeout_s=60)
        assert lost.code.value == "bridge_lost" and joined.bridge in lost.message
        again = await client.join(sample_fps=10)
        assert again.bridge != joined.bridge and again.bridge in stack.bridges
        await client.offer(LoopingVideoTrack(video_path))
        fresh = await client.wait_for(
            "detections", timeout_s=60, predicate=lambda m: m.session == again.session
        )
        assert fresh.session == again.session
        await client.bye()
