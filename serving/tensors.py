"""TensorProto <-> numpy for the server, with TF Serving's choices.

Requests may carry ``tensor_content`` or typed fields (``float_val``, ``int_val``, ``string_val``...); both are
read through ``tf.make_ndarray`` (which, like ``Tensor::FromProto``, repeats the last value when fewer values than
elements are given). Responses use typed fields, as TF Serving's Predict does (``Tensor::AsProtoField``): clients
such as the What-If Tool read ``float_val``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

__all__ = ["dtype_string", "to_ndarray", "to_tensor_proto", "to_tensor_content_proto"]

# numpy dtype -> (DataType enum, typed field name)
_FIELDS: dict[np.dtype, tuple[int, str]] = {
    np.dtype(np.float32): (types_pb2.DT_FLOAT, "float_val"),
    np.dtype(np.float64): (types_pb2.DT_DOUBLE, "double_val"),
    np.dtype(np.int32): (types_pb2.DT_INT32, "int_val"),
    np.dtype(np.int16): (types_pb2.DT_INT16, "int_val"),
    np.dtype(np.int8): (types_pb2.DT_INT8, "int_val"),
    np.dtype(np.uint8): (types_pb2.DT_UINT8, "int_val"),
    np.dtype(np.uint16): (types_pb2.DT_UINT16, "int_val"),
    np.dtype(np.int64): (types_pb2.DT_INT64, "int64_val"),
    np.dtype(np.uint32): (types_pb2.DT_UINT32, "uint32_val"),
    np.dtype(np.uint64): (types_pb2.DT_UINT64, "uint64_val"),
    np.dtype(np.bool_): (types_pb2.DT_BOOL, "bool_val"),
}


def dtype_string(dtype_enum: int) -> str:
    """TensorFlow's ``DataTypeString``: ``DT_FLOAT`` -> "float", ``DT_STRING`` -> "string"."""
    try:
        return types_pb2.DataType.Name(dtype_enum).removeprefix("DT_").lower()
    except ValueError:
        return f"unknown dtype enum ({dtype_enum})"


def to_ndarray(proto: Any) -> np.ndarray:
    """A request TensorProto as a numpy array (strings as an object array of bytes). Raises on a malformed proto."""
    return tf.make_ndarray(proto)


# Tags of TensorProto's packed fixed-width value fields (field number << 3 | wire type 2): float_val = 5,
# double_val = 6.
_PACKED_FIXED: dict[np.dtype, bytes] = {
    np.dtype(np.float32): bytes([5 << 3 | 2]),
    np.dtype(np.float64): bytes([6 << 3 | 2]),
}


def _shape_proto(shape: tuple[int, ...]) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in shape])


def to_tensor_proto(array: Any) -> tensor_pb2.TensorProto:
    """A numpy array (or scalar) as a TensorProto with typed value fields, like ``Tensor::AsProtoField``."""
    arr = np.asarray(array)
    proto = tensor_pb2.TensorProto(tensor_shape=_shape_proto(arr.shape))
    if arr.dtype.kind in ("O", "S", "U"):
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode("utf-8") for v in arr.reshape(-1))
        return proto
    if arr.dtype == np.float16:
        proto.dtype = types_pb2.DT_HALF
        proto.half_val.extend(arr.reshape(-1).view(np.uint16).tolist())
        return proto
    entry = _FIELDS.get(arr.dtype)
    if entry is None:  # anything else (complex, bfloat16...) goes through TensorFlow's own conversion
        return tf.make_tensor_proto(arr)
    proto.dtype, field_name = entry
    packed = _PACKED_FIXED.get(arr.dtype)
    if packed is not None and arr.size:
        # The same message, built at memcpy speed: a packed repeated fixed-width field on the wire is its tag, the
        # byte length and the little-endian values, so parse that in rather than extend a Python list of floats.
        data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
        proto.MergeFromString(packed + _varint(len(data)) + data)
        return proto
    getattr(proto, field_name).extend(arr.reshape(-1).tolist())
    return proto


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def to_tensor_content_proto(array: Any) -> tensor_pb2.TensorProto:
    """A numpy array as a TensorProto with its values packed in ``tensor_content``, like
    ``Tensor::AsProtoTensorContent`` (--enable_serialization_as_tensor_content); strings have no packed form and are
    written to ``string_val`` as ``to_tensor_proto`` writes them."""
    arr = np.asarray(array)
    if arr.dtype.kind in ("O", "S", "U"):
        return to_tensor_proto(arr)
    proto = tensor_pb2.TensorProto(tensor_shape=_shape_proto(arr.shape),
                                   dtype=tf.as_dtype(arr.dtype).as_datatype_enum)
    proto.tensor_content = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    return proto
