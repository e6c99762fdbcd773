"""serving.tensors: outputs as typed value fields (TF Serving's ``Tensor::AsProtoField``)."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.tensors import to_tensor_proto


def _field_by_field(arr: np.ndarray, dtype: int, field: str) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    proto.tensor_shape.SetInParent()  # set even for a scalar, as AsProtoField does
    for d in arr.shape:
        proto.tensor_shape.dim.add(size=d)
    getattr(proto, field).extend(arr.reshape(-1).tolist())
    return proto


@pytest.mark.parametrize(
    ("arr", "dtype", "field"),
    [
        (np.random.default_rng(0).random((2, 17, 5), dtype=np.float32), types_pb2.DT_FLOAT, "float_val"),
        (np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45], np.float32), types_pb2.DT_FLOAT, "float_val"),
        (np.random.default_rng(1).random((3, 40)), types_pb2.DT_DOUBLE, "double_val"),
        (np.array(2.5, np.float32), types_pb2.DT_FLOAT, "float_val"),
    ],
)
def test_packed_float_fields_are_the_same_message_as_field_by_field(arr, dtype, field) -> None:
    fast = to_tensor_proto(arr)
    slow = _field_by_field(arr, dtype, field)
    assert fast.SerializeToString(deterministic=True) == slow.SerializeToString(deterministic=True)
    assert not fast.tensor_content and len(getattr(fast, field)) == arr.size
    np.testing.assert_array_equal(np.asarray(getattr(fast, field), dtype=arr.dtype).reshape(arr.shape), arr)


def test_large_float_output_keeps_every_value() -> None:
    heatmap = np.random.default_rng(2).random((4, 224, 224), dtype=np.float32)  # a batch of explain heatmaps
    proto = to_tensor_proto(heatmap)
    assert [d.size for d in proto.tensor_shape.dim] == [4, 224, 224]
    np.testing.assert_array_equal(np.asarray(proto.float_val, np.float32).reshape(heatmap.shape), heatmap)
