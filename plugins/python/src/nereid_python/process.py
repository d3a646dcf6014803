"""Model instances in processes of their own (the default execution mode).

:class:`WorkerProcess` is the server's side of one model process (:mod:`nereid_python.worker`):
it starts the process, writes each request's inputs into the instance's shared-memory arena,
sends the batch on the control channel and turns the replies into ``request.respond`` calls.
A reader thread takes the events channel: responses of decoupled models, log records, custom
metric calls, readiness answers. A writer thread sends what the event loop must not block on
(cancellations, readiness probes).

:class:`ProcessHost` is the model instance the kernel sees. When its process dies (a crash, a
kill, or an ``execute`` that outlives the execute timeout and is killed), the requests it held
fail with ``Stub process '<instance>' is not healthy`` and a new process is started and
initialized in the background, as Triton restarts an unhealthy stub; the instance is not ready
until it is back, and a batch that arrives meanwhile waits for it.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nereid import errors
from nereid.errors import ErrorKind, InternalError, InvalidArgumentError, NereidError, error_of_kind
from nereid.runtime.batching import mark_compute_input_end
from nereid.types import InferenceRequest, InferenceResponse, Tensor

from . import pb_utils, protocol, runtime, shm
from .host import _CODE_OF, _DTYPE_OF, InstanceHost
from .protocol import Channel

log = logging.getLogger("nereid.python")

_serials = itertools.count(1)
# Batches a model process may have been sent and not yet answered (not decoupled).
PIPELINE_DEPTH = 4
_FLAG_START = 1
_FLAG_END = 2
_NUMPY_OF = {code: dtype.numpy_dtype for code, dtype in _DTYPE_OF.items()}


def _default_shm_dir() -> str:
    """``/dev/shm`` (a tmpfs on Linux), else the temporary directory (macOS has no /dev/shm;
    its page cache keeps the mapped files in memory)."""
    if os.path.isdir("/dev/shm"):
        return "/dev/shm"
    import tempfile

    return tempfile.gettempdir()


@dataclass
class ProcessSettings:
    """How model processes are run (``--backend-config=python,...`` and model parameters)."""

    shm_dir: str = field(default_factory=_default_shm_dir)
    shm_prefix: str = "nereid_python"
    shm_default_size: int = 1 << 20
    shm_growth: int = 1 << 20
    stub_timeout: float = 30.0
    execute_timeout: float = 0.0  # 0: none
    env_cache_dir: str = ""  # where packed and requirements.txt environments go ("": default)
    environment: dict[str, Any] = field(default_factory=dict)  # environments.Environment


_spawner: queue.SimpleQueue | None = None
_spawner_lock = threading.Lock()


def _spawn(command: list[str], fds: tuple[int, ...]) -> subprocess.Popen:
    """Start a model process from one long-lived thread: a model process asks Linux to kill it
    when its parent dies (``PR_SET_PDEATHSIG``), and "parent" there means the thread that
    forked it, so it must not be a thread that ends before the server does."""
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = queue.SimpleQueue()
            threading.Thread(
                target=_spawn_forever, args=(_spawner,), name="nereid-python-spawner", daemon=True
            ).start()
    slot: list[Any] = [threading.Event(), None, None]
    _spawner.put((command, fds, slot))
    slot[0].wait()
    if slot[2] is not None:
        raise slot[2]
    return slot[1]


def _spawn_forever(jobs: queue.SimpleQueue) -> None:
    while True:
        command, fds, slot = jobs.get()
        try:
            slot[1] = subprocess.Popen(command, pass_fds=fds, stdin=subprocess.DEVNULL)
        except BaseException as exc:
            slot[2] = exc
        slot[0].set()


def _message(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    if callable(message):  # pb_utils' exceptions have a message() method
        message = message()
    return message or str(exc)


class WorkerProcess:
    """One model process, from start to exit. Not reused once dead."""

    def __init__(self, label: str, model_file: Path, module_label: str, settings: ProcessSettings):
        self.label = label
        self.settings = settings
        self.model_file = model_file
        serial = next(_serials)
        self.prefix = f"{settings.shm_prefix}_{os.getpid()}_{serial}_"
        self.services: runtime.Services = runtime.Services()
        self.decoupled = False
        self.name = label
        self.pending: dict[int, list[Any]] = {}
        # Batches sent to the process whose reply has not been read, oldest first.
        self.running: collections.deque[list[list[Any]]] = collections.deque()
        self.dead = False
        self.closing = False
        self.death_reason = ""
        self.kill_reason = ""
        self.on_death: Any = None
        self.ready = False
        self.pid = 0
        self._rids = itertools.count(1)
        self._shm_lock = threading.Lock()
        self._death_lock = threading.Lock()
        self._families: dict[int, Any] = {}
        self._metrics: dict[int, Any] = {}
        self._handles = itertools.count(1)
        self._probe_sent = 0.0
        self._probes = itertools.count(1)
        self._outbox: queue.SimpleQueue | None = None
        self._outbox_lock = threading.Lock()
        self.inputs = shm.Arena(
            settings.shm_dir, self.prefix + "i", settings.shm_default_size, settings.shm_growth
        )
        try:
            self.inputs.start()
        except shm.ShmError as exc:
            raise errors.UnavailableError(f"python backend: {exc}") from None
        self.outputs = shm.Mapped(settings.shm_dir)
        control, control_child = socket.socketpair()
        events, events_child = socket.socketpair()
        try:
            self.proc = _spawn(
                [
                    sys.executable,
                    "-m",
                    "nereid_python.worker",
                    str(control_child.fileno()),
                    str(events_child.fileno()),
                ],
                (control_child.fileno(), events_child.fileno()),
            )
        except BaseException:
            for sock in (control, control_child, events, events_child):
                sock.close()
            self.inputs.close()
            raise
        control_child.close()
        events_child.close()
        self.pid = self.proc.pid
        self.control = Channel(control)
        self.events = Channel(events)
        self._handlers = {
            protocol.RESPONSE: self._on_response,
            protocol.LOG: self._on_log,
            protocol.METRIC_FAMILY: self._on_metric_family,
            protocol.METRIC: self._on_metric,
            protocol.METRIC_OP: self._on_metric_op,
            protocol.METRIC_GET: self._on_metric_get,
            protocol.READY_STATE: self._on_ready_state,
            protocol.BLS: self._on_bls,
            protocol.MODEL_CONTROL: self._on_model_control,
        }
        self._reader = threading.Thread(
            target=self._read_events, name=f"nereid-python-events-{serial}", daemon=True
        )
        self._reader.start()
        self._loaded: dict[str, Any] | None = None
        self._load_error: NereidError | None = None
        try:
            self._send_load(model_file, module_label)
        except OSError:
            pass  # the process is gone already: loaded() reports how it ended

    def _send_load(self, model_file: Path, module_label: str) -> None:
        settings = self.settings
        self.control.send(
            (
                protocol.LOAD,
                {
                    "sys_path": list(sys.path),
                    "log_level": _level(),
                    "shm_dir": settings.shm_dir,
                    "shm_prefix": self.prefix + "o",
                    "shm_default_size": settings.shm_default_size,
                    "shm_growth": settings.shm_growth,
                    "model_file": str(model_file),
                    "label": module_label,
                    "call_timeout": settings.stub_timeout,
                    **settings.environment,
                },
            )
        )

    # -- control calls -----------------------------------------------------------------------

    def loaded(self) -> dict[str, Any]:
        """Wait for the model file to be imported: ``{"auto_complete": bool, "pid": int}``."""
        if self._loaded is None:
            if self._load_error is not None:
                raise self._load_error
            try:
                self._loaded = self._reply(self.settings.stub_timeout, "start")
            except NereidError as exc:
                self._load_error = exc
                raise
        return self._loaded

    def auto_complete(self, config: dict[str, Any], name: str) -> dict[str, Any] | None:
        self.control.send((protocol.AUTO_COMPLETE, config, name))
        return self._reply(self.settings.stub_timeout, "auto-complete")

    def initialize(self, args: dict[str, str], decoupled: bool, services: runtime.Services) -> None:
        self.loaded()
        self.name = args["model_instance_name"]
        self.decoupled = decoupled
        self.services = services
        self.control.send((protocol.INITIALIZE, args, decoupled, _level()))
        self.ready = bool(self._reply(self.settings.stub_timeout, "initialize"))

    def _reply(self, timeout: float, what: str) -> Any:
        """The reply to the control call just sent; its error raised as the kernel's."""
        try:
            reply = self.control.recv(timeout or None)
        except TimeoutError:
            self.kill(f"{what} did not finish within {timeout:g} s")
            self._died()
            raise InternalError(
                f"model process of '{self.name}': {what} did not finish within {timeout:g} s "
                "(--backend-config=python,stub-timeout-seconds=<seconds>)"
            ) from None
        except (EOFError, OSError):
            self._died()
            raise InternalError(
                f"model process of '{self.name}' ended during {what}: {self.death_reason}"
            ) from None
        self._replay(reply[-1])
        if reply[0] == protocol.ERROR:
            raise error_of_kind(reply[1], reply[2])
        return reply[1]

    def _replay(self, events: list[Any] | None) -> None:
        if events:
            handlers = self._handlers
            for event in events:
                handlers[event[0]](event)

    # -- execute -------------------------------------------------------------------------------

    def execute(self, requests: list[InferenceRequest]) -> None:
        """Send a batch to the model process. A decoupled model's batch has run when this
        returns (its responses come as the process sends them). Other batches are left
        running, up to ``PIPELINE_DEPTH`` of them, so the model process always has the next
        batch while the server answers the last ones and prepares more: this answers the
        batches whose replies are in, waits only while too many are running, and ``flush``
        answers the rest when no next batch comes."""
        message, batch = self.prepare(requests)
        if batch:
            try:
                self.control.send_quick(message)
            except OSError:
                self._died()
                return
            self.running.append(batch)
        limit = 0 if self.decoupled else PIPELINE_DEPTH
        running = self.running
        if running:
            self.control.read_arrived()
        while running and (len(running) > limit or self.control.has_message()):
            self._answer_oldest()

    def flush(self) -> None:
        """Answer every batch sent and not yet answered."""
        while self.running:
            self._answer_oldest()

    def _answer_oldest(self) -> None:
        """Wait for the reply to the oldest batch running (``execute_timeout``), answer it."""
        try:
            batch = self.running.popleft()
        except IndexError:  # the process died meanwhile: its batches have been failed
            return
        timeout = self.settings.execute_timeout or None
        try:
            reply = self.control.recv(timeout)
        except TimeoutError:
            self.kill(f"execute did not finish within {timeout:g} s and the process was killed")
            self._died()
            return
        except (EOFError, OSError):
            self._died()
            return
        self.finish(reply, batch)

    def prepare(self, requests: list[InferenceRequest]) -> tuple[tuple, list[list[Any]]]:
        """Write the batch's inputs into the arena: the EXECUTE message, and the batch's
        entries (request, segment, start, end, state, rid) now pending."""
        pending = self.pending
        arena = self.inputs
        descriptors = []
        batch = []
        for request in requests:
            rid = next(self._rids)
            arrays = [(name, _CODE_OF[t.datatype], t.data) for name, t in request.inputs.items()]
            try:
                total, staged = shm.prepare(arrays)
                segment, start, end, offset = arena.alloc(total)
            except shm.ShmError as exc:
                request.fail(errors.UnavailableError(f"python backend: {exc}"))
                continue
            tensors = shm.write(segment, offset, staged)
            flags = request.flags
            if request.sequence_start:
                flags |= _FLAG_START
            if request.sequence_end:
                flags |= _FLAG_END
            parameters = request.parameters
            descriptors.append(
                (
                    rid,
                    segment.name,
                    tensors,
                    request.id,
                    request.sequence_id,
                    [out.name for out in request.requested_outputs],
                    flags,
                    request.timeout_us,
                    json.dumps(parameters, default=str) if parameters else "{}",
                    request.model_name,
                    request.model_version,
                    request.is_cancelled(),
                )
            )
            entry = [request, segment, start, end, 0, rid]
            pending[rid] = entry
            batch.append(entry)
            request.on_cancel(_Canceller(self, rid))
        mark_compute_input_end(requests)
        return (protocol.EXECUTE, _level(), descriptors), batch

    def finish(self, reply: tuple, batch: list[list[Any]]) -> None:
        """The execute reply: replay its events, answer the batch (or, decoupled, mark it
        executed), free its inputs."""
        pending = self.pending
        self._replay(reply[-1])
        if reply[0] != protocol.DONE:  # the model process failed outside the model's code
            error = error_of_kind(reply[1], reply[2])
            for entry in batch:
                pending.pop(entry[5], None)
                entry[0].fail(error)
            return
        if self.decoupled:
            with self._shm_lock:
                for entry in batch:
                    entry[4] |= 1
                    if entry[4] == 3:
                        entry[1].release(entry[2], entry[3])
            return
        with self._shm_lock:  # the inputs are free again once execute has returned
            for entry in batch:
                entry[1].release(entry[2], entry[3])
        now = time.monotonic_ns()  # the batch may have been answered after execute returned
        for rid, final, payload in reply[1]:
            entry = pending.pop(rid, None)
            if entry is not None:
                request = entry[0]
                request.compute_output_start_ns = now
                self._deliver(request, final, payload)
        for entry in batch:  # a request the reply left unanswered (should not happen)
            if pending.pop(entry[5], None) is not None:
                entry[0].fail(InternalError(f"model instance '{self.name}' sent no response"))

    def _deliver(self, request: InferenceRequest, final: bool, payload: tuple | None) -> None:
        """Turn a response from the model process into the kernel's and send it."""
        response = None if payload is None else self._response(payload)
        if request.compute_output_start_ns == 0:
            request.compute_output_start_ns = time.monotonic_ns()
        if request.final_sent and request.is_cancelled():
            return  # answered CANCELLED already: the client is gone
        try:
            request.respond(response, final=final)
        except InvalidArgumentError:
            pass  # the request was ended meanwhile

    def _response(self, payload: tuple) -> InferenceResponse:
        error, parameters, segment_name, start, end, outputs = payload
        params = json.loads(parameters) if parameters != "{}" else {}
        if error is not None:
            kind = pb_utils.error_code_name(error[0])
            return InferenceResponse(error=error_of_kind(kind, error[1]), parameters=params)
        if segment_name is None:
            return InferenceResponse((), parameters=params)
        segment = self.outputs.get(segment_name)
        tensors = []
        try:
            for name, code, shape, offset, nbytes in outputs:
                if code == shm.BYTES_CODE:
                    array = shm.read_bytes(segment, shape, offset, nbytes)
                else:
                    array = shm.read_copy(segment, _NUMPY_OF[code], shape, offset, nbytes)
                tensors.append(Tensor(name, array, _DTYPE_OF[code]))
        finally:
            with self._shm_lock:
                segment.release(start, end)
        return InferenceResponse(tensors, parameters=params)

    # -- events --------------------------------------------------------------------------------

    def _read_events(self) -> None:
        handlers = self._handlers
        events = self.events
        try:
            while True:
                message = events.recv()
                try:
                    handlers[message[0]](message)
                except Exception:
                    log.exception("model instance '%s': handling a message failed", self.name)
        except (EOFError, OSError):
            pass
        self._died()

    def _on_response(self, message: tuple) -> None:
        _, rid, final, payload = message
        entry = self.pending.get(rid)
        if entry is None:
            if payload is not None:  # still release the outputs' block
                self._response(payload)
            return
        if final:
            self.pending.pop(rid, None)
            with self._shm_lock:
                entry[4] |= 2
                if entry[4] == 3:
                    entry[1].release(entry[2], entry[3])
        self._deliver(entry[0], final, payload)

    def _on_log(self, message: tuple) -> None:
        _, name, level, pathname, lineno, function, text, exc_text, thread = message
        logger = logging.getLogger(name)
        if not logger.isEnabledFor(level):
            return
        record = logger.makeRecord(name, level, pathname, lineno, text, None, None, function)
        record.exc_text = exc_text
        record.process = self.pid
        record.processName = f"model process {self.name}"
        record.threadName = thread
        logger.handle(record)

    def _answer(self, call: int, function: Any, *args: Any) -> None:
        try:
            value = function(*args)
        except Exception as exc:
            reply = (protocol.REPLY, call, False, _message(exc))
        else:
            reply = (protocol.REPLY, call, True, value)
        try:
            self.events.send(reply)
        except OSError:
            pass

    def _on_metric_family(self, message: tuple) -> None:
        _, call, name, description, kind = message

        def family() -> int:
            handle = self.services.metric_family(name, description, kind)
            key = next(self._handles)
            self._families[key] = handle
            return key

        self._answer(call, family)

    def _on_metric(self, message: tuple) -> None:
        _, call, family_key, labels, buckets = message

        def metric() -> int:
            handle = self._families[family_key].metric(labels, buckets)
            key = next(self._handles)
            self._metrics[key] = handle
            return key

        self._answer(call, metric)

    def _on_metric_op(self, message: tuple) -> None:
        _, key, method, value = message
        try:
            getattr(self._metrics[key], method)(value)
        except Exception as exc:
            log.warning("model instance '%s': metric %s failed: %s", self.name, method, exc)

    def _on_metric_get(self, message: tuple) -> None:
        _, call, key = message
        self._answer(call, lambda: self._metrics[key].get())

    def _on_bls(self, message: tuple) -> None:
        """A BLS request from the model: run it through the kernel, stream its responses
        back (tied to the outer requests it was made for, for cancellation)."""
        from . import bls

        _, call, wire, rids = message
        api = getattr(self.services, "api", None)

        def respond(response: InferenceResponse) -> None:
            self.post((protocol.BLS_RESPONSE, call, response.final, bls.response_wire(response)))

        if api is None:
            self.post((protocol.BLS_RESPONSE, call, True, bls.error_response("no server")))
            return
        outer = [entry[0] for entry in (self.pending.get(rid) for rid in rids) if entry]
        try:
            bls.start_call(api, bls.kernel_request(wire), outer, respond)
        except Exception as exc:
            self.post((protocol.BLS_RESPONSE, call, True, bls.error_response(_message(exc))))

    def _on_model_control(self, message: tuple) -> None:
        """load / unload / ready from the model, on a thread of its own (a load takes time,
        and this thread must keep reading the model's events)."""
        from . import bls

        _, call, operation, args = message
        api = getattr(self.services, "api", None)
        threading.Thread(
            target=self._answer,
            args=(call, bls.model_control, api, operation, *args),
            name="nereid-python-model-control",
            daemon=True,
        ).start()

    def _on_ready_state(self, message: tuple) -> None:
        self.ready = bool(message[2])
        self._probe_sent = 0.0

    # -- sends that must not block ---------------------------------------------------------------

    def post(self, message: tuple) -> None:
        """Send on the events channel from a thread that must not block (the event loop)."""
        outbox = self._outbox
        if outbox is None:
            with self._outbox_lock:
                outbox = self._outbox
                if outbox is None:
                    outbox = self._outbox = queue.SimpleQueue()
                    threading.Thread(
                        target=self._write, args=(outbox,), name="nereid-python-post", daemon=True
                    ).start()
        outbox.put(message)

    def _write(self, outbox: queue.SimpleQueue) -> None:
        while True:
            message = outbox.get()
            if message is None:
                return
            try:
                self.events.send(message)
            except OSError:
                return

    def probe_ready(self) -> bool:
        """The last known readiness; asks the process for a fresh answer (not waited for). A
        process that has not answered a probe for the stub timeout counts as not ready."""
        if self.dead:
            return False
        sent = self._probe_sent
        now = time.monotonic()
        if sent:
            if now - sent > self.settings.stub_timeout:
                return False
        else:
            self._probe_sent = now
            self.post((protocol.READY_PROBE, next(self._probes)))
        return self.ready

    # -- the end ---------------------------------------------------------------------------------

    def kill(self, reason: str) -> None:
        if not self.kill_reason:
            self.kill_reason = reason
        try:
            self.proc.kill()
        except OSError:
            pass

    def _exit_reason(self) -> str:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return "the model process stopped answering and was killed"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"the model process was killed by {name}"
        return f"the model process exited with code {code}"

    def _died(self) -> None:
        """The process is gone (or must go): fail what it held, clean up, tell the host.
        Whoever comes second waits until the requests are failed."""
        with self._death_lock:
            if self.dead:
                return
            self.dead = True
            self.ready = False
            if self.closing:
                reason = "the model instance was unloaded"
            else:
                reason = self.kill_reason or self._exit_reason()
            self.death_reason = reason
            self.kill(reason)
            entries = list(self.pending.values())
            self.pending.clear()
            self.running.clear()
            if entries:
                if self.closing:
                    error: NereidError = errors.UnavailableError(
                        f"model instance '{self.name}' was unloaded before answering"
                    )
                else:
                    error = InternalError(
                        f"Failed to process the request(s) for model '{self.name}', message: "
                        f"Stub process '{self.name}' is not healthy: {reason}"
                    )
                for entry in entries:
                    entry[0].fail(error)
        self.control.shutdown()
        self.events.shutdown()
        if self._outbox is not None:
            self._outbox.put(None)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        shm.sweep(self.settings.shm_dir, self.prefix)
        if not self.closing:
            log.error("model instance '%s': stub process is not healthy: %s", self.name, reason)
            callback = self.on_death
            if callback is not None:
                callback(self)

    def finalize(self) -> None:
        """Call the model's ``finalize`` in the process, let it exit, release everything."""
        if not self.dead:
            self.flush()
        self.closing = True
        if not self.dead:
            try:
                self.control.send((protocol.FINALIZE,))
                self._reply(self.settings.stub_timeout, "finalize")
            except NereidError as exc:
                log.error("model instance '%s': %s", self.name, exc.message)
            except OSError:
                pass
            try:
                self.proc.wait(timeout=self.settings.stub_timeout)
            except subprocess.TimeoutExpired:
                self.kill("finalize")
        self.stop()

    def stop(self) -> None:
        """End the process now (no ``finalize``) and release everything."""
        self.closing = True
        self.kill("stopped")
        self._died()
        self.control.close()
        self.events.close()
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=5)
        self.inputs.close()
        self.outputs.close()
        shm.sweep(self.settings.shm_dir, self.prefix)


class _Canceller:
    """A kernel request's cancel callback: tell the model process (without blocking)."""

    __slots__ = ("rid", "worker")

    def __init__(self, worker: WorkerProcess, rid: int) -> None:
        self.worker = worker
        self.rid = rid

    def __call__(self) -> None:
        worker = self.worker
        if not worker.dead:
            worker.post((protocol.CANCEL, self.rid))


def _level() -> int:
    """The level model processes log at: the server's for ``nereid.python``."""
    return log.getEffectiveLevel()


class ProcessHost(InstanceHost):
    """A model instance in a process of its own; restarted when the process dies."""

    def __init__(
        self,
        model: Any,
        args: dict[str, str],
        *,
        decoupled: bool,
        services: runtime.Services,
    ) -> None:
        self.model = model
        self.args = args
        self.name = args["model_instance_name"]
        self.decoupled = decoupled
        self.services = services
        self.worker: WorkerProcess | None = None
        self.finalized = False
        self._lock = threading.Lock()
        self._restart: _Restart | None = None

    def start(self) -> None:
        worker = self.model.take_worker()
        try:
            worker.initialize(self.args, self.decoupled, self.services)
        except BaseException:
            worker.stop()
            raise
        worker.on_death = self._on_death
        self.worker = worker

    # -- restarts ----------------------------------------------------------------------------

    def _on_death(self, worker: WorkerProcess) -> None:
        with self._lock:
            if self.finalized or worker is not self.worker or self._restart is not None:
                return
            self._restart = _Restart(self)

    def _restarted(self, restart: _Restart, worker: WorkerProcess | None) -> None:
        old = None
        with self._lock:
            if self._restart is restart:
                self._restart = None
            if worker is not None and not self.finalized:
                old, self.worker = self.worker, worker
                worker.on_death = self._on_death
                worker = None
        if worker is not None:  # finalized meanwhile
            worker.stop()
        if old is not None:
            old.stop()

    def _live_worker(self) -> WorkerProcess:
        """The live process; waits for a restart under way (starts one if none is)."""
        worker = self.worker
        if worker is not None and not worker.dead:
            return worker
        with self._lock:
            restart = self._restart
            if restart is None:
                restart = self._restart = _Restart(self)
        restart.done.wait()
        worker = self.worker
        if restart.error is not None or worker is None or worker.dead:
            raise InternalError(
                f"Failed to process the request(s) for model '{self.name}', message: "
                f"Stub process '{self.name}' is not healthy: {restart.error or 'restart failed'}"
            )
        return worker

    # -- the instance --------------------------------------------------------------------------

    def execute(self, requests: list[InferenceRequest]) -> None:
        worker = self.worker
        if worker is None or worker.dead:
            worker = self._live_worker()
        worker.execute(requests)

    def flush(self) -> None:
        worker = self.worker
        if worker is not None and not worker.dead:
            worker.flush()

    def is_ready(self) -> bool:
        worker = self.worker
        if worker is None or worker.dead or self._restart is not None:
            return False
        return worker.probe_ready()

    def finalize(self) -> None:
        with self._lock:
            self.finalized = True
            restart = self._restart
        if restart is not None:
            restart.done.wait()
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.finalize()


class _Restart:
    """A new process for a host, started and initialized on a thread of its own."""

    def __init__(self, host: ProcessHost) -> None:
        self.host = host
        self.error: str | None = None
        self.done = threading.Event()
        threading.Thread(
            target=self._run, name=f"nereid-python-restart-{host.name}", daemon=True
        ).start()

    def _run(self) -> None:
        host = self.host
        log.warning("model instance '%s': starting a new stub process", host.name)
        worker = None
        try:
            worker = host.model.new_worker()
            worker.initialize(host.args, host.decoupled, host.services)
        except Exception as exc:
            self.error = f"restart failed: {_message(exc)}"
            log.error("model instance '%s': %s", host.name, self.error)
            if worker is not None:
                worker.stop()
            worker = None
        else:
            log.info("model instance '%s': stub process restarted (pid %d)", host.name, worker.pid)
        host._restarted(self, worker)
        self.done.set()


__all__ = ["ErrorKind", "ProcessHost", "ProcessSettings", "WorkerProcess"]
