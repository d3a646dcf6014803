"""Real XGBoost, LightGBM and scikit-learn models served through the kernel, in every format,
against the training library's own predictions."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import fil_models as fm
import numpy as np
import pytest
from nereid.testing import make_request
from nereid_fil.params import MODEL_FILENAMES

HAVE_DYNAMIC = importlib.util.find_spec("nereid_dynamic_batcher") is not None


TRAINED = {
    "xgb_classifier": (fm.xgb_classifier, fm.save_xgboost),
    "xgb_multiclass": (fm.xgb_multiclass, fm.save_xgboost),
    "xgb_regressor": (fm.xgb_regressor, fm.save_xgboost),
    "lgb_classifier": (fm.lgb_classifier, fm.save_lightgbm),
    "lgb_regressor": (fm.lgb_regressor, fm.save_lightgbm),
    "rf_classifier": (fm.rf_classifier, fm.save_sklearn),
    "rf_regressor": (fm.rf_regressor, fm.save_sklearn),
}

# name: (trained model, model_type, what output__0 holds, its width, tolerance)
CASES = {
    "xgb_json_proba": ("xgb_classifier", "xgboost_json", "proba", 2, 1e-6),
    "xgb_ubj_labels": ("xgb_classifier", "xgboost_ubj", "labels", 1, 0),
    "xgb_multiclass_proba": ("xgb_multiclass", "xgboost_json", "proba", 3, 1e-6),
    "xgb_multiclass_labels": ("xgb_multiclass", "xgboost_ubj", "labels", 1, 0),
    "xgb_regressor_json": ("xgb_regressor", "xgboost_json", "regress", 1, 1e-5),
    # XGBoost 2.1+ writes UBJSON to "xgboost.model": model_type xgboost still reads it.
    "xgb_regressor_model_type_xgboost": ("xgb_regressor", "xgboost", "regress", 1, 1e-5),
    "lgb_classifier_proba": ("lgb_classifier", "lightgbm", "proba", 2, 1e-5),
    "lgb_classifier_labels": ("lgb_classifier", "lightgbm", "labels", 1, 0),
    "lgb_regressor": ("lgb_regressor", "lightgbm", "regress", 1, 1e-5),
    "rf_classifier_proba": ("rf_classifier", "treelite_checkpoint", "proba", 3, 1e-6),
    "rf_classifier_labels": ("rf_classifier", "treelite_checkpoint", "labels", 1, 0),
    "rf_regressor": ("rf_regressor", "treelite_checkpoint", "regress", 1, 1e-5),
}


def reference(name: str, x: np.ndarray) -> np.ndarray:
    """What the training library says ``output__0`` should be."""
    trained, _, kind, _, _ = CASES[name]
    model = TRAINED[trained][0]()
    if kind == "proba":
        return model.predict_proba(x)
    return model.predict(x).reshape(-1, 1)


def add_case(repository, name: str, tmp_path: Path, **config_options) -> None:
    trained, model_type, kind, width, _ = CASES[name]
    model, save = TRAINED[trained]
    filename = MODEL_FILENAMES[model_type]
    blob = save(model(), tmp_path / name / filename)
    text = fm.fil_config(
        model_type,
        classifier=kind != "regress",
        predict_proba=kind == "proba",
        width=width,
        **config_options,
    )
    repository.add(name, text, versions={1: {filename: blob}})


@pytest.mark.parametrize("name", list(CASES))
async def test_predictions_match_training_library(start_server, model_repository, tmp_path, name):
    add_case(model_repository, name, tmp_path)
    server = await start_server()
    x = fm.samples(32)
    response = await server.api.infer(make_request(name, {"input__0": x})).single()
    got = response.as_numpy("output__0")
    want = reference(name, x)
    tolerance = CASES[name][4]
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


def test_xgboost_cannot_write_legacy_binary(tmp_path):
    """What the ``xgboost`` model_type meets today: xgboost-cpu 3.x writes UBJSON even to a
    ``.model`` name (the legacy binary writer is gone), so the test above serves that file."""
    blob = fm.save_xgboost(fm.xgb_regressor(), tmp_path / "xgboost.model")
    assert blob.startswith(b"{") and blob[1:2] != b'"'


@pytest.mark.skipif(not HAVE_DYNAMIC, reason="nereid-dynamic-batcher is not installed")
async def test_dynamic_batching_several_instances(start_server, model_repository, tmp_path):
    add_case(
        model_repository,
        "xgb_json_proba",
        tmp_path,
        instances=2,
        extra="dynamic_batching { max_queue_delay_microseconds: 20000 }",
    )
    server = await start_server()
    rows = [1, 3, 5, 2, 8, 1, 4, 7] * 3
    inputs = [fm.samples(n, seed=i) for i, n in enumerate(rows)]
    streams = [server.api.infer(make_request("xgb_json_proba", {"input__0": x})) for x in inputs]
    responses = await asyncio.gather(*(s.single() for s in streams))
    for x, response in zip(inputs, responses, strict=True):
        np.testing.assert_allclose(
            response.as_numpy("output__0"), fm.xgb_classifier().predict_proba(x), atol=1e-6
        )
    stats = server.api.model_statistics("xgb_json_proba")[0]
    assert stats["inference_count"] == sum(rows)
    assert stats["execution_count"] < len(rows)  # requests were batched


async def test_auto_complete_fills_input_and_output(start_server, model_repository, tmp_path):
    blob = fm.save_lightgbm(fm.lgb_classifier(), tmp_path / "model.txt")
    model_repository.add(
        "auto",
        """
backend: "fil"
max_batch_size: 32
parameters [
  { key: "model_type" value: { string_value: "lightgbm" } },
  { key: "is_classifier" value: { string_value: "true" } },
  { key: "predict_proba" value: { string_value: "true" } }
]
""",
        versions={1: {"model.txt": blob}},
    )
    server = await start_server()
    config = server.api.model_config("auto")
    assert [(t.name, list(t.dims)) for t in config.input] == [("input__0", [fm.FEATURES])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("output__0", [2])]
    x = fm.samples(4)
    response = await server.api.infer(make_request("auto", {"input__0": x})).single()
    np.testing.assert_allclose(
        response.as_numpy("output__0"), fm.lgb_classifier().predict_proba(x), atol=1e-5
    )


async def test_threshold_and_default_model_filename(start_server, model_repository, tmp_path):
    blob = fm.save_xgboost(fm.xgb_classifier(), tmp_path / "forest.json")
    text = fm.fil_config(
        "xgboost_json",
        classifier=True,
        extra_params=', { key: "threshold" value: { string_value: "0.8" } }'
        ', { key: "algo" value: { string_value: "TREE_REORG" } }'
        ', { key: "storage_type" value: { string_value: "DENSE" } }',
        extra='default_model_filename: "forest.json"',
    )
    model_repository.add("thr", text, versions={1: {"forest.json": blob}})
    server = await start_server()
    x = fm.samples(64)
    response = await server.api.infer(make_request("thr", {"input__0": x})).single()
    p = fm.xgb_classifier().predict_proba(x)[:, 1:2]
    np.testing.assert_array_equal(response.as_numpy("output__0"), (p > 0.8).astype(np.float32))
