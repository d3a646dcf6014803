"""Write the example OpenVINO model of docs/examples/model_repository (served by
nereid-openvino).

- ``simple_openvino``: Triton's ``simple`` model as OpenVINO IR (``model.xml`` + ``model.bin``):
  INPUT0, INPUT1 INT32 [16] -> OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1,
  ``max_batch_size`` 8, with a ``config.pbtxt``. The graph is built with ``onnx.helper`` and
  converted with ``openvino.convert_model``, as any ONNX model would be.

The IR files are committed; run this again (``pip install onnx openvino``) only to change them:

    python docs/examples/make_openvino_examples.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import openvino as ov
from onnx import TensorProto, helper

REPOSITORY = Path(__file__).resolve().parent / "model_repository"

SIMPLE_CONFIG = """\
# Triton's "simple" model as OpenVINO IR (made by docs/examples/make_openvino_examples.py),
# served by the nereid-openvino plugin: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1.
backend: "openvino"
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
parameters { key: "PERFORMANCE_HINT" value: { string_value: "LATENCY" } }
"""


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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    folder = REPOSITORY / "simple_openvino"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "simple.onnx"
        onnx.save_model(simple(), str(onnx_path))
        ov.save_model(ov.convert_model(str(onnx_path)), str(folder / "1" / "model.xml"))
    (folder / "config.pbtxt").write_text(SIMPLE_CONFIG)
    for name in ("model.xml", "model.bin"):
        print(f"wrote {folder / '1' / name} ({(folder / '1' / name).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
