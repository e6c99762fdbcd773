"""Unit tests of training.explain: the pure maths against hand-computed values, the per-example parameter
semantics, input validation, and that every method runs in a TF-Serving-style graph session after export."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from glimpse_wire.contract import (
    ACTIVATIONS_OUTPUTS,
    ATTRIBUTION_METHODS,
    CAM_METHODS,
    EXPLAIN_METHODS,
    METHOD_PARAMS,
    OUT_ACTIVATION_SHAPE,
    OUT_ACTIVATIONS,
    OUT_ATTRIBUTION,
    OUT_CLASS_INDEX,
    OUT_GRID,
    OUT_GRID_SHAPE,
    OUT_HEATMAP,
    OUT_LAYER,
    OUT_LAYER_NAME,
    OUT_PROBABILITIES,
    OUT_SCORE,
    explain_outputs,
    explain_signature,
)
from training.explain import (
    GREY_VALUE,
    ExplainerConfig,
    GraphExplainer,
    activation_grid,
    gradcam_heatmap,
    gradcam_map,
    grid_side,
    minmax_heatmap,
    occlusion_geometry,
    path_alphas,
    saliency_heatmap,
    smoothgrad_noise,
    tile_channels,
)

SIZE = 16
NUM_CLASSES = 3


def _tiny_model(seed: int = 1) -> keras.Model:
    init = keras.initializers.HeNormal(seed=seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", kernel_initializer=init, name="c1")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", kernel_initializer=init, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", kernel_initializer=init, name="probs")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return _tiny_model()


@pytest.fixture(scope="module")
def explainer(model: keras.Model) -> GraphExplainer:
    return GraphExplainer(model, "c2", ExplainerConfig(chunk_size=5))


@pytest.fixture(scope="module")
def functions(explainer: GraphExplainer) -> dict:
    """One traced tf.function per method (traced here, once, with the unknown batch dimension)."""
    out = {m: explainer.function(m) for m in EXPLAIN_METHODS}
    for fn in out.values():
        fn.get_concrete_function()
    return out


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    from skimage import data

    photos = [data.chelsea(), data.coffee(), data.astronaut()]
    return np.stack([tf.image.resize(p, (SIZE, SIZE)).numpy() for p in photos]).astype(np.float32)


def _params(method: str, batch: int, **override) -> list[np.ndarray]:
    out = []
    for p in METHOD_PARAMS[method]:
        value = override.get(p.name, p.default)
        out.append(np.broadcast_to(np.asarray(value, dtype=p.dtype), [batch]).copy())
    return out


def _run(functions, method, images, class_index, **override) -> dict[str, np.ndarray]:
    result = functions[method](images, np.asarray(class_index, np.int32), *_params(method, len(images), **override))
    return {k: v.numpy() for k, v in result.items()}


# ---------------------------------------------------------------------------------------------------------------
# Pure maths


def test_gradcam_map_weights_by_mean_gradient_and_guides_per_example():
    acts = np.zeros((2, 2, 2, 2), np.float32)
    acts[..., 0] = [[1, 2], [3, 4]]
    acts[..., 1] = [[0, 1], [0, 1]]
    grads = np.zeros((2, 2, 2, 2), np.float32)
    grads[..., 0] = [[1, -1], [1, 3]]  # mean 1; guided (acts all > 0): keeps 1, 1, 3 -> mean 5/4
    grads[..., 1] = [[2, 2], [-2, 2]]  # mean 1; guided: acts > 0 only in column 1 -> 2 + 2 -> mean 1
    cam = gradcam_map(tf.constant(acts), tf.constant(grads), tf.constant([False, True])).numpy()
    np.testing.assert_allclose(cam[0], acts[0, ..., 0] * 1.0 + acts[0, ..., 1] * 1.0)
    np.testing.assert_allclose(cam[1], acts[1, ..., 0] * 1.25 + acts[1, ..., 1] * 1.0)


def test_gradcam_heatmap_relu_upsamples_and_divides_by_max():
    cam = tf.constant([[[-1.0, 2.0], [0.5, 4.0]], [[-1.0, -2.0], [-3.0, -4.0]]])
    heat = gradcam_heatmap(cam, (4, 4)).numpy()
    assert heat.shape == (2, 4, 4)
    assert heat[0].max() == pytest.approx(1.0) and heat[0].min() == pytest.approx(0.0)
    assert heat[0, 3, 3] == pytest.approx(1.0)  # the corner cell (value 4) clamps out to the corner
    np.testing.assert_array_equal(heat[1], 0.0)  # all negative: nothing left after the ReLU, no NaN


def test_minmax_heatmap_and_constant_map():
    values = tf.constant([[[1.0, 3.0], [2.0, 5.0]], [[7.0, 7.0], [7.0, 7.0]]])
    heat = minmax_heatmap(values).numpy()
    np.testing.assert_allclose(heat[0], [[0.0, 0.5], [0.25, 1.0]])
    np.testing.assert_array_equal(heat[1], 0.0)


def test_saliency_heatmap_sums_abs_over_channels_and_clips_at_percentile():
    attribution = np.zeros((1, 10, 10, 3), np.float32)
    attribution[0, :, :, 0] = np.arange(100).reshape(10, 10)  # magnitudes 0..99 in channel 0
    attribution[0, :, :, 1] = -np.arange(100).reshape(10, 10)  # |.| doubles them: 0..198
    heat = saliency_heatmap(tf.constant(attribution), percentile=90.0).numpy()
    # sorted position floor(0.9 * 99) = 89 -> magnitude 178; everything above clips to 1
    np.testing.assert_allclose(heat[0].reshape(-1)[:90], np.arange(90) * 2 / 178, rtol=1e-6)
    np.testing.assert_array_equal(heat[0].reshape(-1)[89:], 1.0)
    zero = saliency_heatmap(tf.zeros((1, 4, 4, 3))).numpy()
    np.testing.assert_array_equal(zero, 0.0)


def test_saliency_heatmap_falls_back_to_max_when_percentile_is_zero():
    attribution = np.zeros((1, 10, 10, 1), np.float32)
    attribution[0, 3, 4, 0] = 4.0  # one pixel: the 99th percentile of the 100 magnitudes is 0
    heat = saliency_heatmap(tf.constant(attribution)).numpy()
    assert heat[0, 3, 4] == pytest.approx(1.0)
    assert heat.sum() == pytest.approx(1.0)


def test_occlusion_geometry_defaults_and_ceil_grid():
    patch, step, rows, cols = occlusion_geometry((64, 48), tf.constant([0, 10, 7]), tf.constant([0, 0, 3]))
    np.testing.assert_array_equal(patch.numpy(), [6, 10, 7])  # 0 -> min(64, 48) // 8
    np.testing.assert_array_equal(step.numpy(), [6, 10, 3])  # 0 -> the patch size
    np.testing.assert_array_equal(rows.numpy(), [11, 7, 22])  # ceil(64 / s)
    np.testing.assert_array_equal(cols.numpy(), [8, 5, 16])  # ceil(48 / s)


def test_path_alphas_include_both_ends():
    numerator, denominator = path_alphas(tf.constant([0, 1, 2, 3, 0]), tf.constant([4, 4, 4, 4, 1]))
    np.testing.assert_allclose(numerator.numpy() / denominator.numpy(), [0.0, 1 / 3, 2 / 3, 1.0, 1.0])


def test_smoothgrad_noise_is_seeded_per_sample_and_scaled():
    a = smoothgrad_noise((8, 8, 3), tf.constant([5, 5, 6]), tf.constant([0, 1, 0]), tf.constant([2.0, 2.0, 0.0]))
    b = smoothgrad_noise((8, 8, 3), tf.constant([5]), tf.constant([1]), tf.constant([2.0]))
    a, b = a.numpy(), b.numpy()
    np.testing.assert_array_equal(a[1], b[0])  # (seed 5, sample 1) is the same noise wherever it is drawn
    assert not np.allclose(a[0], a[1])
    np.testing.assert_array_equal(a[2], 0.0)  # noise 0 -> no noise
    unit = tf.random.stateless_normal((8, 8, 3), seed=[5, 0]).numpy()
    np.testing.assert_allclose(a[0], 2.0 * unit, rtol=1e-6)


def test_grid_side_is_the_ceiling_of_the_square_root():
    assert [grid_side(k) for k in (1, 2, 4, 5, 9, 10, 16, 17, 32, 1280)] == [1, 2, 2, 3, 3, 4, 4, 5, 6, 36]
    with pytest.raises(ValueError, match="at least one channel"):
        grid_side(0)


def test_tile_channels_lays_out_channels_row_major_with_zero_tiles():
    # 5 channels of 1x2 -> a 3x3 grid of 1x2 tiles: channel k at tile (k // 3, k % 3), tiles 5..8 zero
    acts = np.arange(1, 11, dtype=np.float32).reshape(1, 1, 2, 5)  # pixel (0, x), channel k = 1 + 5x + k
    grid = tile_channels(tf.constant(acts)).numpy()
    assert grid.shape == (1, 3, 6)
    np.testing.assert_array_equal(grid[0], [[1, 6, 2, 7, 3, 8], [4, 9, 5, 10, 0, 0], [0, 0, 0, 0, 0, 0]])


def test_activation_grid_normalises_each_image_over_its_whole_grid():
    acts = np.zeros((3, 2, 2, 3), np.float32)  # 3 channels -> 2x2 tiles, one of them missing (zeros)
    acts[0] = 2.0 + np.arange(12, dtype=np.float32).reshape(2, 2, 3)  # all > 0: the missing tile is the minimum
    acts[1] = -1.0  # constant negative channels: grid -1 with a zero tile -> 0 and 1
    acts[2] = 5.0
    acts[2, 0, 0, 0] = 6.0
    grid = activation_grid(tf.constant(acts)).numpy()
    assert grid.shape == (3, 4, 4) and grid.min() == 0.0 and grid.max() == 1.0
    np.testing.assert_allclose(grid[0, :2, :2], acts[0, ..., 0] / 13.0)
    np.testing.assert_array_equal(grid[0, 2:, 2:], 0.0)
    np.testing.assert_array_equal(grid[1, :2, :], 0.0)
    np.testing.assert_array_equal(grid[1, 2:, 2:], 1.0)  # the zero tile is the maximum here
    assert grid[2, 0, 0] == 1.0 and grid[2, 2, 2] == 0.0
    np.testing.assert_allclose(grid[2, :2, 2:], 5.0 / 6.0)  # (5 - 0) / (6 - 0)


# ---------------------------------------------------------------------------------------------------------------
# The methods


@pytest.mark.parametrize("method", ATTRIBUTION_METHODS)
def test_every_method_returns_the_contract_outputs(functions, images, model, method):
    out = _run(functions, method, images, [-1, 0, 2])
    assert set(out) == set(explain_outputs(method))
    assert {OUT_HEATMAP, OUT_ATTRIBUTION, OUT_CLASS_INDEX, OUT_SCORE, OUT_PROBABILITIES} <= set(out)
    assert out[OUT_HEATMAP].shape == (3, SIZE, SIZE) and out[OUT_HEATMAP].dtype == np.float32
    assert out[OUT_HEATMAP].min() >= 0.0 and out[OUT_HEATMAP].max() <= 1.0
    assert np.isfinite(out[OUT_ATTRIBUTION]).all() and out[OUT_ATTRIBUTION].shape[0] == 3
    probabilities = model.predict(images, verbose=0)
    np.testing.assert_allclose(out[OUT_PROBABILITIES], probabilities, rtol=1e-5, atol=1e-6)
    expected_class = [int(probabilities[0].argmax()), 0, 2]
    np.testing.assert_array_equal(out[OUT_CLASS_INDEX], expected_class)
    assert out[OUT_CLASS_INDEX].dtype == np.int32
    np.testing.assert_allclose(out[OUT_SCORE], probabilities[np.arange(3), expected_class], rtol=1e-5)


def test_attribution_shapes(functions, images):
    shapes = {m: _run(functions, m, images[:2], [-1, -1])[OUT_ATTRIBUTION].shape for m in ATTRIBUTION_METHODS}
    assert shapes == {
        "gradcam": (2, SIZE // 2, SIZE // 2),
        "occlusion": (2, SIZE, SIZE),
        "vanilla_gradients": (2, SIZE, SIZE, 3),
        "gradients_inputs": (2, SIZE, SIZE, 3),
        "smoothgrad": (2, SIZE, SIZE, 3),
        "integrated_gradients": (2, SIZE, SIZE, 3),
        "gradcam_pp": (2, SIZE, SIZE),
        "hirescam": (2, SIZE, SIZE),
        "layercam": (2, SIZE, SIZE),
    }


@pytest.fixture(scope="module")
def two_layers(model: keras.Model) -> GraphExplainer:
    """Activation layers c1 (16x16x6, grid 3x3 tiles) and c2, the Grad-CAM layer (8x8x8, grid 3x3 tiles)."""
    return GraphExplainer(model, "c2", activation_layers=["c1"])


def test_activations_layers_and_shapes(two_layers, explainer):
    assert two_layers.activation_layers == ("c1", "c2")  # the Grad-CAM layer is added, last
    assert two_layers.activation_shapes == ((16, 16, 6), (8, 8, 8))
    assert two_layers.grid_shapes == ((48, 48), (24, 24))
    assert explainer.activation_layers == ("c2",)  # default: just the Grad-CAM layer
    assert two_layers.signature_methods == EXPLAIN_METHODS and two_layers.methods == ATTRIBUTION_METHODS


def test_activations_are_the_layer_outputs_per_example(model, two_layers, images):
    out = {k: v.numpy() for k, v in two_layers.activations(images, [-1, 1, 2], [-1, 0, 1]).items()}
    assert set(out) == set(ACTIVATIONS_OUTPUTS)
    assert out[OUT_LAYER].tolist() == [1, 0, 1]
    assert out[OUT_LAYER_NAME].tolist() == [b"c2", b"c1", b"c2"]
    assert out[OUT_GRID].shape == (3, 48, 48) and out[OUT_ACTIVATIONS].shape == (3, 16 * 16 * 6)
    assert out[OUT_GRID_SHAPE].tolist() == [[24, 24], [48, 48], [24, 24]]
    assert out[OUT_ACTIVATION_SHAPE].tolist() == [[8, 8, 8], [16, 16, 6], [8, 8, 8]]
    probe = keras.Model(model.input, [model.get_layer("c1").output, model.get_layer("c2").output])
    c1, c2 = (t.numpy() for t in probe(images))
    for i, want in enumerate([c2[0], c1[1], c2[2]]):
        size = want.size
        np.testing.assert_allclose(out[OUT_ACTIVATIONS][i, :size].reshape(want.shape), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out[OUT_ACTIVATIONS][i, size:], 0.0)
        rows, cols = out[OUT_GRID_SHAPE][i]
        expected = activation_grid(tf.constant(want[None])).numpy()[0]
        np.testing.assert_allclose(out[OUT_GRID][i, :rows, :cols], expected, atol=1e-6)
        assert not out[OUT_GRID][i, rows:].any() and not out[OUT_GRID][i, :, cols:].any()
    probabilities = model.predict(images, verbose=0)
    np.testing.assert_allclose(out[OUT_PROBABILITIES], probabilities, rtol=1e-5, atol=1e-6)
    assert out[OUT_CLASS_INDEX].tolist() == [int(probabilities[0].argmax()), 1, 2]
    np.testing.assert_allclose(out[OUT_SCORE], probabilities[np.arange(3), out[OUT_CLASS_INDEX]], rtol=1e-5)


def test_activations_batch_equals_each_image_alone(two_layers, images):
    batched = two_layers.activations(images, [-1, -1, -1], [0, 1, -1])
    for i, layer in enumerate([0, 1, -1]):
        single = two_layers.activations(images[i : i + 1], [-1], [layer])
        for key in (OUT_GRID, OUT_ACTIVATIONS, OUT_GRID_SHAPE, OUT_ACTIVATION_SHAPE):
            np.testing.assert_allclose(batched[key][i], single[key][0], rtol=1e-5, atol=1e-6, err_msg=key)


def test_activations_layer_checks(model, two_layers, images):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"layer must be -1 \(the Grad-CAM layer\) or in \[0, 1\]"):
        two_layers.activations(images[:1], [-1], [2])
    with pytest.raises(tf.errors.InvalidArgumentError, match="layer must be >= -1"):
        two_layers.activations(images[:1], [-1], [-2])
    with pytest.raises(ValueError, match="activation layer 'nope' is not a top-level layer"):
        GraphExplainer(model, "c2", activation_layers=["nope"])
    with pytest.raises(ValueError, match="activation layer 'probs' must have a 4-D output"):
        GraphExplainer(model, "c2", activation_layers=["probs"])
    # without a Grad-CAM layer, -1 is the last listed layer
    only_c1 = GraphExplainer(model, None, activation_layers=["c1"])
    assert only_c1.signature_methods[-1] == "activations" and "gradcam" not in only_c1.signature_methods
    assert only_c1.activations(images[:1], [-1], [-1])[OUT_LAYER_NAME].numpy().tolist() == [b"c1"]


def test_class_minus_one_equals_the_predicted_class(functions, images):
    predicted = _run(functions, "vanilla_gradients", images, [-1, -1, -1])
    explicit = _run(functions, "vanilla_gradients", images, predicted[OUT_CLASS_INDEX])
    np.testing.assert_array_equal(predicted[OUT_ATTRIBUTION], explicit[OUT_ATTRIBUTION])


def test_gradients_inputs_is_gradient_times_pixels(functions, images):
    grads = _run(functions, "vanilla_gradients", images, [1, 1, 1])[OUT_ATTRIBUTION]
    gxi = _run(functions, "gradients_inputs", images, [1, 1, 1])[OUT_ATTRIBUTION]
    np.testing.assert_allclose(gxi, grads * images, rtol=1e-6)


def test_vanilla_gradient_matches_finite_difference(model, functions, images):
    grads = _run(functions, "vanilla_gradients", images[:1], [1])[OUT_ATTRIBUTION][0]
    y, x, c = np.unravel_index(np.abs(grads).argmax(), grads.shape)
    eps = 0.5
    up, down = images[:1].astype(np.float64).copy(), images[:1].astype(np.float64).copy()
    up[0, y, x, c] += eps
    down[0, y, x, c] -= eps
    numeric = (model(up.astype(np.float32))[0, 1] - model(down.astype(np.float32))[0, 1]).numpy() / (2 * eps)
    assert numeric == pytest.approx(grads[y, x, c], rel=0.05)


def test_occlusion_map_is_one_minus_probability_with_a_grey_patch(model, functions, images):
    # patch = stride = SIZE: a single position that greys the whole image
    out = _run(functions, "occlusion", images[:1], [2], patch_size=SIZE, stride=0)
    grey = np.full((1, SIZE, SIZE, 3), GREY_VALUE, np.float32)
    expected = 1.0 - float(model(grey)[0, 2])
    np.testing.assert_allclose(out[OUT_ATTRIBUTION][0], expected, rtol=1e-6)
    np.testing.assert_array_equal(out[OUT_HEATMAP][0], 0.0)  # a constant map normalises to zeros


def test_occlusion_grid_cell_greys_exactly_its_patch(model, functions, images):
    # stride 16 at 16 px: a 1x1 grid whose only patch greys rows 0-3, cols 0-3
    out = _run(functions, "occlusion", images[:1], [0], patch_size=4, stride=16)
    occluded = images[:1].copy()
    occluded[0, :4, :4] = GREY_VALUE
    expected = 1.0 - float(model(occluded)[0, 0])
    np.testing.assert_allclose(out[OUT_ATTRIBUTION][0], expected, rtol=1e-6)  # 1x1 grid -> constant map


def test_integrated_gradients_completeness(functions, model, images):
    out = _run(functions, "integrated_gradients", images[:2], [0, 1], n_steps=256)
    black = np.zeros_like(images[:2])
    gain = model(images[:2]).numpy()[[0, 1], [0, 1]] - model(black).numpy()[[0, 1], [0, 1]]
    sums = out[OUT_ATTRIBUTION].reshape(2, -1).sum(axis=1)
    np.testing.assert_allclose(sums, gain, rtol=0.05, atol=2e-3)


def test_integrated_gradients_one_step_is_gradient_of_probability_times_input(functions, model, images):
    out = _run(functions, "integrated_gradients", images[:1], [0], n_steps=1)
    x = tf.constant(images[:1])
    with tf.GradientTape() as tape:
        tape.watch(x)
        p = model(x)[:, 0]
    expected = (tape.gradient(p, x) * x).numpy()
    np.testing.assert_allclose(out[OUT_ATTRIBUTION], expected, rtol=1e-4, atol=1e-9)


def test_smoothgrad_is_reproducible_by_seed(functions, images):
    a = _run(functions, "smoothgrad", images[:2], [0, 1], num_samples=3, noise=20.0, seed=[4, 4])
    b = _run(functions, "smoothgrad", images[:2], [0, 1], num_samples=3, noise=20.0, seed=[4, 4])
    c = _run(functions, "smoothgrad", images[:2], [0, 1], num_samples=3, noise=20.0, seed=[4, 5])
    np.testing.assert_array_equal(a[OUT_ATTRIBUTION], b[OUT_ATTRIBUTION])
    np.testing.assert_array_equal(a[OUT_ATTRIBUTION][0], c[OUT_ATTRIBUTION][0])
    assert not np.allclose(a[OUT_ATTRIBUTION][1], c[OUT_ATTRIBUTION][1])


def test_smoothgrad_without_noise_is_gradient_of_log_probability(functions, model, images):
    out = _run(functions, "smoothgrad", images[:1], [2], num_samples=4, noise=0.0)
    x = tf.constant(images[:1])
    with tf.GradientTape() as tape:
        tape.watch(x)
        log_p = tf.math.log(model(x)[:, 2])
    np.testing.assert_allclose(out[OUT_ATTRIBUTION], tape.gradient(log_p, x).numpy(), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("gradcam", [{"use_guided_grads": True}, {"use_guided_grads": False}, {"use_guided_grads": True}]),
        (
            "occlusion",
            [{"patch_size": 4, "stride": 0}, {"patch_size": 0, "stride": 3}, {"patch_size": 5, "stride": 2}],
        ),
        (
            "smoothgrad",
            [
                {"num_samples": 2, "noise": 5.0, "seed": 1},
                {"num_samples": 7, "noise": 0.5, "seed": 2},
                {"num_samples": 1, "noise": 30.0, "seed": 3},
            ],
        ),
        ("integrated_gradients", [{"n_steps": 3}, {"n_steps": 12}, {"n_steps": 1}]),
    ],
)
def test_parameters_are_per_example(explainer, images, method, params):
    """A batch with different parameters per image equals each image explained on its own."""
    classes = np.array([0, 1, -1], np.int32)
    batched_params = {k: np.array([p[k] for p in params]) for k in params[0]}
    batched = explainer.explain(method, images, classes, **batched_params)
    for i in range(3):
        single = explainer.explain(method, images[i : i + 1], classes[i : i + 1], **params[i])
        for key in (OUT_ATTRIBUTION, OUT_HEATMAP, OUT_CLASS_INDEX):
            np.testing.assert_allclose(batched[key][i], single[key][0], rtol=1e-4, atol=1e-7, err_msg=key)


def test_scalar_parameters_are_broadcast(explainer, images):
    a = explainer.explain("occlusion", images[:2], [0, 1], patch_size=4, stride=0)
    b = explainer.explain("occlusion", images[:2], [0, 1], patch_size=[4, 4], stride=[0, 0])
    np.testing.assert_array_equal(a[OUT_ATTRIBUTION].numpy(), b[OUT_ATTRIBUTION].numpy())


def test_chunking_does_not_change_the_maps(model, explainer, images):
    wide = GraphExplainer(model, "c2", ExplainerConfig(chunk_size=64))
    for method, params in (("occlusion", {"patch_size": 3, "stride": 0}), ("integrated_gradients", {"n_steps": 9})):
        a = explainer.explain(method, images, [0, 1, 2], **params)[OUT_ATTRIBUTION].numpy()
        b = wide.explain(method, images, [0, 1, 2], **params)[OUT_ATTRIBUTION].numpy()
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("method", "class_index", "override", "message"),
    [
        ("vanilla_gradients", [0, 3, 0], {}, "class_index must be -1"),
        ("vanilla_gradients", [0, -2, 0], {}, "class_index must be -1"),
        ("smoothgrad", [0, 0, 0], {"num_samples": 0}, "num_samples must be >= 1"),
        ("smoothgrad", [0, 0, 0], {"noise": 300.0}, "noise must be <= 255"),
        ("integrated_gradients", [0, 0, 0], {"n_steps": 513}, "n_steps must be <= 512"),
        ("occlusion", [0, 0, 0], {"patch_size": -1}, "patch_size must be >= 0"),
    ],
)
def test_out_of_range_values_fail_with_a_clear_message(functions, images, method, class_index, override, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _run(functions, method, images, class_index, **override)


def test_too_many_occlusion_positions_fail_fast(model, images):
    explainer = GraphExplainer(model, "c2", ExplainerConfig(max_occlusion_positions=100))
    with pytest.raises(tf.errors.InvalidArgumentError, match="more than 100 patch positions"):
        explainer.explain("occlusion", images[:1], [0], patch_size=1, stride=1)


def test_parameter_count_must_match_the_batch(explainer, images):
    with pytest.raises(tf.errors.InvalidArgumentError, match="one value per image"):
        explainer.explain("integrated_gradients", images, [0, 0, 0], n_steps=[2, 3])
    with pytest.raises(tf.errors.InvalidArgumentError, match="class_index must have one value per image"):
        explainer.explain("vanilla_gradients", images, [0, 0])


def test_missing_parameters_take_their_defaults_and_unknown_ones_are_type_errors(explainer, images):
    partial = explainer.explain("smoothgrad", images, [0, 0, 0], num_samples=2, noise=1.0)
    full = explainer.explain("smoothgrad", images, [0, 0, 0], num_samples=2, noise=1.0, seed=0)
    np.testing.assert_array_equal(partial[OUT_ATTRIBUTION].numpy(), full[OUT_ATTRIBUTION].numpy())
    with pytest.raises(TypeError, match="unexpected"):
        explainer.explain("vanilla_gradients", images, [0, 0, 0], n_steps=3)
    with pytest.raises(ValueError, match="unknown method"):
        explainer.explain("lime", images, [0, 0, 0])


def test_wrong_image_shape_is_rejected(explainer):
    with pytest.raises(ValueError, match=r"images must be \[B,16,16,3\]"):
        explainer.explain("vanilla_gradients", np.zeros((1, 8, 8, 3), np.float32), [0])


def test_model_checks(model):
    with pytest.raises(ValueError, match="functional"):
        GraphExplainer(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")]), None)
    with pytest.raises(ValueError, match="not a top-level layer"):
        GraphExplainer(model, "nope")
    with pytest.raises(ValueError, match="4-D conv activation"):
        GraphExplainer(model, "probs")


def test_without_gradcam_layer_the_other_methods_work(model, images):
    explainer = GraphExplainer(model, None)
    assert explainer.methods == tuple(m for m in ATTRIBUTION_METHODS if m not in CAM_METHODS)
    assert explainer.signature_methods == explainer.methods and explainer.activation_layers == ()
    with pytest.raises(ValueError, match="no Grad-CAM layer"):
        explainer.gradcam(images, [0, 0, 0], True)
    with pytest.raises(ValueError, match="no activation layer"):
        explainer.activations(images, [0, 0, 0], -1)
    assert explainer.vanilla_gradients(images, [0, 0, 0])[OUT_HEATMAP].shape == (3, SIZE, SIZE)


def test_log_probabilities_come_from_logits_for_each_softmax_layout(model, images):
    """Dense(softmax), Dense + Activation('softmax') and Dense + Softmax() give the same SmoothGrad (computed from
    the logits, stable), and the same as a model whose output layer is not a softmax (log of the output)."""
    features = keras.Model(model.input, model.get_layer("probs").input)
    weights = model.get_layer("probs").get_weights()
    results = []
    for tail in ("activation", "softmax_layer", "lambda"):
        dense = keras.layers.Dense(NUM_CLASSES)
        logits = dense(features.output)
        if tail == "activation":
            out = keras.layers.Activation("softmax")(logits)
        elif tail == "softmax_layer":
            out = keras.layers.Softmax()(logits)
        else:
            out = keras.layers.Lambda(lambda t: tf.nn.softmax(t))(logits)
        variant = keras.Model(features.input, out)
        dense.set_weights(weights)
        results.append(GraphExplainer(variant, None).smoothgrad(images, [0, 1, 2], 2, 3.0, 7)[OUT_ATTRIBUTION].numpy())
    reference = GraphExplainer(model, None).smoothgrad(images, [0, 1, 2], 2, 3.0, 7)[OUT_ATTRIBUTION].numpy()
    for got in results:
        np.testing.assert_allclose(got, reference, rtol=1e-3, atol=1e-8)


# ---------------------------------------------------------------------------------------------------------------
# Export and the TF Serving execution path


@pytest.mark.slow
def test_every_method_runs_in_a_graph_session_after_export(tmp_path, model, explainer, functions, images):
    from serving.session import load_session_model

    archive = keras.export.ExportArchive()
    archive.track(model)
    for method in EXPLAIN_METHODS:
        archive.add_endpoint(
            explain_signature(method), explainer.function(method), input_signature=explainer.input_signature(method)
        )
    archive.write_out(str(tmp_path / "1"), verbose=False)
    with load_session_model(tmp_path / "1") as session:
        for method in EXPLAIN_METHODS:
            params = _params(method, 3)
            feeds = {"images": images, "class_index": np.array([-1, 0, 2], np.int32)}
            feeds.update({p.name: v for p, v in zip(METHOD_PARAMS[method], params, strict=True)})
            got = session.run(explain_signature(method), feeds)
            want = _run(functions, method, images, [-1, 0, 2])
            assert set(got) == set(want)
            for key in want:
                if want[key].dtype.kind in "OSU":  # layer_name
                    np.testing.assert_array_equal(got[key], want[key], err_msg=f"{method}/{key}")
                else:
                    np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-7, err_msg=f"{method}/{key}")
        with pytest.raises(tf.errors.InvalidArgumentError, match="n_steps must be >= 1"):
            session.run(
                explain_signature("integrated_gradients"),
                {"images": images[:1], "class_index": np.array([0], np.int32), "n_steps": np.array([0], np.int32)},
            )
