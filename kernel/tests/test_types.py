"""Datatypes, tensors and BYTES serialization."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from nereid import DataType, InvalidArgumentError, Tensor
from nereid.testing import make_request
from nereid.types import deserialize_bytes, serialize_bytes

SAMPLES = {
    DataType.BOOL: np.array([True, False, True]),
    DataType.UINT8: np.array([0, 255], np.uint8),
    DataType.UINT16: np.array([0, 65535], np.uint16),
    DataType.UINT32: np.array([0, 2**32 - 1], np.uint32),
    DataType.UINT64: np.array([0, 2**64 - 1], np.uint64),
    DataType.INT8: np.array([-128, 127], np.int8),
    DataType.INT16: np.array([-(2**15), 2**15 - 1], np.int16),
    DataType.INT32: np.array([-(2**31), 2**31 - 1], np.int32),
    DataType.INT64: np.array([-(2**63), 2**63 - 1], np.int64),
    DataType.FP16: np.array([0.5, -1.25, 65504], np.float16),
    DataType.FP32: np.array([1.5, -3.25e10], np.float32),
    DataType.FP64: np.array([np.pi, -1e300], np.float64),
    DataType.BF16: np.array([1.0, -2.5, 3.0e38], ml_dtypes.bfloat16),
    DataType.BYTES: np.array([b"", b"hello", "caf\u00e9".encode(), b"\x00\xff"], dtype=object),
}


@pytest.mark.parametrize("datatype", list(DataType), ids=lambda d: d.value)
def test_wire_round_trip(datatype):
    array = SAMPLES[datatype].reshape(1, -1)
    tensor = Tensor("x", array, datatype)
    raw = tensor.to_bytes()
    back = Tensor.from_buffer("x", datatype, array.shape, raw)
    assert back.datatype is datatype and back.shape == array.shape
    if datatype is DataType.BYTES:
        assert list(back.data.reshape(-1)) == list(array.reshape(-1))
    else:
        assert back.data.dtype == datatype.numpy_dtype
        assert raw == array.tobytes()
        np.testing.assert_array_equal(back.data, array)


@pytest.mark.parametrize("datatype", list(DataType), ids=lambda d: d.value)
async def test_every_datatype_through_identity(start_server, model_repository, datatype):
    model_repository.identity("id", datatype=datatype.config_name, dims="[ -1 ]")
    server = await start_server()
    array = SAMPLES[datatype].reshape(1, -1)
    response = await server.api.infer(
        make_request("id", {"INPUT0": Tensor("INPUT0", array, datatype)})
    ).single()
    out = response.output("OUTPUT0")
    assert out.datatype is datatype
    assert out.to_bytes() == Tensor("x", array, datatype).to_bytes()


def test_names_and_parsing():
    assert DataType.parse("TYPE_STRING") is DataType.BYTES
    assert DataType.parse("TYPE_FP32") is DataType.FP32
    assert DataType.parse("BF16") is DataType.BF16
    assert DataType.BYTES.config_name == "TYPE_STRING"
    assert DataType.from_numpy(np.float16) is DataType.FP16
    assert DataType.from_numpy(ml_dtypes.bfloat16) is DataType.BF16
    assert DataType.from_numpy(np.dtype("S3")) is DataType.BYTES
    with pytest.raises(InvalidArgumentError, match="invalid datatype 'FP8'"):
        DataType.parse("FP8")


def test_bytes_serialization_layout():
    raw = serialize_bytes(np.array([b"ab", b"c"], dtype=object))
    assert raw == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"
    assert list(deserialize_bytes(raw)) == [b"ab", b"c"]


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        (
            b"\x01\x00\x00\x00a\x02\x00",
            None,
            "incomplete string length indicator for inference input 'IN' for model 'm', "
            "expecting 4 bytes but only 2 bytes available. Please make sure the string length "
            "indicator is in one buffer.",
        ),
        (
            b"\x05\x00\x00\x00ab",
            None,
            "string element 0 of inference input 'IN' for model 'm' claims 5 bytes, but only "
            "2 bytes are left",
        ),
        (
            b"\x01\x00\x00\x00a",
            2,
            "expected 2 string elements for inference input 'IN' for model 'm', got 1",
        ),
        (
            b"\x01\x00\x00\x00a\x01\x00\x00\x00b\x01\x00\x00\x00c",
            2,
            "unexpected number of string elements 3 for inference input 'IN' for model 'm', "
            "expecting 2",
        ),
    ],
)
def test_malformed_bytes_rejected_in_tritons_words(raw, count, message):
    with pytest.raises(InvalidArgumentError) as info:
        deserialize_bytes(raw, count, "IN", "m")
    assert info.value.message == message


def test_malformed_bytes_without_an_input_name():
    with pytest.raises(InvalidArgumentError) as info:
        deserialize_bytes(b"\x01\x00\x00\x00a", 2)
    assert info.value.message == "expected 2 string elements for BYTES tensor, got 1"


def test_fixed_size_buffer_length_checked():
    with pytest.raises(InvalidArgumentError, match="expecting 16 bytes for FP32 shape \\[4\\]"):
        Tensor.from_buffer("x", DataType.FP32, [4], b"\0" * 12)
