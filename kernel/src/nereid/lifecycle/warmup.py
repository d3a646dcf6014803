"""``model_warmup``: sample requests run on every instance before a model is READY."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InvalidArgumentError, UnavailableError
from ..types import DataType, InferenceRequest, ResponseStream, Tensor

if TYPE_CHECKING:
    from ..config.model_config_pb2 import ModelWarmup
    from .model import LoadedModel


def _sample_tensor(name: str, spec, batch_size: int, batched: bool, model_dir) -> Tensor:
    from .model import tensor_datatype

    datatype = tensor_datatype(spec.data_type)
    shape = ([batch_size] if batched else []) + list(spec.dims)
    count = int(np.prod(shape)) if shape else 1
    which = spec.WhichOneof("input_data_type")
    if datatype is DataType.BYTES:
        if which == "input_data_file":
            raw = (model_dir / "warmup" / spec.input_data_file).read_bytes()
            return Tensor.from_buffer(name, datatype, shape, raw)
        fill = b"" if which == "zero_data" else b"warmup"
        data = np.empty(count, dtype=object)
        data[:] = [fill] * count
        return Tensor(name, data.reshape(shape), datatype)
    dtype = datatype.numpy_dtype
    if which == "input_data_file":
        raw = (model_dir / "warmup" / spec.input_data_file).read_bytes()
        return Tensor(name, np.frombuffer(raw, dtype=dtype)[:count].reshape(shape), datatype)
    if which == "random_data":
        values = np.random.default_rng().random(count) * 10
        return Tensor(name, values.astype(dtype).reshape(shape), datatype)
    return Tensor(name, np.zeros(shape, dtype=dtype), datatype)


def warmup_requests(model: LoadedModel, sample: ModelWarmup) -> InferenceRequest:
    batched = model.max_batch_size > 0
    batch_size = max(1, sample.batch_size)
    if not sample.inputs:
        raise InvalidArgumentError(f"warmup sample '{sample.name}' has no inputs")
    inputs = [
        _sample_tensor(name, spec, batch_size, batched, model.path.parent)
        for name, spec in sample.inputs.items()
    ]
    request = InferenceRequest(model.name, inputs, id=f"warmup:{sample.name}")
    request.batch_size = batch_size if batched else 1
    return request


async def warm_up(model: LoadedModel) -> None:
    """Run each warmup sample ``count`` times on each instance; a failure fails the load."""
    samples = model.config.model_warmup
    if not samples:
        return
    loop = asyncio.get_running_loop()
    for runner in model.runners:
        for sample in samples:
            for _ in range(max(1, sample.count)):
                request = warmup_requests(model, sample)
                stream = ResponseStream(loop)
                request.stream = stream
                await runner.run_batch([request])
                for response in await stream.collect():
                    if response.error is not None:
                        raise UnavailableError(
                            f"failed to warm up model '{model.name}' with sample "
                            f"'{sample.name}': {response.error.message}"
                        )
