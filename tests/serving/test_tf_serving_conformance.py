"""`glimpse serve` started and driven exactly as TF Serving's own integration tests start and drive
tensorflow_model_server (tensorflow_serving/model_servers/tensorflow_model_server_test.py and its test base).

Each server below gets TF Serving's command line (RunServer: ``--port --rest_api_port --rest_api_timeout_in_ms
--grpc_socket_path`` then ``--model_config_file`` or ``--model_name --model_base_path``, ``--prefer_tflite_model=true``,
``--monitoring_config_file``, ``--model_config_file_poll_wait_seconds``, ``--grpc_channel_arguments=...,
grpc.so_reuseaddr=1``) with nothing added (only the server whose version files arrive late also gets
``--load_retry_interval_micros``), on half-plus-two models of our own in ``00000123`` directories
(tests/serving/halfplustwo.py). All of them start at once (one session fixture) and are waited for the way TF
Serving's WaitForServerReady does; the tests then send the requests TF Serving's tests send and check what they
check. Each server has a socket path of its own (TF Serving's tests share /tmp/tf-serving.sock).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.serving import halfplustwo
from tests.serving.support import REPO_ROOT, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

RPC_TIMEOUT = 20.0
HTTP_REST_TIMEOUT_MS = 5000
VERSION = halfplustwo.VERSION


@dataclass
class Models:
    root: Path
    half_plus_two: Path
    half_plus_three: Path
    tf2: Path
    keras: Path
    checkpoint: Path
    checkpoint_signatures: Path
    tflite: Path
    tflite_with_sigdef: Path
    good_config: Path
    bad_config: Path
    monitoring_config: Path


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("tfs")

    def version(name: str) -> Path:
        return root / name / halfplustwo.VERSION_DIR

    halfplustwo.tf1_half_plus(version("saved_model_half_plus_two_cpu"))
    halfplustwo.tf1_half_plus(version("saved_model_half_plus_three"), b=3.0)
    halfplustwo.tf2_half_plus_two(version("saved_model_half_plus_two_tf2_cpu"))
    halfplustwo.keras_identity(version("keras_sequential_saved_model_save"))
    halfplustwo.checkpoint_times(version("tf_saved_model_save"))
    halfplustwo.checkpoint_two_signatures(version("tf_saved_model_save_multiple_signatures"))
    halfplustwo.tflite_half_plus_two(version("saved_model_half_plus_two_tflite"))
    halfplustwo.tflite_half_plus_two(version("saved_model_half_plus_two_tflite_with_sigdef"), with_signature_def=True)
    models = Models(
        root=root,
        half_plus_two=root / "saved_model_half_plus_two_cpu",
        half_plus_three=root / "saved_model_half_plus_three",
        tf2=root / "saved_model_half_plus_two_tf2_cpu",
        keras=root / "keras_sequential_saved_model_save",
        checkpoint=root / "tf_saved_model_save",
        checkpoint_signatures=root / "tf_saved_model_save_multiple_signatures",
        tflite=root / "saved_model_half_plus_two_tflite",
        tflite_with_sigdef=root / "saved_model_half_plus_two_tflite_with_sigdef",
        good_config=root / "good_model_config.conf",
        bad_config=root / "bad_model_config.txt",
        monitoring_config=root / "monitoring_config.txt",
    )
    models.good_config.write_text(
        "model_config_list: {\n"
        f'  config: {{ name: "half_plus_two", base_path: "{models.half_plus_two}",\n'
        '    model_platform: "tensorflow" },\n'
        f'  config: {{ name: "half_plus_three", base_path: "{models.half_plus_three}",\n'
        '    model_platform: "tensorflow" }\n'
        "}\n")
    models.bad_config.write_text("improperly formatted file")
    models.monitoring_config.write_text(
        'prometheus_config: {\n  enable: true,\n  path: "/monitoring/prometheus/metrics"\n}\n')
    return models


def reload_config_text(name: str, path: Path) -> str:
    return f'model_config_list: {{ config: {{ name: "{name}", base_path: "{path}", model_platform: "tensorflow" }} }}\n'


@dataclass
class TfsServer:
    """tensorflow_model_server_test_base.RunServer's command line, run as `python -m serving`."""

    log_path: Path
    socket_path: Path
    model_name: str | None = None
    model_path: Path | None = None
    model_type: str = "tf"
    model_config_file: Path | None = None
    monitoring_config_file: Path | None = None
    batching_parameters_file: Path | None = None
    grpc_channel_arguments: str = ""
    model_config_file_poll_period: int | None = None
    extra_args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    rest_api_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    _channel: grpc.Channel | None = None

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.grpc_address)
        return self._channel

    def args(self) -> list[str]:
        command = [f"--port={self.port}", f"--rest_api_port={self.rest_api_port}",
                   f"--rest_api_timeout_in_ms={HTTP_REST_TIMEOUT_MS}", f"--grpc_socket_path={self.socket_path}"]
        if self.model_config_file:
            command.append(f"--model_config_file={self.model_config_file}")
        else:
            command += [f"--model_name={self.model_name}", f"--model_base_path={self.model_path}"]
        if self.model_type == "tflite":
            command.append("--prefer_tflite_model=true")
        if self.monitoring_config_file:
            command.append(f"--monitoring_config_file={self.monitoring_config_file}")
        if self.model_config_file_poll_period is not None:
            command.append(f"--model_config_file_poll_wait_seconds={self.model_config_file_poll_period}")
        if self.batching_parameters_file:
            command += ["--enable_batching", f"--batching_parameters_file={self.batching_parameters_file}"]
        channel_arguments = ",".join(a for a in (self.grpc_channel_arguments, "grpc.so_reuseaddr=1") if a)
        command.append(f"--grpc_channel_arguments={channel_arguments}")
        return [*command, *self.extra_args]

    def start(self) -> TfsServer:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as err, open(self.log_path.with_suffix(".out"), "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "serving", *self.args()], cwd=REPO_ROOT, env=env,
                                         stdout=out, stderr=err)
        return self

    @property
    def grpc_address(self) -> str:
        return f"localhost:{self.port}"

    @property
    def rest_address(self) -> str:
        return f"localhost:{self.rest_api_port}"

    def ready(self) -> bool:
        """WaitForServerReady: a Predict for a missing model answers with a message about a 'Servable'."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "intentionally_missing_model"
        try:
            with grpc.insecure_channel(self.grpc_address) as channel:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 5.0)
        except grpc.RpcError as error:
            return "Servable" in (error.details() or "")
        return False

    def log(self) -> str:
        """The end of the server's stderr (its log)."""
        return self.log_path.read_text(errors="replace")[-6000:]

    def terminate(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def kill(self) -> None:
        self.terminate()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        self.terminate()
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _servers(models: Models, root: Path) -> dict[str, TfsServer]:
    poll = {period: root / f"model_config_poll_{period}.txt" for period in (1, 0)}
    for path in poll.values():
        path.write_text(reload_config_text("half_plus_two", models.half_plus_two))
    kinds: dict[str, dict[str, Any]] = {
        "tf1": {"model_name": "default", "model_path": models.half_plus_two},
        "tf2": {"model_name": "default", "model_path": models.tf2},
        "good_config": {"model_config_file": models.good_config},
        "reload": {"model_config_file": poll[1], "model_config_file_poll_period": 1},
        "reload_zero": {"model_config_file": poll[0], "model_config_file_poll_period": 0},
        "channel_arguments": {"model_name": "default", "model_path": models.half_plus_two,
                              "grpc_channel_arguments": "grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb"},
        "prometheus": {"model_name": "default", "model_path": models.half_plus_two,
                       "monitoring_config_file": models.monitoring_config},
        "tflite": {"model_name": "default", "model_path": models.tflite, "model_type": "tflite"},
        "tflite_with_sigdef": {"model_name": "default", "model_path": models.tflite_with_sigdef,
                               "model_type": "tflite"},
        "checkpoint": {"model_name": "default", "model_path": models.checkpoint},
        "checkpoint_signatures": {"model_name": "default", "model_path": models.checkpoint_signatures},
        "keras": {"model_name": "default", "model_path": models.keras},
        # testBadModelConfig: the server must exit, saying where the file fails to parse.
        "bad_config": {"model_config_file": models.bad_config},
        # A version whose variables arrive after its saved_model.pb: the load is retried (two seconds apart here).
        "late": {"model_name": "default", "model_path": _late_version(models, root),
                 "extra_args": ("--load_retry_interval_micros=2000000",)},
    }
    return {key: TfsServer(log_path=root / f"{key}.log", socket_path=root / f"{key}.sock", **kwargs)
            for key, kwargs in kinds.items()}


_EXITS = ("bad_config",)
_RETRIED = "Retrying load on servable version: {name: default version: 123} retry: 1"


def _late_version(models: Models, root: Path) -> Path:
    base = root / "late"
    (base / halfplustwo.VERSION_DIR).mkdir(parents=True)
    shutil.copy2(models.half_plus_two / halfplustwo.VERSION_DIR / "saved_model.pb",
                 base / halfplustwo.VERSION_DIR / "saved_model.pb")
    return base


def _deliver_variables(models: Models, server: TfsServer) -> None:
    assert server.model_path is not None
    shutil.copytree(models.half_plus_two / halfplustwo.VERSION_DIR / "variables",
                    server.model_path / halfplustwo.VERSION_DIR / "variables")


@pytest.fixture(scope="session")
def servers(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TfsServer]]:
    """Every command line of TF Serving's integration tests, started together and waited for."""
    root = tmp_path_factory.mktemp("tfs-servers")
    started = _servers(models, root)
    try:
        for server in started.values():
            server.start()
        pending = {key: server for key, server in started.items() if key not in _EXITS}
        delivered = False
        deadline = time.monotonic() + 480  # all start at once on a machine that may be busy
        while pending and time.monotonic() < deadline:
            if not delivered and _RETRIED in started["late"].log():
                _deliver_variables(models, started["late"])
                delivered = True
            for key, server in list(pending.items()):
                if server.ready():
                    del pending[key]
            time.sleep(0.3)
        assert not pending, {key: server.log() for key, server in pending.items()}
        for key in _EXITS:
            started[key].proc.wait(60)  # type: ignore[union-attr]
        yield started
    finally:  # graceful shutdown is tested elsewhere; twelve interpreters unloading TensorFlow take a while
        for server in started.values():
            server.kill()


# -- helpers: the requests of TF Serving's tests -------------------------------------------------------------------
def verify_predict(address: str, expected_output: float, expected_version: int = VERSION, *,
                   model_name: str = "default", specify_output: bool = True, batch_input: bool = False,
                   signature_name: str = "serving_default") -> None:
    """VerifyPredictRequest: x = [2.0] (or [[2.0]]) as float_val, output y."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs["x"].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    with grpc.insecure_channel(address) as channel:
        result = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, RPC_TIMEOUT)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert len(result.outputs["y"].float_val) == 1
    assert result.outputs["y"].float_val[0] == expected_output
    assert (result.model_spec.name, result.model_spec.signature_name, result.model_spec.version.value) == (
        model_name, signature_name, expected_version)


def call_rest(url: str, request: Any = None) -> Any:
    data = json.dumps(request).encode("utf-8") if request is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=RPC_TIMEOUT) as response:
        return json.loads(response.read().decode())


def prediction_stub(server: TfsServer) -> Any:
    return prediction_service_pb2_grpc.PredictionServiceStub(server.channel())


def example_input(message: Any) -> None:
    example = message.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])


# -- start-up ------------------------------------------------------------------------------------------------------
def test_every_command_line_starts_and_reaches_available(servers: dict[str, TfsServer]) -> None:
    for key, server in servers.items():
        if key in _EXITS:
            continue
        names = ["half_plus_two", "half_plus_three"] if key == "good_config" else \
            ["half_plus_two"] if key.startswith("reload") else ["default"]
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            for name in names:
                request = get_model_status_pb2.GetModelStatusRequest()
                request.model_spec.name = name
                (status,) = stub.GetModelStatus(request, RPC_TIMEOUT).model_version_status
                assert (status.version, status.state, status.status.error_code) == (
                    VERSION, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0), key
        assert "unrecognized arguments" not in server.log()


def test_bad_model_config(servers: dict[str, TfsServer]) -> None:
    server = servers["bad_config"]
    assert server.proc is not None and server.proc.returncode not in (None, 0)
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:1: " in server.log()


# -- gRPC ----------------------------------------------------------------------------------------------------------
def test_get_model_status_and_metadata(servers: dict[str, TfsServer]) -> None:
    stub = prediction_stub(servers["tf1"])
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = stub.GetModelMetadata(request, RPC_TIMEOUT)
    assert (result.model_spec.name, result.model_spec.version.value) == ("default", VERSION)
    assert list(result.metadata) == ["signature_def"]
    signatures = get_model_metadata_pb2.SignatureDefMap()
    result.metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def) == {"serving_default", "classify_x_to_y", "regress_x_to_y",
                                            "regress_x_to_y2", "regress_x2_to_y3"}


@pytest.mark.parametrize("key", ["tf1", "tf2"])
def test_classify_regress_and_multi_inference(servers: dict[str, TfsServer], key: str) -> None:
    stub = prediction_stub(servers[key])
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = "default", "classify_x_to_y"
    example_input(classify)
    result = stub.Classify(classify, RPC_TIMEOUT)
    assert len(result.result.classifications) == 1 and len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    assert (result.model_spec.signature_name, result.model_spec.version.value) == ("classify_x_to_y", VERSION)

    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = "default", "regress_x_to_y"
    example_input(regress)
    result = stub.Regress(regress, RPC_TIMEOUT)
    assert [r.value for r in result.result.regressions] == [3.0]
    assert (result.model_spec.signature_name, result.model_spec.version.value) == ("regress_x_to_y", VERSION)

    # TF2 signatures each have their own input placeholder; multi_inference.cc feeds the examples to all of them.
    multi = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", "tensorflow/serving/regress"),
                              ("regress_x_to_y2", "tensorflow/serving/regress"),
                              ("classify_x_to_y", "tensorflow/serving/classify")):
        task = multi.tasks.add()
        task.model_spec.name, task.model_spec.signature_name, task.method_name = "default", signature, method
    example_input(multi)
    result = stub.MultiInference(multi, RPC_TIMEOUT)
    assert len(result.results) == 3
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].regression_result.regressions[0].value == 4.0
    assert result.results[2].classification_result.classifications[0].classes[0].score == 3.0
    for task, answer in zip(multi.tasks, result.results, strict=True):
        assert (answer.model_spec.name, answer.model_spec.signature_name, answer.model_spec.version.value) == (
            "default", task.model_spec.signature_name, VERSION)


@pytest.mark.parametrize("key", ["tf1", "channel_arguments", "prometheus"])
def test_predict(servers: dict[str, TfsServer], key: str) -> None:
    verify_predict(servers[key].grpc_address, 3.0)
    verify_predict(servers[key].grpc_address, 3.0, specify_output=False)


def test_predict_over_the_unix_socket(servers: dict[str, TfsServer]) -> None:
    verify_predict(f"unix:{servers['tf1'].socket_path}", 3.0, specify_output=False)


def test_good_model_config(servers: dict[str, TfsServer]) -> None:
    address = servers["good_config"].grpc_address
    for name, expected in (("half_plus_two", 3.0), ("half_plus_three", 4.0)):
        verify_predict(address, expected, model_name=name)
        verify_predict(address, expected, model_name=name, specify_output=False)


def test_model_config_reload(servers: dict[str, TfsServer], models: Models) -> None:
    polled, once = servers["reload"], servers["reload_zero"]
    for server in (polled, once):
        verify_predict(server.grpc_address, 3.0, model_name="half_plus_two", specify_output=False)
        config = next(a for a in server.args() if a.startswith("--model_config_file="))
        Path(config.partition("=")[2]).write_text(reload_config_text("half_plus_three", models.half_plus_three))
    wait_for(lambda: verify_predict(polled.grpc_address, 4.0, model_name="half_plus_three",
                                    specify_output=False) is None, 10, what="the polled config to be applied")
    time.sleep(1)  # a zero poll period reads the file once: the old model stays
    verify_predict(once.grpc_address, 3.0, model_name="half_plus_two", specify_output=False)
    with pytest.raises(grpc.RpcError) as err:
        verify_predict(once.grpc_address, 4.0, model_name="half_plus_three")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # ModelService.HandleReloadConfigRequest applies a config without the file.
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(reload_config_text("half_plus_three", models.half_plus_three), request.config)
    reply = model_service_pb2_grpc.ModelServiceStub(once.channel()).HandleReloadConfigRequest(request, RPC_TIMEOUT)
    assert reply.status.error_code == 0
    verify_predict(once.grpc_address, 4.0, model_name="half_plus_three")


@pytest.mark.parametrize("key", ["tflite", "tflite_with_sigdef"])
def test_tflite(servers: dict[str, TfsServer], key: str) -> None:
    server = servers[key]
    verify_predict(server.grpc_address, 3.0, specify_output=False)
    verify_predict(server.grpc_address, 3.0)
    metadata = call_rest(f"http://{server.rest_address}/v1/models/default/metadata")
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert list(signature["inputs"]) == ["x"] and list(signature["outputs"]) == ["y"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert call_rest(f"http://{server.rest_address}/v1/models/default:predict", {"instances": [[2.0]]}) == {
        "predictions": [[3.0]]}
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["z"].CopyFrom(predict_pb2.PredictRequest().inputs["x"])
    request.inputs["z"].dtype = types_pb2.DT_FLOAT
    with pytest.raises(grpc.RpcError) as err:
        prediction_stub(server).Predict(request, RPC_TIMEOUT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "input tensor alias not found in signature: z. Inputs expected to be in the set {x}."


def test_tf_saved_model_save(servers: dict[str, TfsServer]) -> None:
    verify_predict(servers["checkpoint"].grpc_address, 12.0, specify_output=False)
    address = servers["checkpoint_signatures"].grpc_address
    verify_predict(address, 2.0, signature_name="custom_signature_key")
    verify_predict(address, 1.0)


def test_keras_saved_model(servers: dict[str, TfsServer]) -> None:
    verify_predict(servers["keras"].grpc_address, 2.0, batch_input=True, specify_output=False)


def test_profiler_trace(servers: dict[str, TfsServer], tmp_path: Path) -> None:
    """profiler_client.trace against the gRPC port while REST predictions run (as TF Serving's test does)."""
    from tensorflow.python.profiler import profiler_client

    server = servers["tf1"]
    stop = threading.Event()

    def predictions() -> None:
        while not stop.is_set():
            call_rest(f"http://{server.rest_address}/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]})
            time.sleep(0.05)

    thread = threading.Thread(target=predictions)
    thread.start()
    logdir = tmp_path / "logs"
    logdir.mkdir()
    try:
        profiler_client.trace(server.grpc_address, str(logdir), 1000, "", 10)
    finally:
        stop.set()
        thread.join(30)
    assert any(p.name.endswith(".xplane.pb") for p in logdir.rglob("*")), list(logdir.rglob("*"))


# -- REST ----------------------------------------------------------------------------------------------------------
def test_rest_classify_regress_predict(servers: dict[str, TfsServer]) -> None:
    url = f"http://{servers['tf1'].rest_address}/v1/models/default"
    assert call_rest(f"{url}:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}) == {
        "results": [[["", 3.0]]]}
    assert call_rest(f"{url}:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}) == {
        "results": [3.0]}
    assert call_rest(f"{url}:predict", {"instances": [2.0, 3.0, 4.0]}) == {"predictions": [3.0, 3.5, 4.0]}
    assert call_rest(f"{url}:predict", {"inputs": [2.0, 3.0, 4.0]}) == {"outputs": [3.0, 3.5, 4.0]}
    assert call_rest(f"{url}/versions/123:predict", {"instances": [2.0]}) == {"predictions": [3.0]}
    assert call_rest(f"{url}/versions/123")["model_version_status"][0]["state"] == "AVAILABLE"
    assert call_rest(f"{url}/versions/00000123/metadata")["model_spec"]["version"] == "123"
    assert call_rest(f"http://{servers['tf2'].rest_address}/v1/models/default:regress",
                     {"signature_name": "regress_x_to_y2", "examples": [{"x": 2.0}]}) == {"results": [4.0]}


def test_rest_status_and_metadata(servers: dict[str, TfsServer]) -> None:
    url = f"http://{servers['tf1'].rest_address}/v1/models/default"
    assert call_rest(url) == {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    metadata = call_rest(f"{url}/metadata")
    assert metadata["model_spec"] == {"name": "default", "signature_name": "", "version": "123"}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x_to_y2",
                               "regress_x2_to_y3"}

    def tensor(name: str) -> dict:
        dims = [{"size": "-1", "name": ""}, {"size": "1", "name": ""}]
        return {"dtype": "DT_FLOAT", "tensor_shape": {"dim": dims, "unknown_rank": False}, "name": name}

    assert signatures["regress_x2_to_y3"] == {"inputs": {"inputs": tensor("x2:0")},
                                              "outputs": {"outputs": tensor("y3:0")},
                                              "method_name": "tensorflow/serving/regress", "defaults": {}}
    assert signatures["serving_default"] == {"inputs": {"x": tensor("x:0")}, "outputs": {"y": tensor("y:0")},
                                             "method_name": "tensorflow/serving/predict", "defaults": {}}


def test_prometheus_endpoint(servers: dict[str, TfsServer]) -> None:
    url = f"http://{servers['prometheus'].rest_address}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=RPC_TIMEOUT) as response:
        assert "# TYPE" in response.read().decode("utf-8")
    with pytest.raises(urllib.error.HTTPError) as err:  # no monitoring config: no page
        urllib.request.urlopen(f"http://{servers['tf1'].rest_address}/monitoring/prometheus/metrics", timeout=10)
    err.value.close()
    assert err.value.code == 404


# -- a version whose files arrive in pieces --------------------------------------------------------------------------
def test_a_version_whose_files_arrive_late_is_retried(servers: dict[str, TfsServer]) -> None:
    server = servers["late"]
    verify_predict(server.grpc_address, 3.0)
    log = server.log()
    assert "Loading servable: {name: default version: 123} failed" in log
    assert log.index(_RETRIED) < log.index("Successfully loaded servable version {name: default version: 123}")
