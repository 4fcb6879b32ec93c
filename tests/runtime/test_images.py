"""Image headers read without decoding (every format the workers take), and the shared size limits."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from runtime.images import (
    ImageRefused,
    Refusal,
    check_bytes,
    check_image,
    check_size,
    image_size,
    magic_format,
    read_header,
)
from tests.inference.crafted import bomb_png
from tests.support.images import encode, random_picture
from wire.limits import MIN_IMAGE_SIDE


@pytest.fixture
def picture() -> np.ndarray:
    return random_picture()


@pytest.mark.parametrize(
    ("suffix", "kind"), [(".jpg", "jpeg"), (".png", "png"), (".bmp", "bmp"), (".webp", "webp")]
)
def test_size_and_format_from_the_header(suffix: str, kind: str, picture: np.ndarray) -> None:
    data = encode(suffix, picture)
    header = read_header(data)
    assert header is not None and (header.format, header.width, header.height) == (kind, 64, 48)
    assert image_size(data) == (64, 48)


def test_gif_and_unknown_bytes() -> None:
    gif = b"GIF89a" + struct.pack("<HH", 320, 200) + b"\x00" * 20
    assert image_size(gif) == (320, 200)
    assert image_size(b"hello world") is None
    assert image_size(b"") is None


def test_a_progressive_jpeg_with_exif(images_dir: Path) -> None:
    data = (images_dir / "dog.jpg").read_bytes()
    assert image_size(data) == (768, 576)
    assert image_size(data[: 64 * 1024]) == (768, 576)  # the first 64 KB are enough (evaluation reads that)


def test_a_bombs_size_is_read_not_refused_by_the_parser() -> None:
    assert image_size(bomb_png()) == (20000, 20000)


@pytest.mark.parametrize(
    ("suffix", "array", "channels"),
    [
        (".png", np.full((32, 32), 200, np.uint8), 1),
        (".jpg", np.full((32, 32), 200, np.uint8), 1),
        (".png", np.full((32, 32, 4), 200, np.uint8), 4),
        (".jpg", np.full((32, 32, 3), 200, np.uint8), 3),
    ],
)
def test_channels_from_the_header(suffix: str, array: np.ndarray, channels: int) -> None:
    header = read_header(encode(suffix, array))
    assert header is not None and header.channels == channels


def test_a_broken_header_still_names_its_format() -> None:
    broken_jpeg = b"\xff\xd8\xff\xe0 not really a jpeg"
    assert read_header(broken_jpeg) is None
    assert magic_format(broken_jpeg) == "jpeg"
    assert magic_format(b"\x89PNG\r\n") == "png" and magic_format(b"text") is None


def test_byte_limits() -> None:
    with pytest.raises(ImageRefused, match="empty") as empty:
        check_bytes(b"", max_bytes=10)
    assert empty.value.reason is Refusal.EMPTY
    with pytest.raises(ImageRefused, match="11 bytes, over the limit of 10") as big:
        check_bytes(b"x" * 11, max_bytes=10)
    assert big.value.reason is Refusal.TOO_LARGE
    check_bytes(b"x" * 10, max_bytes=10)


def test_side_limits() -> None:
    with pytest.raises(ImageRefused, match="PNG image is 1200x16, over the limit of 1000") as wide:
        check_size(1200, 16, max_side=1000, what="PNG image")
    assert wide.value.reason is Refusal.TOO_LARGE
    with pytest.raises(ImageRefused, match=f"4x4, smaller than {MIN_IMAGE_SIDE} px") as tiny:
        check_size(4, 4, max_side=1000)
    assert tiny.value.reason is Refusal.TOO_SMALL
    check_size(1000, MIN_IMAGE_SIDE, max_side=1000)
    check_size(100_000, 100_000, max_side=None)  # no upper limit: only too small is refused


def test_check_image_refuses_a_bomb_from_its_header_and_passes_unknown_formats_on() -> None:
    with pytest.raises(ImageRefused, match="PNG image is 20000x20000") as bomb:
        check_image(bomb_png(), max_bytes=1 << 20, max_side=4096)
    assert bomb.value.reason is Refusal.TOO_LARGE
    assert check_image(b"some format the decoder may know", max_bytes=1 << 20, max_side=4096) is None
    header = check_image(encode(".png", np.zeros((48, 64, 3), np.uint8)), max_bytes=1 << 20, max_side=64)
    assert header is not None and (header.width, header.height) == (64, 48)
