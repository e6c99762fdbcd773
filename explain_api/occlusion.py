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

The adaptive mode (``adaptive_occlusion``) evaluates only part of that grid, by the contract's rule that the graph
follows too: the cells of every ``ADAPTIVE_COARSE_STEP``-th row and column exactly, the others interpolated from them
(``adaptive_estimate``), then the ``ADAPTIVE_REFINE_FRACTION`` of the interpolated cells with the highest estimate
exactly (``adaptive_refine_cells``); the grid so filled is resized as above.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from glimpse_wire.contract import ADAPTIVE_COARSE_STEP, ADAPTIVE_REFINE_FRACTION

__all__ = [
    "GREY_VALUE",
    "AdaptiveOcclusion",
    "Cell",
    "OcclusionGrid",
    "ScoreFunction",
    "adaptive_coarse_cells",
    "adaptive_estimate",
    "adaptive_evaluations",
    "adaptive_occlusion",
    "adaptive_refine_cells",
    "occluded_copies",
    "occlusion_geometry",
    "occlusion_map",
    "occlusion_patches",
    "resize_bilinear",
]

# tf-explain's patch value (utils/image.py apply_grey_patch) in the 0-255 pixel space: the in-graph method's grey.
GREY_VALUE = 127.5

Cell = tuple[int, int]  # (row, col) of a grid position
# p_c of the copies occluded at the given cells, one value per cell, in order.
ScoreFunction = Callable[[Sequence[Cell]], Sequence[float] | np.ndarray]


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

    def position(self, cell: Cell) -> int:
        """The row-major index of a grid cell (the order of ``patches``)."""
        row, col = cell
        return row * self.cols + col

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
    pixels: np.ndarray,
    grid: OcclusionGrid,
    positions: slice | Sequence[int] | None = None,
    *,
    grey: float = GREY_VALUE,
) -> np.ndarray:
    """Copies of ``pixels`` (float [H,W,3], 0-255) with one patch each set to ``grey``: float32 [N,H,W,3] for the
    grid ``positions`` (a slice or row-major indices, in that order; default: all, row-major)."""
    every = grid.patches()
    if positions is None or isinstance(positions, slice):
        patches = every[positions if positions is not None else slice(None)]
    else:
        patches = [every[i] for i in positions]
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


# ---------------------------------------------------------------------------------------------------- adaptive mode


def _coarse_indices(size: int) -> np.ndarray:
    """The coarse indices of one axis of ``size`` cells: 0, step, 2 step, ... < size."""
    return np.arange(0, size, ADAPTIVE_COARSE_STEP)


def adaptive_coarse_cells(grid: OcclusionGrid) -> list[Cell]:
    """The cells evaluated first, row-major: every ``ADAPTIVE_COARSE_STEP``-th row and column, starting at 0."""
    return [(int(r), int(col)) for r in _coarse_indices(grid.rows) for col in _coarse_indices(grid.cols)]


def _interpolate_axis(coarse: np.ndarray, size: int, axis: int) -> np.ndarray:
    """``coarse`` holds the values at the coarse indices of ``axis``; the values at all ``size`` indices: linear
    between two coarse indices a < i < b, ``(b - i)/(b - a) * v(a) + (i - a)/(b - a) * v(b)``, the last coarse value
    past the last coarse index. float32 throughout."""
    step = ADAPTIVE_COARSE_STEP
    last = coarse.shape[axis] - 1
    index = np.arange(size)
    left = np.minimum(index // step, last)  # slot of the coarse index at or before i (the last one past the end)
    right = np.minimum(left + 1, last)
    span = ((right - left) * step).astype(np.float32)  # b - a; 0 past the last coarse index
    offset = (index - left * step).astype(np.float32)  # i - a
    between = (offset > 0) & (span > 0)
    safe_span = np.where(span > 0, span, np.float32(1.0))
    w_left = np.where(between, (span - offset) / safe_span, np.float32(1.0)).astype(np.float32)
    w_right = np.where(between, offset / safe_span, np.float32(0.0)).astype(np.float32)
    shape = [1] * coarse.ndim
    shape[axis] = size
    a = np.take(coarse, left, axis=axis)
    b = np.take(coarse, right, axis=axis)
    blended = w_left.reshape(shape) * a + w_right.reshape(shape) * b
    return np.where(between.reshape(shape), blended, a).astype(np.float32)


def adaptive_estimate(coarse_values: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The estimated [rows, cols] grid from the values at the coarse cells ([coarse rows, coarse cols], in the order of
    ``adaptive_coarse_cells``): interpolated along the columns within each coarse row, then along the rows for every
    column (see ``_interpolate_axis``). float32; the coarse cells keep their values."""
    coarse = np.asarray(coarse_values, dtype=np.float32)
    expected = (len(_coarse_indices(rows)), len(_coarse_indices(cols)))
    if coarse.shape != expected:
        raise ValueError(f"expected coarse values of shape {expected} for a {rows}x{cols} grid, got {coarse.shape}")
    return _interpolate_axis(_interpolate_axis(coarse, cols, axis=1), rows, axis=0)


def adaptive_refine_cells(estimate: np.ndarray, evaluated: np.ndarray) -> list[Cell]:
    """The cells to evaluate after the coarse round, row-major: of the U cells not ``evaluated`` yet, the
    ceil(ADAPTIVE_REFINE_FRACTION * U) with the highest ``estimate``, ties going to the earlier cell in row-major
    order."""
    values = np.asarray(estimate, dtype=np.float32)
    candidates = np.flatnonzero(~np.asarray(evaluated, dtype=bool).reshape(-1))
    count = math.ceil(ADAPTIVE_REFINE_FRACTION * candidates.size)
    order = np.argsort(-values.reshape(-1)[candidates], kind="stable")  # stable: row-major among equal estimates
    chosen = np.sort(candidates[order[:count]])
    return [(int(i) // values.shape[1], int(i) % values.shape[1]) for i in chosen]


def adaptive_evaluations(grid: OcclusionGrid) -> int:
    """How many grid positions the adaptive mode evaluates: the coarse cells plus the refined ones."""
    coarse = len(_coarse_indices(grid.rows)) * len(_coarse_indices(grid.cols))
    return coarse + math.ceil(ADAPTIVE_REFINE_FRACTION * (grid.positions - coarse))


@dataclass(frozen=True)
class AdaptiveOcclusion:
    """The grid of the adaptive mode: exact values where evaluated, the estimate elsewhere."""

    grid: OcclusionGrid
    values: np.ndarray = field(repr=False)  # float32 [rows, cols], 1 - p_c
    evaluated: np.ndarray = field(repr=False)  # bool [rows, cols]

    @property
    def count(self) -> int:
        """Grid positions evaluated (coarse and refined)."""
        return int(self.evaluated.sum())

    def attribution(self) -> np.ndarray:
        """The attribution [H,W]: ``values`` resized exactly as the exact map's grid is."""
        return resize_bilinear(self.values, self.grid.height, self.grid.width)


def adaptive_occlusion(grid: OcclusionGrid, occluded_scores: ScoreFunction) -> AdaptiveOcclusion:
    """The adaptive grid, ``occluded_scores(cells)`` giving p_c of the copies occluded at ``cells``. It is called
    with the coarse cells, then with the cells to refine (a second call only when there are any), so that a caller
    can batch each round into as few model calls as it likes."""
    coarse_cells = adaptive_coarse_cells(grid)
    shape = (len(_coarse_indices(grid.rows)), len(_coarse_indices(grid.cols)))
    coarse = np.float32(1.0) - _scores(occluded_scores, coarse_cells).reshape(shape)
    values = adaptive_estimate(coarse, grid.rows, grid.cols)
    evaluated = np.zeros((grid.rows, grid.cols), dtype=bool)
    evaluated[np.ix_(_coarse_indices(grid.rows), _coarse_indices(grid.cols))] = True
    refine = adaptive_refine_cells(values, evaluated)
    if refine:
        rows, cols = np.array(refine).T
        values[rows, cols] = np.float32(1.0) - _scores(occluded_scores, refine)
        evaluated[rows, cols] = True
    return AdaptiveOcclusion(grid, values, evaluated)


def _scores(occluded_scores: ScoreFunction, cells: list[Cell]) -> np.ndarray:
    """``occluded_scores(cells)`` as float32 [len(cells)]; ValueError when it does not answer every cell."""
    scores = np.asarray(occluded_scores(cells), dtype=np.float32).reshape(-1)
    if scores.size != len(cells):
        raise ValueError(f"{scores.size} scores for {len(cells)} cells")
    return scores
