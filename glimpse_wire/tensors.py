"""numpy <-> TensorProto, without TensorFlow.

:func:`to_tensor_proto` writes numeric tensors as little-endian ``tensor_content`` (bool and complex as typed fields,
strings as ``string_val``), the way ``tf.make_tensor_proto`` does. :func:`to_numpy` reads both encodings, including
typed fields with fewer values than elements: the last value repeats (a one-element ``float_val`` fills the whole
shape), as in ``tf.make_ndarray`` and TF Serving. Strings come back as an object array of ``bytes``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError, Message

from glimpse_wire.messages import DataType, TensorProto, TensorShapeProto, convert

__all__ = [
    "MAX_EXPANDED_BYTES",
    "as_data_type",
    "dtype_name",
    "numpy_dtype",
    "shape_from_proto",
    "shape_proto",
    "to_tensor_proto",
    "to_numpy",
]

# to_numpy refuses to expand a typed field (or zero-fill) beyond this many bytes: a tiny proto must not claim a
# huge shape and exhaust memory.
MAX_EXPANDED_BYTES = 2**31


@dataclass(frozen=True)
class _Kind:
    np_dtype: np.dtype  # what to_numpy returns
    field: str  # the typed repeated field
    content: bool  # written as tensor_content by to_tensor_proto


def _k(np_type: Any, field: str, content: bool = True) -> _Kind:
    return _Kind(np.dtype(np_type), field, content)


_KINDS: dict[int, _Kind] = {
    DataType.DT_FLOAT: _k(np.float32, "float_val"),
    DataType.DT_DOUBLE: _k(np.float64, "double_val"),
    DataType.DT_INT32: _k(np.int32, "int_val"),
    DataType.DT_UINT8: _k(np.uint8, "int_val"),
    DataType.DT_INT16: _k(np.int16, "int_val"),
    DataType.DT_INT8: _k(np.int8, "int_val"),
    DataType.DT_UINT16: _k(np.uint16, "int_val"),
    DataType.DT_INT64: _k(np.int64, "int64_val"),
    DataType.DT_UINT32: _k(np.uint32, "uint32_val"),
    DataType.DT_UINT64: _k(np.uint64, "uint64_val"),
    DataType.DT_HALF: _k(np.float16, "half_val"),
    DataType.DT_BFLOAT16: _k(np.float32, "half_val"),  # numpy has no bfloat16: widened to float32
    DataType.DT_BOOL: _k(np.bool_, "bool_val", content=False),
    DataType.DT_COMPLEX64: _k(np.complex64, "scomplex_val", content=False),
    DataType.DT_COMPLEX128: _k(np.complex128, "dcomplex_val", content=False),
    DataType.DT_STRING: _k(object, "string_val", content=False),
    DataType.DT_QINT8: _k(np.int8, "int_val"),
    DataType.DT_QUINT8: _k(np.uint8, "int_val"),
    DataType.DT_QINT16: _k(np.int16, "int_val"),
    DataType.DT_QUINT16: _k(np.uint16, "int_val"),
    DataType.DT_QINT32: _k(np.int32, "int_val"),
}

# numpy dtype -> DataType, for values given without an explicit dtype.
_FROM_NUMPY: dict[np.dtype, int] = {
    np.dtype(np.float32): DataType.DT_FLOAT,
    np.dtype(np.float64): DataType.DT_DOUBLE,
    np.dtype(np.float16): DataType.DT_HALF,
    np.dtype(np.int8): DataType.DT_INT8,
    np.dtype(np.int16): DataType.DT_INT16,
    np.dtype(np.int32): DataType.DT_INT32,
    np.dtype(np.int64): DataType.DT_INT64,
    np.dtype(np.uint8): DataType.DT_UINT8,
    np.dtype(np.uint16): DataType.DT_UINT16,
    np.dtype(np.uint32): DataType.DT_UINT32,
    np.dtype(np.uint64): DataType.DT_UINT64,
    np.dtype(np.bool_): DataType.DT_BOOL,
    np.dtype(np.complex64): DataType.DT_COMPLEX64,
    np.dtype(np.complex128): DataType.DT_COMPLEX128,
}

# TensorFlow's short dtype names ("float" is float32 there, unlike numpy).
_TF_NAMES: dict[str, int] = {
    "float": DataType.DT_FLOAT,
    "float32": DataType.DT_FLOAT,
    "double": DataType.DT_DOUBLE,
    "float64": DataType.DT_DOUBLE,
    "half": DataType.DT_HALF,
    "float16": DataType.DT_HALF,
    "bfloat16": DataType.DT_BFLOAT16,
    "string": DataType.DT_STRING,
    "bytes": DataType.DT_STRING,
    "str": DataType.DT_STRING,
    "bool": DataType.DT_BOOL,
    "int": DataType.DT_INT32,
    "complex64": DataType.DT_COMPLEX64,
    "complex128": DataType.DT_COMPLEX128,
    "qint8": DataType.DT_QINT8,
    "quint8": DataType.DT_QUINT8,
    "qint16": DataType.DT_QINT16,
    "quint16": DataType.DT_QUINT16,
    "qint32": DataType.DT_QINT32,
}


def as_data_type(dtype: Any) -> int:
    """Normalise a dtype to a DataType number. Accepts a DataType number, "DT_FLOAT", TensorFlow's short names
    ("float", "int32", "string", "bfloat16"...), numpy dtypes and types. ValueError for anything else."""
    if isinstance(dtype, bool):
        raise ValueError(f"not a dtype: {dtype!r}")
    if isinstance(dtype, int):
        if dtype in DataType.values():
            return dtype
        raise ValueError(f"unknown DataType number {dtype}")
    if isinstance(dtype, str):
        name = dtype.strip()
        if name.upper().startswith("DT_"):
            try:
                return DataType.Value(name.upper())
            except ValueError:
                raise ValueError(f"unknown DataType {dtype!r}") from None
        if name.lower() in _TF_NAMES:
            return _TF_NAMES[name.lower()]
    if dtype in (bytes, str):
        return DataType.DT_STRING
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"not a dtype: {dtype!r}") from None
    if np_dtype.kind in "SUO":
        return DataType.DT_STRING
    if np_dtype.newbyteorder("=") in _FROM_NUMPY:
        return _FROM_NUMPY[np_dtype.newbyteorder("=")]
    raise ValueError(f"no TensorFlow DataType for numpy dtype {np_dtype}")


def dtype_name(dtype: Any) -> str:
    """The DataType name, e.g. ``"DT_FLOAT"`` (unknown numbers as ``"DT_<n>"``, as proto3 keeps them)."""
    if isinstance(dtype, int) and not isinstance(dtype, bool) and dtype not in DataType.values():
        return f"DT_{dtype}"
    return DataType.Name(as_data_type(dtype))


def numpy_dtype(dtype: Any) -> np.dtype:
    """The numpy dtype :func:`to_numpy` returns for a DataType (DT_STRING: object; DT_BFLOAT16: float32)."""
    dt = as_data_type(dtype)
    if dt not in _KINDS:
        raise ValueError(f"{dtype_name(dt)} has no numpy equivalent here")
    return _KINDS[dt].np_dtype


def shape_proto(shape: Sequence[int | None] | None) -> TensorShapeProto:
    """A TensorShapeProto; None dims become -1, ``shape=None`` is unknown rank."""
    if shape is None:
        return TensorShapeProto(unknown_rank=True)
    return TensorShapeProto(dim=[TensorShapeProto.Dim(size=-1 if d is None else int(d)) for d in shape])


def shape_from_proto(shape: Message) -> tuple[int | None, ...] | None:
    """Dims of a TensorShapeProto with -1 as None; None when the rank is unknown."""
    if shape.unknown_rank:
        return None
    return tuple(None if d.size < 0 else int(d.size) for d in shape.dim)


# ---------------------------------------------------------------------------------------------------------------
# numpy -> TensorProto


def _to_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, (bytearray, memoryview, np.bytes_)):
        return bytes(item)
    raise TypeError(f"a DT_STRING tensor holds bytes or str, got {type(item).__name__}")


def _is_stringish(value: Any) -> bool:
    if isinstance(value, (bytes, str, bytearray, np.bytes_, np.str_)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "SU" or (value.dtype.kind == "O" and value.size > 0 and _is_stringish(value.flat[0]))
    if isinstance(value, (list, tuple)):
        first = value
        while isinstance(first, (list, tuple)) and first:
            first = first[0]
        return isinstance(first, (bytes, str, bytearray, np.bytes_, np.str_))
    return False


def _array(value: Any, dtype: Any = None) -> np.ndarray:
    try:
        return np.asarray(value, dtype=dtype)
    except (ValueError, TypeError) as e:
        raise ValueError(f"cannot make a tensor of {type(value).__name__}: {e}") from e


def _string_array(value: Any) -> np.ndarray:
    if isinstance(value, (bytes, bytearray, memoryview)):
        out = np.empty((), dtype=object)
        out[()] = bytes(value)
        return out
    arr = _array(value, dtype=object)
    flat = np.empty(arr.size, dtype=object)
    for i, item in enumerate(arr.reshape(-1)):
        flat[i] = _to_bytes(item)
    return flat.reshape(arr.shape)


def _numeric_array(value: Any, dt: int | None) -> tuple[np.ndarray, int]:
    explicit_numpy = isinstance(value, (np.ndarray, np.generic))
    arr = _array(value)
    if arr.dtype.kind in "SU":
        raise TypeError(f"a numeric tensor cannot hold {arr.dtype} values; strings need DT_STRING")
    if arr.dtype.kind == "O" and dt is None:
        raise TypeError("cannot infer a DataType for these values (mixed or unsupported types); pass dtype=")
    if arr.dtype.kind not in "biufcO":
        raise TypeError(f"cannot make a tensor of {arr.dtype} values")
    if dt is None:
        if not explicit_numpy and arr.dtype == np.float64:
            arr = arr.astype(np.float32)  # python floats -> DT_FLOAT, as TensorFlow does
        elif not explicit_numpy and arr.dtype.kind == "i":
            info = np.iinfo(np.int32)
            if arr.size == 0 or (arr.min() >= info.min and arr.max() <= info.max):
                arr = arr.astype(np.int32)  # python ints -> DT_INT32 when they fit
        return arr, as_data_type(arr.dtype)
    target = _KINDS[dt].np_dtype
    if arr.dtype.kind == "O":
        arr = _array(arr, dtype=target)
    elif arr.dtype != target:
        same_kind = np.can_cast(arr.dtype, target, casting="same_kind") or (
            arr.dtype.kind in "iu" and target.kind in "iu"
        )
        if not same_kind:
            raise ValueError(f"cannot convert {arr.dtype} values to {dtype_name(dt)} without losing information")
        if target.kind in "iu" and arr.dtype.kind in "iub" and arr.size:
            info = np.iinfo(target)
            lo, hi = int(arr.min()), int(arr.max())
            if lo < info.min or hi > info.max:
                raise ValueError(f"values in [{lo}, {hi}] do not fit {dtype_name(dt)}")
        arr = arr.astype(target)
    return arr, dt


def _bfloat16_bits(arr: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even; NaN stays NaN."""
    bits = np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
    nan = np.isnan(arr)
    return np.where(nan, (bits >> 16) | 0x40, rounded).astype(np.uint16)


def to_tensor_proto(value: Any, dtype: Any = None) -> TensorProto:
    """A TensorProto of ``value``: a numpy array or scalar, a (nested) list, a python scalar, bytes or str.

    ``dtype`` (DataType number or name, or a numpy dtype) converts the value when that loses nothing (ints that fit,
    floats to a narrower float); without it, numpy arrays keep their dtype, python floats become DT_FLOAT and python
    ints DT_INT32 (DT_INT64 when they do not fit), bytes/str DT_STRING. A TensorProto is returned as is.
    """
    dt = None if dtype is None else as_data_type(dtype)
    if isinstance(value, TensorProto):
        if dt is not None and value.dtype != dt:
            raise ValueError(f"TensorProto is {dtype_name(value.dtype)}, not {dtype_name(dt)}")
        return value
    if isinstance(value, Message):
        return to_tensor_proto(convert(value, TensorProto), dtype)
    if value is None:
        raise TypeError("cannot make a tensor of None")
    if isinstance(value, dict):
        raise TypeError("cannot make a tensor of a dict")
    if dt is not None and dt not in _KINDS:
        raise ValueError(f"{dtype_name(dt)} tensors are not supported")
    if dt == DataType.DT_STRING or (dt is None and _is_stringish(value)):
        strings = _string_array(value)
        proto = TensorProto(dtype=DataType.DT_STRING, tensor_shape=shape_proto(strings.shape))
        proto.string_val.extend(strings.reshape(-1).tolist())
        return proto
    arr, dt = _numeric_array(value, dt)
    proto = TensorProto(dtype=dt, tensor_shape=shape_proto(arr.shape))
    kind = _KINDS[dt]
    if dt == DataType.DT_BFLOAT16:
        proto.tensor_content = _bfloat16_bits(arr).astype("<u2").tobytes()
    elif kind.content:
        proto.tensor_content = np.ascontiguousarray(arr, dtype=kind.np_dtype.newbyteorder("<")).tobytes()
    elif dt == DataType.DT_BOOL:
        proto.bool_val.extend(arr.reshape(-1).tolist())
    else:  # complex: interleaved (real, imag)
        parts = np.stack([arr.real, arr.imag], axis=-1).reshape(-1)
        getattr(proto, kind.field).extend(parts.tolist())
    return proto


# ---------------------------------------------------------------------------------------------------------------
# TensorProto -> numpy


def _from_content(proto: TensorProto, dt: int, shape: tuple[int, ...], n: int) -> np.ndarray:
    content = proto.tensor_content
    if dt == DataType.DT_STRING:
        raise ValueError("DT_STRING tensors carry their values in string_val, not tensor_content")
    kind = _KINDS[dt]
    wire = np.dtype("<u2") if dt == DataType.DT_BFLOAT16 else kind.np_dtype.newbyteorder("<")
    if len(content) != n * wire.itemsize:
        raise ValueError(
            f"tensor_content holds {len(content)} bytes; shape {list(shape)} of {dtype_name(dt)} needs "
            f"{n * wire.itemsize}"
        )
    raw = np.frombuffer(content, dtype=wire)
    if dt == DataType.DT_BFLOAT16:
        return (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return raw.astype(kind.np_dtype).reshape(shape)


# TensorProto's fixed-width value fields by dtype: (field number, little-endian element type).
_PACKED_FIXED: dict[int, tuple[int, np.dtype]] = {
    DataType.DT_FLOAT: (5, np.dtype("<f4")),
    DataType.DT_DOUBLE: (6, np.dtype("<f8")),
}
# Below this many values the element-wise conversion is as quick as reading the wire bytes.
_PACKED_MIN_VALUES = 512


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _packed_values(proto: TensorProto, field_number: int, dtype: np.dtype) -> np.ndarray | None:
    """A packed fixed-width field read from the message's wire bytes, or None when it is not packed there.

    ``np.asarray`` over a repeated field converts element by element (milliseconds for a 224x224 float map, as TF
    Serving sends its outputs); on the wire the same values are one little-endian run, read at memcpy speed.
    """
    buf = proto.SerializeToString()
    chunks: list[bytes] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            if number == field_number:
                return None
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if number == field_number:
                chunks.append(buf[pos : pos + length])
            pos += length
        else:
            return None
    data = b"".join(chunks)
    if len(data) % dtype.itemsize:
        return None
    return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="))


def _typed_values(proto: TensorProto, dt: int) -> np.ndarray:
    kind = _KINDS[dt]
    values = getattr(proto, kind.field)
    packed = _PACKED_FIXED.get(dt)
    if packed is not None and len(values) >= _PACKED_MIN_VALUES:
        fast = _packed_values(proto, *packed)
        if fast is not None and fast.size == len(values):
            return fast
    if dt == DataType.DT_STRING:
        out = np.empty(len(values), dtype=object)
        for i, item in enumerate(values):
            out[i] = item
        return out
    if dt == DataType.DT_HALF:
        return (np.asarray(values, dtype=np.int64) & 0xFFFF).astype(np.uint16).view(np.float16)
    if dt == DataType.DT_BFLOAT16:
        return ((np.asarray(values, dtype=np.int64) & 0xFFFF).astype(np.uint32) << 16).view(np.float32)
    if dt in (DataType.DT_COMPLEX64, DataType.DT_COMPLEX128):
        parts = np.asarray(values, dtype=np.float64)
        if parts.size % 2:
            raise ValueError(f"{kind.field} holds an odd number of values; it must hold (real, imag) pairs")
        out = np.empty(parts.size // 2, dtype=kind.np_dtype)
        out.real, out.imag = parts[0::2], parts[1::2]  # not re + 1j * im: that turns an infinite part into NaN
        return out
    if kind.field in ("int_val", "int64_val", "uint32_val", "uint64_val"):
        return np.asarray(values, dtype=np.uint64 if kind.field == "uint64_val" else np.int64).astype(kind.np_dtype)
    return np.asarray(values, dtype=kind.np_dtype)


def _from_typed(proto: TensorProto, dt: int, shape: tuple[int, ...], n: int) -> np.ndarray:
    values = _typed_values(proto, dt)
    kind = _KINDS[dt]
    if values.size == n:
        return values.reshape(shape)
    if values.size > n:
        raise ValueError(f"{kind.field} holds {values.size} values for shape {list(shape)} ({n} elements)")
    itemsize = 8 if dt == DataType.DT_STRING else kind.np_dtype.itemsize
    if n * itemsize > MAX_EXPANDED_BYTES:
        raise ValueError(f"shape {list(shape)} of {dtype_name(dt)} is too large to expand from {values.size} values")
    if values.size == 0:  # no values: zeros (empty strings), as tf.make_ndarray
        if dt == DataType.DT_STRING:
            return np.full(shape, b"", dtype=object)
        return np.zeros(shape, dtype=kind.np_dtype)
    out = np.empty(n, dtype=values.dtype)
    out[: values.size] = values
    out[values.size :] = values[-1]  # fewer values than elements: the last one repeats
    return out.reshape(shape)


def to_numpy(proto: TensorProto | Message | bytes) -> np.ndarray:
    """The numpy array of a TensorProto (ours, TensorFlow's, or its serialized bytes).

    Reads ``tensor_content`` or the typed field of the dtype; DT_STRING gives an object array of bytes,
    DT_BFLOAT16 a float32 array. ValueError for malformed or unsupported tensors.
    """
    if isinstance(proto, (bytes, bytearray, memoryview)):
        try:
            proto = TensorProto.FromString(bytes(proto))
        except DecodeError as e:
            raise ValueError(f"not a serialized TensorProto: {e}") from e
    elif not isinstance(proto, TensorProto):
        proto = convert(proto, TensorProto)
    dt = proto.dtype
    if dt not in _KINDS:
        raise ValueError(f"{dtype_name(dt)} tensors are not supported")
    if proto.tensor_shape.unknown_rank:
        raise ValueError("a TensorProto must have a known shape")
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise ValueError(f"a TensorProto cannot have unknown dimensions: {list(shape)}")
    n = math.prod(shape)
    if proto.tensor_content:
        return _from_content(proto, dt, shape, n)
    return _from_typed(proto, dt, shape, n)
