"""``model_warmup``: sample requests run on every instance before a model version is READY.

Each sample runs ``count`` times (once when ``count`` is 0) on each instance, with zero,
random or file data (``input_data_file`` is read from the model folder's ``warmup/``). A sample
that fails, or that cannot be built, fails the load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidArgumentError, NereidError, UnavailableError
from ..types import DataType, InferenceRequest, ResponseStream, Tensor

if TYPE_CHECKING:
    from ..config.model_config_pb2 import ModelWarmup
    from ..runtime.runner import InstanceRunner
    from .model import LoadedModel


def _sample_tensor(
    name: str, spec: Any, batch_size: int, batched: bool, model_dir: Path | None
) -> Tensor:
    from .model import tensor_datatype

    datatype = tensor_datatype(spec.data_type)
    shape = ([batch_size] if batched else []) + list(spec.dims)
    count = int(np.prod(shape)) if shape else 1
    which = spec.WhichOneof("input_data_type")
    raw = b""
    if which == "input_data_file":
        if model_dir is None:
            raise InvalidArgumentError(f"warmup input '{name}': the model has no folder")
        raw = (model_dir / "warmup" / spec.input_data_file).read_bytes()
    if datatype is DataType.BYTES:
        if which == "input_data_file":
            return Tensor.from_buffer(name, datatype, shape, raw)
        fill = b"" if which == "zero_data" else b"warmup"
        data = np.empty(count, dtype=object)
        data[:] = [fill] * count
        return Tensor(name, data.reshape(shape), datatype)
    dtype = datatype.numpy_dtype
    if which == "input_data_file":
        values = np.frombuffer(raw, dtype=dtype)
        if values.size < count:
            raise InvalidArgumentError(
                f"warmup input '{name}': file '{spec.input_data_file}' holds {values.size} "
                f"elements, {count} needed for shape {shape}"
            )
        return Tensor(name, values[:count].reshape(shape), datatype)
    if which == "random_data":
        values = np.random.default_rng().random(count) * 10
        return Tensor(name, values.astype(dtype).reshape(shape), datatype)
    return Tensor(name, np.zeros(shape, dtype=dtype), datatype)


def warmup_request(model: LoadedModel, sample: ModelWarmup) -> InferenceRequest:
    """One request for ``sample``; its id is ``warmup:<sample name>``."""
    batched = model.max_batch_size > 0
    batch_size = max(1, sample.batch_size)
    if not sample.inputs:
        raise InvalidArgumentError(f"warmup sample '{sample.name}' has no inputs")
    model_dir = model.path.parent if model.path is not None else None
    inputs = [
        _sample_tensor(name, spec, batch_size, batched, model_dir)
        for name, spec in sample.inputs.items()
    ]
    request = InferenceRequest(
        model.name, inputs, model_version=model.version, id=f"warmup:{sample.name}"
    )
    request.batch_size = batch_size if batched else 1
    return request


async def warm_up(model: LoadedModel, runners: Sequence[InstanceRunner]) -> None:
    """Run each warmup sample ``count`` times on each of ``runners``; a failure fails the load.

    The runners must not be pulling yet: the samples go straight to the instance.
    """
    samples = model.config.model_warmup
    if not samples or not runners:
        return
    loop = asyncio.get_running_loop()
    for runner in runners:
        for sample in samples:
            for _ in range(max(1, sample.count)):
                try:
                    request = warmup_request(model, sample)
                except (OSError, ValueError, NereidError) as exc:
                    message = exc.message if isinstance(exc, NereidError) else str(exc)
                    raise UnavailableError(
                        f"failed to warm up model '{model.name}' with sample "
                        f"'{sample.name}': {message}"
                    ) from None
                stream = ResponseStream(loop)
                request.stream = stream
                await runner.run_batch([request])
                for response in await stream.collect():
                    if response.error is not None:
                        raise UnavailableError(
                            f"failed to warm up model '{model.name}' with sample "
                            f"'{sample.name}' on instance '{runner.handle.name}': "
                            f"{response.error.message}"
                        )
