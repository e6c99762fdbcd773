"""Occlusion sensitivity in NumPy: the same map as the in-graph ``explain_occlusion`` signature, for black-box models.

A model served without explain_* signatures (a plain TF Serving model) can still be explained by occlusion through
batched Predict calls on its float-pixels signature; ``service`` does the calls, this module the maths. It is
tf-explain's OcclusionSensitivity generalised to any stride, exactly as ``training``'s exporter writes it into the
graph, so that switching between a Glimpse model and a plain one does not change the map:

- the grid (``occlusion_geometry``): a patch size of 0 means ``min(H, W) // 8`` (at least 1), a stride of 0 means the
  patch size; patches start at 0, s, 2s, ... < H (resp. W), so the grid is ceil(H / s) x ceil(W / s) and the patches
  of the last row and column are cut at the border;
- each patch is replaced by grey, 127.5 in the 0-255 pixel space (``GREY_VALUE``);
- the grid value at a position is 1 - p_c(occluded image), c the target class;
- the [rows, cols] grid is resized bilinearly to [H, W] with half-pixel centres (``tf.image.resize``, bilinear, no
  antialiasing; ``resize_bilinear``): that is the attribution, its min-max normalisation the heatmap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GREY_VALUE",
    "OcclusionGrid",
    "occluded_copies",
    "occlusion_geometry",
    "occlusion_map",
    "occlusion_patches",
    "resize_bilinear",
]

# tf-explain's patch value (utils/image.py apply_grey_patch) in the 0-255 pixel space: the in-graph method's grey.
GREY_VALUE = 127.5


@dataclass(frozen=True)
class OcclusionGrid:
    """Where the grey patches go on a ``height`` x ``width`` input: ``rows`` x ``cols`` positions ``stride`` apart."""

    height: int
    width: int
    patch: int
    stride: int
    rows: int
    cols: int

    @property
    def positions(self) -> int:
        """Occluded copies per image."""
        return self.rows * self.cols

    def patches(self) -> list[tuple[int, int, int, int]]:
        """(top, left, bottom, right) of every patch, row-major (the order of the grid's cells), cut at the border."""
        return [
            (top, left, min(top + self.patch, self.height), min(left + self.patch, self.width))
            for top in range(0, self.rows * self.stride, self.stride)
            for left in range(0, self.cols * self.stride, self.stride)
        ]


def occlusion_geometry(height: int, width: int, patch_size: int = 0, stride: int = 0) -> OcclusionGrid:
    """The grid of the in-graph signature's ``occlusion_geometry`` for one input size and the method's parameters."""
    if min(height, width) < 1:
        raise ValueError(f"sizes must be positive, got {height}x{width}")
    if patch_size < 0 or stride < 0:
        raise ValueError(f"patch_size and stride must be >= 0 (0 = default), got {patch_size} and {stride}")
    patch = int(patch_size) if patch_size > 0 else max(1, min(height, width) // 8)
    step = int(stride) if stride > 0 else patch
    return OcclusionGrid(
        height=height, width=width, patch=patch, stride=step, rows=-(-height // step), cols=-(-width // step)
    )


def occlusion_patches(height: int, width: int, patch_size: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of every grey patch, row-major: ``occlusion_geometry(...).patches()``."""
    return occlusion_geometry(height, width, patch_size, stride).patches()


def occluded_copies(
    pixels: np.ndarray, grid: OcclusionGrid, positions: slice | None = None, *, grey: float = GREY_VALUE
) -> np.ndarray:
    """Copies of ``pixels`` (float [H,W,3], 0-255) with one patch each set to ``grey``: float32 [N,H,W,3] for the
    grid ``positions`` (default: all, row-major)."""
    patches = grid.patches()[positions if positions is not None else slice(None)]
    out = np.empty((len(patches), *pixels.shape), dtype=np.float32)
    out[:] = pixels
    for copy, (top, left, bottom, right) in zip(out, patches, strict=True):
        copy[top:bottom, left:right, :] = grey
    return out


def _bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TensorFlow's half-pixel-centre sampling (resize_bilinear_op.cc) in float32: lower/upper taps and weights."""
    scale = np.float32(in_size) / np.float32(out_size)
    position = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(position)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(position), in_size - 1).astype(np.int64)
    return lower, upper, (position - floor).astype(np.float32)


def resize_bilinear(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """``tf.image.resize(values[..., None], (height, width), "bilinear")[..., 0]`` for a 2-D float map: half-pixel
    centres, edge taps clamped, no antialiasing. float32 [height, width]."""
    m = np.asarray(values, dtype=np.float32)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise ValueError(f"expected a non-empty [rows, cols] map, got shape {m.shape}")
    y_lo, y_hi, y_w = _bilinear_taps(m.shape[0], height)
    x_lo, x_hi, x_w = _bilinear_taps(m.shape[1], width)
    top_rows, bottom_rows = m[y_lo], m[y_hi]
    top = top_rows[:, x_lo] + (top_rows[:, x_hi] - top_rows[:, x_lo]) * x_w[np.newaxis, :]
    bottom = bottom_rows[:, x_lo] + (bottom_rows[:, x_hi] - bottom_rows[:, x_lo]) * x_w[np.newaxis, :]
    return (top + (bottom - top) * y_w[:, np.newaxis]).astype(np.float32)


def occlusion_map(occluded_scores: Sequence[float] | np.ndarray, grid: OcclusionGrid) -> np.ndarray:
    """The attribution [H,W]: 1 - p_c(occluded) per grid position (row-major scores), resized bilinearly."""
    scores = np.asarray(occluded_scores, dtype=np.float32).reshape(-1)
    if scores.size != grid.positions:
        raise ValueError(f"{scores.size} scores for a {grid.rows}x{grid.cols} grid")
    return resize_bilinear(np.float32(1.0) - scores.reshape(grid.rows, grid.cols), grid.height, grid.width)
