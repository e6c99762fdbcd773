"""REST JSON <-> TF Serving messages, as tensorflow_serving/util/json_tensor.cc does it (unit tests)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, predict_pb2, regression_pb2

from glimpse_wire.errors import InvalidArgument
from serving import json_tensor
from serving.json_tensor import RequestFormat, format_floats

F, S, I32 = types_pb2.DT_FLOAT, types_pb2.DT_STRING, types_pb2.DT_INT32


def fill(doc: dict, dtypes: dict[str, int]) -> tuple[RequestFormat, dict[str, np.ndarray]]:
    request = predict_pb2.PredictRequest()
    fmt = json_tensor.fill_predict_request(doc, lambda signature: dtypes, request)
    for name, proto in request.inputs.items():
        assert proto.dtype == dtypes[name]
    return fmt, {k: tf.make_ndarray(v) for k, v in request.inputs.items()}


def error_of(doc: dict, dtypes: dict[str, int]) -> str:
    with pytest.raises(InvalidArgument) as err:
        fill(doc, dtypes)
    return err.value.message


def test_row_format_batches_instances() -> None:
    fmt, tensors = fill({"instances": [[1.0, 2.0], [3.0, 4.0]]}, {"x": F})
    assert fmt is RequestFormat.ROW
    np.testing.assert_array_equal(tensors["x"], np.array([[1, 2], [3, 4]], np.float32))


def test_row_format_named_and_b64() -> None:
    doc = {"instances": [{"img": {"b64": "aGk="}, "k": 1}, {"img": {"b64": "eW8"}, "k": -1}]}
    _, tensors = fill(doc, {"img": S, "k": I32})
    assert tensors["img"].tolist() == [b"hi", b"yo"]  # unpadded base64 is accepted
    assert tensors["k"].tolist() == [1, -1] and tensors["k"].dtype == np.int32


def test_columnar_format() -> None:
    fmt, tensors = fill({"inputs": {"a": [[1, 2]], "b": ["s"]}}, {"a": F, "b": S})
    assert fmt is RequestFormat.COLUMNAR
    assert tensors["a"].shape == (1, 2) and tensors["b"].tolist() == [b"s"]
    _, scalar = fill({"inputs": 3.5}, {"x": F})
    assert scalar["x"].shape == () and float(scalar["x"]) == 3.5


@pytest.mark.parametrize(
    ("doc", "dtypes", "message"),
    [
        ({"instances": [1.5]}, {"x": I32},
         "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: 1.5 Type: Number is "
         "not of expected type: int32"),
        ({"instances": [16777217]}, {"x": F},
         "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: Cannot convert JSON value: "
         "16777217 to float without loss of precision."),
        ({"instances": [[1], [1, 2]]}, {"x": F},
         "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 1 but "
         "got: 2"),
        ({"instances": [[[1], 2]]}, {"x": F},
         "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: 2 found at "
         "incorrect level: 2 in the JSON DOM. Expected at level: 2"),
        ({"instances": [{"a": 1, "b": 2}]}, {"a": F},
         "Failed to process element: 0 key: b of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does not "
         "have named input: b"),
        ({"instances": [{"a": 1}]}, {"a": F, "b": F},
         'Failed to process element: 0 of \'instances\' list. JSON object: {\n    "a": 1\n} must only have keys: a,b'),
        ({"instances": [{"a": 1}, 2]}, {"a": F}, "Expecting object but got list at item 1 of input list"),
        ({"inputs": [1]}, {"a": F, "b": F},
         "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
         "tensorinfo_map"),
        ({"instances": [[{"b64": 1}]]}, {"x": S},
         "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: {\n    \"b64\": 1\n}"
         " not formatted correctly for base64 data"),
    ],
)
def test_request_errors(doc: dict, dtypes: dict[str, int], message: str) -> None:
    assert error_of(doc, dtypes) == message


def test_float_formatting_matches_tf_serving() -> None:
    values = np.array([0.1, 1.0, 1e-5, 3.14159274, 1e6, 123456789.0, np.nan, np.inf, -np.inf], dtype=np.float32)
    assert format_floats(values).tolist() == [
        "0.1", "1.0", "1e-05", "3.14159274", "1e+06", "123456792.0", "NaN", "Infinity", "-Infinity"
    ]
    assert format_floats(np.array([0.1, 1 / 3])).tolist() == ["0.1", "0.33333333333333331"]
    # Every written float32 reads back to the same float32.
    rng = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    assert np.array_equal(format_floats(rng).astype(np.float32), rng)


def test_row_and_columnar_responses() -> None:
    outputs = {
        "p": tf.make_tensor_proto(np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)),
        "label": tf.make_tensor_proto(np.array([b"cat", b"dog"], dtype=object)),
        "raw_bytes": tf.make_tensor_proto(np.array([b"\xff\x00", b"a"], dtype=object)),
    }
    row = json.loads(json_tensor.predict_response_json(outputs, RequestFormat.ROW))
    assert row == {"predictions": [
        {"label": "cat", "p": [0.25, 0.75], "raw_bytes": {"b64": "/wA="}},
        {"label": "dog", "p": [0.5, 0.5], "raw_bytes": {"b64": "YQ=="}},
    ]}
    single = json.loads(json_tensor.predict_response_json({"p": outputs["p"]}, RequestFormat.COLUMNAR))
    assert single == {"outputs": [[0.25, 0.75], [0.5, 0.5]]}
    text = json_tensor.predict_response_json({"i": tf.make_tensor_proto(np.array([1, 2], np.int32))}, RequestFormat.ROW)
    assert json.loads(text) == {"predictions": [1, 2]}


def test_inconsistent_batch_in_row_response() -> None:
    outputs = {"a": tf.make_tensor_proto(np.ones(2, np.float32)), "b": tf.make_tensor_proto(np.ones(3, np.float32))}
    with pytest.raises(InvalidArgument) as err:
        json_tensor.predict_response_json(outputs, RequestFormat.ROW)
    assert err.value.message == "Tensor name: b has inconsistent batch size: 3 expecting: 2"


def test_classify_request_with_context_and_features() -> None:
    request = classification_pb2.ClassificationRequest()
    doc = {"signature_name": "s", "context": {"site": "a"},
           "examples": [{"n": 1, "f": 0.5, "b": True, "bytes": {"b64": "aGk="}, "list": [1, 2]}]}
    json_tensor.fill_classify_regress_request(doc, request)
    assert request.model_spec.signature_name == "s"
    group = request.input.example_list_with_context
    assert group.context.features.feature["site"].bytes_list.value == [b"a"]
    features = group.examples[0].features.feature
    assert features["n"].int64_list.value == [1] and features["f"].float_list.value == [0.5]
    assert features["b"].int64_list.value == [1] and features["bytes"].bytes_list.value == [b"hi"]
    assert features["list"].int64_list.value == [1, 2]


def test_classification_and_regression_results() -> None:
    result = classification_pb2.ClassificationResult()
    item = result.classifications.add()
    item.classes.add(label="car", score=0.2)
    item.classes.add(label="bike", score=0.8)
    assert json.loads(json_tensor.classification_json(result)) == {"results": [[["car", 0.2], ["bike", 0.8]]]}
    regression = regression_pb2.RegressionResult()
    regression.regressions.add(value=1.5)
    assert json.loads(json_tensor.regression_json(regression)) == {"results": [1.5]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"{", "JSON Parse error: Missing a name for object member. at offset: 1"),
        (b"[1] x", "JSON Parse error: The document root must not be followed by other values. at offset: 4"),
        (b"\xff", "JSON Parse error: Invalid encoding in string. at offset: 0"),
        (b'"text"', 'JSON Value: "text" Is not object'),
    ],
)
def test_parse_errors(body: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        json_tensor.parse_json(body)
    assert err.value.message == message
