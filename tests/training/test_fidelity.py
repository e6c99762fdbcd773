"""Exported models run the way TF Serving runs them: a tf.compat.v1 graph session on the ``serve`` tag, fed and fetched
by the signature's tensor names (``serving.session``). Every signature is executed there and compared with the Keras
model it came from."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image

from glimpse_wire.contract import (
    ACTIVATIONS_METHOD,
    ATTRIBUTION_METHODS,
    CLASSIFY_METHOD_NAME,
    EXAMPLE_IMAGE_KEY,
    IN_CLASS_INDEX,
    IN_EXAMPLES,
    IN_IMAGE_BYTES,
    IN_IMAGES,
    METHOD_PARAMS,
    OUT_ACTIVATION_SHAPE,
    OUT_ACTIVATIONS,
    OUT_ATTRIBUTION,
    OUT_CLASS_INDEX,
    OUT_CLASSES,
    OUT_GRID,
    OUT_GRID_SHAPE,
    OUT_HEATMAP,
    OUT_LABEL,
    OUT_LAYER,
    OUT_LAYER_NAME,
    OUT_PROBABILITIES,
    OUT_SCORE,
    OUT_SCORES,
    SIG_CLASSIFY,
    SIG_DEFAULT,
    SIG_PIXELS,
    WARMUP_ASSET,
    explain_signature,
)
from serving.session import SessionModel, load_session_model
from tests.conftest import TINY_SIZE, ExportedModel, TinyModel
from training.export import export_classifier

pytestmark = pytest.mark.slow

_NP_DTYPES = {"int32": np.int32, "float32": np.float32, "bool": np.bool_}


@pytest.fixture(scope="module")
def session(exported_model: ExportedModel) -> Iterator[SessionModel]:
    with load_session_model(exported_model.version_dir) as model:
        yield model


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photo, not square: skimage's chelsea (300 x 451 RGB)."""
    return skimage.data.chelsea()


def _encode(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def _tf_pixels(data: bytes, size: int = TINY_SIZE) -> np.ndarray:
    """What the contract says serving_default does to one image, computed eagerly: decode RGB, resize_with_pad."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    return tf.image.resize_with_pad(tf.cast(image, tf.float32), size, size).numpy()


def _keras(tiny: TinyModel, pixels: np.ndarray) -> np.ndarray:
    return np.asarray(tiny.model(np.asarray(pixels, dtype=np.float32), training=False))


def _example(data: bytes) -> bytes:
    example = tf.train.Example()
    example.features.feature[EXAMPLE_IMAGE_KEY].bytes_list.value.append(data)
    return example.SerializeToString()


def _explain_inputs(method: str, images: list[bytes], class_index: list[int]) -> dict[str, np.ndarray]:
    inputs = {
        IN_IMAGE_BYTES: np.array(images, dtype=object),
        IN_CLASS_INDEX: np.array(class_index, dtype=np.int32),
    }
    for p in METHOD_PARAMS[method]:
        inputs[p.name] = np.full(len(images), p.default, dtype=_NP_DTYPES[p.dtype])
    return inputs


# ------------------------------------------------------------------------------------------------------------------
# predict and classify


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP"])
def test_serving_default_decodes_a_real_photo(
    session: SessionModel, tiny_model: TinyModel, photo: np.ndarray, fmt: str
) -> None:
    data = _encode(photo, fmt)
    out = session.run(SIG_DEFAULT, {IN_IMAGE_BYTES: np.array([data, data], dtype=object)})
    expected = _keras(tiny_model, _tf_pixels(data)[None])
    assert out[OUT_PROBABILITIES].shape == (2, 3)
    np.testing.assert_allclose(out[OUT_PROBABILITIES], np.repeat(expected, 2, axis=0), atol=1e-5)
    index = int(np.argmax(expected[0]))
    assert out[OUT_CLASS_INDEX].dtype == np.int32
    assert out[OUT_CLASS_INDEX].tolist() == [index, index]
    assert [label.decode() for label in out[OUT_LABEL]] == [tiny_model.class_names[index]] * 2


def test_serving_default_matches_keras_on_the_training_photos(session: SessionModel, tiny_model: TinyModel) -> None:
    out = session.run(SIG_DEFAULT, {IN_IMAGE_BYTES: np.array(tiny_model.encoded, dtype=object)})
    expected = _keras(tiny_model, tiny_model.images)
    np.testing.assert_allclose(out[OUT_PROBABILITIES], expected, atol=1e-5)
    np.testing.assert_array_equal(out[OUT_CLASS_INDEX], np.argmax(expected, axis=-1))
    # The tiny model learned something: most training photos are classified right.
    assert np.mean(out[OUT_CLASS_INDEX] == tiny_model.labels) > 0.6


def test_serving_default_mixes_formats_and_sizes_in_one_batch(
    session: SessionModel, tiny_model: TinyModel, photo: np.ndarray
) -> None:
    batch = [_encode(photo, "JPEG"), tiny_model.encoded[0], _encode(photo[:100, :300], "BMP")]
    out = session.run(SIG_DEFAULT, {IN_IMAGE_BYTES: np.array(batch, dtype=object)})
    expected = _keras(tiny_model, np.stack([_tf_pixels(b) for b in batch]))
    np.testing.assert_allclose(out[OUT_PROBABILITIES], expected, atol=1e-5)


def test_serving_default_rejects_bytes_that_are_no_image(session: SessionModel) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError):
        session.run(SIG_DEFAULT, {IN_IMAGE_BYTES: np.array([b"not an image"], dtype=object)})


def test_predict_pixels_equals_keras(session: SessionModel, tiny_model: TinyModel, photo: np.ndarray) -> None:
    pixels = np.concatenate([tiny_model.images[::7].astype(np.float32), _tf_pixels(_encode(photo, "PNG"))[None]])
    out = session.run(SIG_PIXELS, {IN_IMAGES: pixels})
    expected = _keras(tiny_model, pixels)
    np.testing.assert_allclose(out[OUT_PROBABILITIES], expected, atol=1e-5)
    np.testing.assert_array_equal(out[OUT_CLASS_INDEX], np.argmax(expected, axis=-1))
    assert [label.decode() for label in out[OUT_LABEL]] == [
        tiny_model.class_names[i] for i in np.argmax(expected, axis=-1)
    ]


def test_classification_on_tf_examples(session: SessionModel, tiny_model: TinyModel) -> None:
    examples = np.array([_example(data) for data in tiny_model.encoded[:5]], dtype=object)
    out = session.run(SIG_CLASSIFY, {IN_EXAMPLES: examples})
    assert out[OUT_CLASSES].shape == (5, 3)
    for row in out[OUT_CLASSES]:
        assert [c.decode() for c in row] == tiny_model.class_names
    np.testing.assert_allclose(out[OUT_SCORES], _keras(tiny_model, tiny_model.images[:5]), atol=1e-5)


def test_classification_method_name(session: SessionModel) -> None:
    assert session.signature(SIG_CLASSIFY).method_name == CLASSIFY_METHOD_NAME


def test_classification_rejects_an_example_without_image(session: SessionModel) -> None:
    example = tf.train.Example()
    example.features.feature["label"].int64_list.value.append(1)
    with pytest.raises(tf.errors.InvalidArgumentError):
        session.run(SIG_CLASSIFY, {IN_EXAMPLES: np.array([example.SerializeToString()], dtype=object)})


# ------------------------------------------------------------------------------------------------------------------
# explanations


@pytest.mark.parametrize("method", ATTRIBUTION_METHODS)
def test_explain_signature_shapes_and_ranges(session: SessionModel, tiny_model: TinyModel, method: str) -> None:
    images = [tiny_model.encoded[0], tiny_model.encoded[20], tiny_model.encoded[40]]
    out = session.run(explain_signature(method), _explain_inputs(method, images, [-1, 0, 2]))
    probabilities = _keras(tiny_model, tiny_model.images[[0, 20, 40]])
    heatmap = out[OUT_HEATMAP]
    assert heatmap.shape == (3, TINY_SIZE, TINY_SIZE)
    assert heatmap.dtype == np.float32
    assert np.all(np.isfinite(heatmap)) and heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert heatmap.reshape(3, -1).max(axis=1).min() > 0.0  # a map, not a blank
    assert out[OUT_ATTRIBUTION].shape[0] == 3 and np.all(np.isfinite(out[OUT_ATTRIBUTION]))
    target = [int(np.argmax(probabilities[0])), 0, 2]
    assert out[OUT_CLASS_INDEX].tolist() == target
    np.testing.assert_allclose(out[OUT_PROBABILITIES], probabilities, atol=1e-5)
    np.testing.assert_allclose(out[OUT_SCORE], probabilities[np.arange(3), target], atol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "occlusion", "vanilla_gradients", "integrated_gradients"])
def test_explain_predicted_class_equals_explicit_class(
    session: SessionModel, tiny_model: TinyModel, method: str
) -> None:
    data = tiny_model.encoded[3]
    predicted = int(np.argmax(_keras(tiny_model, tiny_model.images[3:4])[0]))
    other = (predicted + 1) % 3
    out = session.run(explain_signature(method), _explain_inputs(method, [data, data, data], [-1, predicted, other]))
    assert out[OUT_CLASS_INDEX].tolist() == [predicted, predicted, other]
    np.testing.assert_allclose(out[OUT_HEATMAP][0], out[OUT_HEATMAP][1], atol=1e-6)
    np.testing.assert_allclose(out[OUT_ATTRIBUTION][0], out[OUT_ATTRIBUTION][1], atol=1e-6)
    assert not np.allclose(out[OUT_ATTRIBUTION][0], out[OUT_ATTRIBUTION][2])


def test_explain_activations_are_the_keras_layer_outputs(session: SessionModel, tiny_model: TinyModel) -> None:
    """Each image picks its own layer (-1 = the Grad-CAM layer); the raw channels are the Keras layer's output and
    the grid tiles exactly those values."""
    import keras

    images = [tiny_model.encoded[0], tiny_model.encoded[20], tiny_model.encoded[40], tiny_model.encoded[5]]
    inputs = _explain_inputs(ACTIVATIONS_METHOD, images, [-1, 0, -1, 2])
    inputs["layer"] = np.array([-1, 0, 1, 2], dtype=np.int32)
    out = session.run(explain_signature(ACTIVATIONS_METHOD), inputs)
    names = ["conv1", "conv2", "last_conv"]
    assert [n.decode() for n in out[OUT_LAYER_NAME]] == ["last_conv", "conv1", "conv2", "last_conv"]
    assert out[OUT_LAYER].tolist() == [2, 0, 1, 2]
    assert out[OUT_GRID].shape == (4, 256, 256) and out[OUT_ACTIVATIONS].shape == (4, 64 * 64 * 16)
    pixels = tiny_model.images[[0, 20, 40, 5]].astype(np.float32)
    probe = keras.Model(tiny_model.model.input, [tiny_model.model.get_layer(n).output for n in names])
    expected = [np.asarray(t) for t in probe(pixels)]
    for i, layer in enumerate(out[OUT_LAYER]):
        want = expected[layer][i]
        h, w, k = out[OUT_ACTIVATION_SHAPE][i]
        assert (h, w, k) == want.shape
        got = out[OUT_ACTIVATIONS][i]
        np.testing.assert_allclose(got[: h * w * k].reshape(h, w, k), want, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(got[h * w * k :], 0.0)
        rows, cols = out[OUT_GRID_SHAPE][i]
        n = int(np.ceil(np.sqrt(k)))
        assert (rows, cols) == (n * h, n * w)
        grid = out[OUT_GRID][i]
        assert grid[:rows, :cols].min() == 0.0 and grid[:rows, :cols].max() == pytest.approx(1.0)
        np.testing.assert_array_equal(grid[rows:], 0.0)
        np.testing.assert_array_equal(grid[:, cols:], 0.0)
        # tile (0, 1) is channel 1, min-max scaled with the whole grid
        low = want.min() if n * n == k else min(want.min(), 0.0)  # missing tiles are zeros in the grid
        scaled = (want[..., 1] - low) / (want.max() - low)
        np.testing.assert_allclose(grid[:h, w : 2 * w], scaled, atol=1e-5)
    probabilities = _keras(tiny_model, pixels)
    assert out[OUT_CLASS_INDEX].tolist() == [int(np.argmax(probabilities[0])), 0, int(np.argmax(probabilities[2])), 2]
    np.testing.assert_allclose(out[OUT_PROBABILITIES], probabilities, atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"layer must be -1 \(the Grad-CAM layer\) or in \[0, 2\]"):
        session.run(
            explain_signature(ACTIVATIONS_METHOD),
            {**_explain_inputs(ACTIVATIONS_METHOD, images[:1], [-1]), "layer": np.array([3], dtype=np.int32)},
        )


def test_explain_rejects_a_class_index_out_of_range(session: SessionModel, tiny_model: TinyModel) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError, match="class_index"):
        session.run(
            explain_signature("vanilla_gradients"), _explain_inputs("vanilla_gradients", [tiny_model.encoded[0]], [3])
        )


# ------------------------------------------------------------------------------------------------------------------
# warm-up, as TF Serving replays it at load


def test_warmup_requests_replay_in_the_session(session: SessionModel, exported_model: ExportedModel) -> None:
    from tensorflow_serving.apis import prediction_log_pb2

    replayed = []
    for record in tf.data.TFRecordDataset(str(exported_model.version_dir / WARMUP_ASSET)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if log.HasField("classify_log"):
            request = log.classify_log.request
            examples = [e.SerializeToString() for e in request.input.example_list.examples]
            out = session.run(request.model_spec.signature_name, {IN_EXAMPLES: np.array(examples, dtype=object)})
        else:
            request = log.predict_log.request
            inputs = {alias: tf.make_ndarray(proto) for alias, proto in request.inputs.items()}
            out = session.run(request.model_spec.signature_name, inputs)
        assert all(value.shape[0] == 1 for value in out.values())
        replayed.append(request.model_spec.signature_name)
    assert sorted(replayed) == sorted(set(session.signature_defs) - {"__saved_model_init_op"})


# ------------------------------------------------------------------------------------------------------------------
# the export path the contract forbids


def test_tf_module_export_of_the_same_model_fails_in_the_session_path(tiny_model: TinyModel, tmp_path: Path) -> None:
    """tf.Module + tf.saved_model.save loads with tf.saved_model.load, but TF Serving's session cannot find the Keras 3
    variables (tensorflow/serving#2250, keras#20095). This is why the exporter uses keras.export.ExportArchive."""
    model = tiny_model.model

    class Wrapper(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, TINY_SIZE, TINY_SIZE, 3], tf.float32, name=IN_IMAGES)])
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            return {OUT_PROBABILITIES: self.model(images, training=False)}

    wrapper = Wrapper()
    tf.saved_model.save(wrapper, str(tmp_path), signatures={SIG_DEFAULT: wrapper.serve})
    pixels = tiny_model.images[:2].astype(np.float32)
    eager = tf.saved_model.load(str(tmp_path)).signatures[SIG_DEFAULT](images=tf.constant(pixels))
    np.testing.assert_allclose(eager[OUT_PROBABILITIES].numpy(), _keras(tiny_model, pixels), atol=1e-5)
    with pytest.raises(tf.errors.FailedPreconditionError, match="Could not find variable"):
        with load_session_model(tmp_path) as broken:
            broken.run(SIG_DEFAULT, {IN_IMAGES: pixels})


# ------------------------------------------------------------------------------------------------------------------
# a grey (1-channel) model still takes RGB images


@pytest.fixture(scope="module")
def grey_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, np.ndarray]:
    import gzip

    import keras

    root = Path("/usr/share/datasets/fashion-mnist")
    if not (root / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed")
    with gzip.open(root / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)[:6]
    keras.utils.set_random_seed(3)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    names = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    version_dir = export_classifier(
        model,
        names,
        tmp_path_factory.mktemp("grey"),
        "fashion",
        image_size=28,
        channels=1,
        preprocessing="scale_0_1",
        gradcam_layer="conv",
    )
    return model, version_dir, images


def test_grey_model_takes_rgb_images_and_converts_in_graph(grey_export: tuple[object, Path, np.ndarray]) -> None:
    model, version_dir, images = grey_export
    encoded = [_encode(image, "PNG") for image in images]  # grey PNGs: decoded to RGB, then back to grey in-graph
    with load_session_model(version_dir) as session:
        assert session.signature(SIG_PIXELS).inputs[IN_IMAGES].tensor_shape.dim[3].size == 3
        out = session.run(SIG_DEFAULT, {IN_IMAGE_BYTES: np.array(encoded, dtype=object)})
        grey = tf.image.rgb_to_grayscale(np.stack([_tf_pixels(e, 28) for e in encoded])).numpy()
        np.testing.assert_allclose(grey[..., 0], images.astype(np.float32), atol=0.05)
        np.testing.assert_allclose(out[OUT_PROBABILITIES], np.asarray(model(grey)), atol=1e-5)
        explained = session.run(explain_signature("gradcam"), _explain_inputs("gradcam", encoded[:2], [-1, 4]))
        assert explained[OUT_HEATMAP].shape == (2, 28, 28)
        assert explained[OUT_CLASS_INDEX][1] == 4
