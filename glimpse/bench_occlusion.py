"""Occlusion's exact and adaptive modes against tf-explain 0.3.1, measured side by side in one run.

Models, at 224 px, neither built for the method: EfficientNet-Lite0 with its bundled ImageNet classifier (the
backbone ``glimpse train`` gives users) and keras.applications.MobileNetV2 with random weights (no download). Ours is
the ``explain_occlusion`` signature's function (``GraphExplainer.function``, what the exporter traces) called
in-process on one image, with the engine the explainer measured for this model on this machine; tf-explain is
``OcclusionSensitivity.explain`` on the same image, patch and class. Timed alternately (median), after a warm-up.

Rows (``ratio = ours_s / baseline_s``; below 1 = Glimpse is faster):

- ``occlusion exact vs tf-explain [model, patch]``: goal <= 0.33; the note gives the max abs difference of the score
  maps (goal <= 1e-5) and the engine used.
- ``occlusion exact, FLOPs vs naive [model, patch]``: multiply-adds of the incremental engine per occluded copy over a
  whole forward pass (``training.explain.incremental.plan``; the base pass of the image adds one forward per image
  to both). It does not depend on the host's load.
- ``occlusion adaptive vs tf-explain [Lite0, patch]``: per image, over the Tux Paint test photos (goal <= 0.1), with
  the adaptive map's SSIM (goal >= 0.9) and top-5% IoU (goal >= 0.8) against the exact map, averaged over the photos
  (``studies.occlusion``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

from glimpse.bench_explain import _photo, _quiet, _row, build_bench_model, paired_medians
from glimpse_wire.contract import OCCLUSION_MODES, OUT_ATTRIBUTION, OUT_CLASS_INDEX
from studies.occlusion import adaptive_quality, lite0_imagenet, tuxpaint_test_photos
from training.explain import GraphExplainer
from training.explain.incremental import plan

__all__ = ["run_occlusion_benchmarks"]

IMAGE_SIZE = 224
PATCHES = (16, 28)


def _mobilenet_v2() -> GraphExplainer:
    """The explain suite's MobileNetV2 (random weights, 1000 classes, one flat graph as ``glimpse train`` builds)."""
    return GraphExplainer(build_bench_model(), None)


class _Occlusion:
    """One model's occlusion signature function on one image."""

    def __init__(self, explainer: GraphExplainer, image: np.ndarray) -> None:
        self.explainer = explainer
        self.image = image[np.newaxis].astype(np.float32)
        self._fn = explainer.function("occlusion")
        self.target = int(self.run(PATCHES[0], "exact")[OUT_CLASS_INDEX][0])

    def run(self, patch: int, mode: str) -> dict[str, Any]:
        one = [tf.constant([v], tf.int32) for v in (-1, patch, 0, OCCLUSION_MODES.index(mode))]
        return self._fn(self.image, *one)


def _exact_rows(name: str, occlusion: _Occlusion, repeats: int) -> list[dict[str, Any]]:
    from tf_explain.core.occlusion_sensitivity import OcclusionSensitivity

    rows = []
    model = occlusion.explainer.model
    engine = occlusion.explainer.occlusion_engine
    for patch in PATCHES:

        def theirs(patch: int = patch) -> Any:
            with _quiet():
                return OcclusionSensitivity().explain((occlusion.image, None), model, occlusion.target, patch)

        ours_s, theirs_s = paired_medians(lambda p=patch: occlusion.run(p, "exact")["heatmap"].numpy(), theirs, repeats)
        with _quiet():
            reference = OcclusionSensitivity().get_sensitivity_map(model, occlusion.image[0], occlusion.target, patch)
        diff = float(np.abs(occlusion.run(patch, "exact")[OUT_ATTRIBUTION].numpy()[0] - reference).max())
        rows.append(
            _row(
                f"occlusion exact vs tf-explain [{name} {IMAGE_SIZE}, patch {patch}]",
                ours_s,
                theirs_s,
                f"goal <= 0.33; max abs map difference {diff:.1e} (goal <= 1e-5); engine {engine.engine}",
            )
        )
        fraction = plan(model, patch, patch)
        rows.append(
            {
                "name": f"occlusion exact, FLOPs vs naive [{name} {IMAGE_SIZE}, patch {patch}]",
                "ours": f"{fraction.macs_incremental / 1e6:.0f} M MACs",
                "ours_s": None,
                "baseline_s": None,
                "ratio": fraction.macs_fraction,
                "note": f"multiply-adds per occluded copy, incremental vs {fraction.macs_naive / 1e6:.0f} M for a "
                f"whole forward pass; {fraction.incremental_layers} of {fraction.total_layers} layers on a window",
            }
        )
    return rows


def _adaptive_rows(explainer: GraphExplainer, photos: np.ndarray, repeats: int) -> list[dict[str, Any]]:
    from tf_explain.core.occlusion_sensitivity import OcclusionSensitivity

    rows = []
    timing = _Occlusion(explainer, photos[0])
    for patch in PATCHES:
        quality = adaptive_quality(explainer, photos, patch).summary()

        def theirs(patch: int = patch) -> Any:
            with _quiet():
                return OcclusionSensitivity().explain((timing.image, None), explainer.model, timing.target, patch)

        ours_s, theirs_s = paired_medians(lambda p=patch: timing.run(p, "adaptive")["heatmap"].numpy(), theirs, repeats)
        evaluated = int(timing.run(patch, "adaptive")["evaluated_positions"][0])
        grid = -(-IMAGE_SIZE // patch)
        rows.append(
            _row(
                f"occlusion adaptive vs tf-explain [efficientnet_lite0 {IMAGE_SIZE}, patch {patch}]",
                ours_s,
                theirs_s,
                f"goal <= 0.1; {evaluated} of {grid * grid} positions; over {len(photos)} Tux Paint test photos: "
                f"SSIM {quality['ssim_mean']:.3f} (min {quality['ssim_min']:.3f}, goal >= 0.9), top-5% IoU "
                f"{quality['iou_mean']:.3f} (min {quality['iou_min']:.3f}, goal >= 0.8)",
            )
        )
    return rows


def run_occlusion_benchmarks(quick: bool) -> list[dict[str, Any]]:
    """The rows of the module docstring; ``quick``: fewer repetitions and 8 photos for the adaptive quality."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    repeats = 2 if quick else 5
    photo = _photo()
    lite0 = lite0_imagenet(IMAGE_SIZE)
    rows = _exact_rows("efficientnet_lite0", _Occlusion(lite0, photo), repeats)
    rows += _exact_rows("mobilenet_v2", _Occlusion(_mobilenet_v2(), photo), repeats)
    rows += _adaptive_rows(lite0, tuxpaint_test_photos(IMAGE_SIZE, limit=8 if quick else None), repeats)
    return rows
