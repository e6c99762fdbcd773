"""numpy <-> TensorProto: both encodings, every supported dtype, TensorFlow's broadcasting rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from glimpse_wire.messages import DataType, TensorProto
from glimpse_wire.tensors import (
    as_data_type,
    dtype_name,
    numpy_dtype,
    shape_from_proto,
    shape_proto,
    to_numpy,
    to_tensor_proto,
)

NUMERIC = {
    np.float32: DataType.DT_FLOAT,
    np.float64: DataType.DT_DOUBLE,
    np.float16: DataType.DT_HALF,
    np.int8: DataType.DT_INT8,
    np.int16: DataType.DT_INT16,
    np.int32: DataType.DT_INT32,
    np.int64: DataType.DT_INT64,
    np.uint8: DataType.DT_UINT8,
    np.uint16: DataType.DT_UINT16,
    np.uint32: DataType.DT_UINT32,
    np.uint64: DataType.DT_UINT64,
    np.bool_: DataType.DT_BOOL,
    np.complex64: DataType.DT_COMPLEX64,
    np.complex128: DataType.DT_COMPLEX128,
}
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
FAST = settings(max_examples=40, deadline=None)


def _wire(proto: TensorProto) -> TensorProto:
    return TensorProto.FromString(proto.SerializeToString())


def _typed(arr: np.ndarray, dt: int) -> TensorProto:
    """Build a typed-field TensorProto by hand (what tf.make_tensor_proto / other clients send)."""
    proto = TensorProto(dtype=dt, tensor_shape=shape_proto(arr.shape))
    flat = arr.reshape(-1)
    if dt == DataType.DT_HALF:
        proto.half_val.extend(flat.view(np.uint16).tolist())
    elif dt in (DataType.DT_COMPLEX64, DataType.DT_COMPLEX128):
        field = proto.scomplex_val if dt == DataType.DT_COMPLEX64 else proto.dcomplex_val
        for z in flat.tolist():
            field.extend([z.real, z.imag])
    else:
        field = {
            DataType.DT_FLOAT: "float_val",
            DataType.DT_DOUBLE: "double_val",
            DataType.DT_INT64: "int64_val",
            DataType.DT_UINT32: "uint32_val",
            DataType.DT_UINT64: "uint64_val",
            DataType.DT_BOOL: "bool_val",
        }.get(dt, "int_val")
        getattr(proto, field).extend(flat.tolist())
    return proto


@st.composite
def numeric_arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from(sorted(NUMERIC, key=lambda t: np.dtype(t).name)))
    return draw(hnp.arrays(dtype, SHAPES))


@FAST
@given(numeric_arrays())
def test_numeric_round_trip_through_the_wire(arr: np.ndarray) -> None:
    proto = _wire(to_tensor_proto(arr))
    assert proto.dtype == NUMERIC[arr.dtype.type]
    out = to_numpy(proto)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


@FAST
@given(numeric_arrays())
def test_numeric_typed_fields_are_read(arr: np.ndarray) -> None:
    proto = _wire(_typed(arr, NUMERIC[arr.dtype.type]))
    assert not proto.tensor_content
    out = to_numpy(proto)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


@FAST
@given(hnp.arrays(st.sampled_from([np.float32, np.float64]), st.sampled_from([(600,), (3, 512), (1, 32, 32, 1)]),
                  elements=st.floats(allow_nan=True, allow_infinity=True, width=32)))
def test_large_float_fields_read_from_the_wire_bytes(arr: np.ndarray) -> None:
    # TF Serving answers with float_val; large fields are read from their packed bytes, bit for bit.
    dt = NUMERIC[arr.dtype.type]
    proto = _wire(_typed(arr, dt))
    out = to_numpy(proto)
    assert out.dtype == arr.dtype and out.shape == arr.shape and out.flags.writeable
    np.testing.assert_array_equal(out.view(f"u{arr.itemsize}"), arr.view(f"u{arr.itemsize}"))


def _field_bytes(number: int, wire: int, payload: bytes) -> bytes:
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    key = varint(number << 3 | wire)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)


def test_float_val_sent_unpacked_or_in_several_runs_is_read_whole() -> None:
    values = np.arange(1500, dtype="<f4") / 7
    head = _field_bytes(1, 0, bytes([DataType.DT_FLOAT])) + _field_bytes(
        2, 2, _field_bytes(2, 2, _field_bytes(1, 0, bytes([0xDC, 0x0B]))))  # dtype, shape [1500]
    unpacked = head + b"".join(_field_bytes(5, 5, v.tobytes()) for v in values)
    split = head + _field_bytes(5, 2, values[:700].tobytes()) + _field_bytes(5, 2, values[700:].tobytes())
    for wire in (unpacked, split):
        out = to_numpy(wire)
        assert out.shape == (1500,)
        np.testing.assert_array_equal(out, values)


@FAST
@given(hnp.arrays(np.float32, SHAPES))
def test_numbers_go_to_tensor_content(arr: np.ndarray) -> None:
    proto = to_tensor_proto(arr)
    assert proto.tensor_content == arr.astype("<f4").tobytes()
    assert len(proto.float_val) == 0


@FAST
@given(st.lists(st.lists(st.binary(max_size=20), min_size=2, max_size=2), max_size=4))
def test_bytes_round_trip(rows: list[list[bytes]]) -> None:
    proto = _wire(to_tensor_proto(rows, "string"))  # an empty list needs the dtype; a non-empty one is inferred
    assert proto.dtype == DataType.DT_STRING
    if rows:
        assert to_tensor_proto(rows) == proto
    out = to_numpy(proto)
    assert out.dtype == object
    assert out.shape == ((len(rows), 2) if rows else (0,))
    assert out.tolist() == rows


@FAST
@given(st.lists(st.text(max_size=10), min_size=1, max_size=5))
def test_text_becomes_utf8_bytes(texts: list[str]) -> None:
    out = to_numpy(_wire(to_tensor_proto(texts)))
    assert out.tolist() == [t.encode("utf-8") for t in texts]


@FAST
@given(st.integers(0, 2**16 - 1).filter(lambda b: (b & 0x7F80) != 0x7F80))
def test_bfloat16_patterns_round_trip(bits: int) -> None:
    value = np.array([bits << 16], dtype=np.uint32).view(np.float32)
    proto = _wire(to_tensor_proto(value, "bfloat16"))
    assert proto.dtype == DataType.DT_BFLOAT16
    assert proto.tensor_content == np.array([bits], "<u2").tobytes()
    np.testing.assert_array_equal(to_numpy(proto), value)
    typed = TensorProto(dtype=DataType.DT_BFLOAT16, tensor_shape=shape_proto([1]), half_val=[bits])
    np.testing.assert_array_equal(to_numpy(typed), value)


def test_bfloat16_rounds_to_nearest_even() -> None:
    values = np.array([1.0 + 2**-8, 1.0 + 3 * 2**-8, np.nan], dtype=np.float32)
    out = to_numpy(to_tensor_proto(values, DataType.DT_BFLOAT16))
    assert out[0] == 1.0 and out[1] == 1.0 + 2**-6
    assert np.isnan(out[2])


@pytest.mark.parametrize(
    "dt,field,value,expected",
    [
        (DataType.DT_FLOAT, "float_val", [2.5], np.float32),
        (DataType.DT_INT32, "int_val", [-3], np.int32),
        (DataType.DT_INT64, "int64_val", [2**40], np.int64),
        (DataType.DT_BOOL, "bool_val", [True], np.bool_),
        (DataType.DT_STRING, "string_val", [b"x"], object),
        (DataType.DT_DOUBLE, "double_val", [0.125], np.float64),
        (DataType.DT_UINT8, "int_val", [255], np.uint8),
    ],
)
def test_one_typed_value_fills_the_shape(dt: int, field: str, value: list, expected: type) -> None:
    proto = TensorProto(dtype=dt, tensor_shape=shape_proto([2, 3]), **{field: value})
    out = to_numpy(proto)
    assert out.shape == (2, 3) and out.dtype == np.dtype(expected)
    assert all(v == value[0] for v in out.reshape(-1).tolist())


def test_fewer_typed_values_repeat_the_last_and_none_give_zeros() -> None:
    proto = TensorProto(dtype=DataType.DT_INT32, tensor_shape=shape_proto([5]), int_val=[4, 7])
    assert to_numpy(proto).tolist() == [4, 7, 7, 7, 7]
    empty = TensorProto(dtype=DataType.DT_FLOAT, tensor_shape=shape_proto([2, 2]))
    np.testing.assert_array_equal(to_numpy(empty), np.zeros((2, 2), np.float32))
    strings = TensorProto(dtype=DataType.DT_STRING, tensor_shape=shape_proto([2]))
    assert to_numpy(strings).tolist() == [b"", b""]


def test_complex_with_infinite_parts() -> None:
    values = np.array([complex(np.inf, 1), complex(2, -np.inf), complex(np.nan, 0)], dtype=np.complex64)
    out = to_numpy(_wire(to_tensor_proto(values)))
    np.testing.assert_array_equal(out.real, values.real)
    np.testing.assert_array_equal(out.imag, values.imag)


def test_scalar_proto_is_a_zero_d_array() -> None:
    out = to_numpy(TensorProto(dtype=DataType.DT_FLOAT, float_val=[1.5]))
    assert out.shape == () and out == np.float32(1.5)


@pytest.mark.parametrize(
    "proto,match",
    [
        (TensorProto(dtype=DataType.DT_INT32, tensor_shape=shape_proto([2]), int_val=[1, 2, 3]), "3 values"),
        (TensorProto(dtype=DataType.DT_FLOAT, tensor_shape=shape_proto([3]), tensor_content=b"\0" * 8), "8 bytes"),
        (TensorProto(dtype=DataType.DT_FLOAT, tensor_shape=shape_proto([-1]), float_val=[1.0]), "unknown dim"),
        (TensorProto(dtype=DataType.DT_FLOAT, tensor_shape=shape_proto(None)), "known shape"),
        (TensorProto(dtype=DataType.DT_RESOURCE), "not supported"),
        (TensorProto(dtype=DataType.DT_INVALID), "not supported"),
        (TensorProto(dtype=DataType.DT_STRING, tensor_content=b"abc"), "string_val"),
        (TensorProto(dtype=DataType.DT_COMPLEX64, tensor_shape=shape_proto([1]), scomplex_val=[1.0]), "pairs"),
        (TensorProto(dtype=DataType.DT_FLOAT, tensor_shape=shape_proto([2**20, 2**20]), float_val=[1.0]), "too large"),
    ],
)
def test_malformed_protos_raise_value_error(proto: TensorProto, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        to_numpy(proto)


def test_to_numpy_accepts_serialized_bytes() -> None:
    data = to_tensor_proto(np.arange(4, dtype=np.int64)).SerializeToString()
    assert to_numpy(data).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="TensorProto"):
        to_numpy(b"\xff\xff\xff")


def test_python_values_get_tensorflow_default_dtypes() -> None:
    assert to_tensor_proto(1.5).dtype == DataType.DT_FLOAT
    assert to_tensor_proto([1, 2]).dtype == DataType.DT_INT32
    assert to_tensor_proto([1, 2**40]).dtype == DataType.DT_INT64
    assert to_tensor_proto(True).dtype == DataType.DT_BOOL
    assert to_tensor_proto(b"x").dtype == DataType.DT_STRING
    assert to_tensor_proto("x").dtype == DataType.DT_STRING
    assert to_tensor_proto(np.float64(1.5)).dtype == DataType.DT_DOUBLE  # numpy values keep their dtype
    bools = to_tensor_proto([True, False])
    assert list(bools.bool_val) == [True, False] and not bools.tensor_content


def test_explicit_dtype_converts_only_without_loss() -> None:
    assert to_numpy(to_tensor_proto([1, 2], "DT_FLOAT")).dtype == np.float32
    assert to_numpy(to_tensor_proto([[1, 2]], np.int64)).tolist() == [[1, 2]]
    assert to_numpy(to_tensor_proto([0.5], "half")).dtype == np.float16
    with pytest.raises(ValueError, match="losing"):
        to_tensor_proto([1.5], "int32")
    with pytest.raises(ValueError, match="fit"):
        to_tensor_proto([256], DataType.DT_UINT8)
    with pytest.raises(ValueError, match="fit"):
        to_tensor_proto(np.array([-1]), "uint32")
    with pytest.raises(TypeError):
        to_tensor_proto([1, 2], "string")
    with pytest.raises(TypeError):
        to_tensor_proto(["a"], "float")


@pytest.mark.parametrize("bad", [None, {"a": 1}, [[1], [1, 2]], [b"a", 1], np.array(["2020"], dtype="datetime64[D]")])
def test_unconvertible_values_raise(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        to_tensor_proto(bad)


def test_tensor_proto_passes_through_and_is_dtype_checked() -> None:
    proto = to_tensor_proto([1.0])
    assert to_tensor_proto(proto) is proto
    with pytest.raises(ValueError, match="DT_FLOAT"):
        to_tensor_proto(proto, "int32")


@pytest.mark.parametrize(
    "given,expected",
    [
        ("DT_FLOAT", DataType.DT_FLOAT),
        ("dt_int32", DataType.DT_INT32),
        ("float", DataType.DT_FLOAT),
        ("float32", DataType.DT_FLOAT),
        ("double", DataType.DT_DOUBLE),
        ("int64", DataType.DT_INT64),
        ("string", DataType.DT_STRING),
        ("bool", DataType.DT_BOOL),
        (np.uint8, DataType.DT_UINT8),
        (np.dtype(">f4"), DataType.DT_FLOAT),
        (bytes, DataType.DT_STRING),
        (7, DataType.DT_STRING),
    ],
)
def test_as_data_type(given: object, expected: int) -> None:
    assert as_data_type(given) == expected


@pytest.mark.parametrize("bad", ["DT_NOPE", "nope", 999, True, object(), np.dtype("datetime64[s]")])
def test_as_data_type_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        as_data_type(bad)


def test_names_and_numpy_dtypes() -> None:
    assert dtype_name(1) == "DT_FLOAT" and dtype_name("int32") == "DT_INT32" and dtype_name(77) == "DT_77"
    assert numpy_dtype("DT_STRING") == np.dtype(object) and numpy_dtype("bfloat16") == np.float32
    with pytest.raises(ValueError):
        numpy_dtype("DT_VARIANT")


def test_shapes() -> None:
    assert shape_from_proto(shape_proto([None, 224, 224, 3])) == (None, 224, 224, 3)
    assert shape_from_proto(shape_proto([])) == ()
    assert shape_from_proto(shape_proto(None)) is None
    assert [d.size for d in shape_proto([None, 2]).dim] == [-1, 2]
