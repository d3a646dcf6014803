"""Model configuration: Triton's ``ModelConfig`` schema, its loading, defaults and validation."""

from .loading import (
    ConfigError,
    backend_config_from_flags,
    boolean_word,
    config_from_json,
    config_to_json,
    load_config_file,
    parse_pbtxt,
)
from .model_config_pb2 import ModelConfig
from .validation import complete_and_validate, scheduler_name

__all__ = [
    "ConfigError",
    "ModelConfig",
    "backend_config_from_flags",
    "boolean_word",
    "complete_and_validate",
    "config_from_json",
    "config_to_json",
    "load_config_file",
    "parse_pbtxt",
    "scheduler_name",
]
