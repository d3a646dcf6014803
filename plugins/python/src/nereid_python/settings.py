"""``--backend-config=python,<key>=<value>`` settings, and the per-model parameters that
override some of them.

Triton's Python-backend keys keep their names and meanings where they apply
(``shm-default-byte-size``, ``shm-growth-byte-size``, ``shm-region-prefix-name``,
``stub-timeout-seconds``); the others Triton has are accepted, checked and ignored. Nereid adds
``execution-mode``, ``shm-dir`` and ``execute-timeout-seconds``. Unknown keys are logged and
ignored, as tritonserver ignores them.

Model parameters (``parameters { key: "execution_mode" value: { string_value: "thread" } }``):
``execution_mode`` and ``execute_timeout_seconds`` override the server-wide settings for one
model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

from nereid.errors import InvalidArgumentError

from .process import ProcessSettings

log = logging.getLogger("nereid.python")

EXECUTION_MODES = ("process", "thread")
DEFAULT_MODE = "process"

# Integer settings: (name, smallest value). Triton's stub and shm sizes, in bytes and seconds.
_INTS = {
    "shm-default-byte-size": 1,
    "shm-growth-byte-size": 1,
    "shm-message-queue-size": 1,
    "stub-timeout-seconds": 1,
    "thread-pool-size": 1,
    "default-max-batch-size": 0,
}
_STRINGS = ("shm-region-prefix-name", "shm-dir", "env-cache-dir")
# Settings tritonserver passes to every backend; meaningless here.
_GENERAL = ("backend-directory", "cmdline", "auto-complete-config", "min-compute-capability")

MODE_PARAMETER = "execution_mode"
TIMEOUT_PARAMETER = "execute_timeout_seconds"


def _seconds(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise InvalidArgumentError(f"{what}={text}: expected a number of seconds >= 0")
    return value


@dataclass
class BackendSettings:
    execution_mode: str = DEFAULT_MODE
    process: ProcessSettings = field(default_factory=ProcessSettings)
    triton: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, settings: dict[str, str]) -> BackendSettings:
        parsed = cls()
        process = parsed.process
        for key, value in settings.items():
            if key == "execution-mode":
                if value not in EXECUTION_MODES:
                    raise InvalidArgumentError(
                        f"--backend-config=python,execution-mode={value}: expected one of "
                        f"{', '.join(EXECUTION_MODES)}"
                    )
                parsed.execution_mode = value
            elif key == "execute-timeout-seconds":
                process.execute_timeout = _seconds(value, f"--backend-config=python,{key}")
            elif key in _INTS:
                try:
                    number = int(value)
                except ValueError:
                    number = None
                if number is None or number < _INTS[key]:
                    raise InvalidArgumentError(
                        f"--backend-config=python,{key}={value}: expected an integer >= "
                        f"{_INTS[key]}"
                    )
                parsed.triton[key] = value
                if key == "shm-default-byte-size":
                    process.shm_default_size = number
                elif key == "shm-growth-byte-size":
                    process.shm_growth = number
                elif key == "stub-timeout-seconds":
                    process.stub_timeout = float(number)
            elif key in _STRINGS:
                if not value:
                    raise InvalidArgumentError(f"--backend-config=python,{key}: empty value")
                parsed.triton[key] = value
                if key == "shm-dir":
                    process.shm_dir = value
                elif key == "env-cache-dir":
                    process.env_cache_dir = value
                else:
                    if "/" in value:
                        raise InvalidArgumentError(
                            f"--backend-config=python,{key}={value}: a name, not a path"
                        )
                    process.shm_prefix = value
            elif key not in _GENERAL:
                log.warning("python backend: ignoring unknown setting '%s'", key)
        return parsed

    def for_model(self, name: str, parameters: Any) -> tuple[str, ProcessSettings]:
        """The execution mode and process settings of one model: its ``parameters`` (the
        config's map of ``ModelParameter``) override the server-wide settings."""
        mode = self.execution_mode
        process = self.process
        if MODE_PARAMETER in parameters:
            mode = parameters[MODE_PARAMETER].string_value.strip().lower()
            if mode not in EXECUTION_MODES:
                raise InvalidArgumentError(
                    f"model '{name}': parameter {MODE_PARAMETER} is '{mode}', expected one of "
                    f"{', '.join(EXECUTION_MODES)}"
                )
        if TIMEOUT_PARAMETER in parameters:
            timeout = _seconds(
                parameters[TIMEOUT_PARAMETER].string_value,
                f"model '{name}': parameter {TIMEOUT_PARAMETER}",
            )
            process = replace(process, execute_timeout=timeout)
        return mode, process
