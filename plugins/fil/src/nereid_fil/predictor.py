"""The predictor seam: what the backend needs from a forest inference engine.

:class:`GtilPredictor` runs treelite's GTIL (``treelite.gtil.predict``) on the CPU; it is the
only implementation here. cuML's GPU FIL is not installable in this environment; a GPU predictor
would implement :class:`Predictor` over ``cuml.fil`` (loading the same treelite model) and be
returned by :func:`predictor_for` for ``KIND_GPU`` instances.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from nereid.errors import InvalidArgumentError, UnavailableError

from .params import FilParams

log = logging.getLogger("nereid.fil")


class Predictor(Protocol):
    """A loaded forest. ``predict`` returns the model's transformed scores, float32, of shape
    ``(rows, num_outputs)``: one column for a regressor or a binary classifier (the probability
    of class 1), ``num_class`` columns for a multi-class classifier."""

    num_features: int
    num_outputs: int

    def predict(self, x: np.ndarray) -> np.ndarray: ...

    def byte_size(self) -> int: ...


def _treelite() -> Any:
    import treelite
    import treelite.gtil

    return treelite


def _xgboost_format(path: Path) -> str:
    """What an ``xgboost``-type file holds: ``legacy``, ``json`` or ``ubjson`` (XGBoost 2.1+
    writes UBJSON to any file name that does not end in ``.json``)."""
    with path.open("rb") as handle:
        head = handle.read(64)
    if not head.startswith(b"{"):
        return "legacy"
    rest = head[1:].lstrip()
    return "json" if rest[:1] in (b'"', b"}") else "ubjson"


def load_treelite_model(path: Path, params: FilParams, model: str = "") -> Any:
    """The treelite model in ``path``, read as ``params.model_type`` says."""
    tl = _treelite()
    kind = params.model_type
    try:
        if kind == "xgboost":
            found = _xgboost_format(path)
            if found == "legacy":
                return tl.frontend.load_xgboost_model_legacy_binary(str(path))
            log.info(
                "model '%s': '%s' holds XGBoost %s, not the legacy binary format (XGBoost 2.1+ "
                "writes UBJSON unless the name ends in .json); reading it as %s",
                model,
                path.name,
                found.upper(),
                found.upper(),
            )
            return tl.frontend.load_xgboost_model(
                str(path), format_choice=found, allow_unknown_field=params.allow_unknown_field
            )
        if kind in ("xgboost_json", "xgboost_ubj"):
            return tl.frontend.load_xgboost_model(
                str(path),
                format_choice="json" if kind == "xgboost_json" else "ubjson",
                allow_unknown_field=params.allow_unknown_field,
            )
        if kind == "lightgbm":
            return tl.frontend.load_lightgbm_model(str(path))
        return tl.Model.deserialize(str(path))  # treelite_checkpoint
    except (tl.TreeliteError, OSError, ValueError, MemoryError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(
            f"unable to load model '{model}': cannot read '{path}' as model_type '{kind}': "
            f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}"
        ) from None


class GtilPredictor:
    """treelite's GTIL on the CPU. GTIL releases the GIL, so instances run in parallel; the
    treelite model is read-only and shared by every instance of a model."""

    def __init__(self, tl_model: Any, params: FilParams, model: str = "", size: int = 0) -> None:
        self.tl_model = tl_model
        self.nthread = params.nthread
        self._size = size
        header = tl_model.get_header_accessor()
        self.num_features = int(header.get_field("num_feature")[0])
        num_target = int(header.get_field("num_target")[0])
        if num_target != 1:
            raise InvalidArgumentError(
                f"unable to load model '{model}': it has {num_target} targets; the FIL "
                "backend serves single-target models"
            )
        self.num_outputs = int(header.get_field("num_class")[0])
        self._gtil = _treelite().gtil

    def predict(self, x: np.ndarray) -> np.ndarray:
        scores = self._gtil.predict(self.tl_model, x, nthread=self.nthread)
        # (rows, num_target=1, num_class) -> (rows, num_class)
        scores = scores.reshape(scores.shape[0], -1)
        return scores if scores.dtype == np.float32 else scores.astype(np.float32)

    def byte_size(self) -> int:
        return self._size


def predictor_for(kind: str, tl_model: Any, params: FilParams, model: str, size: int) -> Predictor:
    """The predictor for an instance of ``kind`` (``KIND_CPU``; ``KIND_GPU`` would need cuML)."""
    if kind == "KIND_GPU":
        raise UnavailableError(
            f"unable to load model '{model}': KIND_GPU instances need cuML's GPU FIL, which "
            "this FIL backend does not have; use instance_group [ { kind: KIND_CPU } ]"
        )
    return GtilPredictor(tl_model, params, model, size)
