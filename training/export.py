"""Write a Keras classifier as a versioned TF Serving model that follows the model contract (v1).

``export_classifier`` turns a functional Keras model (float32 pixels 0-255 in, preprocessing inside, softmax out)
into ``<export_base>/<name>/<next integer>/``: a SavedModel written through ``keras.export.ExportArchive`` with the
``serving_default``, ``predict_pixels``, ``classification`` and ``explain_<method>`` signatures, plus
``assets/labels.txt``, ``assets.extra/model_card.json`` and ``assets.extra/tf_serving_warmup_requests``. Every version
is written into a hidden temporary directory next to the versions and renamed into place, so a server polling the base
path never sees a half-written version, and an existing version is never overwritten.

The signature keys and tensor aliases come from ``glimpse_wire.contract``; which ``explain_<method>`` signatures a
model gets and how each is built come from the method registry (``training.explain``). docs/contract.md describes the
result. TensorFlow, Keras and ``training.explain`` (which imports them) are imported inside the functions that need
them: the light names here (``ExportError``, ``ExampleRecord``, ``expected_signatures``, ...) are imported by command
modules whose ``--help`` must not load TensorFlow.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from glimpse_wire.contract import (
    ACTIVATIONS_METHOD,
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
    OUT_CLASS_INDEX,
    OUT_CLASSES,
    OUT_HEATMAP,
    OUT_LABEL,
    OUT_PROBABILITIES,
    OUT_SCORES,
    PREDICT_METHOD_NAME,
    SERVE_TAG,
    SIG_CLASSIFY,
    SIG_DEFAULT,
    SIG_PIXELS,
    WARMUP_ASSET,
    explain_outputs,
    explain_signature,
)

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from training.explain import ExplainerConfig, ExplainMethod, GraphExplainer

__all__ = [
    "PREPROCESSING_CHOICES",
    "EXAMPLES_FILE",
    "ExampleRecord",
    "ExportError",
    "export_classifier",
    "export_keras_file",
    "write_examples_tfrecord",
    "example_features",
    "find_gradcam_layer",
    "find_activation_layers",
    "MAX_ACTIVATION_LAYERS",
    "next_version",
    "expected_signatures",
]

_log = logging.getLogger(__name__)

# What ``export_keras_file`` can put in front of a model so that the contract's 0-255 input holds.
PREPROCESSING_CHOICES: tuple[str, ...] = ("none", "scale_0_1", "scale_-1_1", "caffe", "lite0")

# Relative to ``<export_base>/<name>``.
EXAMPLES_FILE = "examples/test.tfrecord"

_TMP_PREFIX = ".tmp-"
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_PREDICT_OUTPUTS = (OUT_PROBABILITIES, OUT_CLASS_INDEX, OUT_LABEL)

# The writer recorded in the model card: the installed distribution's version (training never imports the CLI package).
try:
    _GLIMPSE_VERSION = version("glimpse")
except PackageNotFoundError:  # a source tree that was never installed
    _GLIMPSE_VERSION = "0+unknown"

# How many stage outputs ``find_activation_layers`` keeps (the deepest ones): every selectable layer is tiled in the
# explain_activations graph and pads its outputs, so the list stays short.
MAX_ACTIVATION_LAYERS = 4


class ExportError(ValueError):
    """The model or the arguments cannot be exported through the contract; the message says why and what to do."""


@dataclass(frozen=True)
class ExampleRecord:
    """One held-out example for the examples TFRecord (the What-If Tool's data)."""

    encoded: bytes  # the original image file (PNG/JPEG/GIF/BMP)
    label: int
    label_name: str


# ----------------------------------------------------------------------------------------------------------------
# Small public helpers


def next_version(base: str | Path) -> int:
    """The next free version number under ``base`` (``<export_base>/<name>``): 1 + the largest integer directory.

    Names that are not plain integers (the temporary ``.tmp-*`` directories, ``examples``) are ignored, as TF Serving
    ignores them.
    """
    base = Path(base)
    if not base.is_dir():
        return 1
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and _is_version_name(p.name)]
    return max(versions, default=0) + 1


def find_gradcam_layer(model: keras.Model) -> str | None:
    """Name of the last top-level layer with a 4-D output at or after the first convolution, or None.

    That is the last conv activation Grad-CAM weighs. Layers before any convolution (Rescaling, Normalization,
    augmentation) have 4-D outputs too but are the input, not features, so they never count.
    """
    seen_conv = False
    found: str | None = None
    for layer in model.layers:
        if not seen_conv and _has_conv_kernel(layer):
            seen_conv = True
        if not seen_conv:
            continue
        rank = _output_rank(layer)
        if rank == 4:
            found = layer.name
    return found


def find_activation_layers(
    model: keras.Model, gradcam_layer: str | None, max_layers: int = MAX_ACTIVATION_LAYERS
) -> tuple[str, ...]:
    """The layers ``explain_activations`` can show: the output of each stage of the network, up to the Grad-CAM layer.

    Walking the top-level layers from the first convolution to ``gradcam_layer``, a stage is a run of 4-D outputs
    with the same spatial size (padding layers do not count). Its output is its last layer; in a residual stage, the
    last layer after its last merge (Add, Concatenate, ...) that keeps the merge's channel count, because the layers
    after it already belong to the next stage's first block (an inverted-residual expansion before a strided
    depthwise convolution, as in MobileNetV2 and EfficientNet). The Grad-CAM layer stands for its own stage, last;
    the deepest ``max_layers`` stages are kept. Empty without a Grad-CAM layer.
    """
    import keras

    if gradcam_layer is None or max_layers < 1:
        return ()
    merge_names = ("Add", "Average", "Concatenate", "Maximum", "Minimum", "Multiply", "Subtract")
    merges = tuple(getattr(keras.layers, n) for n in merge_names)
    padding = (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)
    # per stage: [size, last layer, channels of its last merge, last layer keeping them since that merge]
    stages: list[list[Any]] = []
    seen_conv = False
    for layer in model.layers:
        if not seen_conv and _has_conv_kernel(layer):
            seen_conv = True
        shape = _output_shape(layer)
        if seen_conv and not isinstance(layer, padding) and shape is not None and len(shape) == 4:
            if None not in shape[1:]:
                size, channels = (int(shape[1]), int(shape[2])), int(shape[3])
                if not stages or stages[-1][0] != size:
                    stages.append([size, layer.name, None, None])
                stage = stages[-1]
                stage[1] = layer.name
                if isinstance(layer, merges):
                    stage[2], stage[3] = channels, layer.name
                elif stage[2] == channels and stage[3] is not None:
                    stage[3] = layer.name
                elif stage[2] is not None:
                    stage[2] = -1  # the channels changed after the merge: the stage output is fixed
        if layer.name == gradcam_layer:
            break
    # the last stage is the Grad-CAM layer's own: it stands for it
    names = [merged or last for _, last, _, merged in stages[:-1]]
    return (*names[max(0, len(names) - (max_layers - 1)) :], gradcam_layer)


def expected_signatures(gradcam: bool = True, activations: bool | None = None) -> tuple[str, ...]:
    """The signature keys an exported version carries, in order: no CAM method (``CAM_METHODS``: Grad-CAM and its
    relatives) without a Grad-CAM layer, no ``explain_activations`` without activation layers (``activations`` None:
    the same as ``gradcam``)."""
    activations = gradcam if activations is None else activations
    explain = tuple(
        explain_signature(m)
        for m in EXPLAIN_METHODS
        if (gradcam or m not in CAM_METHODS) and (activations or m != ACTIVATIONS_METHOD)
    )
    return (SIG_DEFAULT, SIG_PIXELS, SIG_CLASSIFY, *explain)


def example_features(record: Any) -> dict[str, Any]:
    """The tf.Example feature values of one record: image/encoded, label, label_name and slicing features.

    ``record`` is an :class:`ExampleRecord` or any object with ``encoded``, ``label`` and ``label_name``. Slicing
    features are read from the image itself: ``width``, ``height`` (pixels), ``aspect_ratio`` (width / height) and
    ``brightness`` (mean luma in [0, 1]).
    """
    encoded = bytes(record.encoded)
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            image.seek(0)
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ExportError(f"example {record.label_name!r}: cannot decode its image: {e}") from e
    width, height = rgb.size
    histogram = rgb.convert("L").histogram()
    total = sum(histogram)
    brightness = sum(i * n for i, n in enumerate(histogram)) / (255.0 * total) if total else 0.0
    return {
        EXAMPLE_IMAGE_KEY: encoded,
        EXAMPLE_LABEL_KEY: int(record.label),
        EXAMPLE_LABEL_NAME_KEY: str(record.label_name).encode("utf-8"),
        "aspect_ratio": float(width) / float(height),
        "brightness": float(brightness),
        "width": int(width),
        "height": int(height),
    }


def write_examples_tfrecord(path: str | Path, examples: Iterable[Any]) -> int:
    """Write ``examples`` as serialized tf.Examples to a TFRecord at ``path`` (atomically); returns the count."""
    import tensorflow as tf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    count = 0
    try:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for record in examples:
                writer.write(_to_tf_example(example_features(record)).SerializeToString())
                count += 1
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return count


# ----------------------------------------------------------------------------------------------------------------
# The exporter


def export_classifier(
    model: keras.Model,
    class_names: Sequence[str],
    export_base: str | Path,
    name: str,
    *,
    image_size: int | tuple[int, int],
    channels: int = 3,
    preprocessing: str,
    gradcam_layer: str | None,
    card: Mapping[str, Any] | None = None,
    examples: Iterable[Any] | None = None,
    activation_layers: Sequence[str] | None = None,
    explainer_config: ExplainerConfig | None = None,
) -> Path:
    """Export ``model`` as the next version of ``<export_base>/<name>``; returns the new version directory.

    ``model``: functional Keras model, float32 pixels 0-255 of shape (H, W, channels) in (preprocessing inside),
    softmax probabilities [B, C] out. ``class_names``: C names, index = class id. ``image_size``: H (= W) or (H, W),
    must equal the model's input size. ``channels``: 3, or 1 for grey models (the signatures still take RGB images and
    convert them in-graph). ``preprocessing``: what the model does to its 0-255 input, recorded in the card.
    ``gradcam_layer``: the last 4-D conv activation (see :func:`find_gradcam_layer`), or None to export without
    ``explain_gradcam``. ``card``: merged into the model card (e.g. ``metrics``, ``training``, ``dataset``).
    ``examples``: held-out records written to ``<export_base>/<name>/examples/test.tfrecord``.
    ``activation_layers``: the layers ``explain_activations`` may show (top-level, 4-D outputs; the Grad-CAM layer
    is added when missing); None = :func:`find_activation_layers`. The model card lists them in index order.
    ``explainer_config``: the explanation signatures' knobs (``training.explain.ExplainerConfig``); by default the
    chunk size of the expanding methods is measured here, on the exporting machine, and the model card records it
    (``explain_chunk_size``): export on the kind of machine that will serve, or fix ``chunk_size``.
    """
    spec = _check_model(model, class_names, image_size, channels, preprocessing, gradcam_layer, name)
    if activation_layers is None:
        activation_layers = find_activation_layers(model, gradcam_layer)
    for layer_name in activation_layers:
        _check_4d_layer(model, layer_name, "activation layer")
    extra = dict(card or {})
    clash = sorted(set(extra) & _MANAGED_CARD_KEYS)
    if clash:
        raise ExportError(f"card keys {clash} are written by the exporter itself; pass only other fields")
    try:
        json.dumps(extra, default=_json_default)
    except (TypeError, ValueError) as e:
        raise ExportError(f"the card must be JSON serialisable: {e}") from e
    base = Path(export_base) / name
    base.mkdir(parents=True, exist_ok=True)

    explainer = _make_explainer(model, gradcam_layer, activation_layers, explainer_config)
    tmp = base / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        signatures = _write_saved_model(model, explainer, spec, tmp)
        _set_classify_method(tmp)
        _check_signature_defs(tmp, signatures, spec)
        (tmp / LABELS_ASSET).parent.mkdir(parents=True, exist_ok=True)
        (tmp / LABELS_ASSET).write_text("".join(f"{c}\n" for c in spec.class_names), encoding="utf-8")
        model_card = _model_card(spec, signatures, extra, explainer)
        (tmp / MODEL_CARD_ASSET).parent.mkdir(parents=True, exist_ok=True)
        (tmp / MODEL_CARD_ASSET).write_text(json.dumps(model_card, indent=2, default=_json_default) + "\n")
        _write_warmup(tmp / WARMUP_ASSET, name, signatures, spec)
        if examples is not None:
            write_examples_tfrecord(base / EXAMPLES_FILE, examples)
        version_dir = _publish(tmp, base)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log.info("exported %s version %s to %s", name, version_dir.name, version_dir)
    return version_dir


def export_keras_file(
    keras_path: str | Path,
    name: str,
    export_dir: str | Path,
    *,
    labels_file: str | Path | None = None,
    image_size: int | tuple[int, int] | None = None,
    preprocessing: str | None = None,
    chunk_size: int | None = None,
) -> Path:
    """Wrap an existing functional Keras classifier (``.keras`` or ``.h5``) into the contract; returns the version dir.

    ``labels_file``: one class name per line (default ``class_0`` .. ``class_{C-1}``). ``image_size``: needed when
    the model's input size is not fixed; otherwise it must match. ``preprocessing``: what the model expects, one of
    :data:`PREPROCESSING_CHOICES` (default ``none``: the model already takes 0-255 pixels); anything else is prepended
    in front of the model so that the exported model takes 0-255 pixels. A model with no 4-D layer is exported
    without ``explain_gradcam`` (the other explanations still work) and the model card says so. ``chunk_size``:
    images per pass of the expanding explanations (``ExplainerConfig.chunk_size``); default measured here.
    """
    import keras

    from training.explain import ExplainerConfig

    path = Path(keras_path)
    if not path.is_file():
        raise ExportError(f"no such Keras model file: {path}")
    if path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise ExportError(f"{path}: expected a .keras or .h5 file, got {path.suffix or 'no suffix'!r}")
    preprocessing = preprocessing or "none"
    if preprocessing not in PREPROCESSING_CHOICES:
        choices = ", ".join(PREPROCESSING_CHOICES)
        raise ExportError(f"unknown preprocessing {preprocessing!r}; expected one of {choices}")
    try:
        import training.layers  # noqa: F401 - registers Glimpse's own layers, which saved models may hold

        loaded = keras.models.load_model(str(path), compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many kinds for an unreadable file
        raise ExportError(f"cannot load Keras model {path}: {type(e).__name__}: {e}") from e
    if isinstance(loaded, keras.Sequential):
        raise ExportError(
            f"{path} is a Sequential model; wrap it in a functional model: keras.Model(inputs, outputs) "
            "(e.g. inputs = keras.Input(shape); outputs = seq(inputs))"
        )
    if not isinstance(loaded, keras.Model) or not _is_functional(loaded):
        raise ExportError(
            f"{path} holds a {type(loaded).__name__}, not a functional model; wrap it in a functional model: "
            "keras.Model(inputs, outputs)"
        )
    if len(loaded.inputs) != 1 or len(loaded.outputs) != 1:
        raise ExportError(f"{path}: the model must have one image input and one output")
    in_shape = tuple(loaded.input.shape)
    if len(in_shape) != 4:
        raise ExportError(f"{path}: the model input must be [B,H,W,C] images, got {in_shape}")
    channels = in_shape[3]
    if channels not in (1, 3):
        raise ExportError(f"{path}: the model must take 1 or 3 channels, got {channels}")
    height, width = in_shape[1], in_shape[2]
    if image_size is not None:
        want_h, want_w = _size_pair(image_size)
        if (height is not None and height != want_h) or (width is not None and width != want_w):
            raise ExportError(f"--image-size {want_h}x{want_w} does not match the model's input {height}x{width}")
        height, width = want_h, want_w
    if height is None or width is None:
        raise ExportError(f"{path}: the model's input size is not fixed; give the image size (--image-size)")
    model = _with_preprocessing(loaded, (int(height), int(width), int(channels)), preprocessing)

    num_classes = model.output.shape[-1]
    if labels_file is not None:
        labels_path = Path(labels_file)
        if not labels_path.is_file():
            raise ExportError(f"no such labels file: {labels_path}")
        class_names = [line.strip() for line in labels_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(class_names) != num_classes:
            raise ExportError(
                f"{labels_path} has {len(class_names)} labels but the model outputs {num_classes} classes"
            )
    else:
        class_names = [f"class_{i}" for i in range(num_classes)]

    layer = find_gradcam_layer(model)
    if layer is None:
        _log.warning("%s has no 4-D conv layer: exporting without explain_gradcam (other explanations work)", path)
    card = {"source": {"keras_model": str(path.resolve()), "wrapped_preprocessing": preprocessing}}
    return export_classifier(
        model,
        class_names,
        export_dir,
        name,
        image_size=(int(height), int(width)),
        channels=int(channels),
        preprocessing=preprocessing,
        gradcam_layer=layer,
        card=card,
        explainer_config=ExplainerConfig(chunk_size=chunk_size),
    )


# ----------------------------------------------------------------------------------------------------------------
# Checks and the model spec


@dataclass(frozen=True)
class _Spec:
    class_names: tuple[str, ...]
    height: int
    width: int
    channels: int
    preprocessing: str
    gradcam_layer: str | None


_MANAGED_CARD_KEYS = frozenset(
    {
        "name",
        "labels",
        "input",
        "gradcam_layer",
        "activation_layers",
        "signatures",
        "explain_methods",
        "explain_chunk_size",
        "occlusion_engine",
        "glimpse_version",
        "contract_version",
        "created",
        "notes",
    }
)


def _check_model(
    model: Any,
    class_names: Sequence[str],
    image_size: int | tuple[int, int],
    channels: int,
    preprocessing: str,
    gradcam_layer: str | None,
    name: str,
) -> _Spec:
    import keras

    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ExportError(f"model name must be a non-empty directory name, got {name!r}")
    if isinstance(model, keras.Sequential):
        raise ExportError("the model is Sequential; wrap it in a functional model: keras.Model(inputs, outputs)")
    if not isinstance(model, keras.Model) or not _is_functional(model):
        raise ExportError(f"expected a functional keras.Model, got {type(model).__name__}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError("the model must have one image input and one output")
    if channels not in (1, 3):
        raise ExportError(f"channels must be 1 or 3, got {channels}")
    height, width = _size_pair(image_size)
    in_shape = tuple(model.input.shape)
    if in_shape[1:] != (height, width, channels):
        raise ExportError(
            f"model input {in_shape[1:]} does not match image_size {height}x{width} with {channels} channel(s)"
        )
    out_shape = tuple(model.output.shape)
    if len(out_shape) != 2 or out_shape[1] is None:
        raise ExportError(f"the model output must be [B,C] class probabilities, got {out_shape}")
    names = tuple(str(c) for c in class_names)
    if len(names) != out_shape[1]:
        raise ExportError(f"{len(names)} class names for a model with {out_shape[1]} outputs")
    if any(not c or "\n" in c for c in names) or len(set(names)) != len(names):
        raise ExportError("class names must be unique, non-empty and on one line each")
    if not isinstance(preprocessing, str) or not preprocessing:
        raise ExportError("preprocessing must name what the model does to its 0-255 input (e.g. 'scale_0_1')")
    if gradcam_layer is not None:
        _check_4d_layer(model, gradcam_layer, "gradcam_layer")
    return _Spec(names, height, width, channels, preprocessing, gradcam_layer)


def _check_4d_layer(model: Any, layer_name: Any, what: str) -> None:
    try:
        layer = model.get_layer(layer_name)
    except (ValueError, TypeError) as e:
        raise ExportError(f"{what} {layer_name!r} is not a top-level layer of the model") from e
    if _output_rank(layer) != 4:
        raise ExportError(f"{what} {layer_name!r} does not have a 4-D output")


def _size_pair(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, bool):
        raise ExportError(f"image_size must be an int or (height, width), got {image_size!r}")
    if isinstance(image_size, int):
        pair = (image_size, image_size)
    else:
        try:
            pair = tuple(int(v) for v in image_size)
        except (TypeError, ValueError) as e:
            raise ExportError(f"image_size must be an int or (height, width), got {image_size!r}") from e
        if len(pair) != 2:
            raise ExportError(f"image_size must be an int or (height, width), got {image_size!r}")
    if min(pair) < 1:
        raise ExportError(f"image_size must be positive, got {image_size!r}")
    return pair[0], pair[1]


def _is_functional(model: Any) -> bool:
    try:
        return model.inputs is not None and model.outputs is not None and len(model.inputs) > 0
    except (AttributeError, ValueError):
        return False


def _is_version_name(name: str) -> bool:
    return name.isascii() and name.isdigit()


def _output_shape(layer: Any) -> tuple[int | None, ...] | None:
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):
        return None
    return tuple(shape) if shape is not None else None


def _output_rank(layer: Any) -> int | None:
    shape = _output_shape(layer)
    return len(shape) if shape is not None else None


def _has_conv_kernel(layer: Any) -> bool:
    """Whether a layer (or a nested model) holds a 4-D kernel, i.e. is or contains a 2-D convolution."""
    try:
        weights = layer.weights
    except (AttributeError, ValueError):
        return False
    return any(len(w.shape) == 4 for w in weights)


def _make_explainer(
    model: Any, gradcam_layer: str | None, activation_layers: Sequence[str], config: ExplainerConfig | None
) -> GraphExplainer:
    from training.explain import GraphExplainer  # imports TensorFlow: only when exporting (see the module docstring)

    try:
        return GraphExplainer(model, gradcam_layer, config, activation_layers=activation_layers)
    except ValueError as e:
        raise ExportError(f"cannot build the explanation signatures: {e}") from e


# ----------------------------------------------------------------------------------------------------------------
# The SavedModel


def _write_saved_model(model: Any, explainer: GraphExplainer, spec: _Spec, export_dir: Path) -> dict[str, str]:
    """Write the SavedModel through ExportArchive; returns signature key -> method name. The explanation signatures
    are those of the registered methods the model supports (``explainer.signature_methods``), in the contract's order.
    """
    import keras
    import tensorflow as tf

    from training.explain import get_method

    height, width = spec.height, spec.width
    labels = tf.constant(list(spec.class_names))

    def to_model_pixels(rgb: tf.Tensor) -> tf.Tensor:
        return tf.image.rgb_to_grayscale(rgb) if spec.channels == 1 else rgb

    def decode(image_bytes: tf.Tensor) -> tf.Tensor:
        def one(data: tf.Tensor) -> tf.Tensor:
            image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
            image = tf.image.resize_with_pad(tf.cast(image, tf.float32), height, width)
            return tf.ensure_shape(image, [height, width, 3])

        return tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32))

    def probabilities(rgb: tf.Tensor) -> tf.Tensor:
        return tf.cast(model(to_model_pixels(rgb), training=False), tf.float32)

    def predict_outputs(rgb: tf.Tensor) -> dict[str, tf.Tensor]:
        probs = probabilities(rgb)
        index = tf.argmax(probs, axis=-1, output_type=tf.int32)
        return {OUT_PROBABILITIES: probs, OUT_CLASS_INDEX: index, OUT_LABEL: tf.gather(labels, index)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    methods: dict[str, str] = {}

    def add(key: str, fn: Callable[..., dict[str, tf.Tensor]], signature: list[tf.TensorSpec], method: str) -> None:
        archive.add_endpoint(key, fn, signature)
        methods[key] = method

    def serving_default(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        return predict_outputs(decode(image_bytes))

    def predict_pixels(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return predict_outputs(images)

    def classification(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(inputs, {EXAMPLE_IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        probs = probabilities(decode(parsed[EXAMPLE_IMAGE_KEY]))
        classes = tf.tile(labels[tf.newaxis, :], tf.stack([tf.shape(probs)[0], 1]))
        return {OUT_CLASSES: classes, OUT_SCORES: probs}

    add(SIG_DEFAULT, serving_default, [tf.TensorSpec([None], tf.string, name=IN_IMAGE_BYTES)], PREDICT_METHOD_NAME)
    add(
        SIG_PIXELS,
        predict_pixels,
        [tf.TensorSpec([None, height, width, 3], tf.float32, name=IN_IMAGES)],
        PREDICT_METHOD_NAME,
    )
    add(SIG_CLASSIFY, classification, [tf.TensorSpec([None], tf.string, name=IN_EXAMPLES)], CLASSIFY_METHOD_NAME)
    for name in explainer.signature_methods:
        method = get_method(name)
        fn, signature = _explain_endpoint(method, explainer, decode, to_model_pixels)
        add(method.signature, fn, signature, PREDICT_METHOD_NAME)
    archive.write_out(str(export_dir), verbose=False)
    return methods


def _explain_endpoint(
    method: ExplainMethod,
    explainer: GraphExplainer,
    decode: Callable[[Any], Any],
    to_model_pixels: Callable[[Any], Any],
) -> tuple[Callable[..., dict[str, Any]], list[Any]]:
    """One generic builder for every ``explain_<method>``: image bytes, class index and the method's [B] params."""
    import tensorflow as tf

    names = tuple(p.name for p in method.params)
    outputs = method.outputs
    signature = [
        tf.TensorSpec([None], tf.string, name=IN_IMAGE_BYTES),
        tf.TensorSpec([None], tf.int32, name=IN_CLASS_INDEX),
        *(tf.TensorSpec([None], tf.as_dtype(p.dtype), name=p.name) for p in method.params),
    ]

    def explain(image_bytes: tf.Tensor, class_index: tf.Tensor, *values: tf.Tensor) -> dict[str, tf.Tensor]:
        images = to_model_pixels(decode(image_bytes))
        result = explainer.explain(method.name, images, class_index, **dict(zip(names, values, strict=True)))
        return {alias: result[alias] for alias in outputs}

    explain.__name__ = method.signature
    return explain, signature


def _set_classify_method(export_dir: Path) -> None:
    import tensorflow as tf

    updater = tf.compat.v1.saved_model.signature_def_utils.MethodNameUpdater(str(export_dir))
    updater.replace_method_name(signature_key=SIG_CLASSIFY, method_name=CLASSIFY_METHOD_NAME, tags=SERVE_TAG)
    updater.save()


def _read_signature_defs(export_dir: Path) -> Mapping[str, Any]:
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    for meta_graph in saved.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ExportError(f"{export_dir}: no MetaGraphDef tagged {SERVE_TAG!r}")


def _expected_aliases(key: str) -> tuple[set[str], set[str]]:
    if key == SIG_DEFAULT:
        return {IN_IMAGE_BYTES}, set(_PREDICT_OUTPUTS)
    if key == SIG_PIXELS:
        return {IN_IMAGES}, set(_PREDICT_OUTPUTS)
    if key == SIG_CLASSIFY:
        return {IN_EXAMPLES}, {OUT_CLASSES, OUT_SCORES}
    method = key[len("explain_") :]
    return {IN_IMAGE_BYTES, IN_CLASS_INDEX, *(p.name for p in METHOD_PARAMS[method])}, set(explain_outputs(method))


def _check_signature_defs(export_dir: Path, methods: Mapping[str, str], spec: _Spec) -> None:
    """The written signature_defs carry exactly the contract's keys, aliases and method names, all batched on dim 0."""
    defs = _read_signature_defs(export_dir)
    keys = set(defs) - {"__saved_model_init_op"}
    if keys != set(methods):
        raise ExportError(f"written signatures {sorted(keys)} differ from the contract's {sorted(methods)}")
    for key, method_name in methods.items():
        sig = defs[key]
        want_in, want_out = _expected_aliases(key)
        if set(sig.inputs) != want_in or set(sig.outputs) != want_out:
            raise ExportError(
                f"signature {key!r}: aliases {sorted(sig.inputs)} -> {sorted(sig.outputs)} differ from the contract's "
                f"{sorted(want_in)} -> {sorted(want_out)}"
            )
        if sig.method_name != method_name:
            raise ExportError(f"signature {key!r}: method name {sig.method_name!r}, expected {method_name!r}")
        for alias, info in [*sig.inputs.items(), *sig.outputs.items()]:
            dims = info.tensor_shape.dim
            if info.tensor_shape.unknown_rank or not dims or dims[0].size != -1:
                raise ExportError(f"signature {key!r}: tensor {alias!r} is not batched on dim 0")
        sized = {IN_IMAGES: sig.inputs.get(IN_IMAGES), OUT_HEATMAP: sig.outputs.get(OUT_HEATMAP)}
        want = {IN_IMAGES: [-1, spec.height, spec.width, 3], OUT_HEATMAP: [-1, spec.height, spec.width]}
        for alias, info in sized.items():
            if info is not None and [d.size for d in info.tensor_shape.dim] != want[alias]:
                raise ExportError(f"signature {key!r}: {alias!r} has shape {info.tensor_shape}, expected {want[alias]}")


# ----------------------------------------------------------------------------------------------------------------
# Assets: model card, warm-up requests, publishing


def _model_card(
    spec: _Spec, methods: Mapping[str, str], extra: Mapping[str, Any], explainer: GraphExplainer
) -> dict[str, Any]:
    explain = [m for m in EXPLAIN_METHODS if explain_signature(m) in methods]
    card: dict[str, Any] = {
        "labels": list(spec.class_names),
        "input": {
            "height": spec.height,
            "width": spec.width,
            "channels": spec.channels,
            "preprocessing": spec.preprocessing,
        },
        "gradcam_layer": spec.gradcam_layer,
        # explain_activations' `layer` parameter indexes this list (-1 = the Grad-CAM layer)
        "activation_layers": [
            {"index": i, "name": name, "shape": list(shape), "grid": list(grid)}
            for i, (name, shape, grid) in enumerate(
                zip(explainer.activation_layers, explainer.activation_shapes, explainer.grid_shapes, strict=True)
            )
        ],
        "signatures": list(methods),
        "explain_methods": explain,
        "explain_chunk_size": _chunk_record(explainer),
        # how explain_occlusion's exact mode runs for this model on the exporting machine (the explain API says it)
        "occlusion_engine": explainer.occlusion_engine.as_dict() if "occlusion" in explain else None,
        "metrics": {},
        "training": {},
        "dataset": {},
        "glimpse_version": _GLIMPSE_VERSION,
        "contract_version": CONTRACT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    missing = [explain_signature(m) for m in EXPLAIN_METHODS if explain_signature(m) not in methods]
    if missing:
        verb = "are" if len(missing) > 1 else "is"
        card["notes"] = [f"no 4-D conv layer: {' and '.join(missing)} {verb} not exported; the other explanations are"]
    card.update(extra)
    return card


def _chunk_record(explainer: GraphExplainer) -> dict[str, Any]:
    """The chunk size traced into the expanding methods' signatures and, when it was measured, on what and how: the
    median milliseconds per image of each batch size tried (``training.explain.calibrate``). A size fixed by the
    caller has no measurement (``measured_on`` null)."""
    calibration = explainer.calibration
    if calibration is None:
        return {"chunk_size": explainer.chunk_size, "measured_on": None, "per_image_ms": {}, "calibration_s": None}
    return {
        "chunk_size": calibration.chunk_size,
        "measured_on": calibration.device,
        "per_image_ms": {str(b): round(t * 1e3, 3) for b, t in calibration.per_image_s.items()},
        "calibration_s": round(calibration.seconds, 2),
    }


def _json_default(value: Any) -> Any:
    """JSON for numpy scalars/arrays and paths in the caller's card."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"model card value of type {type(value).__name__} is not JSON serialisable")


def _warmup_image() -> bytes:
    """A small grey PNG (Pillow) for the warm-up requests."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_warmup(path: Path, name: str, methods: Mapping[str, str], spec: _Spec) -> None:
    """One PredictionLog per signature: predict_log for predict signatures, classify_log for classification."""
    import tensorflow as tf
    from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2

    image = _warmup_image()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for key, method_name in methods.items():
            log = prediction_log_pb2.PredictionLog()
            if method_name == CLASSIFY_METHOD_NAME:
                request = classification_pb2.ClassificationRequest()
                request.model_spec.name = name
                request.model_spec.signature_name = key
                example = request.input.example_list.examples.add()
                example.features.feature[EXAMPLE_IMAGE_KEY].bytes_list.value.append(image)
                log.classify_log.request.CopyFrom(request)
            else:
                request = predict_pb2.PredictRequest()
                request.model_spec.name = name
                request.model_spec.signature_name = key
                for alias, value in _warmup_inputs(key, image, spec).items():
                    request.inputs[alias].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
                log.predict_log.request.CopyFrom(request)
            writer.write(log.SerializeToString())


def _warmup_inputs(key: str, image: bytes, spec: _Spec) -> dict[str, Any]:
    if key == SIG_PIXELS:
        return {IN_IMAGES: np.full((1, spec.height, spec.width, 3), 128.0, dtype=np.float32)}
    if key == SIG_DEFAULT:
        return {IN_IMAGE_BYTES: np.array([image], dtype=object)}
    method = key[len("explain_") :]
    inputs: dict[str, Any] = {
        IN_IMAGE_BYTES: np.array([image], dtype=object),
        IN_CLASS_INDEX: np.array([-1], dtype=np.int32),
    }
    for p in METHOD_PARAMS[method]:
        inputs[p.name] = np.array([p.default], dtype=p.dtype)
    return inputs


def _publish(tmp: Path, base: Path) -> Path:
    """Rename the finished temporary directory to the next free integer version, never over an existing one."""
    for _ in range(100):
        version_dir = base / str(next_version(base))
        if version_dir.exists():
            continue
        try:
            os.rename(tmp, version_dir)
        except OSError:
            if version_dir.exists():  # another exporter took this number first: try the next one
                continue
            raise
        return version_dir
    raise ExportError(f"could not find a free version number under {base}")


def _to_tf_example(features: Mapping[str, Any]) -> Any:
    import tensorflow as tf

    feature = {}
    for key, value in features.items():
        if isinstance(value, bytes):
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        elif isinstance(value, float):
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        else:
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing in front of a loaded model


def _with_preprocessing(model: Any, shape: tuple[int, int, int], preprocessing: str) -> Any:
    """``model`` itself for ``none``; else a functional model 0-255 -> preprocessing -> the model's own layers.

    The model's layers are re-applied (weights shared) on the new input rather than nested, so that its conv
    activations stay top-level layers that Grad-CAM can reach.
    """
    import keras

    if preprocessing == "none" and tuple(model.input.shape[1:]) == shape:
        return model
    inputs = keras.Input(shape=shape, name="pixels")
    if preprocessing == "scale_0_1":
        x = keras.layers.Rescaling(1.0 / 255.0, name="glimpse_scale_0_1")(inputs)
    elif preprocessing == "scale_-1_1":
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="glimpse_scale_-1_1")(inputs)
    elif preprocessing == "lite0":
        x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="glimpse_lite0")(inputs)
    elif preprocessing == "caffe":
        x = _CaffePreprocessing(name="glimpse_caffe")(inputs)
    else:
        x = inputs
    # The functional graph replayed on the new tensor, each layer called as is (shared weights, no nesting).
    outputs = model._run_through_graph(x, operation_fn=lambda layer: layer)
    return keras.Model(inputs, outputs, name=f"{model.name}_0_255")


def _caffe_layer_class() -> type:
    import keras

    class CaffePreprocessing(keras.layers.Layer):
        """Keras' 'caffe' mode: RGB -> BGR, minus the ImageNet channel means (pixels stay 0-255 scaled)."""

        def call(self, inputs: Any) -> Any:
            if inputs.shape[-1] == 1:
                return inputs - sum(_CAFFE_MEAN_BGR) / 3.0
            bgr = keras.ops.flip(inputs, axis=-1)
            return bgr - keras.ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=inputs.dtype)

    return CaffePreprocessing


def _CaffePreprocessing(**kwargs: Any) -> Any:  # noqa: N802 - a layer factory, named like the layer it makes
    return _caffe_layer_class()(**kwargs)
