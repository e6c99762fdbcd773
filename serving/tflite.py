"""TensorFlow Lite models the way TF Serving's TfLiteSession serves them (``--prefer_tflite_model``).

With the flag, a version directory holding ``model.tflite`` is served from that file by TensorFlow's own
``tf.lite.Interpreter`` instead of from ``saved_model.pb``. The SignatureDefs are tflite_session.cc's: the ones TF
Serving's tools store in the flatbuffer (a ``signature_defs_metadata`` entry: a FlexBuffer map of signature key ->
serialized ``SignatureDef``), checked against the model's tensors; without them, one ``serving_default`` Predict
signature whose aliases are the input and output tensor names up to their first ``:`` (TfToTfLiteLegacyTensorName)
and whose tensor names are the TFLite tensor names. (Native TFLite signature runners are ignored, as TF Serving
ignores them.) Runs feed and fetch by tensor name: the inputs are resized to the fed shapes, the interpreter is
invoked, and the outputs are copied out. Each model holds ``num_interpreters`` interpreters (TF Serving's
``--num_tflite_pools``); a run borrows one, since an interpreter runs one request at a time.
"""

from __future__ import annotations

import queue
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from glimpse_wire.contract import PREDICT_METHOD_NAME, SIG_DEFAULT
from glimpse_wire.errors import Internal, InvalidArgument

__all__ = ["TFLITE_MODEL_FILE", "SIGNATURE_DEFS_METADATA", "TfLiteModel", "has_tflite_model", "read_signature_defs"]

TFLITE_MODEL_FILE = "model.tflite"
SIGNATURE_DEFS_METADATA = "signature_defs_metadata"


def has_tflite_model(version_dir: str | Path) -> bool:
    """Whether a version directory holds the ``model.tflite`` that --prefer_tflite_model serves."""
    return (Path(version_dir) / TFLITE_MODEL_FILE).is_file()


def read_signature_defs(model_content: bytes) -> dict[str, Any]:
    """The SignatureDefs stored in a .tflite flatbuffer's ``signature_defs_metadata`` (empty when there are none)."""
    from flatbuffers import flexbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(model_content, 0)
    for i in range(model.MetadataLength()):
        metadata = model.Metadata(i)
        if metadata.Name() is None or metadata.Name().decode("utf-8") != SIGNATURE_DEFS_METADATA:
            continue
        if metadata.Buffer() >= model.BuffersLength():
            raise Internal("Invalid buffer index in metadata")
        data = model.Buffers(metadata.Buffer()).DataAsNumpy()
        if isinstance(data, int):  # no data
            raise InvalidArgument("Invalid SignatureDefs found in TfLite model: empty signature_defs_metadata")
        root = flexbuffers.GetRoot(bytes(data)).AsMap
        signatures: dict[str, Any] = {}
        for key, value in zip(root.Keys, root.Values, strict=True):
            raw = value.AsStringBytes if value.IsString else value.AsBlob
            signature = meta_graph_pb2.SignatureDef()
            signature.ParseFromString(bytes(raw))
            signatures[key.AsKey] = signature
        return signatures
    return {}


def _tensor_info(detail: Mapping[str, Any]) -> Any:
    info = meta_graph_pb2.TensorInfo(name=detail["name"], dtype=tf.as_dtype(detail["dtype"]).as_datatype_enum)
    for size in detail["shape"]:
        info.tensor_shape.dim.add().size = int(size)
    return info


def _legacy_name(tensor_name: str) -> str:
    return tensor_name.split(":", 1)[0]


class TfLiteModel:
    """One ``model.tflite`` version: TF Serving's signatures over a small pool of interpreters."""

    def __init__(self, export_dir: str | Path, *, num_interpreters: int = 1) -> None:
        self.export_dir = Path(export_dir)
        content = (self.export_dir / TFLITE_MODEL_FILE).read_bytes()
        with warnings.catch_warnings():
            # tf.lite.Interpreter announces its move to LiteRT; the interpreter itself is the one TF Serving links.
            warnings.simplefilter("ignore")
            interpreters = [tf.lite.Interpreter(model_content=content) for _ in range(max(1, num_interpreters))]
        for interpreter in interpreters:
            interpreter.allocate_tensors()
        first = interpreters[0]
        self._inputs = {d["name"]: d for d in first.get_input_details()}
        self._outputs = {d["name"]: d for d in first.get_output_details()}
        self.signature_defs: dict[str, Any] = self._signatures(content)
        self._pool: queue.Queue[Any] = queue.Queue()
        for interpreter in interpreters:
            self._pool.put(interpreter)

    def _signatures(self, content: bytes) -> dict[str, Any]:
        stored = read_signature_defs(content)
        if stored:
            for signature in stored.values():
                for kind, infos, known in (("input", signature.inputs, self._inputs),
                                           ("output", signature.outputs, self._outputs)):
                    for alias, info in infos.items():
                        name = info.name if info.name in known else _legacy_name(info.name)
                        if name not in known:
                            raise InvalidArgument(f"Signature {kind} {alias} references an unknown tensor")
                        info.name = name
            return stored
        signature = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD_NAME)
        for name, detail in self._inputs.items():
            signature.inputs[_legacy_name(name)].CopyFrom(_tensor_info(detail))
        for name, detail in self._outputs.items():
            signature.outputs[_legacy_name(name)].CopyFrom(_tensor_info(detail))
        return {SIG_DEFAULT: signature}

    def signature(self, name: str | None = None) -> Any:
        return self.signature_defs[name or SIG_DEFAULT]

    def run(
        self,
        signature_name: str | None,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run a signature by aliases (checked by the caller); returns output alias -> array."""
        signature = self.signature(signature_name)
        fetch = list(output_filter) if output_filter else sorted(signature.outputs)
        feeds = {signature.inputs[alias].name: array for alias, array in inputs.items()}
        values = self.run_tensors(feeds, [signature.outputs[alias].name for alias in fetch])
        return {alias: values[signature.outputs[alias].name] for alias in fetch}

    def run_tensors(self, feeds: Mapping[str, np.ndarray], fetches: Sequence[str]) -> dict[str, np.ndarray]:
        """Feed and fetch by TFLite tensor name, as TfLiteSession::Run does."""
        for name in feeds:
            if name not in self._inputs:
                raise InvalidArgument(f"Unknown tensor '{name}'.")
        for name in fetches:
            if name not in self._outputs:
                raise InvalidArgument(f"Unknown tensor '{name}'.")
        interpreter = self._pool.get()
        try:
            for name, array in feeds.items():
                detail = self._inputs[name]
                value = np.asarray(array)
                if tuple(value.shape) != tuple(interpreter.get_tensor(detail["index"]).shape):
                    interpreter.resize_tensor_input(detail["index"], list(value.shape), strict=False)
                    interpreter.allocate_tensors()
                interpreter.set_tensor(detail["index"], value)
            try:
                interpreter.invoke()
            except (RuntimeError, ValueError) as e:
                raise Internal(str(e)) from e
            return {name: np.array(interpreter.get_tensor(self._outputs[name]["index"])) for name in fetches}
        except ValueError as e:
            raise InvalidArgument(str(e)) from e
        finally:
            self._pool.put(interpreter)

    def close(self) -> None:
        while not self._pool.empty():
            self._pool.get_nowait()

    def __enter__(self) -> TfLiteModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
