"""training/images.py: its letterbox is the deployed workers' YOLOX letterbox, value for value.

Training keeps its own copy because it may not import the inference service; this test is what keeps
the two from drifting apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.preprocess import YOLOX_PREPROCESSING, to_tensor
from inference.preprocess import letterbox as deployed_letterbox
from tests.support.images import imread
from training.images import letterbox


@pytest.mark.parametrize("image", ["dog.jpg", "demo.png", "zidane.jpg"])
def test_training_letterbox_equals_the_workers(images_dir: Path, image: str) -> None:
    picture = imread(images_dir / image)
    tensor, scale = letterbox(picture, 416)
    canvas, box = deployed_letterbox(picture, (416, 416), YOLOX_PREPROCESSING)
    assert scale == box.scale and box.pad == (0, 0)
    assert np.array_equal(tensor, to_tensor(canvas, YOLOX_PREPROCESSING))
