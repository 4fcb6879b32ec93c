"""Drawing detections: boxes land where the detections say, in a stable colour per class."""

from __future__ import annotations

import numpy as np

from inference.annotate import class_colour, draw_detections
from wire.messages import Detection


def test_draws_a_box_in_the_class_colour_without_touching_the_input() -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    detection = Detection(label="dog", class_id=16, score=0.9, box=(50.0, 60.0, 150.0, 160.0))
    drawn = draw_detections(image, [detection])
    assert not image.any()
    assert tuple(int(v) for v in drawn[110, 50]) == class_colour(16)  # left edge of the box
    assert not drawn[110, 100].any()  # inside the box stays untouched
    assert drawn[60 - 5 : 60, 50:100].any()  # the label tag above the box


def test_colours_are_stable_and_distinct() -> None:
    assert class_colour(3) == class_colour(3)
    assert len({class_colour(c) for c in range(80)}) > 60
