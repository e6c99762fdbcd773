"""The exporter: signature defs as the contract fixes them, assets, the examples TFRecord, versioning, and
``export_keras_file``. Execution of every signature in a TF-Serving-style session is in test_fidelity.py."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow.core.protobuf import saved_model_pb2

import training.export as export_module
from glimpse import __version__
from glimpse_wire.contract import (
    ACTIVATIONS_METHOD,
    ACTIVATIONS_OUTPUTS,
    ATTRIBUTION_METHODS,
    CAM_METHODS,
    CLASSIFY_METHOD_NAME,
    CONTRACT_VERSION,
    EXAMPLE_IMAGE_KEY,
    EXAMPLE_LABEL_KEY,
    EXAMPLE_LABEL_NAME_KEY,
    EXPLAIN_METHODS,
    IN_CLASS_INDEX,
    IN_EXAMPLES,
    IN_IMAGE_BYTES,
    IN_IMAGES,
    LABELS_ASSET,
    METHOD_PARAMS,
    MODEL_CARD_ASSET,
    OUT_ACTIVATION_SHAPE,
    OUT_ACTIVATIONS,
    OUT_ATTRIBUTION,
    OUT_CLASS_INDEX,
    OUT_CLASSES,
    OUT_EVALUATED_POSITIONS,
    OUT_GRID,
    OUT_GRID_SHAPE,
    OUT_HEATMAP,
    OUT_LABEL,
    OUT_LAYER,
    OUT_LAYER_NAME,
    OUT_OCCLUSION_ENGINE,
    OUT_PROBABILITIES,
    OUT_SCORE,
    OUT_SCORES,
    PREDICT_METHOD_NAME,
    SERVE_TAG,
    SIG_CLASSIFY,
    SIG_DEFAULT,
    SIG_PIXELS,
    WARMUP_ASSET,
    explain_signature,
)
from serving.session import load_session_model
from tests.conftest import TINY_SIZE, ExportedModel, TinyModel, build_tiny_cnn
from training.export import (
    EXAMPLES_FILE,
    ExampleRecord,
    ExportError,
    expected_signatures,
    export_classifier,
    export_keras_file,
    find_activation_layers,
    find_gradcam_layer,
    next_version,
    write_examples_tfrecord,
)

_STRING = tf.string.as_datatype_enum
_FLOAT = tf.float32.as_datatype_enum
_INT32 = tf.int32.as_datatype_enum
_BOOL = tf.bool.as_datatype_enum
_PARAM_DTYPES = {"int32": _INT32, "float32": _FLOAT, "bool": _BOOL}


def _signature_defs(version_dir: Path) -> dict:
    saved = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
    (meta_graph,) = [m for m in saved.meta_graphs if SERVE_TAG in m.meta_info_def.tags]
    return {k: v for k, v in meta_graph.signature_def.items() if k != "__saved_model_init_op"}


def _shape(info) -> list[int]:
    return [d.size for d in info.tensor_shape.dim]


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------------------------
# small helpers (no export)


def test_importing_the_exporter_loads_neither_tensorflow_nor_the_cli_package() -> None:
    """Command modules import ExportError and friends for their --help; the card's version comes from the installed
    distribution, not from the ``glimpse`` package above training."""
    code = (
        "import sys\n"
        "import training.export\n"
        "loaded = sorted(m for m in ('tensorflow', 'keras', 'glimpse', 'training.explain') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
        "print('LIGHT', training.export._GLIMPSE_VERSION)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["LIGHT", __version__]


def test_next_version_counts_integer_directories_only(tmp_path: Path) -> None:
    assert next_version(tmp_path / "missing") == 1
    assert next_version(tmp_path) == 1
    for name in ("1", "7", ".tmp-123", "examples", "12a"):
        (tmp_path / name).mkdir()
    (tmp_path / "9").write_text("a file, not a version")
    assert next_version(tmp_path) == 8


def test_find_gradcam_layer_picks_the_last_conv_activation() -> None:
    assert find_gradcam_layer(build_tiny_cnn()) == "last_conv"
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("relu", name="act")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    assert find_gradcam_layer(model) == "act"


def test_find_gradcam_layer_ignores_preprocessing_before_any_conv() -> None:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Flatten()(keras.layers.Resizing(4, 4)(x))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    assert find_gradcam_layer(model) is None


def test_expected_signatures_without_gradcam() -> None:
    assert explain_signature("gradcam") in expected_signatures(True)
    assert explain_signature(ACTIVATIONS_METHOD) in expected_signatures(True)
    without = expected_signatures(False)
    # every CAM method weighs the Grad-CAM layer's activations: none is exported without one
    assert all(explain_signature(m) in expected_signatures(True) for m in CAM_METHODS)
    assert not any(explain_signature(m) in without for m in (*CAM_METHODS, ACTIVATIONS_METHOD))
    assert len(without) == 3 + len(EXPLAIN_METHODS) - len(CAM_METHODS) - 1
    # a model without a Grad-CAM layer may still be given activation layers explicitly
    assert expected_signatures(False, activations=True) == (*without, explain_signature(ACTIVATIONS_METHOD))


def test_find_activation_layers_keeps_the_last_layer_of_each_stage() -> None:
    # tiny CNN: conv1 64x64 | pool1, conv2 32x32 | pool2, last_conv 16x16
    assert find_activation_layers(build_tiny_cnn(), "last_conv") == ("conv1", "conv2", "last_conv")
    assert find_activation_layers(build_tiny_cnn(), "last_conv", max_layers=2) == ("conv2", "last_conv")
    assert find_activation_layers(build_tiny_cnn(), "last_conv", max_layers=1) == ("last_conv",)
    # layers after the Grad-CAM layer never count; no Grad-CAM layer, no list
    assert find_activation_layers(build_tiny_cnn(), "conv2") == ("conv1", "conv2")
    assert find_activation_layers(build_tiny_cnn(), None) == ()


def test_find_activation_layers_takes_a_residual_stage_output_not_the_next_blocks_expansion() -> None:
    """MobileNetV2/EfficientNet: a block's expansion runs at the old resolution before its strided depthwise conv, so
    the stage output is the last layer after the last merge that keeps the merge's channels (ResNet: add, relu)."""
    conv = keras.layers.Conv2D
    inputs = keras.Input((16, 16, 3))
    x0 = conv(8, 3, padding="same", name="stem")(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.Add(name="s1_add")([x0, conv(8, 3, padding="same", name="s1_conv")(x0)])
    x = keras.layers.Activation("relu", name="s1_out")(x)
    x = conv(16, 1, name="s2_expand")(x)  # 16x16, but the next block's
    x = keras.layers.ZeroPadding2D(1, name="s2_pad")(x)  # 18x18: padding is no stage
    x = conv(16, 3, strides=2, name="s2_down")(x)  # 8x8
    x = conv(8, 3, padding="same", name="last")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x)))
    assert find_activation_layers(model, "last") == ("s1_out", "last")
    assert find_activation_layers(model, "last", max_layers=0) == ()


# ------------------------------------------------------------------------------------------------------------------
# argument errors come before any tracing


@pytest.fixture(scope="module")
def small_model() -> keras.Model:
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head")(x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"class_names": ["a"]}, "1 class names for a model with 2 outputs"),
        ({"class_names": ["a", "a"]}, "unique"),
        ({"image_size": 32}, "does not match image_size 32x32"),
        ({"image_size": (16, 16, 3)}, "image_size must be an int or"),
        ({"channels": 1}, "with 1 channel"),
        ({"channels": 4}, "channels must be 1 or 3"),
        ({"gradcam_layer": "nope"}, "'nope' is not a top-level layer"),
        ({"gradcam_layer": "head"}, "does not have a 4-D output"),
        ({"activation_layers": ["nope"]}, "activation layer 'nope' is not a top-level layer"),
        ({"activation_layers": ["head"]}, "activation layer 'head' does not have a 4-D output"),
        ({"preprocessing": ""}, "preprocessing must name"),
        ({"name": "a/b"}, "model name must be"),
        ({"card": {"labels": ["x"]}}, "written by the exporter itself"),
        ({"card": {"training": {"callback": object()}}}, "card must be JSON serialisable"),
    ],
)
def test_export_classifier_argument_errors(
    small_model: keras.Model, tmp_path: Path, kwargs: dict, message: str
) -> None:
    args = {
        "class_names": ["a", "b"],
        "name": "m",
        "image_size": 16,
        "channels": 3,
        "preprocessing": "scale_0_1",
        "gradcam_layer": "conv",
        "card": None,
    }
    args.update(kwargs)
    with pytest.raises(ExportError, match=message):
        export_classifier(small_model, args.pop("class_names"), tmp_path, args.pop("name"), **args)
    assert not (tmp_path / "m").exists()


def test_export_classifier_rejects_a_sequential_model(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ExportError, match=r"keras\.Model\(inputs, outputs\)"):
        export_classifier(model, ["a", "b"], tmp_path, "m", image_size=8, preprocessing="none", gradcam_layer=None)


def test_a_failed_export_leaves_no_directory_behind(
    small_model: keras.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(model, explainer, spec, export_dir: Path):  # noqa: ANN001 - replaces a private helper
        export_dir.mkdir(parents=True)
        (export_dir / "saved_model.pb").write_bytes(b"half written")
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module, "_write_saved_model", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_classifier(
            small_model, ["a", "b"], tmp_path, "m", image_size=16, preprocessing="scale_0_1", gradcam_layer="conv"
        )
    assert list((tmp_path / "m").iterdir()) == []


def test_publish_never_takes_an_existing_version(tmp_path: Path) -> None:
    base = tmp_path / "m"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"v1")
    (base / "2").mkdir()  # an empty directory is a version number already taken, too
    tmp = base / ".tmp-x"
    tmp.mkdir()
    (tmp / "saved_model.pb").write_bytes(b"new")
    published = export_module._publish(tmp, base)
    assert published == base / "3"
    assert (base / "1" / "saved_model.pb").read_bytes() == b"v1"
    assert (published / "saved_model.pb").read_bytes() == b"new"
    assert not tmp.exists()


# ------------------------------------------------------------------------------------------------------------------
# the exported version: signature defs, assets, examples


@pytest.mark.slow
def test_signature_keys_and_method_names(exported_model: ExportedModel) -> None:
    defs = _signature_defs(exported_model.version_dir)
    assert sorted(defs) == sorted(expected_signatures(True))
    for key, sig in defs.items():
        assert sig.method_name == (CLASSIFY_METHOD_NAME if key == SIG_CLASSIFY else PREDICT_METHOD_NAME), key


@pytest.mark.slow
def test_signature_aliases_dtypes_and_batch_dimension(exported_model: ExportedModel) -> None:
    defs = _signature_defs(exported_model.version_dir)
    predict_out = {OUT_PROBABILITIES: (_FLOAT, [-1, 3]), OUT_CLASS_INDEX: (_INT32, [-1]), OUT_LABEL: (_STRING, [-1])}
    expected = {
        SIG_DEFAULT: ({IN_IMAGE_BYTES: (_STRING, [-1])}, predict_out),
        SIG_PIXELS: ({IN_IMAGES: (_FLOAT, [-1, TINY_SIZE, TINY_SIZE, 3])}, predict_out),
        SIG_CLASSIFY: (
            {IN_EXAMPLES: (_STRING, [-1])},
            {OUT_CLASSES: (_STRING, [-1, 3]), OUT_SCORES: (_FLOAT, [-1, 3])},
        ),
    }
    for method in ATTRIBUTION_METHODS:
        inputs = {IN_IMAGE_BYTES: (_STRING, [-1]), IN_CLASS_INDEX: (_INT32, [-1])}
        inputs.update({p.name: (_PARAM_DTYPES[p.dtype], [-1]) for p in METHOD_PARAMS[method]})
        expected[explain_signature(method)] = (
            inputs,
            {
                OUT_HEATMAP: (_FLOAT, [-1, TINY_SIZE, TINY_SIZE]),
                OUT_CLASS_INDEX: (_INT32, [-1]),
                OUT_SCORE: (_FLOAT, [-1]),
                OUT_PROBABILITIES: (_FLOAT, [-1, 3]),
            },
        )
    # occlusion also says how many grid positions ran and through which engine
    expected[explain_signature("occlusion")][1].update(
        {OUT_EVALUATED_POSITIONS: (_INT32, [-1]), OUT_OCCLUSION_ENGINE: (_INT32, [-1])}
    )
    # activations: conv1 64x64x16 (grid 4x4 tiles = 256x256), conv2 32x32x32, last_conv 16x16x32 (6x6 tiles);
    # padded to the largest grid and the largest layer
    expected[explain_signature(ACTIVATIONS_METHOD)] = (
        {IN_IMAGE_BYTES: (_STRING, [-1]), IN_CLASS_INDEX: (_INT32, [-1]), "layer": (_INT32, [-1])},
        {
            OUT_GRID: (_FLOAT, [-1, 256, 256]),
            OUT_GRID_SHAPE: (_INT32, [-1, 2]),
            OUT_ACTIVATIONS: (_FLOAT, [-1, 64 * 64 * 16]),
            OUT_ACTIVATION_SHAPE: (_INT32, [-1, 3]),
            OUT_LAYER: (_INT32, [-1]),
            OUT_LAYER_NAME: (_STRING, [-1]),
            OUT_CLASS_INDEX: (_INT32, [-1]),
            OUT_SCORE: (_FLOAT, [-1]),
            OUT_PROBABILITIES: (_FLOAT, [-1, 3]),
        },
    )
    assert set(expected) == set(defs)
    for key, (inputs, outputs) in expected.items():
        sig = defs[key]
        assert {a: (v.dtype, _shape(v)) for a, v in sig.inputs.items()} == inputs, key
        got = {a: (v.dtype, _shape(v)) for a, v in sig.outputs.items() if a != OUT_ATTRIBUTION}
        assert got == outputs, key
        if key.startswith("explain_") and key != explain_signature(ACTIVATIONS_METHOD):
            attribution = sig.outputs[OUT_ATTRIBUTION]
            assert attribution.dtype == _FLOAT and _shape(attribution)[0] == -1, key
    assert set(defs[explain_signature(ACTIVATIONS_METHOD)].outputs) == set(ACTIVATIONS_OUTPUTS)


@pytest.mark.slow
def test_labels_asset_and_model_card(exported_model: ExportedModel, tiny_model: TinyModel) -> None:
    version_dir = exported_model.version_dir
    assert (version_dir / LABELS_ASSET).read_text().splitlines() == tiny_model.class_names
    card = json.loads((version_dir / MODEL_CARD_ASSET).read_text())
    assert card["labels"] == tiny_model.class_names
    assert card["input"] == {"height": TINY_SIZE, "width": TINY_SIZE, "channels": 3, "preprocessing": "scale_0_1"}
    assert card["gradcam_layer"] == "last_conv"
    assert card["activation_layers"] == [
        {"index": 0, "name": "conv1", "shape": [64, 64, 16], "grid": [256, 256]},
        {"index": 1, "name": "conv2", "shape": [32, 32, 32], "grid": [192, 192]},
        {"index": 2, "name": "last_conv", "shape": [16, 16, 32], "grid": [96, 96]},
    ]
    assert card["signatures"] == list(expected_signatures(True))
    assert card["explain_methods"] == list(EXPLAIN_METHODS)
    assert card["glimpse_version"] == __version__
    assert card["contract_version"] == CONTRACT_VERSION
    assert card["created"].endswith("+00:00")
    # the caller's card is merged in
    assert 0.0 <= card["metrics"]["train_accuracy"] <= 1.0
    assert card["training"]["seed"] == 0
    assert card["dataset"]["class_names"] == tiny_model.class_names


@pytest.mark.slow
def test_warmup_has_one_request_per_signature(exported_model: ExportedModel) -> None:
    from tensorflow_serving.apis import prediction_log_pb2

    logs = [
        prediction_log_pb2.PredictionLog.FromString(r)
        for r in tf.data.TFRecordDataset(str(exported_model.version_dir / WARMUP_ASSET)).as_numpy_iterator()
    ]
    by_signature = {}
    for log in logs:
        kind = log.WhichOneof("log_type")
        request = getattr(log, kind).request
        assert request.model_spec.name == exported_model.name
        by_signature[request.model_spec.signature_name] = (kind, request)
    assert len(logs) == len(by_signature) == len(expected_signatures(True))
    assert sorted(by_signature) == sorted(expected_signatures(True))
    kind, request = by_signature[SIG_CLASSIFY]
    assert kind == "classify_log"
    (example,) = request.input.example_list.examples
    image = example.features.feature[EXAMPLE_IMAGE_KEY].bytes_list.value[0]
    assert image.startswith(b"\x89PNG")
    for key in expected_signatures(True):
        if key == SIG_CLASSIFY:
            continue
        kind, request = by_signature[key]
        assert kind == "predict_log", key
        if key == SIG_PIXELS:
            assert tf.make_ndarray(request.inputs[IN_IMAGES]).shape == (1, TINY_SIZE, TINY_SIZE, 3)
        else:
            (data,) = tf.make_ndarray(request.inputs[IN_IMAGE_BYTES])
            with Image.open(io.BytesIO(data)) as decoded:
                assert decoded.format == "PNG"


@pytest.mark.slow
def test_examples_tfrecord(exported_model: ExportedModel, tiny_model: TinyModel) -> None:
    path = exported_model.model_base_path / EXAMPLES_FILE
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert len(records) == len(tiny_model.encoded)
    luma = tiny_model.images.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
    for i, record in enumerate(records):
        feature = tf.train.Example.FromString(record).features.feature
        assert feature[EXAMPLE_IMAGE_KEY].bytes_list.value[0] == tiny_model.encoded[i]
        assert feature[EXAMPLE_LABEL_KEY].int64_list.value[0] == tiny_model.labels[i]
        assert (
            feature[EXAMPLE_LABEL_NAME_KEY].bytes_list.value[0].decode() == tiny_model.class_names[tiny_model.labels[i]]
        )
        assert feature["width"].int64_list.value[0] == TINY_SIZE
        assert feature["height"].int64_list.value[0] == TINY_SIZE
        assert feature["aspect_ratio"].float_list.value[0] == pytest.approx(1.0)
        assert feature["brightness"].float_list.value[0] == pytest.approx(luma[i].mean(), abs=0.01)


def test_write_examples_tfrecord_slicing_features(tmp_path: Path) -> None:
    import skimage.data

    photo = skimage.data.chelsea()  # 451 wide, 300 high
    dark = np.zeros((10, 40, 3), dtype=np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(photo).save(jpeg, format="JPEG")
    records = [ExampleRecord(jpeg.getvalue(), 1, "cat"), ExampleRecord(_png(dark), 0, "night")]
    path = tmp_path / "x" / "test.tfrecord"
    assert write_examples_tfrecord(path, iter(records)) == 2
    parsed = [
        tf.train.Example.FromString(r).features.feature for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    ]
    assert parsed[0]["width"].int64_list.value[0] == 451 and parsed[0]["height"].int64_list.value[0] == 300
    assert parsed[0]["aspect_ratio"].float_list.value[0] == pytest.approx(451 / 300, rel=1e-6)
    assert 0.2 < parsed[0]["brightness"].float_list.value[0] < 0.8
    assert parsed[1]["brightness"].float_list.value[0] == 0.0
    assert parsed[1]["aspect_ratio"].float_list.value[0] == pytest.approx(4.0)
    assert parsed[1][EXAMPLE_LABEL_NAME_KEY].bytes_list.value[0] == b"night"
    assert [p.name for p in path.parent.iterdir()] == ["test.tfrecord"]  # no temporary file left


def test_write_examples_tfrecord_rejects_an_undecodable_image(tmp_path: Path) -> None:
    path = tmp_path / "test.tfrecord"
    with pytest.raises(ExportError, match="'broken': cannot decode"):
        write_examples_tfrecord(path, [ExampleRecord(b"not an image", 0, "broken")])
    assert not path.exists() and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------------------------
# versioning


@pytest.mark.slow
def test_two_versions_of_one_name(
    exported_two_versions: tuple[ExportedModel, ExportedModel], tiny_model: TinyModel
) -> None:
    v1, v2 = exported_two_versions
    assert (v1.version, v2.version) == (1, 2)
    assert v1.model_base_path == v2.model_base_path
    assert sorted(p.name for p in v1.model_base_path.iterdir()) == ["1", "2"]
    pixels = tiny_model.images[:8].astype(np.float32)
    outputs = []
    for exported in (v1, v2):
        with load_session_model(exported.version_dir) as session:
            outputs.append(session.run(SIG_PIXELS, {IN_IMAGES: pixels})[OUT_PROBABILITIES])
    np.testing.assert_allclose(outputs[0], np.asarray(tiny_model.model(pixels)), atol=1e-5)
    assert not np.allclose(outputs[0], outputs[1], atol=1e-4)  # v2 trained one epoch more
    cards = [json.loads((e.version_dir / MODEL_CARD_ASSET).read_text()) for e in (v1, v2)]
    assert cards[1]["training"]["epochs"] == cards[0]["training"]["epochs"] + 1


# ------------------------------------------------------------------------------------------------------------------
# export_keras_file


def _save(model: keras.Model, path: Path) -> Path:
    model.save(path)
    return path


def test_export_keras_file_rejects_a_sequential_model(tmp_path: Path) -> None:
    seq = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(2, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    path = _save(seq, tmp_path / "seq.keras")
    with pytest.raises(ExportError, match=r"Sequential model; wrap it in a functional model: keras\.Model"):
        export_keras_file(path, "m", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("setup", "kwargs", "message"),
    [
        ("missing", {}, "no such Keras model file"),
        ("txt", {}, "expected a .keras or .h5 file"),
        ("garbage", {}, "cannot load Keras model"),
        ("ok", {"preprocessing": "imagenet"}, "unknown preprocessing 'imagenet'"),
        ("ok", {"image_size": 32}, "does not match the model's input 16x16"),
        ("ok", {"labels_file": "three"}, "has 3 labels but the model outputs 2 classes"),
        ("ok", {"labels_file": "absent"}, "no such labels file"),
    ],
)
def test_export_keras_file_errors(
    small_model: keras.Model, tmp_path: Path, setup: str, kwargs: dict, message: str
) -> None:
    path = {
        "missing": tmp_path / "missing.keras",
        "txt": tmp_path / "model.txt",
        "garbage": tmp_path / "garbage.keras",
        "ok": tmp_path / "ok.keras",
    }[setup]
    if setup == "txt":
        path.write_text("x")
    elif setup == "garbage":
        path.write_bytes(b"this is not a zip file")
    elif setup == "ok":
        small_model.save(path)
    if kwargs.get("labels_file") == "three":
        (tmp_path / "labels.txt").write_text("a\nb\nc\n")
        kwargs = {"labels_file": tmp_path / "labels.txt"}
    elif kwargs.get("labels_file") == "absent":
        kwargs = {"labels_file": tmp_path / "absent.txt"}
    with pytest.raises(ExportError, match=message):
        export_keras_file(path, "m", tmp_path / "out", **kwargs)


def test_export_keras_file_needs_a_size_for_a_model_without_one(tmp_path: Path) -> None:
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs))
    path = _save(keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)), tmp_path / "any.keras")
    with pytest.raises(ExportError, match="input size is not fixed"):
        export_keras_file(path, "m", tmp_path / "out")


@pytest.mark.parametrize(
    ("preprocessing", "reference"),
    [
        ("scale_0_1", lambda x: x / 255.0),
        ("scale_-1_1", lambda x: x / 127.5 - 1.0),
        ("lite0", lambda x: (x - 127.0) / 128.0),
        ("caffe", lambda x: keras.applications.imagenet_utils.preprocess_input(x.copy(), mode="caffe")),
    ],
)
def test_prepended_preprocessing_maps_0_255_to_what_the_model_expects(preprocessing: str, reference) -> None:
    keras.utils.set_random_seed(5)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(3, 3, name="c")(inputs)
    inner = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x)))
    wrapped = export_module._with_preprocessing(inner, (12, 12, 3), preprocessing)
    pixels = np.random.default_rng(0).uniform(0, 255, size=(2, 12, 12, 3)).astype(np.float32)
    expected = np.asarray(inner(reference(pixels)))
    np.testing.assert_allclose(np.asarray(wrapped(pixels)), expected, atol=1e-5)
    assert "c" in [layer.name for layer in wrapped.layers]  # the conv stays reachable for Grad-CAM
    assert find_gradcam_layer(wrapped) == "c"


@pytest.mark.slow
def test_export_keras_file_with_preprocessing_and_labels(tmp_path: Path) -> None:
    keras.utils.set_random_seed(2)
    inputs = keras.Input((20, 20, 3))  # this model expects pixels in [0, 1]
    x = keras.layers.Conv2D(4, 3, activation="relu", name="features")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    path = _save(model, tmp_path / "zero_one.keras")
    (tmp_path / "labels.txt").write_text("cat\ndog\n\nbird\n")
    version_dir = export_keras_file(
        path, "pets", tmp_path / "out", labels_file=tmp_path / "labels.txt", image_size=20, preprocessing="scale_0_1"
    )
    assert version_dir == tmp_path / "out" / "pets" / "1"
    card = json.loads((version_dir / MODEL_CARD_ASSET).read_text())
    assert card["labels"] == ["cat", "dog", "bird"]
    assert card["input"]["preprocessing"] == "scale_0_1"
    assert card["gradcam_layer"] == "features"
    pixels = np.random.default_rng(1).uniform(0, 255, size=(3, 20, 20, 3)).astype(np.float32)
    with load_session_model(version_dir) as session:
        out = session.run(SIG_PIXELS, {IN_IMAGES: pixels})
        explained = session.run(
            explain_signature("gradcam"),
            {
                IN_IMAGE_BYTES: np.array([_png(pixels[0].astype(np.uint8))], dtype=object),
                IN_CLASS_INDEX: np.array([1], dtype=np.int32),
                "use_guided_grads": np.array([False]),
            },
        )
    np.testing.assert_allclose(out[OUT_PROBABILITIES], np.asarray(model(pixels / 255.0)), atol=1e-5)
    assert explained[OUT_HEATMAP].shape == (1, 20, 20)


@dataclass(frozen=True)
class _MlpExport:
    model: keras.Model
    version_dir: Path
    seen: dict
    log: str


@pytest.fixture(scope="module")
def mlp_export(tmp_path_factory: pytest.TempPathFactory) -> _MlpExport:
    """An .h5 MLP (no conv layer) exported by export_keras_file into a base that already holds version 1, with a spy
    on the moment the finished temporary directory is renamed into place."""
    tmp_path = tmp_path_factory.mktemp("mlp")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    path = _save(model, tmp_path / "mlp.h5")
    base = tmp_path / "out" / "mlp"
    (base / "1").mkdir(parents=True)
    (base / "1" / "sentinel").write_text("version 1 stays")
    seen: dict[str, object] = {}
    publish = export_module._publish

    def spy(tmp: Path, where: Path) -> Path:
        seen["tmp"] = tmp.name
        seen["listing"] = sorted(p.name for p in where.iterdir())
        seen["complete"] = (tmp / "saved_model.pb").is_file() and (tmp / WARMUP_ASSET).is_file()
        return publish(tmp, where)

    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logger = logging.getLogger("training.export")
    logger.addHandler(handler)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(export_module, "_publish", spy)
            version_dir = export_keras_file(path, "mlp", tmp_path / "out")
    finally:
        logger.removeHandler(handler)
    return _MlpExport(model, version_dir, seen, log.getvalue())


@pytest.mark.slow
def test_export_never_overwrites_and_never_shows_the_temp_dir(mlp_export: _MlpExport) -> None:
    base = mlp_export.version_dir.parent
    assert mlp_export.version_dir == base / "2"
    assert (base / "1" / "sentinel").read_text() == "version 1 stays"
    tmp = str(mlp_export.seen["tmp"])
    assert tmp.startswith(".tmp-") and not tmp.isdigit()
    # while the new version was written, the only integer directory was the old one
    assert mlp_export.seen["listing"] == sorted(["1", tmp])
    assert mlp_export.seen["complete"] is True
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]


@pytest.mark.slow
def test_export_keras_file_h5_without_conv_exports_without_gradcam(mlp_export: _MlpExport) -> None:
    version_dir, model = mlp_export.version_dir, mlp_export.model
    assert "without explain_gradcam" in mlp_export.log
    card = json.loads((version_dir / MODEL_CARD_ASSET).read_text())
    assert card["gradcam_layer"] is None
    assert card["labels"] == ["class_0", "class_1"]
    assert "are not exported" in card["notes"][0]
    for method in (*CAM_METHODS, ACTIVATIONS_METHOD):
        assert explain_signature(method) in card["notes"][0], method
    assert card["activation_layers"] == []
    assert sorted(_signature_defs(version_dir)) == sorted(expected_signatures(False))
    image = np.full((8, 8, 3), 200, dtype=np.uint8)
    with load_session_model(version_dir) as session:
        out = session.run(
            explain_signature("vanilla_gradients"),
            {
                IN_IMAGE_BYTES: np.array([_png(image)], dtype=object),
                IN_CLASS_INDEX: np.array([-1], dtype=np.int32),
            },
        )
    assert out[OUT_HEATMAP].shape == (1, 8, 8)
    np.testing.assert_allclose(out[OUT_PROBABILITIES], np.asarray(model(image[None].astype(np.float32))), atol=1e-5)
