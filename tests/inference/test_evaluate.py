"""COCO evaluation: both dataset layouts, the metric itself, and dataset errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference.detector import Detector
from inference.evaluate import DatasetError, evaluate, load_dataset
from inference.labels import COCO_CATEGORY_IDS, COCO_CLASSES
from tests.support.images import imread

SUBSET = 8


@pytest.fixture(scope="module")
def coco128(shared_dir: Path) -> Path:
    return shared_dir / "data" / "coco-subset" / "coco128"


@pytest.fixture
def yolo_subset(coco128: Path, tmp_path: Path) -> Path:
    """The first images of coco128 in the same YOLO layout (symlinks, nothing copied)."""
    root = tmp_path / "yolo"
    (root / "images" / "train2017").mkdir(parents=True)
    (root / "labels" / "train2017").mkdir(parents=True)
    for image in sorted((coco128 / "images" / "train2017").glob("*.jpg"))[:SUBSET]:
        (root / "images" / "train2017" / image.name).symlink_to(image)
        label = coco128 / "labels" / "train2017" / f"{image.stem}.txt"
        if label.exists():
            (root / "labels" / "train2017" / label.name).symlink_to(label)
    return root


def to_coco_layout(yolo: Path, target: Path, *, darknet_names: bool = False) -> Path:
    """The same images and boxes as a COCO instances JSON (COCO category ids, optional darknet names)."""
    dataset = load_dataset(yolo, list(COCO_CLASSES))
    (target / "annotations").mkdir(parents=True)
    (target / "images").mkdir()
    names = list(COCO_CLASSES)
    if darknet_names:
        names[4], names[3], names[57] = "aeroplane", "motorbike", "sofa"
    coco = dict(dataset.coco)
    coco["categories"] = [{"id": c, "name": n} for c, n in zip(COCO_CATEGORY_IDS, names, strict=True)]
    coco["annotations"] = [
        {**a, "category_id": COCO_CATEGORY_IDS[a["category_id"]]} for a in coco["annotations"]
    ]
    for image in coco["images"]:
        name = Path(image["file_name"]).name
        (target / "images" / name).symlink_to(dataset.image_paths[image["id"]])
        image["file_name"] = name
    (target / "annotations" / "instances_val.json").write_text(json.dumps(coco))
    return target


def test_yolo_and_coco_layouts_give_the_same_ap(nano: Detector, yolo_subset: Path, tmp_path: Path) -> None:
    yolo = evaluate(nano, yolo_subset, progress=False)
    coco = evaluate(nano, to_coco_layout(yolo_subset, tmp_path / "coco", darknet_names=True), progress=False)
    assert yolo.layout == "yolo" and coco.layout == "coco"
    assert yolo.images == coco.images == SUBSET and yolo.annotations == coco.annotations > 0
    assert 0.1 < yolo.ap < 0.9 and yolo.ap50 >= yolo.ap
    assert coco.ap == pytest.approx(yolo.ap) and coco.ap50 == pytest.approx(yolo.ap50)


def test_ground_truth_equal_to_the_detections_scores_ap_one(
    nano: Detector, images_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "perfect"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name in ("dog.jpg", "person.jpg", "bus.jpg"):
        (root / "images" / name).symlink_to(images_dir / name)
        image = imread(images_dir / name)
        height, width = image.shape[:2]
        lines = []
        for d in nano.detect(image, conf=0.3):
            x1, y1, x2, y2 = d.box
            lines.append(f"{d.class_id} {(x1 + x2) / 2 / width} {(y1 + y2) / 2 / height} "
                         f"{(x2 - x1) / width} {(y2 - y1) / height}")  # fmt: skip
        (root / "labels" / f"{Path(name).stem}.txt").write_text("\n".join(lines) + "\n")
    result = evaluate(nano, root, conf=0.3, nms=0.45, progress=False)
    assert result.ap == pytest.approx(1.0) and result.ap50 == pytest.approx(1.0)


def test_unreadable_images_are_skipped_and_reported(nano: Detector, yolo_subset: Path) -> None:
    clean = evaluate(nano, yolo_subset, progress=False)
    folder = yolo_subset / "images" / "train2017"
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")  # no readable header
    first = sorted(folder.glob("0*.jpg"))[0]
    truncated = first.read_bytes()[:5000]  # a valid header, so only decoding finds out
    first.unlink()
    first.write_bytes(truncated)
    result = evaluate(nano, yolo_subset, progress=False)
    assert result.images == SUBSET - 1
    assert sorted(Path(s.split(":")[0]).name for s in result.skipped) == sorted(["broken.jpg", first.name])
    assert result.annotations < clean.annotations  # the truncated image's boxes left the ground truth too


def test_dataset_errors(tmp_path: Path, yolo_subset: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nothing", list(COCO_CLASSES))
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="expected images/ and labels/"):
        load_dataset(tmp_path / "plain", list(COCO_CLASSES))
    label = next((yolo_subset / "labels" / "train2017").iterdir())
    label.unlink()
    label.write_text("0 0.5 oops\n")
    with pytest.raises(DatasetError, match="expected 'class cx cy w h'"):
        load_dataset(yolo_subset, list(COCO_CLASSES))


def test_pointing_at_the_split_folder_works(yolo_subset: Path) -> None:
    dataset = load_dataset(yolo_subset / "images" / "train2017", list(COCO_CLASSES))
    assert len(dataset.image_paths) == SUBSET and dataset.coco["annotations"]
