"""Small ONNX graphs whose outputs are known tensors, to check decode, NMS and box scaling exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save(graph: onnx.GraphProto, path: Path, metadata: dict[str, str] | None = None) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def constant_output_model(
    path: Path,
    output: np.ndarray,
    *,
    input_hw: tuple[int, int] = (64, 64),
    metadata: dict[str, str] | None = None,
) -> Path:
    """Input images [1,3,H,W]; output = the given tensor, whatever the input (input x 0 keeps it used)."""
    const = numpy_helper.from_array(output.astype(np.float32), "table")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    nodes = [
        helper.make_node("ReduceSum", ["images"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["table", "nothing"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *input_hw])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(output.shape))],
        initializer=[const, zero],
    )
    return save(graph, path, metadata)


def dynamic_batch_model(
    path: Path, table: np.ndarray, *, input_hw: tuple[int, int] = (64, 64), batch: int | str = "batch"
) -> Path:
    """Input [batch,3,H,W]; output [batch,N,C] = table + mean(image) in column 4 (obj) of row 0.

    Each image in a batch gets its own objectness, so a batched run is told apart from a repeated one.
    """
    rows, cols = table.shape
    mask = np.zeros((1, rows, cols), np.float32)
    mask[0, 0, 4] = 1.0
    inits = [
        numpy_helper.from_array(table[None].astype(np.float32), "table"),
        numpy_helper.from_array(mask, "mask"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),  # [B,1,1,1]
        helper.make_node("Squeeze", ["mean", "axis3"], ["mean3"]),  # [B,1,1]
        helper.make_node("Mul", ["mean3", "mask"], ["bump"]),  # [B,N,C]
        helper.make_node("Add", ["table", "bump"], ["output"]),
    ]
    inits.append(numpy_helper.from_array(np.array([3], np.int64), "axis3"))
    graph = helper.make_graph(
        nodes,
        "dynamic",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, *input_hw])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, rows, cols])],
        initializer=inits,
    )
    return save(graph, path)
