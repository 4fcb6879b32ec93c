"""Which family a detection model belongs to, told from its output shapes and metadata.

- ``yolox``: one output ``[B, N, 5+C]`` that is the raw head, N = sum over strides 8/16/32 of the grid
  cells (3549 at 416x416); needs the grid/stride decode.
- ``yolov7``: one output ``[B, 3N, 5+C]`` already decoded (cx, cy, w, h in input pixels, obj, classes):
  three anchors per grid cell.
- ``yolov7-end2end``: one output ``[K, 7]`` with NMS inside the graph: batch_id, x1, y1, x2, y2, class, score.

A ``format`` metadata property (one of the names above) overrides the guess from the shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from inference.errors import ModelLoadError
from inference.postprocess import yolox_anchor_count
from runtime.letterbox import YOLOV7_PREPROCESSING, YOLOX_PREPROCESSING, Preprocessing

Dim = int | str | None
"""One dimension of a graph shape: a number, or a name / None when it is dynamic."""

YOLOX = "yolox"
YOLOV7 = "yolov7"
YOLOV7_END2END = "yolov7-end2end"
FORMATS = (YOLOX, YOLOV7, YOLOV7_END2END)


@dataclass(frozen=True)
class ModelFormat:
    name: str
    preprocessing: Preprocessing
    num_classes: int | None
    """Classes the output carries; None when the layout does not say (end2end)."""


PREPROCESSING = {
    YOLOX: YOLOX_PREPROCESSING,
    YOLOV7: YOLOV7_PREPROCESSING,
    YOLOV7_END2END: YOLOV7_PREPROCESSING,
}


def describe(shape: Sequence[Dim]) -> str:
    return "[" + ",".join(str(d) if d not in (None, "") else "?" for d in shape) + "]"


def detect_format(
    output_shapes: Sequence[Sequence[Dim]],
    input_hw: tuple[int, int],
    metadata: Mapping[str, str],
    *,
    model: str = "model",
) -> ModelFormat:
    """The model's format; raises ModelLoadError naming the layout when it is none of the known ones."""
    layout = ", ".join(describe(s) for s in output_shapes) or "no outputs"

    def unknown(why: str) -> ModelLoadError:
        return ModelLoadError(
            f"{model}: unknown output layout {layout} ({why}); expected a YOLOX raw head [B,N,5+C], "
            "YOLOv7 decoded [B,3N,5+C] or YOLOv7 end2end [K,7]"
        )

    if len(output_shapes) != 1:
        raise unknown(f"{len(output_shapes)} outputs, expected 1")
    shape = list(output_shapes[0])
    declared = metadata.get("format", "").strip().lower()
    if declared and declared not in FORMATS:
        raise ModelLoadError(f"{model}: metadata format {declared!r} is not one of {', '.join(FORMATS)}")

    if declared == YOLOV7_END2END or (not declared and len(shape) == 2 and shape[1] == 7):
        if len(shape) != 2 or shape[1] != 7:
            raise unknown("end2end output must be [K,7]")
        return ModelFormat(YOLOV7_END2END, PREPROCESSING[YOLOV7_END2END], None)
    if len(shape) != 3 or not isinstance(shape[2], int) or shape[2] < 6:
        raise unknown("expected rank 3 with a fixed last axis of 5 + classes")
    num_classes = shape[2] - 5
    if declared:
        return ModelFormat(declared, PREPROCESSING[declared], num_classes)
    anchors = yolox_anchor_count(input_hw)
    if shape[1] == anchors:
        return ModelFormat(YOLOX, YOLOX_PREPROCESSING, num_classes)
    if shape[1] == 3 * anchors:
        return ModelFormat(YOLOV7, YOLOV7_PREPROCESSING, num_classes)
    raise unknown(
        f"{shape[1]} rows match neither {anchors} (YOLOX at {input_hw[0]}x{input_hw[1]}) nor {3 * anchors} "
        "(YOLOv7); set a 'format' metadata property if the graph is one of them"
    )
