"""Gather a batch's inputs into one array per input, and scatter outputs back per request.

Backends call these so that every backend batches the same way; they also stamp the compute
input/output boundaries used by statistics and tracing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..types import DataType, InferenceRequest, InferenceResponse, Tensor


def gather(requests: Sequence[InferenceRequest], name: str) -> np.ndarray:
    """One input of every request, joined along the batch dimension (no copy for one request)."""
    if len(requests) == 1:
        return requests[0].inputs[name].data
    return np.concatenate([request.inputs[name].data for request in requests], axis=0)


def gather_inputs(
    requests: Sequence[InferenceRequest], names: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Every input (or the ``names`` given) gathered; marks the end of compute input."""
    names = list(requests[0].inputs) if names is None else list(names)
    arrays = {name: gather(requests, name) for name in names if name in requests[0].inputs}
    mark_compute_input_end(requests)
    return arrays


def runs_of(requests: list[InferenceRequest], batched: bool) -> Iterable[list[InferenceRequest]]:
    """The executions a batch splits into: each request alone for a model that does not batch,
    else one per set of inputs given (requests leaving out different optional inputs run
    apart, since their inputs cannot be gathered together)."""
    if len(requests) == 1:
        return (requests,)
    if not batched:
        return ([request] for request in requests)
    runs: dict[tuple[str, ...], list[InferenceRequest]] = {}
    for request in requests:
        runs.setdefault(tuple(sorted(request.inputs)), []).append(request)
    return runs.values()


def mark_compute_input_end(requests: Sequence[InferenceRequest]) -> None:
    now = time.monotonic_ns()
    for request in requests:
        request.compute_input_end_ns = now


def scatter_outputs(
    requests: Sequence[InferenceRequest],
    outputs: Mapping[str, np.ndarray],
    datatypes: Mapping[str, DataType] | None = None,
    *,
    batched: bool = True,
) -> None:
    """Split each output along the batch dimension by the requests' batch sizes and answer each
    request with its rows (only the outputs it asked for, when it asked)."""
    now = time.monotonic_ns()
    for request in requests:
        request.compute_output_start_ns = now
    offset = 0
    for request in requests:
        rows = request.batch_size
        wanted = request.requested_outputs
        names = [o.name for o in wanted] if wanted else list(outputs)
        tensors = []
        for name in names:
            if name not in outputs:
                continue
            array = outputs[name]
            if batched and len(requests) > 1:
                array = array[offset : offset + rows]
            dtype = datatypes.get(name) if datatypes else None
            tensors.append(Tensor(name, array, dtype))
        offset += rows
        request.respond(InferenceResponse(tensors), final=True)
