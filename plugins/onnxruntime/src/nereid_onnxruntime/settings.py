"""``--backend-config=onnxruntime,<key>=<value>`` settings, as Triton's onnxruntime backend
names them.

- ``default-max-batch-size`` (default 4): the ``max_batch_size`` auto-complete gives a model
  that can batch and whose configuration says 0 or nothing.
- ``enable-global-threadpool`` (0/1): one intra-op and one inter-op thread pool shared by every
  session of the process, sized by ``intra_op_thread_count`` and ``inter_op_thread_count``
  given here (the model configurations' thread counts are then ignored).

Settings given to every backend (``--backend-config=<key>=<value>``) arrive too; keys this
backend does not know are ignored, as tritonserver ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass

from nereid.config import boolean_word
from nereid.errors import InvalidArgumentError

DEFAULT_MAX_BATCH_SIZE = 4


def parse_bool(value: str, what: str) -> bool:
    flag = boolean_word(value.strip())
    if flag is not None:
        return flag
    raise InvalidArgumentError(f"{what}: expected a boolean (1/0, true/false), got '{value}'")


def parse_int(value: str, what: str, minimum: int = 0) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise InvalidArgumentError(f"{what}: expected an integer >= {minimum}, got '{value}'")
    return number


@dataclass(frozen=True)
class BackendSettings:
    default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    global_threadpool: bool = False
    intra_op_thread_count: int = 0
    inter_op_thread_count: int = 0

    @classmethod
    def parse(cls, settings: dict[str, str]) -> BackendSettings:
        def where(key: str) -> str:
            return f"--backend-config=onnxruntime,{key}={settings[key]}"

        values: dict[str, object] = {}
        if "default-max-batch-size" in settings:
            values["default_max_batch_size"] = parse_int(
                settings["default-max-batch-size"], where("default-max-batch-size")
            )
        if "enable-global-threadpool" in settings:
            values["global_threadpool"] = parse_bool(
                settings["enable-global-threadpool"], where("enable-global-threadpool")
            )
        for key in ("intra_op_thread_count", "inter_op_thread_count"):
            if key in settings:
                values[key] = parse_int(settings[key], where(key))
        return cls(**values)  # type: ignore[arg-type]
