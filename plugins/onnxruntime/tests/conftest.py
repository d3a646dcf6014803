"""The onnxruntime backend's tests: models are built with onnx.helper (onnx_models.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("onnx", reason="the tests build their models with onnx (pip install onnx)")

sys.path.insert(0, str(Path(__file__).parent))
