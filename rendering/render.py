"""Explanations into pictures: colormaps as NumPy lookup tables, overlays at the original size, PNG grids.

The model's heatmap is at its input size after ``resize_with_pad``: the padded band is cropped off first, then the
map is resized to the original image's size, so the overlay lines up with the uploaded picture whatever its aspect.
Blending follows tf-explain's ``heatmap_display``: ``image * image_weight + colour`` (saturating), with the map
min-max normalised. No matplotlib here: the API process stays small.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from rendering.images import PadBox, pad_box

__all__ = [
    "COLORMAPS",
    "activation_image",
    "activation_sheet",
    "colorize",
    "colormap_lut",
    "downsample",
    "grid",
    "heatmap_to_original",
    "normalize",
    "overlay",
]

# Jet: the classic piecewise-linear definition (red, green, blue anchor points in [0, 1]).
_JET = {
    "r": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "g": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "b": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}
# Viridis: its published ten-stop palette, interpolated linearly (within a few levels of the full table).
_VIRIDIS_STOPS = (
    "440154", "482878", "3e4989", "31688e", "26828e", "1f9e89", "35b779", "6ece58", "b5de2b", "fde725",
)  # fmt: skip

COLORMAPS: tuple[str, ...] = ("jet", "viridis")


def _jet_lut() -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    channels = []
    for key in ("r", "g", "b"):
        xs, ys = zip(*_JET[key], strict=True)
        channels.append(np.interp(x, xs, ys))
    return np.clip(np.rint(np.stack(channels, axis=-1) * 255), 0, 255).astype(np.uint8)


def _viridis_lut() -> np.ndarray:
    stops = np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in _VIRIDIS_STOPS], dtype=np.float64)
    xs = np.linspace(0.0, 1.0, len(stops))
    x = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(x, xs, stops[:, c]) for c in range(3)], axis=-1)
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


_LUTS: dict[str, np.ndarray] = {"jet": _jet_lut(), "viridis": _viridis_lut()}


def colormap_lut(name: str) -> np.ndarray:
    """The 256x3 ``uint8`` table of a colormap."""
    try:
        return _LUTS[name]
    except KeyError:
        raise ValueError(f"unknown colormap {name!r}; expected one of {', '.join(COLORMAPS)}") from None


def normalize(heatmap: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (a flat map becomes zeros); NaN and inf count as 0."""
    m = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if m.size == 0:
        return m
    lo, hi = float(m.min()), float(m.max())
    if hi - lo <= 1e-12:
        return np.zeros_like(m)
    return (m - lo) / (hi - lo)


def colorize(heatmap: np.ndarray, colormap: str = "viridis") -> np.ndarray:
    """A [H,W] map in [0,1] -> ``uint8`` [H,W,3] colours (values outside [0,1] are clipped)."""
    lut = colormap_lut(colormap)
    m = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0)
    idx = np.clip(np.rint(m * 255.0), 0, 255).astype(np.uint8)
    return lut[idx]


def _resize_map(m: np.ndarray, height: int, width: int) -> np.ndarray:
    if m.shape == (height, width):
        return m.astype(np.float32, copy=True)
    im = Image.fromarray(np.ascontiguousarray(m, dtype=np.float32))
    return np.asarray(im.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def heatmap_to_original(
    heatmap: np.ndarray, original_size: tuple[int, int], *, box: PadBox | None = None
) -> np.ndarray:
    """A model-input-size map -> the original image's size: crop the padded band, then resize.

    ``original_size`` is (height, width). ``box`` defaults to the ``resize_with_pad`` geometry of that size into the
    heatmap's size.
    """
    m = np.asarray(heatmap, dtype=np.float32)
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"heatmap must be a non-empty [H, W] array, got shape {m.shape}")
    height, width = int(original_size[0]), int(original_size[1])
    if box is None:
        box = pad_box(height, width, m.shape[0], m.shape[1])
    cropped = m[box.top : box.top + box.height, box.left : box.left + box.width]
    return _resize_map(cropped, height, width)


def overlay(
    original: np.ndarray,
    heatmap: np.ndarray,
    *,
    colormap: str = "viridis",
    image_weight: float = 0.7,
    box: PadBox | None = None,
) -> np.ndarray:
    """The heatmap blended on the original picture at the original's size: ``uint8`` [h,w,3]."""
    rgb = np.asarray(original, dtype=np.uint8)
    colours = colorize(normalize(heatmap_to_original(heatmap, rgb.shape[:2], box=box)), colormap)
    # Integer arithmetic (weight in 1/256 steps) keeps a 40-megapixel overlay within a few hundred MB.
    weight = int(round(min(max(float(image_weight), 0.0), 1.0) * 256))
    out = rgb.astype(np.uint16)
    out *= weight
    out += 128
    out >>= 8
    out += colours
    np.minimum(out, 255, out=out)
    return out.astype(np.uint8)


def grid(
    original: np.ndarray,
    heatmap: np.ndarray,
    *,
    colormap: str = "viridis",
    image_weight: float = 0.7,
    gap: int = 4,
    box: PadBox | None = None,
) -> np.ndarray:
    """original | heatmap | overlay side by side, each at the original's size, on a white background."""
    rgb = np.asarray(original, dtype=np.uint8)
    full = normalize(heatmap_to_original(heatmap, rgb.shape[:2], box=box))
    coloured = colorize(full, colormap)
    blended = overlay(rgb, heatmap, colormap=colormap, image_weight=image_weight, box=box)
    return _hstack([rgb, coloured, blended], gap=gap)


def activation_image(grid: np.ndarray, *, colormap: str = "viridis", min_side: int = 256) -> np.ndarray:
    """A channel grid [rows, cols] in [0,1] (``explain_activations``) -> ``uint8`` [h,w,3] colours, enlarged by
    the smallest integer factor that makes its shorter side at least ``min_side`` (nearest neighbour, so every
    activation stays a sharp square and the tiles stay aligned)."""
    m = np.asarray(grid, dtype=np.float32)
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"grid must be a non-empty [rows, cols] array, got shape {m.shape}")
    factor = max(1, -(-int(min_side) // min(m.shape)))
    coloured = colorize(np.clip(m, 0.0, 1.0), colormap)
    return np.repeat(np.repeat(coloured, factor, axis=0), factor, axis=1)


def activation_sheet(
    original: np.ndarray, grid: np.ndarray, *, colormap: str = "viridis", gap: int = 4, min_side: int = 256
) -> np.ndarray:
    """original | activation grid side by side: the original scaled to the grid picture's height (aspect kept)."""
    picture = activation_image(grid, colormap=colormap, min_side=min_side)
    rgb = np.asarray(original, dtype=np.uint8)
    height = picture.shape[0]
    width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
    scaled = np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)
    return _hstack([scaled, picture], gap=gap)


def _hstack(panels: Sequence[np.ndarray], *, gap: int) -> np.ndarray:
    h = max(p.shape[0] for p in panels)
    w = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    x = 0
    for p in panels:
        out[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out


def downsample(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average a [H,W] map to (height, width) no larger than it (for compact JSON)."""
    m = np.asarray(heatmap, dtype=np.float32)
    height, width = int(size[0]), int(size[1])
    if (height, width) == m.shape:
        return m.copy()
    if height < 1 or width < 1 or height > m.shape[0] or width > m.shape[1]:
        raise ValueError(f"cannot downsample {m.shape} to {(height, width)}")
    im = Image.fromarray(np.ascontiguousarray(m, dtype=np.float32))
    return np.asarray(im.resize((width, height), Image.Resampling.BOX), dtype=np.float32)
