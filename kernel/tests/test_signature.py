"""The shared signature rules where the onnxruntime and openvino plugin tests do not reach:
dynamic rank, the framework parameters, and a backend that does not check optional inputs."""

from __future__ import annotations

import pytest
from nereid.config import ConfigError, parse_pbtxt
from nereid.signature import (
    Framework,
    Signature,
    TensorInfo,
    check_config,
    complete_config,
    scalar_tensors,
)
from nereid.types import DataType

TOY = Framework(
    name="Toy",
    backend="toy",
    datatype_of={"float": DataType.FP32}.get,
    describe_type=lambda toy_type: f"TYPE_FP32 (Toy {toy_type})",
    batch_dimension_rule="its first dimension must vary, not {shape}",
    unsupported_batch_fields=("batch_input", "batch_output"),
)

DYNAMIC_RANK = Signature.of([TensorInfo("X", "float", None)], [TensorInfo("Y", "float", ())])


def test_dynamic_rank_cannot_be_autofilled_but_any_dims_pass_the_check():
    with pytest.raises(ConfigError, match="input 'X' has a dynamic rank; give its dims"):
        complete_config(parse_pbtxt('name: "m"'), DYNAMIC_RANK, TOY)
    config = parse_pbtxt(
        """name: "m"
        input [ { name: "X" data_type: TYPE_FP32 dims: [ 2, 3, 4 ] } ]
        output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]"""
    )
    check_config(config, DYNAMIC_RANK, TOY)
    assert not DYNAMIC_RANK.can_batch()
    assert scalar_tensors(config, DYNAMIC_RANK) == (set(), {"Y"})  # a dynamic rank is no scalar


@pytest.mark.parametrize(
    "text, message",
    [
        (
            'batch_output [ { target_name: "Y" source_input: "X" } ]',
            "batch_input and batch_output are not supported by the toy backend",
        ),
        (
            'input [ { name: "X" data_type: TYPE_INT32 dims: [ 3 ] } ]',
            "configuration expects datatype TYPE_INT32 for input 'X', model provides TYPE_FP32 "
            "\\(Toy float\\)",
        ),
        (
            'max_batch_size: 2 input [ { name: "X" data_type: TYPE_FP32 dims: [ 3 ] } ]',
            "input 'X': for the model to support batching its first dimension must vary, not "
            "\\[2,3\\]",
        ),
    ],
)
def test_framework_parameters_word_the_messages(text, message):
    signature = Signature.of([TensorInfo("X", "float", (2, 3))], [])
    with pytest.raises(ConfigError, match=f"unable to load model 'm': {message}"):
        check_config(parse_pbtxt(f'name: "m" {text}'), signature, TOY)


def test_optional_inputs_and_provided_inputs():
    signature = Signature.of([TensorInfo("X", "float", (3,)), TensorInfo("C", "float", (1,))], [])
    config = parse_pbtxt(
        'name: "m" input [ { name: "X" data_type: TYPE_FP32 dims: [ 3 ] optional: true } ]'
    )
    with pytest.raises(ConfigError, match="the model's input 'C' is missing"):
        check_config(config, signature, TOY)
    check_config(config, signature, TOY, provided_inputs={"C"})  # TOY leaves optional unchecked
