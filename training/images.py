"""Image preprocessing that matches the deployed workers: top-left letterbox, pad 114, BGR 0-255, CHW."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

PAD_VALUE = 114


def letterbox(image: NDArray[np.uint8], size: int) -> tuple[NDArray[np.float32], float]:
    """(CHW float32 tensor of ``size`` x ``size``, scale) for a BGR image, as YOLOX's ``preproc`` does."""
    import cv2

    height, width = image.shape[:2]
    scale = min(size / height, size / width)
    new_w, new_h = max(1, int(width * scale)), max(1, int(height * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    canvas[:new_h, :new_w] = resized
    return np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32), scale
