"""From a model configuration and one instance to onnxruntime session options and execution
providers, as Triton's onnxruntime backend reads them. Pure functions over the config proto:
the backend turns a :class:`SessionPlan` into ``ort.SessionOptions`` and a providers list.

Model ``parameters`` (string values, Triton's names):

- ``intra_op_thread_count``, ``inter_op_thread_count``: thread counts of each session. When not
  given (or 0) a session gets ``max(1, cores // instances)`` intra-op threads, ``instances``
  being every instance of the model, so that the instances together do not oversubscribe the
  machine (Triton leaves 0, which lets each session take every core).
- ``execution_mode``: 0 sequential (default), 1 parallel.
- ``enable_mem_arena``, ``enable_mem_pattern``: booleans.
- ``session.*`` keys (e.g. ``session.use_device_allocator_for_initializers``): session
  configuration entries; ``memory.enable_memory_arena_shrinkage``: a run configuration entry.
- ``share_session_between_instances``: one session per instance group instead of one per
  instance.
- Deprecated CUDA keys ``cudnn_conv_algo_search`` (0/1/2), ``gpu_mem_limit``,
  ``arena_extend_strategy`` (0/1), ``do_copy_in_default_stream``.

``optimization.graph.level``: -1 basic, 1 extended, 2 none, anything else (0, absent) all.

``optimization.execution_accelerators``: ``gpu_execution_accelerator`` ``tensorrt`` (Triton's
parameter names, mapped to the TensorRT provider's options) and ``cuda`` (CUDA provider
options as given) for KIND_GPU instances, which always get the CUDA provider on their device;
``cpu_execution_accelerator`` ``openvino`` (its parameters passed to the OpenVINO provider,
``device_type`` CPU by default). The CPU provider always comes last.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from nereid.config import ConfigError, ModelConfig
from nereid.config.model_config_pb2 import ModelInstanceGroup

from .settings import BackendSettings, parse_bool, parse_int

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"

# Where each provider comes from, for the error when it is missing.
PROVIDER_DISTRIBUTIONS = {
    CUDA: "onnxruntime-gpu",
    TENSORRT: "onnxruntime-gpu (built with TensorRT)",
    OPENVINO: "onnxruntime-openvino",
}

GRAPH_LEVELS = {-1: "ORT_ENABLE_BASIC", 1: "ORT_ENABLE_EXTENDED", 2: "ORT_DISABLE_ALL"}
DEFAULT_GRAPH_LEVEL = "ORT_ENABLE_ALL"

Providers = list[tuple[str, dict[str, str]]]


@dataclass
class SessionPlan:
    """Everything one session is made with."""

    graph_optimization_level: str = DEFAULT_GRAPH_LEVEL
    execution_mode: str = "ORT_SEQUENTIAL"
    intra_op_num_threads: int = 1
    inter_op_num_threads: int = 0
    use_per_session_threads: bool = True
    enable_cpu_mem_arena: bool | None = None
    enable_mem_pattern: bool | None = None
    session_config: dict[str, str] = field(default_factory=dict)
    run_config: dict[str, str] = field(default_factory=dict)
    providers: Providers = field(default_factory=list)
    custom_op_libraries: list[str] = field(default_factory=list)
    share_session: bool = False


def parameter(config: ModelConfig, key: str) -> str | None:
    return config.parameters[key].string_value if key in config.parameters else None


def _int_parameter(config: ModelConfig, key: str, default: int = 0) -> int:
    value = parameter(config, key)
    if value is None or value == "":
        return default
    return parse_int(value, f"model '{config.name}' parameter '{key}'")


def _bool_parameter(config: ModelConfig, key: str) -> bool | None:
    value = parameter(config, key)
    if value is None:
        return None
    return parse_bool(value, f"model '{config.name}' parameter '{key}'")


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def instance_total(config: ModelConfig) -> int:
    """How many instances (so sessions running at once) the configuration makes."""
    total = 0
    for group in config.instance_group:
        devices = len(group.gpus) if group.kind == ModelInstanceGroup.KIND_GPU else 1
        total += max(group.count, 1) * max(devices, 1)
    return max(total, 1)


def graph_level(config: ModelConfig) -> str:
    """``optimization.graph.level`` as a ``GraphOptimizationLevel`` name (Triton's mapping)."""
    if not config.optimization.HasField("graph"):
        return DEFAULT_GRAPH_LEVEL
    return GRAPH_LEVELS.get(config.optimization.graph.level, DEFAULT_GRAPH_LEVEL)


def session_plan(
    config: ModelConfig,
    kind: str,
    device_id: int,
    settings: BackendSettings | None = None,
    *,
    cpu_count: int | None = None,
) -> SessionPlan:
    """The session for one instance (``kind`` ``KIND_CPU``/``KIND_GPU``/``KIND_MODEL``)."""
    settings = settings or BackendSettings()
    cpus = cpu_count if cpu_count is not None else available_cpus()
    plan = SessionPlan(graph_optimization_level=graph_level(config))
    mode = _int_parameter(config, "execution_mode")
    if mode not in (0, 1):
        raise ConfigError(
            f"model '{config.name}' parameter 'execution_mode': expected 0 (sequential) or 1 "
            f"(parallel), got {mode}"
        )
    plan.execution_mode = "ORT_PARALLEL" if mode == 1 else "ORT_SEQUENTIAL"
    budget = max(1, cpus // instance_total(config))
    if settings.global_threadpool:
        plan.use_per_session_threads = False
        plan.intra_op_num_threads = plan.inter_op_num_threads = 0
    else:
        plan.intra_op_num_threads = _int_parameter(config, "intra_op_thread_count") or budget
        inter = _int_parameter(config, "inter_op_thread_count")
        plan.inter_op_num_threads = inter or (budget if mode == 1 else 0)
    plan.enable_cpu_mem_arena = _bool_parameter(config, "enable_mem_arena")
    plan.enable_mem_pattern = _bool_parameter(config, "enable_mem_pattern")
    for key, value in config.parameters.items():
        if key.startswith("session."):
            plan.session_config[key] = value.string_value
    shrink = parameter(config, "memory.enable_memory_arena_shrinkage")
    if shrink is not None:
        plan.run_config["memory.enable_memory_arena_shrinkage"] = shrink
    plan.share_session = bool(_bool_parameter(config, "share_session_between_instances"))
    plan.custom_op_libraries = list(config.model_operations.op_library_filename)
    plan.providers = execution_providers(config, kind, device_id)
    return plan


# -- execution providers ----------------------------------------------------------------------


def execution_providers(config: ModelConfig, kind: str, device_id: int) -> Providers:
    """The providers, most preferred first, for an instance of ``kind`` on ``device_id``."""
    providers: Providers = []
    accelerators = config.optimization.execution_accelerators
    if kind in ("KIND_GPU", "KIND_AUTO"):
        cuda: dict[str, str] = {}
        for accelerator in accelerators.gpu_execution_accelerator:
            if accelerator.name == "tensorrt":
                providers.append((TENSORRT, tensorrt_options(accelerator.parameters, device_id)))
            elif accelerator.name == "cuda":
                cuda.update(_checked_cuda(accelerator.parameters))
            else:
                raise ConfigError(
                    f"model '{config.name}': unknown Execution Accelerator "
                    f"'{accelerator.name}' is requested (gpu_execution_accelerator takes "
                    "'tensorrt' and 'cuda')"
                )
        providers.append((CUDA, cuda_options(config, cuda, device_id)))
    for accelerator in accelerators.cpu_execution_accelerator:
        if accelerator.name == "openvino":
            providers.append((OPENVINO, {"device_type": "CPU", **dict(accelerator.parameters)}))
        else:
            raise ConfigError(
                f"model '{config.name}': unknown Execution Accelerator '{accelerator.name}' is "
                "requested (cpu_execution_accelerator takes 'openvino')"
            )
    providers.append((CPU, {}))
    return providers


# Triton's TensorRT accelerator parameters: name -> (provider option, kind).
_TRT_PARAMETERS = {
    "max_workspace_size_bytes": ("trt_max_workspace_size", "uint"),
    "trt_max_partition_iterations": ("trt_max_partition_iterations", "int"),
    "trt_min_subgraph_size": ("trt_min_subgraph_size", "int"),
    "int8_calibration_table_name": ("trt_int8_calibration_table_name", "str"),
    "int8_use_native_calibration_table": ("trt_int8_use_native_calibration_table", "bool"),
    "trt_dla_enable": ("trt_dla_enable", "bool"),
    "trt_dla_core": ("trt_dla_core", "int"),
    "trt_engine_cache_enable": ("trt_engine_cache_enable", "bool"),
    "trt_engine_cache_path": ("trt_engine_cache_path", "str"),
    "trt_engine_cache_prefix": ("trt_engine_cache_prefix", "str"),
    "trt_dump_subgraphs": ("trt_dump_subgraphs", "bool"),
    "trt_force_sequential_engine_build": ("trt_force_sequential_engine_build", "bool"),
    "trt_context_memory_sharing_enable": ("trt_context_memory_sharing_enable", "bool"),
    "trt_layer_norm_fp32_fallback": ("trt_layer_norm_fp32_fallback", "bool"),
    "trt_timing_cache_enable": ("trt_timing_cache_enable", "bool"),
    "trt_timing_cache_path": ("trt_timing_cache_path", "str"),
    "trt_force_timing_cache": ("trt_force_timing_cache", "bool"),
    "trt_detailed_build_log": ("trt_detailed_build_log", "bool"),
    "trt_build_heuristics_enable": ("trt_build_heuristics_enable", "bool"),
    "trt_sparsity_enable": ("trt_sparsity_enable", "bool"),
    "trt_builder_optimization_level": ("trt_builder_optimization_level", "int"),
    "trt_auxiliary_streams": ("trt_auxiliary_streams", "int"),
    "trt_tactic_sources": ("trt_tactic_sources", "str"),
    "trt_extra_plugin_lib_paths": ("trt_extra_plugin_lib_paths", "str"),
    "trt_profile_min_shapes": ("trt_profile_min_shapes", "str"),
    "trt_profile_max_shapes": ("trt_profile_max_shapes", "str"),
    "trt_profile_opt_shapes": ("trt_profile_opt_shapes", "str"),
    "trt_cuda_graph_enable": ("trt_cuda_graph_enable", "bool"),
    "trt_dump_ep_context_model": ("trt_dump_ep_context_model", "bool"),
    "trt_ep_context_file_path": ("trt_ep_context_file_path", "str"),
    "trt_ep_context_embed_mode": ("trt_ep_context_embed_mode", "int"),
}
_PRECISION_MODES = {"FP16": "trt_fp16_enable", "BF16": "trt_bf16_enable", "INT8": "trt_int8_enable"}


def tensorrt_options(parameters: dict[str, str], device_id: int) -> dict[str, str]:
    """Triton's ``tensorrt`` accelerator parameters as TensorRT provider options."""
    options: dict[str, str] = {}
    for key, value in parameters.items():
        what = f"TensorRT Execution Accelerator parameter '{key}'"
        if key == "precision_mode":
            if value in _PRECISION_MODES:
                options[_PRECISION_MODES[value]] = "1"
            elif value != "FP32":
                raise ConfigError(f"{what}: unsupported precision mode '{value}' is requested")
            continue
        if key not in _TRT_PARAMETERS:
            raise ConfigError(
                f"unknown parameter '{key}' is provided for TensorRT Execution Accelerator"
            )
        option, kind = _TRT_PARAMETERS[key]
        if kind == "bool":
            value = "1" if parse_bool(value, what) else "0"
        elif kind == "uint":
            value = str(parse_int(value, what, minimum=0))
        elif kind == "int":
            value = str(parse_int(value, what, minimum=-(2**31)))
        if value != "":
            options[option] = value
    options["device_id"] = str(device_id)
    return options


_CUDA_BOOLS = ("do_copy_in_default_stream", "use_ep_level_unified_stream")


def _checked_cuda(parameters: dict[str, str]) -> dict[str, str]:
    """The ``cuda`` accelerator's parameters: passed as CUDA provider options (booleans
    checked)."""
    options = {}
    for key, value in parameters.items():
        if key in _CUDA_BOOLS:
            parse_bool(value, f"CUDA Execution Accelerator parameter '{key}'")
        if value != "":
            options[key] = value
    return options


_CONV_ALGO = {0: "EXHAUSTIVE", 1: "HEURISTIC", 2: "DEFAULT"}
_ARENA_STRATEGY = {0: "kNextPowerOfTwo", 1: "kSameAsRequested"}


def cuda_options(
    config: ModelConfig, accelerator: dict[str, str], device_id: int
) -> dict[str, str]:
    """CUDA provider options: the deprecated model parameters, then the ``cuda`` accelerator's
    parameters, then the instance's device."""
    options: dict[str, str] = {}
    algo = parameter(config, "cudnn_conv_algo_search")
    if algo is not None:
        number = parse_int(algo, "model parameter 'cudnn_conv_algo_search'")
        if number not in _CONV_ALGO:
            raise ConfigError(f"unsupported cudnn_conv_algo_search value '{algo}' is requested")
        options["cudnn_conv_algo_search"] = _CONV_ALGO[number]
    limit = parameter(config, "gpu_mem_limit")
    if limit is not None:
        options["gpu_mem_limit"] = str(parse_int(limit, "model parameter 'gpu_mem_limit'"))
    strategy = parameter(config, "arena_extend_strategy")
    if strategy is not None:
        number = parse_int(strategy, "model parameter 'arena_extend_strategy'")
        if number not in _ARENA_STRATEGY:
            raise ConfigError(f"unsupported arena_extend_strategy value '{strategy}' is requested")
        options["arena_extend_strategy"] = _ARENA_STRATEGY[number]
    copy = parameter(config, "do_copy_in_default_stream")
    if copy is not None:
        flag = parse_bool(copy, "model parameter 'do_copy_in_default_stream'")
        options["do_copy_in_default_stream"] = "1" if flag else "0"
    options.update(accelerator)
    options["device_id"] = str(device_id)
    return options


def missing_providers(providers: Providers, available: list[str]) -> list[str]:
    return [name for name, _ in providers if name not in available]
