"""training/images.py: training images get the workers' YOLOX input (top-left, pad 114, BGR 0-255, CHW)."""

from __future__ import annotations

import numpy as np

from training.images import letterbox


def test_training_input_is_the_yolox_letterbox_as_a_tensor() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[..., 0], image[..., 2] = 10, 250  # B, R
    tensor, scale = letterbox(image, 416)
    assert tensor.shape == (3, 416, 416) and tensor.dtype == np.float32 and tensor.flags["C_CONTIGUOUS"]
    assert scale == 416 / 200
    assert tensor[0, 0, 0] == 10 and tensor[2, 0, 0] == 250  # BGR kept, 0-255, not normalised
    assert np.all(tensor[:, 208:, :] == 114)  # the image at the top, the padding below it
