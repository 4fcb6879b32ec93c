"""An independent YOLOX reference: the demo's pre/post-processing in plain numpy + onnxruntime.

Written without the detector's modules on purpose, so that a shared mistake cannot hide.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import cv2
import numpy as np
import onnxruntime as ort


def reference_yolox(
    model_path: Path, image: np.ndarray, conf: float = 0.3, nms: float = 0.45
) -> list[tuple[int, float, np.ndarray]]:
    """YOLOX's own demo pre/post-processing written out plainly (preproc, demo_postprocess, class NMS)."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    ratio = min(416 / image.shape[0], 416 / image.shape[1])
    resized = cv2.resize(image, (int(image.shape[1] * ratio), int(image.shape[0] * ratio)))
    padded = np.ones((416, 416, 3), dtype=np.uint8) * 114
    padded[: resized.shape[0], : resized.shape[1]] = resized
    blob = padded.transpose(2, 0, 1)[None].astype(np.float32)
    out = session.run(None, {"images": blob})[0][0]
    grids, strides = [], []
    for step in (8, 16, 32):
        size = 416 // step
        xv, yv = np.meshgrid(np.arange(size), np.arange(size))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((size * size, 1), step))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    xy = (out[:, :2] + grid) * stride
    wh = np.exp(out[:, 2:4]) * stride
    xyxy = np.concatenate([xy - wh / 2, xy + wh / 2], 1) / ratio
    cls = out[:, 5:].argmax(1)
    score = out[:, 4] * out[np.arange(len(out)), 5 + cls]

    def area(b: np.ndarray) -> np.ndarray:
        # An Ellipsis index always yields an array (0-d for one box), which numpy's stubs type as Any.
        return cast(np.ndarray, (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]))

    found: list[tuple[int, float, np.ndarray]] = []
    for c in np.unique(cls[score >= conf]):
        idx = np.where((cls == c) & (score >= conf))[0]
        idx = idx[np.argsort(-score[idx])]
        while len(idx):
            best, rest = idx[0], idx[1:]
            found.append((int(c), float(score[best]), xyxy[best]))
            ix1 = np.maximum(xyxy[best, 0], xyxy[rest, 0])
            iy1 = np.maximum(xyxy[best, 1], xyxy[rest, 1])
            ix2 = np.minimum(xyxy[best, 2], xyxy[rest, 2])
            iy2 = np.minimum(xyxy[best, 3], xyxy[rest, 3])
            inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
            iou = inter / (area(xyxy[best]) + area(xyxy[rest]) - inter)
            idx = rest[iou <= nms]
    return found


def iou(a: tuple[float, ...] | np.ndarray, b: tuple[float, ...] | np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))
