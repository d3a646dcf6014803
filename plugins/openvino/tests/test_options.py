"""Compile properties and signature rules from the configuration (pure functions)."""

from __future__ import annotations

import pytest
from nereid.config import ConfigError, parse_pbtxt
from nereid_openvino.options import compile_plan
from nereid_openvino.signature import Signature, TensorInfo, check_config, complete_config


def _config(text: str = ""):
    return parse_pbtxt('name: "m"\n' + text)


def _param(key: str, value: str) -> str:
    return f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'


def test_defaults_split_the_cores_among_the_instances():
    config = _config("instance_group [ { kind: KIND_CPU count: 3 } ]")
    plan = compile_plan(config, cpu_count=12)
    assert plan.device == "CPU"
    assert plan.properties == {
        "NUM_STREAMS": "3",  # one stream per instance, 12 threads: 4 per stream
        "INFERENCE_NUM_THREADS": "12",
        "INFERENCE_PRECISION_HINT": "f32",
    }
    assert plan.infer_requests == 2  # the next batch starts while one computes


def test_parameters_are_passed_on():
    config = _config(
        _param("PERFORMANCE_HINT", "throughput")
        + _param("NUM_STREAMS", "4")
        + _param("INFERENCE_NUM_THREADS", "8")
        + _param("HINT_BF16", "YES")
        + _param("ENABLE_CPU_PINNING", "no")
        + _param("RESHAPE_IO_LAYERS", "yes")
        + _param("NUM_INFER_REQUESTS", "3")
    )
    plan = compile_plan(config, cpu_count=2)
    assert plan.properties == {
        "PERFORMANCE_HINT": "THROUGHPUT",
        "NUM_STREAMS": "4",
        "INFERENCE_NUM_THREADS": "8",
        "INFERENCE_PRECISION_HINT": "bf16",
        "ENABLE_CPU_PINNING": "NO",
    }
    assert plan.reshape_io_layers and not plan.skip_dynamic_batch
    assert plan.infer_requests == 3


def test_a_hint_alone_lets_openvino_choose_the_streams():
    plan = compile_plan(_config(_param("PERFORMANCE_HINT", "LATENCY")), cpu_count=4)
    assert "NUM_STREAMS" not in plan.properties
    assert plan.properties["PERFORMANCE_HINT"] == "LATENCY"


def test_devices():
    assert compile_plan(_config(), "KIND_GPU", 1).device == "GPU.1"
    assert compile_plan(_config(_param("TARGET_DEVICE", "AUTO"))).device == "AUTO"
    assert "INFERENCE_PRECISION_HINT" not in compile_plan(_config(), "KIND_GPU", 0).properties


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("PERFORMANCE_HINT", "FAST", "parameter 'PERFORMANCE_HINT': expected LATENCY or"),
        ("NUM_STREAMS", "0", "parameter 'NUM_STREAMS': expected an integer >= 1"),
        ("INFERENCE_NUM_THREADS", "many", "expected an integer >= 0, got 'many'"),
        ("RESHAPE_IO_LAYERS", "maybe", "expected YES or NO, got 'maybe'"),
        ("NUM_INFER_REQUESTS", "0", "parameter 'NUM_INFER_REQUESTS': expected an integer >= 1"),
    ],
)
def test_bad_parameters(key, value, message):
    with pytest.raises(ConfigError, match=message):
        compile_plan(_config(_param(key, value)))


SIGNATURE = Signature.of([TensorInfo("X", "f32", (-1, 16))], [TensorInfo("Y", "f32", (-1, 8))])


def test_complete_config_fills_inputs_outputs_and_batching():
    config = _config()
    complete_config(config, SIGNATURE, default_max_batch_size=4)
    assert config.max_batch_size == 4
    assert [(t.name, list(t.dims)) for t in config.input] == [("X", [16])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("Y", [8])]
    assert config.HasField("dynamic_batching")


def test_complete_config_static_model_does_not_batch():
    static = Signature.of([TensorInfo("X", "i32", (2, 3))], [TensorInfo("Y", "i32", ())])
    config = _config()
    complete_config(config, static)
    assert config.max_batch_size == 0
    assert [list(t.dims) for t in config.input] == [[2, 3]]
    assert [list(t.dims) for t in config.output] == [[1]]
    with pytest.raises(ConfigError, match="does not support batching"):
        complete_config(_config("max_batch_size: 4"), static)


def test_check_config_static_batch_dimension():
    static = Signature.of([TensorInfo("X", "f32", (8, 16))], [TensorInfo("Y", "f32", (8, 8))])
    text = """max_batch_size: 8
    input [ { name: "X" data_type: TYPE_FP32 dims: [ 16 ] } ]
    output [ { name: "Y" data_type: TYPE_FP32 dims: [ 8 ] } ]"""
    check_config(_config(text), static, static_batch=True)
    with pytest.raises(ConfigError, match="first dimension must be dynamic"):
        check_config(_config(text), static)
