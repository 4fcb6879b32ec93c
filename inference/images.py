"""Image decoding with typed errors: the size is read from the header and checked before any pixel is decoded.

Reading width and height from the header first (``runtime.images``: the parser and limits signaling
uses too) refuses decompression bombs (a tiny PNG that claims 20000x20000) without allocating them.
Grayscale and 4-channel files are converted to BGR on purpose: a camera that sends them still deserves
detections. Arrays handed to the library directly must already
be HxWx3 uint8 BGR, because silently reinterpreting someone's array hides their bug.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

from inference.errors import (
    ImageError,
    ImageTooLargeError,
    MissingImageError,
    UndecodableImageError,
    UnsupportedImageError,
)
from runtime import images
from runtime.images import ImageRefused, Refusal
from wire.limits import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_SIDE

log = logging.getLogger(__name__)

Image = NDArray[np.uint8]
"""An HxWx3 BGR uint8 image, the only kind the detector takes."""

_CHANNEL_NAMES = {1: "grayscale", 2: "grayscale+alpha", 4: "4-channel"}
_conversions_logged: set[str] = set()


_ERRORS: dict[Refusal, type[ImageError]] = {
    Refusal.EMPTY: UndecodableImageError,
    Refusal.TOO_LARGE: ImageTooLargeError,
    Refusal.TOO_SMALL: UnsupportedImageError,
}
"""The detector's error for each refusal of the shared limits (``runtime.images``)."""


def check_size(width: int, height: int, *, max_side: int | None, what: str = "image") -> None:
    """``runtime.images.check_size`` raising the detector's typed errors."""
    try:
        images.check_size(width, height, max_side=max_side, what=what)
    except ImageRefused as exc:
        raise _ERRORS[exc.reason](str(exc)) from None


def decode_image(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES, max_side: int = DEFAULT_MAX_IMAGE_SIDE
) -> Image:
    """Decode JPEG/PNG/... bytes to an HxWx3 BGR uint8 array, or raise an ImageError saying why."""
    try:
        header = images.check_image(data, max_bytes=max_bytes, max_side=max_side)
    except ImageRefused as exc:
        raise _ERRORS[exc.reason](str(exc)) from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        known = header.format if header else images.magic_format(data)
        kind = f"{known.upper()} image is corrupt or truncated" if known else "not a decodable image"
        raise UndecodableImageError(f"{kind} ({len(data)} bytes)")
    if header is None:  # a format whose header we do not parse: check what the decoder produced
        check_size(image.shape[1], image.shape[0], max_side=max_side)
    elif header.channels is not None and header.channels != 3:
        _log_conversion(_CHANNEL_NAMES.get(header.channels, f"{header.channels}-channel"))
    return cast(Image, image)  # IMREAD_COLOR always yields 8-bit BGR


def _log_conversion(kind: str) -> None:
    # Once per kind at INFO, then DEBUG: a grayscale camera must not flood the log at 30 fps.
    level = logging.DEBUG if kind in _conversions_logged else logging.INFO
    _conversions_logged.add(kind)
    log.log(level, "converted a %s image to 3-channel BGR for detection", kind)


def read_image(
    path: Path, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES, max_side: int = DEFAULT_MAX_IMAGE_SIDE
) -> Image:
    """Read and decode an image file; the byte limit is checked from the file size before reading."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise MissingImageError(f"{path}: no such file") from None
    except OSError as exc:
        raise MissingImageError(f"{path}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise MissingImageError(f"{path}: is a directory, not an image")
    if size > max_bytes:
        raise ImageTooLargeError(f"{path}: {size} bytes, over the limit of {max_bytes}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MissingImageError(f"{path}: {exc.strerror or exc}") from None
    try:
        return decode_image(data, max_bytes=max_bytes, max_side=max_side)
    except (UndecodableImageError, ImageTooLargeError, UnsupportedImageError) as exc:
        raise type(exc)(f"{path}: {exc}") from None


def ensure_image(image: object) -> Image:
    """Check that an array is an HxWx3 uint8 image of a usable size; raise UnsupportedImageError if not."""
    if not isinstance(image, np.ndarray):
        raise UnsupportedImageError(f"expected an HxWx3 uint8 numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UnsupportedImageError(
            f"expected an HxWx3 uint8 BGR array, got shape {image.shape} dtype {image.dtype} "
            "(convert grayscale/BGRA with cv2.cvtColor first)"
        )
    height, width = image.shape[:2]
    check_size(width, height, max_side=None)
    return image
