"""ONNX export keeps the workers' layout and is checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from training.export import ExportCheckError, check_export, export_onnx
from training.model import build_model
from training.onnx_weights import import_onnx_weights


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value for d in value.type.tensor_type.shape.dim]


def test_export_layout_and_check(tmp_path: Path, model_path: Path) -> None:
    model = build_model("yolox_nano")
    import_onnx_weights(model, model_path)
    model.train()  # export must not depend on the mode the trainer left the model in
    path = tmp_path / "model.onnx"
    export_onnx(model, path)
    graph = onnx.load(str(path)).graph
    assert [(i.name, _dims(i)) for i in graph.input] == [("images", [1, 3, 416, 416])]
    assert [(o.name, _dims(o)) for o in graph.output] == [("output", [1, 3549, 85])]
    assert not [p for p in tmp_path.iterdir() if p.name != "model.onnx"]  # one self-contained file
    rng = np.random.default_rng(0)
    assert check_export(model, path, rng.uniform(0, 255, (1, 3, 416, 416)).astype(np.float32)) < 1e-3

    with torch.no_grad():  # a model that differs from the file is caught
        model.head.cls_preds[0].bias.add_(3.0)  # type: ignore[union-attr,index,operator]
    with pytest.raises(ExportCheckError, match="differs from PyTorch"):
        check_export(model, path, rng.uniform(0, 255, (1, 3, 416, 416)).astype(np.float32))
