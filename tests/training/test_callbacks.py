"""Explanations while training (`glimpse train --explain-every N`): config, image choice, schedule, the in-graph
engine against tf-explain's pictures, and a real training run whose TensorBoard event files are read back."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.train import TrainConfig

SIZE = 32


def _image_summaries(run: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """tag -> [(step, decoded image)] of the image summaries in one TensorBoard run directory."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(run), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    out: dict[str, list[tuple[int, np.ndarray]]] = {}
    for tag in acc.Tags()["tensors"]:
        for event in acc.Tensors(tag):
            width, height, *encoded = event.tensor_proto.string_val
            for png in encoded:
                image = np.asarray(Image.open(io.BytesIO(png)))
                assert image.shape[:2] == (int(height), int(width))
                out.setdefault(tag, []).append((event.step, image))
    return out


def _runs(root: Path) -> dict[str, Path]:
    """'method/class' -> the directory holding its event file (tf-explain adds a time-stamped level)."""
    runs = {}
    for path in root.rglob("events.out.tfevents.*"):
        method, class_name = path.relative_to(root).parts[:2]
        assert f"{method}/{class_name}" not in runs, "one run per method and class"
        runs[f"{method}/{class_name}"] = path.parent
    return runs


def _photos(n: int, size: int = SIZE) -> np.ndarray:
    """Real photos (scikit-image's), resized to ``size``, uint8 [n, size, size, 3]."""
    from skimage import data

    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    return np.stack([np.asarray(Image.fromarray(photos[i % len(photos)]).resize((size, size))) for i in range(n)])


# ----------------------------------------------------------------------------------------------------------------
# Fast: validation, the fixed images, the schedule


def test_train_config_validates_the_explain_flags():
    with pytest.raises(ValueError, match="--explain-every must be >= 0"):
        TrainConfig(explain_every=-1)
    with pytest.raises(ValueError, match="--explain-images must be at least 1"):
        TrainConfig(explain_every=2, explain_images=0)
    assert TrainConfig().explain_every == 0 and TrainConfig(explain_every=3).explain_every == 3


def test_cli_reports_a_negative_explain_every_as_an_error(capsys, tmp_path):
    from glimpse.cli import main

    rc = main(["train", "--explain-every", "-2", "--logdir", str(tmp_path), "--export-dir", str(tmp_path)])
    assert rc == 2
    assert "--explain-every must be >= 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # rejected before any run directory is made


def test_explain_callback_config_rejects_bad_values():
    from training.callbacks import ExplainCallbackConfig

    for bad, match in (
        (dict(every=0), "at least 1 epoch"),
        (dict(num_images=0), "--explain-images"),
        (dict(methods=("gradcam", "lime")), "some of gradcam, occlusion, activations"),
        (dict(methods=()), "some of"),
        (dict(engine="captum"), "auto, tf-explain, glimpse"),
        (dict(patch_size=0), "patch size"),
    ):
        with pytest.raises(ValueError, match=match):
            ExplainCallbackConfig(**bad)


def test_fixed_validation_images_are_the_first_k_as_uint8_across_batches():
    import tensorflow as tf

    from training.callbacks import fixed_validation_images

    photos = _photos(5).astype(np.float32) + 0.4  # pipeline output: float 0-255, not necessarily integral
    labels = np.array([3, 1, 4, 1, 5])
    batched = tf.data.Dataset.from_tensor_slices((photos, labels)).batch(2)
    images, got = fixed_validation_images(batched, 3)
    assert images.dtype == np.uint8 and images.shape == (3, SIZE, SIZE, 3)
    np.testing.assert_array_equal(images, np.rint(photos[:3]).astype(np.uint8))
    np.testing.assert_array_equal(got, [3, 1, 4])
    one_by_one, got1 = fixed_validation_images(tf.data.Dataset.from_tensor_slices((photos, labels)), 9)
    assert len(one_by_one) == 5 and got1.tolist() == labels.tolist()  # fewer than asked: all of them
    arrays, _ = fixed_validation_images((photos, labels), 2)
    np.testing.assert_array_equal(arrays, images[:2])
    with pytest.raises(ValueError, match="empty"):
        fixed_validation_images(batched.take(0), 3)


def test_schedule_runs_the_inner_callback_every_n_epochs(tmp_path):
    import keras

    from training.callbacks import ExplanationCallback

    class Recorder(keras.callbacks.Callback):  # a stand-in for a tf-explain callback: records what it is asked
        def __init__(self) -> None:
            super().__init__()
            self.epochs: list[int] = []

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(epoch)

    inner = Recorder()
    cb = ExplanationCallback(inner, every=2, method="gradcam", engine="tf-explain", class_name="bird",
                             output_dir=tmp_path)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    cb.set_model(model)
    for epoch in range(6):
        cb.on_epoch_end(epoch)
    assert inner.epochs == [1, 3, 5] and inner.model is model
    with pytest.raises(ValueError, match="every"):
        ExplanationCallback(inner, every=0, method="gradcam", engine="glimpse", class_name="x", output_dir=tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# Slow: real models


@pytest.fixture(scope="module")
def tux_val():
    """The first 6 validation images of Tux Paint at 32 px, as `glimpse train` takes them, and the class names."""
    from training.callbacks import fixed_validation_images
    from training.data import load_dataset

    splits = load_dataset("tuxpaint", image_size=SIZE, seed=7, max_examples=24, batch_size=16)
    images, labels = fixed_validation_images(splits.val, 6)
    return images, labels, splits.class_names


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*structure of `inputs` doesn't match:UserWarning")  # tf-explain's GradCAM
def test_in_graph_engine_draws_tf_explains_pictures_and_logs_them_every_epoch(tmp_path, tux_val, capsys):
    import keras
    from tf_explain.core.activations import ExtractActivations
    from tf_explain.core.grad_cam import GradCAM
    from tf_explain.core.occlusion_sensitivity import OcclusionSensitivity

    from training.callbacks import ExplainCallbackConfig, GraphExplanationCallback, explanation_callbacks
    from training.models import build_model

    images, labels, class_names = tux_val
    keras.utils.set_random_seed(3)
    model, info = build_model("scratch", len(class_names), image_size=SIZE, seed=3)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    target = int(labels[0])
    for method in ("gradcam", "occlusion"):
        ours = GraphExplanationCallback(method, (images, labels), target, tmp_path / "parity",
                                        gradcam_layer=info.gradcam_layer, patch_size=4)
        ours.set_model(model)
        if method == "gradcam":
            theirs = GradCAM().explain((images, labels), model, target, layer_name=info.gradcam_layer)
            np.testing.assert_array_equal(ours.explain(), theirs)  # same cam, same display
        else:
            theirs = OcclusionSensitivity().explain((images, labels), model, target, 4)
            diff = np.abs(ours.explain().astype(int) - theirs.astype(int))
            # tf-explain's grey patch on uint8 images is 127, ours 127.5: a level or two here and there
            assert diff.max() <= 8 and diff.mean() < 0.5
    one = (images[:1], labels[:1])  # tf-explain pools the channels of all images into one grid; ours tiles per image
    ours = GraphExplanationCallback("activations", one, target, tmp_path / "parity", gradcam_layer=info.gradcam_layer)
    ours.set_model(model)
    theirs = ExtractActivations().explain(one, model, [info.gradcam_layer])
    mine = ours.explain()
    assert mine.shape == (*theirs.shape, 1) and mine.dtype == np.uint8
    assert np.abs(mine[..., 0].astype(int) - theirs.astype(int)).max() <= 1  # we round, tf-explain truncates

    methods = ("gradcam", "occlusion", "activations")
    config = ExplainCallbackConfig(every=1, num_images=6, engine="glimpse")
    callbacks = explanation_callbacks(model, gradcam_layer=info.gradcam_layer, validation=(images, labels),
                                      class_names=class_names, log_dir=tmp_path / "explain", config=config)
    assert "gradcam by glimpse, occlusion by glimpse, activations by glimpse" in capsys.readouterr().out
    classes = sorted({class_names[i] for i in labels})
    assert sorted(f"{c.method}/{c.class_name}" for c in callbacks) == sorted(
        f"{m}/{c}" for m in methods for c in classes)
    model.fit(images.astype(np.float32), labels, epochs=2, batch_size=8, verbose=0, callbacks=callbacks)
    runs = _runs(tmp_path / "explain")
    assert set(runs) == {f"{c.method}/{c.class_name}" for c in callbacks}
    for key, run in runs.items():
        method, class_name = key.split("/")
        tag = {"gradcam": "Grad CAM", "occlusion": "Occlusion Sensitivity", "activations": "Activations Visualization"}
        summaries = _image_summaries(run)
        assert list(summaries) == [tag[method]]
        assert [step for step, _ in summaries[tag[method]]] == [0, 1]
        n = int(np.sum(labels == class_names.index(class_name)))
        # activations: scratch's last_conv at 32 px is 16x16x64, an 8x8 grid of 16 px tiles per image, grey
        cells = math.ceil(math.sqrt(n))
        shape = (128 * cells, 128 * cells) if method == "activations" else (SIZE * cells, SIZE * cells, 3)
        assert all(image.shape == shape for _, image in summaries[tag[method]])


@pytest.mark.slow
def test_auto_engine_uses_in_graph_gradcam_where_tf_explain_fails_under_keras3(tmp_path, capsys):
    from training.callbacks import ExplainCallbackConfig, explanation_callbacks
    from training.models import build_model

    # A pretrained backbone on grey input: its layers are called a second time on the repeated channels, and
    # tf-explain builds its Grad-CAM and activation sub-models from the first call (a graph with two "images").
    side = 2 * SIZE  # a 2x2 Grad-CAM grid
    model, info = build_model("efficientnet_lite0", 3, image_size=side, channels=1, weights="none")
    grey = _photos(3, side).mean(axis=-1, keepdims=True).astype(np.uint8)
    labels = np.array([0, 2, 0])
    callbacks = explanation_callbacks(model, gradcam_layer=info.gradcam_layer, validation=(grey, labels),
                                      class_names=["cat", "coffee", "person"], log_dir=tmp_path,
                                      config=ExplainCallbackConfig(num_images=3))
    out = capsys.readouterr().out
    assert "gradcam by glimpse, occlusion by tf-explain, activations by glimpse" in out
    assert "activations: tf-explain fails on this model (ValueError" in out
    engines = {(c.method, c.class_name): c.engine for c in callbacks}
    assert engines == {(m, c): "tf-explain" if m == "occlusion" else "glimpse"
                       for m in ("gradcam", "occlusion", "activations") for c in ("cat", "person")}
    for c in callbacks:
        if c.class_name == "cat" and c.engine == "glimpse":
            c.set_model(model)
            c.on_epoch_end(0)
    (step, image), = _image_summaries(tmp_path / "gradcam" / "cat")["Grad CAM"]
    assert step == 0 and image.shape == (2 * side, 2 * side, 3)  # two images: a 2x2 grid, the lower row empty
    assert image[side:].max() == 0 and image[:side, :side].max() > 0 and image[:side, side:].max() > 0
    # Lite0's top_activation at 64 px: 2x2 maps, 1280 channels in a 36x36 grid (72 px) per image
    (step, image), = _image_summaries(tmp_path / "activations" / "cat")["Activations Visualization"]
    assert step == 0 and image.shape == (144, 144) and image[72:].max() == 0 and image[:72].max() == 255


@pytest.mark.slow
def test_glimpse_train_explain_every_writes_image_summaries_that_change_between_epochs(tmp_path, tux_val, capsys):
    from glimpse.cli import main

    images, labels, class_names = tux_val
    labels = labels[:4]
    rc = main(["train", "--dataset", "tuxpaint", "--model", "scratch", "--image-size", str(SIZE), "--epochs", "2",
               "--max-examples", "24", "--batch-size", "16", "--seed", "7", "--explain-every", "1",
               "--explain-images", "4", "--logdir", str(tmp_path / "runs"), "--no-export"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "gradcam by tf-explain, occlusion by tf-explain, activations by tf-explain" in out
    (run_dir,) = (tmp_path / "runs").iterdir()
    runs = _runs(run_dir / "explain")
    classes = sorted({class_names[i] for i in labels})
    assert sorted(runs) == sorted(f"{m}/{c}" for m in ("gradcam", "occlusion", "activations") for c in classes)
    tags = {"gradcam": "Grad CAM", "occlusion": "Occlusion Sensitivity", "activations": "Activations Visualization"}
    changed = {m: 0 for m in tags}
    for key, run in runs.items():
        method, class_name = key.split("/")
        n = int(np.sum(labels == class_names.index(class_name)))
        summaries = _image_summaries(run)
        assert list(summaries) == [tags[method]]
        (s0, first), (s1, second) = summaries[tags[method]]
        assert (s0, s1) == (0, 1)
        if method == "activations":  # scratch's last_conv at 32 px: 16x16 maps, 64 channels per image, grey
            side = math.ceil(math.sqrt(64 * n)) * (SIZE // 2)
            assert first.shape == second.shape == (side, side)
        else:
            side = math.ceil(math.sqrt(n)) * SIZE
            assert first.shape == second.shape == (side, side, 3)
        changed[method] += int(not np.array_equal(first, second))
    # The model learns between the two epochs: where it looks, and what its last conv layer sees, change.
    assert changed["activations"] == len(classes)
    assert changed["gradcam"] >= 1 and changed["occlusion"] >= 1
