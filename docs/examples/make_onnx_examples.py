"""Write the example ONNX models of docs/examples/model_repository (served by nereid-onnxruntime).

- ``simple_onnx``: Triton's ``simple`` model as ONNX: INPUT0, INPUT1 INT32 [16] ->
  OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, ``max_batch_size`` 8, with a
  ``config.pbtxt``.
- ``identity_string_onnx``: an ONNX string Identity (INPUT0 -> OUTPUT0, BYTES) with no
  ``config.pbtxt``: auto-complete fills it in (``max_batch_size`` 4, dynamic batching when the
  dynamic batcher is installed, two CPU instances).

The .onnx files are committed; run this again (``pip install onnx``) only to change them:

    python docs/examples/make_onnx_examples.py
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

REPOSITORY = Path(__file__).resolve().parent / "model_repository"

# The simple model's interface and instances, in its ONNX config here and in its OpenVINO config
# (make_openvino_examples.py converts the same graph).
SIMPLE_BODY = """\
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

SIMPLE_CONFIG = (
    """\
# Triton's "simple" model as ONNX (made by docs/examples/make_onnx_examples.py), served by the
# nereid-onnxruntime plugin: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1.
platform: "onnxruntime_onnx"
"""
    + SIMPLE_BODY
)


def save(model: onnx.ModelProto, path: Path) -> None:
    """Check ``model`` and write it to ``path``, loadable by older runtimes."""
    model.ir_version = 8  # loadable by onnxruntime 1.14 and later
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def simple() -> onnx.ModelProto:
    def io(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", 16])

    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "simple",
        [io("INPUT0"), io("INPUT1")],
        [io("OUTPUT0"), io("OUTPUT1")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def identity_string() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        "identity_string",
        [helper.make_tensor_value_info("INPUT0", TensorProto.STRING, ["batch", "n"])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.STRING, ["batch", "n"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    save(simple(), REPOSITORY / "simple_onnx" / "1" / "model.onnx")
    (REPOSITORY / "simple_onnx" / "config.pbtxt").write_text(SIMPLE_CONFIG)
    save(identity_string(), REPOSITORY / "identity_string_onnx" / "1" / "model.onnx")
    for name in ("simple_onnx", "identity_string_onnx"):
        size = (REPOSITORY / name / "1" / "model.onnx").stat().st_size
        print(f"wrote {REPOSITORY / name} (model.onnx: {size} bytes)")


if __name__ == "__main__":
    main()
