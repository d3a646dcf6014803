"""Configurations the backend refuses, each with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_models as tm
from nereid.testing import make_request


async def _reason(start_server, model_repository, config, files) -> str:
    model_repository.add("bad", config, versions={1: files})
    server = await start_server(exit_on_error=False)
    assert not server.api.model_ready("bad")
    index = {m["name"]: m for m in server.api.repository_index()}
    return index["bad"]["reason"]


def _script():
    return tm.traced_mlp()[0]


@pytest.mark.parametrize(
    "config, message",
    [
        (
            'backend: "pytorch"\nmax_batch_size: 8\n'
            'output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 8 ] } ]',
            "no inputs in the configuration: TorchScript models need every input listed",
        ),
        (
            tm.mlp_config("bad").replace(
                'output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 8 ] } ]', ""
            ),
            "no outputs in the configuration",
        ),
        (
            tm.mlp_config("bad").replace(
                'input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 16 ] } ]',
                'input [ { name: "INPUT__0" data_type: TYPE_STRING dims: [ 16 ] } ]',
            ),
            "input 'INPUT__0' is TYPE_STRING (BYTES)",
        ),
        (
            tm.mlp_config("bad").replace(
                'input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 16 ] } ]',
                'input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 16 ] },'
                ' { name: "INPUT__1" data_type: TYPE_FP32 dims: [ 16 ] } ]',
            ),
            "the model's forward takes 1 input(s)",
        ),
        (
            tm.mlp_config("bad", extra='default_model_filename: "model.onnx"'),
            "unable to find",
        ),
    ],
    ids=["missing-inputs", "missing-outputs", "bytes", "too-many-inputs", "unknown-file"],
)
async def test_torchscript_config_errors(start_server, model_repository, config, message):
    reason = await _reason(start_server, model_repository, config, {"model.pt": _script()})
    assert message in reason, reason


async def test_missing_forward_argument(start_server, model_repository):
    config = tm.ADD_SUB_CONFIG.replace('{ name: "b" data_type: TYPE_INT32 dims: [ 4 ] },', "")
    reason = await _reason(
        start_server, model_repository, config, {"model.pt": tm.scripted(tm.AddSub())}
    )
    assert "no configuration input for the model's argument(s) ['b']" in reason, reason


async def test_not_a_model_file(start_server, model_repository):
    reason = await _reason(
        start_server, model_repository, tm.mlp_config("bad"), {"model.pt": b"not a model"}
    )
    assert "is not a TorchScript module saved with torch.jit.save" in reason, reason


async def test_no_model_file(start_server, model_repository):
    reason = await _reason(start_server, model_repository, tm.mlp_config("bad"), {})
    assert "unable to find" in reason and "model.pt2" in reason, reason


async def test_exported_wrong_dtype(start_server, model_repository):
    data, _ = tm.exported_mlp()
    config = tm.mlp_config("bad").replace(
        'INPUT__0" data_type: TYPE_FP32', 'x" data_type: TYPE_FP16'
    )
    reason = await _reason(start_server, model_repository, config, {"model.pt2": data})
    assert "input 'x' is TYPE_FP16 in the configuration but TYPE_FP32 in the program" in reason


async def test_exported_wrong_dims(start_server, model_repository):
    data, _ = tm.exported_mlp()
    config = tm.mlp_config("bad").replace("dims: [ 8 ]", "dims: [ 9 ]")
    reason = await _reason(start_server, model_repository, config, {"model.pt2": data})
    assert "output 'OUTPUT__0' has dims [9] in the configuration but [8] in the program" in reason


async def test_exported_static_batch_refused(start_server, model_repository):
    data = tm.exported(tm.AddSub(), (torch.zeros(2, 4, dtype=torch.int32),) * 2)
    config = tm.ADD_SUB_CONFIG.replace("SUM__0", "OUTPUT__0").replace("DIFF__1", "OUTPUT__1")
    reason = await _reason(start_server, model_repository, config, {"model.pt2": data})
    assert "needs a dynamic first dimension" in reason, reason


async def test_torchscript_wrong_output_dtype_fails_request(start_server, model_repository):
    """TorchScript carries no types: a wrong output type is found on the first request."""
    config = """
    backend: "pytorch"
    max_batch_size: 4
    input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
    output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
    """
    model_repository.add("int64", config, versions={1: {"model.pt": tm.scripted(tm.Int64Out())}})
    server = await start_server()
    stream = server.api.infer(make_request("int64", {"INPUT__0": np.ones((1, 2), np.float32)}))
    with pytest.raises(
        Exception, match=r"output 'OUTPUT__0' is torch\.int64 but the configuration"
    ):
        await stream.single()


async def test_gpu_instance_without_cuda(start_server, model_repository):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    config = tm.mlp_config("bad").replace("KIND_CPU", "KIND_GPU")
    reason = await _reason(start_server, model_repository, config, {"model.pt": _script()})
    assert "sees no CUDA device" in reason, reason


async def test_not_an_exported_program(start_server, model_repository):
    config = tm.mlp_config("bad").replace("INPUT__0", "x")
    reason = await _reason(start_server, model_repository, config, {"model.pt2": b"garbage"})
    assert "is not a torch.export program saved with torch.export.save" in reason, reason
