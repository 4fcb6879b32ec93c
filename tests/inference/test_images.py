"""Image decoding: typed errors for bad bytes, bombs refused before decoding, conversions.

The header parser and the limits themselves are tested in tests/runtime/test_images.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference import images
from inference.errors import (
    ImageError,
    ImageTooLargeError,
    MissingImageError,
    UndecodableImageError,
    UnsupportedImageError,
)
from inference.images import decode_image, ensure_image, read_image
from runtime.images import image_size
from tests.inference.crafted import bomb_png
from tests.support.images import encode, random_picture


@pytest.fixture
def picture() -> np.ndarray:
    return random_picture()


def test_decode_round_trip(picture: np.ndarray) -> None:
    decoded = decode_image(encode(".png", picture))
    assert decoded.shape == (48, 64, 3) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, picture)


def test_bomb_is_refused_from_the_header_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bomb_png()
    assert image_size(data) == (20000, 20000)

    def no_decoding(*args: object) -> None:
        raise AssertionError("the decoder must not run for an oversized header")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)  # the very module inference.images decodes with
    with pytest.raises(ImageTooLargeError, match="20000x20000"):
        decode_image(data)


def test_too_many_bytes_is_too_large(picture: np.ndarray) -> None:
    data = encode(".png", picture)
    with pytest.raises(ImageTooLargeError, match="bytes"):
        decode_image(data, max_bytes=len(data) - 1)
    with pytest.raises(ImageTooLargeError, match="64x48"):
        decode_image(data, max_side=50)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", UndecodableImageError, "empty"),
        (b"just some text, not an image\n", UndecodableImageError, "not a decodable image"),
        (b"\xff\xd8" + bytes(range(256)) * 8, UndecodableImageError, "corrupt"),
    ],
    ids=["empty", "text", "corrupt-jpeg"],
)
def test_bad_bytes(data: bytes, error: type[ImageError], message: str) -> None:
    with pytest.raises(error, match=message):
        decode_image(data)


def test_truncated_and_scrambled_jpegs(images_dir: Path) -> None:
    data = (images_dir / "dog.jpg").read_bytes()
    with pytest.raises(UndecodableImageError, match="JPEG image is corrupt or truncated"):
        decode_image(data[: len(data) // 2])
    scrambled = bytearray(data)
    scrambled[5000:6000] = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    with pytest.raises(UndecodableImageError):
        decode_image(bytes(scrambled))


def test_one_pixel_image_is_unsupported() -> None:
    with pytest.raises(UnsupportedImageError, match="1x1"):
        decode_image(encode(".png", np.zeros((1, 1, 3), np.uint8)))
    with pytest.raises(UnsupportedImageError, match="smaller than 8"):
        decode_image(encode(".png", np.zeros((7, 100, 3), np.uint8)))


@pytest.mark.parametrize(
    ("suffix", "array", "kind"),
    [
        (".png", np.full((32, 32), 200, np.uint8), "grayscale"),
        (".jpg", np.full((32, 32), 200, np.uint8), "grayscale"),
        (".png", np.full((32, 32, 4), 200, np.uint8), "4-channel"),
    ],
)
def test_grayscale_and_four_channel_files_are_converted_and_logged(
    suffix: str,
    array: np.ndarray,
    kind: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(images, "_conversions_logged", set())
    with caplog.at_level(logging.INFO, logger="inference.images"):
        decoded = decode_image(encode(suffix, array))
    assert decoded.shape == (32, 32, 3)
    assert abs(int(decoded[0, 0, 0]) - 200) <= 2
    assert f"converted a {kind} image" in caplog.text


def test_read_image_errors(tmp_path: Path, picture: np.ndarray) -> None:
    with pytest.raises(MissingImageError, match="no such file"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(MissingImageError, match="directory"):
        read_image(tmp_path)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(UndecodableImageError, match=r"empty.jpg: image is empty"):
        read_image(empty)
    big = tmp_path / "big.png"
    big.write_bytes(encode(".png", picture))
    with pytest.raises(ImageTooLargeError):
        read_image(big, max_bytes=100)
    assert read_image(big).shape == (48, 64, 3)


def test_ensure_image_accepts_only_hxwx3_uint8(picture: np.ndarray) -> None:
    assert ensure_image(picture) is picture
    for bad in (picture[:, :, 0], picture.astype(np.float32), np.zeros((4, 4, 3), np.uint8), [1, 2, 3]):
        with pytest.raises(UnsupportedImageError):
            ensure_image(bad)
