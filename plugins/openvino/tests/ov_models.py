"""Test models: ONNX graphs made with ``onnx.helper``, and their OpenVINO IR made in the test
with ``openvino.save_model(openvino.convert_model(onnx_path), xml_path)``."""

from __future__ import annotations

import functools
import itertools
import tempfile
from pathlib import Path

import numpy as np
import onnx
import openvino as ov
from onnx import TensorProto, helper, numpy_helper

MLP_SIZES = (16, 32, 8)


def mlp_weights(sizes=MLP_SIZES, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
            (rng.standard_normal(b) * 0.1).astype(np.float32),
        )
        for a, b in itertools.pairwise(sizes)
    ]


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def mlp_onnx(path: Path, sizes=MLP_SIZES, seed: int = 0, batch: int | str = "N") -> Path:
    """MatMul + Add (+ Relu between layers): X [batch, sizes[0]] FP32 -> Y [batch, sizes[-1]]."""
    nodes, inits, current = [], [], "X"
    weights = mlp_weights(sizes, seed)
    for index, (w, b) in enumerate(weights):
        inits += [numpy_helper.from_array(w, f"W{index}"), numpy_helper.from_array(b, f"B{index}")]
        nodes.append(helper.make_node("MatMul", [current, f"W{index}"], [f"mm{index}"]))
        out = "Y" if index == len(weights) - 1 else f"add{index}"
        nodes.append(helper.make_node("Add", [f"mm{index}", f"B{index}"], [out]))
        if out != "Y":
            nodes.append(helper.make_node("Relu", [out], [f"relu{index}"]))
            current = f"relu{index}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [batch, sizes[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [batch, sizes[-1]])],
        initializer=inits,
    )
    return _save(graph, path)


def mlp_reference(x: np.ndarray, sizes=MLP_SIZES, seed: int = 0) -> np.ndarray:
    weights = mlp_weights(sizes, seed)
    for index, (w, b) in enumerate(weights):
        x = x @ w + b
        if index < len(weights) - 1:
            x = np.maximum(x, 0)
    return x


def add_sub_onnx(path: Path, batch: int | str = "N") -> Path:
    """Triton's ``simple``: INPUT0, INPUT1 INT32 [batch, 16] -> OUTPUT0 = sum, OUTPUT1 = diff."""

    def io(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.INT32, [batch, 16])

    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "simple",
        [io("INPUT0"), io("INPUT1")],
        [io("OUTPUT0"), io("OUTPUT1")],
    )
    return _save(graph, path)


def to_ir(onnx_path: Path, xml_path: Path) -> Path:
    """``model.xml`` + ``model.bin`` converted from ``onnx_path``; FP32 weights are kept FP32
    (``save_model`` compresses them to FP16 by default, which changes the answers a little)."""
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path


def version_files(folder: Path) -> dict[str, bytes]:
    """A folder's files as the ``versions`` mapping ``ModelRepositoryBuilder.add`` takes."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@functools.cache
def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="nereid-openvino-tests-"))


@functools.cache
def mlp_files(*, ir: bool = True, batch: int | str = "N") -> dict[str, bytes]:
    """The MLP's version files: ``model.xml`` + ``model.bin`` converted in the test (once per
    test session: a conversion takes about half a second), or ``model.onnx``."""
    tmp = _workdir()
    onnx_path = mlp_onnx(tmp / "src" / f"mlp_{batch}.onnx", batch=batch)
    if not ir:
        return {"model.onnx": onnx_path.read_bytes()}
    out = tmp / f"ir_mlp_{batch}"
    to_ir(onnx_path, out / "model.xml")
    return version_files(out)


@functools.cache
def add_sub_files() -> dict[str, bytes]:
    tmp = _workdir()
    out = tmp / "ir_add_sub"
    to_ir(add_sub_onnx(tmp / "src" / "add_sub.onnx"), out / "model.xml")
    return version_files(out)


MLP_CONFIG = f"""
backend: "openvino"
max_batch_size: 8
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ {MLP_SIZES[0]} ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ {MLP_SIZES[-1]} ] }} ]
instance_group [ {{ kind: KIND_CPU count: 2 }} ]
"""

MLP_ONNX_CONFIG = MLP_CONFIG + 'default_model_filename: "model.onnx"\n'
