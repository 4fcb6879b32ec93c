"""`lookout detect`, `lookout eval` and `lookout models pull` as real processes on the real model and data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.inference.crafted import bomb_png
from tests.inference.reference import iou, reference_yolox
from tests.inference.toy_models import constant_output_model
from tests.support.images import imread
from tests.support.processes import run_lookout
from tests.support.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]


def lookout(
    *args: str | Path, model_dir: Path | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONUNBUFFERED": "1"}
    if model_dir is not None:
        env["LOOKOUT_MODEL_DIR"] = str(model_dir)
    return run_lookout(*args, env=env, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lookout: error:")]


def assert_clean_failure(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_detect_dog_matches_the_reference(images_dir: Path, model_path: Path) -> None:
    result = lookout("detect", images_dir / "dog.jpg", model_dir=model_path.parent)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    record = json.loads(line)
    assert set(record) == {"image", "width", "height", "detections", "inference_ms"}
    assert (record["width"], record["height"]) == (768, 576) and record["inference_ms"] > 0
    reference = reference_yolox(model_path, imread(images_dir / "dog.jpg"))
    for label, class_id in (("dog", 16), ("bicycle", 1), ("car", 2)):
        found = max((d for d in record["detections"] if d["label"] == label), key=lambda d: d["score"])
        assert found["class_id"] == class_id and found["score"] > 0.7
        ref = max((r for r in reference if r[0] == class_id), key=lambda r: r[1])
        assert iou(found["box"], ref[2]) > 0.9
    assert "running on CPUExecutionProvider" in result.stderr


def test_bad_images_fail_alone_and_the_others_are_processed(
    images_dir: Path, model_path: Path, tmp_path: Path
) -> None:
    dog = (images_dir / "dog.jpg").read_bytes()
    bad = {
        "corrupt.jpg": b"\xff\xd8" + bytes(range(256)) * 16,
        "truncated.jpg": dog[: len(dog) // 3],
        "empty.jpg": b"",
        "notes.txt": b"a text file, not an image\n",
        "tiny.png": cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes(),
        "bomb.png": bomb_png(20000, 20000),
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    gray = tmp_path / "gray.png"
    cv2.imwrite(str(gray), imread(images_dir / "dog.jpg", cv2.IMREAD_GRAYSCALE))
    bgra = tmp_path / "bgra.png"
    cv2.imwrite(str(bgra), cv2.cvtColor(imread(images_dir / "person.jpg"), cv2.COLOR_BGR2BGRA))
    order = [
        images_dir / "dog.jpg",
        *(tmp_path / name for name in bad),
        tmp_path / "missing.jpg",
        gray,
        bgra,
        images_dir / "person.jpg",
    ]
    result = lookout("detect", *order, "--out", tmp_path / "out", model_dir=model_path.parent)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in records] == [str(p) for p in order]
    errors = {Path(r["image"]).name: r["error"] for r in records if "error" in r}
    assert set(errors) == {*bad, "missing.jpg"}
    assert "corrupt" in errors["corrupt.jpg"] and "truncated" in errors["truncated.jpg"]
    assert "empty" in errors["empty.jpg"] and "not a decodable image" in errors["notes.txt"]
    assert "1x1" in errors["tiny.png"] and "20000x20000" in errors["bomb.png"]
    assert "no such file" in errors["missing.jpg"]
    assert len(error_lines(result.stderr)) == len(errors)  # one line each
    labels = {
        Path(r["image"]).name: {d["label"] for d in r["detections"] if d["score"] > 0.5}
        for r in records
        if "error" not in r
    }
    assert {"dog", "bicycle"} <= labels["dog.jpg"] and "dog" in labels["gray.png"]
    assert {"person", "horse"} <= labels["bgra.png"] and labels["bgra.png"] == labels["person.jpg"]
    assert "converted a grayscale image" in result.stderr and "converted a 4-channel image" in result.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["bgra.jpg", "dog.jpg", "gray.jpg", "person.jpg"]
    assert imread(tmp_path / "out" / "dog.jpg").shape == (576, 768, 3)


def test_a_folder_stands_for_its_images(images_dir: Path, model_path: Path, tmp_path: Path) -> None:
    for name in ("dog.jpg", "bus.jpg"):
        (tmp_path / name).symlink_to(images_dir / name)
    (tmp_path / "readme.md").write_text("not an image, and not picked up\n")
    result = lookout("detect", tmp_path, "--conf", "0.5", model_dir=model_path.parent)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["image"]).name for r in records] == ["bus.jpg", "dog.jpg"]
    assert "bus" in {d["label"] for d in records[0]["detections"]}
    assert all(d["score"] >= 0.5 for r in records for d in r["detections"])


def test_bad_models_fail_in_one_line(images_dir: Path, model_path: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("not a model\n")
    odd = constant_output_model(tmp_path / "odd.onnx", np.zeros((1, 10), np.float32))
    dog = images_dir / "dog.jpg"
    assert_clean_failure(lookout("detect", dog, "--model", text), "not a loadable ONNX model")
    assert_clean_failure(lookout("detect", dog, "--model", odd), "unknown output layout [1,10]")
    assert_clean_failure(lookout("detect", dog, "--model", tmp_path / "gone.onnx"), "does not exist")
    unknown = lookout("detect", dog, "--model", "yolox_q", model_dir=model_path.parent)
    assert_clean_failure(unknown, "unknown model 'yolox_q'; known names: ")
    assert "yolov7-tiny" in unknown.stderr and "yolox_nano" in unknown.stderr
    assert_clean_failure(lookout("detect", dog, "--conf", "2", model_dir=model_path.parent), "--conf")


def test_eval_coco128_reports_ap(model_path: Path, shared_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    data = shared_dir / "data" / "coco-subset" / "coco128"
    result = lookout(
        "eval", "--model", "yolox_nano", "--data", data, "--out", out, model_dir=model_path.parent
    )
    assert result.returncode == 0, result.stderr
    saved = json.loads(out.read_text())
    assert saved["ap"] >= 0.32 and saved["ap50"] >= 0.48
    assert saved["images"] == 128 and saved["annotations"] == 929
    assert (saved["conf"], saved["nms"]) == (0.01, 0.65)
    assert f"{saved['ap']:.3f}" in result.stdout and "AP@.50" in result.stdout
    assert "128/128" in result.stderr  # the tqdm bar


def test_eval_missing_data_is_one_line(model_path: Path, tmp_path: Path) -> None:
    result = lookout("eval", "--data", tmp_path / "none", model_dir=model_path.parent)
    assert_clean_failure(result, "does not exist")


def test_pull_without_network_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/yolox_s.onnx"
    result = lookout("models", "pull", "yolox_s", "--dir", tmp_path, "--sha256", "ab" * 32, "--url", url)
    assert_clean_failure(result, "cannot download")
    assert list(tmp_path.iterdir()) == []
    assert_clean_failure(lookout("models", "pull", "yolox_m", "--dir", tmp_path), "pass --sha256")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_requested_stop_exits_zero(images_dir: Path, model_path: Path, stop: signal.Signals) -> None:
    images = [images_dir / "dog.jpg"] * 5000  # far more than can finish before the signal
    process = subprocess.Popen(
        [sys.executable, "-m", "lookout", "detect", *map(str, images)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "LOOKOUT_MODEL_DIR": str(model_path.parent)},
        # Started the way a script's background job is: with SIGINT ignored, which Python then keeps.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # blocks until the run is under way
        assert json.loads(first)["detections"]
        process.send_signal(stop)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "stopped on request after" in err and "Traceback" not in err
    assert len(out.splitlines()) + 1 < len(images)


def test_help_explains_each_command() -> None:
    for command, option in ((["detect"], "--out"), (["eval"], "--data"), (["models", "pull"], "--sha256")):
        result = lookout(*command, "--help")
        assert result.returncode == 0 and option in result.stdout and "default" in result.stdout
