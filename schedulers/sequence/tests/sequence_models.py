"""Models for the end-to-end tests: ONNX graphs built with ``onnx.helper`` and Triton Python
backend ``model.py`` sources, with their configurations.

- ``simple_sequence`` (ONNX): what Triton's example of that name answers, as its client examples
  check: ``OUTPUT = (INPUT + START) * READY`` (INT32, controls START and READY).
- ``simple_dyna_sequence`` (Python, ``oldest``): ``OUTPUT = INPUT + START + END * CORRID``, as
  the client examples expect of the model of that name; with ``ACCUMULATE`` set (the
  ``simple_string_dyna_sequence`` variant, STRING CORRID), an accumulator kept in the model per
  correlation id: ``acc = INPUT`` on START, ``acc += INPUT`` after, and ``OUTPUT = acc + END *
  CORRID``.
- ``accumulator`` (ONNX, implicit state): ``ACC_OUT = ACC_IN + INPUT``, ``OUTPUT = ACC_OUT``; the
  ``START`` variant resets without an initial state: ``ACC_OUT = START ? INPUT : ACC_IN + INPUT``
  (Triton's ``create_onnx_modelfile_wo_initial_state``).
"""

from __future__ import annotations

SIMPLE_SEQUENCE_CONFIG = """
backend: "onnxruntime"
max_batch_size: 8
sequence_batching {
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] }
  ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

DYNA_CONFIG = """
backend: "python"
max_batch_size: 8
sequence_batching {
  max_sequence_idle_microseconds: 10000000
  oldest { max_candidate_sequences: 16 max_queue_delay_microseconds: 1000 }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: %(corrid)s } ] }
  ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 2 } ]
%(extra)s
"""

DYNA_MODEL = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.accumulate = "ACCUMULATE" in config.get("parameters", {})
        self.acc = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            def value(name):
                return pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)[0]

            x, start, end = int(value("INPUT")), int(value("START")), int(value("END"))
            corrid = value("CORRID")
            corrid = int(corrid.decode() if isinstance(corrid, bytes) else corrid)
            assert int(value("READY")) == 1
            assert request.correlation_id() in (corrid, str(corrid))
            if self.accumulate:
                acc = x if start else self.acc.get(corrid, 0) + x
                self.acc[corrid] = acc
                out = acc + (corrid if end else 0)
            else:
                out = x + start + (corrid if end else 0)
            tensor = pb_utils.Tensor("OUTPUT", np.array([[out]], np.int32))
            responses.append(pb_utils.InferenceResponse([tensor]))
        return responses
"""

# A decoupled accumulator with implicit state: two responses per request (acc, then acc * 10),
# the state in the first.
DECOUPLED_CONFIG = """
backend: "python"
max_batch_size: 4
model_transaction_policy { decoupled: true }
sequence_batching {
  direct { }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START bool_false_true: [ false, true ] } ] }
  ]
  state [ { input_name: "ACC_IN" output_name: "ACC_OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

DECOUPLED_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            start = pb_utils.get_input_tensor_by_name(request, "START").as_numpy()
            state = pb_utils.get_input_tensor_by_name(request, "ACC_IN").as_numpy()
            acc = np.where(start, x, state + x).astype(np.int32)
            sender.send(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT", acc), pb_utils.Tensor("ACC_OUT", acc),
            ]))
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", acc * 10)]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""

# An accumulator with implicit state in the Python backend.
PYTHON_STATE_CONFIG = """
backend: "python"
max_batch_size: 4
sequence_batching {
  state [ { input_name: "ACC_IN" output_name: "ACC_OUT" data_type: TYPE_INT32 dims: [ 1 ]
            initial_state { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true name: "zero" } } ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

PYTHON_STATE_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            state = pb_utils.get_input_tensor_by_name(request, "ACC_IN").as_numpy()
            acc = state + x
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT", acc), pb_utils.Tensor("ACC_OUT", acc),
            ]))
        return responses
"""

ACCUMULATOR_CONFIG = """
backend: "onnxruntime"
max_batch_size: 4
sequence_batching {
  %(strategy)s
  %(controls)s
  state [ { input_name: "ACC_IN" output_name: "ACC_OUT" data_type: TYPE_INT32 dims: [ 1 ]
            %(initial)s } ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } %(outputs)s ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""
ZERO_INITIAL = 'initial_state { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true name: "zero" }'
START_CONTROL = (
    'control_input [ { name: "START" control [ { kind: CONTROL_SEQUENCE_START '
    "int32_false_true: [ 0, 1 ] } ] } ]"
)


def accumulator_config(
    *, strategy: str = "direct { }", start: bool = False, debug_output: bool = False
) -> str:
    return ACCUMULATOR_CONFIG % {
        "strategy": strategy,
        "controls": START_CONTROL if start else "",
        "initial": "" if start else ZERO_INITIAL,
        "outputs": ', { name: "ACC_OUT" data_type: TYPE_INT32 dims: [ 1 ] }'
        if debug_output
        else "",
    }


# -- ONNX graphs -----------------------------------------------------------------------------------


def _model(nodes, inputs, outputs) -> bytes:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "sequence", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _int32(name: str):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.INT32, ["N", 1])


def simple_sequence_onnx() -> bytes:
    """``OUTPUT = (INPUT + START) * READY``."""
    from onnx import helper

    return _model(
        [
            helper.make_node("Add", ["INPUT", "START"], ["sum"]),
            helper.make_node("Mul", ["sum", "READY"], ["OUTPUT"]),
        ],
        [_int32("INPUT"), _int32("START"), _int32("READY")],
        [_int32("OUTPUT")],
    )


def accumulator_onnx(start: bool = False) -> bytes:
    """``ACC_OUT = ACC_IN + INPUT`` (or ``INPUT`` where ``START``), ``OUTPUT = ACC_OUT``."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Add", ["ACC_IN", "INPUT"], ["sum"])]
    inputs = [_int32("INPUT"), _int32("ACC_IN")]
    if start:
        nodes += [
            helper.make_node("Cast", ["START"], ["starting"], to=TensorProto.BOOL),
            helper.make_node("Where", ["starting", "INPUT", "sum"], ["ACC_OUT"]),
        ]
        inputs.append(_int32("START"))
    else:
        nodes.append(helper.make_node("Identity", ["sum"], ["ACC_OUT"]))
    nodes.append(helper.make_node("Identity", ["ACC_OUT"], ["OUTPUT"]))
    return _model(nodes, inputs, [_int32("OUTPUT"), _int32("ACC_OUT")])


DYNA_ONNX_CONFIG = """
backend: "onnxruntime"
max_batch_size: 8
sequence_batching {
  oldest { max_candidate_sequences: 8 max_queue_delay_microseconds: 1000 }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 2 } ]
"""


def dyna_sequence_onnx() -> bytes:
    """``OUTPUT = INPUT + START + END * CORRID`` (CORRID UINT64, cast to INT32)."""
    from onnx import TensorProto, helper

    return _model(
        [
            helper.make_node("Cast", ["CORRID"], ["corrid"], to=TensorProto.INT32),
            helper.make_node("Mul", ["END", "corrid"], ["ending"]),
            helper.make_node("Add", ["INPUT", "START"], ["started"]),
            helper.make_node("Add", ["started", "ending"], ["OUTPUT"]),
        ],
        [
            _int32("INPUT"),
            _int32("START"),
            _int32("END"),
            helper.make_tensor_value_info("CORRID", TensorProto.UINT64, ["N", 1]),
        ],
        [_int32("OUTPUT")],
    )
