"""Test facilities for Nereid and its plugins: a controllable clock, a model-repository builder,
request builders, and contract suites (:mod:`nereid.testing.contracts`).

The pytest plugin (:mod:`nereid.testing.plugin`, registered through ``pytest11``) provides the
fixtures ``model_repository``, ``start_server`` and ``manual_clock``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..clock import Clock
from ..types import InferenceRequest, RequestedOutput, Tensor


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
    ) -> Path:
        """An identity model with one input ``INPUT0`` and one output ``OUTPUT0``."""
        return self.add(
            name,
            f"""
            backend: "identity"
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


__all__ = ["ManualClock", "ModelRepositoryBuilder", "make_request", "settle"]
