"""The control inputs a sequence batcher fills into every request it hands a model instance.

``sequence_batching { control_input [...] }`` names the model inputs that carry Triton's
controls: ``CONTROL_SEQUENCE_START``, ``_END`` and ``_READY`` (booleans, given as a
``[false, true]`` pair of ``int32_false_true``, ``fp32_false_true`` or ``bool_false_true``) and
``CONTROL_SEQUENCE_CORRID`` (the correlation id, as ``data_type`` UINT64, INT64, UINT32, INT32
or STRING). Each is optional. Every row carries one value of each: shape ``[1, 1]`` in a batching
model (``max_batch_size`` > 0), ``[1]`` otherwise.

The boolean tensors are made once per model and shared, read-only, by every request: backends
never write into inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from nereid.config.loading import ConfigError
from nereid.config.model_config_pb2 import DataType as ProtoDataType
from nereid.config.model_config_pb2 import ModelSequenceBatching
from nereid.errors import InvalidArgumentError
from nereid.types import DataType, Tensor

Kind = ModelSequenceBatching.Control
START, READY, END, CORRID = (
    Kind.CONTROL_SEQUENCE_START,
    Kind.CONTROL_SEQUENCE_READY,
    Kind.CONTROL_SEQUENCE_END,
    Kind.CONTROL_SEQUENCE_CORRID,
)
_CORRID_TYPES = {
    ProtoDataType.TYPE_UINT64: DataType.UINT64,
    ProtoDataType.TYPE_INT64: DataType.INT64,
    ProtoDataType.TYPE_UINT32: DataType.UINT32,
    ProtoDataType.TYPE_INT32: DataType.INT32,
    ProtoDataType.TYPE_STRING: DataType.BYTES,
}

Controls = list[tuple[str, Tensor]]


def _constant(name: str, value: Any, dtype: np.dtype, shape: tuple[int, ...]) -> Tensor:
    array = np.full(shape, value, dtype=dtype)
    array.flags.writeable = False
    return Tensor(name, array)


class ControlSpec:
    """The control inputs of one model, and the tensors that carry them.

    ``for_request(start, end)`` is the list of ``(name, tensor)`` for a ready row with those
    flags; ``not_ready`` the list for an empty slot (every boolean false). ``corrid(id)`` makes
    the CORRID tensor of a sequence (``None`` when the model has no CORRID control).
    """

    def __init__(self, config: Any) -> None:
        model = config.name
        self.shape: tuple[int, ...] = (1, 1) if config.max_batch_size > 0 else (1,)
        self.names: set[str] = set()
        booleans: dict[int, tuple[str, Tensor, Tensor]] = {}
        self.corrid_name = ""
        self.corrid_type: DataType | None = None
        inputs = {t.name for t in config.input}
        seen: dict[int, str] = {}
        for control_input in config.sequence_batching.control_input:
            name = control_input.name
            where = f"model '{model}': sequence_batching control input '{name}'"
            if not name:
                raise ConfigError(
                    f"model '{model}': a sequence_batching control input must specify 'name'"
                )
            if name in self.names:
                raise ConfigError(f"{where} is declared twice")
            if name in inputs:
                raise ConfigError(
                    f"{where} is also a model input; the sequence batcher provides control "
                    "inputs, so they must not be listed in 'input'"
                )
            if len(control_input.control) != 1:
                raise ConfigError(
                    f"{where} must have exactly one 'control', it has {len(control_input.control)}"
                )
            control = control_input.control[0]
            kind_name = Kind.Kind.Name(control.kind)
            if control.kind in seen:
                raise ConfigError(
                    f"model '{model}': sequence_batching has more than one {kind_name} control "
                    f"('{seen[control.kind]}' and '{name}')"
                )
            seen[control.kind] = name
            self.names.add(name)
            if control.kind == CORRID:
                if control.int32_false_true or control.fp32_false_true or control.bool_false_true:
                    raise ConfigError(f"{where}: a {kind_name} control takes no '*_false_true'")
                corrid_type = _CORRID_TYPES.get(control.data_type)
                if corrid_type is None:
                    raise ConfigError(
                        f"{where}: {kind_name} must have 'data_type' TYPE_UINT64, TYPE_INT64, "
                        f"TYPE_UINT32, TYPE_INT32 or TYPE_STRING, not "
                        f"{ProtoDataType.Name(control.data_type)}"
                    )
                self.corrid_name, self.corrid_type = name, corrid_type
                continue
            booleans[control.kind] = (name, *self._pair(control, name, where, kind_name))
        self._booleans = booleans
        self._rows: dict[tuple[bool, bool], Controls] = {
            (start, end): self._row(start, end, True)
            for start in (False, True)
            for end in (False, True)
        }
        self.not_ready: Controls = self._row(False, False, False)

    def _pair(self, control: Any, name: str, where: str, kind_name: str) -> tuple[Tensor, Tensor]:
        given = [
            (values, dtype)
            for values, dtype in (
                (control.int32_false_true, np.int32),
                (control.fp32_false_true, np.float32),
                (control.bool_false_true, np.bool_),
            )
            if len(values)
        ]
        if len(given) != 1:
            raise ConfigError(
                f"{where}: a {kind_name} control must give exactly one of int32_false_true, "
                "fp32_false_true and bool_false_true"
            )
        values, dtype = given[0]
        if len(values) != 2:
            raise ConfigError(
                f"{where}: the '*_false_true' of a {kind_name} control must have 2 values, "
                f"[false, true], not {len(values)}"
            )
        if control.data_type != ProtoDataType.TYPE_INVALID:
            raise ConfigError(
                f"{where}: a {kind_name} control takes its datatype from '*_false_true'; "
                "'data_type' is for CONTROL_SEQUENCE_CORRID"
            )
        false = _constant(name, values[0], np.dtype(dtype), self.shape)
        true = _constant(name, values[1], np.dtype(dtype), self.shape)
        return false, true

    def _row(self, start: bool, end: bool, ready: bool) -> Controls:
        row: Controls = []
        for kind, flag in ((START, start), (END, end), (READY, ready)):
            entry = self._booleans.get(kind)
            if entry is not None:
                name, false, true = entry
                row.append((name, true if flag else false))
        return row

    def for_request(self, start: bool, end: bool) -> Controls:
        return self._rows[start, end]

    # -- CORRID ----------------------------------------------------------------------------------

    def check_corrid(self, model: str, corrid: int | str) -> None:
        """INVALID_ARG when the correlation id cannot be carried by the CORRID control."""
        if self.corrid_type is None or self.corrid_type is DataType.BYTES:
            return
        if isinstance(corrid, str):
            try:
                int(corrid)
            except ValueError:
                raise InvalidArgumentError(
                    f"inference request for sequence {corrid} to model '{model}': the model's "
                    f"CONTROL_SEQUENCE_CORRID input '{self.corrid_name}' is "
                    f"{self.corrid_type.value}, so a string correlation ID must hold an integer"
                ) from None

    def corrid(self, corrid: int | str) -> Tensor | None:
        """The CORRID tensor of a sequence (made once per sequence)."""
        dtype = self.corrid_type
        if dtype is None:
            return None
        if dtype is DataType.BYTES:
            text = corrid if isinstance(corrid, str) else str(corrid)
            array = np.empty(self.shape, dtype=object)
            array.reshape(-1)[0] = text.encode()
        else:
            value = int(corrid) % (1 << 64)  # two's complement, as the id's 64 bits are copied
            array = np.full(self.shape, value, dtype=np.uint64).astype(dtype.numpy_dtype)
        array.flags.writeable = False
        return Tensor(self.corrid_name, array, dtype)

    def empty_corrid(self) -> Tensor | None:
        """The CORRID of an empty slot: 0 (or an empty string)."""
        if self.corrid_type is None:
            return None
        if self.corrid_type is DataType.BYTES:
            array = np.empty(self.shape, dtype=object)
            array.reshape(-1)[0] = b""
        else:
            array = np.zeros(self.shape, dtype=self.corrid_type.numpy_dtype)
        array.flags.writeable = False
        return Tensor(self.corrid_name, array, self.corrid_type)


def describe(controls: Sequence[tuple[str, Tensor]]) -> dict[str, Any]:
    """``{name: value}`` of a control row (for tests and logs)."""
    return {name: tensor.data.reshape(-1)[0].item() for name, tensor in controls}
