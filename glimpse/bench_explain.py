"""Explanation benchmarks: the in-graph signatures against tf-explain 0.3.1, measured side by side in one run.

All rows use the same model (keras.applications.MobileNetV2 at 224x224 with random weights: no download; 0-255
pixels in, the [-1, 1] scaling inside) and the same photo (skimage's chelsea). Ours runs through the exported
SavedModel in a TF-Serving-style graph session (``serving.session``), image bytes in, decode included; without an
export directory it runs a ``tf.function`` of ``training.explain``'s ``GraphExplainer`` and says so. The methods and
their default parameters come from the method registry (``training.explain``). Timings are medians of several
repetitions after a warm-up.

Rows (``ratio = ours_s / baseline_s``; below 1 = Glimpse is faster):

1. Grad-CAM, batch 1: ``explain_gradcam`` vs tf-explain ``GradCAM.explain`` in-process (goal <= 0.15).
2. Occlusion, batch 1, patch 28 (an 8x8 grid, tf-explain's stride = patch): ``explain_occlusion`` vs
   ``OcclusionSensitivity.explain`` (goal <= 1/1.5), and the naive in-graph occlusion (at the chunk size measured at
   export) vs its compute floor: (positions + 1) x the per-image forward time at the best batch size (goal <= 1.10).
3. Per method: the per-image time of a batch of 8 vs a batch of 1, after the same ratio for the bare model's forward
   pass (what batching can buy on this hardware at most).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from glimpse_wire.contract import IN_CLASS_INDEX, IN_IMAGE_BYTES, MODEL_CARD_ASSET, OCCLUSION_MODES
from serving.session import load_session_model
from training.explain import GraphExplainer, attribution_methods, get_method
from training.export import export_classifier

__all__ = ["BenchModel", "build_bench_model", "median_seconds", "paired_medians", "run_explain_benchmarks"]

IMAGE_SIZE = 224
GRADCAM_LAYER = "out_relu"
OCCLUSION_PATCH = IMAGE_SIZE // 8
_NUM_CLASSES = 1000


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_medians(
    first: Callable[[], Any], second: Callable[[], Any], repeats: int, warmup: int = 1
) -> tuple[float, float]:
    """Median wall times of two functions timed alternately (first, second, first, ...), so that a shared machine's
    changing load affects both alike."""
    for _ in range(warmup):
        first()
        second()
    a, b = [], []
    for _ in range(max(1, repeats)):
        for fn, times in ((first, a), (second, b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


class BenchModel:
    """The benchmark model, its photo, and a runner for our explanation signatures."""

    def __init__(self, model: Any, image: np.ndarray, export_base: Path | None) -> None:
        self.model = model
        self.image = image  # float32 [224,224,3], 0-255
        self.encoded = _jpeg(image)
        self.via = "tf.function"
        self._session = None
        self._functions: dict[str, Any] = {}
        if export_base is not None:
            self._session = _export_and_load(model, export_base)
            self.via = "exported SavedModel, graph session"
            card = json.loads((self._session.export_dir / MODEL_CARD_ASSET).read_text(encoding="utf-8"))
            self.chunk_size: int = card["explain_chunk_size"]["chunk_size"]
        else:
            self._explainer = GraphExplainer(model, GRADCAM_LAYER)
            self.chunk_size = self._explainer.chunk_size

    def explain(self, method: str, batch: int, **params: Any) -> dict[str, np.ndarray]:
        """Run ``explain_<method>`` on ``batch`` copies of the photo; params are scalars (broadcast to [B]), the
        registry's defaults where not given."""
        spec = get_method(method)
        values = [np.full([batch], params.get(p.name, p.default), dtype=p.dtype) for p in spec.params]
        class_index = np.full([batch], -1, np.int32)
        if self._session is not None:
            feeds = {IN_IMAGE_BYTES: np.array([self.encoded] * batch, dtype=object), IN_CLASS_INDEX: class_index}
            feeds.update({p.name: v for p, v in zip(spec.params, values, strict=True)})
            return self._session.run(spec.signature, feeds)
        fn = self._functions.get(method)
        if fn is None:
            fn = self._functions[method] = self._explainer.function(method)
        images = np.repeat(self.image[np.newaxis], batch, axis=0)
        return {k: v.numpy() for k, v in fn(images, class_index, *values).items()}

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


def _jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def build_bench_model(seed: int = 0) -> Any:
    """MobileNetV2 224 with random weights (nothing downloaded), taking 0-255 pixels: Rescaling to [-1, 1] inside,
    softmax over 1000 classes; its Grad-CAM layer is ``out_relu`` (7x7x1280)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inputs)
    backbone = keras.applications.MobileNetV2(
        input_tensor=scaled, weights=None, classes=_NUM_CLASSES, classifier_activation="softmax"
    )
    return keras.Model(inputs, backbone.output, name="mobilenet_v2_bench")


def _photo() -> np.ndarray:
    from skimage import data  # scikit-image is a dev dependency: only the benchmark's photo needs it

    return tf.image.resize_with_pad(data.chelsea().astype(np.float32), IMAGE_SIZE, IMAGE_SIZE).numpy()


def _export_and_load(model: Any, export_base: Path) -> Any:
    """Export through training.export and load the version the way TF Serving does."""
    version_dir = export_classifier(
        model,
        [f"class_{i}" for i in range(_NUM_CLASSES)],
        export_base,
        "bench",
        image_size=IMAGE_SIZE,
        preprocessing="scale_-1_1",
        gradcam_layer=GRADCAM_LAYER,
    )
    return load_session_model(version_dir)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence a baseline's stdout and warnings (they would interleave with the benchmark table)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _row(name: str, ours: float, baseline: float | None, note: str) -> dict[str, Any]:
    ratio = ours / baseline if baseline else None
    return {"name": name, "ours_s": ours, "baseline_s": baseline, "ratio": ratio, "note": note}


def _forward_floor(model: Any, image: np.ndarray, positions: int, repeats: int) -> tuple[Callable[[], Any], float, int]:
    """The compute floor of ``positions`` forward passes: what any occlusion that runs the model once per position
    must spend at least. Returns (a function that runs ceil(positions / b) forwards at the best batch size b, the
    factor from its time to positions x the per-image time at b, b), so that the caller can time it alternately with
    what it compares."""
    forward = tf.function(lambda x: model(x, training=False))
    best, best_batch = float("inf"), 1
    for batch in (1, 2, 4, 8, 16, 32, 64):
        x = tf.constant(np.repeat(image[np.newaxis], batch, axis=0))
        per_image = median_seconds(lambda x=x: forward(x).numpy(), repeats) / batch
        if per_image < best:
            best, best_batch = per_image, batch
    x = tf.constant(np.repeat(image[np.newaxis], best_batch, axis=0))
    calls = math.ceil(positions / best_batch)

    def floor() -> None:
        for _ in range(calls):
            forward(x).numpy()

    return floor, positions / (calls * best_batch), best_batch


def _gradcam_rows(bench: BenchModel, repeats: int) -> list[dict[str, Any]]:
    from tf_explain.core.grad_cam import GradCAM

    image = bench.image[np.newaxis]
    target = int(np.argmax(bench.model.predict(image, verbose=0)[0]))

    def theirs() -> Any:
        # tf-explain builds Model([model.inputs], ...) on every call; Keras 3 warns about that nesting and runs it.
        with _quiet():
            return GradCAM().explain((image, None), bench.model, target, layer_name=GRADCAM_LAYER)

    ours, baseline = paired_medians(lambda: bench.explain("gradcam", 1), theirs, repeats)
    return [
        _row(
            "Grad-CAM batch 1 vs tf-explain GradCAM.explain",
            ours,
            baseline,
            f"goal <= 0.15; ours: {bench.via}, JPEG decode included; MobileNetV2 224, random weights",
        )
    ]


def _occlusion_rows(bench: BenchModel, repeats: int) -> list[dict[str, Any]]:
    from tf_explain.core.occlusion_sensitivity import OcclusionSensitivity

    image = bench.image[np.newaxis]
    target = int(np.argmax(bench.model.predict(image, verbose=0)[0]))

    def theirs() -> Any:
        with _quiet():  # model.predict's progress bar; a constant map's 0/0 in heatmap_display (random weights)
            return OcclusionSensitivity().explain((image, None), bench.model, target, OCCLUSION_PATCH)

    ours, baseline = paired_medians(
        lambda: bench.explain("occlusion", 1, patch_size=OCCLUSION_PATCH, stride=0), theirs, repeats
    )
    grid = -(-IMAGE_SIZE // OCCLUSION_PATCH)
    positions = grid * grid
    floor_fn, scale, best_batch = _forward_floor(bench.model, bench.image, positions + 1, repeats)
    naive_mode = OCCLUSION_MODES.index("naive")
    naive, floor = paired_medians(
        lambda: bench.explain("occlusion", 1, patch_size=OCCLUSION_PATCH, stride=0, mode=naive_mode), floor_fn, repeats
    )
    return [
        _row(
            f"occlusion batch 1 ({grid}x{grid} grid, patch {OCCLUSION_PATCH}) vs tf-explain OcclusionSensitivity",
            ours,
            baseline,
            "goal <= 0.667 (>= 1.5x faster); identical maps (tests/training/test_explain_parity.py)",
        ),
        _row(
            "occlusion naive vs its compute floor",
            naive,
            floor * scale,
            f"goal <= 1.10; mode naive, batch 1, chunk size {bench.chunk_size} (measured at export); "
            f"floor = {positions + 1} forwards x per-image forward at the best batch size ({best_batch}), timed "
            "alternately with ours",
        ),
    ]


# Parameters other than the registry's defaults, per method (the batch rows cover every class-attribution method).
_BATCH_PARAMS: dict[str, dict[str, Any]] = {
    "occlusion": {"patch_size": OCCLUSION_PATCH, "stride": 0},
}


def _batch_rows(bench: BenchModel, repeats: int, quick: bool) -> list[dict[str, Any]]:
    # Reference: what batching buys the bare model on this hardware (the most any method can gain).
    forward = tf.function(lambda x: bench.model(x, training=False))
    one = tf.constant(bench.image[np.newaxis])
    eight = tf.constant(np.repeat(bench.image[np.newaxis], 8, axis=0))
    batch, single = paired_medians(lambda: forward(eight).numpy(), lambda: forward(one).numpy(), repeats)
    rows = [
        _row(
            "model forward alone: batch 8 per image vs batch 1",
            batch / 8,
            single,
            "reference for the rows below: the batching gain of the bare model (tf.function, in-process)",
        )
    ]
    for method in attribution_methods():
        params = _BATCH_PARAMS.get(method, {})
        heavy = method == "occlusion"
        reps = 1 if (quick and heavy) else max(1, repeats // (3 if heavy else 1))
        batch, single = paired_medians(
            lambda m=method, p=params: bench.explain(m, 8, **p),
            lambda m=method, p=params: bench.explain(m, 1, **p),
            reps,
            warmup=0 if heavy else 1,
        )
        rows.append(
            _row(
                f"{method}: batch 8 per image vs batch 1",
                batch / 8,
                single,
                f"batch 8 total {batch:.3f} s; defaults from METHOD_PARAMS" + (f", {params}" if params else ""),
            )
        )
    return rows


def run_explain_benchmarks(quick: bool) -> list[dict[str, Any]]:
    """All explanation benchmarks; ``quick`` uses fewer repetitions. Returns rows name/ours_s/baseline_s/ratio/note."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    repeats = 3 if quick else 7
    with tempfile.TemporaryDirectory(prefix="glimpse-bench-explain-") as tmp:
        bench = BenchModel(build_bench_model(), _photo(), Path(tmp))
        try:
            rows = _gradcam_rows(bench, repeats)
            rows += _occlusion_rows(bench, max(2, repeats // 2))
            rows += _batch_rows(bench, repeats, quick)
        finally:
            bench.close()
    return rows
