"""TF Serving's messages, defined by Glimpse: same field numbers and types, our own proto packages.

``glimpse.tf`` mirrors ``tensorflow``, ``glimpse.tf.error`` mirrors ``tensorflow.error`` and ``glimpse.tfs`` mirrors
``tensorflow.serving``. Bytes written by one side parse on the other; the different package names keep these
descriptors apart from TensorFlow's, so both can live in one process. Two places name messages on the wire and must
use TensorFlow's names rather than ours: ``google.protobuf.Any`` type URLs (:func:`pack_any`, :func:`unpack_any`)
and gRPC method paths (:data:`METHODS`).
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from glimpse_wire._proto.tf_error_codes_pb2 import Code
from glimpse_wire._proto.tf_example_pb2 import (
    BytesList,
    Example,
    Feature,
    FeatureList,
    FeatureLists,
    Features,
    FloatList,
    Int64List,
    SequenceExample,
)
from glimpse_wire._proto.tf_meta_graph_pb2 import SignatureDef, TensorInfo
from glimpse_wire._proto.tf_tensor_pb2 import TensorProto, TensorShapeProto
from glimpse_wire._proto.tf_types_pb2 import DataType
from glimpse_wire._proto.tfs_classification_pb2 import (
    Class,
    ClassificationRequest,
    ClassificationResponse,
    ClassificationResult,
    Classifications,
)
from glimpse_wire._proto.tfs_get_model_metadata_pb2 import (
    GetModelMetadataRequest,
    GetModelMetadataResponse,
    SignatureDefMap,
)
from glimpse_wire._proto.tfs_get_model_status_pb2 import (
    GetModelStatusRequest,
    GetModelStatusResponse,
    ModelVersionStatus,
)
from glimpse_wire._proto.tfs_inference_pb2 import (
    InferenceResult,
    InferenceTask,
    MultiInferenceRequest,
    MultiInferenceResponse,
)
from glimpse_wire._proto.tfs_input_pb2 import ExampleList, ExampleListWithContext, Input
from glimpse_wire._proto.tfs_model_management_pb2 import Metric, ReloadConfigRequest, ReloadConfigResponse
from glimpse_wire._proto.tfs_model_pb2 import ModelSpec
from glimpse_wire._proto.tfs_model_server_config_pb2 import (
    FileSystemStoragePathSourceConfig,
    LoggingConfig,
    ModelConfig,
    ModelConfigList,
    ModelServerConfig,
    ModelType,
)
from glimpse_wire._proto.tfs_predict_pb2 import PredictRequest, PredictResponse, PredictStreamedOptions
from glimpse_wire._proto.tfs_prediction_log_pb2 import (
    ClassifyLog,
    LogMetadata,
    MultiInferenceLog,
    PredictionLog,
    PredictLog,
    RegressLog,
)
from glimpse_wire._proto.tfs_regression_pb2 import (
    Regression,
    RegressionRequest,
    RegressionResponse,
    RegressionResult,
)
from glimpse_wire._proto.tfs_status_pb2 import StatusProto

__all__ = [
    # tensorflow
    "DataType",
    "TensorShapeProto",
    "TensorProto",
    "TensorInfo",
    "SignatureDef",
    "BytesList",
    "FloatList",
    "Int64List",
    "Feature",
    "Features",
    "FeatureList",
    "FeatureLists",
    "Example",
    "SequenceExample",
    "Code",
    # tensorflow.serving
    "ModelSpec",
    "PredictRequest",
    "PredictResponse",
    "PredictStreamedOptions",
    "ExampleList",
    "ExampleListWithContext",
    "Input",
    "Class",
    "Classifications",
    "ClassificationResult",
    "ClassificationRequest",
    "ClassificationResponse",
    "Regression",
    "RegressionResult",
    "RegressionRequest",
    "RegressionResponse",
    "InferenceTask",
    "InferenceResult",
    "MultiInferenceRequest",
    "MultiInferenceResponse",
    "SignatureDefMap",
    "GetModelMetadataRequest",
    "GetModelMetadataResponse",
    "StatusProto",
    "GetModelStatusRequest",
    "GetModelStatusResponse",
    "ModelVersionStatus",
    "FileSystemStoragePathSourceConfig",
    "LoggingConfig",
    "ModelType",
    "ModelConfig",
    "ModelConfigList",
    "ModelServerConfig",
    "ReloadConfigRequest",
    "ReloadConfigResponse",
    "Metric",
    "LogMetadata",
    "ClassifyLog",
    "RegressLog",
    "PredictLog",
    "MultiInferenceLog",
    "PredictionLog",
    # wire names
    "PREDICTION_SERVICE",
    "MODEL_SERVICE",
    "METHODS",
    "Method",
    "TYPE_URL_PREFIX",
    "SIGNATURE_DEF_METADATA_FIELD",
    "tf_full_name",
    "type_url",
    "pack_any",
    "unpack_any",
    "convert",
]

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"

TYPE_URL_PREFIX = "type.googleapis.com/"
SIGNATURE_DEF_METADATA_FIELD = "signature_def"


class Method:
    """One gRPC method of TF Serving: its path and its request/response classes (ours)."""

    __slots__ = ("path", "request", "response")

    def __init__(self, path: str, request: type[Message], response: type[Message]) -> None:
        self.path = path
        self.request = request
        self.response = response

    def __repr__(self) -> str:
        return f"Method({self.path!r})"


# Method name -> Method. Paths are TF Serving's own (tensorflow_serving/apis/*_service.proto).
METHODS: dict[str, Method] = {
    "Predict": Method(f"/{PREDICTION_SERVICE}/Predict", PredictRequest, PredictResponse),
    "Classify": Method(f"/{PREDICTION_SERVICE}/Classify", ClassificationRequest, ClassificationResponse),
    "Regress": Method(f"/{PREDICTION_SERVICE}/Regress", RegressionRequest, RegressionResponse),
    "MultiInference": Method(f"/{PREDICTION_SERVICE}/MultiInference", MultiInferenceRequest, MultiInferenceResponse),
    "GetModelMetadata": Method(
        f"/{PREDICTION_SERVICE}/GetModelMetadata", GetModelMetadataRequest, GetModelMetadataResponse
    ),
    "GetModelStatus": Method(f"/{MODEL_SERVICE}/GetModelStatus", GetModelStatusRequest, GetModelStatusResponse),
    "HandleReloadConfigRequest": Method(
        f"/{MODEL_SERVICE}/HandleReloadConfigRequest", ReloadConfigRequest, ReloadConfigResponse
    ),
}

# Our proto package -> TensorFlow's, most specific first.
_PACKAGES: tuple[tuple[str, str], ...] = (
    ("glimpse.tf.error.", "tensorflow.error."),
    ("glimpse.tfs.", "tensorflow.serving."),
    ("glimpse.tf.", "tensorflow."),
)

_M = TypeVar("_M", bound=Message)


def tf_full_name(message: Message | type[Message] | str) -> str:
    """TensorFlow's full name of one of our messages (or enums, or of our full name as a string), e.g.
    ``tensorflow.serving.SignatureDefMap``. Names outside our packages are returned unchanged."""
    full_name = message if isinstance(message, str) else message.DESCRIPTOR.full_name
    for ours, theirs in _PACKAGES:
        if full_name.startswith(ours):
            return theirs + full_name[len(ours) :]
    return full_name


def type_url(message: Message | type[Message]) -> str:
    """The ``google.protobuf.Any`` type URL TF Serving uses for this message."""
    return TYPE_URL_PREFIX + tf_full_name(message)


def pack_any(message: Message) -> any_pb2.Any:
    """Pack one of our messages into an Any under TensorFlow's type name (what TF Serving and its clients expect)."""
    return any_pb2.Any(type_url=type_url(message), value=message.SerializeToString(deterministic=True))


def unpack_any(packed: any_pb2.Any, cls: type[_M]) -> _M:
    """Unpack an Any holding ``cls`` under TensorFlow's type name (or ours). ValueError on another type."""
    name = packed.type_url.rsplit("/", 1)[-1]
    if name not in (tf_full_name(cls), cls.DESCRIPTOR.full_name):
        raise ValueError(f"Any holds {name or '(no type)'}, expected {tf_full_name(cls)}")
    try:
        return cls.FromString(packed.value)
    except DecodeError as e:
        raise ValueError(f"Any claiming {name} does not parse: {e}") from e


def convert(message: Message, cls: type[_M]) -> _M:
    """Re-read any wire-compatible message (e.g. TensorFlow's own class) as ``cls``; ``message`` is returned as is
    when it already is one."""
    if isinstance(message, cls):
        return message
    if not isinstance(message, Message):
        raise TypeError(f"expected a protobuf message, got {type(message).__name__}")
    try:
        return cls.FromString(message.SerializeToString())
    except DecodeError as e:
        raise ValueError(f"{message.DESCRIPTOR.full_name} is not wire-compatible with {tf_full_name(cls)}: {e}") from e
