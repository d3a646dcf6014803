"""The in-process API: a server on a background event loop, called with numpy arrays.

For Python programs that want models without a network hop::

    with InProcessServer("models/") as server:
        outputs = server.infer("simple", {"INPUT0": a, "INPUT1": b})
        for outputs in server.stream("repeat", {"IN": values}):
            ...
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .server import Server
from .types import DataType, InferenceRequest, InferenceResponse, Tensor

_END = object()


def _request(
    model: str, inputs: Mapping[str, Any], version: int, **kwargs: Any
) -> InferenceRequest:
    tensors = []
    for name, value in inputs.items():
        if isinstance(value, Tensor):
            tensors.append(value)
            continue
        array = np.asarray(value)
        if array.dtype.kind in "SU":
            array = np.array(
                [s.encode() if isinstance(s, str) else s for s in array.reshape(-1)], dtype=object
            ).reshape(array.shape)
        tensors.append(Tensor(name, array))
    return InferenceRequest(model, tensors, model_version=version, **kwargs)


def _arrays(response: InferenceResponse) -> dict[str, np.ndarray]:
    if response.error is not None:
        raise response.error
    return {t.name: t.data for t in response.outputs}


class InProcessServer:
    """A :class:`Server` running on its own event-loop thread."""

    def __init__(self, model_repository: str | list[str], **options: Any) -> None:
        self._options = options
        self._repository = model_repository
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="nereid-loop"
        )
        self.server: Server | None = None

    def start(self) -> InProcessServer:
        self._thread.start()
        self.server = self._call(self._start())
        return self

    async def _start(self) -> Server:
        server = Server(self._repository, **self._options)
        await server.start()
        return server

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def stop(self) -> None:
        if self.server is not None:
            self._call(self.server.stop())
            self.server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> InProcessServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api(self):
        return self.server.api

    def infer(
        self, model: str, inputs: Mapping[str, Any], version: int = -1, **kwargs: Any
    ) -> dict[str, np.ndarray]:
        """Outputs by name for one request (an error is raised)."""

        async def run() -> InferenceResponse:
            return await self.server.api.infer(_request(model, inputs, version, **kwargs)).single()

        return _arrays(self._call(run()))

    def stream(
        self, model: str, inputs: Mapping[str, Any], version: int = -1, **kwargs: Any
    ) -> Iterator[dict[str, np.ndarray]]:
        """Each response of a decoupled model as it arrives (a final flag alone yields
        nothing)."""
        items: queue.Queue = queue.Queue()

        async def run() -> None:
            try:
                async for response in self.server.api.infer(
                    _request(model, inputs, version, **kwargs)
                ):
                    if not response.empty:
                        items.put(response)
            except Exception as exc:
                items.put(exc)
            items.put(_END)

        asyncio.run_coroutine_threadsafe(run(), self._loop)
        while (item := items.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield _arrays(item)


__all__ = ["DataType", "InProcessServer"]
