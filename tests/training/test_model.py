"""Model construction and the BatchNorm freeze."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.model import UnknownArchitectureError, build_model, freeze_batchnorm
from wire.errors import LookoutError


def test_freeze_keeps_batchnorm_in_eval_mode() -> None:
    model = build_model("yolox_nano")
    model.train()
    freeze_batchnorm(model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.training for m in norms)
    assert all(p.requires_grad for m in norms for p in m.parameters())  # affine weights still train


def test_unknown_architecture() -> None:
    with pytest.raises(UnknownArchitectureError, match="unknown architecture 'yolox_huge'"):
        build_model("yolox_huge")


def test_an_official_style_pth_loads(tmp_path: Path, model_path: Path) -> None:
    from training.checkpoint import weights_digest
    from training.model import load_pth
    from training.onnx_weights import import_onnx_weights

    source = build_model("yolox_nano")
    import_onnx_weights(source, model_path)
    pth = tmp_path / "yolox_nano.pth"
    torch.save({"model": source.state_dict(), "start_epoch": 300}, pth)  # YOLOX's checkpoint layout
    target = build_model("yolox_nano")
    load_pth(target, pth)
    assert weights_digest(target) == weights_digest(source)
    with pytest.raises(LookoutError, match="does not fit this architecture"):
        load_pth(build_model("yolox_tiny"), pth)
