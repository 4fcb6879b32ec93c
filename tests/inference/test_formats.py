"""Format detection, and each format end to end through Detector on toy ONNX graphs with known outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from inference.detector import Detector
from inference.errors import ModelLoadError
from inference.formats import YOLOV7, YOLOV7_END2END, YOLOX, detect_format
from tests.inference.toy_models import constant_output_model, dynamic_batch_model

# 64x64 input: YOLOX has 8*8 + 4*4 + 2*2 = 84 anchor points; YOLOv7 three anchors each.
YOLOV7_ROWS = 3 * 84


def v7_row(cx: float, cy: float, w: float, h: float, obj: float, cls: int, prob: float) -> np.ndarray:
    row = np.zeros(85, np.float32)
    row[:5] = cx, cy, w, h, obj
    row[5 + cls] = prob
    return row


@pytest.mark.parametrize(
    ("shapes", "expected"),
    [
        ([[1, 3549, 85]], YOLOX),
        ([[1, 10647, 85]], YOLOV7),
        ([["N", 7]], YOLOV7_END2END),
        ([[1, 3549, 25]], YOLOX),
    ],
)
def test_format_from_output_shape(shapes: list[list[int | str]], expected: str) -> None:
    assert detect_format(shapes, (416, 416), {}).name == expected


def test_metadata_format_overrides_the_shape() -> None:
    fmt = detect_format([[1, 3549, 85]], (416, 416), {"format": "yolov7"})
    assert fmt.name == YOLOV7 and fmt.preprocessing.rgb and fmt.preprocessing.centred


@pytest.mark.parametrize(
    "shapes", [[[1, 10]], [[1, 1000, 85]], [[1, 3549, 85], [1, 3549, 85]], [[1, 3549, "C"]]]
)
def test_unknown_layouts_are_refused(shapes: list[list[int | str]]) -> None:
    with pytest.raises(ModelLoadError, match="unknown output layout"):
        detect_format(shapes, (416, 416), {})


def test_yolov7_decoded_nms_and_scaling_exact(tmp_path: Path) -> None:
    table = np.zeros((YOLOV7_ROWS, 85), np.float32)
    table[0] = v7_row(32, 32, 20, 20, 0.9, 3, 0.9)  # kept: score 0.81
    table[1] = v7_row(33, 33, 20, 20, 0.9, 3, 0.6)  # same class, IoU ~0.82: suppressed
    table[2] = v7_row(33, 33, 20, 20, 0.8, 5, 0.8)  # other class over the same spot: kept (class-aware)
    table[3] = v7_row(10, 40, 8, 8, 0.4, 1, 0.5)  # score 0.2 < conf 0.3: dropped
    path = constant_output_model(tmp_path / "v7.onnx", table[None])
    detector = Detector.load(path)
    assert detector.format == YOLOV7 and detector.input_size == (64, 64)
    image = np.zeros((64, 128, 3), np.uint8)  # scale 0.5, centred: 64x32 at top 16
    prepared = detector.prepare(image)
    assert prepared.scale == 0.5 and prepared.pad == (0, 16)
    found = detector.detect(image)
    assert [(d.label, d.class_id) for d in found] == [("motorcycle", 3), ("bus", 5)]
    assert found[0].score == pytest.approx(0.81)
    assert found[0].box == pytest.approx((44.0, 12.0, 84.0, 52.0))  # ((22..42) - pad) / 0.5
    assert found[1].box == pytest.approx((46.0, 14.0, 86.0, 54.0))
    # RGB, /255 and centred padding of 114 are what YOLOv7 expects
    assert prepared.tensor.max() <= 1.0
    assert prepared.tensor[0, 0, 0] == pytest.approx(114 / 255)


def test_yolov7_end2end_rows_are_scaled_not_suppressed(tmp_path: Path) -> None:
    rows = np.array(
        [
            [0, 10, 20, 30, 40, 0, 0.9],
            [0, 12, 22, 32, 42, 0, 0.8],  # overlaps, same class: NMS already ran in the graph, kept
            [0, 5, 5, 6, 6, 2, 0.1],  # under conf
        ],
        np.float32,
    )
    path = constant_output_model(tmp_path / "e2e.onnx", rows)
    detector = Detector.load(path, conf=0.25)
    assert detector.format == YOLOV7_END2END
    found = detector.detect(np.zeros((128, 128, 3), np.uint8))  # scale 0.5, no padding
    expected: list[tuple[str, object]] = [("person", pytest.approx(0.9)), ("person", pytest.approx(0.8))]
    assert [(d.label, d.score) for d in found] == expected
    assert found[0].box == pytest.approx((20.0, 40.0, 60.0, 80.0))
    assert found[1].box == pytest.approx((24.0, 44.0, 64.0, 84.0))


def test_yolox_format_from_toy_graph_decodes_the_grid(tmp_path: Path) -> None:
    table = np.zeros((84, 85), np.float32)
    # row 65 is the first stride-16 cell (64 stride-8 cells come first) + 1: grid (1, 0)
    table[65, :5] = 0.5, 0.5, np.log(2.0), np.log(1.0), 1.0
    table[65, 5 + 16] = 0.9
    path = constant_output_model(tmp_path / "yolox.onnx", table[None])
    detector = Detector.load(path)
    assert detector.format == YOLOX
    found = detector.detect(np.zeros((64, 64, 3), np.uint8))
    # centre ((1 + 0.5) * 16, (0 + 0.5) * 16) = (24, 8), size (32, 16)
    assert len(found) == 1 and found[0].label == "dog"
    assert found[0].box == pytest.approx((8.0, 0.0, 40.0, 16.0))


def count_model_calls(detector: Detector) -> list[int]:
    """Record the batch size of every model call the detector makes from now on."""
    calls: list[int] = []
    run = detector.backend.run

    def counted_run(batch: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        calls.append(len(batch))
        return run(batch)

    detector.backend.run = counted_run  # type: ignore[method-assign]
    return calls


def test_dynamic_batch_runs_once_for_the_whole_batch(tmp_path: Path) -> None:
    table = np.zeros((YOLOV7_ROWS, 85), np.float32)
    table[0] = v7_row(32, 32, 16, 16, 0.0, 0, 1.0)  # obj = mean of the image (added by the graph)
    detector = Detector.load(dynamic_batch_model(tmp_path / "dyn.onnx", table), conf=0.05)
    assert detector.max_batch == 0
    calls = count_model_calls(detector)
    images = [np.full((64, 64, 3), value, np.uint8) for value in (51, 102, 204)]
    found = detector.detect_batch(images)
    assert calls == [3]
    assert [round(f[0].score, 3) for f in found] == [0.2, 0.4, 0.8]  # mean of RGB/255 per image
    assert found == [detector.detect(image) for image in images]


def test_fixed_batch_axis_is_filled_and_padded(tmp_path: Path) -> None:
    table = np.zeros((YOLOV7_ROWS, 85), np.float32)
    table[0] = v7_row(32, 32, 16, 16, 0.0, 0, 1.0)
    path = dynamic_batch_model(tmp_path / "fixed.onnx", table, batch=2)
    detector = Detector.load(path, conf=0.05)
    assert detector.max_batch == 2
    calls = count_model_calls(detector)
    images = [np.full((64, 64, 3), value, np.uint8) for value in (51, 102, 204)]
    found = detector.detect_batch(images)
    assert calls == [2, 2]  # the last call padded with an empty image
    assert [round(f[0].score, 3) for f in found] == [0.2, 0.4, 0.8]


def test_not_onnx_missing_and_bad_layout_are_model_load_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        Detector.load(text)
    with pytest.raises(ModelLoadError, match="does not exist"):
        Detector.load(tmp_path / "missing.onnx")
    odd = constant_output_model(tmp_path / "odd.onnx", np.zeros((1, 10), np.float32))
    with pytest.raises(ModelLoadError, match=r"unknown output layout \[1,10\]"):
        Detector.load(odd)
