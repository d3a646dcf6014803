"""Test facilities for Nereid and its plugins: a controllable clock, a model-repository builder,
request builders, and contract suites (:mod:`nereid.testing.contracts`).

For the test suites of frontends, schedulers and backends, which would otherwise each repeat them:

- ``DATATYPES``, ``REPEAT_CONFIG``, ``SQUARE_CONFIG``: Triton's datatype names, and configs for
  the kernel's decoupled ``repeat`` and ``square`` test backends (:func:`repeat_config`,
  :func:`square_config`: the same interfaces served by another backend);
- :class:`BackendPlugin`: registers a test backend made of a ``ModelInstance`` factory alone;
- :class:`HoldGate` and :func:`gated_backend_fixtures`: a test backend's instance kept busy
  for as long as a test needs, and the ``recorder``, ``clock``, ``serve`` and ``kit`` fixtures
  around it;
- :func:`answered`: the single response of a stream;
- :func:`free_port`: a free TCP port, for a server that must be given its port;
- :func:`serve_in_process`: an ``InProcessServer`` with frontends on free ports of 127.0.0.1,
  and :func:`frontend_url`: the ``host:port`` of one of them, as tritonclient wants it;
- :func:`serve_process`: ``nereid serve`` in a process of its own, once it is ready;
- :func:`wait_until`: waits (in real time) for a condition, from a test's event loop, and
  :func:`wait_and_settle`: then lets the loop run what the condition's change set going;
- :func:`assert_generated_code_current`: checked-in protobuf modules match regeneration;
- :func:`cyclic_garbage`: the objects of Nereid's types that only the cyclic garbage collector
  would free (a request's objects should go by reference counting once it is answered).

The pytest plugin (:mod:`nereid.testing.plugin`, registered through ``pytest11``) provides the
fixtures ``model_repository``, ``start_server`` and ``manual_clock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import itertools
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..backend import Backend, InstanceSpec, Model, ModelInstance
from ..clock import Clock
from ..config import ModelConfig
from ..hookspecs import hookimpl
from ..types import InferenceRequest, InferenceResponse, RequestedOutput, ResponseStream, Tensor

if TYPE_CHECKING:
    from ..inprocess import InProcessServer

HoldGateT = TypeVar("HoldGateT", bound="HoldGate")

DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
)


def repeat_config(backend: str = "repeat", extra: str = "") -> str:
    """The config of a model with Triton's decoupled ``repeat`` interface (one response per
    element of ``IN``), served by ``backend`` (the kernel's test backend, or e.g. a Python
    model), with ``extra`` config text after it."""
    return f"""
backend: "{backend}"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
input [
  {{ name: "IN" data_type: TYPE_INT32 dims: [ -1 ] }},
  {{ name: "DELAY" data_type: TYPE_UINT32 dims: [ -1 ] }},
  {{ name: "WAIT" data_type: TYPE_UINT32 dims: [ 1 ] }}
]
output [
  {{ name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] }}
]
{extra}"""


REPEAT_CONFIG = repeat_config()


def square_config(backend: str = "square") -> str:
    """The config of a model with Triton's decoupled ``square`` interface (for ``IN`` = n, n
    responses holding n), served by ``backend`` (the kernel's test backend, or e.g. a Python
    model)."""
    return f"""
backend: "{backend}"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
input [ {{ name: "IN" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
"""


SQUARE_CONFIG = square_config()


class ManualClock(Clock):
    """A clock that moves only when :meth:`advance` is called; sleepers wake in time order."""

    def __init__(self, start_ns: int = 1_000_000_000) -> None:
        self._now = start_ns
        self._sleepers: list[tuple[int, int, asyncio.Future]] = []
        self._order = itertools.count()

    def now_ns(self) -> int:
        return self._now

    async def sleep_until(self, deadline_ns: int) -> None:
        if deadline_ns <= self._now:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline_ns, next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper whose deadline has come, and let the woken
        tasks run."""
        target = self._now + int(seconds * 1e9)
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = deadline
            if not future.done():
                future.set_result(None)
            await settle()
        self._now = target
        await settle()

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())


async def settle(rounds: int = 10) -> None:
    """Let ready tasks on the loop run (a few scheduling rounds)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class ModelRepositoryBuilder:
    """Writes model folders (``config.pbtxt`` and version files) into a repository root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def add(
        self,
        name: str,
        config: str | None = None,
        versions: Mapping[int, Mapping[str, bytes | str]] | None = None,
        files: Mapping[str, bytes | str] | None = None,
    ) -> Path:
        """Write a model: ``config`` text, ``versions`` {1: {"model.onnx": bytes}} (an empty
        version folder 1 when not given), extra ``files`` relative to the model folder."""
        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        if config is not None:
            (model_dir / "config.pbtxt").write_text(config)
        for version, contents in (versions or {1: {}}).items():
            version_dir = model_dir / str(version)
            version_dir.mkdir(exist_ok=True)
            for filename, data in contents.items():
                _write(version_dir / filename, data)
        for relative, data in (files or {}).items():
            _write(model_dir / relative, data)
        return model_dir

    def identity(
        self,
        name: str = "identity",
        datatype: str = "TYPE_FP32",
        dims: str = "[ -1 ]",
        max_batch_size: int = 8,
        extra: str = "",
        backend: str = "identity",
    ) -> Path:
        """An identity model with one input ``INPUT0`` and one output ``OUTPUT0``, served by
        ``backend`` (``identity``, or a test backend that answers like it)."""
        return self.add(
            name,
            f"""
            backend: "{backend}"
            max_batch_size: {max_batch_size}
            input [ {{ name: "INPUT0" data_type: {datatype} dims: {dims} }} ]
            output [ {{ name: "OUTPUT0" data_type: {datatype} dims: {dims} }} ]
            {extra}
            """,
        )


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)


def make_request(
    model: str,
    inputs: Mapping[str, Any],
    *,
    outputs: list[str | RequestedOutput] = (),
    **kwargs: Any,
) -> InferenceRequest:
    """A request from numpy arrays (or anything ``np.asarray`` takes) by input name."""
    tensors = [
        value if isinstance(value, Tensor) else Tensor(name, np.asarray(value))
        for name, value in inputs.items()
    ]
    return InferenceRequest(model, tensors, requested_outputs=list(outputs), **kwargs)


async def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait in real time (instance threads run in real time) until ``condition()`` is true;
    fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


async def wait_and_settle(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """:func:`wait_until`, then :func:`settle`: the condition is often an instance thread's
    doing, and what it sets going on the loop should have run before the test looks."""
    await wait_until(condition, timeout)
    await settle()


async def answered(stream: ResponseStream, timeout: float = 5.0) -> InferenceResponse:
    """The single response of ``stream``, its error raised; fails after ``timeout`` seconds
    rather than hang the test."""
    return await asyncio.wait_for(stream.single(), timeout)


class BackendPlugin:
    """A plugin registering the test backend ``name``: every instance of its models is
    ``create_instance(config, spec)``, so a test backend needs no Backend and Model classes."""

    def __init__(
        self, name: str, create_instance: Callable[[ModelConfig, InstanceSpec], ModelInstance]
    ) -> None:
        self.name = name
        self.create_instance = create_instance

    @hookimpl
    def register_backends(self, registry: Any) -> None:
        registry.add(self.name, lambda context: _FactoryBackend(context, self.create_instance))


class _FactoryBackend(Backend):
    def __init__(self, context: Any, create_instance: Callable[..., ModelInstance]) -> None:
        super().__init__(context)
        self.create_instance = create_instance

    def create_model(self, config: ModelConfig, path: Path) -> Model:
        return _FactoryModel(config, self.create_instance)


class _FactoryModel(Model):
    def __init__(self, config: ModelConfig, create_instance: Callable[..., ModelInstance]) -> None:
        self.config = config
        self.make_instance = create_instance

    def create_instance(self, spec: InstanceSpec) -> ModelInstance:
        return self.make_instance(self.config, spec)


class HoldGate:
    """Keeps a test backend's instance busy for as long as a test needs, without real-time
    sleeps: a batch with a request whose ``parameters`` hold ``"hold": True`` waits in
    :meth:`wait_if_held` until the test sets ``gate``; ``holding`` tells that one is waiting.
    A test backend's recorder derives from it."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.holding = threading.Event()

    def wait_if_held(self, requests: Sequence[InferenceRequest]) -> None:
        """Called by an instance's ``execute``: returns at once unless a request asks to be
        held, then once ``gate`` is set (failing after 10 s)."""
        if any(request.parameters.get("hold") for request in requests):
            self.holding.set()
            assert self.gate.wait(10), "the test never opened the gate"


def gated_backend_fixtures(
    new_recorder: Callable[[], HoldGateT],
    plugin: Callable[[HoldGateT], object],
    helpers: Iterable[Callable[..., Any]] = (),
    **values: Any,
) -> tuple[Any, Any, Any, Any]:
    """The ``recorder``, ``clock``, ``serve`` and ``kit`` fixtures of a test suite built on a
    recording test backend, for its conftest: ``recorder, clock, serve, kit =
    gated_backend_fixtures(Recorder, RecorderPlugin, [req, hold])``.

    ``recorder`` is a ``new_recorder()``, ``clock`` a :class:`ManualClock`, and
    ``server = await serve(**options)`` starts a server (``start_server``) with
    ``plugin(recorder)`` and that clock unless ``options`` give another; the recorder's gate is
    opened at teardown, so that no instance is left blocked when the servers stop. ``kit``
    holds the suite's ``helpers`` (functions and classes, by their names) and ``values`` (test
    modules cannot import a conftest under importlib mode), with ``until``
    (:func:`wait_and_settle`) and :func:`answered`."""
    import pytest

    @pytest.fixture
    def recorder() -> HoldGateT:
        return new_recorder()

    @pytest.fixture
    def clock() -> ManualClock:
        return ManualClock()

    @pytest.fixture
    async def serve(
        start_server: Callable[..., Any], recorder: HoldGateT, clock: ManualClock
    ) -> AsyncIterator[Callable[..., Any]]:
        async def start(**options: Any) -> Any:
            options.setdefault("clock", clock)
            return await start_server(plugins=[plugin(recorder)], **options)

        yield start
        recorder.gate.set()

    @pytest.fixture
    def kit() -> SimpleNamespace:
        named = {helper.__name__: helper for helper in helpers}
        return SimpleNamespace(until=wait_and_settle, answered=answered, **named, **values)

    return recorder, clock, serve, kit


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """Yields a list that, when the block ends, holds the objects of ``nereid`` modules
    (kernel and plugins) made unreachable in the block but left in reference cycles.

    A cycle per request costs every request: the collector runs after so many allocations
    survive, and then walks every object the server holds."""
    gc.collect()
    found: list[object] = []
    enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # unreachable objects go to gc.garbage, not freed
    try:
        yield found
        gc.collect()
        found.extend(o for o in gc.garbage if type(o).__module__.startswith("nereid"))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()


@contextlib.contextmanager
def serve_in_process(
    repository: str | Path, frontends: Sequence[str], **options: Any
) -> Iterator[InProcessServer]:
    """An ``InProcessServer`` on ``repository`` with ``frontends``, each listening on a free port
    of 127.0.0.1 unless ``options`` give its ``<frontend>_port`` or ``<frontend>_address``;
    stopped when the block ends."""
    from ..inprocess import InProcessServer

    for frontend in frontends:
        options.setdefault(f"{frontend}_port", 0)
        options.setdefault(f"{frontend}_address", "127.0.0.1")
    with InProcessServer(str(repository), frontends=list(frontends), **options) as server:
        yield server


def frontend_url(server: InProcessServer, frontend: str) -> str:
    """``127.0.0.1:<port>`` of a running server's ``frontend``, as tritonclient wants it."""
    return f"127.0.0.1:{server.server.frontends[frontend].port}"


@contextlib.contextmanager
def serve_process(
    arguments: Sequence[str], log: Path, ready: Callable[[], object], timeout: float = 30.0
) -> Iterator[subprocess.Popen]:
    """``nereid serve`` with ``arguments`` in a process of its own, its output in the file
    ``log``, yielded once ``ready()`` is true (raising counts as not yet) and terminated (killed
    after 15 s) when the block ends. Fails if the process exits first or ``timeout`` passes."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "nereid.cli", "serve", *arguments],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"nereid serve exited early:\n{log.read_text()}")
            with contextlib.suppress(Exception):
                if ready():
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"nereid serve not ready in {timeout} s:\n{log.read_text()}")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def assert_generated_code_current(repo_root: Path, generated: Iterable[str], out: Path) -> None:
    """Regenerate the protobuf modules with ``scripts/gen_protos.py --out out`` and fail if any
    of ``generated`` (paths relative to ``repo_root``) differs from its checked-in copy: the
    generated code is committed, so that installing needs no protobuf compiler. Skips the test
    without grpcio-tools."""
    import pytest

    pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools is needed to regenerate")
    subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "gen_protos.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        cwd=repo_root,
    )
    for rel in generated:
        fresh = (out / rel).read_bytes()
        checked_in = (repo_root / rel).read_bytes()
        assert fresh == checked_in, (
            f"{rel} is out of date with its .proto; run `python scripts/gen_protos.py`"
        )


__all__ = [
    "DATATYPES",
    "REPEAT_CONFIG",
    "SQUARE_CONFIG",
    "BackendPlugin",
    "HoldGate",
    "ManualClock",
    "ModelRepositoryBuilder",
    "answered",
    "assert_generated_code_current",
    "free_port",
    "frontend_url",
    "gated_backend_fixtures",
    "make_request",
    "repeat_config",
    "serve_in_process",
    "serve_process",
    "settle",
    "square_config",
    "wait_and_settle",
    "wait_until",
]
