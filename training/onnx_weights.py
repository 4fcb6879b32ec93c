"""Import a BN-folded YOLOX ONNX file's weights into the PyTorch model.

YOLOX's exporter folds every BatchNorm into the convolution before it: the ONNX Conv carries
``W' = W * g / sqrt(var + eps)`` and ``b' = beta - mean * g / sqrt(var + eps)``. The folded pair is all
that is left, and ``W'`` alone is badly conditioned for training: the stem sees raw 0-255 pixels, so its
folded weights are tiny and their gradients huge (one SGD step at lr 1e-3 wrecks the model). So we
un-fold on purpose: per output channel c we pick ``s_c = |W'_c| / sqrt(2)`` (a He-scale weight norm),
store ``W_c = W'_c / s_c`` in the convolution and put ``s_c`` back into the BatchNorm as a frozen
statistic (``1 / sqrt(var + eps) = s_c``, mean 0, weight 1, bias b'). The module computes exactly what
the file did, and every convolution trains at the scale it was trained at (docs/training.md).

Convolutions are matched by execution order: the exporter traced the same Python code, so the ONNX
graph lists its Conv nodes in the order the modules run. Every shape is checked, and
``verify_against_onnx`` compares outputs on real images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from wire.errors import LookoutError


class WeightImportError(LookoutError):
    """The ONNX file does not fit the chosen architecture."""


def conv_execution_order(model: nn.Module, size: int) -> list[str]:
    """Names of the model's Conv2d modules in the order one forward pass runs them."""
    order: list[str] = []
    hooks = [
        module.register_forward_hook(lambda _m, _i, _o, name=name: order.append(name))
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return order


def _batchnorm_after(model: nn.Module, conv_name: str) -> nn.BatchNorm2d | None:
    """The BatchNorm that YOLOX's BaseConv applies after ``conv_name`` (``x.conv`` -> ``x.bn``)."""
    if not conv_name.endswith(".conv"):
        return None
    modules = dict(model.named_modules())
    bn = modules.get(conv_name[: -len(".conv")] + ".bn")
    return bn if isinstance(bn, nn.BatchNorm2d) else None


def _unfold(conv: nn.Conv2d, bn: nn.BatchNorm2d, folded: np.ndarray, bias: np.ndarray) -> None:
    """Split a folded conv back into a He-scale weight and a frozen BatchNorm scale (exact in eval)."""
    flat = folded.reshape(folded.shape[0], -1).astype(np.float64)
    scale = np.linalg.norm(flat, axis=1) / np.sqrt(2.0)
    scale = np.where(scale > 0, scale, 1.0)
    var = 1.0 / scale**2 - bn.eps
    # sqrt(var + eps) must equal 1 / scale; where that needs var <= 0, carry the rest in the BN weight.
    gamma = np.where(var > 0, 1.0, scale)
    var = np.where(var > 0, var, 1.0 - bn.eps)
    conv.weight.copy_(torch.from_numpy((flat / scale[:, None]).reshape(folded.shape).astype(np.float32)))
    bn.running_mean.zero_()  # type: ignore[union-attr]
    bn.running_var.copy_(torch.from_numpy(var.astype(np.float32)))  # type: ignore[union-attr]
    bn.weight.copy_(torch.from_numpy(gamma.astype(np.float32)))
    bn.bias.copy_(torch.from_numpy(bias.astype(np.float32)))


def import_onnx_weights(model: nn.Module, onnx_path: Path, size: int = 416) -> int:
    """Copy the weights of ``onnx_path`` into ``model``; returns how many convolutions were set."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(onnx_path)).graph
    except Exception as exc:
        raise WeightImportError(f"cannot read ONNX file {onnx_path}: {exc}") from exc
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    onnx_convs = [node for node in graph.node if node.op_type == "Conv"]
    order = conv_execution_order(model, size)
    if len(order) != len(onnx_convs):
        raise WeightImportError(
            f"{onnx_path.name} has {len(onnx_convs)} convolutions, the model has {len(order)}: "
            "pick the matching --arch"
        )
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, node in zip(order, onnx_convs, strict=True):
            conv = modules[name]
            assert isinstance(conv, nn.Conv2d)
            weight = initializers.get(node.input[1])
            if weight is None or tuple(weight.shape) != tuple(conv.weight.shape):
                shape = None if weight is None else tuple(weight.shape)
                raise WeightImportError(
                    f"{name}: ONNX weight {shape} does not fit {tuple(conv.weight.shape)}"
                )
            bias = (
                initializers[node.input[2]] if len(node.input) > 2 else np.zeros(weight.shape[0], np.float32)
            )
            bn = _batchnorm_after(model, name)
            if bn is not None:
                _unfold(conv, bn, weight, bias)
            elif conv.bias is not None:
                conv.weight.copy_(torch.from_numpy(weight.copy()))
                conv.bias.copy_(torch.from_numpy(bias.copy()))
            else:
                raise WeightImportError(
                    f"{name}: the ONNX conv has a bias but the module has neither bias nor BN"
                )
    return len(order)
