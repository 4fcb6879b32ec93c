"""Class names: metadata, sidecar files, COCO's own spellings by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.detector import Detector
from inference.labels import COCO_CATEGORY_IDS, COCO_CLASSES, load_labels, parse_names
from tests.inference.toy_models import constant_output_model


def test_coco_spellings_not_darknet(shared_dir: Path) -> None:
    darknet = (shared_dir / "data" / "coco.names").read_text().split("\n")[:80]
    differing = {d: c for d, c in zip(darknet, COCO_CLASSES, strict=True) if d != c}
    assert differing == {
        "aeroplane": "airplane",
        "motorbike": "motorcycle",
        "sofa": "couch",
        "pottedplant": "potted plant",
        "diningtable": "dining table",
        "tvmonitor": "tv",
    }
    assert len(COCO_CATEGORY_IDS) == 80 and COCO_CATEGORY_IDS[-1] == 90


@pytest.mark.parametrize(
    "text",
    ['["cat", "dog"]', "{0: 'cat', 1: 'dog'}", '{"1": "dog", "0": "cat"}', "cat, dog"],
)
def test_parse_names_forms(text: str) -> None:
    assert parse_names(text) == ["cat", "dog"]


def test_parse_names_rejects_nonsense() -> None:
    assert parse_names("") is None
    assert parse_names("[1, 2]") is None


def test_sources_in_order(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    assert load_labels(model, {}, 80) == list(COCO_CLASSES)
    assert load_labels(model, {}, 2) == ["class_0", "class_1"]
    (tmp_path / "m.txt").write_text("cat\ndog\n")
    assert load_labels(model, {}, 2) == ["cat", "dog"]
    (tmp_path / "m.names").write_text("lion\ntiger\n")
    assert load_labels(model, {}, 2) == ["lion", "tiger"]  # .names before .txt
    assert load_labels(model, {"names": '["a", "b"]'}, 2) == ["a", "b"]  # metadata first
    assert load_labels(model, {"names": '["a"]'}, 3) == ["a", "class_1", "class_2"]


def test_detector_reads_names_from_graph_metadata(tmp_path: Path) -> None:
    table = np.zeros((1, 3 * 84, 5 + 2), np.float32)
    table[0, 0, :5] = 32, 32, 10, 10, 1.0
    table[0, 0, 6] = 0.9
    path = constant_output_model(tmp_path / "two.onnx", table, metadata={"names": "{0: 'cat', 1: 'dog'}"})
    detector = Detector.load(path)
    assert detector.labels == ["cat", "dog"]
    assert [d.label for d in detector.detect(np.zeros((64, 64, 3), np.uint8))] == ["dog"]
