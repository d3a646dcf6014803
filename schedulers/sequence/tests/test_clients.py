"""Triton's sequence client examples, through tritonclient, over HTTP, gRPC and one gRPC stream.

The flows and expected values are those of ``simple_http_sequence_sync_infer_client.py``,
``simple_grpc_sequence_sync_infer_client.py`` and ``simple_grpc_sequence_stream_infer_client.py``
(triton-inference-server/client): two integer sequences and one string sequence, against
``simple_sequence`` and, with ``--dyna``, ``simple_dyna_sequence`` / ``simple_string_dyna_sequence``
(models in ``sequence_models.py``).
"""

from __future__ import annotations

import importlib.util
import queue
import uuid
from collections.abc import Iterator
from functools import partial

import numpy as np
import pytest

pytest.importorskip("nereid_http", reason="the nereid-http frontend is not installed")
pytest.importorskip("nereid_grpc", reason="the nereid-grpc frontend is not installed")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from nereid.inprocess import InProcessServer  # noqa: E402
from nereid.testing import ModelRepositoryBuilder  # noqa: E402
from sequence_models import (  # noqa: E402
    DECOUPLED_CONFIG,
    DECOUPLED_MODEL,
    DYNA_CONFIG,
    DYNA_MODEL,
    DYNA_ONNX_CONFIG,
    PYTHON_STATE_CONFIG,
    PYTHON_STATE_MODEL,
    SIMPLE_SEQUENCE_CONFIG,
    dyna_sequence_onnx,
    simple_sequence_onnx,
)
from tritonclient.utils import InferenceServerException  # noqa: E402

HAVE_ORT = all(importlib.util.find_spec(m) for m in ("nereid_onnxruntime", "onnx", "onnxruntime"))
HAVE_PYTHON = importlib.util.find_spec("nereid_python") is not None
VALUES = [11, 7, 5, 3, 2, 0, 1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[InProcessServer]:
    repo = ModelRepositoryBuilder(tmp_path_factory.mktemp("models"))
    if HAVE_ORT:
        repo.add(
            "simple_sequence",
            SIMPLE_SEQUENCE_CONFIG,
            versions={1: {"model.onnx": simple_sequence_onnx()}},
        )
        repo.add(
            "simple_dyna_sequence_onnx",
            DYNA_ONNX_CONFIG,
            versions={1: {"model.onnx": dyna_sequence_onnx()}},
        )
    if HAVE_PYTHON:
        repo.add(
            "simple_dyna_sequence",
            DYNA_CONFIG % {"corrid": "TYPE_UINT64", "extra": ""},
            versions={1: {"model.py": DYNA_MODEL}},
        )
        repo.add(
            "simple_string_dyna_sequence",
            DYNA_CONFIG
            % {
                "corrid": "TYPE_STRING",
                "extra": 'parameters { key: "ACCUMULATE" value: { string_value: "1" } }',
            },
            versions={1: {"model.py": DYNA_MODEL}},
        )
        repo.add("py_acc", PYTHON_STATE_CONFIG, versions={1: {"model.py": PYTHON_STATE_MODEL}})
        repo.add("decoupled", DECOUPLED_CONFIG, versions={1: {"model.py": DECOUPLED_MODEL}})
    with InProcessServer(
        str(repo.root),
        frontends=["http", "grpc"],
        http_port=0,
        grpc_port=0,
        backend_config=["python,execution-mode=thread"],
    ) as running:
        yield running


def _url(server: InProcessServer, frontend: str) -> str:
    return f"localhost:{server.server.frontends[frontend].port}"


def _module(frontend: str):
    return httpclient if frontend == "http" else grpcclient


def _inputs(module, value: int):
    data = np.full((1, 1), value, np.int32)
    tensor = module.InferInput("INPUT", list(data.shape), "INT32")
    tensor.set_data_from_numpy(data)
    return [tensor]


def sync_send(client, module, model: str, values: list[int], sequence_id) -> list[int]:
    """The examples' ``sync_send``: one request after the other, START first, END last."""
    results = []
    for count, value in enumerate(values, 1):
        result = client.infer(
            model,
            _inputs(module, value),
            outputs=[module.InferRequestedOutput("OUTPUT")],
            sequence_id=sequence_id,
            sequence_start=count == 1,
            sequence_end=count == len(values),
        )
        results.append(int(result.as_numpy("OUTPUT")[0][0]))
    return results


def expected(dyna: bool, int_ids: tuple[int, int], string_id: str, string_results: list[int]):
    """The examples' checks, as lists."""
    seq0, seq1, strings = [], [], []
    for i in range(len(VALUES) + 1):
        e0 = 1 if i == 0 else VALUES[i - 1]
        e1 = 101 if i == 0 else -VALUES[i - 1]
        if i == 0:
            es = 20 if dyna else 21
        elif dyna:
            es = -VALUES[i - 1] + string_results[i - 1]
        else:
            es = -VALUES[i - 1]
        if dyna and i != 0 and VALUES[i - 1] == 1:
            e0 += int_ids[0]
            e1 += int_ids[1]
            es += int(string_id)
        seq0.append(e0)
        seq1.append(e1)
        strings.append(es)
    return seq0, seq1, strings


def _models(dyna: bool) -> tuple[str, str]:
    if dyna:
        if not HAVE_PYTHON:
            pytest.skip("nereid-python is not installed")
        return "simple_dyna_sequence", "simple_string_dyna_sequence"
    if not HAVE_ORT:
        pytest.skip("nereid-onnxruntime, onnx and onnxruntime are needed")
    return "simple_sequence", "simple_sequence"


@pytest.mark.parametrize("frontend", ["http", "grpc"])
@pytest.mark.parametrize("dyna", [False, True], ids=["simple", "dyna"])
def test_sequence_sync_client(server, frontend, dyna):
    int_model, string_model = _models(dyna)
    module = _module(frontend)
    offset = (2 if frontend == "grpc" else 0) + (4 if dyna else 0)
    ids = (1000 + offset, 1001 + offset)
    string_id = str(1002 + offset) if dyna else str(uuid.uuid4())
    client = module.InferenceServerClient(_url(server, frontend))
    try:
        seq0 = sync_send(client, module, int_model, [0, *VALUES], ids[0])
        seq1 = sync_send(client, module, int_model, [100, *(-v for v in VALUES)], ids[1])
        strings = sync_send(client, module, string_model, [20, *(-v for v in VALUES)], string_id)
    finally:
        client.close()
    assert (seq0, seq1, strings) == expected(dyna, ids, string_id, strings)


@pytest.mark.parametrize("dyna", [False, True], ids=["simple", "dyna"])
def test_sequence_stream_client(server, dyna):
    """All three sequences' requests sent at once on one bidirectional stream."""
    int_model, string_model = _models(dyna)
    ids = (2000, 2001) if not dyna else (2004, 2005)
    string_id = "2006" if dyna else str(uuid.uuid4())
    results: queue.Queue = queue.Queue()

    def callback(result, error):
        results.put(error if error else result)

    client = grpcclient.InferenceServerClient(_url(server, "grpc"))
    try:
        client.start_stream(callback=partial(callback))
        for model, sequence_id, values in (
            (int_model, ids[0], [0, *VALUES]),
            (int_model, ids[1], [100, *(-v for v in VALUES)]),
            (string_model, string_id, [20, *(-v for v in VALUES)]),
        ):
            for count, value in enumerate(values, 1):
                client.async_stream_infer(
                    model,
                    _inputs(grpcclient, value),
                    outputs=[grpcclient.InferRequestedOutput("OUTPUT")],
                    request_id=f"{sequence_id}_{count}",
                    sequence_id=sequence_id,
                    sequence_start=count == 1,
                    sequence_end=count == len(values),
                )
        by_sequence: dict[str, list[int]] = {str(ids[0]): [], str(ids[1]): [], string_id: []}
        for _ in range(3 * (len(VALUES) + 1)):
            item = results.get(timeout=20)
            assert not isinstance(item, InferenceServerException), item
            this_id, count = item.get_response().id.rsplit("_", 1)
            by_sequence[this_id].append((int(count), int(item.as_numpy("OUTPUT")[0][0])))
    finally:
        client.stop_stream()
        client.close()
    # Responses of one sequence come back in order.
    for received in by_sequence.values():
        assert [count for count, _ in received] == list(range(1, len(VALUES) + 2))
    keys = (str(ids[0]), str(ids[1]), string_id)
    seq0, seq1, strings = ([v for _, v in by_sequence[k]] for k in keys)
    assert (seq0, seq1, strings) == expected(dyna, ids, string_id, strings)


@pytest.mark.skipif(not HAVE_ORT, reason="nereid-onnxruntime, onnx and onnxruntime are needed")
@pytest.mark.parametrize("frontend", ["http", "grpc"])
def test_dyna_sequence_on_onnx_runtime(server, frontend):
    """``simple_dyna_sequence``'s integer checks on an ONNX model that reads END and CORRID."""
    module = _module(frontend)
    ids = (3000, 3001) if frontend == "http" else (3002, 3003)
    client = module.InferenceServerClient(_url(server, frontend))
    try:
        model = "simple_dyna_sequence_onnx"
        seq0 = sync_send(client, module, model, [0, *VALUES], ids[0])
        seq1 = sync_send(client, module, model, [100, *(-v for v in VALUES)], ids[1])
    finally:
        client.close()
    want0, want1, _ = expected(True, ids, "0", [0] * (len(VALUES) + 1))
    assert (seq0, seq1) == (want0, want1)


@pytest.mark.skipif(not HAVE_PYTHON, reason="nereid-python is not installed")
@pytest.mark.parametrize("frontend", ["http", "grpc"])
def test_implicit_state_over_the_wire(server, frontend):
    module = _module(frontend)
    client = module.InferenceServerClient(_url(server, frontend))
    try:
        assert sync_send(client, module, "py_acc", [1, 2, 3, 4], 77) == [1, 3, 6, 10]
        result = client.infer("py_acc", _inputs(module, 5), sequence_id="s", sequence_start=True)
        assert result.as_numpy("ACC_OUT") is None  # the state output stays on the server
        metadata = client.get_model_metadata("py_acc")
        names = [t["name"] if frontend == "http" else t.name for t in _tensors(metadata)]
        assert names == ["INPUT", "OUTPUT"]
    finally:
        client.close()


def _tensors(metadata):
    if isinstance(metadata, dict):
        return metadata["inputs"] + metadata["outputs"]
    return list(metadata.inputs) + list(metadata.outputs)


@pytest.mark.skipif(not HAVE_PYTHON, reason="nereid-python is not installed")
def test_decoupled_sequence_on_one_stream(server):
    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(_url(server, "grpc"))
    try:
        client.start_stream(callback=lambda result, error: results.put(error or result))
        values = [1, 2, 3]
        for count, value in enumerate(values, 1):
            client.async_stream_infer(
                "decoupled",
                _inputs(grpcclient, value),
                request_id=str(count),
                sequence_id=31,
                sequence_start=count == 1,
                sequence_end=count == len(values),
            )
        received = []
        for _ in range(2 * len(values)):
            item = results.get(timeout=20)
            assert not isinstance(item, InferenceServerException), item
            received.append((item.get_response().id, int(item.as_numpy("OUTPUT")[0][0])))
    finally:
        client.stop_stream()
        client.close()
    assert received == [("1", 1), ("1", 10), ("2", 3), ("2", 30), ("3", 6), ("3", 60)]


ERRORS = [
    (
        {"sequence_id": 0, "sequence_start": True},
        "inference request to model '{model}' must specify a non-zero or non-empty correlation ID",
    ),
    (
        {"sequence_id": 4321},
        "inference request for sequence 4321 to model '{model}' must specify the START flag on "
        "the first request of the sequence",
    ),
    (
        {"sequence_id": "nope"},
        "inference request for sequence nope to model '{model}' must specify the START flag on "
        "the first request of the sequence",
    ),
]


@pytest.mark.skipif(not HAVE_PYTHON, reason="nereid-python is not installed")
@pytest.mark.parametrize("frontend", ["http", "grpc"])
@pytest.mark.parametrize("case", range(len(ERRORS)))
def test_errors_over_the_wire(server, frontend, case):
    kwargs, message = ERRORS[case]
    module = _module(frontend)
    client = module.InferenceServerClient(_url(server, frontend))
    try:
        with pytest.raises(InferenceServerException) as info:
            client.infer("py_acc", _inputs(module, 1), **kwargs)
    finally:
        client.close()
    assert message.format(model="py_acc") in info.value.message()
    status = info.value.status()
    assert status == ("400" if frontend == "http" else "StatusCode.INVALID_ARGUMENT")


@pytest.mark.skipif(not HAVE_PYTHON, reason="nereid-python is not installed")
def test_error_on_the_stream_leaves_the_stream_open(server):
    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(_url(server, "grpc"))
    try:
        client.start_stream(callback=lambda result, error: results.put(error or result))
        client.async_stream_infer("py_acc", _inputs(grpcclient, 1), sequence_id=555)
        error = results.get(timeout=20)
        assert isinstance(error, InferenceServerException)
        assert "must specify the START flag" in error.message()
        client.async_stream_infer(
            "py_acc", _inputs(grpcclient, 4), sequence_id=555, sequence_start=True
        )
        result = results.get(timeout=20)
        assert int(result.as_numpy("OUTPUT")[0][0]) == 4
    finally:
        client.stop_stream()
        client.close()
