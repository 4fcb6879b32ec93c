"""The Detector on the real yolox_nano, checked against an independent numpy + onnxruntime reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.detector import Detector
from inference.errors import UnsupportedImageError
from tests.inference.reference import iou, reference_yolox
from tests.inference.toy_models import constant_output_model
from tests.support.images import imread
from wire.messages import Detection


def best(detections: list[Detection], label: str) -> Detection:
    matches = [d for d in detections if d.label == label]
    assert matches, f"no {label} in {[(d.label, round(d.score, 3)) for d in detections]}"
    return max(matches, key=lambda d: d.score)


def test_load_reads_the_graph(nano: Detector, model_path: Path) -> None:
    assert nano.name == "yolox_nano"
    assert nano.version == "695e750a5d57"  # sha256 prefix: this file has no version metadata
    assert nano.path == model_path
    assert nano.format == "yolox"
    assert nano.input_size == (416, 416)
    assert nano.max_batch == 1
    assert nano.provider == "CPUExecutionProvider"
    assert len(nano.labels) == 80
    assert nano.labels[4] == "airplane" and nano.labels[62] == "tv"


def test_dog_matches_the_reference(nano: Detector, model_path: Path, images_dir: Path) -> None:
    image = imread(images_dir / "dog.jpg")
    found = nano.detect(image)
    reference = reference_yolox(model_path, image)
    assert len(found) == len(reference) == 4
    for label, class_id in (("dog", 16), ("bicycle", 1), ("car", 2)):
        detection = best(found, label)
        assert detection.class_id == class_id
        assert detection.score > 0.7
        ref = max((r for r in reference if r[0] == class_id), key=lambda r: r[1])
        assert iou(detection.box, ref[2]) > 0.9
        assert detection.score == pytest.approx(ref[1], abs=1e-4)
    assert best(found, "truck").score == pytest.approx(0.306, abs=0.01)


def test_thresholds_can_be_overridden_per_call(nano: Detector, images_dir: Path) -> None:
    image = imread(images_dir / "dog.jpg")
    assert {d.label for d in nano.detect(image, conf=0.5)} == {"dog", "bicycle", "car"}
    assert len(nano.detect(image, conf=0.01, nms=0.65)) > 4


def test_detect_batch_equals_single(nano: Detector, images_dir: Path) -> None:
    images = [imread(images_dir / n) for n in ("dog.jpg", "person.jpg")]
    batched = nano.detect_batch(images)
    assert batched == [nano.detect(images[0]), nano.detect(images[1])]
    assert {d.label for d in batched[1] if d.score > 0.8} == {"person", "dog", "horse"}


def test_prepare_letterboxes_to_the_top_left(nano: Detector, images_dir: Path) -> None:
    image = imread(images_dir / "dog.jpg")  # 768x576
    prepared = nano.prepare(image)
    assert prepared.tensor.shape == (3, 416, 416) and prepared.tensor.dtype == np.float32
    assert prepared.original == (576, 768)
    assert prepared.scale == pytest.approx(416 / 768)
    assert prepared.pad == (0, 0)
    assert np.all(prepared.tensor[:, 320:, :] == 114)  # 576 * 416/768 = 312 rows of image, then padding


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((64, 64, 3), np.float32),
        np.zeros((1, 1, 3), np.uint8),
    ],
    ids=["gray", "bgra", "float", "1x1"],
)
def test_arrays_that_are_not_hxwx3_uint8_are_refused(nano: Detector, array: np.ndarray) -> None:
    with pytest.raises(UnsupportedImageError):
        nano.detect(array)


def test_warmup_runs(nano: Detector) -> None:
    nano.warmup()


def test_load_by_name_from_the_model_dir(model_path: Path) -> None:
    detector = Detector.load("yolox_nano", model_dir=model_path.parent, conf=0.5, nms=0.5)
    assert detector.path == model_path and detector.conf == 0.5 and detector.nms == 0.5


def test_version_from_metadata(tmp_path: Path) -> None:
    table = np.zeros((1, 3 * 84, 85), np.float32)
    path = constant_output_model(tmp_path / "versioned.onnx", table, metadata={"version": "2026-11-30.3"})
    assert Detector.load(path).version == "2026-11-30.3"


def test_model_dir_defaults_to_the_environment(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKOUT_MODEL_DIR", str(model_path.parent))
    assert Detector.load("yolox_nano").path == model_path
