"""Implicit state: ``sequence_batching { state [ { input_name output_name data_type dims
initial_state } ] }``.

The scheduler keeps each sequence's state itself. When it hands a request to an instance it adds
the state as an input named ``input_name`` (the initial state on the sequence's START request);
the model returns the next state as an output named ``output_name``. A :class:`StateCatcher`,
put in place of the request's response stream, takes that output off each response, on the
thread that sends it and before the response travels on, and keeps it as the state for the
sequence's next request. So the backend needs no support beyond accepting the extra input and
producing the extra output; and a client never sees the state output unless the configuration
also lists it under ``output`` and the client asks for it (Triton's "for debugging" rule).

Initial state (Triton's rules): ``initial_state { data_type dims zero_data: true name }`` or
``data_file: "<file>"`` under the model folder's ``initial_state/`` (raw row-major bytes; for
TYPE_STRING the serialized BYTES form, 4-byte little-endian length before each element). Without
``initial_state`` the first request gets zeros, every variable dimension of ``dims`` being 1
(Triton leaves the data uninitialized; models are expected to use the START control then).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from nereid.config.loading import ConfigError
from nereid.config.model_config_pb2 import DataType as ProtoDataType
from nereid.types import DataType, InferenceResponse, RequestedOutput, Tensor, deserialize_bytes

log = logging.getLogger("nereid.sequence")

INITIAL_STATE_FOLDER = "initial_state"


class StateSpec:
    """One implicit state of a model, and the tensor a sequence starts from."""

    __slots__ = ("datatype", "initial", "input_name", "output_name")

    def __init__(self, input_name: str, output_name: str, datatype: DataType, initial: Tensor):
        self.input_name = input_name
        self.output_name = output_name
        self.datatype = datatype
        self.initial = initial


class StateSet:
    """Every implicit state of a model: what to add to a request, what to take off its responses.

    ``hidden`` are the state outputs a client never receives (those not also listed under
    ``output``); ``extra_outputs`` the requested outputs to add to a request that names its
    outputs, so that the backend produces the state too.
    """

    def __init__(self, config: Any, model_dir: Path | None) -> None:
        model = config.name
        batched = config.max_batch_size > 0
        inputs = {t.name for t in config.input}
        outputs = {t.name for t in config.output}
        self.specs: list[StateSpec] = []
        seen_inputs: set[str] = set()
        seen_outputs: set[str] = set()
        for state in config.sequence_batching.state:
            where = f"model '{model}': sequence_batching state '{state.input_name}'"
            if not state.input_name or not state.output_name:
                raise ConfigError(
                    f"model '{model}': a sequence_batching state must specify 'input_name' and "
                    "'output_name'"
                )
            if state.input_name in seen_inputs:
                raise ConfigError(
                    f"State input name '{state.input_name}' specified more than once."
                )
            if state.output_name in seen_outputs:
                raise ConfigError(
                    f"{where}: state output name '{state.output_name}' specified more than once"
                )
            seen_inputs.add(state.input_name)
            seen_outputs.add(state.output_name)
            if state.input_name in inputs:
                raise ConfigError(
                    f"{where} is also a model input; the sequence batcher provides state "
                    "inputs, so they must not be listed in 'input'"
                )
            if state.data_type == ProtoDataType.TYPE_INVALID:
                raise ConfigError(f"{where} must specify 'data_type'")
            if not len(state.dims):
                raise ConfigError(f"{where} must specify 'dims'")
            datatype = DataType.parse(ProtoDataType.Name(state.data_type))
            array = _initial_array(state, datatype, model_dir, where)
            if batched:
                array = array.reshape((1, *array.shape))
            array.flags.writeable = False
            initial = Tensor(state.input_name, array, datatype)
            self.specs.append(StateSpec(state.input_name, state.output_name, datatype, initial))
        self.by_output = {spec.output_name: spec for spec in self.specs}
        self.initial: dict[str, Tensor] = {spec.input_name: spec.initial for spec in self.specs}
        self.hidden = frozenset(name for name in self.by_output if name not in outputs)
        self.extra_outputs = tuple(RequestedOutput(name) for name in self.by_output)

    def __bool__(self) -> bool:
        return bool(self.specs)


def _initial_array(state: Any, datatype: DataType, model_dir: Path | None, where: str) -> Any:
    """The initial state of one state, without the batch dimension."""
    count = len(state.initial_state)
    if count > 1:
        raise ConfigError(
            f"initial_state field for state input '{state.input_name}' must contain exactly one "
            f"or zero element. Found '{count}' elements."
        )
    dtype = datatype.numpy_dtype
    if count == 0:
        shape = tuple(1 if d == -1 else d for d in state.dims)
        return _zeros(shape, datatype)
    initial = state.initial_state[0]
    if initial.data_type != state.data_type:
        raise ConfigError(
            f"The data type used for 'initial_state' field of state '{state.input_name}' does "
            "not match the state data type."
        )
    if not initial.name:
        raise ConfigError(
            "Field 'name' must be set when using initial_state for state input "
            f"'{state.input_name}'."
        )
    if len(initial.dims) != len(state.dims):
        raise ConfigError(
            "Number of dimensions in 'initial_state' doesn't match the size of 'state' "
            f"dimensions for state input '{state.input_name}'. {len(initial.dims)} != "
            f"{len(state.dims)}"
        )
    for dim, state_dim in zip(initial.dims, state.dims, strict=True):
        if dim < 1:
            raise ConfigError(
                f"'initial_state' field for state input name '{state.input_name}' contains "
                "variable dimensions."
            )
        if state_dim != -1 and dim != state_dim:
            raise ConfigError(
                f"'initial_state' dim for input name '{state.input_name}' doesn't match "
                f"'state' dim description. {dim} != {state_dim}"
            )
    shape = tuple(initial.dims)
    which = initial.WhichOneof("state_data")
    if which == "zero_data":
        return _zeros(shape, datatype)
    if which != "data_file":
        raise ConfigError(
            f"initial_state setting expects state '{state.input_name}' to have state_data set"
        )
    if model_dir is None:
        raise ConfigError(f"{where}: initial_state data_file needs a model folder")
    path = model_dir / INITIAL_STATE_FOLDER / initial.data_file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: unable to read initial_state file '{path}': {exc}") from None
    element_count = int(np.prod(shape)) if shape else 1
    if datatype is DataType.BYTES:
        try:
            return deserialize_bytes(data, element_count).reshape(shape)
        except Exception as exc:
            raise ConfigError(f"{where}: initial_state file '{path}': {exc}") from None
    needed = element_count * dtype.itemsize
    if len(data) < needed:
        raise ConfigError(
            f"initial_state setting expects {needed} bytes, but the data provided from "
            f"{initial.data_file} only has {len(data)} bytes"
        )
    return np.frombuffer(data[:needed], dtype=dtype).reshape(shape).copy()


def _zeros(shape: tuple[int, ...], datatype: DataType) -> Any:
    if datatype is DataType.BYTES:
        array = np.empty(shape, dtype=object)
        array.fill(b"")
        return array
    return np.zeros(shape, dtype=datatype.numpy_dtype)


class StateCatcher:
    """Stands in for a request's response stream while the request executes: each response's
    state outputs become the sequence's state, and leave the response unless the client asked
    for them; then the response goes on to the real stream.

    ``push`` runs on whatever thread responds (the instance thread for most backends), so the
    state is in place before the instance's next batch is formed."""

    __slots__ = ("owner", "seen", "sequence", "stream", "strip")

    def __init__(self, owner: Any, sequence: Any, stream: Any, strip: frozenset[str]) -> None:
        self.owner = owner
        self.sequence = sequence
        self.stream = stream
        self.strip = strip
        self.seen = False

    def push(self, response: InferenceResponse) -> None:
        if response.error is None:
            by_output = self.owner.states.by_output
            state = None
            for tensor in response.outputs:
                spec = by_output.get(tensor.name)
                if spec is not None:
                    if state is None:
                        state = dict(self.sequence.state or self.owner.states.initial)
                    state[spec.input_name] = Tensor(spec.input_name, tensor.data, spec.datatype)
            if state is not None:
                self.sequence.state = state
                self.seen = True
                if self.strip:
                    response.outputs = [t for t in response.outputs if t.name not in self.strip]
            elif response.final and not self.seen:
                self.owner.state_missing(self.sequence)
        self.stream.push(response)

    def __getattr__(self, name: str) -> Any:  # anything else a caller asks of the stream
        return getattr(self.stream, name)
