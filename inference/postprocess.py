"""From raw model outputs to detections: YOLOX grid decode, score threshold, class-aware NMS, box scaling."""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]
YOLOX_STRIDES = (8, 16, 32)


def yolox_grid(
    input_hw: tuple[int, int], strides: tuple[int, ...] = YOLOX_STRIDES
) -> tuple[FloatArray, FloatArray]:
    """Anchor-point grid (N, 2) and stride (N, 1) of a YOLOX head, in the order the head emits them."""
    grids, expanded = [], []
    for stride in strides:
        rows, cols = input_hw[0] // stride, input_hw[1] // stride
        xs, ys = np.meshgrid(np.arange(cols), np.arange(rows))
        grids.append(np.stack((xs, ys), axis=2).reshape(-1, 2))
        expanded.append(np.full((rows * cols, 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(expanded).astype(np.float32)


def yolox_anchor_count(input_hw: tuple[int, int], strides: tuple[int, ...] = YOLOX_STRIDES) -> int:
    return sum((input_hw[0] // s) * (input_hw[1] // s) for s in strides)


def decode_yolox(raw: FloatArray, grid: FloatArray, strides: FloatArray) -> FloatArray:
    """(N, 5+C) raw head to (N, 5+C) with cx, cy, w, h in input pixels (the rest unchanged)."""
    out = raw.copy()
    out[:, :2] = (raw[:, :2] + grid) * strides
    out[:, 2:4] = np.exp(raw[:, 2:4]) * strides
    return out


def select(
    pred: FloatArray, conf: float, *, grid: FloatArray | None = None, strides: FloatArray | None = None
) -> tuple[FloatArray, FloatArray, NDArray[np.intp]]:
    """(N, 5+C) rows (cx, cy, w, h, obj, classes) to xyxy boxes, scores and class ids over ``conf``.

    Each row keeps its best class with score obj x cls, as YOLOX's and YOLOv7's own postprocess do.
    With ``grid`` and ``strides`` the rows are a raw YOLOX head, decoded here for the survivors only.
    Since every class probability is at most 1, rows with obj < conf are dropped before the argmax:
    that leaves a few dozen of the thousands of rows at the usual thresholds.
    """
    rows_kept = np.flatnonzero(pred[:, 4] >= conf)
    rows = pred[rows_kept]
    class_ids = rows[:, 5:].argmax(axis=1)
    scores = rows[:, 4] * rows[np.arange(len(rows)), 5 + class_ids]
    keep = scores >= conf
    rows, scores, class_ids = rows[keep], scores[keep], class_ids[keep]
    centres, sizes = rows[:, :2], rows[:, 2:4]
    if grid is not None and strides is not None:
        index = rows_kept[keep]
        centres = (centres + grid[index]) * strides[index]
        sizes = np.exp(sizes) * strides[index]
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)
    return boxes, scores.astype(np.float32), class_ids


def nms(boxes: FloatArray, scores: FloatArray, class_ids: NDArray[np.intp], iou: float) -> NDArray[np.intp]:
    """Indices kept by class-aware NMS, highest score first."""
    if len(boxes) == 0:
        return np.empty(0, dtype=np.intp)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    kept = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), class_ids.tolist(), 0.0, iou)
    order = np.asarray(kept, dtype=np.intp).reshape(-1)
    return order[np.argsort(-scores[order], kind="stable")]


def to_original(
    boxes: FloatArray, scale: float, pad: tuple[int, int], original_hw: tuple[int, int]
) -> FloatArray:
    """Boxes in model-input pixels to boxes in the original image, clipped to it."""
    out = boxes.copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - pad[0]) / scale
    out[:, [1, 3]] = (out[:, [1, 3]] - pad[1]) / scale
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, original_hw[1])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, original_hw[0])
    return out


def end2end_rows(
    output: FloatArray, batch_index: int, conf: float
) -> tuple[FloatArray, FloatArray, NDArray[np.intp]]:
    """One image's rows (batch_id, x1, y1, x2, y2, class, score) of an in-graph-NMS output, over conf."""
    rows = output[(output[:, 0].round() == batch_index) & (output[:, 6] >= conf)]
    rows = rows[np.argsort(-rows[:, 6], kind="stable")]
    return rows[:, 1:5].astype(np.float32), rows[:, 6].astype(np.float32), rows[:, 5].round().astype(np.intp)
