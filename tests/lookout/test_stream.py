"""`lookout stream` as a real process against a real stack (signaling, one bridge, one worker).

A 3 s clip cut from vtest.mp4 at test time: looped, results keep coming long past its end; played once
with --annotate, the command ends by itself with an annotated MP4.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
from redis import Redis

from lookout.reconnect import SessionOptions, StreamSessions
from lookout.stream import _stream
from lookout.stream_ledger import Gap, StreamLedger
from lookout.stream_sinks import AnnotatedVideo, JsonLines, RecentFrames
from lookout.webrtc_client import LoopingVideoTrack
from tests.support.live_stack import LiveStack
from tests.support.processes import LookoutProcess, run_lookout
from wire.bridge_rpc import SessionEvent
from wire.config import BridgeSettings, SignalingSettings

pytestmark = pytest.mark.slow

CLIP_S = 3.0
FPS = 10


@pytest.fixture(scope="module")
def stack(shared_dir: Path) -> Iterator[LiveStack]:
    running = LiveStack("stream", shared_dir / "models", bridges=1, workers=1).start()
    try:
        yield running
    finally:
        running.stop()


def cut(video_path: Path, path: Path) -> Path:
    """The first 3 s of vtest.mp4 (people walking past parked cars), re-encoded with PyAV."""
    with av.open(str(video_path)) as source, av.open(str(path), mode="w") as target:
        stream = target.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 480, 360, "yuv420p"
        for index, frame in enumerate(source.decode(video=0)):
            if index >= CLIP_S * FPS:
                break
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            for packet in stream.encode(frame.reformat(480, 360, "yuv420p")):
                target.mux(packet)
        for packet in stream.encode():
            target.mux(packet)
    return path


@pytest.fixture(scope="module")
def clip(video_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cut(video_path, tmp_path_factory.mktemp("stream") / "clip.mp4")


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines[:-1]] + _complete(lines[-1:])


def _complete(last: list[str]) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in last]
    except json.JSONDecodeError:  # being written right now
        return []


def detections(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The detections messages among the lines (the others are the command's gap and summary records)."""
    return [m for m in lines if m.get("type") == "detections"]


def span_s(messages: list[dict[str, Any]]) -> float:
    stamps = [m["received_ms"] for m in detections(messages)]
    return (max(stamps) - min(stamps)) / 1000.0 if stamps else 0.0


def labels_in(messages: list[dict[str, Any]]) -> set[str]:
    return {d["label"] for m in detections(messages) for d in m["detections"]}


def test_vtest_gives_person_and_car_detections(stack: LiveStack, video_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "vtest.jsonl"
    stream = LookoutProcess(
        "stream-vtest", ["stream", str(video_path), "--server", stack.url, "--out", str(out)], {**stack.env}
    )
    try:
        deadline = time.monotonic() + 120
        while not {"person", "car"} <= labels_in(read_lines(out)):
            assert stream.alive(), stream.log()[-3000:]
            assert time.monotonic() < deadline, f"no person and car yet:\n{stream.log()[-3000:]}"
            time.sleep(0.5)
        stream.signal(signal.SIGTERM)
        assert stream.stop(timeout=30) == 0  # a requested stop is a clean exit
    finally:
        stream.stop()


def test_a_looping_file_keeps_streaming_past_its_end(stack: LiveStack, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "detections.jsonl"
    stream = LookoutProcess(
        "stream-loop",
        ["stream", str(clip), "--server", stack.url, "--loop", "--fps", "5", "--out", str(out)],
        {**stack.env},
    )
    try:
        deadline = time.monotonic() + 120
        while span_s(read_lines(out)) < 2.2 * CLIP_S:
            assert stream.alive(), stream.log()[-3000:]
            assert time.monotonic() < deadline, f"results stopped coming:\n{stream.log()[-3000:]}"
            time.sleep(0.5)
        stream.signal(signal.SIGTERM)
        assert stream.stop(timeout=30) == 0, stream.log()[-3000:]
    finally:
        stream.stop()
    lines = read_lines(out)
    messages = detections(lines)
    assert {"person", "car"} <= labels_in(messages), labels_in(messages)
    assert all(m["model"] == "yolox_nano" for m in messages)
    assert len({m["seq"] for m in messages}) == len(messages)
    assert lines[-1]["event"] == "summary" and lines[-1]["lost"] is None and len(lines) == len(messages) + 1
    assert lines[-1]["results"] >= len(messages) and lines[-1]["sessions"] == 1
    assert "Traceback" not in stream.log_path.read_text()


def test_a_file_played_once_ends_by_itself_with_an_annotated_video(
    stack: LiveStack, clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "annotated.mp4"
    done = run_lookout("stream", clip, "--server", stack.url, "--annotate", out, env=stack.env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    with av.open(str(out)) as video:
        frames = sum(1 for _ in video.decode(video=0))
        assert (video.streams.video[0].width, video.streams.video[0].height) == (480, 360)
    assert frames > 0, done.stderr[-3000:]


def test_h264_from_mpeg_ts_passes_through_undecoded(
    stack: LiveStack, video_path: Path, tmp_path: Path
) -> None:
    clip = cut(video_path, tmp_path / "clip.ts")  # MPEG-TS carries Annex-B H.264, what aiortc can forward
    out = tmp_path / "detections.jsonl"
    args = ["stream", str(clip), "--server", stack.url, "--codec", "h264", "--out", str(out)]
    done = run_lookout(*args, env=stack.env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "H.264 passed through" in done.stderr
    messages = detections(read_lines(out))
    assert any(d["label"] == "person" for m in messages for d in m["detections"]), done.stderr[-3000:]


def test_a_missing_source_is_a_one_line_error(stack: LiveStack, tmp_path: Path) -> None:
    done = run_lookout("stream", tmp_path / "nope.mp4", "--server", stack.url, timeout=60)
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1].startswith("lookout: error:") and "Traceback" not in done.stderr
    )


# --- ending honestly: the server ends the stream, signaling dies, --reconnect gets it back ---------------
# These kill and restart the stack's signaling, so they come after the tests above that only use it.
def wait_for_lines(
    stream: LookoutProcess, out: Path, check: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 120
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        lines = read_lines(out)
        if check(lines):
            return lines
        assert stream.alive(), stream.log()[-3000:]
        assert time.monotonic() < deadline, f"timed out:\n{stream.log()[-3000:]}"
        time.sleep(0.2)


def ended_with_one_line(stream: LookoutProcess, timeout_s: float = 60) -> tuple[int, str]:
    """The exit code and the last line of its output, once it has exited by itself."""
    code = stream.process.wait(timeout_s)
    text = stream.log()
    assert "Traceback" not in text, text[-3000:]
    return code, text.strip().splitlines()[-1]


def loop_stream(name: str, stack: LiveStack, clip: Path, out: Path, *extra: str) -> LookoutProcess:
    args = ["stream", str(clip), "--server", stack.url, "--loop", "--fps", str(FPS), "--out", str(out)]
    return LookoutProcess(name, [*args, *extra], {**stack.env})


def test_a_bye_from_the_server_before_the_stop_exits_1_with_one_line(
    stack: LiveStack, clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bye.jsonl"
    stream = loop_stream("stream-bye", stack, clip, out)
    try:
        session = detections(wait_for_lines(stream, out, lambda lines: bool(detections(lines))))[0]["session"]
        # What the bridge publishes when the media connection closes: signaling ends the session with bye.
        event = SessionEvent(session=session, bridge="test", event="closed", detail="closed by the test")
        client = Redis.from_url(stack.redis_server.url)
        try:
            client.publish(stack.keys.session_events(session), event.model_dump_json())
        finally:
            client.close()
        code, last = ended_with_one_line(stream)
    finally:
        stream.stop()
    assert code == 1
    assert last.startswith("lookout: error: lost the stream: the server sent bye"), last
    assert "closed by the test" in last
    *_, gap, summary = read_lines(out)
    assert summary["event"] == "summary" and summary["lost"] and summary["results"] > 0
    # The frames since the last result ended nowhere: the run's last gap, written before the summary.
    assert gap["event"] == "gap" and gap["to_ms"] >= gap["from_ms"] and "closed by the test" in gap["reason"]


def test_signaling_killed_without_reconnect_exits_1_with_one_line(
    stack: LiveStack, clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed.jsonl"
    stream = loop_stream("stream-killed", stack, clip, out)
    try:
        wait_for_lines(stream, out, lambda lines: bool(detections(lines)))
        stack.kill_signaling()
        code, last = ended_with_one_line(stream)
    finally:
        stream.stop()
        if stack.signaling is not None and not stack.signaling.alive():
            stack.restart_signaling()
    assert code == 1
    assert last.startswith("lookout: error: lost the stream: signaling connection lost"), last
    *_, gap, summary = read_lines(out)
    assert summary["lost"] and gap["event"] == "gap" and gap["reason"].startswith("signaling connection lost")


def test_with_reconnect_a_restarted_signaling_gets_the_stream_back_and_the_gap_counted(
    stack: LiveStack, clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reconnect.jsonl"
    stream = loop_stream("stream-reconnect", stack, clip, out, "--reconnect")
    try:
        before = detections(wait_for_lines(stream, out, lambda lines: len(detections(lines)) >= 5))
        first = before[0]["session"]
        stack.kill_signaling()
        lost_at = time.time()
        back_at = stack.restart_signaling()
        wait_for_lines(
            stream, out, lambda lines: any(m["session"] != first for m in detections(lines)), timeout_s=60
        )
        rejoined_at = time.time()
        wait_for_lines(stream, out, lambda lines: sum(m["session"] != first for m in detections(lines)) >= 5)
        stream.signal(signal.SIGTERM)
        assert stream.stop(timeout=30) == 0, stream.log()[-3000:]
    finally:
        stream.stop()
    lines = read_lines(out)
    [gap] = [m for m in lines if m.get("event") == "gap"]
    # The gap runs from the last result of the lost session to the new answer, at the sample rate.
    last_before = max(m["received_ms"] for m in detections(lines) if m["session"] == first)
    first_after = min(m["received_ms"] for m in detections(lines) if m["session"] != first)
    # Not back_at <= to_ms: the client may rejoin before restart_signaling() has polled signaling healthy.
    assert last_before <= gap["from_ms"] <= lost_at * 1000 <= gap["to_ms"] <= first_after
    seconds = (gap["to_ms"] - gap["from_ms"]) / 1000
    assert abs(gap["dropped"] - seconds * FPS) <= 1
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["lost"] is None and summary["sessions"] == 2
    assert summary["by_reason"]["stream_gap"] == gap["dropped"]
    log = stream.log_path.read_text()
    assert "reconnecting in" in log and "stream back after" in log
    print(f"rejoined {rejoined_at - back_at:.1f} s after signaling was back; gap {seconds:.1f} s, {gap}")


def test_with_reconnect_a_killed_bridge_is_rejoined_once_a_bridge_is_back(
    stack: LiveStack, clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bridge.jsonl"
    stream = loop_stream("stream-bridge", stack, clip, out, "--reconnect")
    [bridge] = stack.bridges
    try:
        first = detections(wait_for_lines(stream, out, lambda lines: bool(detections(lines))))[0]["session"]
        stack.bridges[bridge].kill9()
        # Signaling says bridge_lost once the heartbeat expires; rejoins get no_bridge until it is back.
        deadline = time.monotonic() + 30
        while "reconnecting in" not in stream.log():
            assert stream.alive() and time.monotonic() < deadline, stream.log()[-3000:]
            time.sleep(0.2)
        back_at = stack.restart_bridge(bridge)
        wait_for_lines(stream, out, lambda lines: any(m["session"] != first for m in detections(lines)))
        rejoined_at = time.time()
        stream.signal(signal.SIGTERM)
        assert stream.stop(timeout=30) == 0, stream.log()[-3000:]
    finally:
        stream.stop()
    lines = read_lines(out)
    [gap] = [m for m in lines if m.get("event") == "gap"]
    assert gap["reason"].startswith("bridge_lost") and gap["dropped"] > 0
    assert lines[-1]["lost"] is None and lines[-1]["by_reason"]["stream_gap"] == gap["dropped"]
    seconds = (gap["to_ms"] - gap["from_ms"]) / 1000
    print(f"rejoined {rejoined_at - back_at:.1f} s after the bridge was back; gap {seconds:.1f} s, {gap}")


# --- in this process, under blockbuster (tests/conftest.py): nothing of the command blocks the loop ---------
async def stream_args(*argv: object) -> argparse.Namespace:
    """The command line parsed as `lookout stream` would (in a thread: argparse reads its translations)."""
    from lookout.cli import build_parser

    argv_text = ["stream", *map(str, argv), "--ice-host", "127.0.0.1"]
    return await asyncio.to_thread(lambda: build_parser().parse_args(argv_text))


async def test_in_process_a_file_played_once_annotates_without_blocking_the_loop(
    stack: LiveStack, clip: Path, tmp_path: Path
) -> None:
    """MediaPlayer opened, stopped and the MP4 finished in threads; its end reaches the loop."""
    out = tmp_path / "annotated.mp4"
    args = await stream_args(clip, "--server", stack.url, "--annotate", out)
    code = await asyncio.wait_for(_stream(args, BridgeSettings(), SignalingSettings()), timeout=120)
    assert code == 0
    assert await asyncio.to_thread(count_frames, out) > 0


async def test_in_process_a_looping_file_writes_json_lines_without_blocking_the_loop(
    stack: LiveStack, clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "detections.jsonl"
    args = await stream_args(
        clip, "--server", stack.url, "--loop", "--fps", "5", "--duration", "6", "--out", out
    )
    assert await asyncio.wait_for(_stream(args, BridgeSettings(), SignalingSettings()), timeout=120) == 0
    lines = await asyncio.to_thread(read_lines, out)
    assert detections(lines) and all(m["type"] == "detections" for m in lines[:-1])
    assert lines[-1]["event"] == "summary" and lines[-1]["lost"] is None


async def test_in_process_sessions_reconnect_through_a_signaling_restart_without_blocking_the_loop(
    stack: LiveStack, clip: Path
) -> None:
    """The reconnect loop itself (drain, backoff, rejoin, gap) under blockbuster, stopped by the test."""
    stop = asyncio.Event()
    sessions_seen: list[str] = []
    gaps: list[Gap] = []
    restarts: list[asyncio.Future[None]] = []

    async def on_message(message: Any) -> None:
        if message.type == "detections":
            if message.session not in sessions_seen:
                sessions_seen.append(message.session)
                if len(sessions_seen) == 1:  # kill signaling under the first session, then start it again
                    restarts.append(asyncio.get_running_loop().run_in_executor(None, restart))
            if len(sessions_seen) == 2:
                stop.set()

    def restart() -> None:
        stack.kill_signaling()
        stack.restart_signaling()

    async def on_gap(gap: Gap) -> None:
        gaps.append(gap)

    ledger = StreamLedger()
    source = LoopingVideoTrack(clip, fps=FPS)
    options = SessionOptions(stack.url, "", None, FPS, None, ["127.0.0.1"])
    sessions = StreamSessions(
        source, options, reconnect=True, ledger=ledger, on_message=on_message, on_gap=on_gap, native_fps=FPS
    )
    try:
        assert await asyncio.wait_for(sessions.run(stop), timeout=120) is None
    finally:
        source.stop()
        await asyncio.gather(*restarts)  # its failure, not a timeout, if signaling did not come back
    assert len(gaps) == 1 and gaps[0].dropped > 0 and [t.session for t in ledger.sessions] == sessions_seen
    assert ledger.summary(None)["by_reason"]["stream_gap"] == gaps[0].dropped


async def test_the_sinks_open_and_close_off_the_loop(tmp_path: Path) -> None:
    lines = await asyncio.to_thread(JsonLines, tmp_path / "out" / "d.jsonl")
    await lines.close()
    recent = RecentFrames(LoopingVideoTrack(tmp_path / "unused.mp4"))
    video = await asyncio.to_thread(AnnotatedVideo, tmp_path / "out" / "a.mp4", recent, 5.0)
    await video.close()  # was a blocking .result() on the writer thread
    assert (tmp_path / "out" / "d.jsonl").exists() and (tmp_path / "out" / "a.mp4").exists()


def count_frames(path: Path) -> int:
    with av.open(str(path)) as video:
        return sum(1 for _ in video.decode(video=0))
