"""Execution providers: the choice, the explicit thread counts, the one log line, and the torch backend."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

from inference.detector import Detector
from inference.errors import ProviderError
from inference.providers import OrtBackend, ort_providers
from tests.support.images import imread

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
HAS_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "onnx2torch"))


def test_auto_prefers_tensorrt_then_cuda_then_cpu() -> None:
    assert ort_providers("auto", [CPU, CUDA, TRT]) == [TRT, CUDA, CPU]
    assert ort_providers("auto", [CPU, "AzureExecutionProvider"]) == [CPU]
    assert ort_providers("cuda", [CPU, CUDA]) == [CUDA, CPU]
    assert ort_providers("cpu", [CPU, CUDA]) == [CPU]


def test_unavailable_or_unknown_provider_is_a_clear_error() -> None:
    with pytest.raises(ProviderError, match=r"cuda .* is not in this onnxruntime"):
        ort_providers("cuda", [CPU])
    with pytest.raises(ProviderError, match="unknown"):
        ort_providers("vulkan", [CPU])


def test_threads_are_set_explicitly(model_path: Path) -> None:
    backend = OrtBackend(model_path, threads=2, provider="cpu")
    options = backend.session.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert backend.provider == CPU


def test_one_log_line_says_what_runs(model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        Detector.load(model_path, provider="cpu")
    lines = [r.getMessage() for r in caplog.records if "running on" in r.getMessage()]
    assert lines == [
        "model yolox_nano 695e750a5d57 (yolox, input 416x416, batch 1): "
        "running on CPUExecutionProvider with 1 intra-op thread(s)"
    ]


def test_bad_thread_count(model_path: Path) -> None:
    with pytest.raises(ProviderError, match="thread counts"):
        Detector.load(model_path, threads=0)
    with pytest.raises(ProviderError, match="thread counts"):
        Detector.load(model_path, inter_threads=0)


def test_inter_op_threads_are_configurable(model_path: Path) -> None:
    detector = Detector.load(model_path, threads=1, inter_threads=2, provider="cpu")
    options = detector.backend.session.get_session_options()  # type: ignore[attr-defined]
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 2)


@pytest.mark.skipif(not HAS_TORCH, reason="torch and onnx2torch are not installed")
def test_torch_backend_on_cpu_matches_onnxruntime(model_path: Path, images_dir: Path, nano: Detector) -> None:
    detector = Detector.load(model_path, provider="torch")
    assert detector.provider in ("torch:cpu", "torch:cuda") and detector.format == "yolox"
    image = imread(images_dir / "dog.jpg")
    found, expected = detector.detect(image), nano.detect(image)
    assert [d.label for d in found] == [d.label for d in expected]
    for a, b in zip(found, expected, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-3)
        assert a.box == pytest.approx(b.box, abs=0.5)


@pytest.mark.gpu
def test_torch_backend_on_cuda(model_path: Path, images_dir: Path) -> None:
    if not HAS_TORCH:
        pytest.skip("torch and onnx2torch are not installed")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    detector = Detector.load(model_path, provider="torch")
    assert detector.provider == "torch:cuda"
    found = detector.detect(imread(images_dir / "dog.jpg"))
    assert {d.label for d in found if d.score > 0.7} == {"dog", "bicycle", "car"}
