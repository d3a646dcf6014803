"""What a PyTorch model's configuration asks for, read without importing torch.

Model ``parameters`` (Triton's pytorch backend names; values are strings, booleans as
``true``/``false``/``1``/``0``):

- ``INFERENCE_MODE`` (default true): run under ``torch.inference_mode()``; false runs under
  ``torch.no_grad()``.
- ``DISABLE_OPTIMIZED_EXECUTION`` (default false): TorchScript models run under
  ``torch.jit.optimized_execution(False)`` (per call, so per model).
- ``ENABLE_JIT_EXECUTOR``, ``ENABLE_JIT_PROFILING``, ``ENABLE_TENSOR_FUSER``: TorchScript executor
  switches; process-wide in PyTorch, applied when given (last model loaded wins, as in Triton).
- ``ENABLE_NVFUSER``: accepted and ignored with a warning (nvFuser was removed from PyTorch).
- ``DISABLE_CUDNN``: ``torch.backends.cudnn.enabled = False``, process-wide.
- ``ENABLE_WEIGHT_SHARING``: instances of the model on the same device share one module.
- ``ENABLE_CACHE_CLEANING``: ``torch.cuda.empty_cache()`` after each GPU execution.
- ``INTRA_OP_THREAD_COUNT``, ``INTER_OP_THREAD_COUNT``: torch's thread counts. Both are
  process-wide in PyTorch (``torch.set_num_threads``, ``torch.set_num_interop_threads``), so
  the last model loaded decides for every model of the process. Without
  ``INTRA_OP_THREAD_COUNT`` a model with CPU instances asks for ``max(1, cores // instances)``,
  so that its instances running at once use about all cores; the inter-op count can be set only
  once per process (later values are logged and ignored).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nereid.config import ConfigError, ModelConfig, boolean_word
from nereid.config.model_config_pb2 import ModelInstanceGroup

BOOL_PARAMETERS = (
    "INFERENCE_MODE",
    "DISABLE_OPTIMIZED_EXECUTION",
    "ENABLE_JIT_EXECUTOR",
    "ENABLE_JIT_PROFILING",
    "ENABLE_TENSOR_FUSER",
    "ENABLE_NVFUSER",
    "DISABLE_CUDNN",
    "ENABLE_WEIGHT_SHARING",
    "ENABLE_CACHE_CLEANING",
)
INT_PARAMETERS = ("INTRA_OP_THREAD_COUNT", "INTER_OP_THREAD_COUNT")


def parameter(config: ModelConfig, key: str) -> str | None:
    """A parameter's string value; keys match case-insensitively, as people write both."""
    for name, value in config.parameters.items():
        if name.upper() == key:
            return value.string_value
    return None


def _bool(config: ModelConfig, key: str) -> bool | None:
    value = parameter(config, key)
    if value is None:
        return None
    flag = boolean_word(value.strip())
    if flag is not None:
        return flag
    raise ConfigError(
        f"model '{config.name}': parameter '{key}': expected true or false, got '{value}'"
    )


def _int(config: ModelConfig, key: str) -> int:
    value = parameter(config, key)
    if value is None or not value.strip():
        return 0
    try:
        number = int(value.strip())
    except ValueError:
        number = -1
    if number < 0:
        raise ConfigError(
            f"model '{config.name}': parameter '{key}': expected an integer >= 0, got '{value}'"
        )
    return number


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cpu_instances(config: ModelConfig) -> int:
    return sum(
        max(1, group.count)
        for group in config.instance_group
        if group.kind in (ModelInstanceGroup.KIND_CPU, ModelInstanceGroup.KIND_AUTO)
    )


@dataclass(frozen=True)
class TorchOptions:
    inference_mode: bool = True
    disable_optimized_execution: bool = False
    jit_executor: bool | None = None
    jit_profiling: bool | None = None
    tensor_fuser: bool | None = None
    nvfuser: bool | None = None
    disable_cudnn: bool = False
    weight_sharing: bool = False
    cache_cleaning: bool = False
    intra_op_threads: int = 0  # 0: leave torch's setting alone
    inter_op_threads: int = 0

    @classmethod
    def of(cls, config: ModelConfig, cpu_count: int | None = None) -> TorchOptions:
        intra = _int(config, "INTRA_OP_THREAD_COUNT")
        instances = cpu_instances(config)
        if intra == 0 and instances:
            cpus = cpu_count if cpu_count is not None else available_cpus()
            intra = max(1, cpus // instances)
        inference = _bool(config, "INFERENCE_MODE")
        return cls(
            inference_mode=True if inference is None else inference,
            disable_optimized_execution=bool(_bool(config, "DISABLE_OPTIMIZED_EXECUTION")),
            jit_executor=_bool(config, "ENABLE_JIT_EXECUTOR"),
            jit_profiling=_bool(config, "ENABLE_JIT_PROFILING"),
            tensor_fuser=_bool(config, "ENABLE_TENSOR_FUSER"),
            nvfuser=_bool(config, "ENABLE_NVFUSER"),
            disable_cudnn=bool(_bool(config, "DISABLE_CUDNN")),
            weight_sharing=bool(_bool(config, "ENABLE_WEIGHT_SHARING")),
            cache_cleaning=bool(_bool(config, "ENABLE_CACHE_CLEANING")),
            intra_op_threads=intra,
            inter_op_threads=_int(config, "INTER_OP_THREAD_COUNT"),
        )
