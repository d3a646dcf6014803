"""Contract suites that a third-party backend or scheduler package runs against itself.

Subclass one in your tests and provide the fixture it names::

    from nereid.testing.contracts import BackendContract, ContractModel

    class TestMyBackend(BackendContract):
        @pytest.fixture
        def contract_model(self, model_repository):
            model_repository.add("m", CONFIG, versions={1: {"model.bin": DATA}})
            return ContractModel("m", inputs={"X": x}, expected={"Y": y})

The suites only use the public API, so what passes here works behind every frontend.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from ..errors import CancelledError, NereidError
from . import make_request, settle


@dataclass
class ContractModel:
    """A model written into the ``model_repository`` fixture, a sample and its answer."""

    name: str
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    server_options: dict[str, Any] = field(default_factory=dict)
    rtol: float = 1e-5


def _check(response, expected: dict[str, np.ndarray], rtol: float) -> None:
    for name, want in expected.items():
        got = response.as_numpy(name)
        if want.dtype == object:
            assert list(got.reshape(-1)) == list(want.reshape(-1)), name
        else:
            np.testing.assert_allclose(got, want, rtol=rtol, err_msg=name)


class BackendContract:
    """What every backend must do: load, answer, describe itself, batch, fail cleanly."""

    @pytest.fixture
    def contract_model(self) -> ContractModel:
        raise NotImplementedError("provide a contract_model fixture")

    async def test_model_is_ready(self, start_server, contract_model):
        server = await start_server(**contract_model.server_options)
        assert server.api.model_ready(contract_model.name)

    async def test_infer_matches_expected(self, start_server, contract_model):
        server = await start_server(**contract_model.server_options)
        request = make_request(contract_model.name, contract_model.inputs)
        response = await server.api.infer(request).single()
        _check(response, contract_model.expected, contract_model.rtol)

    async def test_metadata_lists_config_tensors(self, start_server, contract_model):
        server = await start_server(**contract_model.server_options)
        metadata = server.api.model_metadata(contract_model.name)
        config = server.api.model_config(contract_model.name)
        assert [t["name"] for t in metadata["inputs"]] == [t.name for t in config.input]
        assert [t["name"] for t in metadata["outputs"]] == [t.name for t in config.output]

    async def test_concurrent_requests_all_answered(self, start_server, contract_model):
        server = await start_server(**contract_model.server_options)
        streams = [
            server.api.infer(make_request(contract_model.name, contract_model.inputs))
            for _ in range(8)
        ]
        for response in await asyncio.gather(*(s.single() for s in streams)):
            _check(response, contract_model.expected, contract_model.rtol)

    async def test_invalid_input_is_rejected_not_executed(self, start_server, contract_model):
        server = await start_server(**contract_model.server_options)
        bad = dict(contract_model.inputs)
        bad["__no_such_input__"] = np.zeros(1, np.float32)
        with pytest.raises(NereidError) as info:
            server.api.infer(make_request(contract_model.name, bad))
        assert "unexpected inference input" in info.value.message


class SchedulerContract:
    """What every instance-pulling scheduler must do, checked on a model that uses it.

    The fixture ``contract_model`` must name a model with one instance whose execution takes
    ``execute_delay_s`` seconds or more (the identity backend's ``execute_delay_ms`` parameter
    does that), so that requests are still queued while the first executes.
    """

    execute_delay_s: float = 0.2

    @pytest.fixture
    def contract_model(self) -> ContractModel:
        raise NotImplementedError("provide a contract_model fixture")

    async def test_every_request_answered_once(self, start_server, contract_model):
        server = await start_server(**contract_model.server_options)
        streams = [
            server.api.infer(make_request(contract_model.name, contract_model.inputs))
            for _ in range(5)
        ]
        for stream in streams:
            responses = await stream.collect()
            assert [r.final for r in responses] == [True]
            _check(responses[0], contract_model.expected, contract_model.rtol)

    async def test_cancelled_while_queued_never_executes(self, start_server, contract_model):
        server = await start_server(**contract_model.server_options)
        first = server.api.infer(make_request(contract_model.name, contract_model.inputs))
        second = server.api.infer(make_request(contract_model.name, contract_model.inputs))
        await asyncio.sleep(self.execute_delay_s / 4)
        second.cancel()
        with pytest.raises(CancelledError):
            await second.single()
        await first.single()
        await settle()  # statistics are recorded as the batch completes, just after responses
        stats = server.api.model_statistics(contract_model.name)[0]
        assert stats["inference_stats"]["fail"]["count"] == 1
        assert stats["execution_count"] == 1

    async def test_stop_answers_queued_requests(self, start_server, contract_model):
        server = await start_server(**contract_model.server_options)
        streams = [
            server.api.infer(make_request(contract_model.name, contract_model.inputs))
            for _ in range(3)
        ]
        await server.repository.unload(contract_model.name)
        for stream in streams:
            responses = await stream.collect()
            assert responses and responses[-1].final
