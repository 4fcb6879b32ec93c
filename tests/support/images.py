"""Typed image reading for tests: cv2.imread, failing loudly instead of returning None."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import cv2

from inference.images import Image


def imread(path: Path, flags: int = cv2.IMREAD_COLOR) -> Image:
    """``cv2.imread`` of a file the test knows is there; IMREAD_COLOR and IMREAD_GRAYSCALE yield uint8."""
    image = cv2.imread(str(path), flags)
    assert image is not None, f"cv2 cannot read {path}"
    return cast(Image, image)
