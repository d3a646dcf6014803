"""IR and ONNX models served through the kernel: answers against numpy and onnxruntime,
auto-complete without config.pbtxt, reshaping the batch dimension, and configuration errors."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from nereid.config.model_config_pb2 import DataType as ProtoDataType
from nereid.testing import make_request
from ov_models import (
    MLP_CONFIG,
    MLP_ONNX_CONFIG,
    MLP_SIZES,
    add_sub_files,
    mlp_files,
    mlp_reference,
)

HAVE_DYNAMIC = importlib.util.find_spec("nereid_dynamic_batcher") is not None


def _x(rows: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, MLP_SIZES[0])).astype(np.float32)


async def _infer(server, model: str, inputs: dict, **kwargs):
    return await server.api.infer(make_request(model, inputs, **kwargs)).single()


async def test_ir_and_onnx_answer_as_numpy_and_onnxruntime(start_server, model_repository):
    ort = pytest.importorskip("onnxruntime")
    model_repository.add("mlp_ir", MLP_CONFIG, versions={1: mlp_files()})
    model_repository.add("mlp_onnx", MLP_ONNX_CONFIG, versions={1: mlp_files(ir=False)})
    server = await start_server()
    onnx_file = Path(model_repository.root) / "mlp_onnx" / "1" / "model.onnx"
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    x = _x(3)
    (expected,) = session.run(["Y"], {"X": x})
    np.testing.assert_allclose(expected, mlp_reference(x), rtol=1e-4, atol=1e-5)
    for name in ("mlp_ir", "mlp_onnx"):
        got = (await _infer(server, name, {"X": x})).as_numpy("Y")
        assert got.shape == (3, MLP_SIZES[-1]) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=name)
    assert server.api.model_config("mlp_onnx").backend == "openvino"


async def test_auto_complete_without_config(start_server, model_repository):
    model_repository.add("auto", None, versions={1: mlp_files()})
    server = await start_server()
    config = server.api.model_config("auto")
    assert config.backend == "openvino"  # the one backend claiming model.xml
    assert config.max_batch_size == 4
    assert [(t.name, ProtoDataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        ("X", "TYPE_FP32", [MLP_SIZES[0]])
    ]
    assert [(t.name, list(t.dims)) for t in config.output] == [("Y", [MLP_SIZES[-1]])]
    assert config.HasField("dynamic_batching") == HAVE_DYNAMIC
    assert server.api.model_metadata("auto")["inputs"][0]["shape"] == [-1, MLP_SIZES[0]]
    x = _x(2)
    got = (await _infer(server, "auto", {"X": x})).as_numpy("Y")
    np.testing.assert_allclose(got, mlp_reference(x), rtol=1e-4, atol=1e-5)


async def test_static_batch_dimension_is_reshaped(start_server, model_repository):
    """A model exported with batch 1 serves any batch up to max_batch_size (the batch dimension
    is made dynamic), or exactly max_batch_size with SKIP_OV_DYNAMIC_BATCHSIZE, padded."""
    files = mlp_files(batch=1)
    model_repository.add("dynamic", MLP_CONFIG, versions={1: files})
    padded = (
        MLP_CONFIG
        + 'parameters { key: "SKIP_OV_DYNAMIC_BATCHSIZE" value: { string_value: "YES" } }\n'
        + 'parameters { key: "ENABLE_BATCH_PADDING" value: { string_value: "YES" } }\n'
    )
    model_repository.add("padded", padded, versions={1: files})
    server = await start_server()
    x = _x(5)
    for name in ("dynamic", "padded"):
        got = (await _infer(server, name, {"X": x})).as_numpy("Y")
        np.testing.assert_allclose(got, mlp_reference(x), rtol=1e-4, atol=1e-5, err_msg=name)


async def test_reshape_io_layers(start_server, model_repository):
    """RESHAPE_IO_LAYERS reshapes a static model's input to the configuration's dims."""
    config = f"""
    backend: "openvino"
    max_batch_size: 0
    input [ {{ name: "X" data_type: TYPE_FP32 dims: [ -1, {MLP_SIZES[0]} ] }} ]
    output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ -1, {MLP_SIZES[-1]} ] }} ]
    parameters {{ key: "RESHAPE_IO_LAYERS" value: {{ string_value: "YES" }} }}
    """
    model_repository.add("reshaped", config, versions={1: mlp_files(batch=1)})
    server = await start_server()
    x = _x(3)
    got = (await _infer(server, "reshaped", {"X": x})).as_numpy("Y")
    np.testing.assert_allclose(got, mlp_reference(x), rtol=1e-4, atol=1e-5)


async def test_int32_outputs_and_requested_outputs(start_server, model_repository):
    model_repository.add("simple", None, versions={1: add_sub_files()})
    server = await start_server()
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.ones((2, 16), np.int32)
    response = await _infer(server, "simple", {"INPUT0": a, "INPUT1": b}, outputs=["OUTPUT1"])
    assert [t.name for t in response.outputs] == ["OUTPUT1"]
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), a - b)


def _param(key: str, value: str) -> str:
    return f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'


@pytest.mark.parametrize(
    "config, message",
    [
        (
            MLP_CONFIG.replace("TYPE_FP32 dims: [ 16 ]", "TYPE_INT32 dims: [ 16 ]"),
            "configuration expects datatype TYPE_INT32 for input 'X', model provides TYPE_FP32",
        ),
        (
            MLP_CONFIG.replace('name: "X"', 'name: "W"'),
            "configuration input 'W' is not an input of the model; the model's inputs are ['X']",
        ),
        (
            MLP_CONFIG.replace('name: "Y"', 'name: "Z"'),
            "configuration output 'Z' is not an output of the model",
        ),
        (
            MLP_CONFIG.replace("dims: [ 16 ]", "dims: [ 15 ]"),
            "input 'X': the model expects shape [-1,16]",
        ),
        (
            MLP_CONFIG + _param("PERFORMANCE_HINT", "FASTEST"),
            "parameter 'PERFORMANCE_HINT': expected LATENCY or THROUGHPUT or",
        ),
    ],
    ids=["wrong-dtype", "unknown-input", "unknown-output", "wrong-shape", "bad-hint"],
)
async def test_contradicting_config_fails(start_server, model_repository, config, message):
    model_repository.add("bad", config, versions={1: mlp_files()})
    server = await start_server(exit_on_error=False)
    assert not server.api.model_ready("bad")
    index = {m["name"]: m for m in server.api.repository_index()}
    assert message in index["bad"]["reason"], index["bad"]["reason"]


def _pipelined_config(infer_requests: int) -> str:
    """One instance with ``infer_requests`` infer requests."""
    value = f'value: {{ string_value: "{infer_requests}" }}'
    return MLP_CONFIG.replace("count: 2", "count: 1") + (
        f'parameters {{ key: "NUM_INFER_REQUESTS" {value} }}\n'
    )


async def test_batches_in_flight_on_several_infer_requests_get_their_own_answers(
    start_server, model_repository
):
    model_repository.add("mlp", _pipelined_config(3), versions={1: mlp_files()})
    server = await start_server()
    inputs = [_x(1 + index % 3, seed=index) for index in range(24)]
    answers = await asyncio.gather(*(_infer(server, "mlp", {"X": x}) for x in inputs))
    for x, answer in zip(inputs, answers, strict=True):
        np.testing.assert_allclose(answer.as_numpy("Y"), mlp_reference(x), rtol=1e-4, atol=1e-5)


def test_an_instance_answers_a_batch_when_it_needs_the_infer_request_or_goes_idle(tmp_path):
    from nereid.backend import BackendContext, InstanceSpec
    from nereid.config import parse_pbtxt
    from nereid_openvino.backend import OpenVINOBackend

    for name, data in mlp_files().items():
        (tmp_path / name).write_bytes(data)
    config = parse_pbtxt('name: "mlp"\n' + _pipelined_config(2))
    model = OpenVINOBackend(BackendContext("openvino", {}, None)).create_model(config, tmp_path)
    model.complete_config(config)
    instance = model.create_instance(InstanceSpec("mlp_0", config.instance_group[0], 0))
    batches = [[make_request("mlp", {"X": _x(2, seed=n)})] for n in range(3)]
    instance.execute(batches[0])
    instance.execute(batches[1])  # both infer requests busy: nothing answered yet
    assert not any(request.final_sent for batch in batches for request in batch)
    instance.execute(batches[2])  # needs an infer request: the oldest batch is answered first
    assert [batch[0].final_sent for batch in batches] == [True, False, False]
    instance.flush()
    assert all(batch[0].final_sent for batch in batches)
    instance.finalize()
    model.finalize()


async def test_warmup_is_answered_before_the_model_is_ready(start_server, model_repository):
    zeros = f"data_type: TYPE_FP32 dims: [ {MLP_SIZES[0]} ] zero_data: true"
    warmup = f"""
    model_warmup [ {{ name: "zeros" batch_size: 2 count: 3
      inputs {{ key: "X" value: {{ {zeros} }} }} }} ]
    """
    model_repository.add("mlp", MLP_CONFIG + warmup, versions={1: mlp_files()})
    server = await asyncio.wait_for(start_server(), 30)
    assert server.api.model_ready("mlp")
    x = _x(2)
    got = (await _infer(server, "mlp", {"X": x})).as_numpy("Y")
    np.testing.assert_allclose(got, mlp_reference(x), rtol=1e-4, atol=1e-5)
