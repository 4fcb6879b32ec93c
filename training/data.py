"""Training data: YOLO-format folders (coco128 layout, hard-example stores) and COCO JSON files.

A YOLO folder has images under ``images/`` (any depth, e.g. ``images/train2017``) and, for each image,
a label file at the same relative path under ``labels/`` with the suffix ``.txt``: one line per box,
``class cx cy w h`` normalised to 0-1. An image without a label file has no objects. Several sources
can be combined (``lookout train --data A --data B``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from training.images import letterbox
from wire.errors import LookoutError
from wire.limits import IMAGE_SUFFIXES


class DataError(LookoutError):
    """A --data source is missing, empty or malformed."""


@dataclass(frozen=True)
class Sample:
    """One training image and its boxes: class, cx, cy, w, h normalised to the image (0-1)."""

    image: Path
    boxes: NDArray[np.float32] = field(repr=False)
    source: Path | None = None
    """The --data folder or file it came from."""


def _read_yolo_labels(path: Path) -> NDArray[np.float32]:
    if not path.exists():
        return np.zeros((0, 5), np.float32)
    rows: list[list[float]] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 5:
            raise DataError(f"{path}:{number}: expected 'class cx cy w h', got {line!r}")
        try:
            rows.append([float(p) for p in parts[:5]])
        except ValueError as exc:
            raise DataError(f"{path}:{number}: not a number in {line!r}") from exc
    return np.array(rows, np.float32).reshape(-1, 5)


def yolo_folder(root: Path) -> list[Sample]:
    """Every image under ``root/images`` with its labels from ``root/labels``."""
    images_root = root / "images"
    if not images_root.is_dir():
        raise DataError(f"{root} is not a YOLO-format folder: it has no images/ folder")
    samples = []
    for image in sorted(p for p in images_root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        label = root / "labels" / image.relative_to(images_root).with_suffix(".txt")
        samples.append(Sample(image, _read_yolo_labels(label)))
    return samples


def coco_json(path: Path) -> list[Sample]:
    """Images and boxes of a COCO instances file; images are looked up beside it or in its images/."""
    try:
        doc = json.loads(path.read_text())
        categories = sorted(c["id"] for c in doc["categories"])
        images = {img["id"]: img for img in doc["images"]}
        annotations = doc.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a COCO instances file: {exc}") from exc
    index = {cat: i for i, cat in enumerate(categories)}
    boxes: dict[int, list[list[float]]] = {image_id: [] for image_id in images}
    for ann in annotations:
        image = images.get(ann["image_id"])
        if image is None or ann.get("iscrowd", 0):
            continue
        x, y, w, h = ann["bbox"]
        iw, ih = image["width"], image["height"]
        boxes[image["id"]].append(
            [index[ann["category_id"]], (x + w / 2) / iw, (y + h / 2) / ih, w / iw, h / ih]
        )
    samples = []
    for image_id, image in sorted(images.items()):
        candidates = [path.parent / image["file_name"], path.parent / "images" / image["file_name"]]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise DataError(
                f"{path}: image {image['file_name']} not found beside it or in its images/ folder"
            )
        samples.append(Sample(found, np.array(boxes[image_id], np.float32).reshape(-1, 5)))
    return samples


def load_sources(sources: list[Path], limit: int | None = None) -> list[Sample]:
    """All samples of every source (folders or COCO JSON files), at most ``limit`` of each."""
    samples: list[Sample] = []
    for source in sources:
        if not source.exists():
            raise DataError(f"training data not found: {source}")
        found = coco_json(source) if source.is_file() else yolo_folder(source)
        found = [Sample(s.image, s.boxes, source) for s in found]
        if not found:
            raise DataError(f"{source} holds no images")
        samples.extend(found[:limit] if limit else found)
    return samples


class DetectionDataset:
    """Letterboxed tensors and YOLOX targets (class, cx, cy, w, h in input pixels, zero-padded)."""

    def __init__(self, samples: list[Sample], size: int, max_labels: int = 120, flip: bool = False) -> None:
        self.samples = samples
        self.size = size
        self.max_labels = max_labels
        self.flip = flip

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        import cv2

        sample = self.samples[index]
        image: NDArray[np.uint8] | None = cv2.imread(str(sample.image), cv2.IMREAD_COLOR)  # type: ignore[assignment]
        if image is None:
            raise DataError(f"cannot decode image {sample.image}")
        height, width = image.shape[:2]
        tensor, scale = letterbox(image, self.size)
        boxes = sample.boxes[: self.max_labels].copy()
        targets = np.zeros((self.max_labels, 5), np.float32)
        if len(boxes):
            boxes[:, 1] *= width * scale
            boxes[:, 2] *= height * scale
            boxes[:, 3] *= width * scale
            boxes[:, 4] *= height * scale
            keep = (boxes[:, 3] > 1) & (boxes[:, 4] > 1)  # YOLOX's assigner needs boxes of some size
            boxes = boxes[keep]
            targets[: len(boxes)] = boxes
        if self.flip and np.random.rand() < 0.5:
            tensor = np.ascontiguousarray(tensor[:, :, ::-1])
            filled = targets[:, 3] > 0
            targets[filled, 1] = self.size - targets[filled, 1]
        return tensor, targets
