"""Helpers for the serving tests: real images, version directories, and `glimpse serve` subprocesses."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glimpse_wire.contract import EXAMPLE_IMAGE_KEY, IN_IMAGE_BYTES, WARMUP_ASSET, explain_signature
from tests.conftest import TINY_CLASSES, TINY_SIZE

REPO_ROOT = Path(__file__).resolve().parents[2]
# The shared `exported_model` fixture (tests/conftest.py): a small CNN at 64x64 over three Tux Paint classes.
SIZE = TINY_SIZE
CLASS_NAMES = tuple(name for name, _ in TINY_CLASSES)
SIG_GRADIENTS = explain_signature("vanilla_gradients")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_bytes(name: str = "chelsea", size: int = 64) -> bytes:
    """A real photo from scikit-image, resized, as PNG bytes."""
    from PIL import Image
    from skimage import data

    image = Image.fromarray(getattr(data, name)()).convert("RGB").resize((size, size))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def example_bytes(image: bytes) -> bytes:
    """A serialized tf.Example carrying ``image/encoded``."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    example.features.feature[EXAMPLE_IMAGE_KEY].bytes_list.value.append(image)
    return example.SerializeToString()


def add_version(base: Path, source: Path, version: int, *, warmup: bool = False) -> Path:
    """Copy an exported version into ``base/<version>`` through a temporary name (as deploy tools do).

    The export's warm-up records replay every signature, explanations included (seconds per load on this
    machine); copies leave them out unless ``warmup`` is set, and the tests that are about warm-up keep them."""
    target = base / str(version)
    staging = base / f".tmp-{version}"
    ignore = None if warmup else shutil.ignore_patterns(Path(WARMUP_ASSET).name)
    shutil.copytree(source, staging, ignore=ignore)
    os.rename(staging, target)
    return target


def corrupt_version(base: Path, source: Path, version: int) -> Path:
    """A copy of a real export whose saved_model.pb is garbage."""
    target = add_version(base, source, version)
    (target / "saved_model.pb").write_bytes(b"this is not a SavedModel protobuf")
    return target


@dataclass
class ServerProcess:
    """A `python -m serving` subprocess on free ports; ``stop()`` always ends it."""

    args: list[str]
    log_path: Path
    grpc_port: int = field(default_factory=free_port)
    rest_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    _channel: Any = None

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def start(self, timeout: float = 120.0, wait: bool = True) -> ServerProcess:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "serving", f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
                   "--bind_address=127.0.0.1", *self.args]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with grpc.insecure_channel(self.grpc_address) as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                                       timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not ready within {timeout}s:\n{self.log()}")

    def channel(self) -> Any:
        import grpc

        if self._channel is None:
            self._channel = grpc.insecure_channel(
                self.grpc_address, options=[("grpc.max_receive_message_length", 2**31 - 1)])
        return self._channel

    def prediction_stub(self) -> Any:
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        return prediction_service_pb2_grpc.PredictionServiceStub(self.channel())

    def model_stub(self) -> Any:
        from tensorflow_serving.apis import model_service_pb2_grpc

        return model_service_pb2_grpc.ModelServiceStub(self.channel())

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def version_states(stub: Any, name: str) -> dict[int, str]:
    """GetModelStatus as {version: state name}."""
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    reply = stub.GetModelStatus(request, timeout=10)
    return {
        s.version: get_model_status_pb2.ModelVersionStatus.State.Name(s.state) for s in reply.model_version_status
    }


def wait_for(predicate: Any, timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as e:  # the condition may raise while the server changes state
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s (last: {last!r})")


def predict_request(model: str, image: bytes, *, signature: str = "", version: int | None = None,
                    label: str = "", batch: int = 1) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    request.inputs[IN_IMAGE_BYTES].CopyFrom(tf.make_tensor_proto([image] * batch))
    return request


def pixels(batch: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, size=(batch, SIZE, SIZE, 3)).astype(np.float32)
