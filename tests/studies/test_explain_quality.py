"""Explanation quality: the localization set, the pointing game and the deletion metric (unit tests on hand-made
inputs), and the study itself on real Tux Paint photos (slow): Grad-CAM's pointing game >= 0.9 and every method's
deletion curve below the random-order one (Grad-CAM's and occlusion's well below).
Full figures: docs/explanations.md (``python -m studies.localization``).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from glimpse_wire.contract import ATTRIBUTION_METHODS
from studies.localization import (
    GRADCAM_LAYER,
    QUICK_CONFIG,
    LocalizationConfig,
    cached_localizer,
    deletion_curves,
    evaluate_methods,
    load_cutouts,
    make_localization_set,
    pointing_game,
)


def test_pointing_game_checks_the_peak_against_the_box():
    maps = np.zeros((3, 8, 8))
    maps[0, 5, 2] = 1.0  # inside (4..6, 1..3)
    maps[1, 7, 2] = 1.0  # below: bottom is exclusive
    maps[2, 4, 3] = 1.0  # right edge is exclusive
    boxes = np.array([[4, 1, 7, 3]] * 3)
    np.testing.assert_array_equal(pointing_game(maps, boxes), [True, False, False])


def test_pointing_game_takes_a_border_plateau_at_its_inner_end():
    """An upsampled edge cell makes a plateau from the border to the cell centre; the peak is the centre, not the
    first maximum at the border (which would miss this box)."""
    maps = np.zeros((1, 8, 8))
    maps[0, 0:3, 4] = 1.0  # plateau along rows 0-2 of column 4
    assert pointing_game(maps, np.array([[2, 3, 6, 6]]))[0]
    assert not pointing_game(maps, np.array([[0, 0, 1, 8]]))[0]


def _brightness_model(size: int) -> keras.Model:
    """p(class 0) = mean of (x - 127.5) / 127.5: 1 for a white image, falling linearly as pixels turn grey."""
    inputs = keras.Input((size, size, 3))
    m = keras.layers.Lambda(lambda x: keras.ops.mean((x - 127.5) / 127.5, axis=(1, 2, 3), keepdims=False))(inputs)
    m = keras.layers.Reshape((1,))(m)
    outputs = keras.layers.Concatenate()([m, 1.0 - m])
    return keras.Model(inputs, outputs)


def test_deletion_curve_greys_the_top_ranked_pixels_in_equal_steps():
    size, steps = 8, 4
    model = _brightness_model(size)
    images = np.full((2, size, size, 3), 255.0, np.float32)
    maps = np.random.default_rng(0).random((2, size, size))
    curves = deletion_curves(model, images, np.array([0, 1]), maps, steps, seed=0)
    np.testing.assert_allclose(curves[0], [1.0, 0.75, 0.5, 0.25, 0.0], atol=1e-6)
    np.testing.assert_allclose(curves[1], [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)


def test_deletion_curve_follows_the_map_order():
    """Half the image is white (evidence), half grey: a map ranking the white half first drops the probability
    to 0 by 50% deletion; the reverse order keeps it flat for the first half."""
    size, steps = 8, 4
    model = _brightness_model(size)
    image = np.full((1, size, size, 3), 127.5, np.float32)
    image[0, :, : size // 2] = 255.0
    good = np.zeros((1, size, size))
    good[0, :, : size // 2] = 1.0
    np.testing.assert_allclose(deletion_curves(model, image, np.array([0]), good, steps, 0)[0], [0.5, 0.25, 0, 0, 0])
    np.testing.assert_allclose(
        deletion_curves(model, image, np.array([0]), 1.0 - good, steps, 0)[0], [0.5, 0.5, 0.5, 0.25, 0]
    )


@pytest.fixture(scope="module")
def cutouts():
    return load_cutouts(("bird", "fruit"))


def test_localization_set_is_seeded_and_boxes_fit(cutouts):
    photos = {name: [rgba for _, rgba in items] for name, items in cutouts.items()}
    a = make_localization_set(photos, 6, 48, seed=3, scale=(0.4, 0.5))
    b = make_localization_set(photos, 6, 48, seed=3, scale=(0.4, 0.5))
    c = make_localization_set(photos, 6, 48, seed=4, scale=(0.4, 0.5))
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (12, 48, 48, 3) and a.images.dtype == np.uint8
    assert np.bincount(a.labels).tolist() == [6, 6] and a.class_names == ("bird", "fruit")
    top, left, bottom, right = a.boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (bottom <= 48).all() and (right <= 48).all()
    assert (np.maximum(bottom - top, right - left) <= round(0.5 * 48)).all()
    assert (np.maximum(bottom - top, right - left) >= 0.3 * 48).all()


def test_the_box_is_exactly_the_pasted_object():
    """A red opaque cut-out (with a transparent margin) on the grey background: every pixel inside the box is red,
    none outside is (beyond the half-transparent fringe that resampling leaves)."""
    rgba = np.zeros((50, 40, 4), np.uint8)
    rgba[5:45, 8:32] = (255, 0, 0, 255)
    data = make_localization_set({"red": [rgba], "also_red": [rgba]}, 5, 64, seed=1, scale=(0.3, 0.6))
    for image, (top, left, bottom, right) in zip(data.images.astype(int), data.boxes, strict=True):
        redness = image[..., 0] - image[..., 1]
        inside = np.zeros(redness.shape, bool)
        inside[top:bottom, left:right] = True
        assert redness[inside].min() > 100  # edge pixels are blends, but mostly red (alpha > 0.5)
        # outside: background (grey plus noise), except the cut-out's resampled fringe, where alpha <= 0.5
        assert redness[~inside].max() <= 0.5 * 255 + 3 * 4
        assert np.percentile(redness[~inside], 98) < 20


def test_config_validation():
    with pytest.raises(ValueError, match="backbone"):
        LocalizationConfig(backbone="vgg")
    with pytest.raises(ValueError, match="classes"):
        LocalizationConfig(classes=("mammal", "dragon"))
    with pytest.raises(ValueError, match="min_scale"):
        LocalizationConfig(min_scale=0.8, max_scale=0.5)


@pytest.mark.slow
def test_gradcam_points_at_the_object_and_every_method_beats_random_deletion():
    model, _, test = cached_localizer(QUICK_CONFIG)
    from training.explain import GraphExplainer

    accuracy = float((model.predict(test.images.astype(np.float32), verbose=0).argmax(1) == test.labels).mean())
    assert accuracy >= 0.6  # 4 classes, unseen photos: chance is 0.25
    # Occlusion with 24-px patches (a 4x4 grid instead of the default 12x12) keeps the test short.
    pointing, deletion, random_auc, _ = evaluate_methods(
        GraphExplainer(model, GRADCAM_LAYER),
        test,
        deletion_steps=8,
        seed=QUICK_CONFIG.seed,
        params={"occlusion": {"patch_size": 24}},
    )
    assert set(pointing) == set(ATTRIBUTION_METHODS)
    assert pointing["gradcam"] >= 0.9, pointing
    top, left, bottom, right = test.boxes.T
    chance = float(((bottom - top) * (right - left)).mean()) / QUICK_CONFIG.image_size**2
    for method in ATTRIBUTION_METHODS:
        assert pointing[method] > chance + 0.3, (method, pointing[method], chance)
        assert deletion[method] < random_auc, (method, deletion[method], random_auc)
    # the two region methods remove the evidence much faster than a random order (about 0.55-0.6 x here)
    assert deletion["gradcam"] < 0.75 * random_auc and deletion["occlusion"] < 0.75 * random_auc


def test_quick_config_is_the_default_study_made_smaller():
    """The test above measures the same model and set as the documented study, only with fewer images."""
    default = LocalizationConfig()
    smaller = dataclasses.replace(
        default, train_per_class=QUICK_CONFIG.train_per_class, test_per_class=QUICK_CONFIG.test_per_class
    )
    assert smaller == QUICK_CONFIG
