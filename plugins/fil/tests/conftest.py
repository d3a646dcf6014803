"""The FIL backend's tests: each trains small real models (fil_models.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("treelite", reason="treelite is not installed")
pytest.importorskip("xgboost", reason="the tests train with xgboost (pip install xgboost-cpu)")
pytest.importorskip("lightgbm", reason="the tests train with lightgbm")
pytest.importorskip("sklearn", reason="the tests train with scikit-learn")

sys.path.insert(0, str(Path(__file__).parent))
