"""Triton's input/output naming rules and the parameters, without torch."""

from __future__ import annotations

import pytest
from nereid.config import parse_pbtxt
from nereid_pytorch.naming import plan_inputs, plan_outputs
from nereid_pytorch.options import TorchOptions


def test_argument_names_win():
    plan = plan_inputs(["b", "a"], ["a", "b"])
    assert plan.mode == "positional" and plan.order == ("a", "b")
    assert plan.rule == "forward argument names"


def test_indexed_names():
    plan = plan_inputs(["IN__1", "IN__0"], ["input", "other"])
    assert plan.order == ("IN__0", "IN__1")


def test_configuration_order():
    assert plan_inputs(["P", "Q"], ["x", "y"]).order == ("P", "Q")
    assert plan_inputs(["P", "Q__1"], None).order == ("P", "Q__1")


def test_dict_input():
    plan = plan_inputs(["X", "Y"], ["inputs"], 1, dict_input=True)
    assert plan.mode == "dict" and plan.order == ("X", "Y")


def test_optional_argument_may_be_left_out():
    assert plan_inputs(["x"], ["x", "y"], required=1).order == ("x",)


@pytest.mark.parametrize(
    "names, arguments, message",
    [
        (["a"], ["a", "b"], "no configuration input for the model's argument(s) ['b']"),
        (["X__0", "X__2"], ["p", "q", "r"], "['q']"),
        (["A", "B"], ["x"], "forward takes 1 input(s)"),
    ],
)
def test_mismatches(names, arguments, message):
    with pytest.raises(
        ValueError,
        match=message.replace("(", r"\(")
        .replace(")", r"\)")
        .replace("[", r"\[")
        .replace("]", r"\]"),
    ):
        plan_inputs(names, arguments)


def test_outputs():
    assert plan_outputs(["B__1", "A__0"]) == [("B__1", 1), ("A__0", 0)]
    assert plan_outputs(["Y", "Z"]) == [("Y", 0), ("Z", 1)]


def test_options_defaults_and_threads():
    config = parse_pbtxt(
        'name: "m" instance_group [ { kind: KIND_CPU count: 3 } ]\n'
        'parameters { key: "INFERENCE_MODE" value: { string_value: "false" } }\n'
        'parameters { key: "inter_op_thread_count" value: { string_value: "2" } }\n'
    )
    options = TorchOptions.of(config, cpu_count=12)
    assert not options.inference_mode
    assert options.intra_op_threads == 4  # 12 cores over 3 instances
    assert options.inter_op_threads == 2
    assert TorchOptions.of(parse_pbtxt('name: "m"'), cpu_count=8).inference_mode


def test_bad_parameter_value():
    config = parse_pbtxt(
        'name: "m" parameters { key: "ENABLE_JIT_EXECUTOR" value: { string_value: "maybe" } }'
    )
    with pytest.raises(Exception, match="ENABLE_JIT_EXECUTOR"):
        TorchOptions.of(config)
