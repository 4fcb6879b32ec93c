"""Image limits shared by everything that accepts images (REST, the media bridge, workers, the CLI)."""

from __future__ import annotations

MIN_IMAGE_SIDE = 8
"""Smallest width or height accepted, in pixels: smaller images carry nothing a detector can find."""

DEFAULT_MAX_IMAGE_BYTES = 8 * 1024 * 1024
"""Largest encoded image accepted by default (``StreamSettings.max_image_bytes`` has the same default)."""

DEFAULT_MAX_IMAGE_SIDE = 4096
"""Largest width or height accepted by default (``StreamSettings.max_image_side`` has the same default)."""

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
"""File suffixes (lower case) that the CLI, evaluation and training read as images from a folder."""
