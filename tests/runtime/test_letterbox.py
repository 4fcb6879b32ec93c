"""Letterboxing: YOLOX at the top-left in BGR 0-255, YOLOv7 centred in RGB 0-1."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.letterbox import YOLOV7_PREPROCESSING, YOLOX_PREPROCESSING, letterbox, to_tensor


def test_yolox_top_left_letterbox() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    canvas, box = letterbox(image, (416, 416), YOLOX_PREPROCESSING)
    assert canvas.shape == (416, 416, 3)
    assert box.scale == 416 / 200 and box.pad == (0, 0)
    assert np.all(canvas[:208] == 0) and np.all(canvas[208:] == 114)


def test_yolov7_centred_letterbox() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    canvas, box = letterbox(image, (640, 640), YOLOV7_PREPROCESSING)
    assert box.scale == 3.2 and box.pad == (0, 160)
    assert np.all(canvas[:160] == 114) and np.all(canvas[160:480] == 0) and np.all(canvas[480:] == 114)


def test_same_size_is_not_resized() -> None:
    image = np.arange(64 * 64 * 3, dtype=np.uint32).astype(np.uint8).reshape(64, 64, 3)
    canvas, box = letterbox(image, (64, 64), YOLOX_PREPROCESSING)
    assert box.scale == 1.0 and np.array_equal(canvas, image)


def test_tensor_layouts() -> None:
    canvas = np.zeros((8, 8, 3), np.uint8)
    canvas[..., 0], canvas[..., 2] = 10, 250  # B, R
    bgr = to_tensor(canvas, YOLOX_PREPROCESSING)
    rgb = to_tensor(canvas, YOLOV7_PREPROCESSING)
    assert bgr.shape == (3, 8, 8) and bgr.dtype == np.float32 and bgr.flags["C_CONTIGUOUS"]
    assert bgr[0, 0, 0] == 10 and bgr[2, 0, 0] == 250
    assert rgb[0, 0, 0] == pytest.approx(250 / 255) and rgb[2, 0, 0] == pytest.approx(10 / 255)
