"""Class names of a model: from its metadata, from a sidecar file beside it, or COCO's 80 by default."""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

# COCO's own spellings in the contiguous 80-class order YOLOX and YOLOv7 use (not darknet's
# aeroplane/motorbike/sofa/pottedplant/diningtable/tvmonitor).
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

# The COCO category id of each contiguous class index (COCO's ids skip 12, 26, 29, ...).
COCO_CATEGORY_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)  # fmt: skip

METADATA_KEYS = ("names", "labels", "classes")
SIDECAR_SUFFIXES = (".names", ".txt")


def parse_names(text: str) -> list[str] | None:
    """Names from a metadata value: a JSON list, a ``{0: 'person', ...}`` dict (Ultralytics), or CSV."""
    text = text.strip()
    if not text:
        return None
    value: object
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = [part.strip() for part in text.split(",")]
    if isinstance(value, Mapping):
        try:
            ordered = sorted(value.items(), key=lambda item: int(item[0]))
        except (TypeError, ValueError):
            return None
        return [str(name) for _, name in ordered]
    if isinstance(value, list | tuple) and all(isinstance(name, str) for name in value):
        return [str(name) for name in value]
    return None


def read_sidecar(model_path: Path) -> tuple[list[str], Path] | None:
    """One name per line from ``<model>.names`` or ``<model>.txt`` beside the model."""
    for suffix in SIDECAR_SUFFIXES:
        candidate = model_path.with_suffix(suffix)
        if candidate.is_file():
            names = [line.strip() for line in candidate.read_text(errors="replace").splitlines()]
            names = [name for name in names if name]
            if names:
                return names, candidate
    return None


def load_labels(model_path: Path, metadata: Mapping[str, str], num_classes: int | None) -> list[str]:
    """The model's class names, padded with ``class_<i>`` if a source has fewer than the model outputs."""
    names: list[str] | None = None
    source = ""
    for key in METADATA_KEYS:
        if key in metadata:
            names = parse_names(metadata[key])
            if names:
                source = f"metadata '{key}'"
                break
    if not names:
        sidecar = read_sidecar(model_path)
        if sidecar:
            names, found = sidecar
            source = str(found)
    if not names:
        if num_classes in (None, len(COCO_CLASSES)):
            return list(COCO_CLASSES)
        log.warning("%s: no class names found for %d classes; using class_<i>", model_path.name, num_classes)
        return [f"class_{i}" for i in range(num_classes or 0)]
    if num_classes is not None and len(names) != num_classes:
        log.warning(
            "%s: %s has %d names but the model has %d classes",
            model_path.name,
            source,
            len(names),
            num_classes,
        )
        names = names[:num_classes] + [f"class_{i}" for i in range(len(names), num_classes)]
    return names
