"""Model builders: functional, 0-255 input with preprocessing inside, Grad-CAM layer, unfreeze semantics."""

from __future__ import annotations

import numpy as np
import pytest

from training.models import ModelUnavailable, build_model


@pytest.mark.parametrize("name", ["scratch", "scratch_bn"])
def test_scratch_models_are_functional_with_a_4d_gradcam_layer(name):
    import keras

    model, info = build_model(name, 4, image_size=32, channels=1)
    assert isinstance(model, keras.Model) and not isinstance(model, keras.Sequential)
    assert model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 4)
    assert len(model.get_layer(info.gradcam_layer).output.shape) == 4
    p = model.predict(np.full((2, 32, 32, 1), 200.0, np.float32), verbose=0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.0, 0.25, 1.0])
def test_unfreeze_makes_the_last_fraction_trainable_and_keeps_batchnorm_frozen(fraction):
    import keras

    model, info = build_model("efficientnet_lite0", 3, image_size=64, unfreeze=fraction)
    assert info.gradcam_layer == "top_activation" and info.preprocessing == "lite0"
    layers = [model.get_layer(n) for n in info.backbone_layers]
    weighted = [la for la in layers if la.weights]
    bn = [la for la in weighted if isinstance(la, keras.layers.BatchNormalization)]
    assert bn and not any(la.trainable for la in bn)
    trainable = [la for la in weighted if la.trainable]
    expected = round(len(weighted) * fraction) - sum(
        1 for la in weighted[len(weighted) - round(len(weighted) * fraction):]
        if isinstance(la, keras.layers.BatchNormalization)) if fraction else 0
    assert len(trainable) == expected
    if 0 < fraction < 1:  # the trainable ones are the last ones
        first_trainable = min(weighted.index(la) for la in trainable)
        assert all(la.trainable or isinstance(la, keras.layers.BatchNormalization) for la in weighted[first_trainable:])
    assert model.get_layer("predictions").trainable
    drops = [la for la in layers if isinstance(la, keras.layers.Dropout)]
    first = min((layers.index(la) for la in weighted if la.trainable), default=len(layers))
    assert drops and all((la.rate > 0) == (layers.index(la) > first) for la in drops)  # drop-connect off when frozen
    if fraction == 0.0:  # a frozen backbone computes the same features in training as in serving
        features = keras.Model(model.input, model.get_layer(info.gradcam_layer).output)
        x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
        np.testing.assert_allclose(features(x, training=True), features(x, training=False), atol=1e-5)


def test_keras_imagenet_weights_offline_raise_a_clear_error(monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(keras.applications, "MobileNetV2", offline)
    with pytest.raises(ModelUnavailable, match="needs internet"):
        build_model("mobilenet_v2", 3, image_size=64, weights="imagenet")


@pytest.mark.slow
def test_mobilenet_without_weights_builds_flat_with_its_gradcam_layer():
    model, info = build_model("mobilenet_v2", 3, image_size=64, weights="none")
    assert info.gradcam_layer == "out_relu" and info.preprocessing == "scale_-1_1"
    assert len(model.get_layer("out_relu").output.shape) == 4
    assert model.get_layer("preprocessing") is not None


@pytest.mark.slow
def test_fine_tuning_leaves_batchnorm_statistics_alone_and_trains_the_convs():
    import keras

    model, info = build_model("efficientnet_lite0", 3, image_size=32, unfreeze=1.0, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    bn = next(model.get_layer(n) for n in info.backbone_layers
              if isinstance(model.get_layer(n), keras.layers.BatchNormalization))
    conv = model.get_layer("stem_conv")
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    # frozen BatchNorm runs in inference mode even when called in training mode (no batch statistics)
    bn_in = np.random.default_rng(1).normal(3.0, 2.0, (8, 4, 4, bn.gamma.shape[0])).astype(np.float32)
    np.testing.assert_allclose(bn(bn_in, training=True), bn(bn_in, training=False), atol=1e-6)
    stats = [w.numpy().copy() for w in bn.weights]
    kernel = conv.kernel.numpy().copy()
    model.train_on_batch(x, np.array([0, 1, 2, 0, 1, 2, 0, 1]))
    for before, after in zip(stats, [w.numpy() for w in bn.weights], strict=True):
        np.testing.assert_array_equal(before, after)
    assert not np.array_equal(kernel, conv.kernel.numpy())


@pytest.mark.slow
def test_grey_input_is_repeated_to_rgb_inside_a_pretrained_model():
    grey, info = build_model("efficientnet_lite0", 3, image_size=32, channels=1, seed=0)
    assert grey.input_shape == (None, 32, 32, 1) and info.channels == 1
    assert info.preprocessing.startswith("grey_to_rgb")
    assert grey.get_layer("grey_to_rgb") is not None and grey.get_layer(info.gradcam_layer) is not None
    rgb, _ = build_model("efficientnet_lite0", 3, image_size=32, channels=3, seed=0)
    rgb.set_weights(grey.get_weights())
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(grey.predict(x, verbose=0), rgb.predict(np.repeat(x, 3, axis=-1), verbose=0),
                               atol=1e-5)


def test_a_weights_path_loads_the_whole_model(tmp_path):
    a, _ = build_model("scratch", 3, image_size=16, channels=1, seed=1)
    path = tmp_path / "scratch.weights.h5"
    a.save_weights(path)
    b, _ = build_model("scratch", 3, image_size=16, channels=1, seed=2, weights=str(path))
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        build_model("scratch", 3, image_size=16, weights=str(tmp_path / "missing.weights.h5"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg99", 3, image_size=32)
    with pytest.raises(ValueError, match="channels must be 1"):
        build_model("scratch", 3, image_size=32, channels=4)
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_model("scratch", 1, image_size=32)
