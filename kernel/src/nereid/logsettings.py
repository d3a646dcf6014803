"""Logging through Python ``logging``, with tritonserver's flags and run-time settings.

The settings are the ones Triton's logging endpoints expose (``log_file``, ``log_info``,
``log_warning``, ``log_error``, ``log_verbose_level``, ``log_format``); every frontend reads
and updates them here.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from .errors import InvalidArgumentError

LOGGER = logging.getLogger("nereid")
FORMATS = {
    "default": "%(levelname).1s%(asctime)s %(process)d %(name)s] %(message)s",
    "ISO8601": "%(asctime)s %(levelname)s %(name)s] %(message)s",
}


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
        self._handler: logging.Handler | None = None
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
            self.values = new
            self.apply()
            return dict(new)

    def apply(self) -> None:
        """Point the ``nereid`` logger at the file or stderr, at the level the flags give."""
        v = self.values
        if v["log_verbose_level"] > 0 and v["log_info"]:
            level = logging.DEBUG
        elif v["log_info"]:
            level = logging.INFO
        elif v["log_warning"]:
            level = logging.WARNING
        elif v["log_error"]:
            level = logging.ERROR
        else:
            level = logging.CRITICAL + 1
        handler: logging.Handler = (
            logging.FileHandler(v["log_file"])
            if v["log_file"]
            else logging.StreamHandler(sys.stderr)
        )
        handler.setFormatter(logging.Formatter(FORMATS[v["log_format"]]))
        if self._handler is not None:
            LOGGER.removeHandler(self._handler)
            self._handler.close()
        LOGGER.addHandler(handler)
        LOGGER.setLevel(level)
        self._handler = handler
