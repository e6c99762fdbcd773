"""In-process checks of the TF Serving options that need no server process: TFLite servables, Predict outputs as
tensor_content, warm-up iterations, CORS and preflights on the REST app, TLS on the gRPC listener."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
from werkzeug.test import Client

from glimpse_wire.contract import WARMUP_ASSET
from glimpse_wire.errors import InvalidArgument
from serving._proto import ssl_config_pb2
from serving.grpc_service import GrpcServer
from serving.manager import ModelManager
from serving.rest import RestApp
from serving.service import InferenceService
from serving.session import SessionModel
from serving.tflite import TfLiteModel, read_signature_defs
from tests.serving import halfplustwo


@pytest.fixture(scope="module")
def tflite_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tflite")
    plain = halfplustwo.tflite_half_plus_two(root / "plain" / halfplustwo.VERSION_DIR)
    stored = halfplustwo.tflite_half_plus_two(root / "sigdef" / halfplustwo.VERSION_DIR, with_signature_def=True)
    return plain, stored


def test_tflite_signatures_are_tflite_sessions(tflite_dirs: tuple[Path, Path]) -> None:
    plain, stored = tflite_dirs
    assert read_signature_defs((plain / "model.tflite").read_bytes()) == {}
    with TfLiteModel(plain) as model:  # generated from the tensors: aliases are the tensor names
        signature = model.signature_defs["serving_default"]
        assert (signature.inputs["x"].name, signature.outputs["y"].name) == ("x", "y")
        assert signature.inputs["x"].dtype == types_pb2.DT_FLOAT
        assert [d.size for d in signature.inputs["x"].tensor_shape.dim] == [1, 1]
    with TfLiteModel(stored, num_interpreters=2) as model:  # stored: the aliases of the stored SignatureDef
        signature = model.signature_defs["serving_default"]
        assert (signature.inputs["x"].name, signature.outputs["y"].name) == ("tflite_input", "y")
        assert signature.method_name == "tensorflow/serving/predict"
        out = model.run("serving_default", {"x": np.array([2.0, 4.0], np.float32)})
        np.testing.assert_allclose(out["y"], [3.0, 4.0])
        with pytest.raises(InvalidArgument, match="Unknown tensor 'nope'."):
            model.run_tensors({"nope": np.zeros(1, np.float32)}, ["y"])


@pytest.fixture(scope="module")
def half_plus_two(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return halfplustwo.tf1_half_plus(tmp_path_factory.mktemp("hp2") / halfplustwo.VERSION_DIR)


def _predict_x(value: float) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([value], dtype=tf.float32))
    return request


def test_predict_outputs_as_tensor_content(half_plus_two: Path) -> None:
    manager = ModelManager(SessionModel, file_system_poll_wait_seconds=0)
    config = halfplustwo_config(half_plus_two.parent)
    manager.reload_config(config)
    try:
        typed = InferenceService(manager).predict(_predict_x(2.0)).outputs["y"]
        packed = InferenceService(manager, tensor_content=True).predict(_predict_x(2.0)).outputs["y"]
    finally:
        manager.stop()
    assert list(typed.float_val) == [3.0] and not typed.tensor_content
    assert not packed.float_val and np.frombuffer(packed.tensor_content, np.float32).tolist() == [3.0]
    assert tf.make_ndarray(packed).tolist() == tf.make_ndarray(typed).tolist()


def halfplustwo_config(base: Path) -> Any:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    text = f'model_config_list {{ config {{ name: "m" base_path: "{base}" model_platform: "tensorflow" }} }}'
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


class _CountingServable:
    def __init__(self) -> None:
        signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
        signature.inputs["x"].name, signature.inputs["x"].dtype = "x:0", types_pb2.DT_FLOAT
        signature.outputs["y"].name, signature.outputs["y"].dtype = "y:0", types_pb2.DT_FLOAT
        self.signature_defs = {"serving_default": signature}
        self.runs = 0

    def run(self, signature_name: str, inputs: dict, output_filter: list) -> dict:
        self.runs += 1
        return {"y": np.asarray(inputs["x"]) * 0.5 + 2}


def test_warmup_records_are_replayed_num_request_iterations_times(tmp_path: Path) -> None:
    (tmp_path / WARMUP_ASSET).parent.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(tmp_path / WARMUP_ASSET)) as writer:
        for value in (1.0, 2.0):
            entry = prediction_log_pb2.PredictionLog()
            entry.predict_log.request.CopyFrom(_predict_x(value))
            writer.write(entry.SerializeToString())
    manager = ModelManager(lambda path: None, file_system_poll_wait_seconds=0)
    for iterations, runs in ((0, 2), (3, 6)):
        servable = _CountingServable()
        InferenceService(manager, warmup_iterations=iterations).warmup("m", 1, servable, str(tmp_path))
        assert servable.runs == runs


def test_cors_headers_and_preflights() -> None:
    headers = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST, GET",
               "Access-Control-Allow-Headers": "Content-Type"}
    with_cors = Client(RestApp(None, cors=True))  # type: ignore[arg-type]
    without = Client(RestApp(None))  # type: ignore[arg-type]
    reply = with_cors.open("/v1/models/m:predict", method="OPTIONS", headers={"Origin": "https://app.example"})
    assert reply.status_code == 200 and {k: reply.headers.get(k) for k in headers} == headers
    assert with_cors.open("/v1/models/m", method="OPTIONS").status_code == 400
    reply = with_cors.get("/v1/models")
    assert reply.status_code == 400 and reply.json == {"error": "Missing model name in request."}
    assert {k: reply.headers.get(k) for k in headers} == headers
    reply = without.open("/v1/models/m:predict", method="OPTIONS", headers={"Origin": "http://localhost:3000"})
    assert reply.status_code == 200 and "Access-Control-Allow-Origin" not in reply.headers


def _self_signed() -> tuple[bytes, bytes]:
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def test_ssl_config_serves_grpc_over_tls() -> None:
    key, cert = _self_signed()
    ssl = ssl_config_pb2.SSLConfig(server_key=key.decode(), server_cert=cert.decode())
    server = GrpcServer(InferenceService(ModelManager(lambda path: None)), ["localhost:0"], max_workers=2, ssl=ssl)
    server.set_serving("", True)
    server.start()
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert)
        with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(f"localhost:{server.port}") as channel, pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    finally:
        server.stop(0)


def test_socket_only_server_with_the_healthcheck_flag(tmp_path: Path) -> None:
    """--port=0 --grpc_socket_path: gRPC on the Unix socket only; --enable_grpc_healthcheck_service adds TF Serving's
    two service entries to the health service."""
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    from serving.config import ServerConfig
    from serving.server import ModelServer

    (tmp_path / "m" / "0007").mkdir(parents=True)
    socket_path = tmp_path / "grpc.sock"
    config = ServerConfig(port=0, rest_api_port=0, grpc_socket_path=str(socket_path), model_name="m",
                          model_base_path=str(tmp_path / "m"), enable_grpc_healthcheck_service=True,
                          file_system_poll_wait_seconds=0, enable_profiler=False)
    server = ModelServer(config, loader=lambda path: _CountingServable())
    server.start()
    try:
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "ModelService", "PredictionService", "m"):
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = "m"
            (status,) = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                request, timeout=10).model_version_status
            assert (status.version, status.state) == (7, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    finally:
        server.stop(0)
    assert server.rest_port is None
