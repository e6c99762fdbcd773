"""Versions and configs changing under a running `glimpse serve`: hot reload, a corrupt version, labels, config
reload by file polling and by HandleReloadConfigRequest."""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2

from tests.serving.support import (
    ServerProcess,
    add_version,
    corrupt_version,
    predict_request,
    version_states,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]

END = get_model_status_pb2.ModelVersionStatus.END


@pytest.fixture(scope="module")
def polled(tmp_path_factory: pytest.TempPathFactory, export_dir: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """Model "hot" with version 1, its base path polled every second (latest-1 policy); a failed load is not
    retried (TF Serving's default retries five times, a minute apart)."""
    root = tmp_path_factory.mktemp("polled")
    base = root / "hot"
    base.mkdir()
    add_version(base, export_dir, 1)
    server = ServerProcess(["--model_name=hot", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
                            "--max_num_load_retries=0"], log_path=root / "server.log")
    try:
        server.start()
        yield server, base
    finally:
        server.stop()


def test_hot_reload_without_failed_requests(polled: tuple[ServerProcess, Path], export_dir: Path,
                                            image: bytes) -> None:
    server, base = polled
    stub = server.prediction_stub()
    before = stub.Predict(predict_request("hot", image), timeout=30).model_spec.version.value
    answered: Counter[int] = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def client_loop() -> None:
        while not stop.is_set():
            try:
                answered[stub.Predict(predict_request("hot", image), timeout=30).model_spec.version.value] += 1
            except grpc.RpcError as e:
                failures.append(f"{e.code().name}: {e.details()}")

    thread = threading.Thread(target=client_loop)
    thread.start()
    try:
        wait_for(lambda: answered[before] >= 3, 30, what="requests before the new version")
        add_version(base, export_dir, before + 1)
        wait_for(lambda: answered[before + 1] >= 3, 60, what="requests answered by the new version")
        wait_for(lambda: version_states(server.model_stub(), "hot").get(before) == "END", 30,
                 what="old version unloaded")
    finally:
        stop.set()
        thread.join(30)
    assert failures == []
    assert answered[before] > 0 and answered[before + 1] > 0
    assert f"Successfully loaded servable version {{name: hot version: {before + 1}}}" in server.log()


def test_corrupt_version_is_reported_and_others_keep_serving(polled: tuple[ServerProcess, Path], export_dir: Path,
                                                             image: bytes) -> None:
    server, base = polled
    serving = server.prediction_stub().Predict(predict_request("hot", image), timeout=30).model_spec.version.value
    broken = max(int(p.name) for p in base.iterdir() if p.name.isdigit()) + 1
    corrupt_version(base, export_dir, broken)

    def failed_status():
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "hot"
        request.model_spec.version.value = broken
        (status,) = server.model_stub().GetModelStatus(request, timeout=10).model_version_status
        return status if status.state == END else None

    status = wait_for(failed_status, 60, what="the corrupt version to end")
    assert status.status.error_code != 0 and status.status.error_message
    reply = server.prediction_stub().Predict(predict_request("hot", image), timeout=30)
    assert reply.model_spec.version.value == serving
    assert version_states(server.model_stub(), "hot")[serving] == "AVAILABLE"
    assert f"Loading servable: {{name: hot version: {broken}}} failed" in server.log()


def _config_text(models: dict[str, Path], labels: dict[str, int] | None = None) -> str:
    lines = ["model_config_list {"]
    for name, base in models.items():
        lines.append(f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow"')
        lines.append("    model_version_policy { all {} }")
        for label, version in (labels or {}).items() if name == "m" else ():
            lines.append(f'    version_labels {{ key: "{label}" value: {version} }}')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def test_labels_at_startup_need_the_allow_flag(tmp_path: Path, export_dir: Path) -> None:
    base = tmp_path / "m"
    base.mkdir()
    add_version(base, export_dir, 1)
    config = tmp_path / "models.config"
    config.write_text(_config_text({"m": base}, {"stable": 1}))
    server = ServerProcess([f"--model_config_file={config}"], log_path=tmp_path / "server.log")
    try:
        server.start(wait=False)
        assert server.proc is not None and server.proc.wait(120) == 1
    finally:
        server.stop()
    assert ("Failed to start server. Error: FAILED_PRECONDITION: Request to assign label to version 1 of model m, "
            "which is not currently available for inference") in server.log()


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory, export_dir: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """Model "m" (versions 1, 2; policy all) from a config file polled every second."""
    root = tmp_path_factory.mktemp("configured")
    base = root / "m"
    base.mkdir()
    for version in (1, 2):
        add_version(base, export_dir, version)
    config = root / "models.config"
    config.write_text(_config_text({"m": base}))
    server = ServerProcess([f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1",
                            "--file_system_poll_wait_seconds=1"], log_path=root / "server.log")
    try:
        server.start()
        yield server, root
    finally:
        server.stop()


def _label_version(server: ServerProcess, image: bytes, label: str) -> int:
    reply = server.prediction_stub().Predict(predict_request("m", image, label=label), timeout=30)
    return reply.model_spec.version.value


def test_config_file_reload_sets_labels(configured: tuple[ServerProcess, Path], image: bytes) -> None:
    server, root = configured
    with pytest.raises(grpc.RpcError) as err:
        _label_version(server, image, "stable")
    assert err.value.details() == "Unrecognized servable version label: stable"
    (root / "models.config").write_text(_config_text({"m": root / "m"}, {"stable": 1, "canary": 2}))
    assert wait_for(lambda: _label_version(server, image, "stable") == 1, 30, what="label from the polled file")
    assert _label_version(server, image, "canary") == 2


def _reload_request(config_text: str) -> model_management_pb2.ReloadConfigRequest:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    request = model_management_pb2.ReloadConfigRequest()
    request.config.CopyFrom(text_format.Parse(config_text, model_server_config_pb2.ModelServerConfig()))
    return request


def test_handle_reload_config_request(configured: tuple[ServerProcess, Path], export_dir: Path,
                                      image: bytes) -> None:
    server, root = configured
    other = root / "other"
    other.mkdir(exist_ok=True)
    if not (other / "4").exists():
        add_version(other, export_dir, 4)
    models = {"m": root / "m", "other": other}
    reply = server.model_stub().HandleReloadConfigRequest(
        _reload_request(_config_text(models, {"stable": 2, "canary": 1})), timeout=120)
    assert reply.status.error_code == 0 and reply.status.error_message == ""
    # The RPC returns once new models are loaded: "other" answers at once.
    assert server.prediction_stub().Predict(predict_request("other", image), timeout=30).model_spec.version.value == 4
    assert _label_version(server, image, "stable") == 2

    with pytest.raises(grpc.RpcError) as err:
        server.model_stub().HandleReloadConfigRequest(_reload_request(_config_text(models, {"stable": 9})), timeout=60)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == ("Request to assign label to version 9 of model m, which is not currently "
                                   "available for inference")
    with pytest.raises(grpc.RpcError) as err:
        server.model_stub().HandleReloadConfigRequest(_reload_request("custom_model_config { }"), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("ServerModelConfig type not supported by HandleReloadConfigRequest.")

    server.model_stub().HandleReloadConfigRequest(_reload_request(_config_text({"m": root / "m"})), timeout=60)
    wait_for(lambda: version_states(server.model_stub(), "other") == {4: "END"}, 30, what="removed model unloaded")
    with pytest.raises(grpc.RpcError) as err:
        server.prediction_stub().Predict(predict_request("other", image), timeout=30)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.NOT_FOUND,
                                                       "Servable not found for request: Latest(other)")
    shutil.rmtree(other)


def test_a_start_waits_for_the_first_version_and_a_signal_ends_the_wait(tmp_path: Path, export_dir: Path,
                                                                        image: bytes) -> None:
    """TF Serving's start blocks in WaitUntilModelsAvailable while the base path holds no version (it polls and
    warns meanwhile); no port opens before a version is AVAILABLE. SIGTERM during that wait ends the process."""
    servers = {}
    for name in ("arrives", "never"):
        base = tmp_path / name
        base.mkdir()
        servers[name] = ServerProcess([f"--model_name={name}", f"--model_base_path={base}",
                                       "--file_system_poll_wait_seconds=1"], log_path=tmp_path / f"{name}.log")
    try:
        for server in servers.values():
            server.start(wait=False)
        for name, server in servers.items():
            wait_for(lambda server=server, name=name: f"No versions of servable {name} found under base path"
                     in server.log(), timeout=120)
        arrives, never = servers["arrives"], servers["never"]
        with pytest.raises(TimeoutError):
            arrives.wait_ready(2)
        add_version(tmp_path / "arrives", export_dir, 3)
        arrives.wait_ready(120)
        reply = arrives.prediction_stub().Predict(predict_request("arrives", image), timeout=60)
        assert reply.model_spec.version.value == 3
        never.signal()
        assert never.proc is not None and never.proc.wait(30) == 1
        assert "Stopped while waiting for a version of never" in never.log()
    finally:
        for server in servers.values():
            server.stop()
