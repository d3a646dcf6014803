"""The openvino backend's tests: models are built with onnx.helper and converted to IR with
openvino in the tests (ov_models.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino", reason="openvino is not installed")
pytest.importorskip("onnx", reason="the tests build their models with onnx (pip install onnx)")

sys.path.insert(0, str(Path(__file__).parent))
