"""InferenceService in-process, on the real export: the signature method-name check and warm-up replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, prediction_log_pb2, regression_pb2

from glimpse_wire.contract import CLASSIFY_METHOD_NAME, SIG_CLASSIFY, SIG_DEFAULT, WARMUP_ASSET
from glimpse_wire.errors import DataLoss, Internal, InvalidArgument, ServingError, Unimplemented
from serving.manager import ServableHandle
from serving.service import InferenceService
from serving.session import SessionModel
from tests.serving.support import example_bytes, predict_request

pytestmark = pytest.mark.slow  # loads a SavedModel (about a second)


class _NoManager:
    """The service methods under test here take a handle directly; lookups are not part of them."""


@pytest.fixture(scope="module")
def servable(export_dir: Path) -> SessionModel:
    model = SessionModel(export_dir)
    yield model
    model.close()


def service(check: bool = False) -> InferenceService:
    return InferenceService(_NoManager(), method_name_check=check)  # type: ignore[arg-type]


def message_of(call, cls: type[ServingError] = InvalidArgument) -> str:
    with pytest.raises(cls) as err:
        call()
    return err.value.message


def _classify_request(image: bytes, signature: str) -> classification_pb2.ClassificationRequest:
    from tensorflow.core.example import example_pb2

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "m"
    request.model_spec.signature_name = signature
    request.input.example_list.examples.add().CopyFrom(example_pb2.Example.FromString(example_bytes(image)))
    return request


def test_method_name_check(servable: SessionModel, image: bytes) -> None:
    handle = ServableHandle("m", 1, servable)
    checked, unchecked = service(check=True), service(check=False)
    assert message_of(lambda: checked._classify(handle, _classify_request(image, SIG_DEFAULT), None)) == (
        f"Expected classification signature method_name to be {CLASSIFY_METHOD_NAME}. Was: tensorflow/serving/predict")
    assert message_of(lambda: unchecked._classify(handle, _classify_request(image, SIG_DEFAULT), None)) == (
        "Expected one or two output Tensors, found 3")
    regress = regression_pb2.RegressionRequest.FromString(_classify_request(image, SIG_CLASSIFY).SerializeToString())
    assert message_of(lambda: checked._regress(handle, regress, None)) == (
        f"Expected regression signature method_name to be tensorflow/serving/regress. Was: {CLASSIFY_METHOD_NAME}")
    # Predict accepts predict, classify and regress signatures either way.
    request = predict_request("m", image)
    request.model_spec.signature_name = SIG_CLASSIFY
    del request.inputs["image_bytes"]
    request.inputs["inputs"].CopyFrom(tf.make_tensor_proto([example_bytes(image)]))
    reply = checked._predict(handle, request, None)
    assert tf.make_ndarray(reply.outputs["scores"]).shape == (1, 3)


def test_method_name_check_on_unknown_method(servable: SessionModel, image: bytes) -> None:
    signature = servable.signature_defs[SIG_DEFAULT]
    original = signature.method_name
    signature.method_name = "my/method"
    try:
        handle = ServableHandle("m", 1, servable)
        assert message_of(lambda: service(check=True)._predict(handle, predict_request("m", image), None),
                          Internal) == (
            "Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
            "tensorflow/serving/classify, tensorflow/serving/regress}. Was: my/method")
        reply = service(check=False)._predict(handle, predict_request("m", image), None)
        assert "probabilities" in reply.outputs
    finally:
        signature.method_name = original


def _warmup_dir(tmp_path: Path, records: list[bytes] | None = None, raw: bytes | None = None) -> Path:
    path = tmp_path / WARMUP_ASSET
    path.parent.mkdir(parents=True)
    if raw is not None:
        path.write_bytes(raw)
    else:
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in records or []:
                writer.write(record)
    return tmp_path


def _predict_log(image: bytes) -> bytes:
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=predict_request("m", image))).SerializeToString()


def test_warmup_replays_records(servable: SessionModel, image: bytes, tmp_path: Path) -> None:
    classify = prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(
        request=_classify_request(image, SIG_CLASSIFY))).SerializeToString()
    path = _warmup_dir(tmp_path, [_predict_log(image), classify])
    fresh = SessionModel(servable.export_dir)
    try:
        service().warmup("m", 1, fresh, str(path))
        ran = {key[0] for key in fresh._prepared}  # the signatures the session has prepared callables for
    finally:
        fresh.close()
    assert ran == {SIG_DEFAULT, SIG_CLASSIFY}


@pytest.mark.parametrize(
    ("records", "raw", "cls", "message"),
    [
        (None, b"not a tfrecord file at all", DataLoss, "Please verify your warmup data is in TFRecord format."),
        ([prediction_log_pb2.PredictionLog(session_run_log=prediction_log_pb2.SessionRunLog()).SerializeToString()],
         None, Unimplemented, "Unsupported log_type for warmup: session_run_log"),
        ("too many", None, InvalidArgument, "Number of warmup records exceeds the maximum (1000) at "),
    ],
)
def test_warmup_failures(servable: SessionModel, image: bytes, tmp_path: Path, records, raw, cls, message) -> None:
    if records == "too many":
        records = [_predict_log(image)] * 1001
    path = _warmup_dir(tmp_path, records, raw)
    assert message in message_of(lambda: service().warmup("m", 1, servable, str(path)), cls)


def test_classification_result_rows_follow_examples(servable: SessionModel, image: bytes) -> None:
    handle = ServableHandle("m", 3, servable)
    request = _classify_request(image, SIG_CLASSIFY)
    request.input.example_list.examples.add().CopyFrom(request.input.example_list.examples[0])
    reply = service()._classify(handle, request, None)
    assert reply.model_spec.version.value == 3 and reply.model_spec.signature_name == SIG_CLASSIFY
    scores = np.array([[c.score for c in item.classes] for item in reply.result.classifications])
    assert scores.shape == (2, 3) and np.allclose(scores[0], scores[1])
