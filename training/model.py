"""The YOLOX model of pixeltable-yolox, built for fine-tuning and for export in the workers' layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from wire.errors import LookoutError

INPUT_SIZE = 416
"""Side of the square input the deployed models take (``images`` [1,3,416,416])."""


class UnknownArchitectureError(LookoutError):
    """The architecture name is not one pixeltable-yolox knows."""


def build_model(arch: str = "yolox_nano", num_classes: int = 80) -> nn.Module:
    """An untrained YOLOX module (pixeltable-yolox's own model and loss) of the named size."""
    from yolox.config import YoloxConfig

    config = YoloxConfig.get_named_config(arch)
    if config is None:
        raise UnknownArchitectureError(
            f"unknown architecture {arch!r}: use yolox_nano, yolox_tiny, yolox_s, yolox_m, yolox_l or yolox_x"
        )
    config.num_classes = num_classes
    model: nn.Module = config.get_model()
    return model


def freeze_batchnorm(model: nn.Module) -> None:
    """Keep every BatchNorm in eval mode: running statistics fixed, affine weights still trained.

    Fine-tuning runs with a batch of 2-16 images per rank; batch statistics that small are noise, and
    weights imported from a BN-folded ONNX file carry no statistics to start from (docs/training.md).
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()


def raw_head(model: nn.Module) -> nn.Module:
    """Make ``model(images)`` return the raw head [N, anchors, 5+classes], as the workers expect."""
    head: Any = model.head
    head.decode_in_inference = False
    return model


def load_pth(model: nn.Module, path: Path) -> None:
    """Load an official YOLOX ``.pth`` checkpoint (``{"model": state_dict}``) into ``model``."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise LookoutError(f"cannot read checkpoint {path}: {exc}") from exc
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensors of other shapes: another architecture
        first = str(exc).strip().splitlines()
        raise LookoutError(
            f"{path} does not fit this architecture: {first[-1].strip() if first else exc}"
        ) from exc
    if missing or unexpected:
        raise LookoutError(
            f"{path} does not fit this architecture: "
            f"{len(missing)} missing, {len(unexpected)} unexpected keys"
        )
