"""The kernel's backend contract suite, on a traced MLP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_models as tm
from nereid.testing.contracts import BackendContract, ContractModel


class TestPyTorchContract(BackendContract):
    @pytest.fixture
    def contract_model(self, model_repository):
        data, module = tm.traced_mlp()
        model_repository.add("mlp", tm.mlp_config(), versions={1: {"model.pt": data}})
        x = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
        with torch.no_grad():
            y = module(torch.from_numpy(x)).numpy()
        return ContractModel("mlp", inputs={"INPUT__0": x}, expected={"OUTPUT__0": y}, rtol=1e-4)
