"""The CAM methods beyond tf-explain's Grad-CAM (Grad-CAM++, HiResCAM, LayerCAM): each layer's map against
hand-computed values, the score they differentiate (the logit), the fusion over layers and its per-example ``layers``
parameter, and the default method's record in the contract."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from glimpse_wire.contract import (
    ATTRIBUTION_METHODS,
    CAM_METHODS,
    DEFAULT_EXPLAIN_METHOD,
    METHOD_PARAMS,
    OUT_ATTRIBUTION,
    OUT_CLASS_INDEX,
    OUT_HEATMAP,
)
from training.explain import GraphExplainer
from training.explain.cams import FUSION_FLOOR, class_score, deepest_first, layer_weights
from training.explain.gradcam_pp import gradcam_pp_map
from training.explain.hirescam import hirescam_map
from training.explain.layercam import layercam_map
from training.explain.model import ExplainModel


def _t(values: list) -> tf.Tensor:
    return tf.constant(values, tf.float32)


# ----------------------------------------------------------------------------------------------------------------
# One layer's map, by hand


def test_gradcam_pp_weights_by_hand() -> None:
    """One channel, two locations: A = (1, 3), g = (2, -1); sum A = 4.
    alpha_1 = 2^2 / (2*2^2 + 4*2^3) = 4/40 = 0.1; alpha_2 = 1 / (2*1 + 4*(-1)) = -0.5 (its ReLU(g) is 0 anyway);
    w = 0.1 * ReLU(2) + (-0.5) * ReLU(-1) = 0.2; map = 0.2 * A = (0.2, 0.6)."""
    activations = _t([[[[1.0], [3.0]]]])  # [1,1,2,1]
    gradients = _t([[[[2.0], [-1.0]]]])
    np.testing.assert_allclose(gradcam_pp_map(activations, gradients).numpy(), [[[0.2, 0.6]]], rtol=1e-6)


def test_gradcam_pp_zero_gradients_give_zero_weight_not_nan() -> None:
    activations = _t([[[[1.0, 2.0], [3.0, 0.0]]]])  # [1,1,2,2]
    gradients = _t([[[[0.0, 1.0], [0.0, 1.0]]]])  # channel 0: no gradient (0/0); channel 1: alpha = 1/(2+2) each
    # channel 1: sum A = 2, alpha = 1 / (2*1 + 2*1) = 0.25 at both, w = 0.25 + 0.25 = 0.5; map = 0.5 * (2, 0)
    out = gradcam_pp_map(activations, gradients).numpy()
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, [[[1.0, 0.0]]], rtol=1e-6)


def test_gradcam_pp_with_uniform_gradients_is_gradcam() -> None:
    """With one gradient value per channel, alpha = 1 / (2 + sum A * g) per location, the same everywhere: the map
    is Grad-CAM's up to that per-channel factor; for one channel, exactly proportional."""
    rng = np.random.default_rng(0)
    a = rng.random((1, 3, 3, 1)).astype(np.float32)
    g = np.full((1, 3, 3, 1), 0.5, np.float32)
    alpha = 0.25 / (2 * 0.25 + a.sum() * 0.125)
    np.testing.assert_allclose(gradcam_pp_map(tf.constant(a), tf.constant(g)).numpy(), alpha * 9 * 0.5 * a[..., 0],
                               rtol=1e-5)


def test_hirescam_and_layercam_by_hand() -> None:
    """Two channels at one location: A = (1, 2), g = (3, -1). HiResCAM: 3*1 + (-1)*2 = 1; LayerCAM keeps only the
    positive gradient: 3*1 = 3. A second location with A = (0, 4), g = (1, 1): both give 4."""
    activations = _t([[[[1.0, 2.0], [0.0, 4.0]]]])  # [1,1,2,2]
    gradients = _t([[[[3.0, -1.0], [1.0, 1.0]]]])
    np.testing.assert_allclose(hirescam_map(activations, gradients).numpy(), [[[1.0, 4.0]]])
    np.testing.assert_allclose(layercam_map(activations, gradients).numpy(), [[[3.0, 4.0]]])


def test_layer_weights_average_the_first_n_layers() -> None:
    weights = layer_weights(tf.constant([1, 2, 5]), 3).numpy()
    np.testing.assert_allclose(weights, [[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Whole methods on small models


def _cam_model() -> keras.Model:
    """8x8 input, conv c1 (8x8), conv c2 (stride 2, 4x4), GAP, Dense(softmax): the CAM literature's architecture."""
    init = keras.initializers.GlorotUniform(seed=1)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", kernel_initializer=init, name="c1")(x)
    x = keras.layers.Conv2D(5, 3, strides=2, padding="same", activation="relu", kernel_initializer=init, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", kernel_initializer=init, name="out")(x))


@pytest.fixture(scope="module")
def cam_setup() -> tuple[keras.Model, GraphExplainer, np.ndarray]:
    model = _cam_model()
    images = np.random.default_rng(3).uniform(0, 255, (3, 8, 8, 3)).astype(np.float32)
    return model, GraphExplainer(model, "c2", activation_layers=["c1"]), images


def _up_normalised(cam: np.ndarray) -> np.ndarray:
    """ReLU, bilinear upsampling to 8x8 (TensorFlow's, half-pixel centres), division by the maximum (an all-zero
    map stays zero)."""
    up = tf.image.resize(np.maximum(cam, 0)[..., None], (8, 8), method="bilinear")[..., 0].numpy()
    peak = up.max(axis=(1, 2), keepdims=True)
    return np.divide(up, peak, out=np.zeros_like(up), where=peak > 0)


def _logit_gradients(model: keras.Model, images: np.ndarray, target: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(activations, d logit_target / d activations) at c2 and c1: the reference computed with Keras directly."""
    net = keras.Model(model.input, [model.get_layer("c2").output, model.get_layer("c1").output,
                                    model.get_layer("out").input])
    dense = model.get_layer("out")
    with tf.GradientTape() as tape:
        c2, c1, pooled = net(images)
        logits = tf.matmul(pooled, dense.kernel) + dense.bias
        score = tf.gather(logits, target, batch_dims=1)
    g2, g1 = tape.gradient(score, [c2, c1])
    return [(c2.numpy(), g2.numpy()), (c1.numpy(), g1.numpy())]


def test_hirescam_of_a_gap_dense_model_is_the_class_activation_map(cam_setup) -> None:
    """Before GAP and a dense layer, d logit_c / dA_k(i,j) = W_kc / (h w), so HiResCAM = sum_k W_kc A_k / (h w):
    Zhou et al.'s CAM, computed here from the weights alone."""
    model, explainer, images = cam_setup
    out = explainer.explain("hirescam", images, -1, layers=1)
    predicted = np.asarray(model(images)).argmax(axis=1)
    activations = keras.Model(model.input, model.get_layer("c2").output)(images).numpy()  # [3,4,4,5]
    kernel = model.get_layer("out").kernel.numpy()  # [5,3]
    cam = np.einsum("bhwk,kb->bhw", activations, kernel[:, predicted]) / 16.0
    assert (cam.max(axis=(1, 2)) > 0).all()  # maps, not blanks
    np.testing.assert_allclose(out[OUT_HEATMAP].numpy(), _up_normalised(cam), atol=1e-5)
    np.testing.assert_allclose(out[OUT_ATTRIBUTION].numpy(), _up_normalised(cam), atol=1e-5)
    assert out[OUT_CLASS_INDEX].numpy().tolist() == predicted.tolist()


@pytest.mark.parametrize(
    ("method", "layer_map"),
    [("gradcam_pp", gradcam_pp_map), ("hirescam", hirescam_map), ("layercam", layercam_map)],
)
def test_fused_maps_against_a_reference_on_the_logit(cam_setup, method, layer_map) -> None:
    """layers = 2: the geometric mean of the two layers' max-normalised maps (each floored at FUSION_FLOOR); each
    example may ask for another depth."""
    model, explainer, images = cam_setup
    target = [2, 0, 1]
    (a2, g2), (a1, g1) = _logit_gradients(model, images, target)
    deep = _up_normalised(layer_map(tf.constant(a2), tf.constant(g2)).numpy())
    shallow = _up_normalised(layer_map(tf.constant(a1), tf.constant(g1)).numpy())
    out = explainer.explain(method, images, target, layers=[2, 1, 7])  # 7: more than the model has = all
    geometric = np.sqrt(np.maximum(deep, FUSION_FLOOR) * np.maximum(shallow, FUSION_FLOOR))
    expected = np.stack([geometric[0], deep[1], geometric[2]])
    # a layer whose map is 0 everywhere (HiResCAM's signed map can be) scales the fusion by a constant: the heatmap,
    # normalised, is then the other layer's; below, it is compared on its own scale
    assert (expected.max(axis=(1, 2)) > 0).all()
    np.testing.assert_allclose(out[OUT_ATTRIBUTION].numpy(), expected, atol=1e-5)
    heat = out[OUT_HEATMAP].numpy()
    peak = expected.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(heat, np.divide(expected, peak, out=np.zeros_like(expected), where=peak > 0),
                               atol=1e-5)
    # one example alone gives the same map as inside a deeper batch
    alone = explainer.explain(method, images[1:2], target[1:2], layers=1)[OUT_HEATMAP].numpy()
    np.testing.assert_allclose(alone[0], heat[1], atol=1e-5)


def test_the_score_is_the_logit_where_the_model_exposes_it(cam_setup) -> None:
    model, _, images = cam_setup
    explain_model = ExplainModel(model, "c2", activation_layers=["c1"])
    fwd, layers = explain_model.cam_forward(tf.constant(images))
    pooled = keras.Model(model.input, model.get_layer("out").input)(images).numpy()
    dense = model.get_layer("out")
    logits = pooled @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(class_score(fwd, tf.constant([1, 1, 0])).numpy(), logits[[0, 1, 2], [1, 1, 0]],
                               rtol=1e-5, atol=1e-5)
    assert [tuple(t.shape[1:3]) for t in layers] == [(8, 8), (4, 4)]
    assert deepest_first(explain_model) == [1, 0]


def test_the_layers_parameter_is_checked() -> None:
    explainer = GraphExplainer(_cam_model(), "c2")
    with pytest.raises(tf.errors.InvalidArgumentError, match="layercam: layers must be >= 1"):
        explainer.explain("layercam", np.zeros((1, 8, 8, 3), np.float32), [0], layers=0)


def test_cam_methods_are_attribution_methods_with_a_layers_parameter_and_the_default_is_one_of_them() -> None:
    for method in ("gradcam_pp", "hirescam", "layercam"):
        assert method in ATTRIBUTION_METHODS and method in CAM_METHODS
        assert [p.name for p in METHOD_PARAMS[method]] == ["layers"]
    assert DEFAULT_EXPLAIN_METHOD in ATTRIBUTION_METHODS


@pytest.mark.parametrize("method", ["gradcam_pp", "layercam"])
def test_the_traced_function_gives_the_eager_maps(cam_setup, method) -> None:
    """The signature's graph (one forward, the backward chosen by the batch's deepest ``layers``) equals eager."""
    _, explainer, images = cam_setup
    layers = np.array([2, 1, 7], np.int32)
    traced = explainer.function(method)(images, np.array([0, 1, -1], np.int32), layers)
    eager = explainer.explain(method, images, [0, 1, -1], layers=layers)
    np.testing.assert_allclose(traced[OUT_HEATMAP].numpy(), eager[OUT_HEATMAP].numpy(), atol=1e-6)
    shallow = explainer.function(method)(images, np.array([0, 1, -1], np.int32), np.ones(3, np.int32))
    np.testing.assert_allclose(shallow[OUT_HEATMAP].numpy()[1], traced[OUT_HEATMAP].numpy()[1], atol=1e-6)
