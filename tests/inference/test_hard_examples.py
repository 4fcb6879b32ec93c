"""The hard-example sampler: uncertain frames only, one in N, pseudo-labels in YOLO format, capped."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from inference.hard_examples import HardExampleSampler
from tests.support.images import imread
from wire.messages import Detection, ResultMessage


def _result(seq: int, *scores: float) -> ResultMessage:
    detections = [
        Detection(label="person", class_id=0, score=s, box=(20.0, 10.0, 60.0, 50.0)) for s in scores
    ]
    return ResultMessage(
        session="cam", seq=seq, received_ms=0, model="m", model_version="v1", worker="w",
        width=200, height=100, detections=detections,
    )  # fmt: skip


@pytest.fixture
def frame() -> np.ndarray:
    return np.full((100, 200, 3), 90, np.uint8)


def test_only_uncertain_frames_one_in_n(tmp_path: Path, frame: np.ndarray) -> None:
    sampler = HardExampleSampler(tmp_path, low=0.3, high=0.6, every=2, max_items=100)
    sampler(frame, _result(0, 0.9))  # confident: not uncertain
    sampler(frame, _result(1))  # nothing found: not uncertain
    for seq in range(2, 8):
        sampler(frame, _result(seq, 0.45, 0.95))
    assert sampler.uncertain_seen == 6 and sampler.saved == 3
    assert len(list((tmp_path / "images").glob("*.jpg"))) == 3
    assert len(list((tmp_path / "labels").glob("*.txt"))) == 3


def test_pseudo_labels_are_normalised_yolo_lines(tmp_path: Path, frame: np.ndarray) -> None:
    sampler = HardExampleSampler(tmp_path, low=0.3, high=0.6, every=1)
    sampler(frame, _result(0, 0.4, 0.2))  # 0.2 is below the band's low end: not a label
    (image,) = (tmp_path / "images").glob("*.jpg")
    label = tmp_path / "labels" / f"{image.stem}.txt"
    assert label.read_text().splitlines() == ["0 0.200000 0.300000 0.200000 0.400000"]
    decoded = cv2.imread(str(image))
    assert decoded is not None and decoded.shape == (100, 200, 3)


def test_the_store_is_capped_oldest_first(tmp_path: Path, frame: np.ndarray) -> None:
    sampler = HardExampleSampler(tmp_path, every=1, max_items=3)
    for seq in range(5):
        sampler(frame, _result(seq, 0.5))
    names = sorted(p.stem for p in (tmp_path / "images").glob("*.jpg"))
    assert [n.rsplit("-", 1)[1] for n in names] == ["2", "3", "4"]
    assert sorted(p.stem for p in (tmp_path / "labels").glob("*.txt")) == names
    # A restarted worker keeps counting what is already there.
    again = HardExampleSampler(tmp_path, every=1, max_items=3)
    again(frame, _result(9, 0.5))
    assert len(list((tmp_path / "images").glob("*.jpg"))) == 3


def test_the_store_is_training_data(tmp_path: Path, frame: np.ndarray) -> None:
    pytest.importorskip("torch")
    from training.data import load_sources

    sampler = HardExampleSampler(tmp_path, every=1)
    sampler(frame, _result(0, 0.5))
    (sample,) = load_sources([tmp_path])
    assert np.allclose(sample.boxes, [[0, 0.2, 0.3, 0.2, 0.4]])


def test_a_bad_band_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uncertain band"):
        HardExampleSampler(tmp_path, low=0.7, high=0.2)


async def test_a_real_worker_writes_a_store_of_training_data(
    redis: Any, redis_server: Any, keys: Any, tmp_path: Path, model_path: Path, images_dir: Path
) -> None:
    pytest.importorskip("torch")
    from tests.support.processes import LookoutProcess, wait_until
    from wire.client import FrameClient

    store = tmp_path / "hard"
    worker = LookoutProcess(
        "hard-examples-worker",
        ["worker", "--model=yolox_nano", f"--model-dir={model_path.parent}", f"--redis={redis_server.url}",
         "--threads=1", "--watch-registry=false", f"--hard-examples={store}", "--hard-examples-every=2",
         "--hard-examples-high=0.9"],
    )  # fmt: skip
    image = imread(images_dir / "dog.jpg")  # dog 0.86, bicycle and car 0.80: inside [0.3, 0.9]
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    try:
        async with FrameClient(redis, keys=keys) as client:
            await wait_until(lambda: client.has_worker("yolox_nano"), timeout=60, what="the worker")
            for _ in range(4):
                outcome = await client.detect(jpeg, model="yolox_nano", width=768, height=576, timeout_s=60)
                assert outcome.kind == "result"
        await wait_until(lambda: _stored(store, 2), timeout=30, what="two hard examples on disk")
    finally:
        assert worker.stop() == 0
    assert "sampling uncertain frames" in worker.log_path.read_text()
    labels = sorted((store / "labels").glob("*.txt"))
    assert len(labels) == 2  # one uncertain frame in 2
    classes = {line.split()[0] for line in labels[0].read_text().splitlines()}
    assert {"16", "1", "2"} <= classes  # dog, bicycle and car as pseudo-labels

    # `lookout train --data STORE` reads it with this loader (tests/training/test_cli.py trains on one).
    from training.data import load_sources

    samples = await asyncio.to_thread(load_sources, [store])
    assert len(samples) == 2 and all(len(sample.boxes) >= 3 for sample in samples)


async def _stored(store: Path, count: int) -> bool:
    return len(list((store / "images").glob("*.jpg"))) >= count
