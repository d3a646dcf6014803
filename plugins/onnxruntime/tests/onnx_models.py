"""Real ONNX models for the tests, built with ``onnx.helper`` (small enough to build per test)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # loadable by every onnxruntime from 1.14 on

T = TensorProto


def _model(nodes, inputs, outputs, initializers=(), name="model") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _io(name: str, elem_type: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def add_sub(elem_type: int = T.INT32, shape=("N", 16)) -> bytes:
    """Triton's ``simple``: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."""
    return _model(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        [_io("INPUT0", elem_type, shape), _io("INPUT1", elem_type, shape)],
        [_io("OUTPUT0", elem_type, shape), _io("OUTPUT1", elem_type, shape)],
    ).SerializeToString()


def identity(elem_type: int, shape=("N", "D"), name_in="INPUT0", name_out="OUTPUT0") -> bytes:
    return _model(
        [helper.make_node("Identity", [name_in], [name_out])],
        [_io(name_in, elem_type, shape)],
        [_io(name_out, elem_type, shape)],
    ).SerializeToString()


def int8_neg(shape=("N", 4)) -> bytes:
    """INT8: OUTPUT0 = -INPUT0, OUTPUT1 = INPUT0."""
    return _model(
        [
            helper.make_node("Neg", ["INPUT0"], ["OUTPUT0"]),
            helper.make_node("Identity", ["INPUT0"], ["OUTPUT1"]),
        ],
        [_io("INPUT0", T.INT8, shape)],
        [_io("OUTPUT0", T.INT8, shape), _io("OUTPUT1", T.INT8, shape)],
    ).SerializeToString()


def bf16_model() -> bytes:
    """BF16 both ways: ``Y = Identity(X)`` (BF16), ``F = Cast(X -> FP32)``,
    ``B = Cast(F32IN -> BF16)``."""
    return _model(
        [
            helper.make_node("Identity", ["X"], ["Y"]),
            helper.make_node("Cast", ["X"], ["F"], to=T.FLOAT),
            helper.make_node("Cast", ["F32IN"], ["B"], to=T.BFLOAT16),
        ],
        [_io("X", T.BFLOAT16, ["N", 3]), _io("F32IN", T.FLOAT, ["N", 3])],
        [
            _io("Y", T.BFLOAT16, ["N", 3]),
            _io("F", T.FLOAT, ["N", 3]),
            _io("B", T.BFLOAT16, ["N", 3]),
        ],
    ).SerializeToString()


def mlp_weights(sizes, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
            (rng.standard_normal(b) * 0.1).astype(np.float32),
        )
        for a, b in itertools.pairwise(sizes)
    ]


def mlp_model(sizes=(8, 16, 4), seed: int = 0) -> onnx.ModelProto:
    """MatMul + Add (+ Relu between layers) with random weights; input X [N, sizes[0]] FP32,
    output Y [N, sizes[-1]]."""
    nodes, inits = [], []
    current = "X"
    weights = mlp_weights(sizes, seed)
    for index, (w, b) in enumerate(weights):
        inits += [numpy_helper.from_array(w, f"W{index}"), numpy_helper.from_array(b, f"B{index}")]
        nodes.append(helper.make_node("MatMul", [current, f"W{index}"], [f"mm{index}"]))
        last = index == len(weights) - 1
        added = "Y" if last else f"add{index}"
        nodes.append(helper.make_node("Add", [f"mm{index}", f"B{index}"], [added]))
        if not last:
            nodes.append(helper.make_node("Relu", [added], [f"relu{index}"]))
            current = f"relu{index}"
    return _model(
        nodes,
        [_io("X", T.FLOAT, ["N", sizes[0]])],
        [_io("Y", T.FLOAT, ["N", sizes[-1]])],
        inits,
    )


def mlp_reference(x: np.ndarray, sizes=(8, 16, 4), seed: int = 0) -> np.ndarray:
    weights = mlp_weights(sizes, seed)
    for index, (w, b) in enumerate(weights):
        x = x @ w + b
        if index < len(weights) - 1:
            x = np.maximum(x, 0)
    return x


def save_with_external_data(model: onnx.ModelProto, folder: Path) -> None:
    """``folder/model.onnx`` with its weights in ``folder/weights.bin`` (Triton's folder form)."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )


def with_default_input() -> bytes:
    """``Y = X + B`` where ``B`` [N, 2] is an input with an initializer (default [[10, 10]],
    broadcast over the batch): an optional input."""
    return _model(
        [helper.make_node("Add", ["X", "B"], ["Y"])],
        [_io("X", T.FLOAT, ["N", 2]), _io("B", T.FLOAT, ["N", 2])],
        [_io("Y", T.FLOAT, ["N", 2])],
        [numpy_helper.from_array(np.array([[10, 10]], np.float32), "B")],
    ).SerializeToString()


def scalar_double() -> bytes:
    """Non-batching, scalar in and out: ``Y = X * 2`` (FP32 [])."""
    two = numpy_helper.from_array(np.array(2, np.float32), "two")
    return _model(
        [helper.make_node("Mul", ["X", "two"], ["Y"])],
        [_io("X", T.FLOAT, [])],
        [_io("Y", T.FLOAT, [])],
        [two],
    ).SerializeToString()


def batch_scalar_double() -> bytes:
    """Batching with a scalar per item: X [N] -> Y [N] = X * 2 (auto-completes to dims [1] with
    an empty reshape)."""
    two = numpy_helper.from_array(np.array(2, np.float32), "two")
    return _model(
        [helper.make_node("Mul", ["X", "two"], ["Y"])],
        [_io("X", T.FLOAT, ["N"])],
        [_io("Y", T.FLOAT, ["N"])],
        [two],
    ).SerializeToString()


# Every datatype ONNX and Triton share: (Triton name, ONNX element type, numpy dtype).
ALL_TYPES = [
    ("BOOL", T.BOOL, np.bool_),
    ("UINT8", T.UINT8, np.uint8),
    ("UINT16", T.UINT16, np.uint16),
    ("UINT32", T.UINT32, np.uint32),
    ("UINT64", T.UINT64, np.uint64),
    ("INT8", T.INT8, np.int8),
    ("INT16", T.INT16, np.int16),
    ("INT32", T.INT32, np.int32),
    ("INT64", T.INT64, np.int64),
    ("FP16", T.FLOAT16, np.float16),
    ("FP32", T.FLOAT, np.float32),
    ("FP64", T.DOUBLE, np.float64),
    ("BYTES", T.STRING, object),
]


def add_sub_config(
    name: str = "simple",
    datatype: str = "TYPE_INT32",
    max_batch_size: int = 8,
    extra: str = "",
    platform: bool = False,
) -> str:
    selector = 'platform: "onnxruntime_onnx"' if platform else 'backend: "onnxruntime"'
    return f"""
    name: "{name}"
    {selector}
    max_batch_size: {max_batch_size}
    input [
      {{ name: "INPUT0" data_type: {datatype} dims: [ 16 ] }},
      {{ name: "INPUT1" data_type: {datatype} dims: [ 16 ] }}
    ]
    output [
      {{ name: "OUTPUT0" data_type: {datatype} dims: [ 16 ] }},
      {{ name: "OUTPUT1" data_type: {datatype} dims: [ 16 ] }}
    ]
    {extra}
    """
