"""Occlusion's modes measured against each other: adaptive against the exact map, and both as explanations.

Two sets, neither tuned on:

- **Tux Paint test photos**: the held-out split of ``glimpse train --dataset tuxpaint`` (its default seed), explained
  by EfficientNet-Lite0 with its bundled ImageNet classifier at 224 px (a real pretrained model, the backbone users
  get), for its predicted class. Per photo: the adaptive map's SSIM against the exact map and the IoU of their top 5%
  regions (:func:`adaptive_quality`).
- **the localization set** (``studies.localization``, the study model and its held-out composites): pointing game
  and deletion AUC of the exact and the adaptive map (:func:`localization_figures`).

``python -m studies.occlusion`` prints both tables (docs/explanations.md keeps them); ``--quick`` a small version.
"""

from __future__ import annotations

import argparse
import sys
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from glimpse_wire.contract import OCCLUSION_MODES, OUT_ATTRIBUTION, OUT_CLASS_INDEX

__all__ = [
    "TOP_FRACTION",
    "AdaptiveQuality",
    "adaptive_quality",
    "lite0_imagenet",
    "localization_figures",
    "map_ssim",
    "top_region_iou",
    "tuxpaint_test_photos",
]

TOP_FRACTION = 0.05  # the "top 5% region" of a map
IMAGE_SIZE = 224
_FUNCTIONS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def map_ssim(exact: np.ndarray, approx: np.ndarray) -> float:
    """SSIM of two [H,W] attribution maps, on the exact map's value range (scikit-image's Gaussian-free default
    7x7 window)."""
    from skimage.metrics import structural_similarity  # scikit-image: a dev dependency, as for the studies' photos

    exact = np.asarray(exact, np.float64)
    span = float(exact.max() - exact.min()) or 1.0
    return float(structural_similarity(exact, np.asarray(approx, np.float64), data_range=span))


def top_region(values: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Boolean [H,W]: the ``fraction`` of pixels with the highest values (ties broken by position, so exactly
    ``ceil(fraction * H * W)`` pixels)."""
    flat = np.asarray(values, np.float64).ravel()
    keep = int(np.ceil(fraction * flat.size))
    order = np.argsort(-flat, kind="stable")[:keep]
    mask = np.zeros(flat.size, bool)
    mask[order] = True
    return mask.reshape(np.shape(values))


def top_region_iou(exact: np.ndarray, approx: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Intersection over union of the two maps' top ``fraction`` regions."""
    a, b = top_region(exact, fraction), top_region(approx, fraction)
    return float((a & b).sum() / (a | b).sum())


@dataclass(frozen=True)
class AdaptiveQuality:
    """Per image: SSIM and top-5% IoU of the adaptive map against the exact one; and the median seconds per image of
    each mode (the batch's time divided by its size)."""

    ssim: np.ndarray
    iou: np.ndarray
    seconds: dict[str, float]

    def summary(self) -> dict[str, float]:
        return {
            "ssim_mean": float(self.ssim.mean()),
            "ssim_min": float(self.ssim.min()),
            "iou_mean": float(self.iou.mean()),
            "iou_min": float(self.iou.min()),
            **{f"{mode}_s": s for mode, s in self.seconds.items()},
        }


def _run(explainer: Any, images: np.ndarray, classes: Any, patch: int, mode: str) -> dict[str, Any]:
    """The occlusion signature's function (traced once per explainer, as the exporter serves it) on ``images``."""
    function = _FUNCTIONS.get(explainer)
    if function is None:
        function = _FUNCTIONS[explainer] = explainer.function("occlusion")
    n = len(images)
    per_image = [
        np.broadcast_to(np.asarray(v, np.int32), (n,)) for v in (classes, patch, 0, OCCLUSION_MODES.index(mode))
    ]
    return function(np.asarray(images, np.float32), *per_image)


def _maps(explainer: Any, images: np.ndarray, classes: Any, patch: int, mode: str) -> np.ndarray:
    return _run(explainer, images, classes, patch, mode)[OUT_ATTRIBUTION].numpy()


def adaptive_quality(
    explainer: Any, images: np.ndarray, patch: int, *, batch: int = 8, timed_modes: Sequence[str] = ()
) -> AdaptiveQuality:
    """Adaptive against exact occlusion on ``images`` (float32 [N,H,W,C], 0-255) for each image's predicted class,
    ``patch`` px patches, stride = patch; ``timed_modes`` are timed too (one pass over the images, in batches)."""
    ssim, iou = [], []
    seconds = {mode: 0.0 for mode in timed_modes}
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        exact = _run(explainer, chunk, -1, patch, "exact")
        classes = exact[OUT_CLASS_INDEX].numpy()
        adaptive = _maps(explainer, chunk, classes, patch, "adaptive")
        for e, a in zip(exact[OUT_ATTRIBUTION].numpy(), adaptive, strict=True):
            ssim.append(map_ssim(e, a))
            iou.append(top_region_iou(e, a))
        for mode in timed_modes:
            begin = time.perf_counter()
            _maps(explainer, chunk, classes, patch, mode)
            seconds[mode] += time.perf_counter() - begin
    return AdaptiveQuality(np.array(ssim), np.array(iou), {m: s / len(images) for m, s in seconds.items()})


def tuxpaint_test_photos(image_size: int = IMAGE_SIZE, limit: int | None = None) -> np.ndarray:
    """The Tux Paint dataset's held-out photos (``glimpse train --dataset tuxpaint``'s default split), float32
    [N,S,S,3] at ``image_size``, 0-255, in split order."""
    from training.data import load_dataset

    splits = load_dataset("tuxpaint", image_size=image_size, seed=42, batch_size=16)
    images = np.concatenate([x.numpy() for x, _ in splits.test])
    return images[:limit].astype(np.float32) if limit else images.astype(np.float32)


def lite0_imagenet(image_size: int = IMAGE_SIZE) -> Any:
    """A GraphExplainer of EfficientNet-Lite0 with its bundled ImageNet weights and 1000-class top."""
    from training.efficientnet_lite import LITE0_GRADCAM_LAYER, build_efficientnet_lite0
    from training.explain import GraphExplainer

    model = build_efficientnet_lite0((image_size, image_size, 3), include_top=True, weights="imagenet")
    return GraphExplainer(model, LITE0_GRADCAM_LAYER)


def localization_figures(quick: bool, patch: int = 0) -> dict[str, dict[str, float]]:
    """Pointing game (strict) and deletion AUC of exact and adaptive occlusion on the localization set's held-out
    composites, the study model explaining the true class; plus adaptive's SSIM and IoU against exact there."""
    from studies.localization import GRADCAM_LAYER as STUDY_LAYER
    from studies.localization import (
        QUICK_CONFIG,
        LocalizationConfig,
        cached_localizer,
        deletion_curves,
        pointing_game,
    )
    from training.explain import GraphExplainer

    model, _, test = cached_localizer(QUICK_CONFIG if quick else LocalizationConfig())
    explainer = GraphExplainer(model, STUDY_LAYER)
    images = test.images.astype(np.float32)
    classes = test.labels.astype(np.int32)
    figures: dict[str, dict[str, float]] = {}
    maps = {mode: _maps(explainer, images, classes, patch, mode) for mode in ("exact", "adaptive")}
    for mode, found in maps.items():
        curves = deletion_curves(model, test.images, classes, found, steps=20, seed=0)
        figures[mode] = {
            "pointing_game": float(pointing_game(found, test.boxes).mean()),
            "deletion_auc": float(((curves[:, 1:] + curves[:, :-1]) / 2).mean()),
        }
    pairs = list(zip(maps["exact"], maps["adaptive"], strict=True))
    figures["adaptive"]["ssim_vs_exact"] = float(np.mean([map_ssim(e, a) for e, a in pairs]))
    figures["adaptive"]["iou_vs_exact"] = float(np.mean([top_region_iou(e, a) for e, a in pairs]))
    return figures


def modes_figure(explainer: Any, photo: np.ndarray, patch: int) -> np.ndarray:
    """One photo and its exact, adaptive and naive occlusion maps blended on it, side by side: uint8 [H, 4W+18, 3].
    The exact and naive panels are the same map computed two ways."""
    from rendering.render import overlay

    original = np.clip(photo, 0, 255).astype(np.uint8)
    classes = _run(explainer, photo[np.newaxis], -1, patch, "exact")[OUT_CLASS_INDEX].numpy()
    panels = [original]
    for mode in ("exact", "adaptive", "naive"):
        attribution = _maps(explainer, photo[np.newaxis], classes, patch, mode)[0]
        panels.append(overlay(original, attribution, colormap="jet", image_weight=0.5))
    gap = np.full((original.shape[0], 6, 3), 255, np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2], gap, panels[3]], axis=1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.occlusion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 photos and the quick localization set")
    parser.add_argument("--figure", default=None, help="Also write the modes figure of the first test photo here")
    args = parser.parse_args(argv)
    photos = tuxpaint_test_photos(limit=8 if args.quick else None)
    explainer = lite0_imagenet()
    if args.figure:
        from PIL import Image

        Image.fromarray(modes_figure(explainer, photos[0], 16)).save(args.figure)
        print(f"wrote {args.figure} (photo | exact | adaptive | naive, patch 16)")
    print(f"Tux Paint test photos: {len(photos)}, EfficientNet-Lite0 ImageNet {IMAGE_SIZE} px, predicted class")
    print("| patch | SSIM mean (min) | top-5% IoU mean (min) | exact s/image | adaptive s/image |")
    print("|---|---|---|---|---|")
    for patch in (16, 28):
        quality = adaptive_quality(explainer, photos, patch, timed_modes=("exact", "adaptive")).summary()
        print(
            f"| {patch} | {quality['ssim_mean']:.3f} ({quality['ssim_min']:.3f}) | {quality['iou_mean']:.3f} "
            f"({quality['iou_min']:.3f}) | {quality['exact_s']:.3f} | {quality['adaptive_s']:.3f} |"
        )
    print("\nLocalization set (study model, true class, default patch):")
    print("| mode | pointing game | deletion AUC (lower is better) | SSIM vs exact | top-5% IoU vs exact |")
    print("|---|---|---|---|---|")
    for mode, row in localization_figures(args.quick).items():
        ssim = f"{row['ssim_vs_exact']:.3f}" if "ssim_vs_exact" in row else "1"
        iou = f"{row['iou_vs_exact']:.3f}" if "iou_vs_exact" in row else "1"
        print(f"| {mode} | {row['pointing_game']:.3f} | {row['deletion_auc']:.3f} | {ssim} | {iou} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
