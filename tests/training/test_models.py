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


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg99", 3, image_size=32)
    with pytest.raises(ValueError, match="RGB"):
        build_model("efficientnet_lite0", 3, image_size=32, channels=1)
