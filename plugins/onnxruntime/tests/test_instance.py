"""The instance on its own: a batch of requests is one ``session.run`` (only the outputs asked
for), scattered back per request; requests leaving out an optional input run apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from nereid.backend import BackendContext, InstanceSpec
from nereid.config import complete_and_validate, parse_pbtxt
from nereid.testing import make_request
from onnx_models import add_sub, add_sub_config, mlp_model, mlp_reference, with_default_input


class _Collect:
    """Stands in for a response stream: keeps what the request answers."""

    def __init__(self) -> None:
        self.responses = []

    def push(self, response) -> None:
        self.responses.append(response)


class _SpySession:
    def __init__(self, session) -> None:
        self.session = session
        self.calls: list[tuple[list[str], dict[str, tuple[int, ...]]]] = []

    def run(self, names, feeds, run_options=None):
        self.calls.append((list(names), {k: v.shape for k, v in feeds.items()}))
        return self.session.run(names, feeds, run_options)


def _instance(tmp_path: Path, name: str, config_text: str, model: bytes):
    from nereid_onnxruntime.backend import OnnxRuntimeBackend

    version = tmp_path / name / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(model)
    config = parse_pbtxt(config_text)
    backend = OnnxRuntimeBackend(BackendContext("onnxruntime", {}, api=None))
    onnx_model = backend.create_model(config, version)
    onnx_model.complete_config(config)
    complete_and_validate(config, name, "test")
    group = config.instance_group[0]
    instance = onnx_model.create_instance(InstanceSpec(f"{name}_0", group, 0))
    spy = _SpySession(instance.session)
    instance.session = spy
    return instance, spy


def _request(model, inputs, outputs=(), rows=1):
    request = make_request(model, inputs, outputs=list(outputs))
    request.batch_size = rows
    request.stream = _Collect()
    return request


def test_batch_is_one_run_scattered_back(tmp_path):
    sizes = (8, 16, 4)
    instance, spy = _instance(
        tmp_path,
        "mlp",
        """
        name: "mlp" backend: "onnxruntime" max_batch_size: 8
        input [ { name: "X" data_type: TYPE_FP32 dims: [ 8 ] } ]
        output [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]
        """,
        mlp_model(sizes).SerializeToString(),
    )
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((rows, 8)).astype(np.float32) for rows in (1, 3, 2)]
    requests = [_request("mlp", {"X": x}, rows=len(x)) for x in xs]
    instance.execute(requests)
    assert spy.calls == [(["Y"], {"X": (6, 8)})]
    for x, request in zip(xs, requests, strict=True):
        (response,) = request.stream.responses
        np.testing.assert_allclose(
            response.as_numpy("Y"), mlp_reference(x, sizes), rtol=1e-4, atol=1e-5
        )


def test_only_requested_outputs_run(tmp_path):
    instance, spy = _instance(tmp_path, "simple", add_sub_config(), add_sub())
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    first = _request("simple", {"INPUT0": a, "INPUT1": a}, outputs=["OUTPUT1"])
    second = _request("simple", {"INPUT0": a, "INPUT1": a}, outputs=["OUTPUT1"])
    instance.execute([first, second])
    assert spy.calls[-1][0] == ["OUTPUT1"]
    assert [t.name for t in first.stream.responses[0].outputs] == ["OUTPUT1"]
    # One request asking for nothing in particular: every output runs.
    fourth = _request("simple", {"INPUT0": a, "INPUT1": a}, outputs=["OUTPUT1"])
    third = _request("simple", {"INPUT0": a, "INPUT1": a})
    instance.execute([fourth, third])
    assert spy.calls[-1][0] == ["OUTPUT0", "OUTPUT1"]
    assert [t.name for t in third.stream.responses[0].outputs] == ["OUTPUT0", "OUTPUT1"]
    np.testing.assert_array_equal(third.stream.responses[0].as_numpy("OUTPUT0"), a * 2)


def test_optional_inputs_split_the_batch(tmp_path):
    instance, spy = _instance(
        tmp_path,
        "optional",
        """
        name: "optional" backend: "onnxruntime" max_batch_size: 4
        input [
          { name: "X" data_type: TYPE_FP32 dims: [ 2 ] },
          { name: "B" data_type: TYPE_FP32 dims: [ 2 ] optional: true }
        ]
        output [ { name: "Y" data_type: TYPE_FP32 dims: [ 2 ] } ]
        """,
        with_default_input(),
    )
    x = np.ones((1, 2), np.float32)
    with_b = _request("optional", {"X": x, "B": x * 5})
    without = _request("optional", {"X": x})
    instance.execute([with_b, without])
    assert len(spy.calls) == 2
    np.testing.assert_array_equal(with_b.stream.responses[0].as_numpy("Y"), x * 6)
    np.testing.assert_array_equal(without.stream.responses[0].as_numpy("Y"), x + 10)


def test_runtime_error_names_the_model(tmp_path):
    from nereid.errors import NereidError

    instance, _ = _instance(tmp_path, "simple", add_sub_config(), add_sub())
    a = np.ones((1, 16), np.int32)
    b = np.ones((1, 15), np.int32)  # the kernel would have refused this shape
    with pytest.raises(NereidError, match="model 'simple' instance 'simple_0'"):
        instance.execute([_request("simple", {"INPUT0": a, "INPUT1": b})])
