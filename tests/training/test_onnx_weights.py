"""The BN-folded ONNX weights, imported into pixeltable-yolox's model, give ONNX Runtime's output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.support.images import imread
from training.images import letterbox
from training.model import build_model, freeze_batchnorm, raw_head
from training.onnx_weights import WeightImportError, import_onnx_weights


@pytest.fixture(scope="module")
def imported(model_path: Path) -> torch.nn.Module:
    model = build_model("yolox_nano")
    assert import_onnx_weights(model, model_path) == 113
    return raw_head(model).eval()


@pytest.mark.parametrize("image", ["dog.jpg", "bus.jpg", "horses.jpg"])
def test_imported_model_matches_onnx_runtime(
    imported: torch.nn.Module, model_path: Path, images_dir: Path, image: str
) -> None:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    tensor, _ = letterbox(imread(images_dir / image), 416)
    want = session.run(["output"], {"images": tensor[None]})[0]
    with torch.no_grad():
        got = imported(torch.from_numpy(tensor[None])).numpy()
    assert got.shape == want.shape == (1, 3549, 85)
    assert np.abs(got - want).max() < 1e-3
    # The scores too (obj x cls), where the detections come from.
    assert np.abs(got[0, :, 4:5] * got[0, :, 5:] - want[0, :, 4:5] * want[0, :, 5:]).max() < 1e-4


def test_frozen_batchnorm_keeps_the_training_forward_exact(
    imported: torch.nn.Module, images_dir: Path
) -> None:
    """In train mode with BN frozen, the features are the deployed model's (no batch statistics)."""
    tensor, _ = letterbox(imread(images_dir / "dog.jpg"), 416)
    batch = torch.from_numpy(np.stack([tensor, tensor]))
    backbone = imported.backbone
    assert isinstance(backbone, torch.nn.Module)  # nn.Module.__getattr__ is typed Tensor | Module
    with torch.no_grad():
        imported.eval()
        expected = [f.clone() for f in backbone(batch)]
        imported.train()
        freeze_batchnorm(imported)
        got = backbone(batch)
        imported.eval()
    for a, b in zip(got, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_unfolded_weights_are_well_scaled(imported: torch.nn.Module) -> None:
    """The stem sees 0-255 pixels: its folded weights are tiny; imported, each channel has norm sqrt(2)."""
    # Each step of the chain is nn.Module.__getattr__, typed Tensor | Module, and Tensor has no .backbone.
    stem = imported.backbone.backbone.stem.conv.conv.weight  # type: ignore[union-attr]
    assert isinstance(stem, torch.Tensor)
    norms = stem.detach().reshape(stem.shape[0], -1).norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 2**0.5), atol=1e-4)


def test_a_model_of_another_size_is_refused(model_path: Path) -> None:
    with pytest.raises(WeightImportError, match="pick the matching --arch"):
        import_onnx_weights(build_model("yolox_tiny"), model_path)


def test_a_file_that_is_not_onnx_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(WeightImportError, match="cannot read ONNX file"):
        import_onnx_weights(build_model("yolox_nano"), bad)
