"""What an encoded image is, from its header alone, and whether its size is acceptable.

Signaling (REST) refuses oversized images before they reach a worker, and the worker refuses them
before it decodes a pixel; both read the header here, so they can never disagree about a size. The
header is parsed by hand rather than with Pillow on purpose: Pillow refuses to report the size of a
decompression bomb (it raises instead), does not identify a bare header, and would make the workers
depend on it. Parsing only reads the first bytes: ``read_header`` works on a file's first 64 KB.

The limits come from ``wire.limits``; each service turns an ``ImageRefused`` into its own error (an
HTTP status, a typed exception) by its ``reason``, with the same message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

from wire.limits import MIN_IMAGE_SIDE


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an encoded image says, read without decoding it."""

    format: str
    """Lower case: jpeg, png, gif, bmp or webp."""
    width: int
    height: int
    channels: int | None = None
    """Colour channels the file stores (1 grayscale, 3 colour, 4 with alpha), when the header says."""


class Refusal(StrEnum):
    """Why the limits refuse an image; each service maps it to its own error (status, drop reason)."""

    EMPTY = "empty"
    TOO_LARGE = "too_large"
    """Too many bytes, or a side over the limit (decompression bombs included)."""
    TOO_SMALL = "too_small"
    """A side under ``MIN_IMAGE_SIDE``: nothing a detector could find."""


class ImageRefused(ValueError):
    """An image the limits refuse: ``reason`` says which limit, ``str(error)`` says why in one line."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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


def magic_format(data: bytes) -> str | None:
    """The format the first bytes announce, even when the header after them is broken."""
    magics = {b"\xff\xd8": "jpeg", b"\x89PNG": "png", b"GIF8": "gif", b"BM": "bmp"}
    return next((name for magic, name in magics.items() if data.startswith(magic)), None)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header, without decoding; None when the format is not recognised."""
    header = read_header(data)
    return None if header is None else (header.width, header.height)


def check_bytes(data: bytes, *, max_bytes: int) -> None:
    """Refuse an empty image or one of more than ``max_bytes`` encoded bytes."""
    if not data:
        raise ImageRefused(Refusal.EMPTY, "image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageRefused(Refusal.TOO_LARGE, f"image is {len(data)} bytes, over the limit of {max_bytes}")


def check_size(width: int, height: int, *, max_side: int | None, what: str = "image") -> None:
    """Refuse images too small to detect anything in, or with a side over ``max_side`` (None: no limit)."""
    if max_side is not None and (width > max_side or height > max_side):
        raise ImageRefused(
            Refusal.TOO_LARGE, f"{what} is {width}x{height}, over the limit of {max_side} px per side"
        )
    if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
        raise ImageRefused(
            Refusal.TOO_SMALL, f"{what} is {width}x{height}, smaller than {MIN_IMAGE_SIDE} px per side"
        )


def check_image(data: bytes, *, max_bytes: int, max_side: int) -> ImageHeader | None:
    """Check the bytes, then the size the header gives; returns the header (None: not recognised).

    An unrecognised header is not refused here: the worker's decoder may still read the format, and
    then checks the size of what it decoded.
    """
    check_bytes(data, max_bytes=max_bytes)
    header = read_header(data)
    if header is not None:
        check_size(header.width, header.height, max_side=max_side, what=f"{header.format.upper()} image")
    return header
