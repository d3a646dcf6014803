"""From a model configuration to what OpenVINO compiles it with, as Triton's openvino backend
reads its ``parameters``. Pure functions over the config proto; nothing imports openvino.

Model ``parameters`` (string values, Triton's names):

- ``PERFORMANCE_HINT``: ``LATENCY``, ``THROUGHPUT`` or ``CUMULATIVE_THROUGHPUT``.
- ``NUM_STREAMS``: a number of streams (>= 1), ``AUTO`` or ``NUMA``.
- ``INFERENCE_NUM_THREADS``, ``COMPILATION_NUM_THREADS``: thread counts (>= 0).
- ``HINT_BF16``: ``YES`` lets the CPU compute in bfloat16 where it can.
- ``ENABLE_CPU_PINNING``: ``YES``/``NO``.
- ``CPU_EXTENSION_PATH``: a shared library of custom operations.
- ``TARGET_DEVICE``: the OpenVINO device (``CPU`` by default; ``GPU``, ``NPU``, ``AUTO``...).
- ``RESHAPE_IO_LAYERS``: ``YES`` reshapes the model's inputs to the configuration's dims.
- ``SKIP_OV_DYNAMIC_BATCHSIZE``: ``YES`` keeps the batch dimension static, at
  ``max_batch_size``; then ``ENABLE_BATCH_PADDING`` ``YES`` pads smaller batches with zeros.
- ``NUM_INFER_REQUESTS`` (Nereid's own): infer requests per instance (>= 1, default 2), so that
  an instance starts its next batch while OpenVINO still computes the one before.

Defaults (Nereid's, where Triton leaves OpenVINO's): the instances of a model on one device share
one compiled model and each runs its own infer request, so without a hint or ``NUM_STREAMS`` the
compiled model gets one stream per instance, and ``INFERENCE_NUM_THREADS`` defaults to the cores
available (split among the streams, about ``cores // instances`` each): the instances together do
not oversubscribe the CPU. On the CPU the inference precision is f32 unless ``HINT_BF16`` is
``YES`` (OpenVINO would otherwise pick bf16 on CPUs that have it, which changes the answers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from nereid.config import ConfigError, ModelConfig, boolean_word
from nereid.config.model_config_pb2 import ModelInstanceGroup

HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
DEFAULT_INFER_REQUESTS = 2


@dataclass
class CompilePlan:
    """How one model is compiled for one device, and how its batch dimension is handled."""

    device: str = "CPU"
    properties: dict[str, str] = field(default_factory=dict)
    extensions: list[str] = field(default_factory=list)
    reshape_io_layers: bool = False
    skip_dynamic_batch: bool = False
    batch_padding: bool = False
    infer_requests: int = DEFAULT_INFER_REQUESTS


def parameter(config: ModelConfig, key: str) -> str | None:
    return config.parameters[key].string_value.strip() if key in config.parameters else None


def _fail(config: ModelConfig, key: str, value: str, expected: str) -> ConfigError:
    return ConfigError(
        f"unable to load model '{config.name}': parameter '{key}': expected {expected}, "
        f"got '{value}'"
    )


def bool_parameter(config: ModelConfig, key: str) -> bool | None:
    value = parameter(config, key)
    if value is None or value == "":
        return None
    flag = boolean_word(value)
    if flag is not None:
        return flag
    raise _fail(config, key, value, "YES or NO")


def int_parameter(config: ModelConfig, key: str, minimum: int = 0) -> int | None:
    value = parameter(config, key)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise _fail(config, key, value, f"an integer >= {minimum}")
    return number


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def instances_on(config: ModelConfig, kind: int) -> int:
    """How many instances of ``kind`` (CPU counts AUTO without GPUs) the configuration makes."""
    total = 0
    for group in config.instance_group:
        group_kind = group.kind
        if group_kind == ModelInstanceGroup.KIND_AUTO:
            group_kind = ModelInstanceGroup.KIND_GPU if group.gpus else ModelInstanceGroup.KIND_CPU
        if group_kind != kind:
            continue
        devices = len(group.gpus) if group_kind == ModelInstanceGroup.KIND_GPU else 1
        total += max(group.count, 1) * max(devices, 1)
    return max(total, 1)


def device_for(config: ModelConfig, kind: str, device_id: int) -> str:
    """``TARGET_DEVICE`` when given; else ``CPU`` for CPU instances and ``GPU.<id>`` for GPU
    instances."""
    target = parameter(config, "TARGET_DEVICE")
    if target:
        return target
    if kind == "KIND_GPU":
        return f"GPU.{device_id}"
    return "CPU"


def compile_plan(
    config: ModelConfig, kind: str = "KIND_CPU", device_id: int = 0, *, cpu_count: int | None = None
) -> CompilePlan:
    """The compile properties of the model for an instance of ``kind`` on ``device_id``; raises
    :class:`ConfigError` for a parameter it cannot take."""
    plan = CompilePlan(device=device_for(config, kind, device_id))
    props = plan.properties
    on_cpu = plan.device.split(".")[0].upper() == "CPU"

    hint = parameter(config, "PERFORMANCE_HINT")
    if hint:
        if hint.upper() not in HINTS:
            raise _fail(config, "PERFORMANCE_HINT", hint, " or ".join(HINTS))
        props["PERFORMANCE_HINT"] = hint.upper()

    streams = parameter(config, "NUM_STREAMS")
    if streams:
        if streams.upper() in ("AUTO", "NUMA"):
            props["NUM_STREAMS"] = streams.upper()
        else:
            props["NUM_STREAMS"] = str(int_parameter(config, "NUM_STREAMS", minimum=1))
    elif not hint:
        group_kind = (
            ModelInstanceGroup.KIND_GPU if kind == "KIND_GPU" else ModelInstanceGroup.KIND_CPU
        )
        props["NUM_STREAMS"] = str(instances_on(config, group_kind))

    threads = int_parameter(config, "INFERENCE_NUM_THREADS")
    if threads:
        props["INFERENCE_NUM_THREADS"] = str(threads)
    elif on_cpu:
        props["INFERENCE_NUM_THREADS"] = str(
            cpu_count if cpu_count is not None else available_cpus()
        )
    compilation = int_parameter(config, "COMPILATION_NUM_THREADS")
    if compilation:
        props["COMPILATION_NUM_THREADS"] = str(compilation)

    bf16 = bool_parameter(config, "HINT_BF16")
    if bf16:
        props["INFERENCE_PRECISION_HINT"] = "bf16"
    elif on_cpu:
        props["INFERENCE_PRECISION_HINT"] = "f32"
    pinning = bool_parameter(config, "ENABLE_CPU_PINNING")
    if pinning is not None:
        props["ENABLE_CPU_PINNING"] = "YES" if pinning else "NO"

    extension = parameter(config, "CPU_EXTENSION_PATH")
    if extension:
        plan.extensions.append(extension)
    plan.reshape_io_layers = bool(bool_parameter(config, "RESHAPE_IO_LAYERS"))
    plan.skip_dynamic_batch = bool(bool_parameter(config, "SKIP_OV_DYNAMIC_BATCHSIZE"))
    plan.batch_padding = bool(bool_parameter(config, "ENABLE_BATCH_PADDING"))
    requests = int_parameter(config, "NUM_INFER_REQUESTS", minimum=1)
    if requests:
        plan.infer_requests = requests
    return plan
