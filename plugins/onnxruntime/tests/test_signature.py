"""Auto-complete and the configuration check on plain signatures (no session)."""

from __future__ import annotations

import pytest
from nereid.config import ConfigError, parse_pbtxt
from nereid.config.model_config_pb2 import ModelInstanceGroup
from nereid_onnxruntime.signature import Signature, TensorInfo, check_config, complete_config


def _sig(inputs, outputs, initializers=()) -> Signature:
    def infos(items):
        return {name: TensorInfo(name, onnx_type, tuple(shape)) for name, onnx_type, shape in items}

    return Signature(infos(inputs), infos(outputs), infos(initializers))


BATCHING = _sig([("X", "tensor(float)", (-1, 3))], [("Y", "tensor(float)", (-1, 3))])


def test_gpu_default_instance_group():
    config = parse_pbtxt('name: "m"')
    complete_config(config, BATCHING, gpu_available=True)
    (group,) = config.instance_group
    assert group.kind == ModelInstanceGroup.KIND_GPU and group.count == 1


def test_instance_group_counts():
    config = parse_pbtxt(
        """
        name: "m"
        instance_group [ { kind: KIND_CPU }, { kind: KIND_GPU gpus: [0] }, { count: 3 },
                         { kind: KIND_AUTO } ]
        """
    )
    complete_config(config, BATCHING)
    assert [g.count for g in config.instance_group] == [2, 0, 3, 2]
    config = parse_pbtxt('name: "m" instance_group [ { kind: KIND_AUTO } ]')
    complete_config(config, BATCHING, gpu_available=True)
    assert config.instance_group[0].kind == ModelInstanceGroup.KIND_GPU


def test_no_dynamic_batching_without_the_scheduler_or_with_a_scheduler():
    config = parse_pbtxt('name: "m"')
    complete_config(config, BATCHING, dynamic_batching_available=False)
    assert config.max_batch_size == 4 and not config.HasField("dynamic_batching")
    config = parse_pbtxt('name: "m" sequence_batching { }')
    complete_config(config, BATCHING)
    assert not config.HasField("dynamic_batching")
    config = parse_pbtxt('name: "m" max_batch_size: 1')
    complete_config(config, BATCHING)
    assert not config.HasField("dynamic_batching")  # Triton: only when max_batch_size > 1


def test_unsupported_type_names_the_tensor():
    signature = _sig([("X", "tensor(float8e4m3fn)", (-1, 3))], [("Y", "tensor(float)", (-1,))])
    with pytest.raises(ConfigError, match="input 'X' has ONNX type tensor\\(float8e4m3fn\\)"):
        complete_config(parse_pbtxt('name: "m"'), signature)


def test_sequence_controls_count_as_inputs():
    signature = _sig(
        [("X", "tensor(float)", (-1, 3)), ("START", "tensor(int32)", (-1, 1))],
        [("Y", "tensor(float)", (-1, 3))],
    )
    config = parse_pbtxt(
        """
        name: "m" max_batch_size: 2
        input [ { name: "X" data_type: TYPE_FP32 dims: [ 3 ] } ]
        output [ { name: "Y" data_type: TYPE_FP32 dims: [ 3 ] } ]
        sequence_batching { control_input [ { name: "START" control [
          { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] } ] }
        """
    )
    check_config(config, signature)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            'max_batch_size: 2 input [ { name: "S" data_type: TYPE_FP32 dims: [ 1 ] } ]',
            "input 'S' is a scalar in the model, which cannot have a batch dimension",
        ),
        (
            'input [ { name: "S" data_type: TYPE_FP32 dims: [ 2 ] } ]',
            "input 'S' is a scalar in the model; the configuration must give dims \\[1\\]",
        ),
        ('batch_input [ { target_name: "B" source_input: "S" } ]', "batch_input"),
    ],
)
def test_scalar_and_batch_input_checks(text, message):
    signature = _sig([("S", "tensor(float)", ())], [])
    with pytest.raises(ConfigError, match=message):
        check_config(parse_pbtxt(f'name: "m" {text}'), signature)
