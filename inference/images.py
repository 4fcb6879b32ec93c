"""Image decoding with typed errors: the size is read from the header and checked before any pixel is decoded.

Reading width and height from the header first refuses decompression bombs (a tiny PNG that claims
20000x20000) without allocating them. Grayscale and 4-channel files are converted to BGR on purpose:
a camera that sends them still deserves detections. Arrays handed to the library directly must already
be HxWx3 uint8 BGR, because silently reinterpreting someone's array hides their bug.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

from inference.errors import (
    ImageTooLargeError,
    MissingImageError,
    UndecodableImageError,
    UnsupportedImageError,
)
from wire.limits import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_SIDE, MIN_IMAGE_SIDE

log = logging.getLogger(__name__)

Image = NDArray[np.uint8]
"""An HxWx3 BGR uint8 image, the only kind the detector takes."""

_CHANNEL_NAMES = {1: "grayscale", 2: "grayscale+alpha", 4: "4-channel"}
_conversions_logged: set[str] = set()


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an encoded image says, read without decoding it."""

    format: str
    width: int
    height: int
    channels: int | None = None


def _jpeg_header(data: bytes) -> ImageHeader | None:
    # Walk the marker segments up to the first start-of-frame (SOF0..SOF15 except DHT/JPG/DAC).
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers carry no length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 10 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return ImageHeader("jpeg", width, height, data[pos + 9])
        if length < 2:
            return None
        pos += 2 + length
    return None


def _png_header(data: bytes) -> ImageHeader | None:
    if len(data) < 26 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(data[25])
    return ImageHeader("png", width, height, channels)


def _webp_header(data: bytes) -> ImageHeader | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return ImageHeader("webp", width, height)
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return ImageHeader("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF)
    return None


def read_header(data: bytes) -> ImageHeader | None:
    """Format, width and height from the first bytes (JPEG, PNG, GIF, BMP, WebP); None if unknown."""
    if data[:2] == b"\xff\xd8":
        return _jpeg_header(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png_header(data)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return ImageHeader("gif", width, height)
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return ImageHeader("bmp", abs(width), abs(height))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_header(data)
    return None


def _magic_format(data: bytes) -> str | None:
    """The format the first bytes announce, even when the header after them is broken."""
    magics = {b"\xff\xd8": "jpeg", b"\x89PNG": "png", b"GIF8": "gif", b"BM": "bmp"}
    return next((name for magic, name in magics.items() if data.startswith(magic)), None)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header, without decoding; None when the format is not recognised."""
    header = read_header(data)
    return None if header is None else (header.width, header.height)


def check_size(width: int, height: int, *, max_side: int, what: str = "image") -> None:
    """Refuse images too small to detect anything in or larger than ``max_side``."""
    if width > max_side or height > max_side:
        raise ImageTooLargeError(f"{what} is {width}x{height}, over the limit of {max_side} px per side")
    if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
        raise UnsupportedImageError(f"{what} is {width}x{height}, smaller than {MIN_IMAGE_SIDE} px per side")


def decode_image(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES, max_side: int = DEFAULT_MAX_IMAGE_SIDE
) -> Image:
    """Decode JPEG/PNG/... bytes to an HxWx3 BGR uint8 array, or raise an ImageError saying why."""
    if not data:
        raise UndecodableImageError("image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"image is {len(data)} bytes, over the limit of {max_bytes}")
    header = read_header(data)
    if header is not None:
        check_size(header.width, header.height, max_side=max_side, what=f"{header.format.upper()} image")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        known = header.format if header else _magic_format(data)
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
    if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
        raise UnsupportedImageError(f"image is {width}x{height}, smaller than {MIN_IMAGE_SIDE} px per side")
    return image
