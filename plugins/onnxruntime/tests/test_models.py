"""Real ONNX models served through the kernel (``start_server``, ``api.infer``)."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from nereid.errors import NereidError
from nereid.testing import make_request
from nereid.types import BF16_DTYPE, DataType, Tensor
from onnx_models import (
    ALL_TYPES,
    T,
    add_sub,
    add_sub_config,
    batch_scalar_double,
    bf16_model,
    identity,
    int8_neg,
    mlp_model,
    mlp_reference,
    save_with_external_data,
    scalar_double,
    with_default_input,
)


def _bytes_array(items, shape=None) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape or (len(items),))


async def test_add_sub_int32(start_server, model_repository):
    model_repository.add("simple", add_sub_config(), versions={1: {"model.onnx": add_sub()}})
    server = await start_server()
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.full((2, 16), 3, dtype=np.int32)
    response = await server.api.infer(make_request("simple", {"INPUT0": a, "INPUT1": b})).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), a - b)
    assert response.output("OUTPUT0").datatype is DataType.INT32


async def test_selected_by_platform(start_server, model_repository):
    model_repository.add(
        "simple", add_sub_config(platform=True), versions={1: {"model.onnx": add_sub()}}
    )
    server = await start_server()
    assert server.api.model_config("simple").backend == "onnxruntime"
    a = np.ones((1, 16), np.int32)
    response = await server.api.infer(make_request("simple", {"INPUT0": a, "INPUT1": a})).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a * 2)


async def test_requested_output_only(start_server, model_repository):
    model_repository.add("simple", add_sub_config(), versions={1: {"model.onnx": add_sub()}})
    server = await start_server()
    a = np.ones((1, 16), np.int32)
    request = make_request("simple", {"INPUT0": a, "INPUT1": a}, outputs=["OUTPUT1"])
    response = await server.api.infer(request).single()
    assert [t.name for t in response.outputs] == ["OUTPUT1"]
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), a * 0)


async def test_non_batching_model(start_server, model_repository):
    model_repository.add(
        "simple_nb",
        add_sub_config("simple_nb", max_batch_size=0),
        versions={1: {"model.onnx": add_sub(shape=[16])}},
    )
    server = await start_server()
    a = np.arange(16, dtype=np.int32)
    response = await server.api.infer(
        make_request("simple_nb", {"INPUT0": a, "INPUT1": a})
    ).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a * 2)


async def test_strings(start_server, model_repository):
    model_repository.add(
        "strings",
        """
        backend: "onnxruntime"
        max_batch_size: 4
        input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
        output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
        """,
        versions={1: {"model.onnx": identity(T.STRING)}},
    )
    server = await start_server()
    data = _bytes_array([b"alpha", b"", "gr\u00fc\u00df".encode()], (1, 3))
    response = await server.api.infer(make_request("strings", {"INPUT0": data})).single()
    out = response.as_numpy("OUTPUT0")
    assert out.dtype == object and out.shape == (1, 3)
    assert list(out.reshape(-1)) == list(data.reshape(-1))
    assert response.output("OUTPUT0").datatype is DataType.BYTES

    bad = _bytes_array([b"\xff\xfe"], (1, 1))
    with pytest.raises(NereidError, match="input 'INPUT0': element 0 is not UTF-8"):
        await server.api.infer(make_request("strings", {"INPUT0": bad})).single()


async def test_int8(start_server, model_repository):
    model_repository.add(
        "int8",
        """
        backend: "onnxruntime"
        max_batch_size: 2
        input [ { name: "INPUT0" data_type: TYPE_INT8 dims: [ 4 ] } ]
        output [
          { name: "OUTPUT0" data_type: TYPE_INT8 dims: [ 4 ] },
          { name: "OUTPUT1" data_type: TYPE_INT8 dims: [ 4 ] }
        ]
        """,
        versions={1: {"model.onnx": int8_neg()}},
    )
    server = await start_server()
    x = np.array([[-128, -1, 0, 127]], np.int8)
    response = await server.api.infer(make_request("int8", {"INPUT0": x})).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), -x)
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), x)
    assert response.as_numpy("OUTPUT0").dtype == np.int8


async def test_every_datatype(start_server, model_repository):
    """An Identity model per datatype, auto-completed (no config.pbtxt)."""
    for name, elem_type, _ in ALL_TYPES:
        model_repository.add(
            f"id_{name.lower()}", None, versions={1: {"model.onnx": identity(elem_type)}}
        )
    server = await start_server()
    rng = np.random.default_rng(1)
    for name, _, dtype in ALL_TYPES:
        model = f"id_{name.lower()}"
        config = server.api.model_config(model)
        assert config.input[0].data_type == config.output[0].data_type
        if dtype is object:
            x = _bytes_array([b"a", b"bc", b"", b"d"], (2, 2))
        elif dtype is np.bool_:
            x = rng.integers(0, 2, (2, 3)).astype(np.bool_)
        else:
            x = (rng.standard_normal((2, 3)) * 50).astype(dtype)
        response = await server.api.infer(make_request(model, {"INPUT0": x})).single()
        got = response.as_numpy("OUTPUT0")
        assert response.output("OUTPUT0").datatype is DataType.parse(name), model
        if dtype is object:
            assert list(got.reshape(-1)) == list(x.reshape(-1))
        else:
            assert got.dtype == np.dtype(dtype), model
            np.testing.assert_array_equal(got, x, err_msg=model)


async def test_bf16(start_server, model_repository):
    model_repository.add("bf16", None, versions={1: {"model.onnx": bf16_model()}})
    server = await start_server()
    config = server.api.model_config("bf16")
    types = {t.name: DataType.parse(t.data_type and _proto_name(t.data_type)) for t in config.input}
    assert types == {"X": DataType.BF16, "F32IN": DataType.FP32}
    values = np.array([[1.5, -2.25, 3.0], [0.0, 65280.0, -0.5]], np.float32)
    x = values.astype(BF16_DTYPE)
    request = make_request("bf16", {"X": Tensor("X", x, DataType.BF16), "F32IN": values})
    response = await server.api.infer(request).single()
    y = response.output("Y")
    assert y.datatype is DataType.BF16
    np.testing.assert_array_equal(y.data.view(np.uint16), x.view(np.uint16))
    np.testing.assert_array_equal(response.as_numpy("F"), values)  # exact in bf16
    b = response.output("B")
    assert b.datatype is DataType.BF16
    np.testing.assert_array_equal(b.data.view(np.uint16), x.view(np.uint16))


def _proto_name(value: int) -> str:
    from nereid.config.model_config_pb2 import DataType as ProtoDataType

    return ProtoDataType.Name(value)


async def test_fp16(start_server, model_repository):
    model_repository.add("fp16", None, versions={1: {"model.onnx": add_sub(T.FLOAT16)}})
    server = await start_server()
    a = np.linspace(-2, 2, 32, dtype=np.float16).reshape(2, 16)
    response = await server.api.infer(make_request("fp16", {"INPUT0": a, "INPUT1": a})).single()
    assert response.as_numpy("OUTPUT0").dtype == np.float16
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a + a)


async def test_external_data_folder(start_server, model_repository):
    sizes = (8, 32, 4)
    model_dir = model_repository.add(
        "mlp_ext",
        """
        backend: "onnxruntime"
        max_batch_size: 8
        input [ { name: "X" data_type: TYPE_FP32 dims: [ 8 ] } ]
        output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]
        """,
    )
    save_with_external_data(mlp_model(sizes, seed=3), model_dir / "1" / "model.onnx")
    assert (model_dir / "1" / "model.onnx" / "weights.bin").stat().st_size > 1000
    server = await start_server()
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    response = await server.api.infer(make_request("mlp_ext", {"X": x})).single()
    np.testing.assert_allclose(
        response.as_numpy("Y"), mlp_reference(x, sizes, 3), rtol=1e-4, atol=1e-5
    )
    stats = server.api.model_statistics("mlp_ext")[0]
    usage = stats.get("memory_usage") or []
    assert usage and usage[0]["type"] == "CPU" and usage[0]["byte_size"] > 2 * 1000


async def test_default_model_filename(start_server, model_repository):
    model_repository.add(
        "named",
        add_sub_config("named", extra='default_model_filename: "simple.onnx"'),
        versions={1: {"simple.onnx": add_sub()}},
    )
    server = await start_server()
    a = np.ones((1, 16), np.int32)
    response = await server.api.infer(make_request("named", {"INPUT0": a, "INPUT1": a})).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a * 2)


async def test_reshape(start_server, model_repository):
    """Config dims [2, 2] over a model tensor [N, 4]: the kernel reshapes in and out."""
    model_repository.add(
        "reshaped",
        """
        backend: "onnxruntime"
        max_batch_size: 4
        input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 2, 2 ] reshape: { shape: [ 4 ] } } ]
        output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 2, 2 ] reshape: { shape: [ 4 ] } } ]
        """,
        versions={1: {"model.onnx": identity(T.FLOAT, ("N", 4))}},
    )
    server = await start_server()
    x = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    response = await server.api.infer(make_request("reshaped", {"INPUT0": x})).single()
    out = response.as_numpy("OUTPUT0")
    assert out.shape == (2, 2, 2)
    np.testing.assert_array_equal(out, x)


async def test_scalars(start_server, model_repository):
    model_repository.add("scalar", None, versions={1: {"model.onnx": scalar_double()}})
    model_repository.add("batch_scalar", None, versions={1: {"model.onnx": batch_scalar_double()}})
    server = await start_server()
    config = server.api.model_config("scalar")
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [1]
    response = await server.api.infer(
        make_request("scalar", {"X": np.array([3.5], np.float32)})
    ).single()
    np.testing.assert_array_equal(response.as_numpy("Y"), np.array([7.0], np.float32))

    config = server.api.model_config("batch_scalar")
    assert config.max_batch_size == 4 and list(config.input[0].dims) == [1]
    assert config.input[0].HasField("reshape") and not config.input[0].reshape.shape
    x = np.array([[1.0], [2.0], [3.0]], np.float32)
    response = await server.api.infer(make_request("batch_scalar", {"X": x})).single()
    np.testing.assert_array_equal(response.as_numpy("Y"), x * 2)


async def test_optional_input(start_server, model_repository):
    model_repository.add(
        "optional",
        """
        backend: "onnxruntime"
        max_batch_size: 4
        input [
          { name: "X" data_type: TYPE_FP32 dims: [ 2 ] },
          { name: "B" data_type: TYPE_FP32 dims: [ 2 ] optional: true }
        ]
        output [ { name: "Y" data_type: TYPE_FP32 dims: [ 2 ] } ]
        """,
        versions={1: {"model.onnx": with_default_input()}},
    )
    server = await start_server()
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    response = await server.api.infer(make_request("optional", {"X": x})).single()
    np.testing.assert_array_equal(response.as_numpy("Y"), x + 10)
    b = np.array([[-1.0, 1.0], [0.5, 0.5]], np.float32)
    response = await server.api.infer(make_request("optional", {"X": x, "B": b})).single()
    np.testing.assert_array_equal(response.as_numpy("Y"), x + b)


async def test_instances_run_in_parallel(start_server, model_repository):
    sizes = (64, 256, 64)
    model_repository.add(
        "mlp",
        """
        backend: "onnxruntime"
        max_batch_size: 8
        input [ { name: "X" data_type: TYPE_FP32 dims: [ 64 ] } ]
        output [ { name: "Y" data_type: TYPE_FP32 dims: [ 64 ] } ]
        instance_group [ { kind: KIND_CPU count: 3 } ]
        """,
        versions={1: {"model.onnx": mlp_model(sizes, seed=5).SerializeToString()}},
    )
    server = await start_server()
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1, 64)).astype(np.float32) for _ in range(24)]
    streams = [server.api.infer(make_request("mlp", {"X": x})) for x in xs]
    responses = await asyncio.gather(*(s.single() for s in streams))
    for x, response in zip(xs, responses, strict=True):
        np.testing.assert_allclose(
            response.as_numpy("Y"), mlp_reference(x, sizes, 5), rtol=1e-4, atol=1e-5
        )
    stats = server.api.model_statistics("mlp")[0]
    assert stats["inference_count"] == 24
    usage = stats["memory_usage"]
    assert usage[0]["byte_size"] >= 3 * (64 * 256 + 256 * 64) * 4  # three sessions' weights


@pytest.mark.skipif(
    importlib.util.find_spec("nereid_dynamic_batcher") is None,
    reason="the nereid-dynamic-batcher scheduler (schedulers/dynamic) is not installed",
)
async def test_auto_completed_dynamic_batching_gathers_requests(start_server, model_repository):
    sizes = (8, 16, 4)
    model_repository.add(
        "mlp", None, versions={1: {"model.onnx": mlp_model(sizes).SerializeToString()}}
    )
    server = await start_server()
    assert server.api.model_config("mlp").HasField("dynamic_batching")
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((1 + i % 2, 8)).astype(np.float32) for i in range(16)]
    streams = [server.api.infer(make_request("mlp", {"X": x})) for x in xs]
    responses = await asyncio.gather(*(s.single() for s in streams))
    for x, response in zip(xs, responses, strict=True):
        np.testing.assert_allclose(
            response.as_numpy("Y"), mlp_reference(x, sizes), rtol=1e-4, atol=1e-5
        )
    await asyncio.sleep(0.05)
    stats = server.api.model_statistics("mlp")[0]
    assert stats["inference_count"] == sum(len(x) for x in xs)
    assert stats["execution_count"] < 16


async def test_shared_session(start_server, model_repository):
    model_repository.add(
        "shared",
        add_sub_config(
            "shared",
            extra="""
            instance_group [ { kind: KIND_CPU count: 3 } ]
            parameters { key: "share_session_between_instances" value: { string_value: "1" } }
            """,
        ),
        versions={1: {"model.onnx": add_sub()}},
    )
    server = await start_server()
    usage = server.api.model_statistics("shared")[0]["memory_usage"]
    assert usage == [{"type": "CPU", "id": 0, "byte_size": len(add_sub())}]  # one session
    a = np.ones((1, 16), np.int32)
    streams = [
        server.api.infer(make_request("shared", {"INPUT0": a, "INPUT1": a})) for _ in range(6)
    ]
    for response in await asyncio.gather(*(s.single() for s in streams)):
        np.testing.assert_array_equal(response.as_numpy("OUTPUT0"), a * 2)


def test_global_threadpool(tmp_path):
    """``enable-global-threadpool`` sizes onnxruntime's process-wide pools (own process: the
    pools can be sized once per process)."""
    model_dir = tmp_path / "models" / "simple" / "1"
    model_dir.mkdir(parents=True)
    (model_dir / "model.onnx").write_bytes(add_sub())
    code = f"""
import asyncio, numpy as np
from nereid import Server
from nereid.testing import make_request

async def main():
    server = Server({str(tmp_path / "models")!r}, backend_config=[
        "onnxruntime,enable-global-threadpool=1", "onnxruntime,intra_op_thread_count=1",
        "onnxruntime,inter_op_thread_count=1"])
    await server.start()
    a = np.ones((1, 16), np.int32)
    response = await server.api.infer(make_request("simple", {{"INPUT0": a, "INPUT1": a}})).single()
    assert (response.as_numpy("OUTPUT0") == 2).all()
    await server.stop(grace=1)
    print("ok")

asyncio.run(main())
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
