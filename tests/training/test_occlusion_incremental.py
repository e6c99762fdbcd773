"""Exact incremental occlusion (training.explain.incremental) and occlusion's modes in the graph.

The engine's outputs are compared with the model's own forward pass on the occluded copies, on every model family
``glimpse train`` builds and on a model made of the layer kinds those do not use (SAME max pooling, valid average
pooling, dilated and strided convs, concatenation, multiplication). The method is compared with tf-explain's
OcclusionSensitivity on EfficientNet-Lite0 with its bundled ImageNet classifier at 224 (slow), and its adaptive mode
with the explain API's NumPy implementation of the same rule.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from explain_api.occlusion import adaptive_occlusion, occluded_copies
from explain_api.occlusion import occlusion_geometry as numpy_geometry
from glimpse_wire.contract import OCCLUSION_ENGINES, OCCLUSION_MODES, OUT_ATTRIBUTION, OUT_CLASS_INDEX
from glimpse_wire.contract import OUT_EVALUATED_POSITIONS as EVALUATED
from glimpse_wire.contract import OUT_OCCLUSION_ENGINE as OCCLUSION_ENGINE
from training.explain import ExplainerConfig, GraphExplainer
from training.explain.calibrate import CANDIDATES
from training.explain.incremental import IncrementalOcclusion, plan, supports_incremental
from training.explain.occlusion import GREY_VALUE, occlusion_engine
from training.models import build_model

EXACT, NAIVE, ADAPTIVE = (OCCLUSION_MODES.index(m) for m in ("exact", "naive", "adaptive"))


def _mixed_layers_model(size: int = 40) -> keras.Model:
    """Layer kinds the built-in models do not use, each reached by the occluded window."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    a = keras.layers.Conv2D(8, 5, strides=2, padding="same", activation="relu")(x)  # 20x20, uneven SAME padding
    b = keras.layers.Conv2D(8, 3, dilation_rate=2, padding="same")(x)
    b = keras.layers.MaxPooling2D(3, strides=2, padding="same")(b)  # 20x20, pads with -inf
    x = keras.layers.Concatenate()([a, b])
    g = keras.layers.Conv2D(16, 1, activation="sigmoid")(x)
    x = keras.layers.Multiply()([x, g])
    x = keras.layers.ZeroPadding2D(((1, 0), (0, 1)))(x)
    x = keras.layers.DepthwiseConv2D(2, strides=2, padding="valid")(x)  # 10x10
    x = keras.layers.AveragePooling2D(2)(x)  # 5x5
    x = keras.layers.Conv2D(6, 3, padding="valid", activation="elu")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _random_head(model: keras.Model) -> keras.Model:
    """``model`` with random Dense weights: an untrained head outputs uniform probabilities, which would compare
    equal whatever the engine computed."""
    rng = np.random.default_rng(5)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
    return model


def _truncated(model: keras.Model, layer: str) -> keras.Model:
    """The model up to ``layer`` (a 4-D map): every activation value is compared, not just the probabilities."""
    return keras.Model(model.input, model.get_layer(layer).output)


def _models() -> dict[str, tuple[keras.Model, int]]:
    """name -> (model, its input side), built once (parametrised tests share them)."""
    if not _MODELS:
        scratch, _ = build_model("scratch", 3, image_size=32, seed=1)
        scratch_bn, _ = build_model("scratch_bn", 3, image_size=28, channels=1, seed=1)
        mobilenet = _random_head(build_model("mobilenet_v2", 3, image_size=64, weights="none", seed=1)[0])
        lite0, _ = build_model("efficientnet_lite0", 3, image_size=64, weights="imagenet", seed=1)
        resnet, _ = build_model("resnet50", 3, image_size=64, weights="none", seed=1)
        _MODELS.update(
            scratch=(scratch, 32),
            scratch_bn=(scratch_bn, 28),
            mobilenet_v2_block_6=(_truncated(mobilenet, "block_6_project_BN"), 64),
            mobilenet_v2=(mobilenet, 64),
            lite0_top=(_truncated(lite0, "top_activation"), 64),
            resnet50_stage3=(_truncated(resnet, "conv3_block4_out"), 64),
            mixed=(_mixed_layers_model(), 40),
        )
    return _MODELS


_MODELS: dict[str, tuple[keras.Model, int]] = {}


def _copies(images: np.ndarray, ids, tops, lefts, patches) -> np.ndarray:
    out = images[np.asarray(ids)].copy()
    for copy, top, left, patch in zip(out, tops, lefts, patches, strict=True):
        copy[top : top + patch, left : left + patch] = GREY_VALUE
    return out


@pytest.mark.parametrize(
    "name",
    ["scratch", "scratch_bn", "mobilenet_v2_block_6", "mobilenet_v2", "lite0_top", "resnet50_stage3", "mixed"],
)
def test_engine_equals_whole_forward_passes(name):
    """Two images, patches of three sizes in one pass (one cut at the border, overlapping positions): every output
    value of the engine equals the model's on the occluded copies."""
    model, size = _models()[name]
    channels = int(model.input.shape[-1])
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, channels)).astype(np.float32)
    patch = max(2, size // 6)
    ids = [0, 0, 1, 1, 0, 1, 1]
    tops = [0, size // 3, size - patch // 2, 3, size // 2, 0, size - patch]
    lefts = [0, size // 4, 5, size - patch // 2, size // 2 + 1, size - patch, 1]
    patches = [patch, patch, patch, patch - 1, patch + 2, 1, patch]
    engine = IncrementalOcclusion(model)

    @tf.function
    def run(images, ids, tops, lefts, patches):
        return engine.occluded(engine.base(images), ids, tops, lefts, patches, GREY_VALUE)

    args = [tf.constant(v, tf.int32) for v in (ids, tops, lefts, patches)]
    ours = run(tf.constant(images), *args).numpy()
    theirs = model(_copies(images, ids, tops, lefts, patches), training=False).numpy()
    assert ours.shape == theirs.shape
    assert np.ptp(theirs) > 0, "degenerate reference"
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * max(1.0, float(np.abs(theirs).max())))


def test_plan_saves_work_on_real_backbones_and_nothing_on_a_dense_first_layer():
    models = _models()
    for name in ("mobilenet_v2", "scratch", "mixed"):
        model, size = models[name]
        found = plan(model, size // 8, size // 8)
        assert found.incremental_layers > 0
        assert 0 < found.macs_fraction < 1, name
    flat = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    dense_first = keras.Model(flat.inputs, flat.outputs)
    assert supports_incremental(dense_first)[0] is False
    with pytest.raises(ValueError, match="does not apply"):
        IncrementalOcclusion(dense_first)


def test_a_lambda_layer_falls_back_and_says_which():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="doubling")(inputs)
    x = keras.layers.Conv2D(4, 3)(x)
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    ok, reason = supports_incremental(keras.Model(inputs, outputs))
    assert not ok and "doubling" in reason


# ----------------------------------------------------------------------------------------------------------------
# The method: modes, parity, the measured engine


@pytest.fixture(scope="module")
def small_mobilenet() -> tuple[keras.Model, np.ndarray]:
    model, _ = _models()["mobilenet_v2"]
    images = np.random.default_rng(1).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    return model, images


def _explainer(model: keras.Model, engine: str) -> GraphExplainer:
    return GraphExplainer(model, None, ExplainerConfig(chunk_size=8, occlusion_engine=engine))


@pytest.fixture(scope="module")
def occlusion_fn(small_mobilenet):
    """The traced occlusion signature function of the small MobileNetV2 through the incremental engine, called with
    per-image lists (traced once for the module)."""
    model, _ = small_mobilenet
    explainer = _explainer(model, "incremental")
    assert occlusion_engine(explainer._model).engine == "incremental"
    function = explainer.function("occlusion")

    def run(images, patch, stride, mode, class_index=-1):
        n = len(images)
        per_image = [np.broadcast_to(np.asarray(v, np.int32), (n,)) for v in (class_index, patch, stride, mode)]
        return function(np.asarray(images, np.float32), *per_image)

    return run


@pytest.mark.parametrize(("patch", "stride"), [(8, 0), (11, 0), (12, 5)])
def test_exact_mode_through_the_engine_equals_naive_mode(small_mobilenet, occlusion_fn, patch, stride):
    _, images = small_mobilenet
    exact, naive = occlusion_fn(images, patch, stride, EXACT), occlusion_fn(images, patch, stride, NAIVE)
    np.testing.assert_array_equal(exact[OUT_CLASS_INDEX].numpy(), naive[OUT_CLASS_INDEX].numpy())
    assert np.abs(exact[OUT_ATTRIBUTION].numpy() - naive[OUT_ATTRIBUTION].numpy()).max() <= 1e-5
    assert exact[OCCLUSION_ENGINE].numpy().tolist() == [OCCLUSION_ENGINES.index("incremental")] * len(images)
    assert naive[OCCLUSION_ENGINE].numpy().tolist() == [OCCLUSION_ENGINES.index("naive")] * len(images)


def test_modes_differ_per_image_in_one_batch(small_mobilenet, occlusion_fn):
    """exact, naive and adaptive in one request: each image gets what it asked for, and says how many positions ran."""
    _, images = small_mobilenet
    modes = [EXACT, NAIVE, ADAPTIVE]
    mixed = occlusion_fn(images, 8, 0, modes)
    for i, mode in enumerate(modes):
        alone = occlusion_fn(images[i : i + 1], 8, 0, mode)[OUT_ATTRIBUTION].numpy()[0]
        assert np.abs(mixed[OUT_ATTRIBUTION].numpy()[i] - alone).max() <= 1e-5
    # an 8x8 grid: 64 positions; adaptive: the 16 coarse ones and ceil(48 / 4) = 12 refined
    assert mixed[EVALUATED].numpy().tolist() == [64, 64, 28]


@pytest.mark.parametrize(("patch", "stride"), [(8, 0), (9, 0), (6, 5), (16, 0)])
def test_adaptive_in_the_graph_equals_the_black_box_rule(small_mobilenet, occlusion_fn, patch, stride):
    """The graph's adaptive map and explain_api.occlusion's (the same rule in NumPy, fed the model's scores) agree;
    both evaluate the same cells, so only float rounding separates them."""
    model, images = small_mobilenet
    ours = occlusion_fn(images[:2], patch, stride, ADAPTIVE)
    for i, image in enumerate(images[:2]):
        target = int(ours[OUT_CLASS_INDEX][i])
        grid = numpy_geometry(64, 64, patch, stride)

        def scores(cells, image=image, grid=grid, target=target):
            copies = occluded_copies(image, grid, [grid.position(c) for c in cells])
            return model(copies, training=False).numpy()[:, target]

        theirs = adaptive_occlusion(grid, scores)
        assert np.abs(ours[OUT_ATTRIBUTION].numpy()[i] - theirs.attribution()).max() <= 1e-5
        assert int(ours[EVALUATED][i]) == theirs.count


def test_engine_choice_is_measured_and_recorded(small_mobilenet):
    model, _ = small_mobilenet
    choice = occlusion_engine(GraphExplainer(model, None, ExplainerConfig(chunk_size=8))._model)
    assert choice.engine in ("incremental", "naive")
    assert choice.naive_s > 0 and choice.incremental_s > 0
    assert (choice.engine == "incremental") == (choice.incremental_s < choice.naive_s)
    assert 0 < choice.macs_fraction < 1
    # a chunk size the config fixes is the engine's too
    assert choice.chunk_size == (8 if choice.engine == "incremental" else None)
    forced = occlusion_engine(_explainer(model, "naive")._model)
    assert forced.engine == "naive" and "configured" in forced.reason and forced.chunk_size is None


def test_engine_measures_its_own_copies_per_pass_and_stays_exact(small_mobilenet):
    """Without a configured chunk size the engine's copies per pass are measured (one of the calibration's
    candidates, at most the default grid's 64 positions) and recorded; a grid that is not a multiple of it (10x10
    positions at patch 7) still gives the naive map."""
    model, images = small_mobilenet
    explainer = GraphExplainer(model, None, ExplainerConfig(occlusion_engine="incremental"))
    choice = explainer.occlusion_engine
    assert choice.chunk_size in [c for c in CANDIDATES if c <= 64]
    assert choice.as_dict()["chunk_size"] == choice.chunk_size
    assert f"{choice.chunk_size} copies per pass" in choice.reason
    function = explainer.function("occlusion")
    n = len(images)

    def run(mode: int) -> np.ndarray:
        params = [np.full([n], v, np.int32) for v in (-1, 7, 0, mode)]
        return function(images, *params)[OUT_ATTRIBUTION].numpy()

    assert np.abs(run(EXACT) - run(NAIVE)).max() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("patch", [16, 28])
def test_exact_occlusion_matches_tf_explain_on_lite0_imagenet_224(patch):
    """The issue's yardstick: EfficientNet-Lite0 at 224 with its bundled ImageNet classifier (a real model), a real
    photo, tf-explain's OcclusionSensitivity score map: identical within 1e-5, through the incremental engine."""
    from skimage import data
    from tf_explain.core.occlusion_sensitivity import OcclusionSensitivity

    from training.efficientnet_lite import build_efficientnet_lite0

    model = build_efficientnet_lite0((224, 224, 3), include_top=True, weights="imagenet")
    photo = tf.image.resize_with_pad(data.chelsea().astype(np.float32), 224, 224).numpy()
    explainer = GraphExplainer(model, None, ExplainerConfig(chunk_size=16, occlusion_engine="incremental"))
    ours = explainer.function("occlusion")(photo[None], [-1], [patch], [0], [EXACT])
    target = int(ours[OUT_CLASS_INDEX][0])
    theirs = OcclusionSensitivity().get_sensitivity_map(model, photo, target, patch)
    assert np.ptp(theirs) > 0.01, "degenerate reference map"
    assert np.abs(ours[OUT_ATTRIBUTION].numpy()[0] - theirs).max() <= 1e-5


@pytest.mark.slow
def test_adaptive_quality_on_tux_paint_test_photos_does_not_regress():
    """Adaptive against exact on the first 8 Tux Paint test photos, Lite0 ImageNet 224, patch 28. Measured: SSIM 0.897,
    top-5% IoU 0.538 (docs/explanations.md; the issue's goals of 0.9 and 0.8 are not met). The floors sit below the
    measurement and well above what a wrong grid gives: the exact grid shifted by one cell scores SSIM 0.66 and IoU
    0.06 on the validation photos."""
    from studies.occlusion import adaptive_quality, lite0_imagenet, tuxpaint_test_photos

    quality = adaptive_quality(lite0_imagenet(), tuxpaint_test_photos(limit=8), 28).summary()
    assert quality["ssim_mean"] >= 0.85, quality
    assert quality["iou_mean"] >= 0.45, quality
