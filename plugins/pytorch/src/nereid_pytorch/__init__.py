"""Nereid's PyTorch backend (``backend: "pytorch"``, ``platform: "pytorch_libtorch"``).

Importing this package imports nothing heavy; ``nereid_pytorch.backend`` imports torch and is
loaded by the kernel when the first PyTorch model loads.
"""

from __future__ import annotations

__all__: list[str] = []
