"""The transport-free core: TF Serving's request handling on its own protobuf messages.

One method per RPC takes the request message and returns the response message, or raises a
:class:`glimpse_wire.errors.ServingError` with TF Serving's status code and message. Checks and their order follow
TF Serving's sources: predict_util.cc (Predict), classifier.cc / regressor.cc / util.cc (Classify, Regress and the
tf.Example input), multi_inference.cc, get_model_metadata_impl.cc, get_model_status_impl.cc and
model_service_impl.cc. Runs go through :class:`serving.session.SessionModel` (feeds and fetches by tensor name),
through the batch scheduler when batching is on. The gRPC and REST layers only translate.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)

from glimpse_wire.contract import (
    CLASSIFY_METHOD_NAME,
    PREDICT_METHOD_NAME,
    SIG_DEFAULT,
    WARMUP_ASSET,
)
from glimpse_wire.errors import (
    CODES,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    ServingError,
    Unimplemented,
    error_for,
)
from serving.batching import BatchScheduler
from serving.manager import ModelManager, ServableHandle
from serving.monitoring import Metrics
from serving.tensors import dtype_string, to_ndarray, to_tensor_content_proto, to_tensor_proto

__all__ = ["InferenceService", "REGRESS_METHOD_NAME", "METADATA_SIGNATURE_DEF", "MAX_WARMUP_RECORDS"]

log = logging.getLogger("serving.service")

REGRESS_METHOD_NAME = "tensorflow/serving/regress"
METADATA_SIGNATURE_DEF = "signature_def"
MAX_WARMUP_RECORDS = 1000
_CLASSIFY_INPUTS = "inputs"
_CLASSIFY_CLASSES = "classes"
_CLASSIFY_SCORES = "scores"
_REGRESS_INPUTS = "inputs"
_REGRESS_OUTPUTS = "outputs"
_DT_STRING = 7
_DT_FLOAT = 1


def _joined(keys: Any) -> str:
    return ",".join(sorted(keys))


def _tf_error(exc: tf.errors.OpError) -> ServingError:
    return error_for(exc.error_code, exc.message)


def _debug_string(message: Any) -> str:
    return text_format.MessageToString(message)


def _shape_debug(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


class InferenceService:
    """TF Serving's PredictionService and ModelService semantics over a :class:`ModelManager`."""

    def __init__(
        self,
        manager: ModelManager,
        *,
        batcher: BatchScheduler | None = None,
        metrics: Metrics | None = None,
        method_name_check: bool = False,
        warmup_iterations: int = 1,
        tensor_content: bool = False,
    ) -> None:
        self.manager = manager
        self.batcher = batcher
        self.metrics = metrics
        self.method_name_check = method_name_check
        self.warmup_iterations = max(1, warmup_iterations)
        self.tensor_content = tensor_content

    # -- helpers ------------------------------------------------------------------------------------------------
    @contextmanager
    def _servable(self, spec: Any) -> Any:
        version = spec.version.value if spec.HasField("version") else None
        label = spec.version_label if spec.WhichOneof("version_choice") == "version_label" else None
        with self.manager.handle(spec.name, version, label) as handle:
            yield handle

    @contextmanager
    def _recorded(self, model_name: str, api: str, entrypoint: str) -> Any:
        started = time.perf_counter()
        status = "OK"
        try:
            yield
        except ServingError as e:
            status = e.code
            raise
        except Exception:
            status = "UNKNOWN"
            raise
        finally:
            if self.metrics is not None:
                self.metrics.record_request(model_name, api, entrypoint, status, time.perf_counter() - started)

    def _run(
        self,
        handle: ServableHandle,
        api: str,
        signature_name: str | None,
        inputs: Mapping[str, np.ndarray],
        fetch: Sequence[str],
        deadline: float | None,
        batch: bool = True,
    ) -> dict[str, np.ndarray]:
        """Run a signature by its aliases, or (``signature_name`` None) feed and fetch tensors by name."""
        servable = handle.servable

        def run(feeds: Mapping[str, np.ndarray], until: float | None) -> Mapping[str, np.ndarray]:
            # TF Serving hands the remaining deadline to Session::Run as RunOptions.timeout_in_ms. The session's
            # C++ callables take no per-call options, so an expired deadline is refused here and a run that has
            # started is not cancelled (the client still gets DEADLINE_EXCEEDED from gRPC).
            if until is not None and until <= time.monotonic():
                raise DeadlineExceeded("Deadline Exceeded")
            started = time.perf_counter()
            try:
                if signature_name is None:
                    result = servable.run_tensors(feeds, list(fetch))
                else:
                    result = servable.run(signature_name, feeds, list(fetch))
            except tf.errors.OpError as e:
                raise _tf_error(e) from e
            if self.metrics is not None:
                self.metrics.record_runtime(handle.name, api, time.perf_counter() - started)
            return result

        if batch and self.batcher is not None:
            key = (handle.name, handle.version, id(servable), signature_name, tuple(sorted(inputs)), tuple(fetch))
            return self.batcher.run(key, inputs, run, deadline)
        return dict(run(inputs, deadline))

    def _record_examples(self, model_name: str, count: int) -> None:
        if self.metrics is not None:
            self.metrics.record_examples(model_name, count)

    # -- Predict --------------------------------------------------------------------------------------------------
    def predict(self, request: Any, *, deadline: float | None = None, entrypoint: str = "GRPC") -> Any:
        with self._recorded(request.model_spec.name, "Predict", entrypoint):
            if not request.HasField("model_spec"):
                raise InvalidArgument("Missing ModelSpec")
            with self._servable(request.model_spec) as handle:
                return self._predict(handle, request, deadline)

    def _predict(self, handle: ServableHandle, request: Any, deadline: float | None, batch: bool = True) -> Any:
        servable = handle.servable
        signature_name = request.model_spec.signature_name or SIG_DEFAULT
        signature = servable.signature_defs.get(signature_name)
        if signature is None:
            raise FailedPrecondition(f'Serving signature key "{signature_name}" not found.')
        if self.method_name_check and signature.method_name not in (
            PREDICT_METHOD_NAME, CLASSIFY_METHOD_NAME, REGRESS_METHOD_NAME
        ):
            raise Internal(
                "Expected prediction signature method_name to be one of {"
                f"{PREDICT_METHOD_NAME}, {CLASSIFY_METHOD_NAME}, {REGRESS_METHOD_NAME}}}. Was: {signature.method_name}"
            )
        sent, expected = set(request.inputs), set(signature.inputs)
        if len(sent) != len(expected):
            raise InvalidArgument(
                f"input size does not match signature: {len(sent)}!={len(expected)} len({{{_joined(sent)}}}) != "
                f"len({{{_joined(expected)}}}). Sent extra: {{{_joined(sent - expected)}}}. "
                f"Missing but required: {{{_joined(expected - sent)}}}."
            )
        inputs: dict[str, np.ndarray] = {}
        for alias in sorted(request.inputs):
            if alias not in signature.inputs:
                raise InvalidArgument(
                    f"input tensor alias not found in signature: {alias}. Inputs expected to be in the set "
                    f"{{{_joined(expected)}}}."
                )
            try:
                inputs[alias] = to_ndarray(request.inputs[alias])
            except Exception as e:
                raise InvalidArgument(f"tensor parsing error: {alias}") from e
        fetch: list[str] = []
        for alias in request.output_filter:
            if alias not in signature.outputs:
                raise InvalidArgument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    f"{{{_joined(signature.outputs)}}}."
                )
            if alias in fetch:
                raise InvalidArgument(f"duplicate output tensor alias: {alias}")
            fetch.append(alias)
        if not fetch:
            fetch = sorted(signature.outputs)
        for index, alias in enumerate(sorted(inputs)):
            got, want = request.inputs[alias].dtype, signature.inputs[alias].dtype
            if got != want:
                raise InvalidArgument(
                    f"Expects arg[{index}] to be {dtype_string(want)} but {dtype_string(got)} is provided"
                )
        outputs = self._run(handle, "Predict", signature_name, inputs, fetch, deadline, batch)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.signature_name = signature_name
        response.model_spec.version.value = handle.version
        for alias in fetch:
            response.outputs[alias].CopyFrom(self._output_proto(outputs[alias]))
        return response

    def _output_proto(self, array: np.ndarray) -> Any:
        """Typed fields (Tensor::AsProtoField), or with --enable_serialization_as_tensor_content the packed bytes
        (Tensor::AsProtoTensorContent; strings have no packed form and stay in string_val)."""
        return to_tensor_content_proto(array) if self.tensor_content else to_tensor_proto(array)

    # -- Classify / Regress ------------------------------------------------------------------------------------
    def _examples(self, input_message: Any) -> np.ndarray:
        """util.cc's InputToSerializedExampleTensor: serialized Examples (context bytes + example bytes)."""
        kind = input_message.WhichOneof("kind")
        if kind == "example_list":
            serialized = [e.SerializeToString() for e in input_message.example_list.examples]
        elif kind == "example_list_with_context":
            group = input_message.example_list_with_context
            context = group.context.SerializeToString()
            serialized = [context + e.SerializeToString() for e in group.examples]
        else:
            serialized = []
        if not serialized:
            raise InvalidArgument("Input is empty.")
        return np.array(serialized, dtype=object)

    def _check_classification(self, signature: Any) -> None:
        if self.method_name_check and signature.method_name != CLASSIFY_METHOD_NAME:
            raise InvalidArgument(
                f"Expected classification signature method_name to be {CLASSIFY_METHOD_NAME}. "
                f"Was: {signature.method_name}"
            )
        if len(signature.inputs) != 1:
            raise InvalidArgument("Expected one input Tensor.")
        if len(signature.outputs) not in (1, 2):
            raise InvalidArgument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
        if _CLASSIFY_INPUTS not in signature.inputs:
            raise InvalidArgument(f"No classification inputs found in SignatureDef: {_debug_string(signature)}")
        if _CLASSIFY_CLASSES not in signature.outputs and _CLASSIFY_SCORES not in signature.outputs:
            raise InvalidArgument(
                'Expected classification signature outputs to contain at least one of "classes" or "scores". '
                f"Signature was: {_debug_string(signature)}"
            )

    def _check_regression(self, signature: Any) -> None:
        if self.method_name_check and signature.method_name != REGRESS_METHOD_NAME:
            raise InvalidArgument(
                f"Expected regression signature method_name to be {REGRESS_METHOD_NAME}. Was: {signature.method_name}"
            )
        if len(signature.inputs) != 1:
            raise InvalidArgument("Expected one input Tensor.")
        if len(signature.outputs) != 1:
            raise InvalidArgument("Expected one output Tensor.")
        if _REGRESS_INPUTS not in signature.inputs:
            raise InvalidArgument(f"No regression inputs found in SignatureDef: {_debug_string(signature)}")
        if _REGRESS_OUTPUTS not in signature.outputs:
            raise InvalidArgument(f"No regression outputs found in SignatureDef: {_debug_string(signature)}")

    def _signature_for(self, handle: ServableHandle, spec: Any, check: Any) -> tuple[str, Any]:
        name = spec.signature_name or SIG_DEFAULT
        signature = handle.servable.signature_defs.get(name)
        if signature is None:
            raise InvalidArgument(f"No signature was found with the name: {name}")
        check(signature)
        return name, signature

    @staticmethod
    def _classification_result(signature: Any, num_examples: int, outputs: Mapping[str, np.ndarray]) -> Any:
        classes = outputs.get(_CLASSIFY_CLASSES) if _CLASSIFY_CLASSES in signature.outputs else None
        scores = outputs.get(_CLASSIFY_SCORES) if _CLASSIFY_SCORES in signature.outputs else None
        for tensor, alias, dtype, dtype_name in (
            (classes, "classes", object, "DT_STRING"),
            (scores, "scores", np.float32, "DT_FLOAT"),
        ):
            if tensor is None:
                continue
            if tensor.ndim != 2:
                raise InvalidArgument(
                    f"Expected Tensor shape: [batch_size num_classes] but got {_shape_debug(tensor.shape)}"
                )
            if tensor.dtype != np.dtype(dtype):
                got = tf.as_dtype(tensor.dtype).as_datatype_enum
                raise InvalidArgument(f"Expected {alias} Tensor of {dtype_name}. Got: DT_{dtype_string(got).upper()}")
            if tensor.shape[0] != num_examples:
                raise InvalidArgument(
                    f"Expected {alias} output batch size of {num_examples}. Got: {tensor.shape[0]}"
                )
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise InvalidArgument(
                "Tensors class and score should match in dim_size(1). Got "
                f"{classes.shape[1]} vs. {scores.shape[1]}"
            )
        num_classes = (classes if classes is not None else scores).shape[1]
        result = classification_pb2.ClassificationResult()
        for i in range(num_examples):
            item = result.classifications.add()
            for c in range(num_classes):
                cls = item.classes.add()
                if classes is not None:
                    cls.label = classes[i, c].decode("utf-8", "replace") if isinstance(classes[i, c], bytes) \
                        else str(classes[i, c])
                if scores is not None:
                    cls.score = float(scores[i, c])
        return result

    @staticmethod
    def _regression_result(num_examples: int, outputs: Mapping[str, np.ndarray]) -> Any:
        tensor = outputs[_REGRESS_OUTPUTS]
        if not (tensor.ndim == 1 or (tensor.ndim == 2 and tensor.shape[1] == 1)):
            raise InvalidArgument(
                "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                f"{_shape_debug(tensor.shape)}"
            )
        if num_examples != tensor.shape[0]:
            raise InvalidArgument(
                f"Input batch size did not match output batch size: {num_examples} vs. {tensor.shape[0]}"
            )
        if tensor.dtype != np.float32:
            got = tf.as_dtype(tensor.dtype).as_datatype_enum
            raise InvalidArgument(f"Expected output Tensor of DT_FLOAT.  Got: DT_{dtype_string(got).upper()}")
        result = regression_pb2.RegressionResult()
        for value in tensor.reshape(-1):
            result.regressions.add().value = float(value)
        return result

    def _fill_spec(self, target: Any, request_spec: Any, version: int) -> None:
        target.name = request_spec.name
        target.signature_name = request_spec.signature_name or SIG_DEFAULT
        target.version.value = version

    def classify(self, request: Any, *, deadline: float | None = None, entrypoint: str = "GRPC") -> Any:
        with self._recorded(request.model_spec.name, "Classify", entrypoint):
            if not request.HasField("model_spec"):
                raise InvalidArgument("Missing ModelSpec")
            with self._servable(request.model_spec) as handle:
                return self._classify(handle, request, deadline)

    def _classify(self, handle: ServableHandle, request: Any, deadline: float | None, batch: bool = True) -> Any:
        name, signature = self._signature_for(handle, request.model_spec, self._check_classification)
        examples = self._examples(request.input)
        self._record_examples(handle.name, len(examples))
        fetch = [a for a in (_CLASSIFY_CLASSES, _CLASSIFY_SCORES) if a in signature.outputs]
        outputs = self._run(handle, "Classify", name, {_CLASSIFY_INPUTS: examples}, fetch, deadline, batch)
        response = classification_pb2.ClassificationResponse()
        self._fill_spec(response.model_spec, request.model_spec, handle.version)
        response.result.CopyFrom(self._classification_result(signature, len(examples), outputs))
        return response

    def regress(self, request: Any, *, deadline: float | None = None, entrypoint: str = "GRPC") -> Any:
        with self._recorded(request.model_spec.name, "Regress", entrypoint):
            if not request.HasField("model_spec"):
                raise InvalidArgument("Missing ModelSpec")
            with self._servable(request.model_spec) as handle:
                return self._regress(handle, request, deadline)

    def _regress(self, handle: ServableHandle, request: Any, deadline: float | None, batch: bool = True) -> Any:
        name, _ = self._signature_for(handle, request.model_spec, self._check_regression)
        examples = self._examples(request.input)
        self._record_examples(handle.name, len(examples))
        outputs = self._run(handle, "Regress", name, {_REGRESS_INPUTS: examples}, [_REGRESS_OUTPUTS], deadline, batch)
        response = regression_pb2.RegressionResponse()
        self._fill_spec(response.model_spec, request.model_spec, handle.version)
        response.result.CopyFrom(self._regression_result(len(examples), outputs))
        return response

    # -- MultiInference ------------------------------------------------------------------------------------------
    def multi_inference(self, request: Any, *, deadline: float | None = None) -> Any:
        spec = request.tasks[0].model_spec if request.tasks else predict_pb2.PredictRequest().model_spec
        with self._servable(spec) as handle:
            return self._multi_inference(handle, request, deadline)

    def _multi_inference(self, handle: ServableHandle, request: Any, deadline: float | None, batch: bool = True) -> Any:
        """multi_inference.cc: every task's input tensor gets the serialized examples, and one run fetches the union
        of the tasks' output tensors; each task's result is then read from that run by its own tensor names."""
        model_name = ""
        seen: set[str] = set()
        input_names: set[str] = set()
        output_names: set[str] = set()
        plans: list[tuple[Any, str, Any]] = []
        for task in request.tasks:
            if not task.model_spec.name:
                raise InvalidArgument("Found ModelSpec with an empty model name.")
            if not model_name:
                model_name = task.model_spec.name
            elif model_name != task.model_spec.name:
                raise InvalidArgument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
            name = task.model_spec.signature_name or SIG_DEFAULT
            if name in seen:
                raise InvalidArgument(f"Duplicate evaluation of signature: {name}")
            seen.add(name)
            signature = handle.servable.signature_defs.get(name)
            if signature is None:
                raise InvalidArgument(f"Requested signature not found in model graph: {name}")
            if task.method_name == CLASSIFY_METHOD_NAME:
                self._check_classification(signature)
                aliases = [a for a in (_CLASSIFY_CLASSES, _CLASSIFY_SCORES) if a in signature.outputs]
            elif task.method_name == REGRESS_METHOD_NAME:
                self._check_regression(signature)
                aliases = [_REGRESS_OUTPUTS]
            else:
                raise Unimplemented(f"Unsupported signature method_name: {task.method_name}")
            input_names.add(signature.inputs[_CLASSIFY_INPUTS].name)
            output_names.update(signature.outputs[a].name for a in aliases)
            plans.append((task, name, signature))
        examples = self._examples(request.input)
        self._record_examples(model_name, len(examples))
        feeds = {tensor: examples for tensor in sorted(input_names)}
        by_tensor = self._run(handle, "MultiInference", None, feeds, sorted(output_names), deadline, batch)
        response = inference_pb2.MultiInferenceResponse()
        for task, _name, signature in plans:
            outputs = {alias: by_tensor[info.name] for alias, info in signature.outputs.items()
                       if info.name in by_tensor}
            result = response.results.add()
            if task.method_name == CLASSIFY_METHOD_NAME:
                result.classification_result.CopyFrom(self._classification_result(signature, len(examples), outputs))
            else:
                result.regression_result.CopyFrom(self._regression_result(len(examples), outputs))
            self._fill_spec(result.model_spec, task.model_spec, handle.version)
        return response

    # -- metadata and status -------------------------------------------------------------------------------------
    def get_model_metadata(self, request: Any) -> Any:
        if not request.HasField("model_spec"):
            raise InvalidArgument("Missing ModelSpec")
        if not request.metadata_field:
            raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
        for field_name in request.metadata_field:
            if field_name != METADATA_SIGNATURE_DEF:
                # TF Serving passes a printf pattern to a StrCat-style error builder: this is its literal message.
                raise InvalidArgument(f"Metadata field %s is not supported{field_name}")
        with self._servable(request.model_spec) as handle:
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, signature in handle.servable.signature_defs.items():
                signature_map.signature_def[key].CopyFrom(signature)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = handle.name
            response.model_spec.version.value = handle.version
            response.metadata[METADATA_SIGNATURE_DEF].Pack(signature_map)
            return response

    def signature_inputs(self, spec: Any) -> dict[str, int]:
        """REST's GetInfoMap: the input aliases and dtypes of the requested signature."""
        with self._servable(spec) as handle:
            name = spec.signature_name or SIG_DEFAULT
            signature = handle.servable.signature_defs.get(name)
            if signature is None:
                raise InvalidArgument(f'Serving signature name: "{name}" not found in signature def')
            return {alias: info.dtype for alias, info in signature.inputs.items()}

    def get_model_status(self, request: Any) -> Any:
        if not request.HasField("model_spec"):
            raise InvalidArgument("Missing ModelSpec")
        spec = request.model_spec
        statuses = self.manager.statuses(spec.name)
        if spec.HasField("version"):
            statuses = [s for s in statuses if s.version == spec.version.value]
            if not statuses:
                raise error_for("NOT_FOUND", f"Could not find version {spec.version.value} of model {spec.name}")
        elif not statuses:
            raise error_for("NOT_FOUND", f"Could not find any versions of model {spec.name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            item = response.model_version_status.add()
            item.version = status.version
            item.state = int(status.state)
            item.status.SetInParent()
            if status.error is not None:
                item.status.error_code = int(_code_number(status.error.code))
                item.status.error_message = status.error.message
        return response

    def reload_config(self, request: Any) -> tuple[Any, ServingError | None]:
        """HandleReloadConfigRequest: the response (with its status) and the error, if any, for the RPC status."""
        response = model_management_pb2.ReloadConfigResponse()
        error: ServingError | None = None
        try:
            if request.config.WhichOneof("config") != "model_config_list":
                raise InvalidArgument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is "
                    "currently supported"
                )
            for index, model in enumerate(request.config.model_config_list.config):
                log.info("Config entry index : %d path : %s name : %s platform : %s", index, model.base_path,
                         model.name, model.model_platform)
            self.manager.reload_config(request.config)
        except ServingError as e:
            log.error("ReloadConfig failed: %s", e.message)
            error = e
        response.status.SetInParent()
        if error is not None:
            response.status.error_code = _code_number(error.code)
            response.status.error_message = error.message
        return response, error

    # -- warm-up ----------------------------------------------------------------------------------------------
    def warmup(self, name: str, version: int, servable: Any, path: str) -> None:
        """Replay ``assets.extra/tf_serving_warmup_requests`` (TFRecord of PredictionLog) against a loading version."""
        warmup_path = os.path.join(path, WARMUP_ASSET)
        if not os.path.exists(warmup_path):
            log.info("No warmup data file found at %s", warmup_path)
            return
        started = time.perf_counter()
        handle = ServableHandle(name, version, servable)
        count = 0
        try:
            for record in tf.data.TFRecordDataset(warmup_path).as_numpy_iterator():
                entry = prediction_log_pb2.PredictionLog()
                try:
                    entry.ParseFromString(record)
                except Exception as e:
                    raise InvalidArgument(f"Failed to parse warmup record: {record!r} from {warmup_path}") from e
                for _ in range(self.warmup_iterations):
                    self._replay(handle, entry)
                count += 1
                if count > MAX_WARMUP_RECORDS:
                    raise InvalidArgument(
                        f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {warmup_path}"
                    )
        except tf.errors.DataLossError as e:
            raise DataLoss(f"{e.message}. Please verify your warmup data is in TFRecord format.") from e
        except tf.errors.OpError as e:
            raise _tf_error(e) from e
        log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d. "
                 "Elapsed time (microseconds): %d.", warmup_path, count, (time.perf_counter() - started) * 1e6)

    def _replay(self, handle: ServableHandle, entry: Any) -> None:
        kind = entry.WhichOneof("log_type")
        if kind == "predict_log":
            self._predict(handle, entry.predict_log.request, None, batch=False)
        elif kind == "classify_log":
            self._classify(handle, entry.classify_log.request, None, batch=False)
        elif kind == "regress_log":
            self._regress(handle, entry.regress_log.request, None, batch=False)
        elif kind == "multi_inference_log":
            self._multi_inference(handle, entry.multi_inference_log.request, None, batch=False)
        else:
            raise Unimplemented(f"Unsupported log_type for warmup: {kind}")


def _code_number(code_name: str) -> int:
    return CODES[code_name]
