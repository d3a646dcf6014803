"""Backends for tests and examples: ``identity``, and the decoupled ``repeat`` and ``square``.

``repeat`` and ``square`` behave like Triton's ``repeat_int32`` and ``square_int32`` test
backends, so frontends can be tested on decoupled models before any framework backend exists.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from ..backend import Backend, InstanceSpec, Model, ModelInstance
from ..config import ModelConfig
from ..errors import InvalidArgumentError
from ..lifecycle.model import tensor_datatype
from ..runtime.batching import mark_compute_input_end
from ..types import InferenceRequest, InferenceResponse, Tensor


class IdentityInstance(ModelInstance):
    """The i-th output is the i-th input, whatever its type and shape."""

    def __init__(self, config: ModelConfig) -> None:
        self.pairs = [
            (i.name, o.name, tensor_datatype(o.data_type))
            for i, o in zip(config.input, config.output, strict=False)
        ]
        self.delay_s = (
            float(config.parameters["execute_delay_ms"].string_value or 0) / 1000
            if "execute_delay_ms" in config.parameters
            else 0.0
        )

    def execute(self, requests: list[InferenceRequest]) -> None:
        mark_compute_input_end(requests)
        if self.delay_s:
            time.sleep(self.delay_s)
        for request in requests:
            inputs = request.inputs
            request.compute_output_start_ns = time.monotonic_ns()
            request.respond(
                InferenceResponse(
                    [
                        Tensor(out, inputs[inp].data, dtype)
                        for inp, out, dtype in self.pairs
                        if inp in inputs
                    ]
                )
            )


class IdentityModel(Model):
    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    def create_instance(self, spec: InstanceSpec) -> ModelInstance:
        return IdentityInstance(self.config)


class IdentityBackend(Backend):
    def create_model(self, config: ModelConfig, path: Path) -> Model:
        if len(config.input) != len(config.output):
            raise InvalidArgumentError(
                f"identity model '{config.name}' needs as many outputs as inputs"
            )
        return IdentityModel(config)


def _scalar(request: InferenceRequest, name: str, default: int = 0) -> np.ndarray:
    tensor = request.inputs.get(name)
    return tensor.data.reshape(-1) if tensor is not None else np.array([default])


class RepeatInstance(ModelInstance):
    """For each element of IN, a response with OUT = element and IDX = its index, after
    DELAY[i] milliseconds; sent from a thread of its own, as a decoupled model may."""

    def execute(self, requests: list[InferenceRequest]) -> None:
        for request in requests:
            threading.Thread(target=self._respond, args=(request,), daemon=True).start()

    @staticmethod
    def _respond(request: InferenceRequest) -> None:
        values = request.inputs["IN"].data.reshape(-1)
        delays = _scalar(request, "DELAY")
        wait = int(_scalar(request, "WAIT")[0])
        try:
            for index, value in enumerate(values):
                if request.is_cancelled():
                    request.fail_cancelled()
                    return
                delay = int(delays[index]) if index < len(delays) else 0
                time.sleep(delay / 1000)
                request.respond(
                    InferenceResponse(
                        [
                            Tensor("OUT", np.array([value], dtype=np.int32)),
                            Tensor("IDX", np.array([index], dtype=np.uint32)),
                        ]
                    ),
                    final=False,
                )
            time.sleep(wait / 1000)
            request.respond(None, final=True)
        except InvalidArgumentError:
            pass  # the request was answered meanwhile (cancelled): nothing more to send


class SquareInstance(ModelInstance):
    """For input N, N responses each holding N, then the final flag alone."""

    def execute(self, requests: list[InferenceRequest]) -> None:
        for request in requests:
            count = int(request.inputs["IN"].data.reshape(-1)[0])
            for _ in range(count):
                request.respond(
                    InferenceResponse([Tensor("OUT", np.array([count], dtype=np.int32))]),
                    final=False,
                )
            request.respond(None, final=True)


class _DecoupledModel(Model):
    instance_type: type[ModelInstance]

    def create_instance(self, spec: InstanceSpec) -> ModelInstance:
        return self.instance_type()


class _DecoupledBackend(Backend):
    model_type: type[_DecoupledModel]

    def create_model(self, config: ModelConfig, path: Path) -> Model:
        if not config.model_transaction_policy.decoupled:
            raise InvalidArgumentError(
                f"model '{config.name}' of backend '{self.context.name}' must be decoupled "
                "(model_transaction_policy {{ decoupled: true }})"
            )
        return self.model_type()


class RepeatModel(_DecoupledModel):
    instance_type = RepeatInstance


class SquareModel(_DecoupledModel):
    instance_type = SquareInstance


class RepeatBackend(_DecoupledBackend):
    model_type = RepeatModel


class SquareBackend(_DecoupledBackend):
    model_type = SquareModel
