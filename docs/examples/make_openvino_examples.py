"""Write the example OpenVINO model of docs/examples/model_repository (served by
nereid-openvino).

- ``simple_openvino``: Triton's ``simple`` model as OpenVINO IR (``model.xml`` + ``model.bin``):
  INPUT0, INPUT1 INT32 [16] -> OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1,
  ``max_batch_size`` 8, with a ``config.pbtxt``. The graph is ``simple_onnx``'s (built by
  make_onnx_examples.py), converted with ``openvino.convert_model`` as any ONNX model would be.

The IR files are committed; run this again (``pip install onnx openvino``) only to change them:

    python docs/examples/make_openvino_examples.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import openvino as ov
from make_onnx_examples import REPOSITORY, SIMPLE_BODY, save, simple

SIMPLE_CONFIG = (
    """\
# Triton's "simple" model as OpenVINO IR (made by docs/examples/make_openvino_examples.py),
# served by the nereid-openvino plugin: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1.
backend: "openvino"
"""
    + SIMPLE_BODY
    + 'parameters { key: "PERFORMANCE_HINT" value: { string_value: "LATENCY" } }\n'
)


def main() -> None:
    folder = REPOSITORY / "simple_openvino"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "simple.onnx"
        save(simple(), onnx_path)
        ov.save_model(ov.convert_model(str(onnx_path)), str(folder / "1" / "model.xml"))
    (folder / "config.pbtxt").write_text(SIMPLE_CONFIG)
    for name in ("model.xml", "model.bin"):
        print(f"wrote {folder / '1' / name} ({(folder / '1' / name).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
