"""``--backend-config=python,<key>=<value>`` settings.

Triton's Python-backend keys are accepted and checked; the ones about the stub process and its
shared memory only matter once models run in processes of their own (part 2), so in-process they
change nothing. Unknown keys are logged and ignored, as tritonserver ignores them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from nereid.errors import InvalidArgumentError

log = logging.getLogger("nereid.python")

EXECUTION_MODES = ("thread",)

# Triton's integer settings: (name, smallest value).
_TRITON_INTS = {
    "shm-default-byte-size": 1,
    "shm-growth-byte-size": 1,
    "shm-message-queue-size": 1,
    "stub-timeout-seconds": 1,
    "thread-pool-size": 1,
    "default-max-batch-size": 0,
}
_TRITON_STRINGS = ("shm-region-prefix-name",)
# Settings tritonserver passes to every backend; meaningless here.
_GENERAL = ("backend-directory", "cmdline", "auto-complete-config", "min-compute-capability")


@dataclass
class BackendSettings:
    execution_mode: str = "thread"
    triton: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, settings: dict[str, str]) -> BackendSettings:
        parsed = cls()
        for key, value in settings.items():
            if key == "execution-mode":
                if value not in EXECUTION_MODES:
                    raise InvalidArgumentError(
                        f"--backend-config=python,execution-mode={value}: expected one of "
                        f"{', '.join(EXECUTION_MODES)}"
                    )
                parsed.execution_mode = value
            elif key in _TRITON_INTS:
                try:
                    number = int(value)
                except ValueError:
                    number = None
                if number is None or number < _TRITON_INTS[key]:
                    raise InvalidArgumentError(
                        f"--backend-config=python,{key}={value}: expected an integer >= "
                        f"{_TRITON_INTS[key]}"
                    )
                parsed.triton[key] = value
            elif key in _TRITON_STRINGS:
                parsed.triton[key] = value
            elif key not in _GENERAL:
                log.warning("python backend: ignoring unknown setting '%s'", key)
        return parsed
