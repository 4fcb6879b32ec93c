"""Decode, selection, NMS and scaling on hand-made tensors."""

from __future__ import annotations

import numpy as np
import pytest

from inference.postprocess import (
    decode_yolox,
    end2end_rows,
    nms,
    select,
    to_original,
    yolox_anchor_count,
    yolox_grid,
)


def test_grid_order_matches_the_head() -> None:
    grid, strides = yolox_grid((64, 32))
    assert yolox_anchor_count((64, 32)) == len(grid) == 8 * 4 + 4 * 2 + 2 * 1
    assert grid[:5].tolist() == [[0, 0], [1, 0], [2, 0], [3, 0], [0, 1]]  # x fastest
    assert strides[0, 0] == 8 and strides[32, 0] == 16 and strides[-1, 0] == 32
    assert yolox_anchor_count((416, 416)) == 3549


def test_decode_yolox() -> None:
    grid = np.array([[2, 3]], np.float32)
    strides = np.array([[16]], np.float32)
    raw = np.array([[0.5, 0.25, 0.0, np.log(2), 0.9, 0.8]], np.float32)
    out = decode_yolox(raw, grid, strides)
    assert out[0, :4] == pytest.approx([40, 52, 16, 32])
    assert out[0, 4:].tolist() == pytest.approx([0.9, 0.8])


def test_select_uses_obj_times_best_class() -> None:
    pred = np.array(
        [[10, 10, 4, 4, 0.5, 0.1, 0.9], [20, 20, 2, 2, 0.5, 0.3, 0.1], [0, 0, 2, 2, 0.1, 0.5, 0.5]],
        np.float32,
    )
    boxes, scores, classes = select(pred, 0.1)
    assert boxes.tolist() == [[8, 8, 12, 12], [19, 19, 21, 21]]
    assert scores.tolist() == pytest.approx([0.45, 0.15]) and classes.tolist() == [1, 0]


def test_nms_is_class_aware_and_sorted() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.6, 0.9, 0.8, 0.3], np.float32)
    classes = np.array([0, 0, 1, 0])
    assert nms(boxes, scores, classes, 0.5).tolist() == [1, 2, 3]  # 0 overlaps 1 (IoU .81), same class
    assert nms(boxes, scores, classes, 0.9).tolist() == [1, 2, 0, 3]
    assert nms(boxes[:0], scores[:0], classes[:0], 0.5).tolist() == []


def test_to_original_unpads_unscales_and_clips() -> None:
    boxes = np.array([[10, 26, 30, 46], [-5, 0, 500, 70]], np.float32)
    out = to_original(boxes, 0.5, (0, 16), (100, 200))
    assert out.tolist() == [[20, 20, 60, 60], [0, 0, 200, 100]]


def test_end2end_rows_filter_by_batch_and_score() -> None:
    rows = np.array([[0, 1, 2, 3, 4, 5, 0.4], [1, 1, 2, 3, 4, 6, 0.9], [0, 5, 6, 7, 8, 2, 0.8]], np.float32)
    boxes, scores, classes = end2end_rows(rows, 0, 0.3)
    assert boxes.tolist() == [[5, 6, 7, 8], [1, 2, 3, 4]]
    assert scores.tolist() == pytest.approx([0.8, 0.4]) and classes.tolist() == [2, 5]


def test_select_decodes_only_the_survivors_like_the_full_decode() -> None:
    rng = np.random.default_rng(3)
    grid, strides = yolox_grid((64, 64))
    raw = rng.uniform(-1, 1, (len(grid), 85)).astype(np.float32)
    raw[:, 4:] = rng.uniform(0, 1, (len(grid), 81))
    fast: tuple[np.ndarray, ...] = select(raw, 0.2, grid=grid, strides=strides)
    full: tuple[np.ndarray, ...] = select(decode_yolox(raw, grid, strides), 0.2)
    assert len(fast[0]) > 5
    for a, b in zip(fast, full, strict=True):
        assert np.allclose(a, b)
