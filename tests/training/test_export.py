"""The export check compares an ONNX file with the PyTorch model (the layout is checked on a real export
of a fine-tuned model in test_cli.py, which shares one run between its assertions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.export import ExportCheckError, check_export
from training.model import build_model
from training.onnx_weights import import_onnx_weights


def test_the_check_passes_on_a_match_and_catches_a_difference(model_path: Path) -> None:
    model = build_model("yolox_nano")
    import_onnx_weights(model, model_path)
    model.train()  # the check must not depend on the mode the trainer left the model in
    images = np.random.default_rng(0).uniform(0, 255, (1, 3, 416, 416)).astype(np.float32)
    assert check_export(model, model_path, images) < 1e-3  # the file the weights came from
    with torch.no_grad():
        model.head.cls_preds[0].bias.add_(3.0)  # type: ignore[union-attr,index]
    with pytest.raises(ExportCheckError, match="differs from PyTorch"):
        check_export(model, model_path, images)


def test_a_file_that_does_not_load(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(ExportCheckError, match="ONNX Runtime cannot load"):
        check_export(build_model("yolox_nano"), bad, np.zeros((1, 3, 416, 416), np.float32))
