"""The kernel's scheduler contract, run against the dynamic batcher as installed (from its
entry point), plain and with every queue feature switched on."""

from __future__ import annotations

import numpy as np
import pytest
from nereid.testing.contracts import ContractModel, SchedulerContract

SLOW = 'parameters { key: "execute_delay_ms" value: { string_value: "200" } }'


def _model(model_repository, name: str, batching: str) -> ContractModel:
    # max_batch_size 1: the second request must still be queued while the first executes.
    model_repository.identity(
        name, dims="[ 2 ]", max_batch_size=1, extra=f"dynamic_batching {{ {batching} }} {SLOW}"
    )
    x = np.ones((1, 2), np.float32)
    return ContractModel(name, {"INPUT0": x}, {"OUTPUT0": x})


class TestDynamicBatcherContract(SchedulerContract):
    @pytest.fixture
    def contract_model(self, model_repository):
        return _model(model_repository, "dyn", "")


class TestDynamicBatcherWithQueueFeaturesContract(SchedulerContract):
    @pytest.fixture
    def contract_model(self, model_repository):
        return _model(
            model_repository,
            "dyn_features",
            """max_queue_delay_microseconds: 1000 preserve_ordering: true
            priority_levels: 2 default_priority_level: 2
            default_queue_policy { default_timeout_microseconds: 60000000
                                   allow_timeout_override: true max_queue_size: 100 }""",
        )


def test_registered_from_the_entry_point():
    from nereid.plugins import PluginSettings, PluginSystem

    system = PluginSystem(PluginSettings())
    system.load_entry_points()
    system.collect_registrations()
    entry = system.registries["scheduler"].get("dynamic")
    assert entry.distribution == "nereid-dynamic-batcher"
    assert entry.target == "nereid_dynamic_batcher.scheduler:DynamicBatcher"
