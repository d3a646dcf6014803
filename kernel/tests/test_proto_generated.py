"""The checked-in ModelConfig protobuf code is current and wire-compatible with Triton's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc  # noqa: F401  (registers Triton's protos in the default pool)
import tritonclient.grpc.model_config_pb2 as triton_pb2
from google.protobuf import descriptor_pb2, json_format, text_format
from nereid.testing import assert_generated_code_current

REPO_ROOT = Path(__file__).resolve().parents[2]
KERNEL_GENERATED = (
    "kernel/src/nereid/config/model_config_pb2.py",
    "kernel/src/nereid/config/model_config_pb2.pyi",
)

# A config.pbtxt touching most of the schema, including every oneof used in practice.
CONFIG_PBTXT = """
name: "pipeline"
platform: "ensemble"
backend: "python"
runtime: "model.py"
max_batch_size: 8
version_policy { specific { versions: [1, 3] } }
input {
  name: "INPUT0"
  data_type: TYPE_FP32
  format: FORMAT_NCHW
  dims: [3, -1, -1]
  reshape { shape: [3, 16, 16] }
  allow_ragged_batch: true
  optional: true
}
input { name: "TEXT" data_type: TYPE_STRING dims: [1] }
output {
  name: "OUTPUT0"
  data_type: TYPE_BF16
  dims: [10]
  label_filename: "labels.txt"
}
batch_input {
  kind: BATCH_ACCUMULATED_ELEMENT_COUNT
  target_name: "ACC"
  data_type: TYPE_INT32
  source_input: "INPUT0"
}
batch_output {
  target_name: "OUTPUT0"
  kind: BATCH_SCATTER_WITH_INPUT_SHAPE
  source_input: "INPUT0"
}
instance_group {
  name: "gpu_group"
  kind: KIND_GPU
  count: 2
  gpus: [0, 1]
  profile: "0"
  passive: true
  host_policy: "numa0"
  rate_limiter {
    resources { name: "R1" global: true count: 4 }
    priority: 2
  }
  secondary_devices { kind: KIND_NVDLA device_id: 1 }
}
instance_group { kind: KIND_CPU count: 1 }
optimization {
  priority: PRIORITY_MAX
  cuda {
    graphs: true
    graph_spec {
      batch_size: 4
      input { key: "INPUT0" value { dim: [3, 16, 16] } }
      graph_lower_bound {
        batch_size: 1
        input { key: "INPUT0" value { dim: [3, 8, 8] } }
      }
    }
  }
  execution_accelerators {
    gpu_execution_accelerator {
      name: "tensorrt"
      parameters { key: "precision_mode" value: "FP16" }
    }
  }
  input_pinned_memory { enable: false }
  gather_kernel_buffer_threshold: 32
  eager_batching: true
}
dynamic_batching {
  preferred_batch_size: [4, 8]
  max_queue_delay_microseconds: 100
  preserve_ordering: true
  priority_levels: 2
  default_priority_level: 1
  default_queue_policy {
    timeout_action: DELAY
    default_timeout_microseconds: 5000
    allow_timeout_override: true
    max_queue_size: 16
  }
  priority_queue_policy {
    key: 1
    value { timeout_action: REJECT default_timeout_microseconds: 1000 max_queue_size: 4 }
  }
  priority_queue_policy { key: 2 value { max_queue_size: 32 } }
}
default_model_filename: "model.onnx"
cc_model_filenames { key: "8.0" value: "model_ampere.plan" }
metric_tags { key: "team" value: "search" }
parameters { key: "EXECUTION_ENV_PATH" value { string_value: "/envs/py.tar.gz" } }
parameters { key: "threads" value { string_value: "4" } }
model_warmup {
  name: "warm"
  batch_size: 2
  count: 3
  inputs { key: "INPUT0" value { data_type: TYPE_FP32 dims: [3, 16, 16] random_data: true } }
  inputs { key: "TEXT" value { data_type: TYPE_STRING dims: [1] input_data_file: "text" } }
}
model_operations { op_library_filename: "libcustom.so" }
model_transaction_policy { decoupled: true }
model_repository_agents {
  agents { name: "checksum" parameters { key: "MD5:model.onnx" value: "abc" } }
}
response_cache { enable: true }
model_metrics {
  metric_control {
    metric_identifier { family: "nv_inference_first_response_histogram_ms" }
    histogram_options { buckets: [1, 10, 100] }
  }
}
"""

SEQUENCE_PBTXT = """
name: "stateful"
max_batch_size: 4
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  oldest {
    max_candidate_sequences: 8
    preferred_batch_size: [2, 4]
    max_queue_delay_microseconds: 50
    preserve_ordering: true
  }
  control_input {
    name: "START"
    control { kind: CONTROL_SEQUENCE_START fp32_false_true: [0, 1] }
  }
  control_input {
    name: "READY"
    control { kind: CONTROL_SEQUENCE_READY bool_false_true: [false, true] }
  }
  control_input {
    name: "END"
    control { kind: CONTROL_SEQUENCE_END int32_false_true: [0, 1] }
  }
  control_input {
    name: "CORRID"
    control { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 }
  }
  state {
    input_name: "STATE_IN"
    output_name: "STATE_OUT"
    data_type: TYPE_INT32
    dims: [-1]
    initial_state { name: "zeros" data_type: TYPE_INT32 dims: [1] zero_data: true }
    use_same_buffer_for_input_output: true
    use_growable_memory: true
  }
  iterative_sequence: true
}
"""

ENSEMBLE_PBTXT = """
name: "ens"
platform: "ensemble"
version_policy { latest { num_versions: 2 } }
ensemble_scheduling {
  max_inflight_requests: 16
  step {
    model_name: "preprocess"
    model_version: -1
    input_map { key: "RAW" value: "INPUT" }
    output_map { key: "PIXELS" value: "pixels" }
  }
  step {
    model_name: "classifier"
    model_version: 3
    model_namespace: "vision"
    input_map { key: "INPUT0" value: "pixels" }
    output_map { key: "OUTPUT0" value: "OUTPUT" }
  }
}
"""


def test_generated_code_is_current(tmp_path: Path) -> None:
    assert_generated_code_current(REPO_ROOT, KERNEL_GENERATED, tmp_path)


def test_descriptor_pool_names() -> None:
    from nereid.config import model_config_pb2

    assert model_config_pb2.DESCRIPTOR.name == "nereid/config/model_config.proto"
    assert model_config_pb2.DESCRIPTOR.package == "nereid.config"


def _shape(message: descriptor_pb2.DescriptorProto, package: str) -> dict[str, Any]:
    """Wire-relevant shape of a message: fields, oneofs, nested messages and enums."""
    oneofs = [o.name for o in message.oneof_decl]
    fields = {}
    for f in message.field:
        oneof = oneofs[f.oneof_index] if f.HasField("oneof_index") else None
        fields[f.name] = (f.number, f.label, f.type, f.type_name.removeprefix(package), oneof)
    return {
        "map_entry": message.options.map_entry,
        "fields": fields,
        "nested": {n.name: _shape(n, package) for n in message.nested_type},
        "enums": {e.name: {v.name: v.number for v in e.value} for e in message.enum_type},
    }


def _file_shape(file_descriptor: Any, package: str) -> dict[str, Any]:
    proto = descriptor_pb2.FileDescriptorProto()
    file_descriptor.CopyToProto(proto)
    return {
        "messages": {m.name: _shape(m, package) for m in proto.message_type},
        "enums": {e.name: {v.name: v.number for v in e.value} for e in proto.enum_type},
    }


def test_schema_matches_triton() -> None:
    from nereid.config import model_config_pb2

    ours = _file_shape(model_config_pb2.DESCRIPTOR, ".nereid.config.")
    theirs = _file_shape(triton_pb2.DESCRIPTOR, ".inference.")
    assert ours["enums"] == theirs["enums"]
    assert sorted(ours["messages"]) == sorted(theirs["messages"])
    for name, shape in theirs["messages"].items():
        assert ours["messages"][name] == shape, f"ModelConfig schema differs in {name}"


@pytest.mark.parametrize(
    "pbtxt", [CONFIG_PBTXT, SEQUENCE_PBTXT, ENSEMBLE_PBTXT], ids=["full", "sequence", "ensemble"]
)
def test_wire_compatible_with_tritonclient(pbtxt: str) -> None:
    from nereid.config import model_config_pb2

    ours = text_format.Parse(pbtxt, model_config_pb2.ModelConfig())
    theirs = text_format.Parse(pbtxt, triton_pb2.ModelConfig())
    as_dict = json_format.MessageToDict

    # Ours -> bytes -> Triton's.
    decoded = triton_pb2.ModelConfig.FromString(ours.SerializeToString())
    assert decoded == theirs
    assert as_dict(decoded) == as_dict(ours)
    assert decoded.WhichOneof("scheduling_choice") == ours.WhichOneof("scheduling_choice")

    # Triton's -> bytes -> ours.
    back = model_config_pb2.ModelConfig.FromString(theirs.SerializeToString())
    assert back == ours
    assert as_dict(back) == as_dict(theirs)

    # Same declaration order, so deterministic encodings agree byte for byte.
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True
    )
    assert text_format.MessageToString(ours) == text_format.MessageToString(theirs)


def test_field_values_survive_round_trip() -> None:
    from nereid.config import model_config_pb2

    ours = text_format.Parse(CONFIG_PBTXT, model_config_pb2.ModelConfig())
    theirs = triton_pb2.ModelConfig.FromString(ours.SerializeToString())

    assert list(theirs.input[0].dims) == [3, -1, -1]
    assert theirs.input[0].format == triton_pb2.ModelInput.FORMAT_NCHW
    assert theirs.output[0].data_type == triton_pb2.TYPE_BF16
    assert theirs.instance_group[0].kind == triton_pb2.ModelInstanceGroup.KIND_GPU
    assert list(theirs.instance_group[0].gpus) == [0, 1]
    assert theirs.instance_group[0].rate_limiter.resources[0].count == 4
    policy = theirs.dynamic_batching.priority_queue_policy
    assert sorted(policy) == [1, 2]
    assert policy[1].timeout_action == triton_pb2.ModelQueuePolicy.REJECT
    assert policy[2].max_queue_size == 32
    assert theirs.dynamic_batching.default_queue_policy.timeout_action == (
        triton_pb2.ModelQueuePolicy.DELAY
    )
    assert theirs.parameters["threads"].string_value == "4"
    assert theirs.version_policy.WhichOneof("policy_choice") == "specific"
    assert list(theirs.version_policy.specific.versions) == [1, 3]
    assert theirs.model_warmup[0].inputs["TEXT"].WhichOneof("input_data_type") == (
        "input_data_file"
    )
    assert theirs.model_metrics.metric_control[0].histogram_options.buckets[2] == 100.0

    seq = triton_pb2.ModelConfig.FromString(
        text_format.Parse(SEQUENCE_PBTXT, model_config_pb2.ModelConfig()).SerializeToString()
    ).sequence_batching
    assert seq.WhichOneof("strategy_choice") == "oldest"
    assert [c.name for c in seq.control_input] == ["START", "READY", "END", "CORRID"]
    corrid = seq.control_input[3].control[0]
    assert corrid.kind == triton_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID
    assert corrid.data_type == triton_pb2.TYPE_UINT64
    assert list(seq.control_input[1].control[0].bool_false_true) == [False, True]
    assert seq.state[0].initial_state[0].WhichOneof("state_data") == "zero_data"

    ens = triton_pb2.ModelConfig.FromString(
        text_format.Parse(ENSEMBLE_PBTXT, model_config_pb2.ModelConfig()).SerializeToString()
    )
    assert ens.version_policy.latest.num_versions == 2
    steps = ens.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["preprocess", "classifier"]
    assert steps[0].model_version == -1
    assert dict(steps[1].input_map) == {"INPUT0": "pixels"}
    assert steps[1].model_namespace == "vision"
