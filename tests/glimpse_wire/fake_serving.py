"""A real gRPC server on 127.0.0.1 that speaks TF Serving's method paths with glimpse_wire's messages.

It is a fake of the *server layer* only (for client tests): Predict echoes its inputs back as outputs, Classify
scores each example's ``label`` feature, metadata comes from a SignatureDefMap built like an exported Glimpse
model's, and failures can be scripted per method (``fail(method, code, times)``) or delayed (``delay``).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from glimpse_wire import contract as c
from glimpse_wire.messages import (
    METHODS,
    MODEL_SERVICE,
    PREDICTION_SERVICE,
    Class,
    ClassificationResponse,
    Classifications,
    DataType,
    GetModelMetadataResponse,
    GetModelStatusResponse,
    ModelSpec,
    ModelVersionStatus,
    PredictResponse,
    Regression,
    RegressionResponse,
    ReloadConfigResponse,
    SignatureDef,
    SignatureDefMap,
    StatusProto,
    TensorInfo,
    pack_any,
)
from glimpse_wire.tensors import shape_proto

__all__ = ["FakeServing", "glimpse_signature_map", "LABELS"]

LABELS = ("bird", "fish", "flower")
_HW = (32, 32)


def _info(name: str, dtype: int, shape: tuple[int | None, ...] | None) -> TensorInfo:
    return TensorInfo(name=name, dtype=dtype, tensor_shape=shape_proto(shape))


def glimpse_signature_map(num_classes: int = len(LABELS)) -> SignatureDefMap:
    """The signatures of a contract-v1 model, as GetModelMetadata would report them."""
    n, (h, w) = num_classes, _HW
    predict_outputs = {
        c.OUT_PROBABILITIES: _info("StatefulPartitionedCall:0", DataType.DT_FLOAT, (None, n)),
        c.OUT_CLASS_INDEX: _info("StatefulPartitionedCall:1", DataType.DT_INT32, (None,)),
        c.OUT_LABEL: _info("StatefulPartitionedCall:2", DataType.DT_STRING, (None,)),
    }
    sigs = {
        c.SIG_DEFAULT: SignatureDef(
            method_name=c.PREDICT_METHOD_NAME,
            inputs={c.IN_IMAGE_BYTES: _info("serving_default_image_bytes:0", DataType.DT_STRING, (None,))},
            outputs=predict_outputs,
        ),
        c.SIG_PIXELS: SignatureDef(
            method_name=c.PREDICT_METHOD_NAME,
            inputs={c.IN_IMAGES: _info("predict_pixels_images:0", DataType.DT_FLOAT, (None, h, w, 3))},
            outputs=predict_outputs,
        ),
        c.SIG_CLASSIFY: SignatureDef(
            method_name=c.CLASSIFY_METHOD_NAME,
            inputs={c.IN_EXAMPLES: _info("classification_inputs:0", DataType.DT_STRING, (None,))},
            outputs={
                c.OUT_CLASSES: _info("StatefulPartitionedCall_1:0", DataType.DT_STRING, (None, n)),
                c.OUT_SCORES: _info("StatefulPartitionedCall_1:1", DataType.DT_FLOAT, (None, n)),
            },
        ),
    }
    param_dtypes = {"int32": DataType.DT_INT32, "float32": DataType.DT_FLOAT, "bool": DataType.DT_BOOL}
    for method in c.EXPLAIN_METHODS:
        key = c.explain_signature(method)
        inputs = {
            c.IN_IMAGE_BYTES: _info(f"{key}_image_bytes:0", DataType.DT_STRING, (None,)),
            c.IN_CLASS_INDEX: _info(f"{key}_class_index:0", DataType.DT_INT32, (None,)),
        }
        for p in c.METHOD_PARAMS[method]:
            inputs[p.name] = _info(f"{key}_{p.name}:0", param_dtypes[p.dtype], (None,))
        sigs[key] = SignatureDef(
            method_name=c.PREDICT_METHOD_NAME,
            inputs=inputs,
            outputs={
                c.OUT_HEATMAP: _info(f"{key}_out:0", DataType.DT_FLOAT, (None, h, w)),
                c.OUT_ATTRIBUTION: _info(f"{key}_out:1", DataType.DT_FLOAT, None),
                c.OUT_CLASS_INDEX: _info(f"{key}_out:2", DataType.DT_INT32, (None,)),
                c.OUT_SCORE: _info(f"{key}_out:3", DataType.DT_FLOAT, (None,)),
                c.OUT_PROBABILITIES: _info(f"{key}_out:4", DataType.DT_FLOAT, (None, n)),
            },
        )
    return SignatureDefMap(signature_def=sigs)


@dataclass
class _Script:
    failures: list[tuple[grpc.StatusCode, str]] = field(default_factory=list)
    delay_s: float = 0.0


class FakeServing:
    """Start with ``FakeServing().start()``; ``address`` is "127.0.0.1:<port>"; ``stop()`` when done."""

    def __init__(self, model: str = "flowers", version: int = 7) -> None:
        self.model = model
        self.version = version
        self.signature_map = glimpse_signature_map()
        self.statuses: list[ModelVersionStatus] = [
            ModelVersionStatus(version=version, state=ModelVersionStatus.State.AVAILABLE, status=StatusProto())
        ]
        self.calls: dict[str, int] = defaultdict(int)
        self.requests: dict[str, list[Any]] = defaultdict(list)
        self.reload_status = StatusProto()
        self.send_signature_map = True
        self.health = health.HealthServicer()
        self._scripts: dict[str, _Script] = defaultdict(_Script)
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.port = 0

    # -- scripting -----------------------------------------------------------------------------------------------

    def fail(self, method: str, code: grpc.StatusCode, times: int = 1, message: str = "scripted failure") -> None:
        with self._lock:
            self._scripts[method].failures.extend([(code, message)] * times)

    def delay(self, method: str, seconds: float) -> None:
        with self._lock:
            self._scripts[method].delay_s = seconds

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self.calls.clear()
            self.requests.clear()
            self.statuses = [
                ModelVersionStatus(version=self.version, state=ModelVersionStatus.State.AVAILABLE, status=StatusProto())
            ]
            self.reload_status = StatusProto()
            self.send_signature_map = True
            self.signature_map = glimpse_signature_map()

    # -- handlers ------------------------------------------------------------------------------------------------

    def _enter(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls[method] += 1
            self.requests[method].append(request)
            script = self._scripts[method]
            failure = script.failures.pop(0) if script.failures else None
            delay = script.delay_s
        if delay:
            time.sleep(delay)
        if failure is not None:
            context.abort(*failure)
        has_spec = "model_spec" in request.DESCRIPTOR.fields_by_name
        if has_spec and request.model_spec.name != self.model:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({request.model_spec.name})"
            )

    def _spec(self, request_spec: ModelSpec, default_signature: str = c.SIG_DEFAULT) -> ModelSpec:
        spec = ModelSpec(name=self.model, signature_name=request_spec.signature_name or default_signature)
        spec.version.value = self.version
        return spec

    def _predict(self, request: Any, context: grpc.ServicerContext) -> PredictResponse:
        self._enter("Predict", request, context)
        if request.model_spec.signature_name not in ("", *self.signature_map.signature_def):
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{request.model_spec.signature_name}" not found.',
            )
        response = PredictResponse(model_spec=self._spec(request.model_spec))
        for alias, tensor in request.inputs.items():
            if not request.output_filter or alias in request.output_filter:
                response.outputs[alias].CopyFrom(tensor)
        return response

    def _classify(self, request: Any, context: grpc.ServicerContext) -> ClassificationResponse:
        self._enter("Classify", request, context)
        kind = request.input.WhichOneof("kind")
        examples = getattr(request.input, kind).examples if kind else []
        if not examples:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
        response = ClassificationResponse(model_spec=self._spec(request.model_spec, c.SIG_CLASSIFY))
        for example in examples:
            feature = example.features.feature.get(c.EXAMPLE_LABEL_KEY)
            truth = feature.int64_list.value[0] if feature is not None and feature.int64_list.value else 0
            classes = [Class(label=name, score=0.9 if i == truth else 0.05) for i, name in enumerate(LABELS)]
            response.result.classifications.append(Classifications(classes=classes))
        return response

    def _regress(self, request: Any, context: grpc.ServicerContext) -> RegressionResponse:
        self._enter("Regress", request, context)
        response = RegressionResponse(model_spec=self._spec(request.model_spec))
        for example in request.input.example_list.examples:
            values = example.features.feature["x"].float_list.value
            response.result.regressions.append(Regression(value=sum(values)))
        return response

    def _metadata(self, request: Any, context: grpc.ServicerContext) -> GetModelMetadataResponse:
        self._enter("GetModelMetadata", request, context)
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Metadata field signature_def is required")
        response = GetModelMetadataResponse(model_spec=self._spec(request.model_spec, ""))
        if self.send_signature_map:
            response.metadata["signature_def"].CopyFrom(pack_any(self.signature_map))
        return response

    def _status(self, request: Any, context: grpc.ServicerContext) -> GetModelStatusResponse:
        self._enter("GetModelStatus", request, context)
        with self._lock:
            statuses = list(self.statuses)
        return GetModelStatusResponse(model_version_status=statuses)

    def _reload(self, request: Any, context: grpc.ServicerContext) -> ReloadConfigResponse:
        self._enter("HandleReloadConfigRequest", request, context)
        return ReloadConfigResponse(status=self.reload_status)

    # -- lifetime ------------------------------------------------------------------------------------------------

    def _handler(self, name: str, fn: Callable[[Any, grpc.ServicerContext], Any]) -> grpc.RpcMethodHandler:
        method = METHODS[name]
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=method.request.FromString, response_serializer=method.response.SerializeToString
        )

    def start(self) -> FakeServing:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    PREDICTION_SERVICE,
                    {
                        "Predict": self._handler("Predict", self._predict),
                        "Classify": self._handler("Classify", self._classify),
                        "Regress": self._handler("Regress", self._regress),
                        "GetModelMetadata": self._handler("GetModelMetadata", self._metadata),
                    },
                ),
                grpc.method_handlers_generic_handler(
                    MODEL_SERVICE,
                    {
                        "GetModelStatus": self._handler("GetModelStatus", self._status),
                        "HandleReloadConfigRequest": self._handler("HandleReloadConfigRequest", self._reload),
                    },
                ),
            )
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.health.set(self.model, health_pb2.HealthCheckResponse.SERVING)
        self.port = server.add_insecure_port("127.0.0.1:0")
        if not self.port:
            raise RuntimeError("could not bind a port on 127.0.0.1")
        server.start()
        self._server = server
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None
