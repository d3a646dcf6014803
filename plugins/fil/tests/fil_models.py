"""Small real forests trained for the tests, saved in each format the FIL backend reads, and
the config.pbtxt text that serves them."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np

FEATURES = 6


@functools.cache
def data(rows: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features, a regression target, a binary label and a 3-class label."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, FEATURES)).astype(np.float32)
    reg = (x[:, 0] * 2 + x[:, 1] - x[:, 2] * x[:, 3]).astype(np.float32)
    binary = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    multi = (x[:, 0] > 0).astype(np.int32) + (x[:, 2] > 0.5)
    return x, reg, binary, multi


def samples(rows: int = 32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, FEATURES)).astype(np.float32)


@functools.cache
def xgb_classifier():
    import xgboost as xgb

    x, _, binary, _ = data()
    return xgb.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1).fit(x, binary)


@functools.cache
def xgb_multiclass():
    import xgboost as xgb

    x, _, _, multi = data()
    return xgb.XGBClassifier(n_estimators=6, max_depth=3, n_jobs=1).fit(x, multi)


@functools.cache
def xgb_regressor():
    import xgboost as xgb

    x, reg, _, _ = data()
    return xgb.XGBRegressor(n_estimators=8, max_depth=3, n_jobs=1).fit(x, reg)


@functools.cache
def lgb_classifier():
    import lightgbm as lgb

    x, _, binary, _ = data()
    return lgb.LGBMClassifier(n_estimators=8, num_leaves=8, verbose=-1, n_jobs=1).fit(x, binary)


@functools.cache
def lgb_regressor():
    import lightgbm as lgb

    x, reg, _, _ = data()
    return lgb.LGBMRegressor(n_estimators=8, num_leaves=8, verbose=-1, n_jobs=1).fit(x, reg)


@functools.cache
def rf_classifier():
    from sklearn.ensemble import RandomForestClassifier

    x, _, _, multi = data()
    return RandomForestClassifier(n_estimators=6, max_depth=5, random_state=0).fit(x, multi)


@functools.cache
def rf_regressor():
    from sklearn.ensemble import RandomForestRegressor

    x, reg, _, _ = data()
    return RandomForestRegressor(n_estimators=6, max_depth=5, random_state=0).fit(x, reg)


def save_xgboost(model, path: Path) -> bytes:
    """XGBoost's file for ``path``'s name: JSON for ``.json``, UBJSON otherwise (XGBoost 2.1+
    writes UBJSON for ``.ubj`` and for any other name; it no longer writes the legacy binary)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # "Saving model in the UBJSON format as default"
        warnings.simplefilter("ignore", UserWarning)
        model.get_booster().save_model(str(path))
    return path.read_bytes()


def save_lightgbm(model, path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    model.booster_.save_model(str(path))
    return path.read_bytes()


def save_sklearn(model, path: Path) -> bytes:
    """A scikit-learn forest as a treelite checkpoint (how Triton's FIL backend serves them)."""
    import treelite

    path.parent.mkdir(parents=True, exist_ok=True)
    treelite.sklearn.import_model(model).serialize(str(path))
    return path.read_bytes()


def fil_config(
    model_type: str,
    *,
    classifier: bool,
    width: int = 1,
    features: int = FEATURES,
    max_batch_size: int = 64,
    extra_params: str = "",
    extra: str = "",
    instances: int = 1,
    predict_proba: bool = False,
    output_name: str = "output__0",
) -> str:
    return f"""
backend: "fil"
max_batch_size: {max_batch_size}
input [ {{ name: "input__0" data_type: TYPE_FP32 dims: [ {features} ] }} ]
output [ {{ name: "{output_name}" data_type: TYPE_FP32 dims: [ {width} ] }} ]
instance_group [ {{ kind: KIND_CPU count: {instances} }} ]
parameters [
  {{ key: "model_type" value: {{ string_value: "{model_type}" }} }},
  {{ key: "output_class" value: {{ string_value: "{str(classifier).lower()}" }} }},
  {{ key: "predict_proba" value: {{ string_value: "{str(predict_proba).lower()}" }} }},
  {{ key: "cpu_nthread" value: {{ string_value: "1" }} }}
  {extra_params}
]
{extra}
"""
