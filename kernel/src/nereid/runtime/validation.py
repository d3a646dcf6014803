"""Checking a request against its model's configuration, with Triton's error messages, and
shaping its responses (requested outputs, reshape, classification)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import InvalidArgumentError
from ..types import DataType, InferenceRequest, InferenceResponse, Tensor


def _shape_matches(shape: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    if shape == dims:
        return True
    if len(shape) != len(dims):
        return False
    return all(d == -1 or d == s for s, d in zip(shape, dims, strict=True))


def _fmt(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def validate_request(model, request: InferenceRequest) -> None:
    """Raise INVALID_ARG unless the request fits ``model`` (a LoadedModel); set its batch size
    and apply input reshapes."""
    name = model.name
    prefix = f"[request id: {request.id or '<id_unknown>'}] "
    specs = model.inputs
    inputs = request.inputs
    for input_name in inputs:
        if input_name not in specs:
            raise InvalidArgumentError(
                f"{prefix}unexpected inference input '{input_name}' for model '{name}'"
            )
    if len(inputs) != len(specs):
        missing = [n for n in model.required_inputs if n not in inputs]
        if missing:
            raise InvalidArgumentError(
                f"{prefix}expected {len(model.required_inputs)} inputs but got {len(inputs)} "
                f"inputs for model '{name}'. Got input(s) {list(inputs)}, but missing required "
                f"input(s) {missing}. Please provide all required input(s)."
            )
    max_batch = model.max_batch_size
    batch_size = 0
    for tensor in inputs.values():
        spec = specs[tensor.name]
        if tensor.datatype is not spec.datatype:
            raise InvalidArgumentError(
                f"{prefix}inference input '{tensor.name}' data-type is "
                f"'{tensor.datatype.value}', but model '{name}' expects '{spec.datatype.value}'"
            )
        shape = tensor.shape
        if max_batch > 0:
            if not shape:
                raise InvalidArgumentError(
                    f"{prefix}input '{tensor.name}' for model '{name}' has no batch dimension"
                )
            rows = shape[0]
            if batch_size == 0:
                batch_size = rows
            elif rows != batch_size:
                raise InvalidArgumentError(
                    f"{prefix}input '{tensor.name}' batch size does not match other inputs for "
                    f"'{name}'"
                )
            item_shape = shape[1:]
        else:
            item_shape = shape
        if not _shape_matches(item_shape, spec.dims):
            expected = ((-1, *spec.dims)) if max_batch > 0 else spec.dims
            raise InvalidArgumentError(
                f"{prefix}unexpected shape for input '{tensor.name}' for model '{name}'. "
                f"Expected {_fmt(expected)}, got {_fmt(shape)}. "
            )
        if spec.reshape is not None:
            new_shape = ((shape[0],) if max_batch > 0 else ()) + _resolve(spec.reshape, item_shape)
            tensor.data = tensor.data.reshape(new_shape)
            tensor.shape = tuple(new_shape)
    if max_batch > 0:
        if batch_size > max_batch:
            raise InvalidArgumentError(
                f"{prefix}inference request batch-size must be <= {max_batch} for '{name}'"
            )
        if batch_size < 1:
            raise InvalidArgumentError(
                f"{prefix}inference request batch-size must be >= 1 for '{name}'"
            )
        request.batch_size = batch_size
    for output in request.requested_outputs:
        if output.name not in model.outputs:
            raise InvalidArgumentError(
                f"{prefix}unexpected inference output '{output.name}' for model '{name}'"
            )


def _resolve(target: tuple[int, ...], source: tuple[int, ...]) -> tuple[int, ...]:
    """A reshape target with its -1 resolved from the element count of ``source``."""
    if -1 not in target:
        return target
    total = int(np.prod(source)) if source else 1
    known = int(np.prod([d for d in target if d != -1])) or 1
    return tuple(total // known if d == -1 else d for d in target)


def response_transform(
    model, request: InferenceRequest
) -> Callable[[InferenceResponse], InferenceResponse] | None:
    """What to do to each response of this request: keep only the requested outputs, undo an
    output reshape, turn an output into classification labels. ``None`` when nothing."""
    requested = request.requested_outputs
    reshaped = model.reshaped_outputs
    classify: dict[str, int] = {}
    wanted = set()
    for output in requested:  # one pass: most requests name every output and nothing more
        wanted.add(output.name)
        if output.parameters.get("classification"):
            classify[output.name] = int(output.parameters["classification"])
    if not reshaped and not classify and (not requested or wanted.issuperset(model.outputs)):
        return None  # every output, as the model made it
    batched = model.max_batch_size > 0

    def transform(response: InferenceResponse) -> InferenceResponse:
        outputs = response.outputs
        if wanted:
            outputs = [t for t in outputs if t.name in wanted]
        shaped = []
        for tensor in outputs:
            spec = model.outputs.get(tensor.name)
            if spec is not None and spec.reshape is not None:
                lead = tensor.shape[:1] if batched else ()
                tensor = Tensor(
                    tensor.name,
                    tensor.data.reshape(lead + _resolve(spec.dims, tensor.shape[len(lead) :])),
                    tensor.datatype,
                    tensor.parameters,
                )
            if tensor.name in classify:
                tensor = classification(tensor, classify[tensor.name], spec, batched)
            shaped.append(tensor)
        response.outputs = shaped
        return response

    return transform


def classification(tensor: Tensor, top: int, spec, batched: bool) -> Tensor:
    """Triton's classification extension: the top ``top`` entries of each batch item as
    ``"<value>:<index>[:<label>]"`` BYTES."""
    if tensor.datatype is DataType.BYTES:
        raise InvalidArgumentError(
            f"class result not available for output '{tensor.name}' due to unsupported type 'BYTES'"
        )
    data = tensor.data
    rows = data.reshape(data.shape[0], -1) if batched else data.reshape(1, -1)
    labels = spec.labels if spec is not None else ()
    top = min(top, rows.shape[1])
    out = np.empty((rows.shape[0], top), dtype=object)
    for r, row in enumerate(rows):
        order = np.argsort(-row.astype(np.float64), kind="stable")[:top]
        for c, index in enumerate(order):
            text = f"{float(row[index]):f}:{index}"
            if index < len(labels):
                text += f":{labels[index]}"
            out[r, c] = text.encode()
    if not batched:
        out = out.reshape(top)
    return Tensor(tensor.name, out, DataType.BYTES, tensor.parameters)
