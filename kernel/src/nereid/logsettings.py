"""Logging through Python ``logging``, with tritonserver's flags and run-time settings.

The settings are the ones Triton's logging endpoints expose (``log_file``, ``log_info``,
``log_warning``, ``log_error``, ``log_verbose_level``, ``log_format``); every frontend reads
and updates them here. As in tritonserver each severity is switched on or off by itself
(``--log-info=false`` keeps warnings and errors), and debug records are written only at a
verbose level above 0.

Records of the ``nereid`` logger and its children (plugins log under ``nereid.<plugin>`` to be
covered) go to one handler per process, on stderr or ``log_file``; they also propagate to the
root logger as usual, so an embedding program's own logging set-up sees them.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

from .errors import InvalidArgumentError

LOGGER = logging.getLogger("nereid")
FORMATS = {
    # tritonserver's: I0504 13:01:02.123456 1234 model.py:12] message
    "default": "%(levelname).1s%(asctime)s %(process)d %(name)s] %(message)s",
    # tritonserver's ISO8601: 2024-05-04T13:01:02Z I 1234 model.py:12] message
    "ISO8601": "%(asctime)s %(levelname).1s %(process)d %(name)s] %(message)s",
}

_lock = threading.Lock()
_handler: logging.Handler | None = None


class _Formatter(logging.Formatter):
    def __init__(self, log_format: str) -> None:
        super().__init__(FORMATS[log_format])
        self.iso = log_format == "ISO8601"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if self.iso:
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        stamp = time.strftime("%m%d %H:%M:%S", time.localtime(record.created))
        return f"{stamp}.{int(record.created % 1 * 1_000_000):06d}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _SeverityFilter(logging.Filter):
    """Each severity on or off by itself, as tritonserver's flags have it."""

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__()
        self.values = values

    def filter(self, record: logging.LogRecord) -> bool:
        v = self.values
        if record.levelno >= logging.ERROR:
            return v["log_error"]
        if record.levelno >= logging.WARNING:
            return v["log_warning"]
        if record.levelno >= logging.INFO:
            return v["log_info"]
        return v["log_verbose_level"] > 0


class LogSettings:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {
            "log_file": "",
            "log_info": True,
            "log_warning": True,
            "log_error": True,
            "log_verbose_level": 0,
            "log_format": "default",
        }
        self._lock = threading.Lock()

    def get(self) -> dict[str, Any]:
        return dict(self.values)

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply a partial update (unknown keys and wrong types are INVALID_ARG)."""
        with self._lock:
            new = dict(self.values)
            for key, value in changes.items():
                if key not in new:
                    raise InvalidArgumentError(f"Logging setting '{key}' is not supported")
                if value is None:
                    continue
                current = new[key]
                if isinstance(current, bool):
                    if not isinstance(value, bool):
                        raise InvalidArgumentError(f"expect boolean for '{key}'")
                elif isinstance(current, int):
                    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                        raise InvalidArgumentError(f"expect non-negative integer for '{key}'")
                elif not isinstance(value, str):
                    raise InvalidArgumentError(f"expect string for '{key}'")
                if key == "log_format" and value not in FORMATS:
                    raise InvalidArgumentError(
                        f"invalid log format '{value}', expect one of {sorted(FORMATS)}"
                    )
                new[key] = value
            self._apply(new)
            self.values = new
            return dict(new)

    def apply(self) -> None:
        """Point the ``nereid`` logger at the file or stderr, with the severities the settings
        switch on. The handler is the process's one: a second server replaces it."""
        self._apply(self.values)

    @staticmethod
    def _apply(v: dict[str, Any]) -> None:
        global _handler
        try:
            handler: logging.Handler = (
                logging.FileHandler(v["log_file"]) if v["log_file"] else _StderrHandler()
            )
        except OSError as exc:
            raise InvalidArgumentError(
                f"failed to open log file '{v['log_file']}': {exc}"
            ) from None
        handler.setFormatter(_Formatter(v["log_format"]))
        handler.addFilter(_SeverityFilter(dict(v)))
        with _lock:
            if _handler is not None:
                LOGGER.removeHandler(_handler)
                _handler.close()
            LOGGER.addHandler(handler)
            _handler = handler
        LOGGER.setLevel(logging.DEBUG if v["log_verbose_level"] > 0 else logging.INFO)
