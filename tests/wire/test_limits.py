"""wire.limits: the shared image limits agree with the settings' defaults."""

from __future__ import annotations

from wire.config import StreamSettings
from wire.limits import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_SIDE, MIN_IMAGE_SIDE


def test_defaults_match_the_stream_settings() -> None:
    fields = StreamSettings.model_fields
    assert fields["max_image_bytes"].default == DEFAULT_MAX_IMAGE_BYTES
    assert fields["max_image_side"].default == DEFAULT_MAX_IMAGE_SIDE
    assert 1 < MIN_IMAGE_SIDE < DEFAULT_MAX_IMAGE_SIDE
