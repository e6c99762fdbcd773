"""The black-box occlusion maths (explain_api.occlusion) against hand-computed values, and its resize against
TensorFlow's (the in-graph signature's own ``tf.image.resize``)."""

from __future__ import annotations

import numpy as np
import pytest

from explain_api.occlusion import (
    GREY_VALUE,
    occluded_copies,
    occlusion_geometry,
    occlusion_map,
    occlusion_patches,
    resize_bilinear,
)


def test_geometry_defaults_and_grid_size() -> None:
    grid = occlusion_geometry(224, 160)  # patch 0 = min(H, W) // 8, stride 0 = the patch
    assert (grid.patch, grid.stride, grid.rows, grid.cols, grid.positions) == (20, 20, 12, 8, 96)
    grid = occlusion_geometry(10, 10, 4, 3)  # starts 0, 3, 6, 9 < 10 on each axis: ceil(10 / 3) = 4
    assert (grid.rows, grid.cols) == (4, 4)
    assert occlusion_geometry(5, 5, 8, 0).positions == 1  # a patch larger than the input: one position
    assert occlusion_geometry(7, 7, 1, 1).positions == 49
    with pytest.raises(ValueError):
        occlusion_geometry(0, 5)


def test_patches_start_on_the_stride_grid_and_are_cut_at_the_border() -> None:
    assert occlusion_patches(8, 8, 4, 4) == [(0, 0, 4, 4), (0, 4, 4, 8), (4, 0, 8, 4), (4, 4, 8, 8)]
    patches = occlusion_patches(10, 10, 4, 3)
    assert len(patches) == 16 and patches[3] == (0, 9, 4, 10) and patches[-1] == (9, 9, 10, 10)
    patches = occlusion_patches(11, 9, 4, 4)  # rows start 0, 4, 8 (8..11 cut to 3); columns 0, 4, 8 (8..9 cut to 1)
    assert [p[:2] for p in patches] == [(t, left) for t in (0, 4, 8) for left in (0, 4, 8)]
    assert patches[-1] == (8, 8, 11, 9)
    covered = np.zeros((11, 9), dtype=bool)
    for t, left, b, r in patches:
        covered[t:b, left:r] = True
    assert covered.all()
    assert occlusion_patches(4, 4, 8, 8) == [(0, 0, 4, 4)]
    # A stride larger than the patch leaves gaps, as in the graph: nothing is added to close them.
    assert occlusion_patches(6, 6, 2, 4) == [(0, 0, 2, 2), (0, 4, 2, 6), (4, 0, 6, 2), (4, 4, 6, 6)]


def test_occluded_copies_grey_one_patch_each() -> None:
    pixels = np.full((6, 6, 3), 10.0, dtype=np.float32)
    grid = occlusion_geometry(6, 6, 4, 4)
    copies = occluded_copies(pixels, grid)
    assert copies.shape == (4, 6, 6, 3) and copies.dtype == np.float32
    assert (copies[0, :4, :4] == GREY_VALUE).all() and (copies[0, 4:] == 10).all() and (copies[0, :, 4:] == 10).all()
    assert (copies[3, 4:, 4:] == GREY_VALUE).all() and (copies[3, :4] == 10).all()
    assert np.array_equal(occluded_copies(pixels, grid, slice(1, 3)), copies[1:3])
    assert (pixels == 10).all()  # the original is untouched


def test_map_is_one_minus_the_score_resized_with_half_pixel_centres() -> None:
    grid = occlusion_geometry(4, 4, 2, 2)
    m = occlusion_map([0.1, 0.9, 0.9, 0.5], grid)  # grid of 1 - p: [[0.9, 0.1], [0.1, 0.5]]
    # Output pixel i samples the grid at (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 (clamped at the edges).
    expected = np.array(
        [
            [0.9, 0.7, 0.3, 0.1],
            [0.7, 0.575, 0.325, 0.2],
            [0.3, 0.325, 0.375, 0.4],
            [0.1, 0.2, 0.4, 0.5],
        ],
        dtype=np.float32,
    )
    assert m.dtype == np.float32 and np.allclose(m, expected, atol=1e-6)
    assert np.allclose(occlusion_map([0.25], occlusion_geometry(3, 5, 8)), 0.75)  # one position: a flat map
    with pytest.raises(ValueError, match="4 scores"):
        occlusion_map([0.1, 0.2, 0.3, 0.4], occlusion_geometry(6, 6, 2, 2))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("rows", "cols", "height", "width"),
    [(4, 4, 32, 32), (3, 5, 32, 48), (7, 6, 224, 160), (12, 8, 224, 160), (5, 5, 5, 5), (1, 3, 9, 9)],
)
def test_resize_matches_tensorflow(rows: int, cols: int, height: int, width: int) -> None:
    tf = pytest.importorskip("tensorflow")
    values = np.random.default_rng(rows * 100 + cols).random((rows, cols), dtype=np.float32)
    ours = resize_bilinear(values, height, width)
    theirs = tf.image.resize(values[..., np.newaxis], (height, width), method="bilinear").numpy()[..., 0]
    assert np.abs(ours - theirs).max() <= 1e-6
