"""The gRPC surface: TF Serving's PredictionService and ModelService, health checking and reflection.

The servicers are tensorflow-serving-api's own generated bases; each method hands the request to
:class:`serving.service.InferenceService` and turns a :class:`ServingError` into the call's status, with TF
Serving's 1024-character message limit ("...TRUNCATED"). The request's deadline bounds the run. The server accepts
messages up to INT32_MAX bytes, like tensorflow_model_server, and applies ``--grpc_channel_arguments``.
"""

from __future__ import annotations

import logging
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
]

log = logging.getLogger("serving.grpc")

MAX_MESSAGE_LENGTH = 2**31 - 1
ERROR_MESSAGE_LIMIT = 1024
PREDICTION_SERVICE = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name
MODEL_SERVICE = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name


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


class GrpcServer:
    """PredictionService + ModelService + health + reflection on ``address`` (e.g. "0.0.0.0:8500")."""

    def __init__(
        self,
        service: InferenceService,
        address: str,
        *,
        max_workers: int,
        channel_arguments: Sequence[tuple[str, int | str]] = (),
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
        names = (PREDICTION_SERVICE, MODEL_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self._server)
        self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"Failed to bind the gRPC server to {address}")

    def set_serving(self, name: str, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set(name, status)

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float) -> bool:
        """Refuse new calls, let in-flight calls finish within ``grace`` seconds; True when they all did."""
        self.health.enter_graceful_shutdown()
        return self._server.stop(grace).wait(grace + 5.0)
