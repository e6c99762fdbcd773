"""`glimpse serve --docker`: the real ``tensorflow/serving`` container, started through the Docker SDK.

The spec mirrors the usual ``docker run -p 8500:8500 -p 8501:8501 --mount type=bind,source=...,target=/models/NAME
-e MODEL_NAME=NAME tensorflow/serving`` and carries the rest of the flags over: every model base path is mounted
read-only at ``/models/<name>``; with ``--model_config_file`` a copy whose base paths point at those mounts is
mounted (read-only) with the batching and monitoring files under ``/models/.glimpse``; ``--gpu`` selects
``tensorflow/serving:latest-gpu`` and requests all GPUs (``DeviceRequest(count=-1, capabilities=[["gpu"]])``).
:func:`build_container_spec` is pure (unit-tested); :func:`launch` talks to the engine and waits until the models
are AVAILABLE (through ``glimpse_wire.client.ServingClient``; REST status polling if that is unavailable).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.config import ConfigError, ServerConfig, load_model_server_config

__all__ = [
    "DEFAULT_IMAGE",
    "GPU_IMAGE",
    "CONTAINER_GRPC_PORT",
    "CONTAINER_REST_PORT",
    "DockerError",
    "BindMount",
    "ContainerSpec",
    "build_container_spec",
    "docker_client",
    "launch",
    "launch_from_config",
]

DEFAULT_IMAGE = "tensorflow/serving"
GPU_IMAGE = "tensorflow/serving:latest-gpu"
CONTAINER_GRPC_PORT = 8500
CONTAINER_REST_PORT = 8501
_MODELS_ROOT = "/models"
_CONFIG_DIR = "/models/.glimpse"


class DockerError(RuntimeError):
    """No Docker engine, a container that would not start, or a model that never became AVAILABLE."""


@dataclass(frozen=True)
class BindMount:
    source: str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    """Everything ``containers.run`` needs, plus the generated files to write before it (host path -> text)."""

    image: str
    command: tuple[str, ...]
    environment: dict[str, str]
    ports: dict[str, int]
    mounts: tuple[BindMount, ...]
    gpu: bool = False
    files: dict[str, str] = field(default_factory=dict)
    model_names: tuple[str, ...] = ()

    def device_requests(self) -> list[Any]:
        if not self.gpu:
            return []
        from docker.types import DeviceRequest

        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]

    def docker_mounts(self) -> list[Any]:
        from docker.types import Mount

        return [Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only) for m in self.mounts]

    def run_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``docker.DockerClient.containers.run``."""
        return {
            "image": self.image,
            "command": list(self.command),
            "environment": dict(self.environment),
            "ports": dict(self.ports),
            "mounts": self.docker_mounts(),
            "device_requests": self.device_requests(),
            "detach": True,
        }


def _absolute(path: str, what: str) -> str:
    if not path:
        raise ConfigError(f"{what} is empty")
    return os.path.abspath(os.path.expanduser(path))


def _passthrough_flags(config: ServerConfig) -> list[str]:
    defaults = ServerConfig(model_base_path="/unused")
    flags = []
    for name in (
        "file_system_poll_wait_seconds",
        "model_config_file_poll_wait_seconds",
        "rest_api_timeout_in_ms",
        "tensorflow_intra_op_parallelism",
        "tensorflow_inter_op_parallelism",
        "tensorflow_session_parallelism",
        "max_num_load_retries",
        "load_retry_interval_micros",
        "num_request_iterations_for_warmup",
        "per_process_gpu_memory_fraction",
        "saved_model_tags",
    ):
        value = getattr(config, name)
        if value != getattr(defaults, name):
            flags.append(f"--{name}={value}")
    for name in ("allow_version_labels_for_unavailable_models", "enable_signature_method_name_check",
                 "prefer_tflite_model", "enable_grpc_healthcheck_service", "enable_serialization_as_tensor_content",
                 "rest_api_enable_cors_support"):
        if getattr(config, name):
            flags.append(f"--{name}=true")
    for name in ("enable_model_warmup", "enable_profiler"):
        if not getattr(config, name):
            flags.append(f"--{name}=false")
    if config.grpc_channel_arguments:
        flags.append(f"--grpc_channel_arguments={config.grpc_channel_arguments}")
    return flags


def build_container_spec(
    config: ServerConfig, *, gpu: bool = False, image: str | None = None, config_dir: str | Path | None = None
) -> ContainerSpec:
    """The container for ``config``. ``config_dir`` (host) receives the generated config copies (see ``files``)."""
    mounts: list[BindMount] = []
    command: list[str] = []
    files: dict[str, str] = {}
    environment: dict[str, str] = {}
    host_dir = Path(config_dir) if config_dir is not None else Path(tempfile.gettempdir()) / "glimpse-tf-serving"

    if config.model_config_file:
        server_config = load_model_server_config(config.model_config_file)
        names = []
        for model in server_config.model_config_list.config:
            source = _absolute(model.base_path, f"base_path of model {model.name}")
            target = f"{_MODELS_ROOT}/{model.name}"
            mounts.append(BindMount(source, target))
            model.base_path = target
            names.append(model.name)
        from google.protobuf import text_format

        files[str(host_dir / "models.config")] = text_format.MessageToString(server_config)
        command.append(f"--model_config_file={_CONFIG_DIR}/models.config")
        if names:
            environment["MODEL_NAME"] = names[0]
        model_names = tuple(names)
    else:
        source = _absolute(config.model_base_path, "--model_base_path")
        mounts.append(BindMount(source, f"{_MODELS_ROOT}/{config.model_name}"))
        environment["MODEL_NAME"] = config.model_name
        model_names = (config.model_name,)

    if config.enable_batching:
        command.append("--enable_batching=true")
        if config.batching_parameters_file:
            mounts.append(BindMount(_absolute(config.batching_parameters_file, "--batching_parameters_file"),
                                    f"{_CONFIG_DIR}/batching.config"))
            command.append(f"--batching_parameters_file={_CONFIG_DIR}/batching.config")
    if config.monitoring_config_file:
        mounts.append(BindMount(_absolute(config.monitoring_config_file, "--monitoring_config_file"),
                                f"{_CONFIG_DIR}/monitoring.config"))
        command.append(f"--monitoring_config_file={_CONFIG_DIR}/monitoring.config")
    if files:
        mounts.append(BindMount(str(host_dir / "models.config"), f"{_CONFIG_DIR}/models.config"))
    command.extend(_passthrough_flags(config))

    ports = {f"{CONTAINER_GRPC_PORT}/tcp": config.port}
    if config.rest_api_port:
        ports[f"{CONTAINER_REST_PORT}/tcp"] = config.rest_api_port
    return ContainerSpec(
        image=image or (GPU_IMAGE if gpu else DEFAULT_IMAGE),
        command=tuple(command),
        environment=environment,
        ports=ports,
        mounts=tuple(mounts),
        gpu=gpu,
        files=files,
        model_names=model_names,
    )


def docker_client() -> Any:
    """A client of the engine that ``DOCKER_HOST`` (default: the local socket) names; DockerError when none answers.

    A missing local socket is reported before the SDK tries it (the SDK leaks the socket of a failed connect)."""
    try:
        import docker
    except ImportError as e:  # pragma: no cover - docker is a declared dependency
        raise DockerError("the `docker` Python package is not installed") from e
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    hint = "Start Docker (or set DOCKER_HOST), or run `glimpse serve` without --docker."
    if host.startswith("unix://") and not os.path.exists(host[len("unix://"):]):
        raise DockerError(f"No Docker engine is reachable (no socket at {host[len('unix://'):]}). {hint}")
    engine = None
    try:
        engine = docker.from_env()
        engine.ping()
    except Exception as e:
        if engine is not None:
            engine.close()
        raise DockerError(f"No Docker engine is reachable ({type(e).__name__}: {e}). {hint}") from e
    return engine


def _engine(client: Any = None) -> Any:
    if client is None:
        return docker_client()
    try:
        client.ping()
    except Exception as e:
        raise DockerError(f"No Docker engine is reachable ({type(e).__name__}: {e}).") from e
    return client


def _rest_available(port: int, name: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/{name}", timeout=2) as reply:
            statuses = json.loads(reply.read().decode("utf-8")).get("model_version_status", [])
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return any(s.get("state") == "AVAILABLE" for s in statuses)


def _wait_available(spec: ContainerSpec, container: Any, timeout: float) -> None:
    grpc_port = spec.ports[f"{CONTAINER_GRPC_PORT}/tcp"]
    rest_port = spec.ports.get(f"{CONTAINER_REST_PORT}/tcp")
    deadline = time.monotonic() + timeout
    try:
        from glimpse_wire.client import ServingClient
    except ImportError:
        ServingClient = None  # noqa: N806
    for name in spec.model_names:
        if ServingClient is not None:
            with ServingClient(f"127.0.0.1:{grpc_port}") as client:
                try:
                    client.wait_until_available(name, max(1.0, deadline - time.monotonic()))
                    continue
                except Exception as e:
                    raise DockerError(f"model {name} did not become AVAILABLE: {e}") from e
        while not (rest_port and _rest_available(rest_port, name)):
            container.reload()
            if container.status in ("exited", "dead"):
                raise DockerError(f"the container exited: {container.logs(tail=20).decode('utf-8', 'replace')}")
            if time.monotonic() > deadline:
                raise DockerError(f"model {name} was not AVAILABLE within {timeout:.0f} s")
            time.sleep(1.0)


def launch(spec: ContainerSpec, *, client: Any = None, wait_timeout: float = 300.0) -> Any:
    """Write the generated files, start the container and wait until every model is AVAILABLE; return it."""
    engine = _engine(client)
    for path, text in spec.files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    try:
        container = engine.containers.run(**spec.run_kwargs())
    except Exception as e:
        raise DockerError(f"could not start {spec.image}: {e}") from e
    try:
        _wait_available(spec, container, wait_timeout)
    except DockerError:
        container.remove(force=True)
        raise
    return container


def launch_from_config(config: ServerConfig, *, gpu: bool = False, image: str | None = None,
                       wait_timeout: float = 300.0) -> None:
    """``glimpse serve --docker``: start the container, report when ready, stop it on SIGTERM/SIGINT."""
    try:
        spec = build_container_spec(config, gpu=gpu, image=image, config_dir=tempfile.mkdtemp(prefix="glimpse-tfs-"))
    except ConfigError as e:
        raise DockerError(str(e)) from e
    container = launch(spec, wait_timeout=wait_timeout)
    print(f"{spec.image} is serving {', '.join(spec.model_names)} on gRPC :{config.port}"
          + (f", REST :{config.rest_api_port}" if config.rest_api_port else "") + f" (container {container.short_id})",
          flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        container.reload()
        if container.status in ("exited", "dead"):
            raise DockerError(f"the container exited: {container.logs(tail=20).decode('utf-8', 'replace')}")
    container.stop(timeout=int(config.shutdown_grace_seconds))
    container.remove(force=True)
