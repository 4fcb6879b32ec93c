"""Model construction and the BatchNorm freeze."""

from __future__ import annotations

import pytest
import torch

from training.model import UnknownArchitectureError, build_model, freeze_batchnorm


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
