"""Parity of training.explain with tf-explain 0.3.1 on the same small real model and real images.

The model is the localization study's CNN trained on Tux Paint photos (training.localization); the images are
skimage's chelsea and two of the study's held-out composites. Where tf-explain's entry points break under Keras 3
we call its lower-level static functions with our model (each case says what broke); where Glimpse differs on
purpose (ReLU in the Grad-CAM heatmap, SmoothGrad's sign, the (x - baseline) factor of integrated gradients, one
activation grid per image instead of one per batch) the test says so and compares the right thing.
"""

from __future__ import annotations

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from tf_explain.core.activations import ExtractActivations
from tf_explain.core.grad_cam import GradCAM
from tf_explain.core.gradients_inputs import GradientsInputs
from tf_explain.core.integrated_gradients import IntegratedGradients
from tf_explain.core.occlusion_sensitivity import OcclusionSensitivity
from tf_explain.core.smoothgrad import SmoothGrad
from tf_explain.core.vanilla_gradients import VanillaGradients

from glimpse_wire.contract import (
    OUT_ACTIVATION_SHAPE,
    OUT_ACTIVATIONS,
    OUT_ATTRIBUTION,
    OUT_CLASS_INDEX,
    OUT_GRID,
    OUT_GRID_SHAPE,
    OUT_HEATMAP,
    OUT_LAYER_NAME,
)
from studies.localization import GRADCAM_LAYER, QUICK_CONFIG, cached_localizer
from training.explain import ExplainerConfig, GraphExplainer, grid_side, smoothgrad_noise
from training.export import find_activation_layers

pytestmark = pytest.mark.slow

# tf-explain builds `tf.keras.models.Model([model.inputs], ...)`: a list inside a list. Keras 3 accepts the model
# but warns on every call that the input structure does not match, and still runs it.
KERAS3_STRUCTURE_WARNING = "structure of `inputs` doesn't match the expected structure"


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _assert_close(ours: np.ndarray, theirs: np.ndarray, rel: float = 1e-3) -> None:
    """Element-wise agreement relative to the map's scale, and correlation ~1."""
    scale = float(np.abs(theirs).max())
    assert scale > 0, "degenerate reference map"
    np.testing.assert_allclose(ours, theirs, rtol=rel, atol=rel * scale)
    assert _corr(ours, theirs) >= 0.9999


@pytest.fixture(scope="module")
def trained():
    model, _, test = cached_localizer(QUICK_CONFIG)
    return model, test


@pytest.fixture(scope="module")
def model(trained) -> keras.Model:
    return trained[0]


@pytest.fixture(scope="module")
def images(trained) -> np.ndarray:
    from skimage import data

    size = QUICK_CONFIG.image_size
    cat = tf.image.resize_with_pad(data.chelsea().astype(np.float32), size, size).numpy()
    _, test = trained
    return np.stack([cat, *test.images[:2].astype(np.float32)])


@pytest.fixture(scope="module")
def explainer(model) -> GraphExplainer:
    return GraphExplainer(model, GRADCAM_LAYER)


@pytest.fixture(scope="module")
def separate_softmax(model) -> keras.Model:
    """The same network ending in Dense (logits) + Activation('softmax'): tf-explain's VanillaGradients then
    differentiates the logits (its get_score_model), so both of its branches are covered."""
    features = keras.Model(model.input, model.get_layer("probs").input)
    dense = keras.layers.Dense(model.output.shape[-1], name="logits")
    outputs = keras.layers.Activation("softmax", name="softmax")(dense(features.output))
    variant = keras.Model(features.input, outputs)
    dense.set_weights(model.get_layer("probs").get_weights())
    return variant


def test_the_model_is_a_real_one(model, images):
    """Sanity of the fixture: trained weights give confident, image-dependent predictions."""
    probs = model.predict(images, verbose=0)
    assert probs.max(axis=1).min() > 1.0 / probs.shape[1] + 0.05
    assert not np.allclose(probs[0], probs[1])


# ---------------------------------------------------------------------------------------------------------------
# Grad-CAM


def test_tf_explain_gradcam_layer_inference_breaks_under_keras3(model):
    """GradCAM.infer_grad_cam_target_layer reads `layer.output_shape`, which Keras 3 layers no longer have, so
    `GradCAM.explain(..., layer_name=None)` fails; Glimpse takes the layer name from the model card instead."""
    with pytest.raises(AttributeError, match="output_shape"):
        GradCAM.infer_grad_cam_target_layer(model)


@pytest.mark.parametrize("guided", [True, False])
@pytest.mark.parametrize("class_index", [0, 2])
def test_gradcam_matches_tf_explain_raw_cam(model, explainer, images, guided, class_index):
    with pytest.warns(UserWarning, match=KERAS3_STRUCTURE_WARNING):
        outputs, grads = GradCAM.get_gradients_and_filters(model, images, GRADCAM_LAYER, class_index, guided)
    theirs = np.stack([c.numpy() for c in GradCAM.generate_ponderated_output(outputs, grads)])
    ours = explainer.gradcam(images, [class_index] * len(images), guided)
    attribution = ours[OUT_ATTRIBUTION].numpy()
    assert attribution.shape == theirs.shape
    for a, b in zip(attribution, theirs, strict=True):
        assert _corr(a, b) >= 0.99
    _assert_close(attribution, theirs)

    # The heatmap differs on purpose: Glimpse applies a ReLU (negative evidence is not "where the class is") and
    # divides by the maximum, where tf-explain's heatmap_display min-max normalises the signed cam. Compare ours to
    # tf-explain's own resize (cv2, bilinear) of the ReLU'd cam, max-normalised.
    size = images.shape[1:3]
    for i, cam in enumerate(theirs):
        relu = cv2.resize(np.maximum(cam, 0.0), (size[1], size[0]))
        if relu.max() > 0:
            np.testing.assert_allclose(ours[OUT_HEATMAP].numpy()[i], relu / relu.max(), atol=1e-4)
        else:
            np.testing.assert_array_equal(ours[OUT_HEATMAP].numpy()[i], 0.0)


def test_gradcam_explain_entry_point_runs_with_an_explicit_layer(model, explainer, images):
    """GradCAM.explain itself works under Keras 3 once the layer is given (it warns, see above) and returns its
    viridis display; with image_weight 0 its brightness follows our cam (viridis luminance rises monotonically)."""
    with pytest.warns(UserWarning, match=KERAS3_STRUCTURE_WARNING):
        grid = GradCAM().explain((images[:1], None), model, 1, layer_name=GRADCAM_LAYER, image_weight=0.0)
    assert grid.shape == (*images.shape[1:3], 3)
    cam = explainer.gradcam(images[:1], [1], True)[OUT_ATTRIBUTION].numpy()[0]
    upsampled = cv2.resize(cam, images.shape[1:3][::-1])
    luminance = grid.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert _corr(luminance, upsampled) >= 0.95


# ---------------------------------------------------------------------------------------------------------------
# Occlusion


@pytest.fixture(scope="module")
def occlusion_engines(model) -> dict[str, GraphExplainer]:
    """The study model's occlusion through each engine of the exact mode (the measured choice could be either)."""
    return {
        engine: GraphExplainer(model, GRADCAM_LAYER, ExplainerConfig(occlusion_engine=engine))
        for engine in ("incremental", "naive")
    }


@pytest.mark.parametrize("engine", ["incremental", "naive"])
@pytest.mark.parametrize("patch_size", [11, 16, 20, 32])
def test_occlusion_matches_tf_explain_exactly(model, occlusion_engines, images, patch_size, engine):
    """Same grey (127.5 in the model's 0-255 range), same grid (stride = patch size, partial edge patches), same
    bilinear resize: the maps agree to 1e-5, whichever engine computes the occluded copies. 11 and 20 do not divide
    96, so the edge patches are cut."""
    explainer = occlusion_engines[engine]
    assert explainer.occlusion_engine.engine == engine
    ours = explainer.function("occlusion")(
        images,
        np.full(len(images), -1, np.int32),
        np.full(len(images), patch_size, np.int32),
        np.zeros(len(images), np.int32),
        np.zeros(len(images), np.int32),
    )
    for i, image in enumerate(images):
        target = int(ours[OUT_CLASS_INDEX][i])
        theirs = OcclusionSensitivity().get_sensitivity_map(model, image, target, patch_size)
        assert np.abs(ours[OUT_ATTRIBUTION].numpy()[i] - theirs).max() <= 1e-5
        # display: tf-explain min-max normalises the same map (heatmap_display), so the heatmaps agree too, up to
        # the 1e-5 above divided by the map's range
        spread = theirs.max() - theirs.min()
        expected = (theirs - theirs.min()) / spread
        np.testing.assert_allclose(ours[OUT_HEATMAP].numpy()[i], expected, atol=2e-5 / spread + 1e-6)


def test_occlusion_default_patch_is_an_eighth_of_the_side(model, explainer, images):
    ours = explainer.occlusion(images[:1], [0], 0, 0)[OUT_ATTRIBUTION].numpy()[0]
    theirs = OcclusionSensitivity().get_sensitivity_map(model, images[0], 0, images.shape[1] // 8)
    assert np.abs(ours - theirs).max() <= 1e-5


# ---------------------------------------------------------------------------------------------------------------
# Gradient methods


@pytest.mark.parametrize("layout", ["dense_softmax", "separate_activation"])
def test_vanilla_gradients_and_gradients_inputs_match(model, separate_softmax, images, layout):
    net = model if layout == "dense_softmax" else separate_softmax
    # VanillaGradients.explain warns (and falls back to the probabilities) when the model does not end with an
    # activation layer; get_score_model decides which tensor is the "score". We reproduce that choice.
    if layout == "dense_softmax":
        with pytest.warns(UserWarning, match="Unsupported model architecture"):
            score_model = VanillaGradients().get_score_model(net)
        assert score_model is net
    else:
        score_model = VanillaGradients().get_score_model(net)
        assert score_model is not net
    explainer = GraphExplainer(net, None)
    for class_index in (0, 3):
        theirs = VanillaGradients.compute_gradients(images, score_model, class_index).numpy()
        ours = explainer.vanilla_gradients(images, [class_index] * len(images))[OUT_ATTRIBUTION].numpy()
        _assert_close(ours, theirs)
        theirs = GradientsInputs.compute_gradients(images, score_model, class_index).numpy()
        ours = explainer.gradients_inputs(images, [class_index] * len(images))[OUT_ATTRIBUTION].numpy()
        _assert_close(ours, theirs)


@pytest.mark.parametrize("layout", ["dense_softmax", "separate_activation"])
def test_smoothgrad_matches_tf_explain_core_fed_the_same_noise(model, separate_softmax, images, layout):
    """tf-explain draws np.random noise; we feed its averaging function our stateless noise. It averages the
    gradient of the cross-entropy (-log p_c); Glimpse reports +log p_c's gradient, so ours = -theirs."""
    net = model if layout == "dense_softmax" else separate_softmax
    num_samples, noise, seeds, class_index = 4, 12.0, np.array([11, 12, 13], np.int32), 1
    eps = np.concatenate(
        [
            smoothgrad_noise(images.shape[1:], np.full([num_samples], s), np.arange(num_samples), [noise] * num_samples)
            for s in seeds
        ]
    )
    noisy = np.repeat(images, num_samples, axis=0) + eps
    theirs = SmoothGrad.get_averaged_gradients(noisy, net, class_index, num_samples).numpy()
    ours = GraphExplainer(net, None).smoothgrad(images, [class_index] * 3, num_samples, noise, seeds)
    _assert_close(ours[OUT_ATTRIBUTION].numpy(), -theirs, rel=2e-3)


def test_smoothgrad_explain_entry_point_runs(model, images):
    """SmoothGrad.explain works as-is under Keras 3 (it returns its uint8 display grid)."""
    grid = SmoothGrad().explain((images[:1], None), model, 0, num_samples=2, noise=1.0)
    assert grid.shape == images.shape[1:3] and grid.dtype == np.uint8


@pytest.mark.parametrize("n_steps", [10, 3])
def test_integrated_gradients_match_tf_explain_times_input(model, explainer, images, n_steps):
    """tf-explain 0.3.1 returns the path-averaged gradients and never multiplies by (x - baseline); Glimpse does
    (the paper's definition). Same path (k / (n - 1), black baseline), same target (the probability)."""
    class_index = 2
    path = IntegratedGradients.generate_interpolations(images, n_steps)
    theirs = IntegratedGradients.get_integrated_gradients(path, model, class_index, n_steps).numpy()
    ours = explainer.integrated_gradients(images, [class_index] * 3, n_steps)[OUT_ATTRIBUTION].numpy()
    _assert_close(ours, theirs * images)


def test_integrated_gradients_explain_entry_point_runs(model, images):
    grid = IntegratedGradients().explain((images[:1], None), model, 0, n_steps=3)
    assert grid.shape == images.shape[1:3] and grid.dtype == np.uint8


# ---------------------------------------------------------------------------------------------------------------
# Activations (tf-explain's ActivationsVisualization: ExtractActivations + utils.display.filter_display)


@pytest.fixture(scope="module")
def stages(model) -> GraphExplainer:
    """Every stage output the exporter would list (the default four), the Grad-CAM layer last."""
    return GraphExplainer(model, GRADCAM_LAYER, activation_layers=find_activation_layers(model, GRADCAM_LAYER))


def _tf_explain_grid(model, images: np.ndarray, layer: str) -> np.ndarray:
    """ExtractActivations.explain as is (it runs under Keras 3): the uint8 grid of ``layer`` for ``images``."""
    return ExtractActivations().explain((images, None), model, [layer])


def test_activation_layers_of_the_study_model(stages):
    assert stages.activation_layers[-1] == GRADCAM_LAYER and 2 <= len(stages.activation_layers) <= 4
    sizes = [shape[:2] for shape in stages.activation_shapes]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)  # one layer per resolution


def test_activation_grid_of_one_image_is_tf_explains_grid(model, stages, images):
    """Same tiling (channel k at tile (k // n, k % n), n = ceil(sqrt(K)), missing tiles zero) and the same min-max
    over the whole grid: tf-explain's uint8 display is ours * 255 truncated, to one level (float rounding)."""
    for i in range(len(images)):
        for index, name in enumerate(stages.activation_layers):
            out = stages.activations(images[i : i + 1], [-1], [index])
            assert out[OUT_LAYER_NAME].numpy()[0].decode() == name
            rows, cols = out[OUT_GRID_SHAPE].numpy()[0]
            ours = out[OUT_GRID].numpy()[0, :rows, :cols]
            theirs = _tf_explain_grid(model, images[i : i + 1], name)
            assert theirs.shape == ours.shape, name
            display = (np.clip(ours, 0, 1) * 255).astype(np.uint8)
            diff = np.abs(display.astype(int) - theirs.astype(int))
            assert diff.max() <= 1 and (diff == 0).mean() >= 0.99, (name, diff.max(), (diff == 0).mean())


def test_activation_grid_of_a_batch_differs_on_purpose(model, stages, images):
    """tf-explain tiles the channels of all B images into one grid (image-major) and normalises them together;
    Glimpse returns one grid per image (the contract is per example). tf-explain's batch grid is our raw channels
    laid out that way, scaled by the batch's joint min and max."""
    out = stages.activations(images, [-1] * len(images), [-1] * len(images))
    h, w, k = out[OUT_ACTIVATION_SHAPE].numpy()[0]
    raw = out[OUT_ACTIVATIONS].numpy()[:, : h * w * k].reshape(len(images), h, w, k)
    theirs = _tf_explain_grid(model, images, GRADCAM_LAYER)
    n = grid_side(len(images) * k)
    assert theirs.shape == (n * h, n * w)  # one grid for the batch, not len(images) of them
    low = min(raw.min(), 0.0) if n * n > len(images) * k else raw.min()
    high = raw.max()
    for j in (0, k + 1, 2 * k + k - 1):  # image 0 channel 0, image 1 channel 1, image 2's last channel
        image, channel = divmod(j, k)
        tile = theirs[(j // n) * h : (j // n + 1) * h, (j % n) * w : (j % n + 1) * w]
        expected = ((raw[image, ..., channel] - low) / (high - low) * 255).astype(np.uint8)
        assert np.abs(tile.astype(int) - expected.astype(int)).max() <= 1, j
    # ours: each image's own grid, equal to the image explained alone
    alone = stages.activations(images[1:2], [-1], [-1])[OUT_GRID].numpy()[0]
    np.testing.assert_allclose(out[OUT_GRID].numpy()[1], alone, atol=1e-6)
