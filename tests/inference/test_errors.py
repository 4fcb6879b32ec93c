"""The detector's errors: one family under LookoutError, so the CLI prints one line and exits 2."""

from __future__ import annotations

import pytest

from inference import errors
from wire.errors import LookoutError


@pytest.mark.parametrize(
    "error",
    [
        errors.ModelLoadError,
        errors.ProviderError,
        errors.ModelPullError,
        errors.UndecodableImageError,
        errors.ImageTooLargeError,
        errors.UnsupportedImageError,
        errors.MissingImageError,
    ],
)
def test_every_error_is_a_detector_error_with_exit_code_2(error: type[errors.DetectorError]) -> None:
    assert issubclass(error, errors.DetectorError) and issubclass(error, LookoutError)
    assert error("x").exit_code == 2


def test_image_errors_share_a_base() -> None:
    for error in (errors.UndecodableImageError, errors.ImageTooLargeError, errors.UnsupportedImageError):
        assert issubclass(error, errors.ImageError)
    assert not issubclass(errors.ModelLoadError, errors.ImageError)
