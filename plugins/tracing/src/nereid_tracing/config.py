"""``--trace-config [mode,]key=value``, as tritonserver parses it, and the deprecated flags.

Global keys: ``rate``, ``level`` (repeatable: TIMESTAMPS and TENSORS add up, OFF disables),
``count``, ``mode`` (``triton`` or ``opentelemetry``). ``triton,`` keys: ``file``,
``log-frequency``. ``opentelemetry,`` keys: ``url``, ``resource`` (``key=value``, repeatable),
``bsp_max_queue_size``, ``bsp_schedule_delay`` (ms), ``bsp_max_export_batch_size``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from nereid.errors import InvalidArgumentError

TIMESTAMPS = 1
TENSORS = 2
LEVELS = {"OFF": 0, "TIMESTAMPS": TIMESTAMPS, "TENSORS": TENSORS}

MODE_TRITON = "triton"
MODE_OPENTELEMETRY = "opentelemetry"
MODES = (MODE_TRITON, MODE_OPENTELEMETRY)

DEFAULT_URL = "http://localhost:4318/v1/traces"
DEFAULT_SERVICE_NAME = "triton-inference-server"

_GLOBAL_KEYS = ("rate", "level", "count", "mode")
_MODE_KEYS = {
    MODE_TRITON: ("file", "log-frequency"),
    MODE_OPENTELEMETRY: (
        "url",
        "resource",
        "bsp_max_queue_size",
        "bsp_schedule_delay",
        "bsp_max_export_batch_size",
    ),
}
_UINT32_MAX = 2**32 - 1
_INT32_MAX = 2**31 - 1


@dataclass
class TraceConfig:
    """Start-up trace configuration: the global defaults and the mode's own settings."""

    level: int = 0
    rate: int = 1000
    count: int = -1
    log_frequency: int = 0
    file: str = ""
    mode: str = MODE_TRITON
    url: str = DEFAULT_URL
    resource: dict[str, str] = field(default_factory=dict)
    bsp_max_queue_size: int = 2048
    bsp_schedule_delay: int = 5000
    bsp_max_export_batch_size: int = 512
    # the opentelemetry settings given on the command line, as given (shown by the settings API)
    otel_given: dict[str, str] = field(default_factory=dict)

    def resource_attributes(self) -> dict[str, str]:
        return {"service.name": DEFAULT_SERVICE_NAME, **self.resource}


def split_entry(text: str) -> tuple[str, str, str]:
    """``[mode,]key=value`` -> (mode or "", key, value); a malformed entry is INVALID_ARG."""
    head, sep, value = text.partition("=")
    if not sep or not head:
        raise InvalidArgumentError(
            f"invalid --trace-config '{text}': expected '[<mode>,]<setting>=<value>'"
        )
    mode, comma, key = head.partition(",")
    if not comma:
        mode, key = "", head
    mode, key = mode.strip().lower(), key.strip()
    if mode and mode not in MODES:
        raise InvalidArgumentError(
            f"invalid --trace-config '{text}': unknown trace mode '{mode}', expected one of "
            + ", ".join(MODES)
        )
    allowed = _MODE_KEYS[mode] if mode else _GLOBAL_KEYS
    if key not in allowed:
        where = f"'{mode}' mode" if mode else "the global settings (no mode prefix)"
        raise InvalidArgumentError(
            f"invalid --trace-config '{text}': '{key}' is not a setting of {where}; expected one "
            "of " + ", ".join(allowed)
        )
    return mode, key, value.strip()


def parse_int(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise InvalidArgumentError(f"Unable to parse '{name}', got: {value}") from None
    if not low <= number <= high:
        raise InvalidArgumentError(
            f"Unable to parse '{name}', value is out of range [ {low}, {high} ], got: {value}"
        )
    return number


def parse_level(values: list[str], current: int = 0) -> int:
    """Levels named in ``values`` added to ``current``; ``OFF`` alone disables."""
    level = current
    for value in values:
        name = str(value).strip().upper()
        if name not in LEVELS:
            raise InvalidArgumentError(
                f"invalid trace level '{value}', expected OFF, TIMESTAMPS or TENSORS"
            )
        if name == "OFF":
            if len(values) > 1:
                raise InvalidArgumentError("Expect only one trace level 'OFF' is specified")
            level = 0
        else:
            level |= LEVELS[name]
    return level


def level_names(level: int) -> list[str]:
    if not level:
        return ["OFF"]
    return [name for name, bit in LEVELS.items() if bit and level & bit]


def trace_config_entry(text: str) -> str:
    """argparse ``type=`` for ``--trace-config``: checks the form, keeps the text."""
    try:
        split_entry(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


def _entries(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def tracing_requested(options: argparse.Namespace) -> bool:
    """Whether any trace flag was given (tracing is installed only then)."""
    return bool(
        _entries(getattr(options, "trace_config", None))
        or getattr(options, "trace_file", None)
        or _entries(getattr(options, "trace_level", None))
        or getattr(options, "trace_rate", None) is not None
        or getattr(options, "trace_count", None) is not None
        or getattr(options, "trace_log_frequency", None) is not None
    )


def parse_options(options: argparse.Namespace) -> TraceConfig:
    """The start-up configuration: the deprecated flags first, then ``--trace-config``."""
    config = TraceConfig()
    if getattr(options, "trace_file", None):
        config.file = str(options.trace_file)
    levels = _entries(getattr(options, "trace_level", None))
    if levels:
        config.level = parse_level(levels)
    if getattr(options, "trace_rate", None) is not None:
        config.rate = parse_int(options.trace_rate, "trace_rate", 0, _UINT32_MAX)
    if getattr(options, "trace_count", None) is not None:
        config.count = parse_int(options.trace_count, "trace_count", -1, _INT32_MAX)
    if getattr(options, "trace_log_frequency", None) is not None:
        config.log_frequency = parse_int(
            options.trace_log_frequency, "log_frequency", 0, _UINT32_MAX
        )
    level_given = False
    for text in _entries(getattr(options, "trace_config", None)):
        mode, key, value = split_entry(text)
        if not mode:
            if key == "rate":
                config.rate = parse_int(value, "rate", 0, _UINT32_MAX)
            elif key == "count":
                config.count = parse_int(value, "count", -1, _INT32_MAX)
            elif key == "mode":
                if value.lower() not in MODES:
                    raise InvalidArgumentError(
                        f"invalid trace mode '{value}', expected one of " + ", ".join(MODES)
                    )
                config.mode = value.lower()
            else:  # level: repeated entries add up, as tritonserver's flag does
                config.level = parse_level([value], config.level if level_given else 0)
                level_given = True
        elif mode == MODE_TRITON:
            if key == "file":
                config.file = value
            else:
                config.log_frequency = parse_int(value, "log-frequency", 0, _UINT32_MAX)
        else:
            _opentelemetry_entry(config, key, value)
    if config.bsp_max_export_batch_size > config.bsp_max_queue_size:
        raise InvalidArgumentError(
            "bsp_max_export_batch_size must be less than or equal to bsp_max_queue_size"
        )
    return config


def _opentelemetry_entry(config: TraceConfig, key: str, value: str) -> None:
    if key == "url":
        config.url = normalize_url(value)
        config.otel_given[key] = value
    elif key == "resource":
        name, sep, attr = value.partition("=")
        if not sep or not name:
            raise InvalidArgumentError(
                f"invalid opentelemetry resource '{value}', expected <key>=<value>"
            )
        config.resource[name.strip()] = attr.strip()
        config.otel_given[key] = ",".join(f"{k}={v}" for k, v in config.resource.items())
    else:
        low = 0 if key == "bsp_schedule_delay" else 1
        setattr(config, key, parse_int(value, key, low, _UINT32_MAX))
        config.otel_given[key] = value


def normalize_url(value: str) -> str:
    """A full OTLP/HTTP traces URL from ``host:port`` or a URL (``/v1/traces`` by default)."""
    url = value.strip()
    if "://" not in url:
        url = "http://" + url
    scheme, _, rest = url.partition("://")
    if "/" not in rest:
        url = f"{scheme}://{rest}/v1/traces"
    return url
