"""The checked-in gRPC protocol code is current and matches Triton's schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tritonclient.grpc  # noqa: F401  (registers Triton's protos in the default pool)
from google.protobuf import descriptor_pb2
from nereid.testing import assert_generated_code_current
from tritonclient.grpc import service_pb2

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTOS_DIR = "frontends/grpc/src/nereid_grpc/protos"
GRPC_GENERATED = tuple(
    f"{PROTOS_DIR}/{stem}_pb2.{ext}" for stem in ("grpc_service", "health") for ext in ("py", "pyi")
)

# Ours spans two packages; Triton's messages all live in "inference".
OUR_PACKAGES = (".nereid.grpc.", ".nereid.config.")
TRITON_PACKAGES = (".inference.",)


def test_generated_code_is_current(tmp_path: Path) -> None:
    assert_generated_code_current(REPO_ROOT, GRPC_GENERATED, tmp_path)


def test_descriptor_pool_names() -> None:

    from nereid_grpc.protos import grpc_service_pb2, health_pb2

    assert grpc_service_pb2.DESCRIPTOR.name == "nereid_grpc/protos/grpc_service.proto"
    assert grpc_service_pb2.DESCRIPTOR.package == "nereid.grpc"
    assert [d.name for d in grpc_service_pb2.DESCRIPTOR.dependencies] == [
        "nereid/config/model_config.proto"
    ]
    assert health_pb2.DESCRIPTOR.name == "nereid_grpc/protos/health.proto"
    assert health_pb2.DESCRIPTOR.package == "nereid.grpc.health"


def _type_name(name: str, packages: tuple[str, ...]) -> str:
    for package in packages:
        if name.startswith(package):
            return name.removeprefix(package)
    return name


def _shape(message: descriptor_pb2.DescriptorProto, packages: tuple[str, ...]) -> dict[str, Any]:
    """Wire-relevant shape of a message: fields, oneofs, nested messages and enums."""
    oneofs = [o.name for o in message.oneof_decl]
    fields = {}
    for f in message.field:
        oneof = oneofs[f.oneof_index] if f.HasField("oneof_index") else None
        fields[f.name] = (f.number, f.label, f.type, _type_name(f.type_name, packages), oneof)
    return {
        "map_entry": message.options.map_entry,
        "fields": fields,
        "nested": {n.name: _shape(n, packages) for n in message.nested_type},
        "enums": {e.name: {v.name: v.number for v in e.value} for e in message.enum_type},
    }


def _file_proto(file_descriptor: Any) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    file_descriptor.CopyToProto(proto)
    return proto


def test_messages_match_triton() -> None:
    from nereid_grpc.protos import grpc_service_pb2

    ours = {
        m.name: _shape(m, OUR_PACKAGES)
        for m in _file_proto(grpc_service_pb2.DESCRIPTOR).message_type
    }
    theirs = {
        m.name: _shape(m, TRITON_PACKAGES) for m in _file_proto(service_pb2.DESCRIPTOR).message_type
    }
    assert not _file_proto(service_pb2.DESCRIPTOR).enum_type
    missing = sorted(set(theirs) - set(ours))
    assert not missing, f"messages missing from grpc_service.proto: {missing}"
    for name, shape in theirs.items():
        assert ours[name] == shape, f"grpc_service message {name} differs from Triton's"


def test_service_matches_triton() -> None:
    from nereid_grpc.protos import grpc_service_pb2

    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    ours = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    our_methods = {m.name: m for m in ours.methods}
    for method in theirs.methods:
        assert method.name in our_methods, f"rpc {method.name} missing"
        mine = our_methods[method.name]
        assert mine.input_type.name == method.input_type.name, method.name
        assert mine.output_type.name == method.output_type.name, method.name
        assert mine.client_streaming == method.client_streaming, method.name
        assert mine.server_streaming == method.server_streaming, method.name


def test_messages_interoperate_on_the_wire() -> None:
    from nereid_grpc.protos import grpc_service_pb2

    request = service_pb2.ModelInferRequest(model_name="m", model_version="1", id="r1")
    request.parameters["priority"].uint64_param = 2
    request.parameters["sequence_id"].string_param = "abc"
    tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 2])
    tensor.parameters["shared_memory_region"].string_param = "shm"
    request.outputs.add(name="OUTPUT0").parameters["classification"].int64_param = 3
    request.raw_input_contents.append(b"\x00\x00\x80?\x00\x00\x00@")

    ours = grpc_service_pb2.ModelInferRequest.FromString(request.SerializeToString())
    assert ours.parameters["priority"].WhichOneof("parameter_choice") == "uint64_param"
    assert ours.inputs[0].parameters["shared_memory_region"].string_param == "shm"
    assert ours.outputs[0].parameters["classification"].int64_param == 3
    assert ours.SerializeToString(deterministic=True) == request.SerializeToString(
        deterministic=True
    )

    response = grpc_service_pb2.ModelConfigResponse()
    response.config.name = "m"
    response.config.max_batch_size = 4
    response.config.dynamic_batching.max_queue_delay_microseconds = 100
    decoded = service_pb2.ModelConfigResponse.FromString(response.SerializeToString())
    assert decoded.config.name == "m"
    assert decoded.config.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert decoded.config.dynamic_batching.max_queue_delay_microseconds == 100


def test_health_schema() -> None:
    from nereid_grpc.protos import health_pb2

    status = health_pb2.HealthCheckResponse.ServingStatus
    assert dict(status.items()) == {
        "UNKNOWN": 0,
        "SERVING": 1,
        "NOT_SERVING": 2,
        "SERVICE_UNKNOWN": 3,
    }
    assert health_pb2.HealthCheckRequest.DESCRIPTOR.fields_by_name["service"].number == 1
    assert health_pb2.HealthCheckResponse.DESCRIPTOR.fields_by_name["status"].number == 1
    service = health_pb2.DESCRIPTOR.services_by_name["Health"]
    check, watch = service.methods_by_name["Check"], service.methods_by_name["Watch"]
    assert (check.input_type.name, check.output_type.name) == (
        "HealthCheckRequest",
        "HealthCheckResponse",
    )
    assert not check.server_streaming
    assert watch.server_streaming and not watch.client_streaming
