"""Images for tests: typed cv2.imread that fails loudly, encoding, and a small random picture."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import cv2
import numpy as np

from inference.images import Image


def imread(path: Path, flags: int = cv2.IMREAD_COLOR) -> Image:
    """``cv2.imread`` of a file the test knows is there; IMREAD_COLOR and IMREAD_GRAYSCALE yield uint8."""
    image = cv2.imread(str(path), flags)
    assert image is not None, f"cv2 cannot read {path}"
    return cast(Image, image)


def encode(suffix: str, image: np.ndarray) -> bytes:
    """``cv2.imencode`` to the format of ``suffix`` (".jpg", ".png", ...), asserting it worked."""
    ok, data = cv2.imencode(suffix, image)
    assert ok
    return bytes(data.tobytes())


def random_picture() -> np.ndarray:
    """A 64x48 BGR picture of seeded noise."""
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
