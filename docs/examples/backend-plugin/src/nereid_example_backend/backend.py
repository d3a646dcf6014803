"""The ``scale`` backend: outputs are inputs times the model's ``factor`` parameter."""

from __future__ import annotations

from pathlib import Path

from nereid.backend import Backend, InstanceSpec, Model, ModelInstance
from nereid.config import ModelConfig
from nereid.config.model_config_pb2 import DataType
from nereid.runtime.batching import gather_inputs, scatter_outputs


class ScaleInstance(ModelInstance):
    def __init__(self, factor: float, pairs: list[tuple[str, str]]) -> None:
        self.factor = factor
        self.pairs = pairs

    def execute(self, requests) -> None:
        inputs = gather_inputs(requests)
        outputs = {out: inputs[inp] * self.factor for inp, out in self.pairs}
        scatter_outputs(requests, outputs)


class ScaleModel(Model):
    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    def complete_config(self, config: ModelConfig) -> None:
        """A model without config.pbtxt gets one FP32 input and output."""
        if not config.input:
            config.input.add(name="INPUT0", data_type=DataType.TYPE_FP32, dims=[-1])
        if not config.output:
            config.output.add(name="OUTPUT0", data_type=DataType.TYPE_FP32, dims=[-1])

    def create_instance(self, spec: InstanceSpec) -> ModelInstance:
        factor = (
            self.config.parameters["factor"].string_value
            if ("factor" in self.config.parameters)
            else "1"
        )
        pairs = [
            (i.name, o.name) for i, o in zip(self.config.input, self.config.output, strict=False)
        ]
        return ScaleInstance(float(factor), pairs)


class ScaleBackend(Backend):
    def create_model(self, config: ModelConfig, path: Path) -> Model:
        return ScaleModel(config)
