"""Hard-example sampling: frames the model is unsure about, saved with pseudo-labels for retraining.

A frame is uncertain when any detection's score falls inside ``[low, high]``. At most one uncertain
frame in ``every`` is kept, in a YOLO-format store (the coco128 layout that ``lookout train --data``
reads): ``images/NAME.jpg`` and ``labels/NAME.txt`` with one ``class cx cy w h`` line (normalised) per
detection scoring at least ``label_conf`` (default: ``low``). The store holds at most ``max_items``
frames; the oldest go first. The worker runs the sampler off the event loop, as a result hook.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from wire.config import WorkerSettings
from wire.messages import Detection, ResultMessage

log = logging.getLogger(__name__)


class HardExampleSampler:
    """A worker result hook (``worker.on_result.append(sampler)``) writing uncertain frames to ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        low: float = 0.3,
        high: float = 0.6,
        max_items: int = 1000,
        every: int = 10,
        label_conf: float | None = None,
        jpeg_quality: int = 90,
    ) -> None:
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"the uncertain band must satisfy 0 <= low <= high <= 1, got [{low}, {high}]")
        self.root = root
        self.low = low
        self.high = high
        self.max_items = max(1, max_items)
        self.every = max(1, every)
        self.label_conf = low if label_conf is None else label_conf
        self.jpeg_quality = jpeg_quality
        self.images = root / "images"
        self.labels = root / "labels"
        self.images.mkdir(parents=True, exist_ok=True)
        self.labels.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._stored: deque[str] = deque(sorted(p.stem for p in self.images.glob("*.jpg")))
        self.uncertain_seen = 0
        self.saved = 0

    def is_uncertain(self, detections: list[Detection]) -> bool:
        return any(self.low <= d.score <= self.high for d in detections)

    def __call__(self, image: NDArray[np.uint8], result: ResultMessage) -> None:
        if not self.is_uncertain(result.detections):
            return
        with self._lock:
            self.uncertain_seen += 1
            if (self.uncertain_seen - 1) % self.every:
                return
            name = f"{time.time_ns():020d}-{result.session[:40]}-{result.seq}"
            try:
                self._write(name, image, result)
            except (OSError, ValueError) as exc:
                log.warning("hard examples: cannot save frame %s/%d: %s", result.session, result.seq, exc)
                return
            self._stored.append(name)
            self.saved += 1
            while len(self._stored) > self.max_items:
                self._remove(self._stored.popleft())

    def pseudo_labels(self, detections: list[Detection], width: int, height: int) -> list[str]:
        """YOLO lines (class cx cy w h, normalised to the frame) of the detections kept as labels."""
        lines = []
        for d in detections:
            if d.score < self.label_conf:
                continue
            x1, y1, x2, y2 = (max(0.0, v) for v in d.box)
            x2, y2 = min(x2, float(width)), min(y2, float(height))
            if x2 <= x1 or y2 <= y1:
                continue
            cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
            lines.append(f"{d.class_id} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
        return lines

    def _write(self, name: str, image: NDArray[np.uint8], result: ResultMessage) -> None:
        import cv2

        height, width = image.shape[:2]
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        # Labels first, then the image: a reader that sees an image always finds its labels.
        _write_atomic(
            self.labels / f"{name}.txt", "\n".join(self.pseudo_labels(result.detections, width, height))
        )
        _write_atomic(self.images / f"{name}.jpg", encoded.tobytes())

    def _remove(self, name: str) -> None:
        for path in (self.images / f"{name}.jpg", self.labels / f"{name}.txt"):
            try:
                path.unlink()
            except FileNotFoundError:
                pass


def _write_atomic(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(data, str):
        tmp.write_text(data + ("\n" if data else ""))
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def sampler_from_settings(settings: WorkerSettings) -> HardExampleSampler | None:
    """The sampler a `lookout worker` runs (None when ``hard_examples_dir`` is unset)."""
    if settings.hard_examples_dir is None:
        return None
    sampler = HardExampleSampler(
        settings.hard_examples_dir,
        low=settings.hard_examples_low,
        high=settings.hard_examples_high,
        max_items=settings.hard_examples_max,
        every=settings.hard_examples_every,
    )
    log.info(
        "sampling uncertain frames (a score in [%.2f, %.2f], one in %d) into %s, at most %d",
        sampler.low,
        sampler.high,
        sampler.every,
        sampler.root,
        sampler.max_items,
    )
    return sampler
