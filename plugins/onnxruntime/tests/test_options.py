"""Session options and execution providers from the configuration (pure functions: the GPU
mapping is tested here, since no machine of the test suite has onnxruntime-gpu)."""

from __future__ import annotations

import pytest
from nereid.config import ConfigError, parse_pbtxt
from nereid.errors import InvalidArgumentError
from nereid_onnxruntime.options import (
    CPU,
    CUDA,
    OPENVINO,
    TENSORRT,
    execution_providers,
    graph_level,
    instance_total,
    missing_providers,
    session_plan,
    tensorrt_options,
)
from nereid_onnxruntime.settings import BackendSettings


def _config(text: str = ""):
    return parse_pbtxt('name: "m"\n' + text)


def test_cpu_instance_gets_the_cpu_provider_only():
    assert execution_providers(_config(), "KIND_CPU", 0) == [(CPU, {})]


def test_gpu_instance_gets_cuda_on_its_device():
    assert execution_providers(_config(), "KIND_GPU", 3) == [
        (CUDA, {"device_id": "3"}),
        (CPU, {}),
    ]


def test_tensorrt_and_cuda_accelerators():
    config = _config(
        """
        optimization { execution_accelerators {
          gpu_execution_accelerator : [
            { name : "tensorrt"
              parameters { key: "precision_mode" value: "FP16" }
              parameters { key: "max_workspace_size_bytes" value: "1073741824" }
              parameters { key: "trt_engine_cache_enable" value: "true" }
              parameters { key: "trt_engine_cache_path" value: "/tmp/cache" } },
            { name : "cuda"
              parameters { key: "cudnn_conv_use_max_workspace" value: "0" }
              parameters { key: "use_ep_level_unified_stream" value: "1" } }
          ]
        }}
        parameters { key: "cudnn_conv_algo_search" value: { string_value: "1" } }
        parameters { key: "gpu_mem_limit" value: { string_value: "4294967200" } }
        parameters { key: "arena_extend_strategy" value: { string_value: "1" } }
        parameters { key: "do_copy_in_default_stream" value: { string_value: "false" } }
        """
    )
    providers = execution_providers(config, "KIND_GPU", 1)
    assert [name for name, _ in providers] == [TENSORRT, CUDA, CPU]
    assert providers[0][1] == {
        "trt_fp16_enable": "1",
        "trt_max_workspace_size": "1073741824",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": "/tmp/cache",
        "device_id": "1",
    }
    assert providers[1][1] == {
        "cudnn_conv_algo_search": "HEURISTIC",
        "gpu_mem_limit": "4294967200",
        "arena_extend_strategy": "kSameAsRequested",
        "do_copy_in_default_stream": "0",
        "cudnn_conv_use_max_workspace": "0",
        "use_ep_level_unified_stream": "1",
        "device_id": "1",
    }
    # A CPU instance of the same model ignores the GPU accelerators.
    assert execution_providers(config, "KIND_CPU", 0) == [(CPU, {})]


@pytest.mark.parametrize("mode, option", [("INT8", "trt_int8_enable"), ("BF16", "trt_bf16_enable")])
def test_tensorrt_precision_modes(mode, option):
    assert tensorrt_options({"precision_mode": mode}, 0) == {option: "1", "device_id": "0"}
    assert tensorrt_options({"precision_mode": "FP32"}, 2) == {"device_id": "2"}


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"precision_mode": "FP8"}, "unsupported precision mode 'FP8'"),
        ({"no_such_option": "1"}, "unknown parameter 'no_such_option'"),
        ({"trt_dla_core": "x"}, "expected an integer"),
        ({"trt_dump_subgraphs": "maybe"}, "expected a boolean"),
    ],
)
def test_tensorrt_bad_parameters(parameters, message):
    with pytest.raises(InvalidArgumentError, match=message):
        tensorrt_options(parameters, 0)


def test_openvino_cpu_accelerator():
    config = _config(
        """
        optimization { execution_accelerators {
          cpu_execution_accelerator : [ { name : "openvino" } ]
        }}
        """
    )
    assert execution_providers(config, "KIND_CPU", 0) == [
        (OPENVINO, {"device_type": "CPU"}),
        (CPU, {}),
    ]


@pytest.mark.parametrize("which", ["gpu", "cpu"])
def test_unknown_accelerator(which):
    config = _config(
        f"""
        optimization {{ execution_accelerators {{
          {which}_execution_accelerator : [ {{ name : "magic" }} ]
        }}}}
        """
    )
    with pytest.raises(ConfigError, match="unknown Execution Accelerator 'magic'"):
        execution_providers(config, "KIND_GPU", 0)


def test_missing_providers():
    providers = [(CUDA, {}), (CPU, {})]
    assert missing_providers(providers, [CPU]) == [CUDA]
    assert missing_providers(providers, [CUDA, CPU]) == []


@pytest.mark.parametrize(
    "level, name",
    [
        (None, "ORT_ENABLE_ALL"),
        (0, "ORT_ENABLE_ALL"),
        (-1, "ORT_ENABLE_BASIC"),
        (1, "ORT_ENABLE_EXTENDED"),
        (2, "ORT_DISABLE_ALL"),
    ],
)
def test_graph_level(level, name):
    text = "" if level is None else f"optimization {{ graph {{ level: {level} }} }}"
    assert graph_level(_config(text)) == name


def test_default_threads_share_the_cores_between_instances():
    config = _config(
        """
        instance_group [ { kind: KIND_CPU count: 3 }, { kind: KIND_GPU count: 1 gpus: [0, 1] } ]
        """
    )
    assert instance_total(config) == 5
    plan = session_plan(config, "KIND_CPU", 0, cpu_count=16)
    assert plan.intra_op_num_threads == 3  # 16 cores // 5 instances
    assert plan.inter_op_num_threads == 0 and plan.execution_mode == "ORT_SEQUENTIAL"
    assert session_plan(config, "KIND_CPU", 0, cpu_count=2).intra_op_num_threads == 1


def test_thread_and_memory_parameters():
    config = _config(
        """
        instance_group [ { kind: KIND_CPU count: 2 } ]
        parameters { key: "intra_op_thread_count" value: { string_value: "3" } }
        parameters { key: "inter_op_thread_count" value: { string_value: "2" } }
        parameters { key: "execution_mode" value: { string_value: "1" } }
        parameters { key: "enable_mem_arena" value: { string_value: "0" } }
        parameters { key: "enable_mem_pattern" value: { string_value: "true" } }
        parameters { key: "share_session_between_instances" value: { string_value: "1" } }
        parameters { key: "session.use_device_allocator_for_initializers"
                     value: { string_value: "1" } }
        parameters { key: "memory.enable_memory_arena_shrinkage" value: { string_value: "cpu:0" } }
        optimization { graph { level: 1 } }
        """
    )
    plan = session_plan(config, "KIND_CPU", 0, cpu_count=64)
    assert (plan.intra_op_num_threads, plan.inter_op_num_threads) == (3, 2)
    assert plan.execution_mode == "ORT_PARALLEL"
    assert plan.enable_cpu_mem_arena is False and plan.enable_mem_pattern is True
    assert plan.share_session is True
    assert plan.session_config == {"session.use_device_allocator_for_initializers": "1"}
    assert plan.run_config == {"memory.enable_memory_arena_shrinkage": "cpu:0"}
    assert plan.graph_optimization_level == "ORT_ENABLE_EXTENDED"
    assert plan.providers == [(CPU, {})]


def test_global_threadpool_setting():
    settings = BackendSettings.parse(
        {
            "enable-global-threadpool": "1",
            "intra_op_thread_count": "2",
            "default-max-batch-size": "8",
        }
    )
    assert settings.global_threadpool and settings.intra_op_thread_count == 2
    assert settings.default_max_batch_size == 8
    plan = session_plan(_config(), "KIND_CPU", 0, settings, cpu_count=8)
    assert plan.use_per_session_threads is False


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"default-max-batch-size": "-1"}, "default-max-batch-size=-1: expected an integer"),
        ({"enable-global-threadpool": "perhaps"}, "expected a boolean"),
    ],
)
def test_bad_settings(settings, message):
    with pytest.raises(InvalidArgumentError, match=message):
        BackendSettings.parse(settings)


@pytest.mark.parametrize(
    "text, message",
    [
        ('parameters { key: "execution_mode" value: { string_value: "2" } }', "execution_mode"),
        ('parameters { key: "intra_op_thread_count" value: { string_value: "x" } }', "intra_op"),
    ],
)
def test_bad_parameters(text, message):
    with pytest.raises(InvalidArgumentError, match=message):
        session_plan(_config(text), "KIND_CPU", 0, cpu_count=4)
