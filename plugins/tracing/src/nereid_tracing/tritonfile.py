"""Triton's trace JSON: the entries of a trace, and the file (or numbered files) they go to.

A trace is a flat list of entries sharing its ``id``: the model entry (``model_name``,
``model_version``, ``request_id`` when set, ``parent_id`` for a child trace), one entry per
timestamp (``{"id": 1, "timestamps": [{"name": "QUEUE_START", "ns": ...}]}``) and, at the
TENSORS level, one per tensor (``TENSOR_QUEUE_INPUT``, ``TENSOR_BACKEND_OUTPUT``). The file is
one JSON array of the entries of every trace written to it.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from nereid.types import DataType, Tensor

if TYPE_CHECKING:
    from .tracer import Trace

log = logging.getLogger("nereid.tracing")

_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def trace_entries(trace: Trace) -> list[dict[str, Any]]:
    """The entries of one trace (not its children), in Triton's order."""
    tid = trace.id
    head: dict[str, Any] = {
        "id": tid,
        "model_name": trace.model_name,
        "model_version": trace.model_version,
    }
    if trace.request_id:
        head["request_id"] = trace.request_id
    if trace.parent is not None:
        head["parent_id"] = trace.parent.id
    entries = [head]
    for name, ns in trace.timeline():
        if ns is None:  # the place of the tensors in the sequence
            entries.extend(_tensor_entries(tid, name, trace))
            continue
        entries.append({"id": tid, "timestamps": [{"name": name, "ns": ns}]})
    return entries


def _tensor_entries(tid: int, activity: str, trace: Trace) -> list[dict[str, Any]]:
    tensors = trace.inputs if activity == "TENSOR_QUEUE_INPUT" else trace.outputs
    return [
        {"id": tid, "activity": activity, "tensor": tensor_json(tensor)} for tensor in tensors or ()
    ]


def tensor_json(tensor: Tensor) -> dict[str, str]:
    """A tensor as Triton's trace writes it: comma-separated elements (BYTES elements quoted,
    FP16 and BF16 left out as Triton does), the shape as "1,16" and the datatype name."""
    return {
        "name": tensor.name,
        "data": _data(tensor),
        "shape": ",".join(str(d) for d in tensor.shape),
        "dtype": tensor.datatype.value,
    }


def _data(tensor: Tensor) -> str:
    datatype = tensor.datatype
    if datatype in (DataType.FP16, DataType.BF16):
        return ""
    flat = np.asarray(tensor.data).reshape(-1)
    if datatype is DataType.BYTES:
        return ",".join(
            '"' + (item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)) + '"'
            for item in flat
        )
    if datatype is DataType.BOOL:
        return ",".join("1" if item else "0" for item in flat)
    if datatype in (DataType.FP32, DataType.FP64):
        return ",".join(format(float(item), "g") for item in flat)
    return ",".join(str(int(item)) for item in flat)


class TraceFile:
    """Where traces of one ``trace_file`` go.

    With ``log_frequency`` 0 every trace is appended to the file itself, which is kept a valid
    JSON array after each write. With ``log_frequency`` N the traces are collected and every N
    of them written to ``<file>.0``, ``<file>.1``, ...; the rest when the server stops.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.index = 0
        self._pending: list[str] = []
        self._pending_traces = 0
        self._handle: Any = None
        self._lock = threading.Lock()

    def write(self, entries: list[dict[str, Any]], log_frequency: int) -> None:
        text = _DUMPS(entries)[1:-1]
        if not text:
            return
        with self._lock:
            try:
                if log_frequency == 0:
                    self._append(text)
                    return
                self._pending.append(text)
                self._pending_traces += 1
                if self._pending_traces >= log_frequency:
                    self._flush_indexed()
            except OSError as exc:
                log.error("failed writing trace file '%s': %s", self.path, exc)

    def _append(self, text: str) -> None:
        handle = self._handle
        if handle is None:
            handle = self._handle = open(self.path, "wb")  # noqa: SIM115 - kept open
            handle.write(b"[" + text.encode() + b"]")
        else:
            handle.seek(-1, 2)  # over the closing bracket
            handle.write(b"," + text.encode() + b"]")
        handle.flush()

    def _flush_indexed(self) -> None:
        if not self._pending:
            return
        path = f"{self.path}.{self.index}"
        self.index += 1
        body = "[" + ",".join(self._pending) + "]"
        self._pending = []
        self._pending_traces = 0
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(body)

    def close(self) -> None:
        """Write what is collected and close the file."""
        with self._lock:
            try:
                self._flush_indexed()
            except OSError as exc:
                log.error("failed writing trace file '%s': %s", self.path, exc)
            if self._handle is not None:
                self._handle.close()
                self._handle = None


class TritonSink:
    """Writes traces as Triton's trace JSON, to the file of the setting that sampled them."""

    def __init__(self) -> None:
        self.files: dict[str, TraceFile] = {}

    def emit(self, traces: list[Trace], file: str, log_frequency: int) -> None:
        if not file:
            return
        entries: list[dict[str, Any]] = []
        for trace in traces:
            entries.extend(trace_entries(trace))
        sink = self.files.get(file)
        if sink is None:
            sink = self.files[file] = TraceFile(file)
        sink.write(entries, log_frequency)

    def close(self) -> None:
        for sink in self.files.values():
            sink.close()
