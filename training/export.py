"""ONNX export in the layout the workers load, and the check that the file matches PyTorch."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.model import INPUT_SIZE, raw_head
from wire.errors import LookoutError


class ExportCheckError(LookoutError):
    """The exported file does not run in ONNX Runtime or does not match the PyTorch model."""


def export_onnx(model: nn.Module, path: Path, size: int = INPUT_SIZE) -> None:
    """Write ``images`` [1,3,size,size] -> ``output`` [1,anchors,5+classes] (raw head, no decode).

    Written to a temporary name and renamed, so that a reader never sees half a file.
    """
    export = raw_head(copy.deepcopy(model)).eval()
    tmp = path.with_name(path.name + ".tmp")
    with torch.no_grad():
        torch.onnx.export(
            export,
            (torch.zeros(1, 3, size, size),),
            str(tmp),
            input_names=["images"],
            output_names=["output"],
            opset_version=11,
            dynamo=False,  # the TorchScript exporter: one self-contained file, no onnxscript needed
        )
    os.replace(tmp, path)


def check_export(model: nn.Module, path: Path, inputs: np.ndarray, tolerance: float = 1e-3) -> float:
    """Run ``path`` in ONNX Runtime on ``inputs`` [N,3,H,W] one by one; return the largest difference.

    The difference is ``|onnx - torch| / (1 + |torch|)``: absolute for the scores (0-1), relative for the
    raw box logits, which reach the hundreds on odd inputs and differ in float32 rounding there.
    """
    import onnxruntime as ort

    reference = raw_head(copy.deepcopy(model)).eval()
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportCheckError(f"ONNX Runtime cannot load {path}: {exc}") from exc
    worst = 0.0
    for image in inputs:
        batch = np.ascontiguousarray(image[None], dtype=np.float32)
        got = session.run(["output"], {"images": batch})[0]
        with torch.no_grad():
            want = reference(torch.from_numpy(batch)).numpy()
        if got.shape != want.shape:
            raise ExportCheckError(f"{path}: output shape {got.shape}, PyTorch gives {want.shape}")
        worst = max(worst, float((np.abs(got - want) / (1.0 + np.abs(want))).max()))
    if worst > tolerance:
        raise ExportCheckError(
            f"{path}: ONNX Runtime differs from PyTorch by {worst:.2e} (> {tolerance:.0e})"
        )
    return worst
