"""Colormaps, overlays at the original size with the padding undone, grids, downsampling (rendering.render)."""

from __future__ import annotations

import numpy as np
import pytest

from rendering import render
from rendering.images import pad_box


@pytest.mark.parametrize(("name", "max_error", "mean_error"), [("jet", 1.0, 0.5), ("viridis", 16.0, 2.0)])
def test_colormaps_match_matplotlib(name: str, max_error: float, mean_error: float) -> None:
    import matplotlib  # only the test process imports matplotlib; the API builds its own tables

    reference = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0
    lut = render.colormap_lut(name).astype(np.float64)
    assert lut.shape == (256, 3)
    diff = np.abs(lut - reference)
    assert diff.max() <= max_error and diff.mean() <= mean_error


def test_unknown_colormap_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="jet, viridis"):
        render.colormap_lut("rainbow")


def test_normalize_and_colorize() -> None:
    m = np.array([[2.0, 4.0], [6.0, np.nan]])
    n = render.normalize(m)
    # NaN counts as 0, so the range is [0, 6]
    assert n[1, 1] == 0.0 and n[1, 0] == 1.0 and n[0, 1] == pytest.approx(4 / 6)
    assert np.array_equal(render.normalize(np.full((3, 3), 5.0)), np.zeros((3, 3)))
    colours = render.colorize(np.array([[0.0, 1.0]]), "jet")
    assert tuple(colours[0, 0]) == tuple(render.colormap_lut("jet")[0])
    assert tuple(colours[0, 1]) == tuple(render.colormap_lut("jet")[255])


def _landscape_case() -> tuple[np.ndarray, np.ndarray]:
    """A 100x200 original; its 64x64 model-input heatmap is hot on the left half of the content and ALSO on the
    padded bands (rows 0-15 and 48-63), which must not leak into the overlay."""
    original = np.full((100, 200, 3), 100, dtype=np.uint8)
    heatmap = np.zeros((64, 64), dtype=np.float32)
    heatmap[16:48, :32] = 1.0  # content rows 16..47; left half hot
    heatmap[:16, :] = 1.0  # padding band (garbage a model may produce there)
    heatmap[48:, :] = 1.0
    return original, heatmap


def test_heatmap_to_original_crops_the_padding_then_resizes() -> None:
    original, heatmap = _landscape_case()
    full = render.heatmap_to_original(heatmap, original.shape[:2])
    assert full.shape == (100, 200)
    assert full[:, :90].min() > 0.99  # left part hot over the whole height: padding rows cropped, not squeezed in
    assert full[:, 110:].max() < 0.01  # right part cold everywhere, including top and bottom rows
    box = pad_box(100, 200, 64, 64)
    assert (box.top, box.height) == (16, 32)


def test_overlay_is_at_original_size_and_hot_where_the_map_is() -> None:
    original, heatmap = _landscape_case()
    out = render.overlay(original, heatmap, colormap="jet")
    assert out.shape == original.shape and out.dtype == np.uint8
    jet = render.colormap_lut("jet").astype(int)
    hot = np.clip(np.rint(100 * 0.7 + jet[255]), 0, 255)
    cold = np.clip(np.rint(100 * 0.7 + jet[0]), 0, 255)
    assert np.array_equal(out[50, 20], hot) and np.array_equal(out[0, 20], hot)
    assert np.array_equal(out[50, 180], cold) and np.array_equal(out[0, 180], cold)


def test_overlay_portrait_keeps_aspect() -> None:
    original = np.zeros((300, 100, 3), dtype=np.uint8)
    heatmap = np.zeros((64, 64), dtype=np.float32)
    box = pad_box(300, 100, 64, 64)
    heatmap[: box.height // 2, box.left : box.left + box.width] = 1.0  # top half of the content
    out = render.overlay(original, heatmap, colormap="viridis", image_weight=0.0)
    assert out.shape == (300, 100, 3)
    viridis = render.colormap_lut("viridis")
    assert np.array_equal(out[20, 50], viridis[255]) and np.array_equal(out[280, 50], viridis[0])


def test_grid_is_original_heatmap_overlay_side_by_side() -> None:
    original, heatmap = _landscape_case()
    out = render.grid(original, heatmap, colormap="jet", gap=4)
    assert out.shape == (100, 3 * 200 + 2 * 4, 3)
    assert np.array_equal(out[:, :200], original)
    assert np.all(out[:, 200:204] == 255)  # white gap
    assert np.array_equal(out[:, 408:], render.overlay(original, heatmap, colormap="jet"))
    assert np.array_equal(out[50, 204 + 20], render.colormap_lut("jet")[255])


def test_downsample_averages_areas() -> None:
    m = np.zeros((8, 8), dtype=np.float32)
    m[:4, :4] = 1.0
    small = render.downsample(m, (2, 2))
    assert np.allclose(small, [[1.0, 0.0], [0.0, 0.0]])
    assert render.downsample(m, (8, 8)).shape == (8, 8)
    with pytest.raises(ValueError):
        render.downsample(m, (16, 16))


def test_bad_heatmap_shape_is_refused() -> None:
    with pytest.raises(ValueError):
        render.heatmap_to_original(np.zeros((2, 2, 2)), (10, 10))
