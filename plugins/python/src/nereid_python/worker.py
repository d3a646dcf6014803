"""The model process: ``python -m nereid_python.worker <control fd> <events fd>``.

One model instance runs here, on the same :class:`~nereid_python.runner.ModelRunner` as in the
server process. The main thread answers the control channel in order (load the model file,
auto-complete, initialize, execute, finalize), so model code runs on the main thread as in
Triton's stub; a reader thread takes the events channel (cancellations, readiness probes, replies
to metric calls). Inputs are read in place from the server's shared-memory arena; outputs are
written into this process's own arena (:mod:`nereid_python.shm`).

What the model does beside the call being answered travels on the events channel: responses of a
decoupled model, log records (every Python logging record, ``pb_utils.Logger`` included), custom
metric operations. While the main thread is inside a call, its own records and metric
operations are kept with the call's reply instead, so the server replays them before it
delivers the responses: a client that has its response can read the log line and the metric
the model wrote for it.

The process does not import the server's kernel. It exits when the server closes the channels
(or dies: on Linux the process also asks to be killed with its parent).
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

import numpy as np

from . import bls_wire as bls
from . import pb_utils, protocol, runtime, shm
from .loader import MissingClassError, ModelFile
from .protocol import Channel
from .runner import AutoCompleteError, ModelRunner, auto_complete

log = logging.getLogger("nereid.python")

# Events of a call are kept with its reply for its first 0.1 s, 256 of them at most.
_BUFFER_SECONDS = 0.1
_BUFFERED = 256
_DTYPES = {code: np.dtype(t) for code, t in pb_utils._CODE_TO_NUMPY.items() if code != 13}


class _Reply(Exception):
    """Ends a control call with an error reply (kind name, message)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class Worker:
    """The model process's state: its channels, arenas, the model's runner, and which
    requests are open or cancelled."""

    def __init__(self, control: socket.socket, events: socket.socket) -> None:
        self.control = Channel(control)
        self.events = Channel(events)
        self.main_thread = threading.get_ident()
        self.buffer: list[Any] | None = None  # events of the call in progress (main thread)
        self.buffer_until = 0.0
        self.settings: dict[str, Any] = {}
        self.arena: shm.Arena | None = None
        self.mapped: shm.Mapped | None = None
        self.file: ModelFile | None = None
        self.model_class: type | None = None
        self.runner: ModelRunner | None = None
        self.decoupled = False
        self.services = _ChildServices(self)
        self.cancelled: set[int] = set()
        self.open: set[int] = set()  # requests not yet answered with their final response
        self.last_rid = 0
        self.level = logging.INFO
        self._calls = itertools.count(1)
        self._waiting: dict[int, list[Any]] = {}
        self._bls: dict[int, queue.SimpleQueue] = {}
        self._state_lock = threading.Lock()

    # -- events ----------------------------------------------------------------------------------

    def emit(self, message: Any) -> None:
        """An event for the server: kept with the reply while the main thread is in a call
        (for its first moments: a long call's log lines are not held back), sent now
        otherwise."""
        buffer = self.buffer
        if buffer is not None and threading.get_ident() == self.main_thread:
            if len(buffer) < _BUFFERED and time.monotonic() < self.buffer_until:
                buffer.append(message)
                return
            self.flush()
        self.events.send(message)

    def flush(self) -> None:
        """Send the events kept so far (before anything that must come after them)."""
        buffer = self.buffer
        if buffer and threading.get_ident() == self.main_thread:
            self.events.send_many(buffer)
            buffer.clear()

    def call(self, message: tuple, wait: bool = True) -> Any:
        """A call the server answers on the events channel (metric look-ups, model control;
        ``wait=False``: no time limit)."""
        self.flush()
        call = next(self._calls)
        slot: list[Any] = [threading.Event(), None]
        self._waiting[call] = slot
        self.events.send((message[0], call, *message[1:]))
        if not slot[0].wait(self.settings.get("call_timeout", 30.0) if wait else None):
            self._waiting.pop(call, None)
            raise pb_utils.TritonModelException("the server did not answer in time")
        ok, value = slot[1]
        if not ok:
            raise pb_utils.TritonModelException(value)
        return value

    def _read_events(self) -> None:
        """The events reader: cancellations, readiness probes, replies to calls."""
        try:
            while True:
                message = self.events.recv()
                tag = message[0]
                if tag == protocol.CANCEL:
                    rid = message[1]
                    with self._state_lock:
                        if rid in self.open or rid > self.last_rid:
                            self.cancelled.add(rid)
                elif tag == protocol.REPLY:
                    slot = self._waiting.pop(message[1], None)
                    if slot is not None:
                        slot[1] = (message[2], message[3])
                        slot[0].set()
                elif tag == protocol.BLS_RESPONSE:
                    responses = self._bls.get(message[1])
                    if responses is not None:
                        if message[2]:
                            del self._bls[message[1]]
                        responses.put((message[2], message[3]))
                elif tag == protocol.READY_PROBE:
                    threading.Thread(target=self._probe, args=(message[1],), daemon=True).start()
        except (EOFError, OSError):
            pass
        _exit(0)  # the server has gone

    def _probe(self, token: int) -> None:
        runner = self.runner
        ready = runner.is_ready() if runner is not None else False
        try:
            self.events.send((protocol.READY_STATE, token, ready))
        except OSError:
            pass

    # -- control ---------------------------------------------------------------------------------

    def run(self) -> None:
        threading.Thread(target=self._read_events, name="nereid-events", daemon=True).start()
        handlers = {
            protocol.LOAD: self._load,
            protocol.AUTO_COMPLETE: self._auto_complete,
            protocol.INITIALIZE: self._initialize,
            protocol.EXECUTE: self._execute,
            protocol.FINALIZE: self._finalize,
        }
        control = self.control
        while True:
            try:
                message = control.recv()
            except (EOFError, OSError):
                return
            handler = handlers[message[0]]
            self.buffer = []
            self.buffer_until = time.monotonic() + _BUFFER_SECONDS
            try:
                reply = handler(message)
            except _Reply as error:
                reply = (protocol.ERROR, error.kind, error.message, self.buffer)
            except BaseException as exc:  # a bug here: report it rather than hang the server
                log.exception("model process failed handling a call")
                reply = (protocol.ERROR, "INTERNAL", f"{type(exc).__name__}: {exc}", self.buffer)
            self.buffer = None
            try:
                control.send(reply)
            except OSError:
                return
            if message[0] == protocol.FINALIZE:
                return

    def _load(self, message: tuple) -> tuple:
        settings = self.settings = message[1]
        for entry in settings["sys_path"]:
            if entry not in sys.path:
                sys.path.append(entry)
        _activate(settings.get("env_roots", ()), settings.get("env_site", ()))
        self._set_level(settings["log_level"])
        arena = shm.Arena(
            settings["shm_dir"],
            settings["shm_prefix"],
            settings["shm_default_size"],
            settings["shm_growth"],
        )
        try:
            arena.start()
        except shm.ShmError as exc:
            raise _Reply("UNAVAILABLE", str(exc)) from None
        self.arena = arena
        self.mapped = shm.Mapped(settings["shm_dir"])
        self.file = ModelFile(settings["model_file"], settings["label"])
        try:
            self.model_class = self.file.model_class()
        except MissingClassError as exc:
            raise _Reply("INVALID_ARG", str(exc)) from None
        except BaseException as exc:
            log.error("importing '%s' failed", settings["model_file"], exc_info=exc)
            raise _Reply(
                "INVALID_ARG",
                f"failed to import '{settings['model_file']}': {type(exc).__name__}: {exc}",
            ) from None
        has = hasattr(self.model_class, "auto_complete_config")
        return (protocol.OK, {"auto_complete": has, "pid": os.getpid()}, self.buffer)

    def _auto_complete(self, message: tuple) -> tuple:
        try:
            result = auto_complete(self.model_class, message[1], message[2], self.services)
        except AutoCompleteError as exc:
            raise _Reply("INVALID_ARG", str(exc)) from None
        return (protocol.OK, result, self.buffer)

    def _initialize(self, message: tuple) -> tuple:
        args, self.decoupled, level = message[1], message[2], message[3]
        self._set_level(level)
        runner = ModelRunner(
            self.model_class,
            args,
            decoupled=self.decoupled,
            name=args["model_instance_name"],
            services=self.services,
        )
        try:
            runner.initialize()
        except Exception as exc:
            runner.abandon()
            log.error(
                "initialize of model instance '%s' failed",
                args["model_instance_name"],
                exc_info=exc,
            )
            raise _Reply("INTERNAL", f"{type(exc).__name__}: {exc}") from None
        self.runner = runner
        # What initialize made (weights, tables) lives until finalize: keep it out of the
        # cyclic garbage collector's full passes.
        gc.collect()
        gc.freeze()
        return (protocol.OK, runner.is_ready(), self.buffer)

    def _finalize(self, message: tuple) -> tuple:
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.finalize()
        return (protocol.OK, None, self.buffer)

    def _set_level(self, level: int) -> None:
        if level != self.level:
            self.level = level
            logging.getLogger().setLevel(level)

    # -- execute ---------------------------------------------------------------------------------

    def _execute(self, message: tuple) -> tuple:
        if message[1] != self.level:
            self._set_level(message[1])
        decoupled = self.decoupled
        batch = _Batch()
        mapped = self.mapped
        requests = []
        with self._state_lock:
            for (
                rid,
                segment_name,
                tensors,
                request_id,
                correlation_id,
                requested,
                flags,
                timeout,
                parameters,
                model_name,
                model_version,
                cancelled,
            ) in message[2]:
                self.open.add(rid)
                self.last_rid = rid
                if cancelled:
                    self.cancelled.add(rid)
                inputs = []
                if tensors:
                    segment = mapped.get(segment_name)
                    for name, code, shape, offset, nbytes in tensors:
                        if code == shm.BYTES_CODE:
                            array = shm.read_bytes(segment, shape, offset, nbytes)
                        else:
                            array = shm.read_view(segment, _DTYPES[code], shape, offset, nbytes)
                        inputs.append(pb_utils.Tensor._wrap(name, array, code))
                channel = _Channel(self, rid, None if decoupled else batch)
                requests.append(
                    pb_utils.InferenceRequest._incoming(
                        inputs,
                        request_id,
                        correlation_id,
                        requested,
                        flags,
                        timeout,
                        parameters,
                        model_name,
                        model_version,
                        pb_utils.InferenceResponseSender(channel, decoupled),
                    )
                )
        self.runner.execute(requests)
        batch.closed = True
        return (protocol.DONE, batch.responses, self.buffer)

    def respond(self, channel: _Channel, response: pb_utils.InferenceResponse | None, final: bool):
        payload = None if response is None else self._encode(response)
        if final:
            rid = channel.rid
            with self._state_lock:
                self.open.discard(rid)
                self.cancelled.discard(rid)
        batch = channel.batch
        if batch is not None and not batch.closed:
            batch.responses.append((channel.rid, final, payload))
            return
        self.flush()
        self.events.send((protocol.RESPONSE, channel.rid, final, payload))

    def _encode(self, response: pb_utils.InferenceResponse) -> tuple:
        """(error, parameters, segment, start, end, outputs): outputs are written into this
        process's arena."""
        error = response.error()
        parameters = response.parameters()
        if error is not None:
            return ((error.code(), error.message()), parameters, None, 0, 0, ())
        tensors = response.output_tensors()
        if not tensors:
            return (None, parameters, None, 0, 0, ())
        total, staged = shm.prepare([(t.name(), t.triton_dtype(), t.as_numpy()) for t in tensors])
        try:
            segment, start, end, offset = self.arena.alloc(total)
        except shm.ShmError as exc:
            message = f"failed to send the response's outputs: {exc}"
            return ((pb_utils.TritonError.INTERNAL, message), parameters, None, 0, 0, ())
        return (None, parameters, segment.name, start, end, shm.write(segment, offset, staged))


class _Batch:
    """A non-decoupled batch: its responses go back with the execute reply."""

    __slots__ = ("closed", "responses")

    def __init__(self) -> None:
        self.responses: list[tuple] = []
        self.closed = False


class _Channel:
    """A request's response channel in the model process (``pb_utils.ResponseChannel``)."""

    __slots__ = ("batch", "rid", "worker")

    def __init__(self, worker: Worker, rid: int, batch: _Batch | None) -> None:
        self.worker = worker
        self.rid = rid
        self.batch = batch

    def send(self, response: pb_utils.InferenceResponse | None, final: bool) -> None:
        self.worker.respond(self, response, final)

    def is_cancelled(self) -> bool:
        return self.rid in self.worker.cancelled


# -- services: logging and custom metrics, forwarded ----------------------------------------------


class _ForwardHandler(logging.Handler):
    """Every log record of this process goes to the server's logging."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(logging.NOTSET)
        self.worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc_text = None
            if record.exc_info:
                exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            elif record.exc_text:
                exc_text = record.exc_text
            self.worker.emit(
                (
                    protocol.LOG,
                    record.name,
                    record.levelno,
                    record.pathname,
                    record.lineno,
                    record.funcName,
                    record.getMessage(),
                    exc_text,
                    record.threadName,
                )
            )
        except Exception:
            pass  # the server is gone or the record cannot be formatted: nothing to do


class _ChildServices(runtime.Services):
    """Metrics through the server's registry (families and series are looked up by a call,
    updates are sent without waiting); logging is Python logging, forwarded by the handler."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def bls(self, request: pb_utils.InferenceRequest, outer: list[Any]) -> Any:
        wire = bls.request_wire(request)
        rids = [
            channel.rid
            for channel in (getattr(r._sender, "_channel", None) for r in outer)
            if isinstance(channel, _Channel)
        ]
        worker = self.worker
        responses: queue.SimpleQueue = queue.SimpleQueue()
        call = next(worker._calls)
        worker._bls[call] = responses
        worker.flush()
        try:
            worker.events.send((protocol.BLS, call, wire, rids))
        except OSError:
            worker._bls.pop(call, None)
            raise pb_utils.TritonModelException("the server has gone") from None
        return bls.drain(responses, bls.pb_response)

    def model_control(self, operation: str, *args: Any) -> Any:
        return self.worker.call((protocol.MODEL_CONTROL, operation, args), wait=False)

    def metric_family(self, name: str, description: str, kind: str) -> Any:
        family = self.worker.call((protocol.METRIC_FAMILY, name, description, kind))
        return _RemoteFamily(self.worker, family, kind)


class _RemoteFamily:
    __slots__ = ("id", "kind", "worker")

    def __init__(self, worker: Worker, family: int, kind: str) -> None:
        self.worker = worker
        self.id = family
        self.kind = kind

    def metric(self, labels: dict[str, str] | None, buckets: Any) -> _RemoteMetric:
        if buckets is not None:
            buckets = [float(b) for b in buckets]
        metric = self.worker.call((protocol.METRIC, self.id, dict(labels or {}), buckets))
        return _RemoteMetric(self.worker, metric, self.kind)


class _RemoteMetric:
    """A series in the server's registry; checks what the registry would refuse here, since
    updates are not waited for."""

    __slots__ = ("id", "kind", "worker")

    def __init__(self, worker: Worker, metric: int, kind: str) -> None:
        self.worker = worker
        self.id = metric
        self.kind = kind

    def increment(self, value: float) -> None:
        if self.kind == "histogram":
            raise pb_utils.TritonModelException("use observe() on a histogram")
        if self.kind == "counter" and value < 0:
            raise pb_utils.TritonModelException("a counter cannot be decremented")
        self.worker.emit((protocol.METRIC_OP, self.id, "increment", float(value)))

    def set(self, value: float) -> None:
        if self.kind != "gauge":
            raise pb_utils.TritonModelException(f"set() is for gauges, not a {self.kind}")
        self.worker.emit((protocol.METRIC_OP, self.id, "set", float(value)))

    def observe(self, value: float) -> None:
        if self.kind != "histogram":
            raise pb_utils.TritonModelException(f"observe() is for histograms, not a {self.kind}")
        self.worker.emit((protocol.METRIC_OP, self.id, "observe", float(value)))

    def get(self) -> float:
        return self.worker.call((protocol.METRIC_GET, self.id))


# -- process ----------------------------------------------------------------------------------


def _activate(roots: list[str], site_dirs: list[str]) -> None:
    """Put the model's environments first: their site-packages (with their ``.pth`` files)
    at the front of ``sys.path``, ``VIRTUAL_ENV`` and ``PATH`` as an activation sets them."""
    if not site_dirs:
        return
    import site

    before = list(sys.path)
    for directory in site_dirs:
        site.addsitedir(directory)
    added = [entry for entry in sys.path if entry not in before]
    sys.path[:] = added + before
    os.environ["VIRTUAL_ENV"] = roots[0]
    bins = [os.path.join(root, "bin") for root in roots]
    os.environ["PATH"] = os.pathsep.join([*bins, os.environ.get("PATH", "")])


def _exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def _die_with_parent() -> None:
    """Linux: be killed (SIGKILL) when the server process ends, however it ends."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def main(argv: list[str]) -> None:
    _die_with_parent()
    if os.getppid() == 1:  # the server died before we could ask
        _exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the server's to handle
    control = socket.socket(fileno=int(argv[1]))
    events = socket.socket(fileno=int(argv[2]))
    worker = Worker(control, events)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_ForwardHandler(worker))
    root.setLevel(worker.level)
    logging.lastResort = None
    worker.run()
    _exit(0)


if __name__ == "__main__":
    main(sys.argv)
