"""The kernel's backend contract suite, on Triton's add/sub model."""

from __future__ import annotations

import numpy as np
import pytest
from nereid.testing.contracts import BackendContract, ContractModel
from onnx_models import add_sub, add_sub_config


class TestOnnxRuntimeContract(BackendContract):
    @pytest.fixture
    def contract_model(self, model_repository):
        model_repository.add("simple", add_sub_config(), versions={1: {"model.onnx": add_sub()}})
        a = np.arange(32, dtype=np.int32).reshape(2, 16)
        b = np.ones((2, 16), np.int32)
        return ContractModel(
            "simple",
            inputs={"INPUT0": a, "INPUT1": b},
            expected={"OUTPUT0": a + b, "OUTPUT1": a - b},
        )
