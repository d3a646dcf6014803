"""The pure parts of the codec and the frontend helpers, without a server."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from nereid.errors import InvalidArgumentError
from nereid.types import DataType
from nereid_http import codec
from nereid_http.frontend import _accept_encoding


def test_bf16_bit_patterns_match_ml_dtypes():
    values = np.array([0.5, -2.0, 1.25, 3.0e38, 1.0 / 3.0, -0.0], dtype=np.float32)
    expected = values.astype(ml_dtypes.bfloat16).view(np.uint16)
    bits = codec._to_bf16_bits(values)
    np.testing.assert_array_equal(bits, expected)
    np.testing.assert_array_equal(
        codec._from_bf16_bits(bits), expected.view(ml_dtypes.bfloat16).astype(np.float32)
    )


def test_json_array_kinds():
    assert codec.json_array("x", DataType.FP32, [[1, 2], [3, 4]]).tolist() == [1, 2, 3, 4]
    assert codec.json_array("x", DataType.UINT64, [2**64 - 1]).tolist() == [2**64 - 1]
    assert codec.json_array("x", DataType.INT8, []).dtype == np.int8
    assert codec.json_array("x", DataType.BYTES, [["a"], ["b"]]).tolist() == [b"a", b"b"]
    with pytest.raises(InvalidArgumentError, match="expected an array"):
        codec.json_array("x", DataType.FP32, 1.0)


@pytest.mark.parametrize(
    ("dims", "count", "shape"),
    [
        ([-1], 3, [3]),
        ([-1, 2], 4, [2, 2]),
        ([-1, -1], 5, [1, 5]),
        ([1], 1, [1]),
        ([-1, 1], 1, [1, 1]),
    ],
)
def test_generate_shapes(dims, count, shape):
    assert codec._generate_shape("x", dims, count) == shape


def test_generate_shape_errors():
    for dims, count in (([2], 3), ([1], 2), ([0], 0)):
        with pytest.raises(InvalidArgumentError, match="can not convert input 'x'"):
            codec._generate_shape("x", dims, count)


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        ("gzip", "gzip"),
        ("deflate, gzip", "deflate"),
        ("gzip;q=0.5, deflate;q=0.9", "deflate"),
        ("identity", None),
        ("br", None),
        ("gzip;q=0", None),
        ("identity;q=1, gzip;q=0.5", None),
        ("gzip;q=abc, deflate", "deflate"),
    ],
)
def test_accept_encoding(header, chosen):
    assert _accept_encoding(header) == chosen


def test_loads_accepts_nan_from_python_json():
    doc = codec.loads(b'{"data": [NaN, Infinity]}')
    assert np.isnan(doc["data"][0])
    with pytest.raises(InvalidArgumentError, match="failed to parse the request JSON buffer"):
        codec.loads(b"{")
