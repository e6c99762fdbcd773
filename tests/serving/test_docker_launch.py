"""The TF Serving container spec (unit), and a real `tensorflow/serving` run where a Docker engine is reachable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from serving.config import ServerConfig
from serving.docker_launch import (
    CONTAINER_GRPC_PORT,
    CONTAINER_REST_PORT,
    BindMount,
    DockerError,
    build_container_spec,
    docker_client,
    launch,
)


def test_single_model_spec(tmp_path: Path) -> None:
    config = ServerConfig(model_name="flowers", model_base_path=str(tmp_path), port=9000, rest_api_port=9001)
    spec = build_container_spec(config)
    assert spec.image == "tensorflow/serving"
    assert spec.environment == {"MODEL_NAME": "flowers"}
    assert spec.mounts == (BindMount(str(tmp_path), "/models/flowers", read_only=True),)
    assert spec.ports == {f"{CONTAINER_GRPC_PORT}/tcp": 9000, f"{CONTAINER_REST_PORT}/tcp": 9001}
    assert spec.command == () and spec.device_requests() == [] and spec.model_names == ("flowers",)
    kwargs = spec.run_kwargs()
    (mount,) = kwargs["mounts"]
    assert mount["Target"] == "/models/flowers" and mount["ReadOnly"] is True and mount["Type"] == "bind"
    assert kwargs["detach"] is True


def test_gpu_spec_requests_all_gpus(tmp_path: Path) -> None:
    spec = build_container_spec(ServerConfig(model_base_path=str(tmp_path)), gpu=True)
    assert spec.image == "tensorflow/serving:latest-gpu"
    (request,) = spec.device_requests()
    assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]
    assert build_container_spec(ServerConfig(model_base_path=str(tmp_path)), image="my/tfs:2.19").image == "my/tfs:2.19"


def test_config_files_are_mounted_and_rewritten(tmp_path: Path) -> None:
    base_a, base_b = tmp_path / "a", tmp_path / "b"
    models = tmp_path / "models.config"
    models.write_text(
        f'model_config_list {{ config {{ name: "a" base_path: "{base_a}" model_platform: "tensorflow" }}\n'
        f'config {{ name: "b" base_path: "{base_b}" model_platform: "tensorflow" }} }}\n'
    )
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 8 }\n")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    config = ServerConfig(model_config_file=str(models), enable_batching=True, batching_parameters_file=str(batching),
                          monitoring_config_file=str(monitoring), rest_api_port=0,
                          allow_version_labels_for_unavailable_models=True, file_system_poll_wait_seconds=5)
    spec = build_container_spec(config, config_dir=tmp_path / "generated")
    targets = {m.target: m.source for m in spec.mounts}
    assert targets["/models/a"] == str(base_a) and targets["/models/b"] == str(base_b)
    assert all(m.read_only for m in spec.mounts)
    generated = tmp_path / "generated" / "models.config"
    assert targets["/models/.glimpse/models.config"] == str(generated)
    assert 'base_path: "/models/a"' in spec.files[str(generated)]
    assert set(spec.command) == {
        "--model_config_file=/models/.glimpse/models.config",
        "--enable_batching=true",
        "--batching_parameters_file=/models/.glimpse/batching.config",
        "--monitoring_config_file=/models/.glimpse/monitoring.config",
        "--allow_version_labels_for_unavailable_models=true",
        "--file_system_poll_wait_seconds=5",
    }
    assert spec.ports == {f"{CONTAINER_GRPC_PORT}/tcp": 8500}  # REST off
    assert spec.model_names == ("a", "b")


class _NoEngine:
    def ping(self) -> None:
        raise ConnectionError("connection refused")


def test_clear_error_without_engine(tmp_path: Path) -> None:
    spec = build_container_spec(ServerConfig(model_base_path=str(tmp_path)))
    with pytest.raises(DockerError, match="No Docker engine is reachable"):
        launch(spec, client=_NoEngine())


def _engine_or_skip():
    try:
        return docker_client()
    except DockerError as e:
        pytest.skip(f"needs a reachable Docker engine: {e}")


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.integration
def test_real_tensorflow_serving_container(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    client = _engine_or_skip()
    from tests.serving.support import free_port

    export_dir = request.getfixturevalue("export_dir")
    base = tmp_path / "m"
    shutil.copytree(export_dir, base / "1")
    config = ServerConfig(model_name="m", model_base_path=str(base), port=free_port(), rest_api_port=free_port())
    container = launch(build_container_spec(config), client=client, wait_timeout=300)
    try:
        container.reload()
        assert container.status == "running"
    finally:
        container.remove(force=True)
