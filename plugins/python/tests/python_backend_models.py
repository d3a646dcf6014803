"""model.py sources and configs the tests write into temporary model repositories.

Every source is a Triton Python-backend model: ``import triton_python_backend_utils as
pb_utils`` and a ``TritonPythonModel`` class.
"""

from __future__ import annotations

from pathlib import Path

from nereid.testing import repeat_config, square_config

EXAMPLE = Path(__file__).resolve().parents[3] / "docs/examples/model_repository/add_sub_python"
ADD_SUB_SOURCE = (EXAMPLE / "1" / "model.py").read_text()


def add_sub_config(datatype: str = "TYPE_FP32", dims: str = "[ 4 ]", extra: str = "") -> str:
    return f"""
    backend: "python"
    max_batch_size: 0
    input [
      {{ name: "INPUT0" data_type: {datatype} dims: {dims} }},
      {{ name: "INPUT1" data_type: {datatype} dims: {dims} }}
    ]
    output [
      {{ name: "OUTPUT0" data_type: {datatype} dims: {dims} }},
      {{ name: "OUTPUT1" data_type: {datatype} dims: {dims} }}
    ]
    {extra}
    """


IDENTITY_BYTES_CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_STRING dims: [ -1 ] } ]
"""

IDENTITY_BYTES_SOURCE = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            assert data.dtype == np.object_, data.dtype
            assert all(isinstance(item, bytes) for item in data.reshape(-1))
            out = pb_utils.Tensor("OUT", data)
            assert out.triton_dtype() == 13
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
"""

REPEAT_CONFIG = repeat_config("python")

# Triton's decoupled "repeat" semantics: one response per element of IN, DELAY[i] ms apart,
# sent from a thread; execute returns after WAIT ms.
REPEAT_SOURCE = """
import json
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException("the repeat model must be decoupled")
        self.threads = []

    def execute(self, requests):
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            delays = pb_utils.get_input_tensor_by_name(request, "DELAY").as_numpy()
            wait = pb_utils.get_input_tensor_by_name(request, "WAIT").as_numpy()
            sender = request.get_response_sender()
            thread = threading.Thread(
                target=self.respond, args=(sender, values.copy(), delays.copy()), daemon=True
            )
            self.threads.append(thread)
            thread.start()
            time.sleep(int(wait[0]) / 1000)
        return None

    def respond(self, sender, values, delays):
        for index, value in enumerate(values):
            time.sleep(int(delays[index]) / 1000)
            sender.send(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("OUT", np.array([value], np.int32)),
                        pb_utils.Tensor("IDX", np.array([index], np.uint32)),
                    ]
                )
            )
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        try:
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except pb_utils.TritonModelException as exc:
            pb_utils.Logger.log_info("after final: " + str(exc))

    def finalize(self):
        for thread in self.threads:
            thread.join()
"""

ASYNC_CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""

ASYNC_SOURCE = """
import asyncio

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        await asyncio.sleep(0.01)
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", data * 2)]))
        return responses
"""

ASYNC_DECOUPLED_CONFIG = square_config("python")

# For input N: N responses holding N, 20 ms apart, from an async execute that the backend runs
# in the background (so a second request proceeds while the first waits).
ASYNC_DECOUPLED_SOURCE = """
import asyncio

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        for request in requests:
            count = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            sender = request.get_response_sender()
            for _ in range(count):
                await asyncio.sleep(0.02)
                out = pb_utils.Tensor("OUT", np.array([count], np.int32))
                sender.send(pb_utils.InferenceResponse([out]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""

AUTO_COMPLETE_SOURCE = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        config = auto_complete_model_config.as_dict()
        assert config["backend"] == "python", config
        auto_complete_model_config.add_input(
            {"name": "X", "data_type": "TYPE_FP32", "dims": [2], "optional": False}
        )
        auto_complete_model_config.add_output({"name": "Y", "data_type": "TYPE_FP32", "dims": [2]})
        auto_complete_model_config.set_max_batch_size(4)
        auto_complete_model_config.set_model_transaction_policy({"decoupled": False})
        return auto_complete_model_config

    def initialize(self, args):
        self.args = args

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() + 1)]
            )
            for r in requests
        ]
"""

ERRORS_CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "MODE" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

# MODE selects the failure: a returned error with a code, a raised exception, wrong counts...
ERRORS_SOURCE = """
import numpy as np
import triton_python_backend_utils as pb_utils

CODES = {
    "not_found": pb_utils.TritonError.NOT_FOUND,
    "invalid_arg": pb_utils.TritonError.INVALID_ARG,
    "unavailable": pb_utils.TritonError.UNAVAILABLE,
    "unsupported": pb_utils.TritonError.UNSUPPORTED,
    "already_exists": pb_utils.TritonError.ALREADY_EXISTS,
    "cancelled": pb_utils.TritonError.CANCELLED,
    "unknown": pb_utils.TritonError.UNKNOWN,
}


class TritonPythonModel:
    def execute(self, requests):
        mode = pb_utils.get_input_tensor_by_name(requests[0], "MODE").as_numpy()[0].decode()
        if mode == "ok":
            out = pb_utils.Tensor("OUT", np.array([1], np.int32))
            params = {"source": "python", "n": 3, "ok": True}
            return [pb_utils.InferenceResponse([out], parameters=params)]
        if mode == "default_code":
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError("plain error"))]
        if mode in CODES:
            return [
                pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{mode} error", CODES[mode]))
            ]
        if mode == "raise":
            raise pb_utils.TritonModelException("raised on purpose")
        if mode == "raise_value":
            raise ValueError("bad value")
        if mode == "raise_triton_error":
            raise pb_utils.TritonError("raised with a code", pb_utils.TritonError.NOT_FOUND)
        if mode == "too_many":
            return [pb_utils.InferenceResponse([]), pb_utils.InferenceResponse([])]
        if mode == "none":
            return None
        if mode == "not_a_list":
            return "oops"
        if mode == "bls":
            request = pb_utils.InferenceRequest(
                model_name="other", requested_output_names=["OUT"], inputs=[]
            )
            response = request.exec()
            raise pb_utils.TritonModelException("bls: " + response.error().message())
        if mode == "sender":
            sender = requests[0].get_response_sender()
            out = pb_utils.Tensor("OUT", np.array([7], np.int32))
            final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
            sender.send(pb_utils.InferenceResponse([out]), final)
            return None
        if mode == "sender_twice":
            sender = requests[0].get_response_sender()
            sender.send(pb_utils.InferenceResponse([]))
            sender.send(pb_utils.InferenceResponse([]))
        raise pb_utils.TritonModelException("unknown mode " + mode)
"""

INIT_FAILS_SOURCE = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        raise pb_utils.TritonModelException("cannot initialize: missing weights")

    def execute(self, requests):
        return []
"""

CANCEL_CONFIG = """
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: %s }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

# Non-decoupled: waits (up to 5 s) for the request to be cancelled, then answers CANCELLED.
CANCEL_SOURCE = """
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            deadline = time.monotonic() + 5
            while not request.is_cancelled() and time.monotonic() < deadline:
                time.sleep(0.005)
            if request.is_cancelled():
                pb_utils.Logger.log_info("execute saw the cancellation")
                error = pb_utils.TritonError("saw the cancellation", pb_utils.TritonError.CANCELLED)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError("timeout")))
        return responses
"""

# Decoupled: streams responses until the sender reports the cancellation, then ends.
CANCEL_DECOUPLED_SOURCE = """
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self.stream, args=(request.get_response_sender(),)).start()

    def stream(self, sender):
        deadline = time.monotonic() + 5
        count = 0
        while not sender.is_cancelled() and time.monotonic() < deadline:
            count += 1
            out = pb_utils.Tensor("OUT", np.array([count], np.int32))
            sender.send(pb_utils.InferenceResponse([out]))
            time.sleep(0.01)
        if sender.is_cancelled():
            pb_utils.Logger.log_info(f"stream saw the cancellation after {count} responses")
        error = pb_utils.TritonError("stopped after cancellation", pb_utils.TritonError.CANCELLED)
        sender.send(
            pb_utils.InferenceResponse(error=error),
            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
        )
"""

OBSERVE_CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "ARGS" data_type: TYPE_STRING dims: [ 1 ] } ]
parameters { key: "custom_key" value: { string_value: "custom_value" } }
"""

# Logs at every level, counts requests in custom metrics, and answers with what it was given
# (initialize's args, the request's id, flags, correlation id, parameters) as JSON.
OBSERVE_SOURCE = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.args = args
        self.ready = True
        pb_utils.Logger.log_info("initialized " + args["model_instance_name"])
        self.requests = pb_utils.MetricFamily(
            name="observe_requests_total",
            description="requests seen by the observe model",
            kind=pb_utils.MetricFamily.COUNTER,
        ).Metric(labels={"model": args["model_name"], "version": args["model_version"]})
        self.last = pb_utils.MetricFamily(
            "observe_last_size", "size of the last input", pb_utils.MetricFamily.GAUGE
        ).Metric(labels={"model": args["model_name"]})
        self.sizes = pb_utils.MetricFamily(
            "observe_sizes", "input sizes", pb_utils.MetricFamily.HISTOGRAM
        ).Metric(labels={"model": args["model_name"]}, buckets=[1.0, 4.0, 16.0])

    def is_model_ready(self):
        return self.ready

    def execute(self, requests):
        logger = pb_utils.Logger
        logger.log_info("info message")
        logger.log_warn("warning message")
        logger.log_error("error message")
        logger.log_verbose("verbose message")
        logger.log("explicit warning", logger.WARNING)
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            if data.size and data.reshape(-1)[0] < 0:
                self.ready = False
            self.requests.increment(1)
            self.last.set(float(data.size))
            self.sizes.observe(float(data.size))
            seen = {
                "args": self.args,
                "request_id": request.request_id(),
                "correlation_id": request.correlation_id(),
                "flags": request.flags(),
                "parameters": json.loads(request.parameters()),
                "requested": request.requested_output_names(),
                "timeout": request.timeout(),
                "count": self.requests.value(),
            }
            out = pb_utils.Tensor("ARGS", np.array([json.dumps(seen).encode()], dtype=np.object_))
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
"""

# -- process mode: crashes, hangs, parallel instances, big tensors --------------------------------

PROCESS_CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "MODE" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "PID" data_type: TYPE_INT64 dims: [ 1 ] } ]
%s
"""

# MODE "pid" answers with the model process's pid; "exit" ends the process (os._exit), "kill"
# kills it with SIGKILL, "spin" never returns (a busy loop).
PROCESS_SOURCE = """
import os
import signal

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            mode = pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0].decode()
            if mode == "exit":
                os._exit(3)
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "spin":
                while True:
                    pass
            out = pb_utils.Tensor("PID", np.array([os.getpid()], np.int64))
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
"""

BUSY_CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "N" data_type: TYPE_INT64 dims: [ 1 ] } ]
output [
  { name: "START" data_type: TYPE_FP64 dims: [ 1 ] },
  { name: "END" data_type: TYPE_FP64 dims: [ 1 ] },
  { name: "PID" data_type: TYPE_INT64 dims: [ 1 ] }
]
instance_group [ { count: %d kind: KIND_CPU } ]
"""

# CPU-bound pure Python (holds the GIL): N loop iterations; answers when it ran (monotonic
# clock, comparable across processes) and where.
BUSY_SOURCE = """
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy()[0])
            start = time.monotonic()
            total = 0
            for i in range(n):
                total += i * i
            end = time.monotonic()
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("START", np.array([start])),
                        pb_utils.Tensor("END", np.array([end])),
                        pb_utils.Tensor("PID", np.array([os.getpid()], np.int64)),
                    ]
                )
            )
        return responses
"""

IDENTITY_CONFIG = """
backend: "python"
max_batch_size: 0
input [
  { name: "X" data_type: TYPE_FP32 dims: [ -1 ] },
  { name: "S" data_type: TYPE_STRING dims: [ -1 ] }
]
output [
  { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] },
  { name: "T" data_type: TYPE_STRING dims: [ -1 ] }
]
"""

IDENTITY_SOURCE = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [
                    pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy()),
                    pb_utils.Tensor("T", pb_utils.get_input_tensor_by_name(r, "S").as_numpy()),
                ]
            )
            for r in requests
        ]
"""

STREAM_CRASH_CONFIG = """
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

# Decoupled: one response from a thread, then the process dies (IN == 1) or the final flag.
STREAM_CRASH_SOURCE = """
import os
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            crash = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0]) == 1
            sender = request.get_response_sender()
            threading.Thread(target=self.stream, args=(sender, crash), daemon=True).start()

    def stream(self, sender, crash):
        sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([7], np.int32))]))
        time.sleep(0.05)
        if crash:
            os._exit(5)
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
"""
