"""Training images prepared exactly as the deployed workers prepare frames: the YOLOX letterbox of
``runtime.letterbox`` (top-left, pad 114, BGR 0-255, CHW), which is the very code the workers run."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from runtime.letterbox import YOLOX_PREPROCESSING, to_tensor
from runtime.letterbox import letterbox as fit


def letterbox(image: NDArray[np.uint8], size: int) -> tuple[NDArray[np.float32], float]:
    """(CHW float32 tensor of ``size`` x ``size``, scale) for a BGR image, as YOLOX's ``preproc`` does."""
    canvas, box = fit(image, (size, size), YOLOX_PREPROCESSING)
    return to_tensor(canvas, YOLOX_PREPROCESSING), box.scale
