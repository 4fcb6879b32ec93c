"""`lookout batch` on 16 coco128 images plus one unreadable file: locally and through the REST API of a
real `lookout signaling` and a real `lookout worker`, the two runs give the same detections and reports
of the same format."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lookout.batch import ImageResult, run_images
from lookout.report import BatchReport, ImageTiming, build_report
from tests.signaling.rest_harness import rest_stack
from tests.support.processes import run_lookout
from tests.support.redis_server import free_port

SUBSET = 16


@pytest.fixture(scope="module")
def server(model_path: Path) -> Iterator[str]:
    """A private redis, one worker and one signaling process; yields the server's base URL."""
    with rest_stack("batch", model_path.parent) as url:
        yield url


@pytest.fixture(scope="module")
def folder(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = shared_dir / "data" / "coco-subset" / "coco128" / "images" / "train2017"
    target = tmp_path_factory.mktemp("batch-images")
    for image in sorted(source.glob("*.jpg"))[:SUBSET]:
        (target / image.name).symlink_to(image)
    (target / "broken.jpg").write_bytes(b"this is not an image")
    return target


def batch(*args: str) -> subprocess.CompletedProcess[str]:
    return run_lookout("batch", *args, "--no-progress")


def keys_of(value: Any) -> Any:
    """The shape of a JSON value: its keys, recursively (lists by their first element)."""
    if isinstance(value, dict):
        return {k: keys_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return [keys_of(value[0])] if value else []
    return type(value).__name__


def same_detections(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    if [(d["label"], d["class_id"]) for d in a] != [(d["label"], d["class_id"]) for d in b]:
        return False
    return all(
        abs(x["score"] - y["score"]) < 1e-3
        and all(abs(p - q) < 0.5 for p, q in zip(x["box"], y["box"], strict=True))
        for x, y in zip(a, b, strict=True)
    )


def test_local_and_remote_runs_agree(server: str, folder: Path, model_path: Path, tmp_path: Path) -> None:
    local = batch(
        str(folder), "--local", "--model-dir", str(model_path.parent),
        "--out", str(tmp_path / "local.json"), "--report", str(tmp_path / "local-report.json"),
    )  # fmt: skip
    remote = batch(
        str(folder), "--server", server, "--concurrency", "3",
        "--out", str(tmp_path / "remote.json"), "--report", str(tmp_path / "remote-report.json"),
    )  # fmt: skip
    # One unreadable image: reported, the batch goes on, and the exit code says something failed.
    assert (local.returncode, remote.returncode) == (2, 2), (local.stderr[-2000:], remote.stderr[-2000:])
    for run in (local, remote):
        assert "broken.jpg" in run.stderr and "Traceback" not in run.stderr
        assert "throughput img/s" in run.stdout

    reports = [json.loads((tmp_path / f"{mode}-report.json").read_text()) for mode in ("local", "remote")]
    assert keys_of(reports[0]) == keys_of(reports[1])
    for report, mode in zip(reports, ("local", "remote"), strict=True):
        assert report["mode"] == mode and report["model"] == "yolox_nano"
        assert (report["images"], report["ok"], report["failed"]) == (SUBSET + 1, SUBSET, 1)
        assert report["throughput_per_s"] > 0 and report["latency_ms"]["p50"] > 0
        assert report["latency_ms"]["p99"] >= report["latency_ms"]["p50"]
        assert len(report["per_image"]) == SUBSET + 1
    assert reports[0]["model_version"] == reports[1]["model_version"]
    assert reports[1]["transfer_ms"]["p50"] > 0  # HTTP and Redis cost something; locally it is a file read

    results = [json.loads((tmp_path / f"{mode}.json").read_text()) for mode in ("local", "remote")]
    by_file = [{image["file"]: image for image in r["images"]} for r in results]
    assert by_file[0].keys() == by_file[1].keys() and len(by_file[0]) == SUBSET + 1
    assert "error" in by_file[0]["broken.jpg"] and "error" in by_file[1]["broken.jpg"]
    found = 0
    for name, image in by_file[0].items():
        if name == "broken.jpg":
            continue
        other = by_file[1][name]
        assert (image["width"], image["height"]) == (other["width"], other["height"])
        assert same_detections(image["detections"], other["detections"]), name
        found += len(image["detections"])
    assert found > SUBSET  # coco images are full of objects: an empty run would pass the comparison


def test_bad_arguments_are_one_line_errors(folder: Path, tmp_path: Path) -> None:
    missing = batch(str(tmp_path / "nope"), "--local")
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("lookout: error:")
    empty = tmp_path / "empty"
    empty.mkdir()
    no_images = batch(str(empty), "--local")
    assert no_images.returncode == 2 and "no .jpg" in no_images.stderr
    unreachable = batch(str(folder), "--server", f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr
    assert "Traceback" not in missing.stderr + no_images.stderr + unreachable.stderr


async def test_sigterm_finishes_the_image_in_flight_and_stops(tmp_path: Path) -> None:
    images = [tmp_path / f"{i}.jpg" for i in range(5)]

    async def detect(path: Path) -> ImageResult:
        if path == images[0]:
            os.kill(os.getpid(), signal.SIGTERM)  # caught by run_images' handler, like a Ctrl-C
            await asyncio.sleep(0.2)  # the loop runs the handler while this image is in flight
        return ImageResult(file=path.name, timing=ImageTiming(file=path.name, ok=True, latency_ms=1.0))

    def describe(results: list[ImageResult], wall_s: float, stopped: bool, total: int) -> BatchReport:
        return build_report(
            [r.timing for r in results],
            mode="local",
            target="t",
            model="m",
            model_version="1",
            concurrency=1,
            images=total,
            wall_s=wall_s,
            stopped=stopped,
        )

    report, results = await run_images(images, detect, concurrency=1, progress=False, describe=describe)
    assert report.stopped and [r.file for r in results] == ["0.jpg"]
    assert (report.images, report.ok) == (5, 1)


async def test_remote_answers_are_read_through_the_rest_models(aiohttp_server: Any, tmp_path: Path) -> None:
    """A 200 that is not a DetectResponse is that image's error, not a KeyError; errors give their message."""
    import argparse

    from aiohttp import web

    from lookout.batch import RemoteRunner
    from wire.rest import DETECT_PATH, OPENAPI_PATH

    timings = dict.fromkeys(
        (
            "queue_ms",
            "decode_ms",
            "preprocess_ms",
            "inference_ms",
            "postprocess_ms",
            "transfer_ms",
            "total_ms",
        ),
        1.0,
    )
    answers: dict[str, tuple[int, Any]] = {
        "good.jpg": (
            200,
            {
                "id": "good.jpg",
                "model": "m",
                "model_version": "v3",
                "worker": "w",
                "width": 64,
                "height": 48,
                "detections": [{"label": "dog", "class_id": 16, "score": 0.9, "box": [1.0, 2.0, 30.0, 40.0]}],
                "timings": timings,
            },
        ),
        "partial.jpg": (200, {"id": "partial.jpg", "model": "m", "width": 64}),
        "refused.jpg": (422, {"error": {"code": "undecodable_image", "message": "not a JPEG or PNG"}}),
    }

    async def detect(request: web.Request) -> web.Response:
        status, body = answers[request.query["id"]]
        return web.json_response(body, status=status)

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_post(DETECT_PATH, detect)
    app.router.add_get(OPENAPI_PATH, openapi)
    server = await aiohttp_server(app)
    for name in answers:
        (tmp_path / name).write_bytes(b"\xff\xd8 not decoded by this fake server")
    args = argparse.Namespace(server=str(server.make_url("/")), model=None, timeout=10.0, api_key="")
    async with RemoteRunner(args, 1) as runner:
        good, partial, refused = [await runner.detect(tmp_path / name) for name in answers]
    assert good.timing.ok and (good.width, good.height) == (64, 48)
    assert good.detections[0].label == "dog" and runner.model_version == "v3"
    assert good.timing.compute_ms == 4.0 and good.timing.queue_ms == 1.0
    assert not partial.timing.ok and "does not match the API" in partial.timing.error
    assert not refused.timing.ok and refused.timing.error == "HTTP 422: not a JPEG or PNG"
