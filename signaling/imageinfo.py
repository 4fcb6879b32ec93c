"""What an uploaded image is, read from its header only (``runtime.images``), as the REST API answers it.

Signaling never decodes or runs the model (workers do); it only needs the size for the frame message and
to refuse oversized images before they reach a worker. The header parser and the limits are the ones
the worker applies, so an image accepted here is never refused there for its size; this module maps a
refusal to the HTTP status and error code the API documents.
"""

from __future__ import annotations

from runtime.images import ImageHeader, ImageRefused, Refusal, check_bytes, check_size, read_header
from signaling.rest_errors import RestError
from wire.rest import IMAGE_MEDIA_TYPES

REST_FORMATS = frozenset(media_type.removeprefix("image/") for media_type in IMAGE_MEDIA_TYPES)
"""The formats the REST API accepts: jpeg and png."""

_REFUSALS: dict[Refusal, tuple[int, str]] = {
    Refusal.EMPTY: (422, "empty_image"),
    Refusal.TOO_LARGE: (413, "image_too_large"),
    Refusal.TOO_SMALL: (422, "image_too_small"),
}


def inspect_image(data: bytes, *, max_bytes: int, max_side: int) -> ImageHeader:
    """Format and size of a JPEG or PNG; raises RestError (413 or 422) when it is refused."""
    try:
        check_bytes(data, max_bytes=max_bytes)
        header = read_header(data)
        if header is None or header.format not in REST_FORMATS:
            raise RestError(422, "undecodable_image", "the body is not a decodable JPEG or PNG image")
        check_size(header.width, header.height, max_side=max_side, what=f"the {header.format.upper()} image")
    except ImageRefused as exc:
        status, code = _REFUSALS[exc.reason]
        raise RestError(status, code, str(exc)) from exc
    return header
