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
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from lookout.stream import AnnotatedVideo, JsonLines, RecentFrames, _stream
from lookout.webrtc_client import LoopingVideoTrack
from tests.support.live_stack import LiveStack
from tests.support.processes import LookoutProcess, run_lookout
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


def span_s(messages: list[dict[str, Any]]) -> float:
    stamps = [m["received_ms"] for m in messages]
    return (max(stamps) - min(stamps)) / 1000.0 if stamps else 0.0


def labels_in(messages: list[dict[str, Any]]) -> set[str]:
    return {d["label"] for m in messages for d in m["detections"]}


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
    messages = read_lines(out)
    assert {"person", "car"} <= labels_in(messages), labels_in(messages)
    assert all(m["type"] == "detections" and m["model"] == "yolox_nano" for m in messages)
    assert len({m["seq"] for m in messages}) == len(messages)
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
    messages = read_lines(out)
    assert any(d["label"] == "person" for m in messages for d in m["detections"]), done.stderr[-3000:]


def test_a_missing_source_is_a_one_line_error(stack: LiveStack, tmp_path: Path) -> None:
    done = run_lookout("stream", tmp_path / "nope.mp4", "--server", stack.url, timeout=60)
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1].startswith("lookout: error:") and "Traceback" not in done.stderr
    )


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
    messages = await asyncio.to_thread(read_lines, out)
    assert messages and all(m["type"] == "detections" for m in messages)


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
