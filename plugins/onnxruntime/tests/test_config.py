"""Auto-complete with no config.pbtxt at all, and configurations that contradict the model."""

from __future__ import annotations

import numpy as np
import pytest
from nereid.config.model_config_pb2 import DataType as ProtoDataType
from nereid.config.model_config_pb2 import ModelInstanceGroup
from nereid.testing import make_request
from onnx_models import T, add_sub, add_sub_config, identity, int8_neg, scalar_double

try:
    import nereid_dynamic_batcher  # noqa: F401

    HAVE_DYNAMIC = True
except ImportError:  # pragma: no cover - depends on what is installed
    HAVE_DYNAMIC = False


async def test_auto_complete_without_config(start_server, model_repository):
    model_repository.add("simple", None, versions={1: {"model.onnx": add_sub()}})
    server = await start_server()
    config = server.api.model_config("simple")
    assert config.backend == "onnxruntime"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 4  # Triton's default-max-batch-size
    assert [(t.name, ProtoDataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        ("INPUT0", "TYPE_INT32", [16]),
        ("INPUT1", "TYPE_INT32", [16]),
    ]
    assert [t.name for t in config.output] == ["OUTPUT0", "OUTPUT1"]
    assert config.HasField("dynamic_batching") == HAVE_DYNAMIC
    (group,) = config.instance_group
    assert group.kind == ModelInstanceGroup.KIND_CPU and group.count == 2
    metadata = server.api.model_metadata("simple")
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"][0]["shape"] == [-1, 16]
    a = np.ones((2, 16), np.int32)
    response = await server.api.infer(make_request("simple", {"INPUT0": a, "INPUT1": a})).single()
    np.testing.assert_array_equal(response.as_numpy("OUTPUT1"), a * 0)


async def test_default_max_batch_size_setting(start_server, model_repository):
    model_repository.add("simple", None, versions={1: {"model.onnx": add_sub()}})
    server = await start_server(backend_config=["onnxruntime,default-max-batch-size=16"])
    assert server.api.model_config("simple").max_batch_size == 16


async def test_default_max_batch_size_zero_keeps_batch_dim(start_server, model_repository):
    model_repository.add("simple", None, versions={1: {"model.onnx": add_sub()}})
    server = await start_server(backend_config=["onnxruntime,default-max-batch-size=0"])
    config = server.api.model_config("simple")
    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [-1, 16]
    assert not config.HasField("dynamic_batching")


async def test_non_batchable_model_is_not_batched(start_server, model_repository):
    model_repository.add("fixed", None, versions={1: {"model.onnx": add_sub(shape=[2, 16])}})
    model_repository.add("scalar", None, versions={1: {"model.onnx": scalar_double()}})
    server = await start_server()
    config = server.api.model_config("fixed")
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [2, 16]
    assert not config.HasField("dynamic_batching")


async def test_partial_config_is_completed(start_server, model_repository):
    """Inputs given, outputs not: the outputs come from the model; instance count given
    stays."""
    model_repository.add(
        "half",
        """
        max_batch_size: 2
        input [ { name: "INPUT0" data_type: TYPE_INT8 dims: [ 4 ] } ]
        instance_group [ { count: 1 kind: KIND_CPU } ]
        """,
        versions={1: {"model.onnx": int8_neg()}},
    )
    server = await start_server()
    config = server.api.model_config("half")
    assert config.max_batch_size == 2
    assert [(t.name, list(t.dims)) for t in config.output] == [("OUTPUT0", [4]), ("OUTPUT1", [4])]
    assert config.instance_group[0].count == 1


async def test_config_without_count_gets_two_cpu_instances(start_server, model_repository):
    model_repository.add(
        "simple",
        add_sub_config(extra="instance_group [ { kind: KIND_CPU } ]"),
        versions={1: {"model.onnx": add_sub()}},
    )
    server = await start_server()
    assert server.api.model_config("simple").instance_group[0].count == 2
    stats = server.api.model_statistics("simple")[0]
    assert len(stats["memory_usage"]) == 1
    assert stats["memory_usage"][0]["byte_size"] == 2 * len(add_sub())


async def test_auto_complete_disabled_needs_a_full_config(start_server, model_repository):
    model_repository.add("simple", add_sub_config(), versions={1: {"model.onnx": add_sub()}})
    server = await start_server(disable_auto_complete_config=True)
    config = server.api.model_config("simple")
    assert config.instance_group[0].count == 1  # the kernel's default, not completed
    assert not config.platform


# -- contradictions: each fails the load with a message naming the tensor --------------------


@pytest.mark.parametrize(
    "config, message",
    [
        (
            add_sub_config("bad", datatype="TYPE_FP32"),
            "configuration expects datatype TYPE_FP32 for input 'INPUT0', model provides "
            "TYPE_INT32",
        ),
        (
            add_sub_config("bad").replace('name: "INPUT1"', 'name: "INPUTX"'),
            "configuration input 'INPUTX' is not an input of the model",
        ),
        (
            add_sub_config("bad").replace('name: "OUTPUT1"', 'name: "OUT9"'),
            "configuration output 'OUT9' is not an output of the model",
        ),
        (
            add_sub_config("bad").replace(
                '{ name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] }',
                '{ name: "INPUT0" data_type: TYPE_INT32 dims: [ 4, 4 ] }',
            ),
            "input 'INPUT0': the model expects 2 dimensions (shape [-1,16]) but the model "
            "configuration specifies 3 dimensions",
        ),
        (
            add_sub_config("bad").replace(
                '{ name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] }',
                '{ name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 8 ] }',
            ),
            "output 'OUTPUT1': the model expects shape [-1,16] but the model configuration "
            "specifies shape [-1,8]",
        ),
        (
            add_sub_config("bad")
            .replace('{ name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] }', "")
            .replace("},\n", "}\n", 1),
            "the model's input 'INPUT1' is missing from the configuration",
        ),
    ],
    ids=["dtype", "unknown-input", "unknown-output", "rank", "dim", "missing-input"],
)
async def test_contradicting_config_fails(start_server, model_repository, config, message):
    model_repository.add("bad", config, versions={1: {"model.onnx": add_sub()}})
    server = await start_server(exit_on_error=False)
    assert not server.api.model_ready("bad")
    index = {m["name"]: m for m in server.api.repository_index()}
    assert message in index["bad"]["reason"], index["bad"]["reason"]


async def test_batching_config_on_fixed_model_fails(start_server, model_repository):
    model_repository.add(
        "fixed", add_sub_config("fixed"), versions={1: {"model.onnx": add_sub(shape=[2, 16])}}
    )
    model_repository.add(
        "fixed_auto",
        "max_batch_size: 4",
        versions={1: {"model.onnx": add_sub(shape=[2, 16])}},
    )
    server = await start_server(exit_on_error=False)
    index = {m["name"]: m for m in server.api.repository_index()}
    assert (
        "input 'INPUT0': for the model to support batching the shape should have at least 1 "
        "dimension and the first dimension must be -1; but shape expected by the model is [2,16]"
    ) in index["fixed"]["reason"]
    assert (
        "model does not support batching while non-zero max_batch_size is specified"
        in (index["fixed_auto"]["reason"])
    )


async def test_optional_input_without_default_fails(start_server, model_repository):
    model_repository.add(
        "opt",
        """
        backend: "onnxruntime"
        max_batch_size: 4
        input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ -1 ] optional: true } ]
        output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
        """,
        versions={1: {"model.onnx": identity(T.STRING)}},
    )
    server = await start_server(exit_on_error=False)
    index = {m["name"]: m for m in server.api.repository_index()}
    assert (
        "input 'INPUT0' is optional in the configuration, but the model requires it"
        in (index["opt"]["reason"])
    )


async def test_missing_model_file(start_server, model_repository):
    model_repository.add("nofile", add_sub_config("nofile"), versions={1: {"other.bin": b""}})
    server = await start_server(exit_on_error=False)
    index = {m["name"]: m for m in server.api.repository_index()}
    assert "unable to find" in index["nofile"]["reason"]
    assert "model.onnx" in index["nofile"]["reason"]


async def test_gpu_instance_without_cuda_provider_fails(start_server, model_repository):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime here has the CUDA provider")
    model_repository.add(
        "gpu",
        add_sub_config("gpu", extra="instance_group [ { kind: KIND_GPU gpus: [ 0 ] } ]"),
        versions={1: {"model.onnx": add_sub()}},
    )
    server = await start_server(exit_on_error=False)
    index = {m["name"]: m for m in server.api.repository_index()}
    assert "execution provider CUDAExecutionProvider is not available" in index["gpu"]["reason"]
    assert "install onnxruntime-gpu" in index["gpu"]["reason"]


async def test_corrupt_model_file(start_server, model_repository):
    model_repository.add("corrupt", None, versions={1: {"model.onnx": b"not an onnx model"}})
    server = await start_server(exit_on_error=False)
    index = {m["name"]: m for m in server.api.repository_index()}
    assert "unable to load model 'corrupt'" in index["corrupt"]["reason"]
    assert "onnxruntime" in index["corrupt"]["reason"]
