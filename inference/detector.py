"""The detector: an ONNX YOLOX / YOLOv7 model behind one API that workers, REST, batch and training share.

``prepare`` (letterbox + layout) needs no model run and is thread-safe, so callers can overlap it with
``infer`` on another thread. ``infer`` runs a batch in one model call when the graph has a dynamic (or
fixed >1) batch axis and loops otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from inference import postprocess
from inference.errors import ModelLoadError
from inference.formats import YOLOV7_END2END, YOLOX, ModelFormat, describe, detect_format
from inference.images import ensure_image
from inference.labels import load_labels
from inference.model_store import resolve_model
from inference.providers import Backend, open_backend
from runtime.letterbox import letterbox, to_tensor
from wire.config import CommonSettings
from wire.messages import Detection
from wire.registry import sha256_file

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """One image ready for the model: the input tensor and what maps boxes back to the original."""

    tensor: NDArray[np.float32]
    """3xHxW float32 in the model's layout."""
    scale: float
    """Model-input pixels per original pixel."""
    original: tuple[int, int]
    """(height, width) of the original image."""
    pad: tuple[int, int] = (0, 0)
    """(left, top) offset of the image inside the letterbox, in model-input pixels."""


class Detector:
    """A loaded detection model. Build it with ``Detector.load``."""

    def __init__(
        self,
        backend: Backend,
        model_format: ModelFormat,
        *,
        name: str,
        version: str,
        path: Path,
        labels: list[str],
        input_size: tuple[int, int],
        max_batch: int,
        conf: float,
        nms: float,
    ) -> None:
        self.backend = backend
        self.model_format = model_format
        self.name = name
        self.version = version
        self.path = path
        self.labels = labels
        self.input_size = input_size
        self.max_batch = max_batch
        self.provider = backend.provider
        self.format = model_format.name
        self.conf = conf
        self.nms = nms
        self._preprocessing = model_format.preprocessing
        self._grid, self._strides = postprocess.yolox_grid(input_size)

    @classmethod
    def load(
        cls,
        model: str | Path,
        *,
        model_dir: Path | None = None,
        threads: int = 1,
        provider: str = "auto",
        conf: float = 0.3,
        nms: float = 0.45,
        inter_threads: int = 1,
    ) -> Detector:
        """Resolve a name or path, open it on the best backend and tell its format; logs one line.

        ``threads`` is the intra-op thread count (one per worker by default: ONNX Runtime's default pins a
        thread per core, see ``inference.providers``);
        ``inter_threads`` matters only to graphs run in parallel mode, which this never asks for.
        """
        path = resolve_model(model, model_dir if model_dir is not None else CommonSettings().model_dir)
        backend = open_backend(path, threads=threads, provider=provider, inter_threads=inter_threads)
        graph = backend.graph
        shape = graph.input_shape
        if len(shape) != 4 or (shape[1] not in (3, None) and not isinstance(shape[1], str)):
            raise ModelLoadError(f"{path}: input {graph.input_name} is {describe(shape)}, expected [B,3,H,W]")
        input_size = _input_size(shape, graph.metadata, path)
        model_format = detect_format(graph.output_shapes, input_size, graph.metadata, model=path.name)
        batch_dim = shape[0]
        max_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else 0
        labels = load_labels(path, graph.metadata, model_format.num_classes)
        version = graph.metadata.get("version") or sha256_file(path)[:12]
        name = path.stem
        detector = cls(
            backend,
            model_format,
            name=name,
            version=version,
            path=path,
            labels=labels,
            input_size=input_size,
            max_batch=max_batch,
            conf=conf,
            nms=nms,
        )
        log.info(
            "model %s %s (%s, input %dx%d, batch %s): running on %s with %d intra-op thread(s)",
            name,
            version,
            model_format.name,
            input_size[1],
            input_size[0],
            "dynamic" if max_batch == 0 else max_batch,
            backend.provider,
            threads,
        )
        return detector

    # --- the pipeline, piece by piece (workers time each piece) ---------------------------------
    def prepare(self, image: NDArray[np.uint8]) -> Prepared:
        """Letterbox and lay out one HxWx3 BGR uint8 image. Thread-safe; does not touch the model."""
        image = ensure_image(image)
        canvas, box = letterbox(image, self.input_size, self._preprocessing)
        return Prepared(
            tensor=to_tensor(canvas, self._preprocessing),
            scale=box.scale,
            original=(image.shape[0], image.shape[1]),
            pad=box.pad,
        )

    def run(self, batch: Sequence[Prepared]) -> list[list[NDArray[np.float32]]]:
        """Raw model outputs per image, in as few model calls as the graph allows."""
        results: list[list[NDArray[np.float32]]] = []
        chunk = len(batch) if self.max_batch == 0 else self.max_batch
        for start in range(0, len(batch), max(chunk, 1)):
            part = batch[start : start + chunk]
            # One image needs no copy: a view with a batch axis is what the session takes.
            stacked = part[0].tensor[None] if len(part) == 1 else np.stack([p.tensor for p in part])
            if len(part) < chunk and self.max_batch > 1:  # a fixed batch axis: pad the last call
                filler = np.zeros((chunk - len(part), *stacked.shape[1:]), dtype=np.float32)
                stacked = np.concatenate([stacked, filler])
            outputs = self.backend.run(stacked)
            results.extend(self._split(outputs, len(part)))
        return results

    def _split(self, outputs: list[NDArray[np.float32]], count: int) -> list[list[NDArray[np.float32]]]:
        if self.format == YOLOV7_END2END:  # rows of every image together, told apart by batch_id
            per_image = []
            for i in range(count):
                rows = outputs[0][outputs[0][:, 0].round() == i].copy()
                rows[:, 0] = 0
                per_image.append([rows])
            return per_image
        return [[output[i] for output in outputs] for i in range(count)]

    def postprocess(
        self,
        outputs: list[NDArray[np.float32]],
        prepared: Prepared,
        *,
        conf: float | None = None,
        nms: float | None = None,
    ) -> list[Detection]:
        """Detections of one image from its raw outputs: decode, threshold, NMS, boxes in original pixels."""
        conf = self.conf if conf is None else conf
        nms = self.nms if nms is None else nms
        output = outputs[0]
        if self.format == YOLOV7_END2END:
            boxes, scores, class_ids = postprocess.end2end_rows(output, 0, conf)
        else:
            grid = (self._grid, self._strides) if self.format == YOLOX else (None, None)
            boxes, scores, class_ids = postprocess.select(output, conf, grid=grid[0], strides=grid[1])
            keep = postprocess.nms(boxes, scores, class_ids, nms)
            boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
        boxes = postprocess.to_original(boxes, prepared.scale, prepared.pad, prepared.original)
        return [
            Detection(
                label=self._label(int(c)),
                class_id=int(c),
                score=min(max(float(s), 0.0), 1.0),
                box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
            )
            for b, s, c in zip(boxes, scores, class_ids, strict=True)
        ]

    def _label(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else f"class_{class_id}"

    # --- the convenient forms -------------------------------------------------------------------
    def infer(
        self, batch: Sequence[Prepared], *, conf: float | None = None, nms: float | None = None
    ) -> list[list[Detection]]:
        """Detections for prepared images: one model run if the graph batches, else one per image."""
        if not batch:
            return []
        outputs = self.run(batch)
        return [self.postprocess(o, p, conf=conf, nms=nms) for o, p in zip(outputs, batch, strict=True)]

    def detect(
        self, image: NDArray[np.uint8], *, conf: float | None = None, nms: float | None = None
    ) -> list[Detection]:
        return self.infer([self.prepare(image)], conf=conf, nms=nms)[0]

    def detect_batch(
        self, images: Sequence[NDArray[np.uint8]], *, conf: float | None = None, nms: float | None = None
    ) -> list[list[Detection]]:
        return self.infer([self.prepare(image) for image in images], conf=conf, nms=nms)

    def warmup(self) -> None:
        """One run on a grey image, so that the first real frame does not pay for lazy initialisation."""
        grey = np.full((*self.input_size, 3), 114, dtype=np.uint8)
        self.infer([self.prepare(grey)] * (self.max_batch if self.max_batch > 1 else 1))

    def __repr__(self) -> str:
        return f"Detector({self.name} {self.version}, {self.format}, {self.provider})"


def _input_size(shape: Sequence[object], metadata: dict[str, str], path: Path) -> tuple[int, int]:
    height, width = shape[2], shape[3]
    if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
        return height, width
    for key in ("imgsz", "input_size"):
        if key in metadata:
            digits = [int(d) for d in metadata[key].strip("[]() ").replace(",", " ").split() if d.isdigit()]
            if len(digits) == 2:
                return digits[0], digits[1]
            if len(digits) == 1:
                return digits[0], digits[0]
    raise ModelLoadError(
        f"{path}: input size is dynamic ({describe([str(d) for d in shape])}) and no 'imgsz' metadata "
        "says which to use; export with a fixed input size"
    )
