"""Load-time validation: each broken ensemble fails to load with a message naming the problem,
shown as the reason in the repository index and returned by the load API."""

from __future__ import annotations

import nereid
import pytest

FP32_2 = '{ name: "IN" data_type: TYPE_FP32 dims: [ 2 ] }'
OUT_2 = '{ name: "OUT" data_type: TYPE_FP32 dims: [ 2 ] }'

REPEAT = """
backend: "repeat"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [
  { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] }
]
"""

# name -> (steps, ensemble options, the message expected in the index reason)
CASES = {
    "cycle": (
        [
            ("two", {"INPUT0": "IN", "INPUT1": "y"}, {"OUTPUT0": "x", "OUTPUT1": "OUT"}),
            ("one", {"INPUT0": "x"}, {"OUTPUT0": "y"}),
        ],
        {},
        "ensemble 'cycle': the steps form a cycle: step 'two' -[x]-> step 'one' -[y]-> step 'two'",
    ),
    "never_produced": (
        [
            ("one", {"INPUT0": "IN"}, {"OUTPUT0": "x"}),
            ("two", {"INPUT0": "x", "INPUT1": "ghost"}, {"OUTPUT0": "OUT"}),
        ],
        {},
        "tensor 'ghost' (input 'INPUT1' of step 'two') is never produced",
    ),
    "output_not_written": (
        [("one", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})],
        {"outputs": f'{OUT_2}, {{ name: "OUT2" data_type: TYPE_FP32 dims: [ 2 ] }}'},
        "ensemble output 'OUT2' is not written by any step",
    ),
    "input_unused": (
        [("one", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})],
        {"inputs": f'{FP32_2}, {{ name: "SPARE" data_type: TYPE_FP32 dims: [ 2 ] }}'},
        "ensemble input 'SPARE' is not used by any step",
    ),
    "tensor_unused": (
        [("two", {"INPUT0": "IN", "INPUT1": "IN"}, {"OUTPUT0": "OUT", "OUTPUT1": "dangling"})],
        {},
        "tensor 'dangling' written by step 'two' is unused",
    ),
    "written_twice": (
        [
            ("one", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"}),
            ("other", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"}),
        ],
        {},
        "tensor 'OUT' is written by both step 'one' and step 'other'",
    ),
    "datatype_mismatch": (
        [("ints", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})],
        {},
        "inconsistent datatype for tensor 'IN': it is FP32 [-1,2] as ensemble input 'IN' but "
        "INT32 [-1,2] as input 'INPUT0' of step 'ints'",
    ),
    "shape_mismatch": (
        [
            ("one", {"INPUT0": "IN"}, {"OUTPUT0": "mid"}),
            ("wide", {"INPUT0": "mid"}, {"OUTPUT0": "OUT"}),
        ],
        {},
        "inconsistent shape for tensor 'mid': it is FP32 [-1,2] as output 'OUTPUT0' of step "
        "'one' but FP32 [-1,3] as input 'INPUT0' of step 'wide'",
    ),
    "batch_too_large": (
        [("one", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})],
        {"max_batch_size": 16},
        "the ensemble allows max_batch_size 16, but step 'one' allows only 8",
    ),
    "missing_version": (
        [("one", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})],
        {"version": 7},
        "step 'one' is not available: Request for unknown model: 'one' version 7 is not found",
    ),
    "unknown_input": (
        [("one", {"INPUT0": "IN", "NOPE": "IN"}, {"OUTPUT0": "OUT"})],
        {},
        "step 'one' maps tensor 'IN' to input 'NOPE', which model 'one' does not have",
    ),
    "unmapped_input": (
        [("two", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})],
        {},
        "input 'INPUT1' of step 'two' is not mapped to any ensemble tensor",
    ),
    "unknown_output": (
        [
            ("one", {"INPUT0": "IN"}, {"OUTPUT0": "mid", "OUTPUT9": "x"}),
            ("two", {"INPUT0": "mid", "INPUT1": "x"}, {"OUTPUT0": "OUT"}),
        ],
        {},
        "step 'one' maps output 'OUTPUT9' to tensor 'x', but model 'one' has no output "
        "'OUTPUT9' (its outputs: OUTPUT0)",
    ),
    "mixed_decoupled": (
        [
            ("repeat", {"IN": "VALUES"}, {"OUT": "value"}),
            ("pair", {"INPUT0": "value", "INPUT1": "VALUES"}, {"OUTPUT0": "OUT"}),
        ],
        {},
        "step 'pair' receives inputs that originate from different decoupled sources "
        "(step 'repeat', the request)",
    ),
    "instances": (
        [("one", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})],
        {"extra": "instance_group [ { count: 2 } ]"},
        "instance_group must not be set for an ensemble",
    ),
}


def write_cases(kit, repository) -> None:
    kit.probe_model(repository, "one")
    kit.probe_model(repository, "other")
    kit.probe_model(repository, "two", inputs="INPUT0,INPUT1", outputs="OUTPUT0,OUTPUT1")
    kit.probe_model(repository, "ints", datatype="TYPE_INT32")
    kit.probe_model(repository, "wide", dims="[ 3 ]")
    repository.add("repeat", REPEAT)
    kit.probe_model(
        repository,
        "pair",
        inputs="INPUT0,INPUT1",
        outputs="OUTPUT0,OUTPUT1",
        datatype="TYPE_INT32",
        dims="[ -1 ]",
        max_batch_size=0,
    )
    for name, (steps, options, _) in CASES.items():
        options = dict(options)
        version = options.pop("version", None)
        if name == "mixed_decoupled":
            options.setdefault("inputs", '{ name: "VALUES" data_type: TYPE_INT32 dims: [ -1 ] }')
            options.setdefault("outputs", '{ name: "OUT" data_type: TYPE_INT32 dims: [ -1 ] }')
            options.setdefault("max_batch_size", 0)
        config = kit.ensemble_config(steps, **options)
        if version is not None:
            config = config.replace("model_version: -1", f"model_version: {version}")
        repository.add(name, config)


async def test_each_broken_ensemble_fails_with_its_reason(serve, model_repository, kit):
    write_cases(kit, model_repository)
    server = await serve(exit_on_error=False)
    rows = {row["name"]: row for row in server.api.repository_index()}
    for name, (_, _, expected) in CASES.items():
        row = rows[name]
        assert row["state"] == "UNAVAILABLE", (name, row)
        assert expected in row["reason"], (name, row["reason"])
        assert row["reason"].startswith(f"ensemble '{name}': "), row["reason"]
    for step in ("one", "two", "ints", "wide", "repeat", "pair"):
        assert server.api.model_ready(step)


async def test_load_api_returns_the_reason(serve, model_repository, kit):
    write_cases(kit, model_repository)
    server = await serve(model_control_mode="explicit", exit_on_error=False)
    with pytest.raises(nereid.NereidError) as info:
        await server.api.load_model("cycle")
    assert info.value.kind is nereid.ErrorKind.INVALID_ARG
    assert "the steps form a cycle" in info.value.message


async def test_a_missing_step_model(serve, model_repository, kit):
    model_repository.add(
        "orphan", kit.ensemble_config([("nowhere", {"INPUT0": "IN"}, {"OUTPUT0": "OUT"})])
    )
    server = await serve(exit_on_error=False)
    (row,) = [r for r in server.api.repository_index() if r["name"] == "orphan"]
    assert row["state"] == "UNAVAILABLE"
    assert "'nowhere'" in row["reason"] and "not available" in row["reason"]


async def test_a_cycle_through_ensembles_is_refused(serve, model_repository, kit):
    model_repository.add("ping", kit.ensemble_config([("pong", {"IN": "IN"}, {"OUT": "OUT"})]))
    model_repository.add("pong", kit.ensemble_config([("ping", {"IN": "IN"}, {"OUT": "OUT"})]))
    server = await serve(exit_on_error=False)
    rows = {r["name"]: r for r in server.api.repository_index()}
    assert "circular dependency" in rows["ping"]["reason"]
