"""Fixtures of the detector tests: one loaded yolox_nano per session (loading costs about 0.2 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.detector import Detector


@pytest.fixture(scope="session")
def nano(model_path: Path) -> Detector:
    return Detector.load(model_path, threads=1)
