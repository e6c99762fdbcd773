"""`glimpse serve` over gRPC, driven by tensorflow-serving-api's own stubs: every RPC and every TF Serving error."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    predict_pb2,
    regression_pb2,
)

from glimpse_wire.contract import (
    CLASSIFY_METHOD_NAME,
    IN_CLASS_INDEX,
    IN_IMAGE_BYTES,
    IN_IMAGES,
    OUT_CLASS_INDEX,
    OUT_HEATMAP,
    OUT_LABEL,
    OUT_PROBABILITIES,
    SIG_CLASSIFY,
    SIG_DEFAULT,
    SIG_PIXELS,
)
from tests.serving.conftest import MODEL
from tests.serving.support import (
    CLASS_NAMES,
    SIG_GRADIENTS,
    SIZE,
    ServerProcess,
    example_bytes,
    pixels,
    predict_request,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REGRESS_METHOD = "tensorflow/serving/regress"


def _call(method, request):
    """(code name, details) of a failing call; the response of a successful one."""
    try:
        return method(request, timeout=30)
    except grpc.RpcError as e:
        return e.code().name, e.details()


def test_predict_default_signature(served: ServerProcess, image: bytes) -> None:
    reply = served.prediction_stub().Predict(predict_request(MODEL, image, batch=2), timeout=30)
    assert reply.model_spec.name == MODEL
    assert reply.model_spec.signature_name == SIG_DEFAULT
    assert reply.model_spec.version.value == 2  # latest of the loaded versions
    probabilities = tf.make_ndarray(reply.outputs[OUT_PROBABILITIES])
    assert probabilities.shape == (2, len(CLASS_NAMES))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # TF Serving answers with typed fields (AsProtoField), which WIT reads.
    assert len(reply.outputs[OUT_PROBABILITIES].float_val) == 2 * len(CLASS_NAMES)
    assert not reply.outputs[OUT_PROBABILITIES].tensor_content
    index = tf.make_ndarray(reply.outputs[OUT_CLASS_INDEX])
    labels = [v.decode() for v in tf.make_ndarray(reply.outputs[OUT_LABEL])]
    assert labels == [CLASS_NAMES[i] for i in index]
    assert int(index[0]) == int(np.argmax(probabilities[0]))


def test_warmup_records_were_replayed_at_load(served: ServerProcess) -> None:
    import re

    counts = re.findall(r"warmup_requests\. Number of warmup records read: (\d+)\.", served.log())
    assert counts and int(counts[0]) > 0
    assert "No warmup data file found at" in served.log()  # version 1 was copied without them


def test_predict_accepts_tensor_content_and_typed_fields(served: ServerProcess) -> None:
    batch = pixels(2)
    as_content = predict_pb2.PredictRequest()
    as_content.model_spec.name = MODEL
    as_content.model_spec.signature_name = SIG_PIXELS
    as_content.inputs[IN_IMAGES].CopyFrom(tf.make_tensor_proto(batch))
    assert as_content.inputs[IN_IMAGES].tensor_content
    as_fields = predict_pb2.PredictRequest()
    as_fields.CopyFrom(as_content)
    typed = as_fields.inputs[IN_IMAGES]
    typed.ClearField("tensor_content")
    typed.float_val.extend(batch.reshape(-1).tolist())
    stub = served.prediction_stub()
    a = tf.make_ndarray(stub.Predict(as_content, timeout=30).outputs[OUT_PROBABILITIES])
    b = tf.make_ndarray(stub.Predict(as_fields, timeout=30).outputs[OUT_PROBABILITIES])
    np.testing.assert_array_equal(a, b)


def test_predict_output_filter(served: ServerProcess, image: bytes) -> None:
    request = predict_request(MODEL, image)
    request.output_filter.append(OUT_LABEL)
    reply = served.prediction_stub().Predict(request, timeout=30)
    assert set(reply.outputs) == {OUT_LABEL}


def test_predict_two_input_signature(served: ServerProcess, image: bytes) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = SIG_GRADIENTS
    request.inputs[IN_IMAGE_BYTES].CopyFrom(tf.make_tensor_proto([image, image]))
    request.inputs[IN_CLASS_INDEX].CopyFrom(tf.make_tensor_proto(np.array([-1, 0], dtype=np.int32)))
    reply = served.prediction_stub().Predict(request, timeout=30)
    heatmap = tf.make_ndarray(reply.outputs[OUT_HEATMAP])
    assert heatmap.shape == (2, SIZE, SIZE)
    assert 0.0 <= heatmap.min() and heatmap.max() <= 1.0 and heatmap.max() > 0.0
    assert tf.make_ndarray(reply.outputs[OUT_CLASS_INDEX])[1] == 0


def test_predict_by_version_and_label(served: ServerProcess, image: bytes) -> None:
    stub = served.prediction_stub()
    assert stub.Predict(predict_request(MODEL, image, version=1), timeout=30).model_spec.version.value == 1
    assert stub.Predict(predict_request(MODEL, image, label="stable"), timeout=30).model_spec.version.value == 1
    assert stub.Predict(predict_request(MODEL, image, label="canary"), timeout=30).model_spec.version.value == 2


def test_message_larger_than_grpc_default_limit(served: ServerProcess) -> None:
    """TF Serving accepts INT32_MAX-byte messages; this batch of float images is over gRPC's 4 MiB default."""
    count = 5 * 2**20 // (SIZE * SIZE * 3 * 4) + 1
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = SIG_PIXELS
    request.inputs[IN_IMAGES].CopyFrom(tf.make_tensor_proto(pixels(count)))
    assert request.ByteSize() > 5 * 2**20
    reply = served.prediction_stub().Predict(request, timeout=120)
    assert tf.make_ndarray(reply.outputs[OUT_PROBABILITIES]).shape == (count, len(CLASS_NAMES))


def _classify_request(image: bytes, n: int = 2, signature: str = SIG_CLASSIFY) -> Any:
    from tensorflow.core.example import example_pb2

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = signature
    for _ in range(n):
        request.input.example_list.examples.add().CopyFrom(example_pb2.Example.FromString(example_bytes(image)))
    return request


def test_classify(served: ServerProcess, image: bytes) -> None:
    reply = served.prediction_stub().Classify(_classify_request(image), timeout=30)
    assert reply.model_spec.signature_name == SIG_CLASSIFY and reply.model_spec.version.value == 2
    assert len(reply.result.classifications) == 2
    classes = reply.result.classifications[0].classes
    assert [c.label for c in classes] == list(CLASS_NAMES)
    assert sum(c.score for c in classes) == pytest.approx(1.0, rel=1e-5)
    # The same image through Predict gives the same probabilities.
    predicted = served.prediction_stub().Predict(predict_request(MODEL, image), timeout=30)
    np.testing.assert_allclose([c.score for c in classes],
                               tf.make_ndarray(predicted.outputs[OUT_PROBABILITIES])[0], rtol=1e-5)


def test_classify_with_context(served: ServerProcess, image: bytes) -> None:
    """Context features are merged into every example (context bytes + example bytes)."""
    from tensorflow.core.example import example_pb2

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = SIG_CLASSIFY
    group = request.input.example_list_with_context
    group.context.CopyFrom(example_pb2.Example.FromString(example_bytes(image)))
    group.examples.add()  # empty examples take the image from the context
    reply = served.prediction_stub().Classify(request, timeout=30)
    assert len(reply.result.classifications) == 1


def test_regress_on_classification_signature(served: ServerProcess, image: bytes) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = SIG_CLASSIFY
    request.input.CopyFrom(_classify_request(image).input)
    assert _call(served.prediction_stub().Regress, request) == ("INVALID_ARGUMENT", "Expected one output Tensor.")


def test_multi_inference(served: ServerProcess, image: bytes) -> None:
    request = inference_pb2.MultiInferenceRequest()
    task = request.tasks.add()
    task.model_spec.name = MODEL
    task.model_spec.signature_name = SIG_CLASSIFY
    task.method_name = CLASSIFY_METHOD_NAME
    request.input.CopyFrom(_classify_request(image, n=3).input)
    reply = served.prediction_stub().MultiInference(request, timeout=30)
    assert len(reply.results) == 1
    assert len(reply.results[0].classification_result.classifications) == 3
    assert reply.results[0].model_spec.version.value == 2


def test_get_model_metadata(served: ServerProcess) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    reply = served.prediction_stub().GetModelMetadata(request, timeout=30)
    assert reply.model_spec.name == MODEL and reply.model_spec.version.value == 2
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert reply.metadata["signature_def"].Unpack(signatures)
    assert {SIG_DEFAULT, SIG_PIXELS, SIG_CLASSIFY, SIG_GRADIENTS} <= set(signatures.signature_def)
    assert signatures.signature_def[SIG_CLASSIFY].method_name == CLASSIFY_METHOD_NAME
    assert set(signatures.signature_def[SIG_GRADIENTS].inputs) == {IN_IMAGE_BYTES, IN_CLASS_INDEX}


def test_get_model_status(served: ServerProcess) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    reply = served.model_stub().GetModelStatus(request, timeout=30)
    assert [s.version for s in reply.model_version_status] == [2, 1]  # TF Serving lists the highest first
    for status in reply.model_version_status:
        assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert status.status.error_code == 0 and status.status.error_message == ""
    request.model_spec.version.value = 1
    only = served.model_stub().GetModelStatus(request, timeout=30)
    assert [s.version for s in only.model_version_status] == [1]


def test_health_per_model_and_overall(served: ServerProcess) -> None:
    stub = health_pb2_grpc.HealthStub(served.channel())
    for service in ("", MODEL):
        assert stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_tf_serving_services(served: ServerProcess) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel())
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
            "grpc.health.v1.Health"} <= names


# -- TF Serving's errors: (request builder, RPC, code, message) ---------------------------------------------------
def _no_spec(image: bytes) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.inputs[IN_IMAGE_BYTES].CopyFrom(tf.make_tensor_proto([image]))
    return request


def _set(**fields):
    def change(request):
        for key, value in fields.items():
            if key == "name":
                request.model_spec.name = value
            elif key == "version":
                request.model_spec.version.value = value
            elif key == "label":
                request.model_spec.version_label = value
            elif key == "signature":
                request.model_spec.signature_name = value
        return request

    return change


def _mutate(image: bytes, *changes) -> predict_pb2.PredictRequest:
    request = predict_request(MODEL, image)
    for change in changes:
        change(request)
    return request


def _extra_input(request):
    request.inputs["extra"].CopyFrom(tf.make_tensor_proto([1.0]))


def _rename_input(request):
    tensor = request.inputs.pop(IN_IMAGE_BYTES)
    request.inputs["pixels"].CopyFrom(tensor)


def _float_input(request):
    request.inputs[IN_IMAGE_BYTES].CopyFrom(tf.make_tensor_proto(np.array([1.0], dtype=np.float32)))


def _filter(*aliases):
    def change(request):
        request.output_filter.extend(aliases)

    return change


def _bad_tensor(request):
    tensor = request.inputs[IN_IMAGE_BYTES]
    tensor.tensor_shape.dim[0].size = 1
    tensor.string_val.append(b"one too many")


PREDICT_ERRORS = [
    ("missing model spec", _no_spec, "INVALID_ARGUMENT", "Missing ModelSpec"),
    ("unknown model", lambda i: _mutate(i, _set(name="foo")), "NOT_FOUND",
     "Servable not found for request: Latest(foo)"),
    ("unknown version", lambda i: _mutate(i, _set(version=3)), "NOT_FOUND",
     f"Servable not found for request: Specific({MODEL}, 3)"),
    ("unknown label", lambda i: _mutate(i, _set(label="x")), "INVALID_ARGUMENT",
     "Unrecognized servable version label: x"),
    ("unknown signature", lambda i: _mutate(i, _set(signature="x")), "FAILED_PRECONDITION",
     'Serving signature key "x" not found.'),
    ("extra input", lambda i: _mutate(i, _extra_input), "INVALID_ARGUMENT",
     "input size does not match signature: 2!=1 len({extra,image_bytes}) != len({image_bytes}). "
     "Sent extra: {extra}. Missing but required: {}."),
    ("missing input", lambda i: _mutate(i, _set(signature=SIG_GRADIENTS)), "INVALID_ARGUMENT",
     "input size does not match signature: 1!=2 len({image_bytes}) != len({class_index,image_bytes}). "
     "Sent extra: {}. Missing but required: {class_index}."),
    ("wrong alias", lambda i: _mutate(i, _rename_input), "INVALID_ARGUMENT",
     "input tensor alias not found in signature: pixels. Inputs expected to be in the set {image_bytes}."),
    ("wrong dtype", lambda i: _mutate(i, _float_input), "INVALID_ARGUMENT",
     "Expects arg[0] to be string but float is provided"),
    ("wrong dtype (pixels)", lambda i: _mutate(i, _set(signature=SIG_PIXELS), _rename_to_images), "INVALID_ARGUMENT",
     "Expects arg[0] to be float but string is provided"),
    ("unknown output alias", lambda i: _mutate(i, _filter("nope")), "INVALID_ARGUMENT",
     "output tensor alias not found in signature: nope Outputs expected to be in the set "
     "{class_index,label,probabilities}."),
    ("duplicate output alias", lambda i: _mutate(i, _filter(OUT_LABEL, OUT_LABEL)), "INVALID_ARGUMENT",
     "duplicate output tensor alias: label"),
    ("unparsable tensor", lambda i: _mutate(i, _bad_tensor), "INVALID_ARGUMENT", "tensor parsing error: image_bytes"),
    ("empty model name", lambda i: _mutate(i, _set(name="")), "INVALID_ARGUMENT", "ModelSpec has no name specified."),
]


def _rename_to_images(request):
    tensor = request.inputs.pop(IN_IMAGE_BYTES)
    request.inputs[IN_IMAGES].CopyFrom(tensor)


@pytest.mark.parametrize(("case", "build", "code", "message"), PREDICT_ERRORS, ids=[c[0] for c in PREDICT_ERRORS])
def test_predict_errors(served: ServerProcess, image: bytes, case: str, build, code: str, message: str) -> None:
    assert _call(served.prediction_stub().Predict, build(image)) == (code, message)


def test_long_error_messages_are_truncated(served: ServerProcess, image: bytes) -> None:
    request = predict_request(MODEL, image)
    request.model_spec.signature_name = "s" * 2000
    code, details = _call(served.prediction_stub().Predict, request)
    full = f'Serving signature key "{"s" * 2000}" not found.'
    assert code == "FAILED_PRECONDITION"
    assert details == full[:1024] + "...TRUNCATED"


def _status_request(name: str, version: int | None = None):
    request = get_model_status_pb2.GetModelStatusRequest()
    if name is not None:
        request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return request


def _metadata_request(fields, name: str | None = MODEL):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
    if name is not None:
        request.model_spec.name = name
    return request


def _classify_variant(image: bytes, *, signature: str = SIG_CLASSIFY, examples: int = 1, name: str = MODEL):
    request = _classify_request(image, n=examples, signature=signature)
    request.model_spec.name = name
    return request


OTHER_ERRORS = [
    ("status: missing spec", "model", "GetModelStatus", lambda i: get_model_status_pb2.GetModelStatusRequest(),
     "INVALID_ARGUMENT", "Missing ModelSpec"),
    ("status: unknown model", "model", "GetModelStatus", lambda i: _status_request("foo"), "NOT_FOUND",
     "Could not find any versions of model foo"),
    ("status: unknown version", "model", "GetModelStatus", lambda i: _status_request(MODEL, 7), "NOT_FOUND",
     f"Could not find version 7 of model {MODEL}"),
    ("metadata: missing spec", "prediction", "GetModelMetadata",
     lambda i: get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]),
     "INVALID_ARGUMENT", "Missing ModelSpec"),
    ("metadata: no field", "prediction", "GetModelMetadata", lambda i: _metadata_request([]), "INVALID_ARGUMENT",
     "GetModelMetadataRequest must specify at least one metadata_field"),
    ("metadata: other field", "prediction", "GetModelMetadata", lambda i: _metadata_request(["foo"]),
     "INVALID_ARGUMENT", "Metadata field %s is not supportedfoo"),
    ("metadata: unknown model", "prediction", "GetModelMetadata",
     lambda i: _metadata_request(["signature_def"], "foo"), "NOT_FOUND", "Servable not found for request: Latest(foo)"),
    ("classify: unknown signature", "prediction", "Classify", lambda i: _classify_variant(i, signature="x"),
     "INVALID_ARGUMENT", "No signature was found with the name: x"),
    ("classify: predict signature", "prediction", "Classify", lambda i: _classify_variant(i, signature=SIG_DEFAULT),
     "INVALID_ARGUMENT", "Expected one or two output Tensors, found 3"),
    ("classify: empty input", "prediction", "Classify", lambda i: _classify_variant(i, examples=0),
     "INVALID_ARGUMENT", "Input is empty."),
    ("classify: unknown model", "prediction", "Classify", lambda i: _classify_variant(i, name="foo"), "NOT_FOUND",
     "Servable not found for request: Latest(foo)"),
    ("regress: default signature", "prediction", "Regress",
     lambda i: regression_pb2.RegressionRequest(model_spec={"name": MODEL}), "INVALID_ARGUMENT",
     "Expected one output Tensor."),
    ("multi: no tasks", "prediction", "MultiInference", lambda i: inference_pb2.MultiInferenceRequest(),
     "INVALID_ARGUMENT", "ModelSpec has no name specified."),
    ("multi: predict method", "prediction", "MultiInference",
     lambda i: inference_pb2.MultiInferenceRequest(tasks=[inference_pb2.InferenceTask(
         model_spec={"name": MODEL, "signature_name": SIG_CLASSIFY}, method_name="tensorflow/serving/predict")]),
     "UNIMPLEMENTED", "Unsupported signature method_name: tensorflow/serving/predict"),
    ("multi: duplicate signature", "prediction", "MultiInference",
     lambda i: inference_pb2.MultiInferenceRequest(tasks=[inference_pb2.InferenceTask(
         model_spec={"name": MODEL, "signature_name": SIG_CLASSIFY}, method_name=CLASSIFY_METHOD_NAME)] * 2),
     "INVALID_ARGUMENT", "Duplicate evaluation of signature: classification"),
]


@pytest.mark.parametrize(("case", "stub", "method", "build", "code", "message"), OTHER_ERRORS,
                         ids=[c[0] for c in OTHER_ERRORS])
def test_other_rpc_errors(served: ServerProcess, image: bytes, case, stub, method, build, code, message) -> None:
    target = served.model_stub() if stub == "model" else served.prediction_stub()
    assert _call(getattr(target, method), build(image)) == (code, message)


def test_regress_on_two_input_signature(served: ServerProcess, image: bytes) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = SIG_GRADIENTS
    request.input.CopyFrom(_classify_request(image).input)
    code, details = _call(served.prediction_stub().Regress, request)
    assert (code, details) == ("INVALID_ARGUMENT", "Expected one input Tensor.")
