"""Traced, scripted and exported models served through the kernel, compared to eager PyTorch."""

from __future__ import annotations

import asyncio
import importlib.util

import numpy as np
import pytest
import torch
import torch_models as tm
from nereid.config.model_config_pb2 import DataType as ProtoDataType
from nereid.testing import make_request

HAVE_DYNAMIC = importlib.util.find_spec("nereid_dynamic_batcher") is not None
HAVE_SEQUENCE = importlib.util.find_spec("nereid_sequence_batcher") is not None


def eager(module, *arrays):
    with torch.no_grad():
        return module(*(torch.from_numpy(a) for a in arrays)).numpy()


async def test_traced_mlp_matches_eager(start_server, model_repository):
    data, module = tm.traced_mlp()
    model_repository.add("mlp", tm.mlp_config(), versions={1: {"model.pt": data}})
    server = await start_server()
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    response = await server.api.infer(make_request("mlp", {"INPUT__0": x})).single()
    np.testing.assert_allclose(response.as_numpy("OUTPUT__0"), eager(module, x), rtol=1e-5)
    config = server.api.model_config("mlp")
    assert config.platform == "pytorch_libtorch" and config.backend == "pytorch"
    usage = server.api.model_statistics("mlp")[0]
    assert usage["inference_count"] == 3


async def test_scripted_two_inputs_tuple_output_by_argument_name(start_server, model_repository):
    """Inputs matched to forward's argument names (listed in another order); outputs by
    ``__<index>``; the platform alias selects the backend."""
    model_repository.add(
        "add_sub", tm.ADD_SUB_CONFIG, versions={1: {"model.pt": tm.scripted(tm.AddSub())}}
    )
    server = await start_server()
    a = np.arange(8, dtype=np.int32).reshape(2, 4)
    b = np.full((2, 4), 3, np.int32)
    response = await server.api.infer(make_request("add_sub", {"a": a, "b": b})).single()
    np.testing.assert_array_equal(response.as_numpy("SUM__0"), a + b)
    np.testing.assert_array_equal(response.as_numpy("DIFF__1"), a - b)
    request = make_request("add_sub", {"a": a, "b": b}, outputs=["DIFF__1"])
    response = await server.api.infer(request).single()
    assert [t.name for t in response.outputs] == ["DIFF__1"]


async def test_config_order_and_list_output(start_server, model_repository):
    """Names that follow no rule: the configuration's order is the position."""
    config = """
    backend: "pytorch"
    max_batch_size: 4
    input [ { name: "IN" data_type: TYPE_FP32 dims: [ 3 ] } ]
    output [
      { name: "DOUBLE" data_type: TYPE_FP32 dims: [ 3 ] },
      { name: "TOTAL" data_type: TYPE_FP32 dims: [ 1 ] }
    ]
    """
    model_repository.add("listy", config, versions={1: {"model.pt": tm.scripted(tm.ListOut())}})
    server = await start_server()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    response = await server.api.infer(make_request("listy", {"IN": x})).single()
    np.testing.assert_array_equal(response.as_numpy("DOUBLE"), x * 2)
    np.testing.assert_array_equal(response.as_numpy("TOTAL"), x.sum(1, keepdims=True))


async def test_dict_input(start_server, model_repository):
    model_repository.add(
        "dicty", tm.DICT_CONFIG, versions={1: {"model.pt": tm.scripted(tm.DictIn())}}
    )
    server = await start_server()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    scale = np.array([[2.0], [3.0]], np.float32)
    response = await server.api.infer(make_request("dicty", {"X": x, "SCALE": scale})).single()
    np.testing.assert_array_equal(response.as_numpy("Y"), x * scale)


async def test_exported_program_auto_complete(start_server, model_repository):
    data, module = tm.exported_mlp()
    model_repository.add("exported", None, versions={1: {"model.pt2": data}})
    server = await start_server()
    config = server.api.model_config("exported")
    assert config.platform == "pytorch_libtorch"
    assert config.max_batch_size == 4
    assert [(t.name, ProtoDataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        ("x", "TYPE_FP32", [16])
    ]
    assert [(t.name, list(t.dims)) for t in config.output] == [("OUTPUT__0", [8])]
    assert config.HasField("dynamic_batching") == HAVE_DYNAMIC
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    response = await server.api.infer(make_request("exported", {"x": x})).single()
    np.testing.assert_allclose(response.as_numpy("OUTPUT__0"), eager(module, x), rtol=1e-5)


async def test_exported_static_shape_is_not_batched(start_server, model_repository):
    data = tm.exported(tm.AddSub(), (torch.zeros(2, 4, dtype=torch.int32),) * 2)
    model_repository.add("fixed", None, versions={1: {"model.pt2": data}})
    server = await start_server()
    config = server.api.model_config("fixed")
    assert config.max_batch_size == 0
    assert [list(t.dims) for t in config.input] == [[2, 4], [2, 4]]
    assert [t.name for t in config.output] == ["OUTPUT__0", "OUTPUT__1"]
    a = np.ones((2, 4), np.int32)
    response = await server.api.infer(make_request("fixed", {"a": a, "b": a})).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT__1"), a * 0)


async def test_default_model_filename_picks_format(start_server, model_repository):
    data, module = tm.exported_mlp()
    script, _ = tm.traced_mlp(seed=5)
    config = tm.mlp_config("named", extra='default_model_filename: "weights.pt2"').replace(
        "INPUT__0", "x"
    )
    model_repository.add("named", config, versions={1: {"weights.pt2": data, "model.pt": script}})
    server = await start_server()
    x = np.ones((1, 16), np.float32)
    response = await server.api.infer(make_request("named", {"x": x})).single()
    np.testing.assert_allclose(response.as_numpy("OUTPUT__0"), eager(module, x), rtol=1e-5)


async def test_batched_requests_match_eager(start_server, model_repository):
    """Concurrent one-row requests, gathered by the kernel (dynamic batcher when installed),
    two instances."""
    data, module = tm.traced_mlp()
    extra = "dynamic_batching { max_queue_delay_microseconds: 20000 }" if HAVE_DYNAMIC else ""
    config = tm.mlp_config(extra=extra).replace("count: 1", "count: 2")
    model_repository.add("mlp", config, versions={1: {"model.pt": data}})
    server = await start_server()
    rows = np.random.default_rng(2).standard_normal((16, 1, 16)).astype(np.float32)
    streams = [server.api.infer(make_request("mlp", {"INPUT__0": row})) for row in rows]
    responses = await asyncio.gather(*(s.single() for s in streams))
    for row, response in zip(rows, responses, strict=True):
        np.testing.assert_allclose(
            response.as_numpy("OUTPUT__0"), eager(module, row), rtol=1e-4, atol=1e-6
        )
    stats = server.api.model_statistics("mlp")[0]
    assert stats["inference_count"] == 16
    if HAVE_DYNAMIC:
        assert stats["execution_count"] < 16


async def test_parameters_accepted(start_server, model_repository, caplog):
    data, module = tm.traced_mlp()
    params = "".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n'
        for k, v in {
            "INFERENCE_MODE": "false",
            "DISABLE_OPTIMIZED_EXECUTION": "true",
            "ENABLE_NVFUSER": "true",
            "ENABLE_WEIGHT_SHARING": "true",
            "INTRA_OP_THREAD_COUNT": "1",
        }.items()
    )
    config = tm.mlp_config(extra=params).replace("count: 1", "count: 2")
    model_repository.add("mlp", config, versions={1: {"model.pt": data}})
    server = await start_server()
    assert torch.get_num_threads() == 1
    x = np.ones((2, 16), np.float32)
    response = await server.api.infer(make_request("mlp", {"INPUT__0": x})).single()
    np.testing.assert_allclose(response.as_numpy("OUTPUT__0"), eager(module, x), rtol=1e-5)
    assert "ENABLE_NVFUSER ignored" in caplog.text


@pytest.mark.skipif(not HAVE_SEQUENCE, reason="nereid-sequence-batcher is not installed")
async def test_implicit_sequence_state(start_server, model_repository):
    config = """
    backend: "pytorch"
    max_batch_size: 1
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]
    output [ { name: "TOTAL__0" data_type: TYPE_FP32 dims: [ 1 ] } ]
    sequence_batching {
      state [ { input_name: "state" output_name: "STATE__1" data_type: TYPE_FP32 dims: [ 1 ] } ]
    }
    """
    model_repository.add("acc", config, versions={1: {"model.pt": tm.scripted(tm.Accumulate())}})
    server = await start_server()
    totals = []
    for step, value in enumerate([1.0, 2.0, 3.0]):
        request = make_request(
            "acc",
            {"x": np.array([[value]], np.float32)},
            sequence_id=7,
            sequence_start=step == 0,
            sequence_end=step == 2,
        )
        response = await server.api.infer(request).single()
        totals.append(float(response.as_numpy("TOTAL__0").reshape(-1)[0]))
    assert totals == [1.0, 3.0, 6.0]
