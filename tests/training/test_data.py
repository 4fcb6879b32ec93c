"""Training data sources: YOLO folders (coco128, hard-example stores), COCO JSON, several at once."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.data import DataError, DetectionDataset, coco_json, load_sources, yolo_folder


def _store(root: Path, names: list[str], labels: dict[str, str]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    for name in names:
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), np.full((60, 80, 3), 100, np.uint8))
    for name, text in labels.items():
        (root / "labels" / f"{name}.txt").write_text(text)
    return root


def test_coco128_layout(coco128: Path) -> None:
    samples = yolo_folder(coco128)
    assert len(samples) == 128
    assert sum(len(s.boxes) for s in samples) == 929  # SOURCES.md: 929 boxes
    assert all(s.image.parent.name == "train2017" for s in samples)


def test_flat_store_missing_labels_mean_no_objects(tmp_path: Path) -> None:
    root = _store(tmp_path / "s", ["a", "b"], {"a": "0 0.5 0.5 0.25 0.5\n2 0.1 0.1 0.1 0.1\n"})
    a, b = yolo_folder(root)
    assert a.boxes.shape == (2, 5) and b.boxes.shape == (0, 5)
    images, targets = DetectionDataset([a], 416)[0]
    assert images.shape == (3, 416, 416)
    # 80x60 letterboxed to 416: scale 5.2; the first box is centred at (208, 156), 104 x 156 pixels.
    assert np.allclose(targets[0], [0, 208, 156, 104, 156], atol=0.5)
    assert not targets[2:].any()


def test_malformed_labels_say_where(tmp_path: Path) -> None:
    root = _store(tmp_path / "s", ["a"], {"a": "0 0.5 0.5\n"})
    with pytest.raises(DataError, match=r"a\.txt:1: expected 'class cx cy w h'"):
        yolo_folder(root)


def test_coco_json(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "x.jpg"), np.zeros((100, 200, 3), np.uint8))
    doc = {
        "images": [{"id": 7, "file_name": "x.jpg", "width": 200, "height": 100}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"image_id": 7, "category_id": 3, "bbox": [50, 25, 100, 50], "iscrowd": 0},
            {"image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 1},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    (sample,) = coco_json(path)
    assert np.allclose(sample.boxes, [[1, 0.5, 0.5, 0.5, 0.5]])  # crowd boxes are left out


def test_several_sources_and_errors(tmp_path: Path, coco128: Path) -> None:
    store = _store(tmp_path / "s", ["a"], {"a": "1 0.5 0.5 0.2 0.2\n"})
    assert len(load_sources([coco128, store])) == 129
    assert len(load_sources([coco128, store], limit=5)) == 6  # at most 5 of each
    with pytest.raises(DataError, match="not found"):
        load_sources([tmp_path / "nope"])
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        load_sources([tmp_path / "empty"])
    with pytest.raises(DataError, match="no images/ folder"):
        load_sources([tmp_path / "s" / "labels"])
