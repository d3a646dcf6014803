"""Missing or wrong parameters, configs that contradict the model, unreadable files: the load
fails with a message that says which."""

from __future__ import annotations

import fil_models as fm
import pytest
from nereid.errors import InvalidArgumentError
from nereid_fil.params import parse


def _index(server):
    return {m["name"]: m for m in server.api.repository_index()}


@pytest.fixture
def xgb_json(tmp_path) -> bytes:
    return fm.save_xgboost(fm.xgb_classifier(), tmp_path / "xgboost.json")


def _without(text: str, key: str) -> str:
    return "\n".join(line for line in text.splitlines() if f'"{key}"' not in line)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            _without(fm.fil_config("xgboost_json", classifier=True), "model_type"),
            "parameter 'model_type' of model 'bad' is required",
        ),
        (
            fm.fil_config("xgboost_bin", classifier=True),
            "parameter 'model_type' of model 'bad' is 'xgboost_bin'",
        ),
        (
            _without(fm.fil_config("xgboost_json", classifier=True), "output_class"),
            "parameter 'output_class' (or 'is_classifier') of model 'bad' is required",
        ),
        (
            fm.fil_config("xgboost_json", classifier=True).replace(
                '"output_class" value: { string_value: "true"',
                '"output_class" value: { string_value: "maybe"',
            ),
            "parameter 'output_class' must be true or false, got 'maybe'",
        ),
        (
            fm.fil_config(
                "xgboost_json",
                classifier=True,
                extra_params=(', { key: "threshold" value: { string_value: "high" } }'),
            ),
            "parameter 'threshold' of model 'bad' must be a number",
        ),
        (
            fm.fil_config("xgboost_json", classifier=False, predict_proba=True),
            "parameter 'predict_proba' of model 'bad' is true but 'output_class' is false",
        ),
        (
            fm.fil_config("xgboost_json", classifier=True, features=5),
            "'input__0' has dims [5], expected [ 6 ]: the model has 6 features",
        ),
        (
            fm.fil_config("xgboost_json", classifier=True, predict_proba=True, width=1),
            "'output__0' has dims [1], expected [ 2 ]: predict_proba gives 2 class",
        ),
        (
            fm.fil_config("xgboost_json", classifier=True, output_name="OUTPUT__0"),
            "exactly one output named 'output__0' (lowercase)",
        ),
        (
            fm.fil_config("xgboost_json", classifier=True).replace(
                "kind: KIND_CPU", "kind: KIND_GPU"
            ),
            "KIND_GPU instances need cuML's GPU FIL",
        ),
        (
            fm.fil_config("lightgbm", classifier=True),
            "unable to find",
        ),
    ],
    ids=[
        "no-model-type",
        "bad-model-type",
        "no-output-class",
        "bad-bool",
        "bad-threshold",
        "proba-regressor",
        "feature-count",
        "proba-width",
        "output-name",
        "gpu",
        "no-file",
    ],
)
async def test_bad_config_fails_load(start_server, model_repository, xgb_json, config, message):
    model_repository.add("bad", config, versions={1: {"xgboost.json": xgb_json}})
    server = await start_server(exit_on_error=False)
    assert not server.api.model_ready("bad")
    reason = _index(server)["bad"]["reason"]
    assert message in reason, reason


@pytest.mark.parametrize(
    ("model_type", "filename", "blob"),
    [
        ("xgboost_json", "xgboost.json", b'{"learner": 1'),
        ("xgboost_ubj", "xgboost.ubj", b"not ubjson at all"),
        ("xgboost", "xgboost.model", b"\x00\x01garbage"),
        ("lightgbm", "model.txt", b"tree\nnonsense\n"),
        ("treelite_checkpoint", "checkpoint.tl", b"\x00" * 16),
    ],
)
async def test_unreadable_file_fails_load(
    start_server, model_repository, model_type, filename, blob
):
    model_repository.add(
        "corrupt", fm.fil_config(model_type, classifier=False), versions={1: {filename: blob}}
    )
    server = await start_server(exit_on_error=False)
    assert not server.api.model_ready("corrupt")
    reason = _index(server)["corrupt"]["reason"]
    assert "cannot read" in reason and f"as model_type '{model_type}'" in reason, reason


def test_parse_names_and_aliases():
    params = parse({"model_type": "lightgbm", "is_classifier": "True", "threads": "3"})
    assert params.is_classifier and params.nthread == 3 and params.default_filename == "model.txt"
    assert parse({"model_type": "xgboost", "output_class": "false"}).nthread == -1
    with pytest.raises(InvalidArgumentError, match="disagree"):
        parse({"model_type": "xgboost", "output_class": "false", "is_classifier": "true"})
    with pytest.raises(InvalidArgumentError, match="'cpu_nthread' must be an integer"):
        parse({"model_type": "xgboost", "output_class": "false", "cpu_nthread": "many"})


def test_gpu_only_parameters_are_logged_and_ignored(caplog):
    caplog.set_level("INFO", logger="nereid.fil")
    parse(
        {
            "model_type": "xgboost",
            "output_class": "false",
            "algo": "ALGO_AUTO",
            "storage_type": "AUTO",
            "threads_per_tree": "1",
            "blocks_per_sm": "0",
            "use_experimental_optimizations": "true",
        },
        "m",
    )
    assert "ignoring GPU FIL parameters algo, blocks_per_sm, storage_type" in caplog.text
