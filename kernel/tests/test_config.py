"""Model configuration: pbtxt and JSON loading, Triton's defaults, one test per validation rule."""

from __future__ import annotations

import json

import nereid
import pytest
from nereid.config import (
    ConfigError,
    backend_config_from_flags,
    complete_and_validate,
    config_from_json,
    config_to_json,
    parse_pbtxt,
    scheduler_name,
)
from nereid.config.model_config_pb2 import ModelInstanceGroup

BASE = """
name: "m"
backend: "identity"
max_batch_size: 4
input [ { name: "IN" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""


def check(text: str):
    return complete_and_validate(parse_pbtxt(text, "m/config.pbtxt"), "m", "m/config.pbtxt")


def test_valid_pbtxt_gets_triton_defaults():
    config = check(BASE)
    assert config.version_policy.latest.num_versions == 1
    (group,) = config.instance_group
    assert group.name == "m_0" and group.count == 1
    assert group.kind == ModelInstanceGroup.KIND_CPU
    assert scheduler_name(config) == "default"


def test_name_defaults_to_folder():
    config = complete_and_validate(parse_pbtxt(BASE.replace('name: "m"', "")), "folder", "x")
    assert config.name == "folder"


def test_json_round_trip_uses_numbers_and_proto_names():
    config = check(BASE + "dynamic_batching { max_queue_delay_microseconds: 100 }")
    data = config_to_json(config)
    assert data["input"][0]["dims"] == [3]
    assert data["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    assert data["input"][0]["data_type"] == "TYPE_FP32"
    assert config_from_json(json.dumps(data)) == config


def test_scheduler_choice():
    assert scheduler_name(check(BASE + "dynamic_batching { }")) == "dynamic"
    assert scheduler_name(check(BASE + "sequence_batching { }")) == "sequence"
    ensemble = parse_pbtxt(
        'name: "e" platform: "ensemble" max_batch_size: 1 '
        'input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] } ] '
        'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ] '
        'ensemble_scheduling { step [ { model_name: "m" model_version: -1 } ] }'
    )
    complete_and_validate(ensemble, "e", "e")
    assert scheduler_name(ensemble) == "ensemble"
    assert not ensemble.instance_group  # an ensemble has no instances


def test_invalid_json_names_source():
    with pytest.raises(ConfigError, match="override"):
        config_from_json('{"max_batch_size": "many"}', "override")
    with pytest.raises(ConfigError, match="override"):
        config_from_json("{not json", "override")


def test_pbtxt_syntax_error_names_file_and_line():
    with pytest.raises(ConfigError, match=r"m/config.pbtxt: 2:\d+"):
        parse_pbtxt('name: "m"\nmax_batch_sizes: 3\n', "m/config.pbtxt")


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (('name: "m"', 'name: "other"'), "name", "must match the model directory name"),
        (("max_batch_size: 4", "max_batch_size: -1"), "max_batch_size", "must be >= 0"),
        (
            ("", 'input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] } ]'),
            "input",
            "declared twice",
        ),
        (
            ('name: "IN" data_type: TYPE_FP32', 'name: "" data_type: TYPE_FP32'),
            "input",
            "must specify 'name'",
        ),
        (
            ('name: "IN" data_type: TYPE_FP32', 'name: "IN"'),
            "input 'IN'.data_type",
            "must specify 'data_type'",
        ),
        (
            (
                '{ name: "IN" data_type: TYPE_FP32 dims: [ 3 ] }',
                '{ name: "IN" data_type: TYPE_FP32 }',
            ),
            "input 'IN'.dims",
            "must specify 'dims'",
        ),
        (
            ("dims: [ 3 ] } ]\noutput", "dims: [ 0 ] } ]\noutput"),
            "input 'IN'.dims",
            "dimension must be >= 1 or -1, got 0",
        ),
        (("dims: [ 3 ] } ]\noutput", "dims: [ -2 ] } ]\noutput"), "input 'IN'.dims", "got -2"),
        (
            ("dims: [ 3 ] } ]\noutput", "dims: [ 3 ] reshape: { shape: [ 2, 2 ] } } ]\noutput"),
            "input 'IN'.reshape",
            "has 4 elements but dims [3] has 3",
        ),
        (
            ("dims: [ 3 ] } ]\noutput", "dims: [ -1 ] reshape: { shape: [ 2 ] } } ]\noutput"),
            "input 'IN'.reshape",
            "variable-size",
        ),
        (
            (
                'output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 3 ] } ]',
                'output [ { name: "OUT" dims: [ 3 ] } ]',
            ),
            "output 'OUT'.data_type",
            "must specify 'data_type'",
        ),
    ],
)
def test_tensor_and_model_rules(change, field, message):
    old, new = change
    text = BASE.replace(old, new) if old else BASE + new
    with pytest.raises(ConfigError) as info:
        check(text)
    assert f"m/config.pbtxt: field '{field}'" in info.value.message
    assert message in info.value.message


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        (
            "dynamic_batching { preferred_batch_size: [ 8 ] }",
            "dynamic_batching.preferred_batch_size",
            "between 1 and max_batch_size 4",
        ),
        (
            "version_policy { latest { num_versions: 0 } }",
            "version_policy.latest.num_versions",
            "must be >= 1",
        ),
        (
            "version_policy { specific { } }",
            "version_policy.specific.versions",
            "at least one version",
        ),
        (
            "version_policy { specific { versions: [ 0 ] } }",
            "version_policy.specific.versions",
            "invalid version 0",
        ),
        ("instance_group [ { count: -2 } ]", "instance_group[0].count", "must be >= 1"),
        (
            "instance_group [ { kind: KIND_CPU gpus: [ 0 ] } ]",
            "instance_group[0].gpus",
            "cannot list 'gpus'",
        ),
        (
            'ensemble_scheduling { step [ { model_name: "x" } ] }',
            "platform",
            'needs platform "ensemble"',
        ),
    ],
)
def test_scheduling_and_instance_rules(extra, field, message):
    with pytest.raises(ConfigError) as info:
        check(BASE + extra)
    assert f"field '{field}'" in info.value.message and message in info.value.message


def test_one_scheduling_choice_only():
    # scheduling_choice is a oneof in the schema: the parser itself refuses two.
    with pytest.raises(ConfigError, match=r"m/config.pbtxt: \d+:\d+ .*oneof"):
        check(BASE + "dynamic_batching { } sequence_batching { }")


def test_dynamic_batching_needs_batching_model():
    with pytest.raises(ConfigError, match="needs 'max_batch_size' > 0"):
        check(BASE.replace("max_batch_size: 4", "max_batch_size: 0") + "dynamic_batching { }")


def test_ensemble_needs_scheduling():
    with pytest.raises(ConfigError, match="must specify 'ensemble_scheduling'"):
        check(BASE.replace('backend: "identity"', 'platform: "ensemble"'))


def test_reshape_allows_empty_dims_only_when_batching():
    text = BASE.replace("dims: [ 3 ] } ]\noutput", "dims: [ ] reshape: { shape: [ ] } } ]\noutput")
    check(text)
    with pytest.raises(ConfigError, match="must specify 'dims'"):
        check(text.replace("max_batch_size: 4", "max_batch_size: 0"))


def test_kind_auto_resolves_by_gpus():
    config = check(BASE + "instance_group [ { kind: KIND_AUTO count: 2 } ]")
    assert config.instance_group[0].kind == ModelInstanceGroup.KIND_CPU
    assert config.instance_group[0].count == 2


def test_backend_config_flags():
    assert backend_config_from_flags(
        ["python,shm-default-byte-size=1024", "onnxruntime,default-max-batch-size=8", "x=y"]
    ) == {
        "python": {"shm-default-byte-size": "1024"},
        "onnxruntime": {"default-max-batch-size": "8"},
        "": {"x": "y"},
    }
    with pytest.raises(nereid.InvalidArgumentError, match="--backend-config option format"):
        backend_config_from_flags(["python,novalue"])


# -- through the server --------------------------------------------------------------------------


async def test_missing_backend_names_distribution(start_server, model_repository):
    model_repository.add(
        "trt_model",
        BASE.replace('name: "m"', "").replace('backend: "identity"', 'platform: "tensorrt_plan"'),
    )
    model_repository.identity("ok")
    server = await start_server(exit_on_error=False)
    (row,) = [r for r in server.api.repository_index() if r["name"] == "trt_model"]
    assert row["state"] == "UNAVAILABLE"
    assert "backend 'tensorrt_plan' is not installed" in row["reason"]
    assert "install the 'nereid-tensorrt' distribution" in row["reason"]
    assert server.api.model_ready("ok")


async def test_invalid_config_fails_load_with_file_and_field(start_server, model_repository):
    path = model_repository.add(
        "bad", BASE.replace('name: "m"', "").replace("max_batch_size: 4", "max_batch_size: -3")
    )
    server = await start_server(exit_on_error=False)
    (row,) = server.api.repository_index()
    assert row["state"] == "UNAVAILABLE"
    assert f"{path}/config.pbtxt: field 'max_batch_size'" in row["reason"]


async def test_model_config_name_selects_alternate(start_server, model_repository):
    model_repository.identity("alt", max_batch_size=8)
    (model_repository.root / "alt" / "configs").mkdir()
    (model_repository.root / "alt" / "configs" / "small.pbtxt").write_text(
        (model_repository.root / "alt" / "config.pbtxt")
        .read_text()
        .replace("max_batch_size: 8", "max_batch_size: 2")
    )
    server = await start_server(model_config_name="small")
    assert server.api.model_config("alt").max_batch_size == 2


class _SettingsBackend:
    seen: dict = {}

    def __init__(self, context):
        _SettingsBackend.seen = dict(context.settings)

    def create_model(self, config, path):
        from nereid.builtin.test_backends import IdentityModel

        return IdentityModel(config)


class _SettingsPlugin:
    @nereid.hookimpl
    def register_backends(self, registry):
        registry.add("settings", _SettingsBackend)


async def test_backend_config_delivered_to_backend(start_server, model_repository):
    model_repository.add("s", BASE.replace('name: "m"', "").replace("identity", "settings"))
    await start_server(
        plugins=[_SettingsPlugin()],
        backend_config=["settings,alpha=1", "other,beta=2", "gamma=3"],
    )
    assert _SettingsBackend.seen == {"alpha": "1", "gamma": "3"}


async def test_folder_without_config_and_unclaimed_files_fails(start_server, model_repository):
    model_repository.add("mystery", None, versions={1: {"weights.bin": b"\0"}})
    server = await start_server(exit_on_error=False)
    (row,) = server.api.repository_index()
    assert "unable to determine the backend" in row["reason"]
