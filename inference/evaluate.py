"""COCO AP of a detector on a dataset, with pycocotools.

Two dataset layouts are read:
- YOLO format: ``images/`` and ``labels/`` side by side (optionally one more level such as
  ``train2017``), one ``class cx cy w h`` line per box, normalised, class indices in the model's order.
- COCO format: an instances JSON under ``annotations/`` with the images beside it (in ``images/``,
  ``images/<split>``, ``<split>/`` or the folder itself).

Training calls ``evaluate`` before and after fine-tuning; ``lookout eval`` prints and saves the result.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.detector import Detector, Prepared
from inference.errors import DetectorError, ImageError
from inference.images import read_image
from inference.labels import COCO_CATEGORY_IDS, COCO_CLASSES
from runtime.images import image_size
from wire.limits import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

# Darknet/VOC spellings that appear in some label files for COCO classes.
ALIASES = {
    "aeroplane": "airplane",
    "motorbike": "motorcycle",
    "sofa": "couch",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
    "tvmonitor": "tv",
}


class DatasetError(DetectorError):
    """The data folder is in neither layout, or its annotations do not parse."""


@dataclass
class Dataset:
    """Images plus ground truth as a COCO dict, and how model classes map to its category ids."""

    root: Path
    layout: str
    image_paths: dict[int, Path]
    coco: dict[str, Any]
    category_of_class: dict[int, int]
    skipped: list[str] = field(default_factory=list)
    """Images that could not be read, with the reason; they are left out of the ground truth too."""


@dataclass
class EvalResult:
    ap: float
    """AP averaged over IoU 0.50:0.95 (COCO's primary metric)."""
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float
    ar100: float
    images: int
    annotations: int
    detections: int
    seconds: float
    model: str = ""
    version: str = ""
    data: str = ""
    layout: str = ""
    conf: float = 0.0
    nms: float = 0.0
    skipped: list[str] = field(default_factory=list)
    """Images that could not be read, with the reason; left out of the evaluation (and reported)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        rows = [
            ("model", f"{self.model} {self.version}"),
            ("data", f"{self.data} ({self.layout}, {self.images} images, {self.annotations} boxes)"),
            ("thresholds", f"conf {self.conf}, nms {self.nms}"),
            ("AP@[.50:.95]", f"{self.ap:.3f}"),
            ("AP@.50", f"{self.ap50:.3f}"),
            ("AP@.75", f"{self.ap75:.3f}"),
            ("AP small/medium/large", f"{self.ap_small:.3f} / {self.ap_medium:.3f} / {self.ap_large:.3f}"),
            ("AR@100", f"{self.ar100:.3f}"),
            ("detections", str(self.detections)),
            ("time", f"{self.seconds:.1f} s"),
        ]
        if self.skipped:
            rows.append(("unreadable images", str(len(self.skipped))))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# --- datasets ---------------------------------------------------------------------------------
def load_dataset(path: Path, labels: list[str]) -> Dataset:
    """Read a YOLO-format or COCO-format dataset folder; raises DatasetError saying what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"dataset folder {path} does not exist")
    if (path / "annotations").is_dir() and list((path / "annotations").glob("*.json")):
        return _load_coco(path, labels)
    if (path / "images").is_dir():
        return _load_yolo(path, path / "images")
    if "images" in path.absolute().parts:  # pointed at images/<split> itself
        return _load_yolo(path, path)
    raise DatasetError(
        f"{path}: expected images/ and labels/ (YOLO format) or annotations/*.json (COCO format)"
    )


def _label_path(image: Path) -> Path:
    # Ultralytics' convention: the last "images" component of the path becomes "labels".
    parts = list(image.parts)
    index = len(parts) - 1 - parts[::-1].index("images")
    parts[index] = "labels"
    return Path(*parts).with_suffix(".txt")


def _image_size(path: Path) -> tuple[int, int]:
    with path.open("rb") as handle:
        size = image_size(handle.read(64 * 1024))
    if size is None:
        image = read_image(path)
        size = (image.shape[1], image.shape[0])
    return size


def _load_yolo(root: Path, images_root: Path) -> Dataset:
    files = sorted(p for p in images_root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"{images_root}: no images found")
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    paths: dict[int, Path] = {}
    skipped: list[str] = []
    for image_id, file in enumerate(files, start=1):
        try:
            width, height = _image_size(file)
        except ImageError as exc:
            skipped.append(str(exc))
            continue
        images.append(
            {
                "id": image_id,
                "file_name": str(file.relative_to(images_root)),
                "width": width,
                "height": height,
            }
        )
        paths[image_id] = file
        label_file = _label_path(file.absolute())
        if label_file is None or not label_file.is_file():
            continue
        for number, line in enumerate(label_file.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                cls, cx, cy, w, h = int(fields[0]), *map(float, fields[1:5])
            except (ValueError, TypeError):
                raise DatasetError(
                    f"{label_file}:{number}: expected 'class cx cy w h', got {line!r}"
                ) from None
            box = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cls,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    used = sorted({int(a["category_id"]) for a in annotations} | set(range(len(COCO_CLASSES))))
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": str(c)} for c in used],
    }
    return Dataset(root, "yolo", paths, coco, {c: c for c in used}, skipped)


def _load_coco(root: Path, labels: list[str]) -> Dataset:
    files = sorted((root / "annotations").glob("*.json"))
    chosen = next((f for f in files if f.name.startswith("instances")), files[0])
    try:
        coco = json.loads(chosen.read_text())
        categories = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
        images = coco["images"]
        coco.setdefault("annotations", [])
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{chosen}: not a COCO instances file ({exc})") from None
    split = chosen.stem.removeprefix("instances_")
    folders = [root / "images" / split, root / "images", root / split, root]
    paths: dict[int, Path] = {}
    for image in images:
        found = next((f / image["file_name"] for f in folders if (f / image["file_name"]).is_file()), None)
        if found is None:
            raise DatasetError(f"{chosen}: image {image['file_name']} not found under {root}")
        paths[int(image["id"])] = found
    by_name = {ALIASES.get(n.lower(), n.lower()): i for i, n in categories.items()}
    mapping = {
        k: by_name[ALIASES.get(n.lower(), n.lower())] for k, n in enumerate(labels) if n.lower() in by_name
    }
    if not mapping and len(labels) == len(COCO_CLASSES) and set(categories) <= set(COCO_CATEGORY_IDS):
        mapping = dict(enumerate(COCO_CATEGORY_IDS))
    if not mapping:
        raise DatasetError(f"{chosen}: none of its categories match the model's class names")
    for annotation in coco["annotations"]:
        annotation.setdefault("iscrowd", 0)
        annotation.setdefault("area", annotation["bbox"][2] * annotation["bbox"][3])
    return Dataset(root, "coco", paths, coco, mapping)


# --- running ----------------------------------------------------------------------------------
def _prepared(
    detector: Detector, paths: dict[int, Path], lookahead: int = 4
) -> Iterator[tuple[int, Prepared | str]]:
    """Decode and letterbox in a thread pool, ``lookahead`` images ahead of the model."""

    def load(path: Path) -> Prepared | str:
        try:
            return detector.prepare(read_image(path))
        except ImageError as exc:
            return str(exc)

    items = list(paths.items())
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="eval-decode") as pool:
        pending: list[tuple[int, Future[Prepared | str]]] = []
        for image_id, path in items:
            pending.append((image_id, pool.submit(load, path)))
            if len(pending) > lookahead:
                first_id, first = pending.pop(0)
                yield first_id, first.result()
        for image_id, future in pending:
            yield image_id, future.result()


def evaluate(
    detector: Detector,
    data_path: Path,
    *,
    conf: float = 0.01,
    nms: float = 0.65,
    progress: bool = True,
    on_image: Callable[[int], None] | None = None,
) -> EvalResult:
    """COCO AP of ``detector`` on the dataset at ``data_path`` (conf/nms as YOLOX's own evaluation)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from tqdm import tqdm

    started = time.monotonic()
    dataset = load_dataset(Path(data_path), detector.labels)
    results: list[dict[str, Any]] = []
    skipped = list(dataset.skipped)
    batch_size = 8 if detector.max_batch == 0 else max(detector.max_batch, 1)
    bar = tqdm(total=len(dataset.image_paths), desc=f"eval {detector.name}", unit="img", disable=not progress)
    batch: list[tuple[int, Prepared]] = []
    evaluated: list[int] = []

    def flush() -> None:
        found = detector.infer([p for _, p in batch], conf=conf, nms=nms)
        evaluated.extend(image_id for image_id, _ in batch)
        for (image_id, _), detections in zip(batch, found, strict=True):
            for d in detections:
                if d.class_id not in dataset.category_of_class:
                    continue
                x1, y1, x2, y2 = d.box
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": dataset.category_of_class[d.class_id],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": d.score,
                    }
                )
        bar.update(len(batch))
        if on_image:
            on_image(len(batch))
        batch.clear()

    with bar:
        for image_id, prepared in _prepared(detector, dataset.image_paths):
            if isinstance(prepared, str):
                skipped.append(prepared)
                log.warning("skipping %s", prepared)
                bar.update(1)
                continue
            batch.append((image_id, prepared))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()

    stats = np.zeros(12)
    # Images that could not be read are left out of the ground truth as well, and reported as skipped.
    annotations = [a for a in dataset.coco["annotations"] if a["image_id"] in set(evaluated)]
    if results and annotations:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table
            ground_truth = COCO()
            ground_truth.dataset = dataset.coco
            ground_truth.createIndex()
            evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), iouType="bbox")
            evaluation.params.imgIds = sorted(evaluated)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        stats = np.maximum(evaluation.stats, 0.0)  # pycocotools says -1 where a size bucket is empty
    return EvalResult(
        ap=float(stats[0]),
        ap50=float(stats[1]),
        ap75=float(stats[2]),
        ap_small=float(stats[3]),
        ap_medium=float(stats[4]),
        ap_large=float(stats[5]),
        ar100=float(stats[8]),
        images=len(evaluated),
        annotations=len(annotations),
        detections=len(results),
        seconds=time.monotonic() - started,
        model=detector.name,
        version=detector.version,
        data=str(data_path),
        layout=dataset.layout,
        conf=conf,
        nms=nms,
        skipped=skipped,
    )
