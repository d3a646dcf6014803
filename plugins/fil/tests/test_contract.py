"""The kernel's backend contract suite, on a LightGBM regressor."""

from __future__ import annotations

import fil_models as fm
import pytest
from nereid.testing.contracts import BackendContract, ContractModel


class TestFilContract(BackendContract):
    @pytest.fixture
    def contract_model(self, model_repository, tmp_path):
        blob = fm.save_lightgbm(fm.lgb_regressor(), tmp_path / "model.txt")
        model_repository.add(
            "forest",
            fm.fil_config("lightgbm", classifier=False),
            versions={1: {"model.txt": blob}},
        )
        x = fm.samples(2)
        return ContractModel(
            "forest",
            inputs={"input__0": x},
            expected={"output__0": fm.lgb_regressor().predict(x).reshape(-1, 1).astype("f4")},
        )
