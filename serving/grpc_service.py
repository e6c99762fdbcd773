"""The gRPC surface: TF Serving's PredictionService and ModelService, health checking and reflection.

The servicers are tensorflow-serving-api's own generated bases; each method hands the request to
:class:`serving.service.InferenceService` and turns a :class:`ServingError` into the call's status, with TF
Serving's 1024-character message limit ("...TRUNCATED"). The request's deadline bounds the run. The server accepts
messages up to INT32_MAX bytes, like tensorflow_model_server, and applies ``--grpc_channel_arguments``. It listens on
each address given (``host:port`` and, for ``--grpc_socket_path``, ``unix:PATH``), with TLS when an ``SSLConfig`` is
given (server.cc's BuildServerCredentials).

TF Serving registers TensorFlow's profiler service (``tensorflow.ProfilerService``) on its gRPC port. TensorFlow's
Python API starts that service only as a server of its own (``tf.profiler.experimental.server.start``), so with
``profiler=True`` it is started in-process on a free port at the first profiler call (TensorFlow's server listens on
all interfaces there) and the gRPC port forwards the service's calls to it byte for byte:
``tf.profiler.experimental.client.trace("host:8500", ...)`` traces this process as it would TF Serving's.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tensorflow_serving.apis import (
    model_service_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

from glimpse_wire.errors import ServingError
from serving.service import InferenceService

__all__ = [
    "MAX_MESSAGE_LENGTH",
    "ERROR_MESSAGE_LIMIT",
    "truncate_message",
    "PredictionServicer",
    "ModelServicer",
    "GrpcServer",
    "PROFILER_SERVICE",
]

log = logging.getLogger("serving.grpc")

MAX_MESSAGE_LENGTH = 2**31 - 1
ERROR_MESSAGE_LIMIT = 1024
PREDICTION_SERVICE = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name
MODEL_SERVICE = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name
PROFILER_SERVICE = "tensorflow.ProfilerService"
_PROFILER_METHODS = ("Profile", "Terminate", "Monitor")
_profiler_lock = threading.Lock()
_profiler_port: int | None = None


def truncate_message(message: str) -> str:
    """grpc_status_util.cc: messages longer than 1024 characters are cut and end in "...TRUNCATED"."""
    if len(message) > ERROR_MESSAGE_LIMIT:
        return message[:ERROR_MESSAGE_LIMIT] + "...TRUNCATED"
    return message


def _deadline(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _answer(context: grpc.ServicerContext, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except ServingError as e:
        context.abort(e.grpc_code, truncate_message(e.message))
    except Exception as e:  # a bug must still end the call with a status
        log.exception("Unexpected failure")
        context.abort(grpc.StatusCode.UNKNOWN, truncate_message(f"{type(e).__name__}: {e}"))


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, service: InferenceService) -> None:
        self._service = service

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC method name
        return _answer(context, lambda: self._service.predict(request, deadline=_deadline(context)))

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _answer(context, lambda: self._service.classify(request, deadline=_deadline(context)))

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _answer(context, lambda: self._service.regress(request, deadline=_deadline(context)))

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _answer(context, lambda: self._service.multi_inference(request, deadline=_deadline(context)))

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _answer(context, lambda: self._service.get_model_metadata(request))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, service: InferenceService) -> None:
        self._service = service

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return _answer(context, lambda: self._service.get_model_status(request))

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        def call() -> Any:
            response, error = self._service.reload_config(request)
            if error is not None:
                raise error
            return response

        return _answer(context, call)


def _local_profiler_port() -> int:
    """The port of this process's TensorFlow profiler server (started once, on first use; dialled on loopback)."""
    global _profiler_port
    with _profiler_lock:
        if _profiler_port is None:
            import tensorflow as tf

            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            tf.profiler.experimental.server.start(port)
            _profiler_port = port
        return _profiler_port


class _ProfilerForwarder(grpc.GenericRpcHandler):
    """``tensorflow.ProfilerService`` calls, forwarded unchanged (serialized bytes) to the in-process profiler."""

    def __init__(self) -> None:
        self._channel: grpc.Channel | None = None
        self._lock = threading.Lock()

    def _target(self) -> grpc.Channel:
        with self._lock:
            if self._channel is None:
                self._channel = grpc.insecure_channel(
                    f"127.0.0.1:{_local_profiler_port()}",
                    options=[("grpc.max_receive_message_length", MAX_MESSAGE_LENGTH)],
                )
            return self._channel

    def service(self, handler_call_details: Any) -> Any:
        method = handler_call_details.method
        prefix = f"/{PROFILER_SERVICE}/"
        if not method.startswith(prefix) or method[len(prefix):] not in _PROFILER_METHODS:
            return None

        def forward(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                return self._target().unary_unary(method)(request, timeout=context.time_remaining())
            except grpc.RpcError as e:
                context.abort(e.code(), e.details() or "")
            except Exception as e:  # the profiler could not start
                context.abort(grpc.StatusCode.UNAVAILABLE, f"Profiler service unavailable: {e}")

        return grpc.unary_unary_rpc_method_handler(forward)

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None


def _credentials(ssl: Any) -> grpc.ServerCredentials:
    """server.cc's BuildServerCredentials for an SSLConfig."""
    return grpc.ssl_server_credentials(
        [(ssl.server_key.encode("utf-8"), ssl.server_cert.encode("utf-8"))],
        root_certificates=ssl.custom_ca.encode("utf-8") if ssl.custom_ca else None,
        require_client_auth=bool(ssl.client_verify),
    )


class GrpcServer:
    """PredictionService + ModelService + health + reflection (+ the profiler) on ``addresses``
    (e.g. ``["0.0.0.0:8500", "unix:/tmp/tf-serving.sock"]``)."""

    def __init__(
        self,
        service: InferenceService,
        addresses: str | Sequence[str],
        *,
        max_workers: int,
        channel_arguments: Sequence[tuple[str, int | str]] = (),
        ssl: Any = None,
        profiler: bool = False,
    ) -> None:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_LENGTH),
            ("grpc.max_send_message_length", MAX_MESSAGE_LENGTH),
            ("grpc.so_reuseport", 0),
            *channel_arguments,
        ]
        self._server = grpc.server(ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
                                   options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(service), self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(service), self._server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = [PREDICTION_SERVICE, MODEL_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME]
        self._profiler = _ProfilerForwarder() if profiler else None
        if self._profiler is not None:
            self._server.add_generic_rpc_handlers((self._profiler,))
            names.append(PROFILER_SERVICE)
        reflection.enable_server_reflection(names, self._server)
        self.port = 0
        for address in [addresses] if isinstance(addresses, str) else addresses:
            if ssl is not None:
                bound = self._server.add_secure_port(address, _credentials(ssl))
            else:
                bound = self._server.add_insecure_port(address)
            if bound == 0:
                raise OSError(f"Failed to bind the gRPC server to {address}")
            if not address.startswith("unix:"):
                self.port = bound

    def set_serving(self, name: str, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set(name, status)

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float) -> bool:
        """Refuse new calls, let in-flight calls finish within ``grace`` seconds; True when they all did."""
        self.health.enter_graceful_shutdown()
        done = self._server.stop(grace).wait(grace + 5.0)
        if self._profiler is not None:
            self._profiler.close()
        return done
