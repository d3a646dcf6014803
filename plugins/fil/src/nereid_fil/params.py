"""The ``parameters`` of a FIL model's config.pbtxt, read as Triton's FIL backend reads them.

Pure Python (no treelite): the load fails here, before any file is read, on a missing or wrong
parameter, with a message naming it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from nereid.config import boolean_word
from nereid.errors import InvalidArgumentError

log = logging.getLogger("nereid.fil")

# model_type -> the default file name in the version folder (Triton's FIL backend's names).
MODEL_FILENAMES: dict[str, str] = {
    "xgboost": "xgboost.model",
    "xgboost_json": "xgboost.json",
    "xgboost_ubj": "xgboost.ubj",
    "lightgbm": "model.txt",
    "treelite_checkpoint": "checkpoint.tl",
}

# Settings of cuML's GPU FIL (and of Triton's FIL backend's GPU path) that mean nothing to
# treelite's GTIL: accepted, logged once per model, ignored.
GPU_ONLY = frozenset(
    {
        "algo",
        "storage_type",
        "blocks_per_sm",
        "threads_per_tree",
        "use_experimental_optimizations",
        "transfer_threshold",
        "layout",
        "align_bytes",
        "chunk_size",
    }
)

# Read by this backend.
KNOWN = frozenset(
    {
        "model_type",
        "output_class",
        "is_classifier",
        "predict_proba",
        "threshold",
        "cpu_nthread",
        "threads",
        "xgboost_allow_unknown_field",
    }
)


@dataclass(frozen=True)
class FilParams:
    model_type: str
    is_classifier: bool
    predict_proba: bool = False
    threshold: float = 0.5
    threads: int = 0  # 0: every core (treelite's nthread=-1), as Triton's cpu_nthread default
    allow_unknown_field: bool = False

    @property
    def default_filename(self) -> str:
        return MODEL_FILENAMES[self.model_type]

    @property
    def nthread(self) -> int:
        """The ``nthread`` argument of ``treelite.gtil.predict``."""
        return self.threads if self.threads > 0 else -1


def _bool(name: str, value: str) -> bool:
    flag = boolean_word(value.strip())
    if flag is not None:
        return flag
    raise InvalidArgumentError(f"parameter '{name}' must be true or false, got '{value}'")


def parameter_values(config: Any) -> dict[str, str]:
    """``config.parameters`` as a plain ``{key: string_value}``."""
    return {key: param.string_value for key, param in config.parameters.items()}


def parse(values: dict[str, str], model: str = "") -> FilParams:
    """Check and read the parameters; an INVALID_ARG error names the one that is wrong."""
    where = f" of model '{model}'" if model else ""
    model_type = values.get("model_type", "").strip()
    if not model_type:
        raise InvalidArgumentError(
            f"parameter 'model_type'{where} is required: one of {', '.join(MODEL_FILENAMES)}"
        )
    if model_type not in MODEL_FILENAMES:
        raise InvalidArgumentError(
            f"parameter 'model_type'{where} is '{model_type}'; expected one of "
            f"{', '.join(MODEL_FILENAMES)} (scikit-learn forests are served as "
            "treelite_checkpoint files)"
        )
    if "is_classifier" in values and "output_class" in values:
        a = _bool("is_classifier", values["is_classifier"])
        b = _bool("output_class", values["output_class"])
        if a != b:
            raise InvalidArgumentError(
                f"parameters 'output_class' and 'is_classifier'{where} disagree"
            )
    key = "is_classifier" if "is_classifier" in values else "output_class"
    if key not in values:
        raise InvalidArgumentError(
            f"parameter 'output_class' (or 'is_classifier'){where} is required: true for a "
            "classifier, false for a regressor"
        )
    is_classifier = _bool(key, values[key])
    predict_proba = _bool("predict_proba", values.get("predict_proba", "false"))
    if predict_proba and not is_classifier:
        raise InvalidArgumentError(
            f"parameter 'predict_proba'{where} is true but '{key}' is false: probabilities "
            "need a classifier"
        )
    try:
        threshold = float(values.get("threshold", "0.5"))
    except ValueError:
        raise InvalidArgumentError(
            f"parameter 'threshold'{where} must be a number, got '{values['threshold']}'"
        ) from None
    if not 0.0 <= threshold <= 1.0:
        raise InvalidArgumentError(f"parameter 'threshold'{where} must lie in [0, 1]")
    threads = 0
    for name in ("cpu_nthread", "threads"):
        if name in values:
            try:
                threads = int(values[name])
            except ValueError:
                raise InvalidArgumentError(
                    f"parameter '{name}'{where} must be an integer, got '{values[name]}'"
                ) from None
    threads = max(threads, 0)  # -1 or 0: every core
    allow_unknown = _bool(
        "xgboost_allow_unknown_field", values.get("xgboost_allow_unknown_field", "false")
    )
    ignored = sorted(k for k in values if k in GPU_ONLY)
    if ignored:
        log.info(
            "model '%s': ignoring GPU FIL parameters %s (treelite's CPU GTIL predictor has "
            "no such setting)",
            model,
            ", ".join(ignored),
        )
    unknown = sorted(k for k in values if k not in KNOWN and k not in GPU_ONLY)
    if unknown:
        log.warning("model '%s': unknown FIL parameters %s ignored", model, ", ".join(unknown))
    return FilParams(
        model_type=model_type,
        is_classifier=is_classifier,
        predict_proba=predict_proba,
        threshold=threshold,
        threads=threads,
        allow_unknown_field=allow_unknown,
    )
