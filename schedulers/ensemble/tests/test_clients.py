"""The pipeline Triton's documentation uses as its example, served over HTTP and gRPC to
``tritonclient``: text in (BYTES), a Python preprocess model turning it into features, two
scorers in parallel on those features (an ONNX model built with ``onnx.helper`` when
nereid-onnxruntime is installed, else a second Python model; and a Python model), and a Python
postprocess combining their scores into a label and a probability."""

from __future__ import annotations

import importlib.util
from importlib import metadata

import numpy as np
import pytest

tritonclient_http = pytest.importorskip("tritonclient.http")
tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("nereid_python")

from nereid.testing import frontend_url, serve_in_process  # noqa: E402


def _onnx_available() -> bool:
    try:
        metadata.distribution("nereid-onnxruntime")
    except metadata.PackageNotFoundError:
        return False
    return all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))


ONNX = _onnx_available()

POSITIVE = ("good", "great", "love")
NEGATIVE = ("bad", "awful", "hate")
WEIGHTS_A = np.array([[0.1], [1.5], [-1.5], [0.25]], np.float32)  # the ONNX scorer
BIAS_A = np.float32(-0.1)
WEIGHTS_B = np.array([0.0, 1.0, -1.0, 0.5], np.float32)  # the Python scorer

PREPROCESS = """
import numpy as np
import triton_python_backend_utils as pb_utils

POSITIVE = ("good", "great", "love")
NEGATIVE = ("bad", "awful", "hate")


def features(text):
    words = text.lower().replace("!", " ").split()
    return [
        len(words) / 10.0,
        sum(w in POSITIVE for w in words),
        sum(w in NEGATIVE for w in words),
        text.count("!"),
    ]


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            rows = [features(item.decode()) for item in text.reshape(-1)]
            out = pb_utils.Tensor("FEATURES", np.array(rows, dtype=np.float32))
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
"""

PYTHON_SCORER = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = config["parameters"]
        self.weights = np.array(json.loads(params["weights"]["string_value"]), np.float32)
        self.bias = np.float32(float(params["bias"]["string_value"]))

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "FEATURES").as_numpy()
            logit = (x @ self.weights.reshape(4, 1) + self.bias).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("LOGIT", logit)]))
        return responses
"""

POSTPROCESS = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "LOGIT_A").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "LOGIT_B").as_numpy()
            score = (1.0 / (1.0 + np.exp(-(a + b) / 2.0))).astype(np.float32)
            label = np.array(
                [[b"positive" if s > 0.5 else b"negative"] for s in score.reshape(-1)],
                dtype=object,
            )
            responses.append(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("SCORE", score), pb_utils.Tensor("LABEL", label)]
                )
            )
        return responses
"""


def io(kind: str, name: str, datatype: str, dims: str) -> str:
    return f'{kind} [ {{ name: "{name}" data_type: {datatype} dims: {dims} }} ]'


def scorer_onnx() -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["FEATURES", "W"], ["XW"]),
            helper.make_node("Add", ["XW", "B"], ["LOGIT"]),
        ],
        "scorer",
        [helper.make_tensor_value_info("FEATURES", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("LOGIT", TensorProto.FLOAT, ["N", 1])],
        initializer=[
            numpy_helper.from_array(WEIGHTS_A, "W"),
            numpy_helper.from_array(np.array([BIAS_A], np.float32), "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def python_scorer_config(weights: np.ndarray, bias: float) -> str:
    return f"""
    backend: "python"
    max_batch_size: 8
    {io("input", "FEATURES", "TYPE_FP32", "[ 4 ]")}
    {io("output", "LOGIT", "TYPE_FP32", "[ 1 ]")}
    parameters {{ key: "weights" value: {{ string_value: "{weights.reshape(-1).tolist()}" }} }}
    parameters {{ key: "bias" value: {{ string_value: "{float(bias)}" }} }}
    """


SENTIMENT = """
platform: "ensemble"
max_batch_size: 8
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [
  { name: "LABEL" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "SCORE" data_type: TYPE_FP32 dims: [ 1 ] }
]
ensemble_scheduling {
  step [
    {
      model_name: "preprocess"
      model_version: -1
      input_map { key: "TEXT" value: "TEXT" }
      output_map { key: "FEATURES" value: "features" }
    },
    {
      model_name: "scorer_a"
      model_version: -1
      input_map { key: "FEATURES" value: "features" }
      output_map { key: "LOGIT" value: "logit_a" }
    },
    {
      model_name: "scorer_b"
      model_version: -1
      input_map { key: "FEATURES" value: "features" }
      output_map { key: "LOGIT" value: "logit_b" }
    },
    {
      model_name: "postprocess"
      model_version: -1
      input_map { key: "LOGIT_A" value: "logit_a" }
      input_map { key: "LOGIT_B" value: "logit_b" }
      output_map { key: "LABEL" value: "LABEL" }
      output_map { key: "SCORE" value: "SCORE" }
    }
  ]
}
"""

STREAM = """
platform: "ensemble"
max_batch_size: 0
input [ { name: "VALUES" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [
  { name: "VALUE" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "INDEX" data_type: TYPE_UINT32 dims: [ 1 ] }
]
ensemble_scheduling {
  step [
    {
      model_name: "repeat"
      input_map { key: "IN" value: "VALUES" }
      output_map { key: "OUT" value: "value" }
      output_map { key: "IDX" value: "INDEX" }
    },
    {
      model_name: "echo"
      input_map { key: "INPUT0" value: "value" }
      output_map { key: "OUTPUT0" value: "VALUE" }
    }
  ]
}
"""

REPEAT = """
backend: "repeat"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [
  { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] }
]
"""

TEXTS = [b"I love this, it is great!", b"bad and awful", b"good"]


def expected(texts: list[bytes]) -> tuple[list[bytes], np.ndarray]:
    labels, scores = [], []
    for text in texts:
        words = text.decode().lower().replace("!", " ").split()
        x = np.array(
            [
                len(words) / 10.0,
                sum(w in POSITIVE for w in words),
                sum(w in NEGATIVE for w in words),
                text.decode().count("!"),
            ],
            np.float32,
        )
        a = float(x @ WEIGHTS_A[:, 0] + BIAS_A)
        b = float(x @ WEIGHTS_B)
        score = 1.0 / (1.0 + np.exp(-(a + b) / 2.0))
        scores.append([score])
        labels.append([b"positive" if score > 0.5 else b"negative"])
    return labels, np.array(scores, np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from nereid.testing import ModelRepositoryBuilder

    repository = ModelRepositoryBuilder(tmp_path_factory.mktemp("models"))
    repository.add(
        "preprocess",
        f"""
        backend: "python"
        max_batch_size: 8
        {io("input", "TEXT", "TYPE_STRING", "[ 1 ]")}
        {io("output", "FEATURES", "TYPE_FP32", "[ 4 ]")}
        """,
        versions={1: {"model.py": PREPROCESS}},
    )
    if ONNX:
        repository.add(
            "scorer_a",
            f"""
            backend: "onnxruntime"
            max_batch_size: 8
            {io("input", "FEATURES", "TYPE_FP32", "[ 4 ]")}
            {io("output", "LOGIT", "TYPE_FP32", "[ 1 ]")}
            """,
            versions={1: {"model.onnx": scorer_onnx()}},
        )
    else:  # the same arithmetic in a second Python model
        repository.add(
            "scorer_a",
            python_scorer_config(WEIGHTS_A, BIAS_A),
            versions={1: {"model.py": PYTHON_SCORER}},
        )
    repository.add(
        "scorer_b", python_scorer_config(WEIGHTS_B, 0.0), versions={1: {"model.py": PYTHON_SCORER}}
    )
    repository.add(
        "postprocess",
        """
        backend: "python"
        max_batch_size: 8
        input [
          { name: "LOGIT_A" data_type: TYPE_FP32 dims: [ 1 ] },
          { name: "LOGIT_B" data_type: TYPE_FP32 dims: [ 1 ] }
        ]
        output [
          { name: "LABEL" data_type: TYPE_STRING dims: [ 1 ] },
          { name: "SCORE" data_type: TYPE_FP32 dims: [ 1 ] }
        ]
        """,
        versions={1: {"model.py": POSTPROCESS}},
    )
    repository.add("sentiment", SENTIMENT)
    repository.add("repeat", REPEAT)
    repository.identity("echo", datatype="TYPE_INT32", dims="[ 1 ]", max_batch_size=0)
    repository.add("stream", STREAM)
    with serve_in_process(repository.root, ["http", "grpc"]) as running:
        yield running


def test_scorer_a_is_the_kind_expected(server):
    config = server.api.model_config("scorer_a")
    assert config.backend == ("onnxruntime" if ONNX else "python")


def test_sentiment_over_http(server):
    client = tritonclient_http.InferenceServerClient(frontend_url(server, "http"))
    assert client.is_model_ready("sentiment")
    assert client.get_model_metadata("sentiment")["platform"] == "ensemble"
    text = tritonclient_http.InferInput("TEXT", [len(TEXTS), 1], "BYTES")
    text.set_data_from_numpy(np.array([[t] for t in TEXTS], dtype=object), binary_data=True)
    result = client.infer("sentiment", [text], request_id="h1")
    labels, scores = expected(TEXTS)
    assert result.as_numpy("LABEL").tolist() == labels
    np.testing.assert_allclose(result.as_numpy("SCORE"), scores, rtol=1e-5)
    assert result.get_response()["id"] == "h1"
    # One output only: the branch-free request still runs every step it needs.
    score_only = client.infer(
        "sentiment", [text], outputs=[tritonclient_http.InferRequestedOutput("SCORE")]
    )
    assert score_only.as_numpy("LABEL") is None
    np.testing.assert_allclose(score_only.as_numpy("SCORE"), scores, rtol=1e-5)
    stats = client.get_inference_statistics("sentiment")["model_stats"][0]
    assert stats["inference_count"] >= 3 and stats["execution_count"] >= 1
    steps = client.get_inference_statistics("scorer_a")["model_stats"][0]
    assert steps["inference_count"] >= 3
    client.close()


def test_sentiment_over_grpc(server):
    client = tritonclient_grpc.InferenceServerClient(frontend_url(server, "grpc"))
    config = client.get_model_config("sentiment", as_json=True)["config"]
    assert config["platform"] == "ensemble"
    assert len(config["ensemble_scheduling"]["step"]) == 4
    text = tritonclient_grpc.InferInput("TEXT", [len(TEXTS), 1], "BYTES")
    text.set_data_from_numpy(np.array([[t] for t in TEXTS], dtype=object))
    result = client.infer("sentiment", [text])
    labels, scores = expected(TEXTS)
    assert result.as_numpy("LABEL").tolist() == labels
    np.testing.assert_allclose(result.as_numpy("SCORE"), scores, rtol=1e-5)
    # An error in a step reaches the client with the step named.
    bad = tritonclient_grpc.InferInput("TEXT", [9, 1], "BYTES")
    bad.set_data_from_numpy(np.array([[b"x"]] * 9, dtype=object))
    with pytest.raises(Exception, match="batch-size must be <= 8"):
        client.infer("sentiment", [bad])
    client.close()


def test_decoupled_ensemble_streams_over_grpc(server):
    import queue

    client = tritonclient_grpc.InferenceServerClient(frontend_url(server, "grpc"))
    assert client.get_model_config("stream").config.model_transaction_policy.decoupled
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    values = tritonclient_grpc.InferInput("VALUES", [3], "INT32")
    values.set_data_from_numpy(np.array([7, 8, 9], np.int32))
    client.async_stream_infer("stream", [values], request_id="s1")
    got = []
    for _ in range(3):
        result, error = results.get(timeout=10)
        assert error is None, error
        got.append((int(result.as_numpy("INDEX")[0]), int(result.as_numpy("VALUE")[0])))
    client.stop_stream()
    client.close()
    assert sorted(got) == [(0, 7), (1, 8), (2, 9)]
