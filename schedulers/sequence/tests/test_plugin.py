"""Registration from the entry point, the lazy-import rule, the kernel's scheduler contract, and
the control and state descriptions on their own."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
from nereid.config import ModelConfig
from nereid.config.loading import ConfigError
from nereid.testing import contracts
from nereid.testing.contracts import ContractModel, SchedulerContract
from nereid_sequence_batcher.controls import ControlSpec, describe
from nereid_sequence_batcher.state import StateSet

SLOW = 'parameters { key: "execute_delay_ms" value: { string_value: "200" } }'


def test_registered_from_the_entry_point():
    from nereid.plugins import PluginSettings, PluginSystem

    system = PluginSystem(PluginSettings())
    system.load_entry_points()
    system.collect_registrations()
    entry = system.registries["scheduler"].get("sequence")
    assert entry.distribution == "nereid-sequence-batcher"
    assert entry.target == "nereid_sequence_batcher.scheduler:SequenceBatcher"


def test_entry_point_module_imports_nothing_heavy():
    code = (
        "import sys, nereid_sequence_batcher.plugin\n"
        "assert 'nereid_sequence_batcher.scheduler' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


class TestSequenceBatcherContract(SchedulerContract):
    """The kernel's contract, each request a sequence of its own (START and END)."""

    @pytest.fixture(autouse=True)
    def one_request_sequences(self, monkeypatch):
        ids = itertools.count(1)
        plain = contracts.make_request

        def make_request(model, inputs, **kwargs):
            kwargs.update(sequence_id=next(ids), sequence_start=True, sequence_end=True)
            return plain(model, inputs, **kwargs)

        monkeypatch.setattr(contracts, "make_request", make_request)

    @pytest.fixture
    def contract_model(self, model_repository):
        model_repository.identity(
            "seq", dims="[ 2 ]", max_batch_size=1, extra=f"sequence_batching {{ }} {SLOW}"
        )
        x = np.ones((1, 2), np.float32)
        return ContractModel("seq", {"INPUT0": x}, {"OUTPUT0": x})


def _config(text: str) -> ModelConfig:
    from google.protobuf import text_format

    config = text_format.Parse(text, ModelConfig())
    config.name = config.name or "m"
    return config


def test_control_tensors():
    spec = ControlSpec(
        _config(
            """
            max_batch_size: 2
            sequence_batching { control_input [
              { name: "S" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] },
              { name: "E"
                control [ { kind: CONTROL_SEQUENCE_END bool_false_true: [ false, true ] } ] },
              { name: "R" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 5, 9 ] } ] },
              { name: "C" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING } ] }
            ] }
            """
        )
    )
    assert describe(spec.for_request(True, False)) == {"S": 1.0, "E": False, "R": 9}
    assert describe(spec.for_request(False, True)) == {"S": 0.0, "E": True, "R": 9}
    assert describe(spec.not_ready) == {"S": 0.0, "E": False, "R": 5}
    start = dict(spec.for_request(True, True))
    assert start["S"].data.dtype == np.float32 and start["S"].shape == (1, 1)
    assert start["E"].data.dtype == np.bool_ and start["R"].data.dtype == np.int32
    assert not start["S"].data.flags.writeable
    assert spec.corrid(42).data.tolist() == [[b"42"]]
    assert spec.corrid("abc").data.tolist() == [[b"abc"]]
    assert spec.empty_corrid().data.tolist() == [[b""]]


@pytest.mark.parametrize(
    ("datatype", "corrid", "value"),
    [
        ("TYPE_UINT64", 2**64 - 1, 2**64 - 1),
        ("TYPE_INT64", 7, 7),
        ("TYPE_UINT32", "12", 12),
        ("TYPE_INT32", -3, -3),
    ],
)
def test_corrid_types(datatype, corrid, value):
    spec = ControlSpec(
        _config(
            f"""
            max_batch_size: 0
            sequence_batching {{ control_input [
              {{ name: "C" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: {datatype} }} ] }}
            ] }}
            """
        )
    )
    tensor = spec.corrid(corrid)
    assert tensor.shape == (1,)
    assert tensor.data.tolist() == [value]
    assert tensor.datatype.config_name == datatype


def test_initial_states(tmp_path):
    (tmp_path / "initial_state").mkdir()
    (tmp_path / "initial_state" / "f").write_bytes(np.arange(6, dtype=np.float32).tobytes())
    states = StateSet(
        _config(
            """
            max_batch_size: 4
            output [ { name: "B_OUT" data_type: TYPE_FP32 dims: [ 2, 3 ] } ]
            sequence_batching { state [
              { input_name: "A" output_name: "A_OUT" data_type: TYPE_INT64 dims: [ -1, 2 ] },
              { input_name: "B" output_name: "B_OUT" data_type: TYPE_FP32 dims: [ 2, -1 ]
                initial_state { data_type: TYPE_FP32 dims: [ 2, 3 ] data_file: "f" name: "f" } },
              { input_name: "C" output_name: "C_OUT" data_type: TYPE_STRING dims: [ 1 ]
                initial_state { data_type: TYPE_STRING dims: [ 1 ] zero_data: true name: "z" } }
            ] }
            """
        ),
        tmp_path,
    )
    initial = states.initial
    assert initial["A"].data.shape == (1, 1, 2) and initial["A"].data.dtype == np.int64
    assert initial["B"].data.tolist() == [[[0, 1, 2], [3, 4, 5]]]
    assert initial["C"].data.tolist() == [[b""]]
    assert states.hidden == {"A_OUT", "C_OUT"}  # B_OUT is also a model output


def test_initial_state_file_too_short(tmp_path):
    (tmp_path / "initial_state").mkdir()
    (tmp_path / "initial_state" / "f").write_bytes(b"\0" * 4)
    with pytest.raises(ConfigError, match="expects 8 bytes, but the data provided from f only"):
        StateSet(
            _config(
                """
                max_batch_size: 0
                sequence_batching { state [
                  { input_name: "A" output_name: "O" data_type: TYPE_INT32 dims: [ 2 ]
                    initial_state { data_type: TYPE_INT32 dims: [ 2 ] data_file: "f" name: "f" } }
                ] }
                """
            ),
            tmp_path,
        )
