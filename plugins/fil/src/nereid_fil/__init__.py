"""Nereid's FIL backend: tree ensembles (XGBoost, LightGBM, scikit-learn, treelite) served as
Triton's FIL backend serves them, on treelite's GTIL predictor (CPU).

Importing this package imports neither treelite nor the backend module; the kernel imports
:mod:`nereid_fil.backend` when the first ``backend: "fil"`` model loads.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
