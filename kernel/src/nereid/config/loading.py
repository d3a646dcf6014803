"""Reading and writing model configurations: ``config.pbtxt`` text format and JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format

from ..errors import InvalidArgumentError
from .model_config_pb2 import ModelConfig


class ConfigError(InvalidArgumentError):
    """An invalid model configuration; the message names the file and the field."""


_BOOLEAN_WORDS = dict.fromkeys(("1", "true", "yes", "on"), True) | dict.fromkeys(
    ("0", "false", "no", "off"), False
)


def boolean_word(value: str) -> bool | None:
    """The truth a flag or parameter value spells, as tritonserver reads them (``1``/``0``,
    ``true``/``false``, ``yes``/``no``, ``on``/``off``, any case), or ``None`` for any other
    word: each caller says in its own words what it expected."""
    return _BOOLEAN_WORDS.get(value.lower())


def parse_pbtxt(text: str, source: str = "config.pbtxt") -> ModelConfig:
    config = ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def load_config_file(path: Path) -> ModelConfig:
    """A configuration file: protobuf text format, or JSON when the file name ends in .json."""
    text = path.read_text()
    if path.suffix == ".json":
        return config_from_json(text, str(path))
    return parse_pbtxt(text, str(path))


def config_from_json(text: str | dict[str, Any], source: str = "config") -> ModelConfig:
    """A configuration from Triton's JSON form (proto field names, ints as numbers or strings)."""
    config = ModelConfig()
    try:
        data = json.loads(text) if isinstance(text, str) else text
        json_format.ParseDict(data, config)
    except (json.JSONDecodeError, json_format.ParseError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def config_to_json(config: ModelConfig) -> dict[str, Any]:
    """Triton's JSON rendering: proto field names, every field printed, 64-bit ints as numbers."""
    data = json_format.MessageToDict(
        config,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return _ints_as_numbers(config, data)


def _ints_as_numbers(message: Any, data: Any) -> Any:
    """proto3 JSON writes 64-bit integers as strings; Triton writes them as numbers."""
    if not isinstance(data, dict):
        return data
    for fd in message.DESCRIPTOR.fields:
        if fd.name not in data:
            continue
        value = data[fd.name]
        if fd.message_type is not None:
            sub = getattr(message, fd.name)
            if fd.message_type.GetOptions().map_entry:
                value_fd = fd.message_type.fields_by_name["value"]
                if value_fd.message_type is not None:
                    data[fd.name] = {k: _ints_as_numbers(sub[k], v) for k, v in value.items()}
            elif fd.is_repeated:
                data[fd.name] = [_ints_as_numbers(m, v) for m, v in zip(sub, value, strict=False)]
            else:
                data[fd.name] = _ints_as_numbers(sub, value)
        elif fd.cpp_type in (fd.CPPTYPE_INT64, fd.CPPTYPE_UINT64):
            data[fd.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
    return data


def backend_config_from_flags(flags: Iterable[str]) -> dict[str, dict[str, str]]:
    """``--backend-config`` values: ``<backend>,<key>=<value>`` for one backend, or
    ``<key>=<value>`` for every backend (kept under ``""``)."""
    settings: dict[str, dict[str, str]] = {}
    for flag in flags:
        backend, sep, setting = flag.partition(",")
        if not sep:
            backend, setting = "", flag
        key, eq, value = setting.partition("=")
        if not eq or not key:
            raise InvalidArgumentError(
                f"--backend-config option format is '<backend name>,<setting>=<value>', "
                f"got '{flag}'"
            )
        settings.setdefault(backend, {})[key] = value
    return settings
