"""`glimpse serve --enable_batching` with monitoring: merged runs, a full queue, metric names, graceful SIGTERM."""

from __future__ import annotations

import re
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2

from glimpse_wire.contract import IN_CLASS_INDEX, IN_IMAGE_BYTES, OUT_PROBABILITIES, SIG_CLASSIFY
from tests.serving.support import SIG_GRADIENTS, ServerProcess, add_version, example_bytes, predict_request

pytestmark = [pytest.mark.slow, pytest.mark.integration]

METRICS_PATH = "/monitoring/metrics"


def _start(root: Path, export_dir: Path, batching: str, name: str = "b") -> ServerProcess:
    base = root / name
    base.mkdir()
    add_version(base, export_dir, 1)
    (root / "batching.config").write_text(batching)
    (root / "monitoring.config").write_text(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n')
    server = ServerProcess(
        [f"--model_name={name}", f"--model_base_path={base}", "--enable_batching",
         f"--batching_parameters_file={root / 'batching.config'}",
         f"--monitoring_config_file={root / 'monitoring.config'}"],
        log_path=root / "server.log",
    )
    return server.start()


@pytest.fixture(scope="module")
def batching(tmp_path_factory: pytest.TempPathFactory, export_dir: Path) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("batching")
    server = _start(root, export_dir, "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 200000 }\n"
                                      "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 4 }\n"
                                      "allowed_batch_sizes: 4\nallowed_batch_sizes: 16\n")
    try:
        yield server
    finally:
        server.stop()


def metrics(server: ServerProcess) -> str:
    with urllib.request.urlopen(server.rest_url + METRICS_PATH, timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        return reply.read().decode()


def metric_value(text: str, name: str, labels: str = "") -> float:
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else r"(\{\})?") + r" (\S+)$"
    values = [float(m.group(m.lastindex)) for m in re.finditer(pattern, text, re.MULTILINE)]
    return values[0] if values else 0.0


def _concurrently(count: int, call) -> list:
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def one(i: int) -> None:
        barrier.wait(10)
        try:
            results[i] = call(i)
        except grpc.RpcError as e:
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_requests_are_merged(batching: ServerProcess, image: bytes) -> None:
    stub = batching.prediction_stub()
    runs_before = metric_value(metrics(batching), ":tensorflow:serving:batching_session:wrapped_run_count")
    single = tf.make_ndarray(stub.Predict(predict_request("b", image), timeout=30).outputs[OUT_PROBABILITIES])
    results = _concurrently(12, lambda i: stub.Predict(predict_request("b", image), timeout=60))
    assert all(isinstance(r, predict_pb2.PredictResponse) for r in results), results
    for reply in results:  # each caller gets its own row back, equal to an unbatched run
        np.testing.assert_allclose(tf.make_ndarray(reply.outputs[OUT_PROBABILITIES]), single, rtol=1e-5)
    runs = metric_value(metrics(batching), ":tensorflow:serving:batching_session:wrapped_run_count") - runs_before
    assert 1 <= runs - 1 <= 4, f"{runs - 1} session runs for 12 concurrent requests"


def test_multi_input_and_classify_requests_batch_too(batching: ServerProcess, image: bytes) -> None:
    stub = batching.prediction_stub()

    def explain(i: int):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "b"
        request.model_spec.signature_name = SIG_GRADIENTS
        request.inputs[IN_IMAGE_BYTES].CopyFrom(tf.make_tensor_proto([image]))
        request.inputs[IN_CLASS_INDEX].CopyFrom(tf.make_tensor_proto(np.array([i % 3], np.int32)))
        return stub.Predict(request, timeout=60)

    results = _concurrently(5, explain)
    assert [int(tf.make_ndarray(r.outputs["class_index"])[0]) for r in results] == [i % 3 for i in range(5)]

    def classify(i: int):
        from tensorflow.core.example import example_pb2

        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "b"
        request.model_spec.signature_name = SIG_CLASSIFY
        for _ in range(i + 1):
            request.input.example_list.examples.add().CopyFrom(example_pb2.Example.FromString(example_bytes(image)))
        return stub.Classify(request, timeout=60)

    results = _concurrently(4, classify)
    assert [len(r.result.classifications) for r in results] == [1, 2, 3, 4]


def test_monitoring_uses_tf_serving_names(batching: ServerProcess, image: bytes) -> None:
    batching.prediction_stub().Predict(predict_request("b", image), timeout=30)
    with pytest.raises(grpc.RpcError):
        batching.prediction_stub().Predict(predict_request("nope", image), timeout=30)
    text = metrics(batching)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    assert types[":tensorflow:serving:request_count"] == "counter"
    assert types[":tensorflow:serving:request_latency"] == "histogram"
    assert types[":tensorflow:serving:runtime_latency"] == "histogram"
    assert types[":tensorflow:serving:request_example_counts"] == "histogram"
    assert types[":tensorflow:serving:batching_session:queuing_latency"] == "histogram"
    assert metric_value(text, ":tensorflow:serving:request_count", 'model_name="b",status="OK"') >= 1
    assert metric_value(text, ":tensorflow:serving:request_count", 'model_name="nope",status="NOT_FOUND"') == 1
    assert metric_value(text, ":tensorflow:serving:request_latency_count",
                        'model_name="b",API="Predict",entrypoint="GRPC"') >= 1
    assert metric_value(text, ":tensorflow:serving:batching_session:queuing_latency_count",
                        'thread_pool_name="model_server_batch_threads"') >= 1
    assert "_total" not in text and "_created" not in text


def test_full_queue_refuses_requests(tmp_path: Path, export_dir: Path, image: bytes) -> None:
    server = _start(tmp_path, export_dir, "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 0 }\n"
                                          "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 1 }\n")
    try:
        stub = server.prediction_stub()

        def big(i: int):  # each request fills a whole batch
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "b"
            request.model_spec.signature_name = SIG_GRADIENTS
            request.inputs[IN_IMAGE_BYTES].CopyFrom(tf.make_tensor_proto([image] * 8))
            request.inputs[IN_CLASS_INDEX].CopyFrom(tf.make_tensor_proto(np.full(8, -1, np.int32)))
            return stub.Predict(request, timeout=60)

        results = _concurrently(24, big)
        refused = [r for r in results if isinstance(r, grpc.RpcError)]
        assert refused, "no request was refused"
        assert {(r.code(), r.details()) for r in refused} == {
            (grpc.StatusCode.UNAVAILABLE, "The batch scheduling queue to which this task was submitted is full")}
        assert len(refused) < len(results)
    finally:
        server.stop()


def test_sigterm_lets_the_request_in_flight_finish(tmp_path: Path, export_dir: Path, image: bytes) -> None:
    # A 3 s batch timeout keeps a lone request in flight long enough to send SIGTERM during it.
    server = _start(tmp_path, export_dir, "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 3000000 }\n")
    try:
        stub = server.prediction_stub()
        outcome: dict = {}

        def request() -> None:
            started = time.monotonic()
            try:
                outcome["reply"] = stub.Predict(predict_request("b", image), timeout=60)
            except grpc.RpcError as e:
                outcome["error"] = e
            outcome["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=request)
        thread.start()
        time.sleep(1.0)
        server.signal(signal.SIGTERM)
        thread.join(30)
        assert "error" not in outcome, outcome.get("error")
        assert outcome["reply"].model_spec.version.value == 1
        assert server.proc is not None and server.proc.wait(30) == 0
    finally:
        server.stop()
    assert "Received SIGTERM" in server.log() and "Server stopped" in server.log()


def test_sigterm_does_not_wait_for_idle_connections(tmp_path: Path, export_dir: Path, image: bytes) -> None:
    # Clients that hold connections open without a request in flight must not keep the server alive: a REST
    # connection that never sends its request, a gRPC health Watch stream and an idle gRPC channel.
    import socket

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    base = tmp_path / "idle"
    base.mkdir()
    add_version(base, export_dir, 1)
    server = ServerProcess(["--model_name=idle", f"--model_base_path={base}", "--shutdown_grace_seconds=2"],
                           log_path=tmp_path / "server.log").start()
    silent = socket.create_connection(("127.0.0.1", server.rest_port), timeout=5)
    try:
        silent.sendall(b"GET /v1/models/idle HTTP/1.1\r\n")  # the request is never finished
        stub = server.prediction_stub()
        assert stub.Predict(predict_request("idle", image), timeout=60).model_spec.version.value == 1
        watch = health_pb2_grpc.HealthStub(server.channel()).Watch(health_pb2.HealthCheckRequest(service="idle"))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        time.sleep(0.5)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.proc is not None and server.proc.wait(20) == 0
        # the grace period (2 s) bounds the wait; a hang would reach the 20 s above
        assert time.monotonic() - started < 12
        watch.cancel()
    finally:
        silent.close()
        server.stop()
    assert "Server stopped" in server.log()
