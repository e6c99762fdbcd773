"""`glimpse serve`'s REST API over HTTP: TF Serving's JSON shapes, status codes and error messages."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest

from glimpse_wire.contract import (
    EXAMPLE_IMAGE_KEY,
    IN_CLASS_INDEX,
    IN_IMAGE_BYTES,
    OUT_CLASS_INDEX,
    OUT_HEATMAP,
    OUT_LABEL,
    OUT_PROBABILITIES,
    SIG_CLASSIFY,
    SIG_PIXELS,
)
from tests.serving.conftest import MODEL
from tests.serving.support import CLASS_NAMES, SIG_GRADIENTS, SIZE, ServerProcess, pixels

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def http(server: ServerProcess, method: str, path: str, body: Any = None) -> tuple[int, str, Any]:
    """(status, content type, parsed JSON or raw text)."""
    data = None
    if body is not None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    request = urllib.request.Request(server.rest_url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            status, ctype, raw = reply.status, reply.headers.get("Content-Type", ""), reply.read()
    except urllib.error.HTTPError as e:
        status, ctype, raw = e.code, e.headers.get("Content-Type", ""), e.read()
    text = raw.decode()
    try:
        return status, ctype, json.loads(text)
    except ValueError:
        return status, ctype, text


def b64(image: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(image).decode()}


def test_status(served: ServerProcess) -> None:
    status, ctype, body = http(served, "GET", f"/v1/models/{MODEL}")
    assert status == 200 and ctype == "application/json"
    assert body == {"model_version_status": [
        {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}} for v in (2, 1)
    ]}
    status, _, body = http(served, "GET", f"/v1/models/{MODEL}/versions/1")
    assert status == 200 and [s["version"] for s in body["model_version_status"]] == ["1"]


def test_metadata(served: ServerProcess) -> None:
    status, _, body = http(served, "GET", f"/v1/models/{MODEL}/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": MODEL, "signature_name": "", "version": "2"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert signatures["serving_default"]["inputs"][IN_IMAGE_BYTES]["dtype"] == "DT_STRING"
    assert signatures[SIG_CLASSIFY]["method_name"] == "tensorflow/serving/classify"
    assert signatures[SIG_PIXELS]["inputs"]["images"]["tensor_shape"]["dim"][1]["size"] == str(SIZE)
    status, _, body = http(served, "GET", f"/v1/models/{MODEL}/labels/stable/metadata")
    assert status == 200 and body["model_spec"]["version"] == "1"


def test_predict_row_format_with_b64(served: ServerProcess, image: bytes) -> None:
    status, _, body = http(served, "POST", f"/v1/models/{MODEL}:predict", {"instances": [b64(image), b64(image)]})
    assert status == 200
    rows = body["predictions"]
    assert len(rows) == 2 and set(rows[0]) == {OUT_CLASS_INDEX, OUT_LABEL, OUT_PROBABILITIES}
    assert rows[0][OUT_LABEL] == CLASS_NAMES[rows[0][OUT_CLASS_INDEX]]
    assert sum(rows[0][OUT_PROBABILITIES]) == pytest.approx(1.0, rel=1e-5)


def test_predict_columnar_format(served: ServerProcess, image: bytes) -> None:
    status, _, body = http(served, "POST", f"/v1/models/{MODEL}:predict", {"inputs": [b64(image)]})
    assert status == 200
    outputs = body["outputs"]
    assert set(outputs) == {OUT_CLASS_INDEX, OUT_LABEL, OUT_PROBABILITIES}
    assert np.array(outputs[OUT_PROBABILITIES]).shape == (1, len(CLASS_NAMES))


def test_predict_pixels_matches_grpc(served: ServerProcess) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    batch = pixels(2, seed=3)
    status, _, body = http(served, "POST", f"/v1/models/{MODEL}:predict",
                           {"signature_name": SIG_PIXELS, "instances": batch.tolist()})
    assert status == 200
    rest = np.array([row[OUT_PROBABILITIES] for row in body["predictions"]], dtype=np.float32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = SIG_PIXELS
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(batch))
    grpc_probs = tf.make_ndarray(served.prediction_stub().Predict(request, timeout=30).outputs[OUT_PROBABILITIES])
    np.testing.assert_array_equal(rest, grpc_probs)  # shortest round-tripping decimals: the same float32 values


def test_predict_named_instances(served: ServerProcess, image: bytes) -> None:
    instances = [{IN_IMAGE_BYTES: b64(image), IN_CLASS_INDEX: 2}]
    status, _, body = http(served, "POST", f"/v1/models/{MODEL}/versions/1:predict",
                           {"signature_name": SIG_GRADIENTS, "instances": instances})
    assert status == 200
    row = body["predictions"][0]
    assert row[OUT_CLASS_INDEX] == 2
    assert np.array(row[OUT_HEATMAP]).shape == (SIZE, SIZE)


def test_classify(served: ServerProcess, image: bytes) -> None:
    examples = [{EXAMPLE_IMAGE_KEY: b64(image)}]
    status, _, body = http(served, "POST", f"/v1/models/{MODEL}/labels/canary:classify",
                           {"signature_name": SIG_CLASSIFY, "examples": examples})
    assert status == 200
    (result,) = body["results"]  # TF Serving's code writes "results" (its REST guide says "result")
    assert [label for label, _ in result] == list(CLASS_NAMES)
    assert sum(score for _, score in result) == pytest.approx(1.0, rel=1e-5)


def _doc(value: Any) -> str:
    return json.dumps(value, indent=4)


REST_ERRORS = [
    ("unknown model", "POST", "/v1/models/foo:predict", {"instances": [1]}, 404,
     "Servable not found for request: Latest(foo)"),
    ("unknown version", "POST", f"/v1/models/{MODEL}/versions/3:predict", {"instances": [1]}, 404,
     f"Servable not found for request: Specific({MODEL}, 3)"),
    ("unknown label", "POST", f"/v1/models/{MODEL}/labels/nope:predict", {"instances": [1]}, 400,
     "Unrecognized servable version label: nope"),
    ("unknown signature", "POST", f"/v1/models/{MODEL}:predict", {"signature_name": "x", "instances": [1]}, 400,
     'Serving signature name: "x" not found in signature def'),
    ("empty body", "POST", f"/v1/models/{MODEL}:predict", "", 400, "JSON Parse error: The document is empty"),
    ("bad json", "POST", f"/v1/models/{MODEL}:predict", "{", 400,
     "JSON Parse error: Missing a name for object member. at offset: 1"),
    ("not an object", "POST", f"/v1/models/{MODEL}:predict", "[1]", 400, f"JSON Value: {_doc([1])} Is not object"),
    ("signature not a string", "POST", f"/v1/models/{MODEL}:predict", {"signature_name": 1}, 400,
     f"JSON Value: {_doc({'signature_name': 1})} not formatted correctly. 'signature_name' key must be a string "
     "value."),
    ("neither key", "POST", f"/v1/models/{MODEL}:predict", {"x": 1}, 400, "Missing 'inputs' or 'instances' key"),
    ("both keys", "POST", f"/v1/models/{MODEL}:predict", {"instances": [1], "inputs": [1]}, 400,
     f"JSON Value: {_doc({'instances': [1], 'inputs': [1]})} Not formatted correctly expecting only one of "
     "'inputs' or 'instances' keys to exist "),
    ("instances not a list", "POST", f"/v1/models/{MODEL}:predict", {"instances": 1}, 400,
     f"JSON Value: {_doc({'instances': 1})} Excepting 'instances' to be an list/array"),
    ("empty instances", "POST", f"/v1/models/{MODEL}:predict", {"instances": []}, 400,
     f"JSON Value: {_doc({'instances': []})} No values in 'instances' array"),
    ("wrong json type", "POST", f"/v1/models/{MODEL}:predict", {"instances": [1]}, 400,
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: 1 Type: Number is "
     "not of expected type: string"),
    ("ragged instances", "POST", f"/v1/models/{MODEL}:predict",
     {"signature_name": SIG_PIXELS, "instances": [[[[1.0] * 3] * SIZE] * SIZE, [[[1.0] * 3] * SIZE]]}, 400,
     "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: "
     f"{SIZE * SIZE * 3} but got: {SIZE * 3}"),
    ("plain list for two inputs", "POST", f"/v1/models/{MODEL}:predict",
     {"signature_name": SIG_GRADIENTS, "instances": [1]}, 400,
     "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
     "tensorinfo_map"),
    ("missing named input", "POST", f"/v1/models/{MODEL}:predict",
     {"signature_name": SIG_GRADIENTS, "inputs": {IN_CLASS_INDEX: [1]}}, 400,
     f"Missing named input: {IN_IMAGE_BYTES} in 'inputs' object."),
    ("bad base64", "POST", f"/v1/models/{MODEL}:predict", {"instances": [{"b64": "***"}]}, 400,
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: Unable to base64 decode"),
    ("malformed path", "POST", f"/v1/models/{MODEL}:explode", {}, 400,
     f"Malformed request: POST /v1/models/{MODEL}:explode"),
    ("missing model name", "GET", "/v1/models", None, 400, "Missing model name in request."),
    ("status of unknown model", "GET", "/v1/models/foo", None, 404, "Could not find any versions of model foo"),
    ("classify without examples", "POST", f"/v1/models/{MODEL}:classify", {"signature_name": SIG_CLASSIFY}, 400,
     f"JSON Value: {_doc({'signature_name': SIG_CLASSIFY})} When method is classify, key 'examples' is expected "
     "and was not found"),
    ("classify predict signature", "POST", f"/v1/models/{MODEL}:classify", {"examples": [{"x": 1}]}, 400,
     "Expected one or two output Tensors, found 3"),
    ("regress", "POST", f"/v1/models/{MODEL}:regress", {"signature_name": SIG_CLASSIFY, "examples": [{"x": 1}]},
     400, "Expected one output Tensor."),
    ("mixed feature kinds", "POST", f"/v1/models/{MODEL}:classify",
     {"signature_name": SIG_CLASSIFY, "examples": [{"x": [1, "a"]}]}, 400,
     "Unexpected element type in feature: x expecting type: int64"),
]


@pytest.mark.parametrize(("case", "method", "path", "body", "status", "message"), REST_ERRORS,
                         ids=[c[0] for c in REST_ERRORS])
def test_rest_errors(served: ServerProcess, case, method, path, body, status, message) -> None:
    got_status, ctype, got = http(served, method, path, body)
    assert (got_status, got) == (status, {"error": message})
    assert ctype == "application/json"


def test_paths_outside_v1_are_not_found(served: ServerProcess) -> None:
    assert http(served, "GET", "/monitoring/prometheus/metrics")[0] == 404  # monitoring is off on this server
    assert http(served, "GET", "/")[0] == 404
