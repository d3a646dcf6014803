"""The kernel's backend contract suite, run against an add_sub Python model."""

from __future__ import annotations

import numpy as np
import pytest
from nereid.testing.contracts import BackendContract, ContractModel
from python_backend_models import ADD_SUB_SOURCE, add_sub_config


class TestPythonBackendContract(BackendContract):
    @pytest.fixture
    def contract_model(self, model_repository) -> ContractModel:
        model_repository.add(
            "add_sub", add_sub_config(), versions={1: {"model.py": ADD_SUB_SOURCE}}
        )
        a = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
        b = np.array([0.5, 0.5, 0.5, 0.5], np.float32)
        return ContractModel(
            "add_sub",
            inputs={"INPUT0": a, "INPUT1": b},
            expected={"OUTPUT0": a + b, "OUTPUT1": a - b},
        )
