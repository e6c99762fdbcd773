"""A TensorFlow-free gRPC client for TF Serving and ``glimpse serve``.

One channel per client, safe to share between threads. The channel reconnects quickly after the server comes back
(reconnect backoff capped at ``ClientConfig.reconnect_backoff_max_s``, default 1 s, instead of gRPC's 120 s; a
restarted model server is used again within about a second). Every call carries a deadline (``timeout_s``, default from
:class:`ClientConfig`) that bounds the whole call, retries included; only UNAVAILABLE is retried, with exponential
backoff. Every ``grpc.RpcError`` becomes the typed :class:`~glimpse_wire.errors.ServingError` of its status code.
Bad arguments raise ValueError/TypeError before anything is sent.

    with ServingClient("localhost:8500") as client:
        result = client.predict("flowers", {"image_bytes": [jpeg]})
        result.outputs["probabilities"]
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from google.protobuf import text_format
from google.protobuf.message import DecodeError, Message

from glimpse_wire.contract import (
    IN_CLASS_INDEX,
    IN_IMAGE_BYTES,
    METHOD_PARAMS,
    SIG_CLASSIFY,
    MethodParam,
    explain_signature,
)
from glimpse_wire.errors import DeadlineExceeded, Internal, NotFound, Unavailable, error_for, from_rpc_error
from glimpse_wire.examples import to_example
from glimpse_wire.messages import (
    METHODS,
    SIGNATURE_DEF_METADATA_FIELD,
    ClassificationRequest,
    Code,
    Example,
    GetModelMetadataRequest,
    GetModelStatusRequest,
    Input,
    ModelServerConfig,
    ModelSpec,
    ModelVersionStatus,
    PredictRequest,
    RegressionRequest,
    ReloadConfigRequest,
    SignatureDefMap,
    TensorInfo,
    convert,
    unpack_any,
)
from glimpse_wire.tensors import dtype_name, shape_from_proto, to_numpy, to_tensor_proto

__all__ = [
    "ClientConfig",
    "ModelRef",
    "PredictResult",
    "ClassifyResult",
    "RegressResult",
    "TensorSpec",
    "SignatureInfo",
    "ModelMetadata",
    "VersionStatus",
    "HEALTH_CHECK_PATH",
    "build_explain_inputs",
    "ServingClient",
]

HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check"
_MAX_BACKOFF_S = 5.0


@dataclass(frozen=True)
class ClientConfig:
    """Where and how to call: ``address`` host:port, default deadline, UNAVAILABLE retries (after the first try),
    first backoff (doubling), the gRPC message-size limit both ways (TF Serving's default 4 MiB is too small
    for a batch of images), and the longest wait between the channel's reconnection attempts while the server is
    down (gRPC's own default grows to 120 s, so a restarted server would stay unused for up to two minutes)."""

    address: str = "localhost:8500"
    timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 0.1
    max_message_bytes: int = 64 * 2**20
    reconnect_backoff_max_s: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address.strip():
            raise ValueError(f"address must be a non-empty 'host:port' string, got {self.address!r}")
        if not _positive(self.timeout_s):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {self.timeout_s!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {self.retries!r}")
        if (
            isinstance(self.backoff_s, bool)
            or not isinstance(self.backoff_s, (int, float))
            or not (0 <= self.backoff_s < math.inf)
        ):
            raise ValueError(f"backoff_s must be a number >= 0, got {self.backoff_s!r}")
        if (
            isinstance(self.max_message_bytes, bool)
            or not isinstance(self.max_message_bytes, int)
            or not 0 < self.max_message_bytes <= 2**31 - 1
        ):
            raise ValueError(f"max_message_bytes must be an int in [1, 2**31 - 1], got {self.max_message_bytes!r}")
        if not _positive(self.reconnect_backoff_max_s) or self.reconnect_backoff_max_s > 3600:
            raise ValueError(
                f"reconnect_backoff_max_s must be in (0, 3600] seconds, got {self.reconnect_backoff_max_s!r}"
            )

    def channel_options(self) -> list[tuple[str, int]]:
        """The options of the channel the client opens: message limits both ways, and a reconnect backoff that starts
        at 100 ms (or the cap, if lower) and never exceeds ``reconnect_backoff_max_s``."""
        cap_ms = max(1, int(self.reconnect_backoff_max_s * 1000))
        first_ms = min(100, cap_ms)
        return [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", first_ms),
            ("grpc.min_reconnect_backoff_ms", first_ms),
            ("grpc.max_reconnect_backoff_ms", cap_ms),
            # a host name is resolved again after a failure without waiting gRPC's default 30 s
            ("grpc.dns_min_time_between_resolutions_ms", cap_ms),
        ]


def _positive(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value < math.inf


@dataclass(frozen=True)
class ModelRef:
    """A servable: model name, version (None = latest or not said), signature key, and version label.

    Results carry the one that answered (name, version, signature). Callers that address a model use name plus at most
    one of ``version`` / ``label`` (TF Serving's version labels); ``selector()`` gives the client's keyword arguments.
    """

    name: str
    version: int | None = None
    signature: str = ""
    label: str | None = None

    def selector(self) -> dict[str, Any]:
        """``version=`` and ``label=`` keyword arguments for the client's methods."""
        return {"version": self.version, "label": self.label}

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ModelRef:
        version = int(spec.version.value) if spec.HasField("version") else None
        return cls(spec.name, version, spec.signature_name)


@dataclass(frozen=True)
class PredictResult:
    model: ModelRef
    outputs: dict[str, np.ndarray]

    def __getitem__(self, alias: str) -> np.ndarray:
        return self.outputs[alias]


@dataclass(frozen=True)
class ClassifyResult:
    """``results[i]`` lists (label, score) for example i, in the server's order."""

    model: ModelRef
    results: list[list[tuple[str, float]]]


@dataclass(frozen=True)
class RegressResult:
    """``values[i]`` is the regression value of example i."""

    model: ModelRef
    values: list[float]


@dataclass(frozen=True)
class TensorSpec:
    """One signature input or output: dtype name ("DT_FLOAT"), shape with None for unknown dims (None when the
    rank is unknown), and the graph tensor name."""

    dtype: str
    shape: tuple[int | None, ...] | None
    name: str = ""

    @classmethod
    def from_proto(cls, info: TensorInfo) -> TensorSpec:
        shape = shape_from_proto(info.tensor_shape) if info.HasField("tensor_shape") else None
        return cls(dtype_name(info.dtype), shape, info.name)


@dataclass(frozen=True)
class SignatureInfo:
    method_name: str
    inputs: dict[str, TensorSpec] = field(default_factory=dict)
    outputs: dict[str, TensorSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: int | None
    signatures: dict[str, SignatureInfo]

    @classmethod
    def from_response(cls, response: Message) -> ModelMetadata:
        """Parse a GetModelMetadataResponse (ours or TensorFlow's). ValueError when it carries no signature map."""
        if SIGNATURE_DEF_METADATA_FIELD not in response.metadata:
            raise ValueError(f"metadata response has no {SIGNATURE_DEF_METADATA_FIELD!r} entry")
        signature_map = unpack_any(response.metadata[SIGNATURE_DEF_METADATA_FIELD], SignatureDefMap)
        signatures = {}
        for key in sorted(signature_map.signature_def):
            sig = signature_map.signature_def[key]
            signatures[key] = SignatureInfo(
                method_name=sig.method_name,
                inputs={alias: TensorSpec.from_proto(sig.inputs[alias]) for alias in sorted(sig.inputs)},
                outputs={alias: TensorSpec.from_proto(sig.outputs[alias]) for alias in sorted(sig.outputs)},
            )
        ref = ModelRef.from_spec(response.model_spec)
        return cls(ref.name, ref.version, signatures)


@dataclass(frozen=True)
class VersionStatus:
    """One version's state ("START", "LOADING", "AVAILABLE", "UNLOADING", "END") and its status."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""

    @property
    def available(self) -> bool:
        return self.state == "AVAILABLE"

    @classmethod
    def from_proto(cls, status: ModelVersionStatus) -> VersionStatus:
        return cls(
            version=int(status.version),
            state=_enum_name(ModelVersionStatus.State, status.state),
            error_code=_enum_name(Code, status.status.error_code),
            error_message=status.status.error_message,
        )


def _enum_name(enum: Any, number: int) -> str:
    try:
        return enum.Name(number)
    except ValueError:
        return str(number)


# ---------------------------------------------------------------------------------------------------------------
# Request building


def _model_spec(model: str, signature: str | None, version: int | None, label: str | None) -> ModelSpec:
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a non-empty name, got {model!r}")
    if version is not None and label is not None:
        raise ValueError("pass either version or label, not both")
    spec = ModelSpec(name=model, signature_name=signature or "")
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 0:
            raise ValueError(f"version must be an int >= 0, got {version!r}")
        spec.version.value = int(version)
    elif label is not None:
        if not isinstance(label, str) or not label:
            raise ValueError(f"label must be a non-empty string, got {label!r}")
        spec.version_label = label
    return spec


def _example(item: Any, index: int) -> Example:
    if isinstance(item, Example):
        return item
    if isinstance(item, (bytes, bytearray, memoryview)):
        try:
            return Example.FromString(bytes(item))
        except DecodeError as e:
            raise ValueError(f"example {index} is not a serialized tf.Example: {e}") from e
    if isinstance(item, Mapping):
        return to_example(item)
    if isinstance(item, Message):
        return convert(item, Example)
    raise TypeError(f"example {index} must be bytes (a serialized tf.Example) or a mapping, got {type(item).__name__}")


def _input(examples: Sequence[Any], context: Mapping[str, Any] | bytes | None) -> Input:
    if isinstance(examples, (bytes, str, Mapping)) or not isinstance(examples, Sequence):
        raise TypeError("examples must be a sequence of examples (bytes or mappings)")
    if not examples:
        raise ValueError("no examples given")
    parsed = [_example(item, i) for i, item in enumerate(examples)]
    request_input = Input()
    if context is None:
        request_input.example_list.examples.extend(parsed)
    else:
        request_input.example_list_with_context.examples.extend(parsed)
        request_input.example_list_with_context.context.CopyFrom(_example(context, -1))
    return request_input


def _broadcast(name: str, value: Any, batch: int) -> list[Any]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) != batch:
            raise ValueError(f"{name} has {len(value)} values for {batch} images")
        return list(value)
    return [value] * batch


def _check_param(method: str, param: MethodParam, value: Any) -> int | float | bool:
    where = f"{method} parameter {param.name!r}"
    if param.dtype == "bool":
        if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
            return bool(value)
        raise ValueError(f"{where} must be true or false, got {value!r}")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{where} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{where} must be finite, got {value!r}")
    if param.dtype == "int32":
        if float(value) != int(value):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    if (param.minimum is not None and value < param.minimum) or (param.maximum is not None and value > param.maximum):
        raise ValueError(f"{where} must be in [{param.minimum}, {param.maximum}], got {value!r}")
    return value


_PARAM_NUMPY = {"int32": np.int32, "float32": np.float32, "bool": np.bool_}


def build_explain_inputs(
    method: str,
    images: Sequence[bytes],
    *,
    class_index: Sequence[int] | int | None = None,
    params: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """The Predict inputs of ``explain_<method>``: ``image_bytes`` [B], ``class_index`` int32 [B] (-1 = the
    predicted class) and every parameter of ``METHOD_PARAMS[method]`` as a [B] tensor, defaults filled in and
    scalars broadcast. ValueError naming the allowed parameters and ranges when something is off."""
    explain_signature(method)  # ValueError for an unknown method
    if isinstance(images, (bytes, bytearray, str)) or not isinstance(images, Sequence):
        raise TypeError("images must be a sequence of encoded images (bytes)")
    if not images:
        raise ValueError("no images given")
    encoded = np.empty(len(images), dtype=object)
    for i, image in enumerate(images):
        if not isinstance(image, (bytes, bytearray, memoryview)):
            raise TypeError(f"image {i} must be bytes (an encoded JPEG/PNG/GIF/BMP), got {type(image).__name__}")
        if not len(image):
            raise ValueError(f"image {i} is empty")
        encoded[i] = bytes(image)
    batch = len(images)
    classes = _broadcast("class_index", -1 if class_index is None else class_index, batch)
    for c in classes:
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or not -1 <= c <= 2**31 - 1:
            raise ValueError(f"class_index values must be ints >= -1 (-1 = predicted class), got {c!r}")
    inputs: dict[str, np.ndarray] = {IN_IMAGE_BYTES: encoded, IN_CLASS_INDEX: np.asarray(classes, dtype=np.int32)}
    given = dict(params or {})
    declared = METHOD_PARAMS[method]
    allowed = [p.name for p in declared]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for {method}; "
            f"allowed: {', '.join(allowed) if allowed else '(none)'}"
        )
    for param in declared:
        values = _broadcast(f"parameter {param.name!r}", given.get(param.name, param.default), batch)
        checked = [_check_param(method, param, v) for v in values]
        inputs[param.name] = np.asarray(checked, dtype=_PARAM_NUMPY[param.dtype])
    return inputs


def _config_message(config: str | Message) -> ModelServerConfig:
    if isinstance(config, str):
        message = ModelServerConfig()
        try:
            text_format.Parse(config, message)
        except text_format.ParseError as e:
            raise ValueError(f"not a ModelServerConfig text proto: {e}") from e
        return message
    if isinstance(config, Message):
        return convert(config, ModelServerConfig)
    raise TypeError(f"config must be ModelServerConfig text or a message, got {type(config).__name__}")


# ---------------------------------------------------------------------------------------------------------------
# The client


class ServingClient:
    """TF Serving's PredictionService and ModelService (and grpc.health.v1) over one gRPC channel.

    ``address_or_config``: "host:port" or a :class:`ClientConfig`. ``channel``: use this channel instead of opening
    an insecure one (e.g. a secure channel); the client then does not close it.
    """

    def __init__(self, address_or_config: str | ClientConfig = "localhost:8500", *, channel: Any = None) -> None:
        if isinstance(address_or_config, ClientConfig):
            self.config = address_or_config
        elif isinstance(address_or_config, str):
            self.config = ClientConfig(address=address_or_config)
        else:
            raise TypeError(f"expected an address or a ClientConfig, got {type(address_or_config).__name__}")
        self._owns_channel = channel is None
        if channel is None:
            channel = grpc.insecure_channel(self.config.address, options=self.config.channel_options())
        self._channel = channel
        self._calls = {
            name: channel.unary_unary(
                method.path,
                request_serializer=method.request.SerializeToString,
                response_deserializer=method.response.FromString,
            )
            for name, method in METHODS.items()
        }
        self._health: Any = None
        self._lock = threading.Lock()
        self._closed = False

    # -- plumbing ------------------------------------------------------------------------------------------------

    def _deadline(self, timeout_s: float | None) -> float:
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        if not _positive(timeout):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        return time.monotonic() + float(timeout)

    def _invoke(self, call: Any, request: Message, timeout_s: float | None, retries: int | None = None) -> Any:
        if self._closed:
            raise RuntimeError("ServingClient is closed")
        deadline = self._deadline(timeout_s)
        retries = self.config.retries if retries is None else retries
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded("deadline exceeded before the call could be sent")
            try:
                return call(request, timeout=remaining)
            except grpc.RpcError as e:
                error = from_rpc_error(e)
                if error.code != "UNAVAILABLE" or attempt >= retries:
                    raise error from e
                delay = min(self.config.backoff_s * 2**attempt, _MAX_BACKOFF_S) * random.uniform(0.5, 1.0)
                if time.monotonic() + delay >= deadline:
                    raise error from e
            attempt += 1
            time.sleep(delay)

    def _call(self, name: str, request: Message, timeout_s: float | None, retries: int | None = None) -> Any:
        return self._invoke(self._calls[name], request, timeout_s, retries)

    # -- PredictionService ---------------------------------------------------------------------------------------

    def predict(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        signature: str | None = None,
        version: int | None = None,
        label: str | None = None,
        output_filter: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> PredictResult:
        """Predict: ``inputs`` maps input aliases to arrays/lists/scalars (or TensorProtos); returns the outputs as
        numpy arrays. ``signature`` None = the server's default (``serving_default``)."""
        if not isinstance(inputs, Mapping):
            raise TypeError(f"inputs must map input aliases to values, got {type(inputs).__name__}")
        request = PredictRequest(model_spec=_model_spec(model, signature, version, label))
        for alias, value in inputs.items():
            if not isinstance(alias, str) or not alias:
                raise ValueError(f"input aliases are non-empty strings, got {alias!r}")
            try:
                request.inputs[alias].CopyFrom(to_tensor_proto(value))
            except (TypeError, ValueError) as e:
                raise type(e)(f"input {alias!r}: {e}") from e
        if output_filter is not None:
            aliases = [output_filter] if isinstance(output_filter, str) else list(output_filter)
            if not all(isinstance(a, str) for a in aliases):
                raise TypeError("output_filter must be a sequence of output aliases")
            request.output_filter.extend(aliases)
        response = self._call("Predict", request, timeout_s)
        try:
            outputs = {alias: to_numpy(response.outputs[alias]) for alias in sorted(response.outputs)}
        except ValueError as e:
            raise Internal(f"malformed Predict response: {e}") from e
        return PredictResult(ModelRef.from_spec(response.model_spec), outputs)

    def classify(
        self,
        model: str,
        examples: Sequence[bytes | Mapping[str, Any]],
        *,
        signature: str | None = SIG_CLASSIFY,
        version: int | None = None,
        label: str | None = None,
        context: Mapping[str, Any] | bytes | None = None,
        timeout_s: float | None = None,
    ) -> ClassifyResult:
        """Classify tf.Examples (serialized bytes or feature mappings, see ``examples.to_example``); ``context``
        features are shared by all examples. ``signature`` defaults to the contract's classification signature;
        pass "" or None for the server's default."""
        request = ClassificationRequest(
            model_spec=_model_spec(model, signature, version, label), input=_input(examples, context)
        )
        response = self._call("Classify", request, timeout_s)
        results = [
            [(c.label, float(c.score)) for c in classifications.classes]
            for classifications in response.result.classifications
        ]
        return ClassifyResult(ModelRef.from_spec(response.model_spec), results)

    def regress(
        self,
        model: str,
        examples: Sequence[bytes | Mapping[str, Any]],
        *,
        signature: str | None = None,
        version: int | None = None,
        label: str | None = None,
        context: Mapping[str, Any] | bytes | None = None,
        timeout_s: float | None = None,
    ) -> RegressResult:
        """Regress tf.Examples; one value per example."""
        request = RegressionRequest(
            model_spec=_model_spec(model, signature, version, label), input=_input(examples, context)
        )
        response = self._call("Regress", request, timeout_s)
        values = [float(r.value) for r in response.result.regressions]
        return RegressResult(ModelRef.from_spec(response.model_spec), values)

    def metadata(
        self, model: str, *, version: int | None = None, label: str | None = None, timeout_s: float | None = None
    ) -> ModelMetadata:
        """GetModelMetadata: the signatures of the model version (latest when neither version nor label)."""
        request = GetModelMetadataRequest(
            model_spec=_model_spec(model, None, version, label), metadata_field=[SIGNATURE_DEF_METADATA_FIELD]
        )
        response = self._call("GetModelMetadata", request, timeout_s)
        try:
            return ModelMetadata.from_response(response)
        except ValueError as e:
            raise Internal(f"malformed GetModelMetadata response: {e}") from e

    def explain(
        self,
        model: str,
        method: str,
        images: Sequence[bytes],
        *,
        class_index: Sequence[int] | int | None = None,
        params: Mapping[str, Any] | None = None,
        version: int | None = None,
        label: str | None = None,
        timeout_s: float | None = None,
    ) -> PredictResult:
        """Run the ``explain_<method>`` signature on encoded images; see :func:`build_explain_inputs`. Outputs:
        ``heatmap``, ``attribution``, ``class_index``, ``score``, ``probabilities``."""
        inputs = build_explain_inputs(method, images, class_index=class_index, params=params)
        return self.predict(
            model, inputs, signature=explain_signature(method), version=version, label=label, timeout_s=timeout_s
        )

    # -- ModelService --------------------------------------------------------------------------------------------

    def status(
        self, model: str, *, version: int | None = None, label: str | None = None, timeout_s: float | None = None
    ) -> list[VersionStatus]:
        """GetModelStatus: every version the server knows (or the one asked for), by version number."""
        request = GetModelStatusRequest(model_spec=_model_spec(model, None, version, label))
        response = self._call("GetModelStatus", request, timeout_s)
        statuses = [VersionStatus.from_proto(s) for s in response.model_version_status]
        return sorted(statuses, key=lambda s: s.version)

    def reload_config(self, config: str | Message, *, timeout_s: float | None = None) -> None:
        """HandleReloadConfigRequest with a ModelServerConfig (text proto, ours or TensorFlow's message).
        Raises the typed error of a non-OK reply status."""
        request = ReloadConfigRequest(config=_config_message(config))
        response = self._call("HandleReloadConfigRequest", request, timeout_s)
        if response.status.error_code != Code.OK:
            raise error_for(response.status.error_code, response.status.error_message)

    # -- health and readiness ------------------------------------------------------------------------------------

    def health(self, service: str = "", *, timeout_s: float | None = None) -> str:
        """grpc.health.v1 Check: "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN" or "UNKNOWN". An unknown service is
        NOT_FOUND (grpc's health servicer answers that way)."""
        from grpc_health.v1 import health_pb2

        with self._lock:
            if self._health is None:
                self._health = self._channel.unary_unary(
                    HEALTH_CHECK_PATH,
                    request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                    response_deserializer=health_pb2.HealthCheckResponse.FromString,
                )
        response = self._invoke(self._health, health_pb2.HealthCheckRequest(service=service), timeout_s)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_available(
        self,
        model: str,
        timeout_s: float,
        *,
        version: int | None = None,
        label: str | None = None,
        poll_s: float = 0.2,
    ) -> None:
        """Poll GetModelStatus until a version (or the one asked for) is AVAILABLE. While the server is not up
        (UNAVAILABLE) or does not know the model yet (NOT_FOUND), keep polling. DeadlineExceeded after
        ``timeout_s``; the typed error of the version when it ended with an error (failed to load)."""
        if not _positive(timeout_s):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if not _positive(poll_s):
            raise ValueError(f"poll_s must be a positive number of seconds, got {poll_s!r}")
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                statuses = self._status_once(model, version, label, min(remaining, self.config.timeout_s))
            except (Unavailable, NotFound, DeadlineExceeded) as e:
                last = str(e)
            else:
                if any(s.available for s in statuses):
                    return
                failed = [s for s in statuses if s.state == "END" and s.error_code != "OK"]
                if statuses and len(failed) == len(statuses):
                    worst = failed[-1]
                    raise error_for(
                        worst.error_code, f"{model} version {worst.version} failed to load: {worst.error_message}"
                    )
                last = ", ".join(f"version {s.version}: {s.state}" for s in statuses) or "no versions"
            time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))
        raise DeadlineExceeded(f"{model} was not AVAILABLE within {timeout_s}s ({last})")

    def _status_once(self, model: str, version: int | None, label: str | None, timeout_s: float) -> list[VersionStatus]:
        request = GetModelStatusRequest(model_spec=_model_spec(model, None, version, label))
        response = self._call("GetModelStatus", request, timeout_s, retries=0)
        return [VersionStatus.from_proto(s) for s in response.model_version_status]

    # -- lifetime ------------------------------------------------------------------------------------------------

    @property
    def channel(self) -> Any:
        return self._channel

    def close(self) -> None:
        """Close the channel (when the client opened it). Further calls raise RuntimeError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServingClient({self.config.address!r})"
