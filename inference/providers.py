"""Execution backends: ONNX Runtime with the best provider installed (TensorRT, CUDA, CPU), or PyTorch.

``provider`` is one of ``auto`` (TensorRT, then CUDA, then CPU: whichever the installed onnxruntime
offers), ``tensorrt``, ``cuda``, ``cpu``, or ``torch`` (the same ONNX graph imported into PyTorch with
onnx2torch, for a GPU host that has torch but not onnxruntime-gpu; it runs on CUDA when available).
Thread counts are always set explicitly: left at 0, ONNX Runtime pins one thread per core, and two
workers on one host then fight over the same cores (measured: two such workers gave 41 results/s
against 52 for one alone; with one explicit thread each, 70/s).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from inference.errors import ModelLoadError, ProviderError
from inference.formats import Dim

log = logging.getLogger(__name__)

PROVIDERS = ("auto", "tensorrt", "cuda", "cpu", "torch")
ORT_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
PREFERENCE = ("tensorrt", "cuda", "cpu")


@dataclass
class GraphInfo:
    """What the detector needs to know about the graph, read from whichever backend loaded it."""

    input_name: str
    input_shape: list[Dim]
    output_shapes: list[list[Dim]]
    metadata: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    graph: GraphInfo
    provider: str
    """The execution provider actually running, e.g. CPUExecutionProvider, or torch:cuda."""

    def run(self, batch: NDArray[np.float32]) -> list[NDArray[np.float32]]: ...


def ort_providers(requested: str, available: Sequence[str]) -> list[str]:
    """The ORT provider list for ``requested``; the best first, CPU always last as the fallback."""
    if requested not in PROVIDERS or requested == "torch":
        raise ProviderError(
            f"unknown ONNX Runtime provider {requested!r}; choose one of {', '.join(PROVIDERS)}"
        )
    if requested == "auto":
        return [ORT_NAMES[p] for p in PREFERENCE if ORT_NAMES[p] in available]
    name = ORT_NAMES[requested]
    if name not in available:
        raise ProviderError(
            f"execution provider {requested} ({name}) is not in this onnxruntime; it offers "
            f"{', '.join(available)} (install onnxruntime-gpu for CUDA/TensorRT, or use --provider torch)"
        )
    return [name] if name == ORT_NAMES["cpu"] else [name, ORT_NAMES["cpu"]]


class OrtBackend:
    """An ONNX Runtime session with explicit thread counts and sequential execution."""

    def __init__(self, path: Path, *, threads: int, provider: str, inter_threads: int = 1) -> None:
        import onnxruntime as ort

        providers = ort_providers(provider, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = inter_threads  # only used by parallel execution; set anyway
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # ORT's own warnings go to stderr unformatted; keep errors only
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...)
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"{path}: not a loadable ONNX model ({reason})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"{path}: expected one image input, the graph has {len(inputs)}")
        self.graph = GraphInfo(
            input_name=inputs[0].name,
            input_shape=list(inputs[0].shape),
            output_shapes=[list(o.shape) for o in outputs],
            metadata=dict(self.session.get_modelmeta().custom_metadata_map),
        )
        self.provider = self.session.get_providers()[0]

    def run(self, batch: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        outputs: list[NDArray[np.float32]] = self.session.run(None, {self.graph.input_name: batch})
        return outputs


def _onnx_dims(value_info: Any) -> list[Dim]:
    dims: list[Dim] = []
    for dim in value_info.type.tensor_type.shape.dim:
        dims.append(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None))
    return dims


class TorchBackend:
    """The ONNX graph converted to a torch.fx module by onnx2torch; runs on CUDA when torch sees one."""

    def __init__(self, path: Path, *, threads: int, device: str | None = None) -> None:
        try:
            import onnx
            import torch
            from onnx2torch import convert
        except ImportError as exc:
            raise ProviderError(
                f"provider torch needs torch and onnx2torch ({exc.name} is missing): "
                "pip install 'lookout[train]'"
            ) from None
        try:
            proto = onnx.load(str(path))
        except Exception as exc:
            raise ModelLoadError(f"{path}: not a loadable ONNX model ({type(exc).__name__})") from None
        initializers = {i.name for i in proto.graph.initializer}
        inputs = [i for i in proto.graph.input if i.name not in initializers]
        if len(inputs) != 1:
            raise ModelLoadError(f"{path}: expected one image input, the graph has {len(inputs)}")
        self.graph = GraphInfo(
            input_name=inputs[0].name,
            input_shape=_onnx_dims(inputs[0]),
            output_shapes=[_onnx_dims(o) for o in proto.graph.output],
            metadata={p.key: p.value for p in proto.metadata_props},
        )
        try:
            module = convert(proto)
        except Exception as exc:
            raise ModelLoadError(f"{path}: onnx2torch cannot convert this graph ({exc})") from None
        # onnx2torch's Slice indexes with a list, which torch warns about on every call; harmless here.
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
        self.module = module.eval().to(self.device)
        self.provider = f"torch:{self.device.type}"
        self._torch = torch

    def run(self, batch: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        torch = self._torch
        with torch.inference_mode():
            result = self.module(torch.from_numpy(batch).to(self.device))
        tensors = result if isinstance(result, list | tuple) else [result]
        return [t.detach().float().cpu().numpy() for t in tensors]


def open_backend(path: Path, *, threads: int, provider: str, inter_threads: int = 1) -> Backend:
    if provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    if threads < 1 or inter_threads < 1:
        raise ProviderError(
            f"thread counts must be at least 1, got {threads} intra-op, {inter_threads} inter-op"
        )
    if provider == "torch":
        return TorchBackend(path, threads=threads)
    return OrtBackend(path, threads=threads, provider=provider, inter_threads=inter_threads)
