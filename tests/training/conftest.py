"""Fixtures of the training tests: torch and pixeltable-yolox come with the train extra."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="training needs the train extra (torch)")
pytest.importorskip("yolox.models", reason="training needs the train extra (pixeltable-yolox)")


@pytest.fixture(scope="session")
def coco128(shared_dir):  # type: ignore[no-untyped-def]
    return shared_dir / "data" / "coco-subset" / "coco128"
