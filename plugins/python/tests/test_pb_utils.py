"""The pb_utils object model on its own, and the runner on batches, without a server."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import triton_python_backend_utils as pb_utils
from nereid.custom_metrics import CustomMetricsRegistry
from nereid_python import runtime
from nereid_python.runner import ModelRunner


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[tuple[pb_utils.InferenceResponse | None, bool]] = []
        self.cancelled = False

    def send(self, response, final):
        self.sent.append((response, final))

    def is_cancelled(self):
        return self.cancelled


def request(decoupled=False, **inputs) -> tuple[pb_utils.InferenceRequest, FakeChannel]:
    channel = FakeChannel()
    sender = pb_utils.InferenceResponseSender(channel, decoupled)
    tensors = [pb_utils.Tensor(name, np.asarray(value)) for name, value in inputs.items()]
    req = pb_utils.InferenceRequest._incoming(tensors, "id", 0, [], 0, 0, "{}", "m", 1, sender)
    return req, channel


def test_module_is_the_implementation():
    from nereid_python import pb_utils as implementation

    assert pb_utils.Tensor is implementation.Tensor
    assert set(pb_utils.__all__) <= set(dir(pb_utils))


def test_tensor_basics():
    tensor = pb_utils.Tensor("X", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert tensor.name() == "X"
    assert tensor.shape() == [2, 3]
    assert tensor.triton_dtype() == 11
    assert tensor.is_cpu()
    assert pb_utils.triton_to_numpy_type(tensor.triton_dtype()) is np.float32


def test_tensor_strings_become_bytes():
    tensor = pb_utils.Tensor("S", np.array(["a", "bé"]))
    assert tensor.triton_dtype() == 13
    assert list(tensor.as_numpy()) == [b"a", "bé".encode()]


def test_tensor_dlpack_round_trip():
    array = np.arange(4, dtype=np.int64)
    tensor = pb_utils.Tensor("X", array)
    back = pb_utils.Tensor.from_dlpack("Y", tensor.to_dlpack())
    np.testing.assert_array_equal(back.as_numpy(), array)
    assert back.name() == "Y"
    from_object = pb_utils.Tensor.from_dlpack("Z", np.ones(3, np.float32))
    assert from_object.triton_dtype() == 11
    readonly = np.frombuffer(b"\x01\x00\x00\x00", dtype=np.int32)
    np.testing.assert_array_equal(np.from_dlpack(pb_utils.Tensor("R", readonly)), [1])
    with pytest.raises(pb_utils.TritonModelException):
        pb_utils.Tensor("B", np.array([b"x"], dtype=object)).to_dlpack()


def test_datatype_helpers():
    assert pb_utils.triton_string_to_numpy("TYPE_FP32") is np.float32
    assert pb_utils.triton_string_to_numpy("TYPE_STRING") is np.object_
    assert pb_utils.numpy_to_triton_type(np.int32) == 8
    assert pb_utils.numpy_to_triton_type(np.dtype(np.bool_)) == 1
    assert pb_utils.numpy_to_triton_type(np.object_) == 13
    assert pb_utils.numpy_to_triton_type(np.bytes_) == 13
    assert pb_utils.triton_to_numpy_type(13) is np.object_
    assert pb_utils.triton_to_numpy_type(99) is None


def test_serialize_round_trip():
    data = np.array([b"one", b"", "drei"], dtype=object)
    encoded = pb_utils.serialize_byte_tensor(data)
    assert encoded[:4] == (3).to_bytes(4, "little")
    assert list(pb_utils.deserialize_bytes_tensor(encoded)) == [b"one", b"", b"drei"]
    assert pb_utils.serialize_byte_tensor(np.array([], dtype=object)) == b""


def test_config_lookups():
    config = {"input": [{"name": "A", "data_type": "TYPE_FP32"}], "output": [{"name": "B"}]}
    assert pb_utils.get_input_config_by_name(config, "A")["data_type"] == "TYPE_FP32"
    assert pb_utils.get_input_config_by_name(config, "B") is None
    assert pb_utils.get_output_config_by_name(config, "B") == {"name": "B"}
    assert not pb_utils.using_decoupled_model_transaction_policy(config)
    config["model_transaction_policy"] = {"decoupled": True}
    assert pb_utils.using_decoupled_model_transaction_policy(config)


def test_response_and_lookups():
    out = pb_utils.Tensor("OUT", np.zeros(2, np.float32))
    response = pb_utils.InferenceResponse(output_tensors=[out], parameters={"k": 1})
    assert pb_utils.get_output_tensor_by_name(response, "OUT") is out
    assert pb_utils.get_output_tensor_by_name(response, "NOPE") is None
    assert json.loads(response.parameters()) == {"k": 1}
    assert not response.has_error()
    failed = pb_utils.InferenceResponse(
        error=pb_utils.TritonError("x", pb_utils.TritonError.NOT_FOUND)
    )
    assert failed.has_error() and failed.error().code() == pb_utils.TritonError.NOT_FOUND
    assert failed.output_tensors() == []
    with pytest.raises(pb_utils.TritonModelException, match="must be a list"):
        pb_utils.InferenceResponse(output_tensors=out)
    with pytest.raises(pb_utils.TritonModelException):
        pb_utils.InferenceResponse([], parameters={"k": 1.5})


def test_error_codes():
    assert pb_utils.TritonError("m").code() == pb_utils.TritonError.INTERNAL
    codes = [
        pb_utils.TritonError.UNKNOWN,
        pb_utils.TritonError.INTERNAL,
        pb_utils.TritonError.NOT_FOUND,
        pb_utils.TritonError.INVALID_ARG,
        pb_utils.TritonError.UNAVAILABLE,
        pb_utils.TritonError.UNSUPPORTED,
        pb_utils.TritonError.ALREADY_EXISTS,
        pb_utils.TritonError.CANCELLED,
    ]
    assert codes == list(range(8))
    assert pb_utils.TritonModelException("boom").message() == "boom"


def test_bls_outside_a_server():
    bls = pb_utils.InferenceRequest(
        model_name="other", requested_output_names=["Y"], inputs=[], parameters={"a": "b"}
    )
    assert json.loads(bls.parameters()) == {"a": "b"}
    response = bls.exec()  # errors come back as the response's error
    assert response.has_error()
    assert "no model is being served" in response.error().message()
    with pytest.raises(pb_utils.TritonModelException, match="no model is being served"):
        pb_utils.load_model("other")


def test_decoupled_sender_rules():
    req, channel = request(decoupled=True)
    sender = req.get_response_sender()
    assert req.get_response_sender() is sender
    sender.send(pb_utils.InferenceResponse([]))
    with pytest.raises(pb_utils.TritonModelException, match="must be provided"):
        sender.send()
    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    with pytest.raises(pb_utils.TritonModelException) as info:
        sender.send(pb_utils.InferenceResponse([]))
    assert str(info.value) == "Unable to send response. Response sender has been closed."
    assert [final for _, final in channel.sent] == [False, True]
    assert channel.sent[1][0] is None
    channel.cancelled = True
    assert sender.is_cancelled() and req.is_cancelled()


def test_non_decoupled_sender_rules():
    req, channel = request()
    sender = req.get_response_sender()
    with pytest.raises(pb_utils.TritonModelException, match="complete final before sending"):
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    response = pb_utils.InferenceResponse([])
    sender.send(response)  # held back until the final flag
    assert channel.sent == []
    with pytest.raises(pb_utils.TritonModelException, match="more than one response"):
        sender.send(pb_utils.InferenceResponse([]))
    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    assert channel.sent == [(response, True)]


def test_auto_complete_model_config():
    config = pb_utils.ModelConfig(
        json.dumps({"name": "m", "max_batch_size": 8, "input": [{"name": "A", "dims": [2]}]})
    )
    with pytest.raises(ValueError, match="configuration specified max_batch_size 8"):
        config.set_max_batch_size(4)
    config.set_max_batch_size(16)
    config.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [2]})
    with pytest.raises(ValueError, match="the model expects dims"):
        config.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [3]})
    with pytest.raises(ValueError, match="contains property other than"):
        config.add_output({"name": "Y", "data_type": "TYPE_FP32", "dims": [2], "optional": True})
    with pytest.raises(ValueError, match="is missing 'dims' property"):
        config.add_output({"name": "Y", "data_type": "TYPE_FP32"})
    config.add_output({"name": "Y", "data_type": "TYPE_FP32", "dims": [2]})
    config.set_dynamic_batching()
    config.set_model_transaction_policy({"decoupled": True})
    with pytest.raises(ValueError, match="decoupled"):
        config.set_model_transaction_policy({"decoupled": False})
    with pytest.raises(ValueError, match="other than 'decoupled'"):
        config.set_model_transaction_policy({"other": 1})
    data = config.as_dict()
    assert data["max_batch_size"] == 16
    assert data["input"] == [{"name": "A", "dims": [2], "data_type": "TYPE_FP32"}]
    assert data["output"] == [{"name": "Y", "data_type": "TYPE_FP32", "dims": [2]}]
    assert data["dynamic_batching"] == {}
    assert data["model_transaction_policy"] == {"decoupled": True}
    sequence = pb_utils.ModelConfig({"name": "s", "sequence_batching": {}})
    with pytest.raises(ValueError, match="sequence_batching"):
        sequence.set_dynamic_batching()


def test_metrics_on_a_registry():
    registry = CustomMetricsRegistry()
    services = runtime.RegistryServices(registry)
    with runtime.active(services):
        family = pb_utils.MetricFamily("c", "a counter", pb_utils.MetricFamily.COUNTER)
        metric = family.Metric(labels={"k": "v"})
        gauge = pb_utils.MetricFamily("g", "a gauge", pb_utils.MetricFamily.GAUGE).Metric()
        with pytest.raises(pb_utils.TritonModelException, match="buckets"):
            pb_utils.MetricFamily("h", "h", pb_utils.MetricFamily.HISTOGRAM).Metric()
    metric.increment(2)
    metric.increment(3)
    assert metric.value() == 5
    with pytest.raises(pb_utils.TritonModelException):
        metric.increment(-1)
    with pytest.raises(pb_utils.TritonModelException):
        metric.set(1)
    gauge.set(-4)
    assert gauge.value() == -4
    snapshot = {f["name"]: f for f in registry.snapshot()}
    assert snapshot["c"]["metrics"][0]["value"] == 5
    services.close()
    assert registry.snapshot() == []


def test_logger_levels(caplog):
    caplog.set_level(logging.DEBUG, logger="nereid.python")
    pb_utils.Logger.log_verbose("v")
    pb_utils.Logger.log("e", pb_utils.Logger.ERROR)
    assert [(r.levelname, r.getMessage(), r.filename) for r in caplog.records] == [
        ("DEBUG", "v", "test_pb_utils.py"),
        ("ERROR", "e", "test_pb_utils.py"),
    ]


class BatchModel:
    """Answers each request of a batch with its input + its position in the batch."""

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() + i)]
            )
            for i, r in enumerate(requests)
        ]


def _runner(model_class, decoupled=False) -> ModelRunner:
    runner = ModelRunner(
        model_class, {}, decoupled=decoupled, name="m_0_0", services=runtime.Services()
    )
    runner.initialize()
    return runner


def test_runner_batch_of_requests():
    runner = _runner(BatchModel)
    batch = [request(X=np.array([10], np.int32)) for _ in range(3)]
    runner.execute([r for r, _ in batch])
    for index, (_, channel) in enumerate(batch):
        ((response, final),) = channel.sent
        assert final
        assert pb_utils.get_output_tensor_by_name(response, "Y").as_numpy()[0] == 10 + index
    runner.finalize()


def test_runner_fails_whole_batch_on_wrong_count():
    class Short:
        def execute(self, requests):
            return [pb_utils.InferenceResponse([])]

    runner = _runner(Short)
    batch = [request() for _ in range(2)]
    runner.execute([r for r, _ in batch])
    for _, channel in batch:
        ((response, final),) = channel.sent
        assert final and "InferenceRequest(s) size is:2, and InferenceResponse(s) size is:1" in (
            response.error().message()
        )


def test_runner_decoupled_must_return_none():
    class Returns:
        def execute(self, requests):
            return []

    runner = _runner(Returns, decoupled=True)
    req, channel = request(decoupled=True)
    runner.execute([req])
    ((response, final),) = channel.sent
    assert final
    assert (
        response.error()
        .message()
        .endswith("is using the decoupled mode and the execute function must return None.")
    )
