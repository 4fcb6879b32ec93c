"""What an uploaded image is, read from its header only: format and size, without decoding the pixels.

Signaling never decodes or runs the model (workers do); it only needs the size for the frame message and
to refuse oversized images before they reach a worker. Pillow reads just the header, lazily.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from signaling.rest_errors import RestError
from wire.limits import MIN_IMAGE_SIDE


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "JPEG" or "PNG"
    width: int
    height: int


def inspect_image(data: bytes, *, max_bytes: int, max_side: int) -> ImageInfo:
    """Format and size of a JPEG or PNG; raises RestError (413 or 422) when it is refused."""
    if not data:
        raise RestError(422, "empty_image", "the image is empty")
    if len(data) > max_bytes:
        raise RestError(
            413, "image_too_large", f"the image is {len(data)} bytes; at most {max_bytes} are accepted"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=("JPEG", "PNG")) as image:
                width, height = image.size
                kind = str(image.format)
    except Image.DecompressionBombError as exc:
        raise RestError(413, "image_too_large", f"the image has too many pixels: {exc}") from exc
    except Exception as exc:  # Pillow raises many types on garbage; all mean "not an image we take"
        raise RestError(422, "undecodable_image", "the body is not a decodable JPEG or PNG image") from exc
    if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
        raise RestError(
            422,
            "image_too_small",
            f"the image is {width}x{height} pixels; each side needs {MIN_IMAGE_SIDE} or more",
        )
    if max(width, height) > max_side:
        raise RestError(
            413,
            "image_too_large",
            f"the image is {width}x{height} pixels; the largest side accepted is {max_side}",
        )
    return ImageInfo(kind, width, height)
