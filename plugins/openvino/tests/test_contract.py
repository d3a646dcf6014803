"""The kernel's backend contract suite, on the MLP converted to IR."""

from __future__ import annotations

import numpy as np
import pytest
from nereid.testing.contracts import BackendContract, ContractModel
from ov_models import MLP_CONFIG, MLP_SIZES, mlp_files, mlp_reference


class TestOpenVINOContract(BackendContract):
    @pytest.fixture
    def contract_model(self, model_repository):
        model_repository.add("mlp", MLP_CONFIG, versions={1: mlp_files()})
        x = np.random.default_rng(3).standard_normal((2, MLP_SIZES[0])).astype(np.float32)
        return ContractModel("mlp", inputs={"X": x}, expected={"Y": mlp_reference(x)}, rtol=1e-4)
