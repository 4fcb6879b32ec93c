"""Errors of the detector: each one is a user's mistake or an environment problem with a one-line reason."""

from __future__ import annotations

from wire.errors import LookoutError


class DetectorError(LookoutError):
    """Base of every detector error."""


class ModelLoadError(DetectorError):
    """The model cannot be used: missing file, not ONNX, unknown output layout, unknown name."""


class ProviderError(DetectorError):
    """The requested execution provider (or backend) is not available here."""


class ModelPullError(DetectorError):
    """A model download failed: no network, HTTP error, checksum mismatch, no pin to verify against."""


class ImageError(DetectorError):
    """Base of every image error."""


class UndecodableImageError(ImageError):
    """The bytes are not a decodable image: corrupt, truncated, empty or text."""


class ImageTooLargeError(ImageError):
    """The encoded bytes or the width/height exceed the limits (decompression bombs included)."""


class UnsupportedImageError(ImageError):
    """A decodable image the detector cannot use: too small, or an array that is not HxWx3 uint8."""


class MissingImageError(ImageError):
    """The image path does not exist or is not a readable file."""
