"""Triton's defaults and validation rules for a model configuration.

Each rule raises :class:`ConfigError` with the source file and the field it is about, so a user
can find the line to fix.
"""

from __future__ import annotations

from .loading import ConfigError
from .model_config_pb2 import DataType as ProtoDataType
from .model_config_pb2 import ModelConfig, ModelInstanceGroup

ENSEMBLE_PLATFORM = "ensemble"

# Where the backends and schedulers a config may name come from, for the "not installed" error.
KNOWN_BACKEND_DISTRIBUTIONS = {
    "onnxruntime": "nereid-onnxruntime",
    "python": "nereid-python",
    "pytorch": "nereid-pytorch",
    "openvino": "nereid-openvino",
    "fil": "nereid-fil",
    "tensorrt": "nereid-tensorrt",
}
KNOWN_PLATFORMS = {
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
    "tensorrt_plan": "tensorrt",
}
KNOWN_SCHEDULER_DISTRIBUTIONS = {
    "dynamic": "nereid-dynamic-batcher",
    "sequence": "nereid-sequence-batcher",
    "ensemble": "nereid-ensemble",
}


def scheduler_name(config: ModelConfig) -> str:
    """The scheduler a configuration selects: ensemble, sequence, dynamic, or default."""
    if config.platform == ENSEMBLE_PLATFORM or config.HasField("ensemble_scheduling"):
        return "ensemble"
    if config.HasField("sequence_batching"):
        return "sequence"
    if config.HasField("dynamic_batching"):
        return "dynamic"
    return "default"


def missing_backend_error(name: str, source: str) -> ConfigError:
    backend = KNOWN_PLATFORMS.get(name, name)
    dist = KNOWN_BACKEND_DISTRIBUTIONS.get(backend)
    hint = f"; install the '{dist}' distribution" if dist else ""
    return ConfigError(f"{source}: backend '{name}' is not installed{hint}")


def missing_scheduler_error(name: str, source: str) -> ConfigError:
    dist = KNOWN_SCHEDULER_DISTRIBUTIONS.get(name)
    hint = f"; install the '{dist}' distribution" if dist else ""
    return ConfigError(f"{source}: scheduler '{name}' is not installed{hint}")


def complete_and_validate(config: ModelConfig, model_name: str, source: str) -> ModelConfig:
    """Fill in Triton's defaults, then check every rule. Changes ``config`` in place."""
    _apply_defaults(config, model_name, source)
    _validate(config, source)
    return config


def _apply_defaults(config: ModelConfig, model_name: str, source: str) -> None:
    if not config.name:
        config.name = model_name
    elif config.name != model_name:
        raise ConfigError(
            f"{source}: field 'name': model name '{config.name}' must match the model "
            f"directory name '{model_name}'"
        )
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    if config.platform == ENSEMBLE_PLATFORM:
        return  # an ensemble has no instances
    if not config.instance_group:
        config.instance_group.add()
    for index, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{config.name}_{index}"
        if group.kind == ModelInstanceGroup.KIND_AUTO:
            group.kind = ModelInstanceGroup.KIND_GPU if group.gpus else ModelInstanceGroup.KIND_CPU
        if group.count == 0:
            group.count = 1


def _validate(config: ModelConfig, source: str) -> None:
    def fail(field: str, message: str) -> ConfigError:
        return ConfigError(f"{source}: field '{field}': {message}")

    if config.max_batch_size < 0:
        raise fail("max_batch_size", f"must be >= 0, got {config.max_batch_size}")
    batching = config.max_batch_size > 0
    if config.platform == ENSEMBLE_PLATFORM and not config.HasField("ensemble_scheduling"):
        raise fail("ensemble_scheduling", "an ensemble model must specify 'ensemble_scheduling'")
    if config.HasField("ensemble_scheduling") and config.platform != ENSEMBLE_PLATFORM:
        raise fail("platform", "'ensemble_scheduling' needs platform \"ensemble\"")
    if config.HasField("dynamic_batching"):
        if not batching:
            raise fail("dynamic_batching", "needs 'max_batch_size' > 0")
        for size in config.dynamic_batching.preferred_batch_size:
            if size < 1 or size > config.max_batch_size:
                raise fail(
                    "dynamic_batching.preferred_batch_size",
                    f"{size} must be between 1 and max_batch_size {config.max_batch_size}",
                )

    _validate_version_policy(config, fail)
    for kind, tensors in (("input", config.input), ("output", config.output)):
        seen: set[str] = set()
        for tensor in tensors:
            where = f"{kind} '{tensor.name}'"
            if not tensor.name:
                raise fail(kind, f"model {kind} must specify 'name'")
            if tensor.name in seen:
                raise fail(kind, f"{kind} '{tensor.name}' is declared twice")
            seen.add(tensor.name)
            if tensor.data_type == ProtoDataType.TYPE_INVALID:
                raise fail(f"{where}.data_type", f"model {where} must specify 'data_type'")
            _validate_dims(tensor, where, batching, fail)

    for index, group in enumerate(config.instance_group):
        if group.count < 1:
            raise fail(f"instance_group[{index}].count", f"must be >= 1, got {group.count}")
        if group.kind == ModelInstanceGroup.KIND_CPU and group.gpus:
            raise fail(f"instance_group[{index}].gpus", "KIND_CPU instances cannot list 'gpus'")
        for gpu in group.gpus:
            if gpu < 0:
                raise fail(f"instance_group[{index}].gpus", f"invalid GPU id {gpu}")


def _validate_version_policy(config: ModelConfig, fail) -> None:
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "latest" and policy.latest.num_versions < 1:
        raise fail(
            "version_policy.latest.num_versions",
            f"must be >= 1, got {policy.latest.num_versions}",
        )
    if which == "specific":
        if not policy.specific.versions:
            raise fail("version_policy.specific.versions", "must list at least one version")
        for version in policy.specific.versions:
            if version < 1:
                raise fail("version_policy.specific.versions", f"invalid version {version}")


def _validate_dims(tensor, where: str, batching: bool, fail) -> None:
    dims = list(tensor.dims)
    has_reshape = tensor.HasField("reshape")
    if not dims and not (batching and has_reshape):
        raise fail(f"{where}.dims", f"model {where} must specify 'dims'")
    for dim in dims:
        if dim == 0 or dim < -1:
            raise fail(f"{where}.dims", f"dimension must be >= 1 or -1, got {dim}")
    if not has_reshape:
        return
    shape = list(tensor.reshape.shape)
    for dim in shape:
        if dim == 0 or dim < -1:
            raise fail(f"{where}.reshape.shape", f"dimension must be >= 1 or -1, got {dim}")
    if (-1 in dims) != (-1 in shape):
        raise fail(
            f"{where}.reshape",
            f"reshape {shape} and dims {dims} must both have or both lack variable-size (-1) "
            "dimensions",
        )
    if -1 not in dims and _count(dims) != _count(shape):
        raise fail(
            f"{where}.reshape",
            f"reshape {shape} has {_count(shape)} elements but dims {dims} has {_count(dims)}",
        )


def _count(shape: list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count
