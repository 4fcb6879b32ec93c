"""Letterboxing and tensor layout, per model family (YOLOX: BGR 0-255 top-left; YOLOv7: RGB 0-1 centred).

The workers prepare every frame with it (``inference.detector``), and training prepares every training
image with it (``training.images``), so a model is trained on exactly the input it is served: one
implementation, not two copies kept equal by a test.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Preprocessing:
    """How a model family wants its input: channel order, value range and where the padding goes."""

    rgb: bool
    """Channels in RGB order (else BGR, as OpenCV decodes)."""
    normalize: bool
    """Values divided by 255 (else 0-255)."""
    centred: bool
    """Image centred in the letterbox (else at the top-left corner)."""
    pad_value: int = 114


YOLOX_PREPROCESSING = Preprocessing(rgb=False, normalize=False, centred=False)
YOLOV7_PREPROCESSING = Preprocessing(rgb=True, normalize=True, centred=True)


@dataclass(frozen=True)
class Letterbox:
    """Where the resized image sits in the model input: original = (input - pad) / scale."""

    scale: float
    pad: tuple[int, int]  # (left, top) in input pixels


def letterbox(
    image: NDArray[np.uint8], size: tuple[int, int], spec: Preprocessing
) -> tuple[NDArray[np.uint8], Letterbox]:
    """Resize keeping the aspect ratio into a (h, w) canvas filled with the pad value."""
    height, width = image.shape[:2]
    target_h, target_w = size
    scale = min(target_h / height, target_w / width)
    if spec.centred:  # YOLOv7's rounding
        new_w, new_h = round(width * scale), round(height * scale)
        left, top = round((target_w - new_w) / 2 - 0.1), round((target_h - new_h) / 2 - 0.1)
    else:  # YOLOX's: truncate, image at the origin
        new_w, new_h = int(width * scale), int(height * scale)
        left, top = 0, 0
    new_w, new_h = max(1, min(new_w, target_w)), max(1, min(new_h, target_h))
    canvas = np.full((target_h, target_w, 3), spec.pad_value, dtype=np.uint8)
    resized = image if (new_w, new_h) == (width, height) else cv2.resize(image, (new_w, new_h))
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas, Letterbox(scale=scale, pad=(left, top))


def to_tensor(canvas: NDArray[np.uint8], spec: Preprocessing) -> NDArray[np.float32]:
    """HxWx3 uint8 to a contiguous 3xHxW float32 in the model's channel order and value range."""
    channels = canvas[:, :, ::-1] if spec.rgb else canvas
    tensor = np.ascontiguousarray(channels.transpose(2, 0, 1), dtype=np.float32)
    if spec.normalize:
        tensor *= 1.0 / 255.0
    return tensor
