"""Trace settings: the global setting and per-model overrides, with Triton's update rules.

A model setting holds the fields set for the model; the others mirror the global setting and
follow it when it changes. Clearing a field (``null`` over HTTP, an empty value over gRPC) makes
it mirror again (for the global setting: go back to the start-up value); a model left with no
field of its own uses the global setting. Settings are objects that are replaced, never
changed, except for the sampling countdown and the remaining ``count`` they carry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nereid.errors import InvalidArgumentError, UnsupportedError

from .config import (
    MODE_TRITON,
    TENSORS,
    TraceConfig,
    level_names,
    parse_int,
    parse_level,
)

FIELDS = ("level", "rate", "count", "log_frequency", "file")
# The settings API's names for the fields.
API_NAMES = {
    "trace_level": "level",
    "trace_rate": "rate",
    "trace_count": "count",
    "log_frequency": "log_frequency",
    "trace_file": "file",
}
# A countdown that never runs out: the setting does not sample.
NEVER = 1 << 62
_CLEAR = object()
_OTEL_KEYS = (
    "url",
    "resource",
    "bsp_max_queue_size",
    "bsp_schedule_delay",
    "bsp_max_export_batch_size",
)
_RANGES = {"rate": (0, 2**32 - 1), "count": (-1, 2**31 - 1), "log_frequency": (0, 2**32 - 1)}


class TraceSetting:
    """One effective setting (global or a model's) and its sampling state.

    ``left`` counts down the requests until the next sampled one (``rate``: every rate-th
    request); ``count`` is the number of traces still to take (-1: no limit).
    """

    __slots__ = ("count", "file", "left", "level", "log_frequency", "rate", "specified")

    def __init__(self, values: dict[str, Any], specified: frozenset[str], mode: str) -> None:
        self.level: int = values["level"]
        self.rate: int = values["rate"]
        self.count: int = values["count"]
        self.log_frequency: int = values["log_frequency"]
        self.file: str = values["file"]
        self.specified = specified
        self.left = self.rate if self.invalid_reason(mode) is None and self.count != 0 else NEVER

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}

    def invalid_reason(self, mode: str) -> str | None:
        if not self.level:
            return "tracing is disabled"
        if self.rate == 0:
            return "sample rate must be non-zero"
        if mode == MODE_TRITON and not self.file:
            return "trace file name is not given"
        return None

    @property
    def tensors(self) -> bool:
        return bool(self.level & TENSORS)


class SettingsRegistry:
    """The global setting, the start-up default it falls back to, and per-model settings."""

    def __init__(self, config: TraceConfig, on_change: Callable[[], None] | None = None) -> None:
        self.config = config
        self.mode = config.mode
        values = {
            "level": config.level,
            "rate": config.rate,
            "count": config.count,
            "log_frequency": config.log_frequency,
            "file": config.file,
        }
        self.default = TraceSetting(values, frozenset(), self.mode)
        self.global_ = TraceSetting(values, frozenset(), self.mode)
        self.models: dict[str, TraceSetting] = {}
        # models with a setting of their own that still mirrors some global fields
        self._mirroring: set[str] = set()
        self._on_change = on_change

    def setting(self, model_name: str = "") -> TraceSetting:
        return self.models.get(model_name, self.global_) if model_name else self.global_

    # -- the settings API ------------------------------------------------------------------------

    def get(self, model_name: str = "") -> dict[str, Any]:
        """The setting in the trace extension's shape (strings, and a list for the level)."""
        s = self.setting(model_name)
        doc: dict[str, Any] = {
            "trace_level": level_names(s.level),
            "trace_rate": str(s.rate),
            "trace_count": str(s.count),
        }
        if self.mode == MODE_TRITON:
            doc["log_frequency"] = str(s.log_frequency)
            doc["trace_file"] = s.file
        doc["trace_mode"] = self.mode
        if self.mode != MODE_TRITON:
            config = self.config
            doc["url"] = config.url
            doc["resource"] = ",".join(f"{k}={v}" for k, v in config.resource_attributes().items())
            doc["bsp_max_queue_size"] = str(config.bsp_max_queue_size)
            doc["bsp_schedule_delay"] = str(config.bsp_schedule_delay)
            doc["bsp_max_export_batch_size"] = str(config.bsp_max_export_batch_size)
        return doc

    def update(self, model_name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply changes given in the API's shape: a value (a string, or a list of strings; the
        level may list several) sets a field, ``None`` or an empty list clears it."""
        new = self._parse(changes)
        if new:
            self._update(model_name, new)
            if not model_name:
                # the models that mirror global fields pick up the new values
                for name in list(self._mirroring):
                    self._update(name, {})
            if self._on_change is not None:
                self._on_change()
        return self.get(model_name)

    def _parse(self, changes: dict[str, Any]) -> dict[str, Any]:
        new: dict[str, Any] = {}
        for key, raw in changes.items():
            value = raw
            if isinstance(value, list | tuple) and key != "trace_level":
                if len(value) > 1:
                    raise InvalidArgumentError(f"expect a single value for '{key}'")
                value = value[0] if value else None
            elif isinstance(value, list | tuple) and not value:
                value = None
            if key == "trace_file":
                if value is not None:
                    raise UnsupportedError(
                        "trace file location can not be updated through network protocol"
                    )
                continue
            name = API_NAMES.get(key)
            if name is None:
                if key == "trace_mode" or key in _OTEL_KEYS:
                    raise UnsupportedError(f"trace setting '{key}' can not be updated at run time")
                raise InvalidArgumentError(f"unknown trace setting '{key}'")
            if value is None:
                new[name] = _CLEAR
            elif name == "level":
                levels = value if isinstance(value, list | tuple) else [value]
                if not all(isinstance(item, str) for item in levels):
                    raise InvalidArgumentError("expect a list of strings for 'trace_level'")
                new[name] = parse_level(list(levels))
            else:
                if isinstance(value, bool) or not isinstance(value, str | int):
                    raise InvalidArgumentError(f"expect a string for '{key}'")
                low, high = _RANGES[name]
                new[name] = parse_int(value, key, low, high)
        return new

    def _update(self, model_name: str, new: dict[str, Any]) -> None:
        """Triton's rule: a field is the new value, else the current one where it was set for
        this setting, else the fallback's (the global setting for a model, the start-up
        default for the global setting)."""
        if model_name:
            current = self.models.get(model_name)
            fallback = self.global_
        else:
            current, fallback = self.global_, self.default
        values = fallback.values()
        specified = set()
        for name in FIELDS:
            given = new.get(name)
            if given is _CLEAR:
                continue
            if given is not None:
                values[name] = given
                specified.add(name)
            elif current is not None and name in current.specified:
                values[name] = getattr(current, name)
                specified.add(name)
        if model_name and not specified:
            self.models.pop(model_name, None)
            self._mirroring.discard(model_name)
            return
        setting = TraceSetting(values, frozenset(specified), self.mode)
        reason = setting.invalid_reason(self.mode)
        if reason is not None and setting.level:
            raise InvalidArgumentError(f"Attempting to set invalid trace setting :{reason}")
        if not model_name:
            self.global_ = setting
            return
        self.models[model_name] = setting
        if len(specified) == len(FIELDS):
            self._mirroring.discard(model_name)
        else:
            self._mirroring.add(model_name)

    def any_tensors(self) -> bool:
        return self.global_.tensors or any(s.tensors for s in self.models.values())
