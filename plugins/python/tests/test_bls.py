"""BLS (``InferenceRequest.exec`` / ``async_exec``) and the model-loading API, in both modes."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from nereid.testing import REPEAT_CONFIG, SQUARE_CONFIG, make_request, wait_until
from python_backend_models import ADD_SUB_SOURCE, add_sub_config

CALLER_CONFIG = """
backend: "python"
max_batch_size: 0
input [
  { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] optional: true },
  { name: "INPUT1" data_type: TYPE_FP32 dims: [ -1 ] optional: true },
  { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] optional: true },
  { name: "DELAY" data_type: TYPE_UINT32 dims: [ -1 ] optional: true },
  { name: "WAIT" data_type: TYPE_UINT32 dims: [ 1 ] optional: true }
]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] },
  { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ -1 ] },
  { name: "OUT" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "ERROR" data_type: TYPE_STRING dims: [ 1 ] }
]
"""

# The caller forwards its inputs to the model named by the request parameter "target" and
# answers with the target's outputs (decoupled: the OUT of every response, concatenated), or
# the target's error as ERROR.
CALLER_SOURCE = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils


def _bls(request):
    params = json.loads(request.parameters())
    outputs = [o for o in params.get("outputs", "").split(",") if o]
    return pb_utils.InferenceRequest(
        model_name=params["target"],
        inputs=[pb_utils.Tensor(t.name(), t.as_numpy()) for t in request.inputs()],
        requested_output_names=outputs,
        correlation_id=params.get("correlation", 0),
        flags=params.get("flags", 0),
        timeout=params.get("timeout", 0),
        parameters={"tag": params.get("tag", "")},
    ), params


def _answer(response, params):
    if response.has_error():
        message = response.error().message()
        if params.get("marker"):
            with open(params["marker"], "w") as f:
                f.write(message)
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor("ERROR", np.array([message.encode()], dtype=object))]
        )
    return pb_utils.InferenceResponse(
        [pb_utils.Tensor(t.name(), t.as_numpy()) for t in response.output_tensors()]
    )


def _collect(responses, params):
    outs = []
    for response in responses:
        if response.has_error():
            return _answer(response, params)
        for t in response.output_tensors():
            if t.name() == "OUT":
                outs.append(t.as_numpy().reshape(-1))
    out = np.concatenate(outs) if outs else np.zeros(0, np.int32)
    return pb_utils.InferenceResponse([pb_utils.Tensor("OUT", out.astype(np.int32))])


class TritonPythonModel:
    EXECUTE
"""

SYNC_EXECUTE = """def execute(self, requests):
        answers = []
        for request in requests:
            bls, params = _bls(request)
            if params.get("decoupled"):
                answers.append(_collect(bls.exec(decoupled=True), params))
            else:
                answers.append(_answer(bls.exec(), params))
        return answers
"""

ASYNC_EXECUTE = """async def execute(self, requests):
        answers = []
        for request in requests:
            bls, params = _bls(request)
            if params.get("decoupled"):
                answers.append(_collect(await bls.async_exec(decoupled=True), params))
            else:
                answers.append(_answer(await bls.async_exec(), params))
        return answers
"""

ACCUMULATOR_CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] },
  { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ -1 ] }
]
"""

# A stateful model keyed by correlation id: OUTPUT0 is the running sum since the sequence
# start, OUTPUT1 the flags and the "tag" parameter's length.
ACCUMULATOR_SOURCE = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.sums = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            key = request.correlation_id()
            flags = request.flags()
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if flags & pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START or key not in self.sums:
                self.sums[key] = np.zeros_like(x)
            self.sums[key] = self.sums[key] + x
            total = self.sums[key]
            if flags & pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END:
                del self.sums[key]
            tag = json.loads(request.parameters()).get("tag", "")
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT0", total.astype(np.float32)),
                pb_utils.Tensor("OUTPUT1", np.array([flags, len(tag)], np.float32)),
            ]))
        return responses
"""


@pytest.fixture(params=["sync", "async"])
def caller(request, model_repository):
    execute = SYNC_EXECUTE if request.param == "sync" else ASYNC_EXECUTE
    source = CALLER_SOURCE.replace("EXECUTE", execute)
    model_repository.add("caller", CALLER_CONFIG, versions={1: {"model.py": source}})
    model_repository.add(
        "add_sub", add_sub_config(dims="[ -1 ]"), {1: {"model.py": ADD_SUB_SOURCE}}
    )
    model_repository.identity("identity", max_batch_size=0)
    model_repository.add("repeat", REPEAT_CONFIG)
    model_repository.add("square", SQUARE_CONFIG)
    model_repository.add("accumulator", ACCUMULATOR_CONFIG, {1: {"model.py": ACCUMULATOR_SOURCE}})
    return request.param


async def _call(server, inputs, **params):
    request = make_request("caller", inputs, parameters=params)
    return await server.api.infer(request).single()


def _repeat(values, delay_ms):
    values = np.asarray(values, np.int32)
    return {
        "IN": values,
        "DELAY": np.full(len(values), delay_ms, np.uint32),
        "WAIT": np.zeros(1, np.uint32),
    }


def _error(response) -> str:
    return response.as_numpy("ERROR")[0].decode()


async def test_bls_identity_and_add_sub(start_server, caller):
    server = await start_server()
    a = np.array([1, 2, 3], np.float32)
    b = np.array([10, 20, 30], np.float32)
    response = await _call(server, {"INPUT0": a}, target="identity")
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a)
    response = await _call(server, {"INPUT0": a, "INPUT1": b}, target="add_sub")
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), a - b)
    response = await _call(server, {"INPUT0": a, "INPUT1": b}, target="add_sub", outputs="OUTPUT1")
    assert [t.name for t in response.outputs] == ["OUTPUT1"]


async def test_bls_decoupled_targets(start_server, caller):
    server = await start_server()
    square = await _call(server, {"IN": np.array([3], np.int32)}, target="square", decoupled=True)
    assert list(square.as_numpy("OUT")) == [3, 3, 3]
    repeat = await _call(server, _repeat([5, 6, 7], 0), target="repeat", decoupled=True)
    assert list(repeat.as_numpy("OUT")) == [5, 6, 7]
    # exec() without decoupled=True on a decoupled target: an error, not an exception.
    wrong = await _call(server, {"IN": np.array([2], np.int32)}, target="square")
    assert "exec(decoupled=True)" in _error(wrong)


async def test_bls_stateful_target_with_sequence_flags(start_server, caller):
    server = await start_server()
    start, end = 1, 2
    x = np.array([1, 1], np.float32)
    sums = []
    for correlation, flags in ((7, start), (8, start), (7, 0), (7, end), (8, end)):
        response = await _call(
            server,
            {"INPUT0": x * correlation},
            target="accumulator",
            correlation=correlation,
            flags=flags,
            tag="abc",
        )
        sums.append(response.as_numpy("OUTPUT0")[0])
        assert list(response.as_numpy("OUTPUT1")) == [flags, 3]
    assert sums == [7, 8, 14, 21, 16]


async def test_bls_target_errors(start_server, caller):
    server = await start_server()
    a = np.array([1, 2], np.float32)
    missing = await _call(server, {"INPUT0": a}, target="no_such_model")
    assert "no_such_model" in _error(missing)
    invalid = await _call(server, {"INPUT0": a}, target="add_sub")  # INPUT1 missing
    assert "INPUT1" in _error(invalid)


async def test_cancelling_the_outer_request_cancels_its_bls_calls(start_server, caller, tmp_path):
    server = await start_server()
    marker = tmp_path / "marker.txt"
    values = np.arange(20, dtype=np.int32)
    request = make_request(
        "caller",
        _repeat(values, 100),
        parameters={"target": "repeat", "decoupled": True, "marker": str(marker)},
    )
    stream = server.api.infer(request)
    await asyncio.sleep(0.3)
    started = time.monotonic()
    stream.cancel()
    # The caller is executing: it ends the outer request itself, after its BLS call ended
    # cancelled.
    await stream.collect()
    await wait_until(marker.exists, timeout=1.5)  # 20 x 100 ms had it not been cancelled
    assert time.monotonic() - started < 1.5
    assert "cancel" in marker.read_text().lower()


# -- the model-loading API ------------------------------------------------------------------------

CONTROLLER_CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [
  { name: "READY" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "ERROR" data_type: TYPE_STRING dims: [ 1 ] }
]
"""

CONTROLLER_SOURCE = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            p = json.loads(request.parameters())
            error = ""
            try:
                if p["op"] == "load":
                    files = {"file:1/model.py": p["source"].encode()} if p.get("source") else None
                    pb_utils.load_model(p["name"], config=p.get("config", ""), files=files)
                elif p["op"] == "unload":
                    pb_utils.unload_model(p["name"])
            except pb_utils.TritonModelException as exc:
                error = exc.message()
            try:
                ready = pb_utils.is_model_ready(p["name"])
            except pb_utils.TritonModelException as exc:
                ready, error = False, error or exc.message()
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("READY", np.array([int(ready)], np.int32)),
                pb_utils.Tensor("ERROR", np.array([error.encode()], dtype=object)),
            ]))
        return responses
"""


async def _control(server, **params):
    request = make_request("controller", {"IN": np.array([0], np.int32)}, parameters=params)
    response = await server.api.infer(request).single()
    return bool(response.as_numpy("READY")[0]), response.as_numpy("ERROR")[0].decode()


@pytest.fixture
def controller(model_repository):
    model_repository.add("controller", CONTROLLER_CONFIG, {1: {"model.py": CONTROLLER_SOURCE}})
    model_repository.add("add_sub", add_sub_config(), {1: {"model.py": ADD_SUB_SOURCE}})


async def test_model_loading_api_in_explicit_mode(start_server, controller):
    server = await start_server(model_control_mode="explicit", load_model=["controller"])
    assert await _control(server, op="ready", name="add_sub") == (False, "")
    assert await _control(server, op="load", name="add_sub") == (True, "")
    a = np.ones(4, np.float32)
    response = await server.api.infer(make_request("add_sub", {"INPUT0": a, "INPUT1": a})).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a + a)
    assert await _control(server, op="unload", name="add_sub") == (False, "")
    # A model given as a configuration and files.
    config = json.dumps(
        {
            "backend": "python",
            "input": [
                {"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]},
                {"name": "INPUT1", "data_type": "TYPE_FP32", "dims": [4]},
            ],
            "output": [
                {"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]},
                {"name": "OUTPUT1", "data_type": "TYPE_FP32", "dims": [4]},
            ],
        }
    )
    ready, error = await _control(
        server, op="load", name="dynamic", config=config, source=ADD_SUB_SOURCE
    )
    assert (ready, error) == (True, "")
    response = await server.api.infer(make_request("dynamic", {"INPUT0": a, "INPUT1": a})).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), a - a)
    ready, error = await _control(server, op="load", name="no_such_model")
    assert not ready and "no_such_model" in error


async def test_model_loading_api_needs_explicit_mode(start_server, controller):
    server = await start_server()
    ready, error = await _control(server, op="unload", name="add_sub")
    assert ready  # refused: still loaded
    assert "not allowed" in error
