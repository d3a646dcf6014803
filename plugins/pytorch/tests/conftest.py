"""The pytorch backend's tests: models are traced, scripted or exported in torch_models.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="torch is not installed (pip install torch)")

sys.path.insert(0, str(Path(__file__).parent))
