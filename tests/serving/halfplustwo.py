"""Half-plus-two models of our own, shaped like TF Serving's test models, in zero-padded version directories.

TF Serving's integration tests serve ``y = a*x + b`` models exported several ways; these builders write the same
kinds of model from scratch (nothing is copied from TF Serving's test data):

- :func:`tf1_half_plus` - a TF1 graph (SavedModelBuilder) with ``serving_default`` (x -> y), ``classify_x_to_y``,
  ``regress_x_to_y``, ``regress_x_to_y2`` and ``regress_x2_to_y3``, the last four fed serialized tf.Examples.
- :func:`tf2_half_plus_two` - a ``tf.Module`` saved with ``tf.saved_model.save`` and several signatures, whose
  classify and regress signatures have placeholders of their own.
- :func:`keras_identity` - a Keras model (Dense with unit weights) exported with ``keras.export.ExportArchive``.
- :func:`checkpoint_times` and :func:`checkpoint_two_signatures` - ``tf.train.Checkpoint`` roots saved with
  ``tf.saved_model.save``, as TF Serving's ``test_tf_saved_model_save*`` tests build them.
- :func:`tflite_half_plus_two` - a ``model.tflite`` converted from a TF1 session, with or without TF Serving's
  ``signature_defs_metadata`` entry.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "VERSION",
    "VERSION_DIR",
    "tf1_half_plus",
    "tf2_half_plus_two",
    "keras_identity",
    "checkpoint_times",
    "checkpoint_two_signatures",
    "tflite_half_plus_two",
    "add_signature_defs_metadata",
]

VERSION = 123
VERSION_DIR = "00000123"


def _feature_spec() -> dict:
    import tensorflow as tf

    return {
        "x": tf.io.FixedLenFeature([1], dtype=tf.float32),
        "x2": tf.io.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0]),
    }


def tf1_half_plus(export_dir: Path, *, a: float = 0.5, b: float = 2.0, c: float = 3.0) -> Path:
    """``y = a*x + b`` as a TF1 graph with TF Serving's half_plus_two signatures."""
    import tensorflow as tf

    v1 = tf.compat.v1
    sig = v1.saved_model.signature_def_utils
    info = v1.saved_model.utils.build_tensor_info
    with tf.Graph().as_default(), v1.Session() as session:
        va, vb, vc = v1.Variable(a, name="a"), v1.Variable(b, name="b"), v1.Variable(c, name="c")
        serialized = v1.placeholder(tf.string, name="tf_example", shape=[None])
        parsed = v1.io.parse_example(serialized, _feature_spec())
        x = tf.identity(parsed["x"], name="x")
        y = tf.identity(va * x + vb, name="y")
        y2 = tf.identity(va * x + vc, name="y2")
        x2 = tf.identity(parsed["x2"], name="x2")
        y3 = tf.identity(v1.Variable(a, name="a2") * x2 + v1.Variable(c, name="c2"), name="y3")

        def regression(inputs, outputs):
            return sig.build_signature_def({"inputs": info(inputs)}, {"outputs": info(outputs)},
                                           "tensorflow/serving/regress")

        signatures = {
            "serving_default": sig.build_signature_def({"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict"),
            "classify_x_to_y": sig.build_signature_def({"inputs": info(serialized)}, {"scores": info(y)},
                                                       "tensorflow/serving/classify"),
            "regress_x_to_y": regression(serialized, y),
            "regress_x_to_y2": regression(serialized, y2),
            "regress_x2_to_y3": regression(x2, y3),
        }
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.builder.SavedModelBuilder(str(export_dir))
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
        builder.save()
    return export_dir


def tf2_half_plus_two(export_dir: Path) -> Path:
    """A TF2 module with predict, classify and regress signatures, each traced with its own input placeholder."""
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = tf.Variable(0.5, name="a")
            self.b = tf.Variable(2.0, name="b")
            self.c = tf.Variable(3.0, name="c")

        def _x(self, serialized):
            return tf.io.parse_example(serialized, _feature_spec())["x"]

        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32)])
        def predict(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress_xy(self, serialized):
            return {"outputs": self.a * self._x(serialized) + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress_xy2(self, serialized):
            return {"outputs": self.a * self._x(serialized) + self.c}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify_xy(self, serialized):
            return {"scores": self.a * self._x(serialized) + self.b}

    module = HalfPlusTwo()
    tf.saved_model.save(module, str(export_dir), signatures={
        "serving_default": module.predict,
        "regress_x_to_y": module.regress_xy,
        "regress_x_to_y2": module.regress_xy2,
        "classify_x_to_y": module.classify_xy,
    })
    return export_dir


def keras_identity(export_dir: Path) -> Path:
    """A Keras model ``y = x`` (one Dense unit, kernel 1, bias 0), input ``x`` [B, 1], output ``y``."""
    import keras
    import tensorflow as tf

    inputs = keras.Input(shape=(1,), name="x", dtype="float32")
    outputs = keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros", name="y")(inputs)
    model = keras.Model(inputs, outputs)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda x: {"y": model(x)},
                         input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    archive.write_out(str(export_dir), verbose=False)
    return export_dir


def checkpoint_times(export_dir: Path) -> Path:
    """A ``tf.train.Checkpoint`` with two variables (3 and 2) and ``y = v1 * v2 * x`` over an unknown shape."""
    import tensorflow as tf

    root = tf.train.Checkpoint()
    root.v1 = tf.Variable(3.0)
    root.v2 = tf.Variable(2.0)
    root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
    tf.saved_model.save(root, str(export_dir), root.f.get_concrete_function(tf.TensorSpec(None, tf.float32)))
    return export_dir


def checkpoint_two_signatures(export_dir: Path) -> Path:
    """Two constant signatures: ``serving_default`` answers y = 1, ``custom_signature_key`` y = 2."""
    import tensorflow as tf

    root = tf.train.Checkpoint()
    root.f = tf.function(lambda x: {"y": tf.constant(1.0)}, input_signature=[tf.TensorSpec(None, tf.float32)])
    root.g = tf.function(lambda x: {"y": tf.constant(2.0)}, input_signature=[tf.TensorSpec(None, tf.float32)])
    tf.saved_model.save(root, str(export_dir), signatures={"serving_default": root.f, "custom_signature_key": root.g})
    return export_dir


def add_signature_defs_metadata(model_content: bytes, signatures: dict) -> bytes:
    """``model_content`` with TF Serving's ``signature_defs_metadata`` entry: a FlexBuffer map of signature key ->
    serialized SignatureDef in a buffer of its own."""
    import flatbuffers
    from flatbuffers import flexbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_content, 0))
    builder = flexbuffers.Builder()
    with builder.Map():
        for key, signature in sorted(signatures.items()):
            builder.Key(key)
            builder.Blob(signature.SerializeToString())
    buffer = schema.BufferT()
    buffer.data = list(builder.Finish())
    model.buffers.append(buffer)
    metadata = schema.MetadataT()
    metadata.name = "signature_defs_metadata"
    metadata.buffer = len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), metadata]
    fbb = flatbuffers.Builder(1024)
    fbb.Finish(model.Pack(fbb), file_identifier=b"TFL3")
    return bytes(fbb.Output())


def tflite_half_plus_two(export_dir: Path, *, with_signature_def: bool = False) -> Path:
    """``model.tflite`` of y = 0.5*x + 2 with a [1, 1] input ``x`` (``tflite_input`` and a stored SignatureDef
    ``serving_default`` {x -> tflite_input, y -> y} when ``with_signature_def``)."""
    import tensorflow as tf

    v1 = tf.compat.v1
    export_dir.mkdir(parents=True, exist_ok=True)
    name = "tflite_input" if with_signature_def else "x"
    with tf.Graph().as_default(), v1.Session() as session:
        x = v1.placeholder(tf.float32, shape=[1, 1], name=name)
        y = tf.identity(v1.Variable(0.5, name="a") * x + v1.Variable(2.0, name="b"), name="y")
        session.run(v1.global_variables_initializer())
        content = v1.lite.TFLiteConverter.from_session(session, [x], [y]).convert()
        if with_signature_def:
            info = v1.saved_model.utils.build_tensor_info
            signature = v1.saved_model.signature_def_utils.build_signature_def(
                {"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict")
            content = add_signature_defs_metadata(content, {"serving_default": signature})
    (export_dir / "model.tflite").write_bytes(content)
    return export_dir
