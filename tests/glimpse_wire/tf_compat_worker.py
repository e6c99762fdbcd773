"""Wire compatibility of glimpse_wire with TensorFlow / tensorflow-serving-api, checked in a process that imports TF.

Run as ``python -m tests.glimpse_wire.tf_compat_worker OUT.json``: every check in CHECKS runs and writes a list of
problems (empty = compatible). test_tf_compat.py runs it once per session, so the test process stays TF-free.
Our descriptors live in ``glimpse.*`` packages, TensorFlow's in ``tensorflow.*``: both load into one pool.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CHECKS = (
    "descriptors",
    "text_samples",
    "tensorflow_built_messages",
    "tensors_from_tensorflow",
    "tensors_to_tensorflow",
    "examples",
    "tfrecord",
    "metadata_from_saved_model",
    "metadata_to_tensorflow",
)

# TF fields our messages leave out on purpose (unknown fields are preserved on the wire).
ALLOWED_MISSING = {
    "tensorflow.TensorInfo.composite_tensor",
    "tensorflow.serving.PredictionLog.session_run_log",
}

_TEXT_SAMPLES: dict[str, str] = {
    "PredictRequest": """
        model_spec { name: "flowers" version { value: 3 } signature_name: "explain_gradcam" }
        inputs { key: "image_bytes" value { dtype: DT_STRING tensor_shape { dim { size: 2 } }
                 string_val: "\\x89PNG" string_val: "GIF89a" } }
        inputs { key: "class_index" value { dtype: DT_INT32 tensor_shape { dim { size: 2 } } int_val: -1 int_val: 4 } }
        inputs { key: "pixels" value { dtype: DT_FLOAT tensor_shape { dim { size: 1 } dim { size: -1 } }
                 tensor_content: "\\000\\000\\200?" } }
        inputs { key: "mixed" value { dtype: DT_DOUBLE double_val: 0.25 half_val: 15360 bool_val: true
                 int64_val: -9000000000 uint32_val: 4000000000 uint64_val: 18000000000000000000
                 scomplex_val: 1 scomplex_val: 2 dcomplex_val: 3 dcomplex_val: 4 float8_val: "\\001"
                 version_number: 2 } }
        output_filter: "heatmap" output_filter: "score"
        client_id: "c1"
        request_options { deterministic_mode: FIXED_DECODER_SLOT return_stoptokens: 5 max_cache_length: 9 }
    """,
    "PredictResponse": """
        model_spec { name: "flowers" version { value: 3 } signature_name: "serving_default" }
        outputs { key: "probabilities" value { dtype: DT_FLOAT tensor_shape { dim { size: 1 } dim { size: 2 } }
                  float_val: 0.25 float_val: 0.75 } }
        outputs { key: "label" value { dtype: DT_STRING tensor_shape { dim { size: 1 } } string_val: "bird" } }
    """,
    "ClassificationRequest": """
        model_spec { name: "flowers" version_label: "stable" signature_name: "classification" }
        input { example_list { examples { features {
            feature { key: "image/encoded" value { bytes_list { value: "\\377\\330" } } }
            feature { key: "label" value { int64_list { value: 3 } } }
            feature { key: "w" value { float_list { value: 0.5 value: 1.5 } } } } } } }
    """,
    "ClassificationResponse": """
        model_spec { name: "flowers" version { value: 1 } signature_name: "classification" }
        result { classifications { classes { label: "bird" score: 0.75 } classes { label: "fish" score: 0.25 } } }
    """,
    "RegressionRequest": """
        model_spec { name: "m" }
        input { example_list_with_context {
            examples { features { feature { key: "x" value { float_list { value: 1 } } } } }
            context { features { feature { key: "c" value { bytes_list { value: "ctx" } } } } } } }
    """,
    "RegressionResponse": "model_spec { name: 'm' } result { regressions { value: 1.5 } regressions { value: -2 } }",
    "MultiInferenceRequest": """
        tasks { model_spec { name: "m" signature_name: "c" } method_name: "tensorflow/serving/classify" }
        tasks { model_spec { name: "m" signature_name: "r" } method_name: "tensorflow/serving/regress" }
        input { example_list { examples { features { feature { key: "x" value { int64_list { value: 1 } } } } } } }
    """,
    "MultiInferenceResponse": """
        results { model_spec { name: "m" } classification_result { classifications { classes { label: "a" } } } }
        results { model_spec { name: "m" } regression_result { regressions { value: 2 } } }
    """,
    "GetModelMetadataRequest": "model_spec { name: 'm' version { value: 2 } } metadata_field: 'signature_def'",
    "GetModelStatusRequest": "model_spec { name: 'm' version_label: 'canary' }",
    "GetModelStatusResponse": """
        model_version_status { version: 1 state: AVAILABLE status { error_code: OK } }
        model_version_status { version: 2 state: END
                               status { error_code: NOT_FOUND error_message: "saved_model.pb missing" } }
        model_version_status { version: 3 state: LOADING }
    """,
    "ReloadConfigRequest": """
        config { model_config_list {
          config { name: "flowers" base_path: "/models/flowers" model_platform: "tensorflow"
                   model_version_policy { latest { num_versions: 2 } } }
          config { name: "pets" base_path: "/models/pets" model_type: TENSORFLOW
                   model_version_policy { specific { versions: 1 versions: 4 } }
                   version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 4 }
                   logging_config { log_collector_config { type: "x" filename_prefix: "/tmp/log" }
                                    sampling_config { sampling_rate: 0.5 attributes: 1
                                                      per_task_sampling_configs { dc: "a" task_index: 0 } } } }
          config { name: "all" base_path: "/models/all" model_version_policy { all {} } } } }
        metric_names: "m1"
    """,
    "ReloadConfigResponse": """
        status { error_code: INVALID_ARGUMENT error_message: "bad" }
        metric { name: "loads" int64_value_increase: 3 }
    """,
    "PredictionLog": """
        log_metadata { model_spec { name: "m" } saved_model_tags: "serve" timestamp_secs: 5 }
        predict_log { request { model_spec { name: "m" }
                                inputs { key: "x" value { dtype: DT_FLOAT float_val: 1 } } } }
    """,
    "SignatureDefMap": """
        signature_def { key: "serving_default" value {
            inputs { key: "image_bytes" value { name: "serving_default_image_bytes:0" dtype: DT_STRING
                                                tensor_shape { dim { size: -1 } } } }
            outputs { key: "probabilities" value { name: "out:0" dtype: DT_FLOAT
                                                   tensor_shape { dim { size: -1 } dim { size: 8 } } } }
            outputs { key: "raw" value { name: "raw:0" dtype: DT_FLOAT tensor_shape { unknown_rank: true } } }
            method_name: "tensorflow/serving/predict"
            defaults { key: "k" value { dtype: DT_INT32 int_val: 5 } } } }
        signature_def { key: "sparse" value {
            inputs { key: "s" value { coo_sparse { values_tensor_name: "v" indices_tensor_name: "i"
                                                   dense_shape_tensor_name: "d" } dtype: DT_INT64 } } } }
    """,
    "SequenceExample": """
        context { feature { key: "c" value { int64_list { value: 1 } } } }
        feature_lists { feature_list { key: "f" value { feature { float_list { value: 1 } }
                                                        feature { float_list { value: 2 } } } } }
    """,
}


_TF_PROTO_MODULES = (
    "tensorflow.core.example.example_pb2",
    "tensorflow.core.framework.tensor_pb2",
    "tensorflow.core.protobuf.meta_graph_pb2",
    "tensorflow.core.protobuf.saved_model_pb2",
    "tensorflow_serving.apis.classification_pb2",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
    "tensorflow_serving.apis.inference_pb2",
    "tensorflow_serving.apis.model_management_pb2",
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.prediction_log_pb2",
    "tensorflow_serving.apis.regression_pb2",
    "tensorflow_serving.config.model_server_config_pb2",
)


def _load_tensorflow_descriptors() -> None:
    """Import TensorFlow's generated modules so that their descriptors are in the default pool."""
    import importlib

    for name in _TF_PROTO_MODULES:
        importlib.import_module(name)


def _tf_class(our_cls: type) -> type:
    from google.protobuf import message_factory

    from glimpse_wire.messages import tf_full_name

    descriptor = _pool().FindMessageTypeByName(tf_full_name(our_cls))
    return message_factory.GetMessageClass(descriptor)


def _pool() -> Any:
    from google.protobuf import descriptor_pool

    return descriptor_pool.Default()


def _our_proto_modules() -> list[Any]:
    import importlib
    import pkgutil

    import glimpse_wire._proto as package

    return [
        importlib.import_module(f"{package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
        if info.name.endswith("_pb2")
    ]


# ------------------------------------------------------------------------------------------------------- checks


def check_descriptors(problems: list[str]) -> None:
    """Every message/enum of ours matches TensorFlow's: names, numbers, types, repetition, packing, oneofs."""
    from glimpse_wire.messages import tf_full_name

    pool = _pool()
    seen_messages = 0

    def compare_enum(ours: Any) -> None:
        name = tf_full_name(ours.full_name)
        try:
            theirs = pool.FindEnumTypeByName(name)
        except KeyError:
            problems.append(f"{name}: no such enum in TensorFlow")
            return
        ours_values = {v.name: v.number for v in ours.values}
        their_values = {v.name: v.number for v in theirs.values}
        if ours_values != their_values:
            problems.append(f"{name}: values differ: {sorted(set(ours_values.items()) ^ set(their_values.items()))}")

    def compare_message(ours: Any) -> None:
        nonlocal seen_messages
        seen_messages += 1
        name = tf_full_name(ours.full_name)
        try:
            theirs = pool.FindMessageTypeByName(name)
        except KeyError:
            problems.append(f"{name}: no such message in TensorFlow")
            return
        their_fields = {f.number: f for f in theirs.fields}
        for field in ours.fields:
            where = f"{name}.{field.name} = {field.number}"
            other = their_fields.pop(field.number, None)
            if other is None:
                problems.append(f"{where}: TensorFlow has no field {field.number}")
                continue
            for attr in ("name", "json_name", "type", "is_repeated", "is_packed", "has_presence"):
                if getattr(field, attr) != getattr(other, attr):
                    problems.append(f"{where}: {attr} {getattr(field, attr)!r} != {getattr(other, attr)!r}")
            for attr in ("message_type", "enum_type"):
                mine, their = getattr(field, attr), getattr(other, attr)
                if (mine is None) != (their is None) or (
                    mine is not None and tf_full_name(mine.full_name) != their.full_name
                ):
                    problems.append(f"{where}: {attr} differs")
            mine_oneof = field.containing_oneof.name if field.containing_oneof else None
            their_oneof = other.containing_oneof.name if other.containing_oneof else None
            if mine_oneof != their_oneof:
                problems.append(f"{where}: oneof {mine_oneof} != {their_oneof}")
        for number, other in their_fields.items():
            if f"{name}.{other.name}" not in ALLOWED_MISSING:
                problems.append(f"{name}: missing TensorFlow field {other.name} = {number}")
        for nested in ours.nested_types:
            compare_message(nested)
        for enum in ours.enum_types:
            compare_enum(enum)

    for module in _our_proto_modules():
        for message in module.DESCRIPTOR.message_types_by_name.values():
            compare_message(message)
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            compare_enum(enum)
    if seen_messages < 60:
        problems.append(f"only {seen_messages} message types compared; expected every generated one")


def _both_ways(label: str, ours: Any, theirs: Any, problems: list[str]) -> None:
    """ours -> bytes -> their class, and theirs -> bytes -> our class: same bytes, same content."""
    from google.protobuf import json_format

    our_bytes = ours.SerializeToString(deterministic=True)
    their_bytes = theirs.SerializeToString(deterministic=True)
    parsed_by_them = type(theirs).FromString(our_bytes)
    parsed_by_us = type(ours).FromString(their_bytes)
    if parsed_by_them.SerializeToString(deterministic=True) != their_bytes:
        problems.append(f"{label}: our bytes parse into a different TensorFlow message")
    if parsed_by_us.SerializeToString(deterministic=True) != our_bytes:
        problems.append(f"{label}: TensorFlow's bytes parse into a different message of ours")
    if json_format.MessageToDict(parsed_by_them) != json_format.MessageToDict(ours):
        problems.append(f"{label}: fields differ after ours -> TensorFlow")
    if json_format.MessageToDict(parsed_by_us) != json_format.MessageToDict(theirs):
        problems.append(f"{label}: fields differ after TensorFlow -> ours")
    if parsed_by_them.ListFields() == [] and our_bytes:
        problems.append(f"{label}: TensorFlow saw no fields")


def check_text_samples(problems: list[str]) -> None:
    """The same text proto, parsed by each side, gives the same bytes; and each side parses the other's bytes."""
    from google.protobuf import text_format

    from glimpse_wire import messages

    for name, text in _TEXT_SAMPLES.items():
        ours_cls = getattr(messages, name)
        ours = text_format.Parse(text, ours_cls())
        theirs = text_format.Parse(text, _tf_class(ours_cls)())
        if ours.SerializeToString(deterministic=True) != theirs.SerializeToString(deterministic=True):
            problems.append(f"{name}: same text, different bytes")
        _both_ways(name, ours, theirs, problems)


def check_tensorflow_built_messages(problems: list[str]) -> None:
    """Messages built by TensorFlow's own helpers parse as ours, and back."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from glimpse_wire import messages

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "flowers"
    request.model_spec.version.value = 12
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.ones((2, 4, 4, 3), np.float32)))
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([b"a", b"bc"]))
    request.inputs["k"].CopyFrom(tf.make_tensor_proto(7))
    ours = messages.PredictRequest.FromString(request.SerializeToString())
    if ours.model_spec.version.value != 12 or set(ours.inputs) != {"images", "image_bytes", "k"}:
        problems.append("PredictRequest built with tf.make_tensor_proto lost fields")
    _both_ways("PredictRequest(tf.make_tensor_proto)", ours, request, problems)
    example = tf.train.Example(
        features=tf.train.Features(feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0, 2.0]))})
    )
    _both_ways("tf.train.Example", messages.Example.FromString(example.SerializeToString()), example, problems)


def _tensor_values() -> list[tuple[str, Any, Any]]:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    return [
        ("float32 [2,3]", rng.normal(size=(2, 3)).astype(np.float32), None),
        ("float64", rng.normal(size=(4,)), None),
        ("float16", rng.normal(size=(3, 1)).astype(np.float16), None),
        ("int8", np.array([-128, 0, 127], np.int8), None),
        ("uint8 image", rng.integers(0, 256, (1, 5, 5, 3), dtype=np.uint8), None),
        ("int16", np.array([-300, 300], np.int16), None),
        ("uint16", np.array([0, 65535], np.uint16), None),
        ("int32", np.array([[-1, 2**31 - 1]], np.int32), None),
        ("int64", np.array([-(2**40), 2**62], np.int64), None),
        ("uint32", np.array([0, 2**32 - 1], np.uint32), None),
        ("uint64", np.array([0, 2**64 - 1], np.uint64), None),
        ("bool", np.array([True, False, True]), None),
        ("complex64", np.array([1 + 2j, -3j], np.complex64), None),
        ("complex128", np.array([[1 - 1j]], np.complex128), None),
        ("strings", np.array([b"\x89PNG\r\n", b"", "caf\u00e9".encode()], dtype=object), None),
        ("scalar float", 2.5, None),
        ("scalar int", 7, None),
        ("scalar string", b"only", None),
        ("empty float", np.zeros((0, 3), np.float32), None),
        ("bfloat16", np.array([1.0, -2.5, 3.140625], np.float32), tf.bfloat16),
    ]


def check_tensors_from_tensorflow(problems: list[str]) -> None:
    """tf.make_tensor_proto (tensor_content or typed fields) -> bytes -> our to_numpy == tf.make_ndarray."""
    import tensorflow as tf

    from glimpse_wire.tensors import to_numpy

    cases = [(name, tf.make_tensor_proto(value, dtype=dtype)) for name, value, dtype in _tensor_values()]
    # One-element typed fields broadcast to the shape, as TF Serving reads them.
    cases += [
        ("broadcast float", tf.make_tensor_proto(1.5, shape=[2, 3])),
        ("broadcast int", tf.make_tensor_proto(-1, dtype=tf.int32, shape=[4])),
        ("broadcast string", tf.make_tensor_proto(b"s", shape=[3])),
        ("broadcast bool", tf.make_tensor_proto(True, shape=[2, 2])),
        ("broadcast half", tf.make_tensor_proto(np.float16(0.5), shape=[3])),
    ]
    typed = 0
    for name, proto in cases:
        typed += not proto.tensor_content
        expected = tf.make_ndarray(proto)
        try:
            got = to_numpy(proto.SerializeToString())
            direct = to_numpy(proto)  # TensorFlow's message object itself
        except Exception as e:  # noqa: BLE001 - reported as a problem
            problems.append(f"{name}: {type(e).__name__}: {e}")
            continue
        if not np.array_equal(got, direct):
            problems.append(f"{name}: to_numpy of the message and of its bytes differ")
        if proto.dtype == tf.bfloat16.as_datatype_enum:
            expected = expected.astype(np.float32)
        if got.shape != expected.shape or not np.array_equal(got, expected):
            problems.append(f"{name}: {got!r} != {expected!r}")
        elif proto.dtype != tf.bfloat16.as_datatype_enum and got.dtype != np.asarray(expected).dtype:
            problems.append(f"{name}: dtype {got.dtype} != {np.asarray(expected).dtype}")
    if typed < 8:
        problems.append(f"only {typed} typed-field tensors among the cases; the check must cover typed fields")


def check_tensors_to_tensorflow(problems: list[str]) -> None:
    """Our to_tensor_proto -> bytes -> TensorFlow's Python (make_ndarray) and C++ (parse_tensor, the path TF
    Serving's Tensor::FromProto takes) read the same values."""
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    from glimpse_wire.tensors import to_tensor_proto

    for name, value, dtype in _tensor_values():
        ours = to_tensor_proto(value, "bfloat16" if dtype is not None else None)
        data = ours.SerializeToString()
        theirs = tensor_pb2.TensorProto.FromString(data)
        expected = np.asarray(value)
        via_python = tf.make_ndarray(theirs)
        via_cpp = np.asarray(tf.io.parse_tensor(data, out_type=tf.dtypes.as_dtype(theirs.dtype)).numpy())
        for how, got in (("make_ndarray", via_python), ("parse_tensor", via_cpp)):
            if dtype is not None:
                got = got.astype(np.float32)
            if got.shape != expected.shape or not np.array_equal(got, expected.astype(got.dtype)):
                problems.append(f"{name} via {how}: {got!r} != {expected!r}")


def check_examples(problems: list[str]) -> None:
    """make_example -> tf.io.parse_single_example; tf.train.Example bytes -> parse_example."""
    import tensorflow as tf

    from glimpse_wire.examples import make_example, parse_example

    data = make_example({"image/encoded": b"\xff\xd8jpeg", "label": 3, "weights": [0.5, 2.0], "name": "bird"})
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "weights": tf.io.FixedLenFeature([2], tf.float32),
        "name": tf.io.FixedLenFeature([], tf.string),
    }
    parsed = {k: v.numpy() for k, v in tf.io.parse_single_example(data, spec).items()}
    expected = {"image/encoded": b"\xff\xd8jpeg", "label": 3, "weights": [0.5, 2.0], "name": b"bird"}
    for key, value in expected.items():
        got = parsed[key].tolist() if isinstance(parsed[key], np.ndarray) else parsed[key]
        if got != value:
            problems.append(f"parse_single_example[{key}]: {got!r} != {value!r}")
    tf_example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "b": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x", b"y"])),
                "i": tf.train.Feature(int64_list=tf.train.Int64List(value=[-5])),
                "f": tf.train.Feature(float_list=tf.train.FloatList(value=[0.25])),
            }
        )
    )
    got = parse_example(tf_example.SerializeToString())
    if got != {"b": [b"x", b"y"], "f": [0.25], "i": [-5]}:
        problems.append(f"parse_example(tf.train.Example): {got!r}")


def check_tfrecord(problems: list[str]) -> None:
    """Files written by tf.io.TFRecordWriter read with ours, and ours read by tf.data.TFRecordDataset (plain and
    GZIP); a record above the parallel-CRC threshold included."""
    import tensorflow as tf

    from glimpse_wire.examples import read_tfrecord, write_tfrecord

    records = [b"", b"one", os.urandom(100_000), bytes(range(256)) * 3]
    with tempfile.TemporaryDirectory() as tmp:
        for compression in (None, "GZIP"):
            theirs = Path(tmp) / f"tf-{compression}.tfrecord"
            with tf.io.TFRecordWriter(
                str(theirs), options=tf.io.TFRecordOptions(compression_type=compression or "")
            ) as w:
                for record in records:
                    w.write(record)
            got = list(read_tfrecord(theirs, compression=compression))
            if got != records:
                problems.append(f"read_tfrecord of TensorFlow's {compression or 'plain'} file differs")
            ours = Path(tmp) / f"ours-{compression}.tfrecord"
            write_tfrecord(ours, records, compression=compression)
            dataset = tf.data.TFRecordDataset(str(ours), compression_type=compression or "")
            if [r.numpy() for r in dataset] != records:
                problems.append(f"TFRecordDataset of our {compression or 'plain'} file differs")
            if compression is None and ours.read_bytes() != theirs.read_bytes():
                problems.append("our plain TFRecord bytes differ from TensorFlow's")


def _save_tiny_model(export_dir: str) -> None:
    import tensorflow as tf

    class Tiny(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(tf.ones([3, 2]))

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def scores(self, x: Any) -> dict[str, Any]:
            return {"scores": tf.matmul(x, self.w), "top": tf.argmax(tf.matmul(x, self.w), axis=1)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def sizes(self, image_bytes: Any) -> dict[str, Any]:
            return {"length": tf.strings.length(image_bytes)}

    module = Tiny()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.scores, "sizes": module.sizes})


def check_metadata_from_saved_model(problems: list[str]) -> None:
    """A real SavedModel's SignatureDefs, packed into TensorFlow's GetModelMetadataResponse by TensorFlow's Any,
    parse with our ModelMetadata.from_response into the same dtypes, shapes and tensor names."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    from glimpse_wire.client import ModelMetadata
    from glimpse_wire.messages import GetModelMetadataResponse

    with tempfile.TemporaryDirectory() as tmp:
        _save_tiny_model(tmp)
        saved = saved_model_pb2.SavedModel.FromString((Path(tmp) / "saved_model.pb").read_bytes())
    signature_defs = saved.meta_graphs[0].signature_def
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = "tiny"
    response.model_spec.version.value = 5
    sdm = get_model_metadata_pb2.SignatureDefMap()
    for key in ("serving_default", "sizes"):
        sdm.signature_def[key].CopyFrom(signature_defs[key])
    response.metadata["signature_def"].Pack(sdm)
    md = ModelMetadata.from_response(GetModelMetadataResponse.FromString(response.SerializeToString()))
    if ModelMetadata.from_response(response) != md:  # TensorFlow's response object, read directly
        problems.append("from_response of TensorFlow's message differs from that of its bytes")
    if (md.name, md.version, sorted(md.signatures)) != ("tiny", 5, ["serving_default", "sizes"]):
        problems.append(f"metadata header: {md.name}, {md.version}, {sorted(md.signatures)}")
        return
    x = md.signatures["serving_default"].inputs.get("x")
    if (
        x is None
        or (x.dtype, x.shape) != ("DT_FLOAT", (None, 3))
        or x.name != signature_defs["serving_default"].inputs["x"].name
    ):
        problems.append(f"serving_default input x: {x}")
    scores = md.signatures["serving_default"].outputs.get("scores")
    if scores is None or (scores.dtype, scores.shape) != ("DT_FLOAT", (None, 2)):
        problems.append(f"serving_default output scores: {scores}")
    top = md.signatures["serving_default"].outputs.get("top")
    if top is None or (top.dtype, top.shape) != ("DT_INT64", (None,)):
        problems.append(f"serving_default output top: {top}")
    sizes = md.signatures["sizes"]
    if sizes.inputs["image_bytes"].dtype != "DT_STRING" or sizes.outputs["length"].dtype != "DT_INT32":
        problems.append(f"sizes signature: {sizes}")
    if md.signatures["serving_default"].method_name != signature_defs["serving_default"].method_name:
        problems.append("method_name differs")


def check_metadata_to_tensorflow(problems: list[str]) -> None:
    """Our pack_any of a SignatureDefMap unpacks with TensorFlow's Any.Unpack (type URL is TensorFlow's)."""
    from google.protobuf import text_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    from glimpse_wire.messages import GetModelMetadataResponse, SignatureDefMap, pack_any

    ours = GetModelMetadataResponse()
    ours.model_spec.name = "m"
    ours.metadata["signature_def"].CopyFrom(
        pack_any(text_format.Parse(_TEXT_SAMPLES["SignatureDefMap"], SignatureDefMap()))
    )
    theirs = get_model_metadata_pb2.GetModelMetadataResponse.FromString(ours.SerializeToString())
    sdm = get_model_metadata_pb2.SignatureDefMap()
    if not theirs.metadata["signature_def"].Unpack(sdm):
        problems.append(f"TensorFlow cannot unpack our Any ({theirs.metadata['signature_def'].type_url})")
    elif sdm.signature_def["serving_default"].outputs["probabilities"].tensor_shape.dim[1].size != 8:
        problems.append("unpacked SignatureDefMap lost fields")


def main(argv: list[str]) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = Path(argv[1])
    _load_tensorflow_descriptors()
    results: dict[str, list[str]] = {}
    for name in CHECKS:
        check: Callable[[list[str]], None] = globals()[f"check_{name}"]
        problems: list[str] = []
        try:
            check(problems)
        except Exception:  # noqa: BLE001 - a crashing check is a failing check
            problems.append(traceback.format_exc())
        results[name] = problems
    out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
