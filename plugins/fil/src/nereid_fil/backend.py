"""The ``fil`` backend: the kernel's Backend -> Model -> ModelInstance contract over tree
ensembles read by treelite and predicted with treelite's GTIL (CPU). This is the one module
that uses treelite (through :mod:`nereid_fil.predictor`); the kernel imports it when the first
FIL model loads.

As Triton's FIL backend: the version folder holds one model file named by ``model_type``
(``xgboost.model``, ``xgboost.json``, ``xgboost.ubj``, ``model.txt``, ``checkpoint.tl``, or
``default_model_filename``); the input is ``input__0`` FP32 ``[num_features]`` and the output
``output__0`` FP32: the prediction ``[1]`` of a regressor (``[num_class]`` for a multi-output
one), the class ``[1]`` of a classifier, or its probabilities ``[num_class]`` with
``predict_proba`` (``[2]`` for a binary classifier).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from nereid.backend import Backend, BackendContext, InstanceSpec, Model, ModelInstance
from nereid.config import ModelConfig
from nereid.config.model_config_pb2 import DataType as ProtoDataType
from nereid.errors import InvalidArgumentError, UnavailableError
from nereid.runtime.batching import gather, mark_compute_input_end, scatter_outputs
from nereid.types import DataType, InferenceRequest

from .params import FilParams, parameter_values, parse
from .predictor import Predictor, load_treelite_model, predictor_for

log = logging.getLogger("nereid.fil")

INPUT = "input__0"
OUTPUT = "output__0"
_FP32 = ProtoDataType.Value("TYPE_FP32")


class FilBackend(Backend):
    def __init__(self, context: BackendContext) -> None:
        super().__init__(context)

    def create_model(self, config: ModelConfig, path: Path) -> Model:
        return FilModel(config, Path(path))


def output_width(params: FilParams, num_outputs: int) -> int:
    """The columns of ``output__0`` for a model with ``num_outputs`` score columns."""
    if not params.is_classifier:
        return num_outputs
    if params.predict_proba:
        return max(num_outputs, 2)
    return 1


def postprocess(scores: np.ndarray, params: FilParams) -> np.ndarray:
    """GTIL's transformed scores ``(rows, k)`` as Triton's FIL backend answers: unchanged for a
    regressor; for a classifier, probabilities (``[1 - p, p]`` for a binary one) with
    ``predict_proba``, else the class as FP32 (``p > threshold`` for a binary one, argmax for
    more classes)."""
    if not params.is_classifier:
        return scores
    columns = scores.shape[1]
    if params.predict_proba:
        if columns == 1:
            p = scores[:, 0]
            return np.stack([1.0 - p, p], axis=1).astype(np.float32, copy=False)
        return scores
    if columns == 1:
        return (scores > params.threshold).astype(np.float32)
    if columns == 2:
        return (scores[:, 1:2] > params.threshold).astype(np.float32)
    return scores.argmax(axis=1).astype(np.float32).reshape(-1, 1)


def _dims(tensor: Any) -> list[int]:
    return [int(d) for d in tensor.dims]


def check_config(config: ModelConfig, params: FilParams, predictor: Predictor) -> None:
    """``input__0`` FP32 ``[num_features]`` and ``output__0`` FP32 ``[width]`` (with a leading
    batch dimension when ``max_batch_size`` is 0)."""
    name = config.name
    batched = config.max_batch_size > 0
    inputs = {t.name: t for t in config.input}
    outputs = {t.name: t for t in config.output}
    if list(inputs) != [INPUT]:
        raise InvalidArgumentError(
            f"model '{name}': the FIL backend needs exactly one input named '{INPUT}', the "
            f"config has {list(inputs)}"
        )
    if list(outputs) != [OUTPUT]:
        raise InvalidArgumentError(
            f"model '{name}': the FIL backend needs exactly one output named '{OUTPUT}' "
            f"(lowercase), the config has {list(outputs)}"
        )
    for kind, tensor in (("input", inputs[INPUT]), ("output", outputs[OUTPUT])):
        if tensor.data_type != _FP32:
            raise InvalidArgumentError(
                f"model '{name}': {kind} '{tensor.name}' must be TYPE_FP32, not "
                f"{ProtoDataType.Name(tensor.data_type)}"
            )
    features = predictor.num_features
    width = output_width(params, predictor.num_outputs)
    for tensor, want, what in (
        (inputs[INPUT], features, f"the model has {features} features"),
        (outputs[OUTPUT], width, _width_reason(params, predictor.num_outputs, width)),
    ):
        dims = _dims(tensor)
        if not batched:
            if len(dims) != 2:
                raise InvalidArgumentError(
                    f"model '{name}': '{tensor.name}' dims {dims} must be [ -1, {want} ] when "
                    "max_batch_size is 0"
                )
            dims = dims[1:]
        if dims != [want]:
            raise InvalidArgumentError(
                f"model '{name}': '{tensor.name}' has dims {dims}, expected [ {want} ]: {what}"
            )


def _width_reason(params: FilParams, num_outputs: int, width: int) -> str:
    if not params.is_classifier:
        return f"the regressor has {num_outputs} output(s)"
    if params.predict_proba:
        return f"predict_proba gives {width} class probabilities"
    return "a classifier without predict_proba gives one class per row"


class FilModel(Model):
    def __init__(self, config: ModelConfig, path: Path) -> None:
        self.config = config  # completed and validated in place by the kernel
        self.path = path
        self.name = config.name or path.parent.name
        self.params = parse(parameter_values(config), self.name)
        self._lock = threading.Lock()
        self._tl_model: Any = None
        self._size = 0
        self._checked = False
        self._instances = 0

    def model_file(self) -> Path:
        filename = self.config.default_model_filename or self.params.default_filename
        path = self.path / filename
        if not path.is_file():
            raise UnavailableError(
                f"unable to find '{path}' for model '{self.name}' (model_type "
                f"'{self.params.model_type}' reads '{filename}')"
            )
        return path

    def tl_model(self) -> Any:
        with self._lock:
            if self._tl_model is None:
                path = self.model_file()
                self._tl_model = load_treelite_model(path, self.params, self.name)
                self._size = path.stat().st_size
            return self._tl_model

    def complete_config(self, config: ModelConfig) -> None:
        """Fill in ``input__0`` and ``output__0`` when the config leaves them out."""
        if config.input and config.output:
            return
        params = parse(parameter_values(config), self.name)
        predictor = predictor_for("KIND_CPU", self.tl_model(), params, self.name, self._size)
        lead = [] if config.max_batch_size > 0 else [-1]
        if not config.input:
            tensor = config.input.add(name=INPUT, data_type=_FP32)
            tensor.dims.extend([*lead, predictor.num_features])
        if not config.output:
            tensor = config.output.add(name=OUTPUT, data_type=_FP32)
            tensor.dims.extend([*lead, output_width(params, predictor.num_outputs)])

    def create_instance(self, spec: InstanceSpec) -> ModelInstance:
        predictor = predictor_for(spec.kind, self.tl_model(), self.params, self.name, self._size)
        with self._lock:
            if not self._checked:
                check_config(self.config, self.params, predictor)
                self._checked = True
            self._instances += 1
        return FilInstance(self, predictor, spec)

    def memory_usage(self) -> list[dict[str, Any]]:
        """The model file's size: one treelite model is shared by every instance."""
        return [{"type": "CPU", "id": 0, "byte_size": self._size}] if self._size else []

    def finalize(self) -> None:
        self._tl_model = None


class FilInstance(ModelInstance):
    """Gather ``input__0`` rows, predict, scatter ``output__0`` rows."""

    def __init__(self, model: FilModel, predictor: Predictor, spec: InstanceSpec) -> None:
        self.name = spec.name
        self.model = model
        self.params = model.params
        self.predictor = predictor
        self.batched = model.config.max_batch_size > 0
        self.datatypes = {OUTPUT: DataType.FP32}

    def execute(self, requests: list[InferenceRequest]) -> None:
        x = gather(requests, INPUT)
        mark_compute_input_end(requests)
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.float32)
        scores = self.predictor.predict(x)
        out = postprocess(scores, self.params)
        scatter_outputs(requests, {OUTPUT: out}, self.datatypes, batched=self.batched)

    def finalize(self) -> None:
        self.predictor = None  # type: ignore[assignment]


__all__ = ["FilBackend", "FilInstance", "FilModel", "check_config", "postprocess"]
