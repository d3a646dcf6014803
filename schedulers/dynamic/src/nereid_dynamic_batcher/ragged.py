"""Ragged batching for backends: ragged inputs, ``batch_input`` tensors, ``batch_output`` scatter.

How batch inputs reach a backend
--------------------------------
Batch inputs (Triton's ``batch_input``) describe a batch that exists only once the scheduler
has formed it, so the request path has nowhere to carry them. The dynamic batcher tags every
request of a batch it hands out with the model's :class:`BatchSpec` (parsed once from the
config), under ``request.context[BATCH_CONTEXT_KEY]``. A backend's ``execute`` then calls::

    arrays = gather_batch(requests)          # inputs, ragged ones flattened, plus batch inputs
    outputs = run_the_framework(arrays)
    scatter_batch(requests, outputs)         # per-request rows; batch outputs by input shape

The batch-input tensors are computed by :func:`gather_batch` from the requests the instance is
actually executing, on the instance's thread (not on the event loop, and not skewed by a
request cancelled between batch formation and execution). A request that did not come through
the dynamic batcher (a warm-up sample) carries no tag: pass ``spec=BatchSpec.from_config(...)``
explicitly then. Everything here is numpy only and thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from nereid.runtime.batching import gather, mark_compute_input_end
from nereid.types import DataType, InferenceRequest, InferenceResponse, Tensor

BATCH_CONTEXT_KEY = "nereid.batch"
"""The ``request.context`` key under which the dynamic batcher puts the model's BatchSpec."""

ELEMENT_COUNT = "BATCH_ELEMENT_COUNT"
ACCUMULATED_ELEMENT_COUNT = "BATCH_ACCUMULATED_ELEMENT_COUNT"
ACCUMULATED_ELEMENT_COUNT_WITH_ZERO = "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO"
MAX_ELEMENT_COUNT_AS_SHAPE = "BATCH_MAX_ELEMENT_COUNT_AS_SHAPE"
ITEM_SHAPE = "BATCH_ITEM_SHAPE"
ITEM_SHAPE_FLATTEN = "BATCH_ITEM_SHAPE_FLATTEN"
SCATTER_WITH_INPUT_SHAPE = "BATCH_SCATTER_WITH_INPUT_SHAPE"


@dataclass(frozen=True)
class BatchInputSpec:
    """One ``batch_input`` entry: its kind, the input names it creates, datatype and source."""

    kind: str
    targets: tuple[str, ...]
    dtype: np.dtype
    sources: tuple[str, ...]


@dataclass(frozen=True)
class BatchOutputSpec:
    """One output to scatter by the shape of ``source`` (BATCH_SCATTER_WITH_INPUT_SHAPE);
    ``dims`` are the output's configured dims, ``-1`` filled from the source input."""

    source: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class BatchSpec:
    """What a model's config says about ragged batching, parsed once."""

    ragged_inputs: frozenset[str]
    batch_inputs: tuple[BatchInputSpec, ...]
    batch_outputs: Mapping[str, BatchOutputSpec]

    @classmethod
    def from_config(cls, config: Any) -> BatchSpec | None:
        """The spec of a ``ModelConfig``; ``None`` when it has no ragged input, batch input or
        batch output (plain gather and scatter then do)."""
        from nereid.config.model_config_pb2 import BatchInput, BatchOutput
        from nereid.config.model_config_pb2 import DataType as ProtoDataType

        ragged = frozenset(i.name for i in config.input if i.allow_ragged_batch)
        inputs = []
        for entry in config.batch_input:
            proto_type = entry.data_type or ProtoDataType.TYPE_INT32
            datatype = DataType.parse(ProtoDataType.Name(proto_type))
            inputs.append(
                BatchInputSpec(
                    BatchInput.Kind.Name(entry.kind),
                    tuple(entry.target_name),
                    datatype.numpy_dtype,
                    tuple(entry.source_input),
                )
            )
        dims = {o.name: tuple(o.dims) for o in config.output}
        outputs = {}
        for entry in config.batch_output:
            if entry.kind != BatchOutput.BATCH_SCATTER_WITH_INPUT_SHAPE or not entry.source_input:
                continue
            for target in entry.target_name:
                outputs[target] = BatchOutputSpec(entry.source_input[0], dims.get(target, (-1,)))
        if not ragged and not inputs and not outputs:
            return None
        return cls(ragged, tuple(inputs), outputs)


def spec_of(requests: Sequence[InferenceRequest]) -> BatchSpec | None:
    """The BatchSpec the dynamic batcher tagged this batch with, if any."""
    return requests[0].context.get(BATCH_CONTEXT_KEY) if requests else None


def _element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def element_counts(requests: Sequence[InferenceRequest], source: str) -> list[int]:
    """Elements of input ``source`` in each request (its whole shape, batch dimension
    included; 0 where the request lacks the input)."""
    counts = []
    for request in requests:
        tensor = request.inputs.get(source)
        counts.append(_element_count(tensor.shape) if tensor is not None else 0)
    return counts


def batch_input_tensor(spec: BatchInputSpec, requests: Sequence[InferenceRequest]) -> np.ndarray:
    """The value of one batch input for ``requests``, as Triton's backends build it:

    - ELEMENT_COUNT: shape [requests], each request's element count of the source;
    - ACCUMULATED_ELEMENT_COUNT: shape [requests], the running total (where each request ends);
    - ACCUMULATED_ELEMENT_COUNT_WITH_ZERO: shape [requests + 1], 0 then the running total
      (where each request starts, and the end);
    - MAX_ELEMENT_COUNT_AS_SHAPE: shape [max element count]; only the shape carries
      information (the data is zeros);
    - ITEM_SHAPE: shape [batch rows, source rank - 1], the shape of each batch item (a
      request of batch size 2 contributes two rows);
    - ITEM_SHAPE_FLATTEN: the same, flattened to one dimension.
    """
    source = spec.sources[0] if spec.sources else ""
    dtype = spec.dtype
    kind = spec.kind
    if kind in (ITEM_SHAPE, ITEM_SHAPE_FLATTEN):
        rows: list[tuple[int, ...]] = []
        rank = 0
        for request in requests:
            tensor = request.inputs.get(source)
            item = tuple(tensor.shape[1:]) if tensor is not None else ()
            rank = max(rank, len(item))
            rows.extend([item] * max(1, request.batch_size))
        array = np.array([list(item) + [0] * (rank - len(item)) for item in rows], dtype=dtype)
        array = array.reshape(len(rows), rank)
        return array.reshape(-1) if kind == ITEM_SHAPE_FLATTEN else array
    counts = element_counts(requests, source)
    if kind == ELEMENT_COUNT:
        return np.array(counts, dtype=dtype)
    if kind == ACCUMULATED_ELEMENT_COUNT:
        return np.cumsum(counts, dtype=np.int64).astype(dtype)
    if kind == ACCUMULATED_ELEMENT_COUNT_WITH_ZERO:
        return np.concatenate(([0], np.cumsum(counts, dtype=np.int64))).astype(dtype)
    if kind == MAX_ELEMENT_COUNT_AS_SHAPE:
        return np.zeros(max(counts, default=0), dtype=dtype)
    raise ValueError(f"unknown batch input kind '{kind}'")


def batch_inputs(
    requests: Sequence[InferenceRequest], spec: BatchSpec | None = None
) -> dict[str, np.ndarray]:
    """Every batch input of ``spec`` (default: the batch's tag) by target name."""
    spec = spec or spec_of(requests)
    out: dict[str, np.ndarray] = {}
    if spec is None:
        return out
    for entry in spec.batch_inputs:
        value = batch_input_tensor(entry, requests)
        for target in entry.targets:
            out[target] = value
    return out


def gather_ragged(requests: Sequence[InferenceRequest], name: str) -> np.ndarray:
    """A ragged input: every request's elements, flattened and concatenated (one dimension)."""
    parts = [r.inputs[name].data.reshape(-1) for r in requests if name in r.inputs]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts)


def gather_batch(
    requests: Sequence[InferenceRequest], spec: BatchSpec | None = None
) -> dict[str, np.ndarray]:
    """The batch's inputs by name: ordinary inputs joined along the batch dimension, ragged
    inputs flattened and concatenated, and the batch inputs added. Marks the end of compute
    input for statistics."""
    spec = spec or spec_of(requests)
    ragged = spec.ragged_inputs if spec is not None else frozenset()
    arrays = {
        name: gather_ragged(requests, name) if name in ragged else gather(requests, name)
        for name in requests[0].inputs
    }
    if spec is not None:
        arrays.update(batch_inputs(requests, spec))
    mark_compute_input_end(requests)
    return arrays


def scatter_shape(request: InferenceRequest, output: BatchOutputSpec) -> tuple[int, ...]:
    """A request's share of a batch output: ``[-1, *dims]`` with each ``-1`` taken from the same
    dimension of the request's source input."""
    source = request.inputs[output.source].shape
    shape = (-1, *output.dims)
    return tuple(
        (source[i] if i < len(source) else 1) if d == -1 else d for i, d in enumerate(shape)
    )


def scatter_batch(
    requests: Sequence[InferenceRequest],
    outputs: Mapping[str, np.ndarray],
    spec: BatchSpec | None = None,
    datatypes: Mapping[str, DataType] | None = None,
) -> None:
    """Answer every request with its part of ``outputs``: rows by batch size for ordinary
    outputs, and, for a batch output (BATCH_SCATTER_WITH_INPUT_SHAPE), the next elements of the
    flattened output shaped like the request's source input. Only requested outputs are
    returned when the request named some."""
    import time

    spec = spec or spec_of(requests)
    scattered = spec.batch_outputs if spec is not None else {}
    now = time.monotonic_ns()
    for request in requests:
        request.compute_output_start_ns = now
    flat = {name: outputs[name].reshape(-1) for name in scattered if name in outputs}
    element_offsets = dict.fromkeys(flat, 0)
    row = 0
    several = len(requests) > 1
    for request in requests:
        rows = request.batch_size
        wanted = request.requested_outputs
        names = [o.name for o in wanted] if wanted else list(outputs)
        tensors = []
        for name in names:
            if name not in outputs:
                continue
            if name in flat:
                shape = scatter_shape(request, scattered[name])
                start = element_offsets[name]
                count = _element_count(shape)
                array = flat[name][start : start + count].reshape(shape)
                element_offsets[name] = start + count
            else:
                array = outputs[name]
                if several:
                    array = array[row : row + rows]
            dtype = datatypes.get(name) if datatypes else None
            tensors.append(Tensor(name, array, dtype))
        if wanted:  # offsets advance for outputs this request did not ask for too
            for name in flat:
                if name not in {t.name for t in tensors}:
                    element_offsets[name] += _element_count(scatter_shape(request, scattered[name]))
        row += rows
        request.respond(InferenceResponse(tensors), final=True)


__all__ = [
    "ACCUMULATED_ELEMENT_COUNT",
    "ACCUMULATED_ELEMENT_COUNT_WITH_ZERO",
    "BATCH_CONTEXT_KEY",
    "ELEMENT_COUNT",
    "ITEM_SHAPE",
    "ITEM_SHAPE_FLATTEN",
    "MAX_ELEMENT_COUNT_AS_SHAPE",
    "SCATTER_WITH_INPUT_SHAPE",
    "BatchInputSpec",
    "BatchOutputSpec",
    "BatchSpec",
    "batch_input_tensor",
    "batch_inputs",
    "element_counts",
    "gather_batch",
    "gather_ragged",
    "scatter_batch",
    "scatter_shape",
    "spec_of",
]
