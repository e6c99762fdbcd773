"""How well the explanations localise: a synthetic localization set from real photos, the pointing game and the
deletion curve.

The set: Tux Paint's real cut-out photos (RGBA) pasted, at a seeded random scale, flip and position, onto neutral grey
backgrounds with seeded noise, so the object's box is known exactly (the tight box of its opaque pixels). Train and
test use disjoint photos. A functional classifier trained on it (by default EfficientNet-Lite0's frozen ImageNet
features to stride 8 plus a trainable conv head, the Grad-CAM layer; or a small CNN from scratch) is then explained
with every method:

- pointing game: the fraction of test images whose map peaks inside the object's box (explaining the true class);
- deletion curve: the class probability as the most important pixels (by the map) are replaced by grey, 0% to 100%
  in equal steps; its area (lower = the map found what the model uses), next to the same curve for a random order.

The classifier is fitted through ``training.fit.fit`` (the fit path of ``glimpse train``), on arrays: pixels for the
scratch CNN, cached backbone features for the Lite0 head.

``python -m studies.localization`` prints the table kept in docs/explanations.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from glimpse_wire.contract import METHOD_PARAMS, OUT_ATTRIBUTION, OUT_HEATMAP
from training.data import TUXPAINT_CLASSES, TUXPAINT_ROOT
from training.efficientnet_lite import build_efficientnet_lite0
from training.fit import FitData, TrainConfig, fit

if TYPE_CHECKING:
    import keras

    from training.explain import GraphExplainer

__all__ = [
    "STAMPS_DIR",
    "CLASS_DIRS",
    "GRADCAM_LAYER",
    "LocalizationConfig",
    "QUICK_CONFIG",
    "LocalizationSet",
    "QualityReport",
    "load_cutouts",
    "split_photos",
    "BackgroundFn",
    "paste_cutout",
    "make_localization_set",
    "shuffled_set",
    "build_localizer",
    "build_lite0_localizer",
    "BACKBONES",
    "train_localizer",
    "cached_localizer",
    "peak_positions",
    "pointing_game",
    "ranking_map",
    "deletion_curves",
    "evaluate_methods",
    "run_study",
    "format_report",
    "format_summary",
    "main",
]

STAMPS_DIR = TUXPAINT_ROOT
# class name -> folder under STAMPS_DIR: the six largest Tux Paint classes (OFFLINE.md has the counts)
CLASS_DIRS: dict[str, str] = {
    name: TUXPAINT_CLASSES[name] for name in ("mammal", "bird", "fruit", "flower", "vehicle", "vegetable")
}
GRADCAM_LAYER = "last_conv"
BACKBONES = ("lite0", "scratch")
_GREY = 127.5

# (label, index of the composite within its class) -> float background [S,S,3] in 0-255 (see make_localization_set)
BackgroundFn = Callable[[int, int], np.ndarray]


@dataclass(frozen=True)
class LocalizationConfig:
    """Everything that defines one run of the study (seeded end to end).

    backbone: "lite0" = EfficientNet-Lite0's ImageNet features up to stride 8 (frozen) + a trainable 3x3 conv
    (the Grad-CAM layer) + softmax head, trained on cached features; "scratch" = a small CNN trained end to end
    (``epochs`` and ``learning_rate`` apply to whatever is trained).
    """

    backbone: str = "lite0"
    image_size: int = 96
    classes: tuple[str, ...] = ("mammal", "bird", "fruit", "flower")
    train_per_class: int = 150
    test_per_class: int = 25
    test_photo_fraction: float = 0.25  # photos held out per class, never seen in training
    min_scale: float = 0.35  # the cut-out's longer side, as a fraction of the image side
    max_scale: float = 0.6
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    deletion_steps: int = 16
    seed: int = 0
    stamps_dir: str = str(STAMPS_DIR)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        unknown = [c for c in self.classes if c not in CLASS_DIRS]
        if unknown or len(self.classes) < 2:
            raise ValueError(f"classes must be >= 2 of {sorted(CLASS_DIRS)}, got {list(self.classes)}")
        if not 0.0 < self.min_scale <= self.max_scale <= 1.0:
            raise ValueError("need 0 < min_scale <= max_scale <= 1")
        if not 0.0 < self.test_photo_fraction < 1.0:
            raise ValueError("test_photo_fraction must be in (0, 1)")
        if min(self.train_per_class, self.test_per_class, self.epochs, self.deletion_steps) < 1:
            raise ValueError("train_per_class, test_per_class, epochs and deletion_steps must be >= 1")

    def train_config(self) -> TrainConfig:
        """The fit of the trainable part (Adam, no augmentation: the set is fixed), as ``training.fit`` takes it.
        ``model`` names the nearest of training's models; the localizer itself is built here and handed to fit."""
        return TrainConfig(model="scratch", image_size=self.image_size, epochs=self.epochs,
                           batch_size=self.batch_size, lr=self.learning_rate, optimizer="adam", augment="none",
                           seed=self.seed, weights="none" if self.backbone == "scratch" else "imagenet")


# A smaller run that the tests share (about 10 s of feature extraction and head training on 2 quiet CPU cores).
QUICK_CONFIG = LocalizationConfig(train_per_class=100, test_per_class=10)


@dataclass(frozen=True)
class LocalizationSet:
    """images uint8 [N,S,S,3]; labels int [N]; boxes int [N,4] as (top, left, bottom, right), bottom/right exclusive;
    index_in_class int [N]: k of each image, the composite's number within its class (the ``k`` of ``backgrounds``)."""

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    class_names: tuple[str, ...]
    index_in_class: np.ndarray | None = None


@dataclass(frozen=True)
class QualityReport:
    """Per-method figures of one study run."""

    config: LocalizationConfig
    test_accuracy: float
    num_test: int
    pointing: dict[str, float]
    deletion_auc: dict[str, float]
    random_deletion_auc: float
    box_area_fraction: float
    seconds: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------
# Data


def load_cutouts(
    classes: Sequence[str], stamps_dir: str | Path = STAMPS_DIR
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Every real photo of each class as (relative path, RGBA uint8 cropped to its opaque pixels), sorted by path."""
    root = Path(stamps_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} not found: install the Debian package tuxpaint-stamps-default (apt-get install "
            "--no-install-recommends tuxpaint-stamps-default)"
        )
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name in classes:
        paths = sorted(p for p in (root / CLASS_DIRS[name]).rglob("*.png") if "cartoon" not in str(p))
        photos = []
        for path in paths:
            with Image.open(path) as im:
                rgba = np.asarray(im.convert("RGBA"))
            opaque = np.argwhere(rgba[..., 3] > 127)
            if len(opaque) == 0:
                continue
            (y0, x0), (y1, x1) = opaque.min(axis=0), opaque.max(axis=0) + 1
            photos.append((str(path.relative_to(root)), rgba[y0:y1, x0:x1]))
        if not photos:
            raise FileNotFoundError(f"no photos for class {name!r} under {root / CLASS_DIRS[name]}")
        out[name] = photos
    return out


def split_photos(
    cutouts: dict[str, list[tuple[str, np.ndarray]]], fraction: float, seed: int
) -> tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]]:
    """Per class, a seeded ``fraction`` of the photos (at least one) for test, the rest for train (disjoint)."""
    rng = np.random.default_rng(seed)
    train, test = {}, {}
    for name, photos in cutouts.items():
        order = rng.permutation(len(photos))
        n_test = max(1, round(fraction * len(photos)))
        test[name] = [photos[i][1] for i in order[:n_test]]
        train[name] = [photos[i][1] for i in order[n_test:]] or test[name]
    return train, test


def paste_cutout(
    photo: np.ndarray,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float],
    background: np.ndarray | None = None,
) -> tuple:
    """Paste one cut-out onto ``background`` (float [S,S,3], 0-255) or, when None, a noisy neutral one drawn from
    ``rng``; returns (uint8 image, tight box of opaque pixels). A given background draws nothing from ``rng``, so
    the same seed places the cut-outs identically whatever the backgrounds."""
    longest = max(2, round(rng.uniform(*scale) * size))
    h, w = photo.shape[:2]
    ratio = longest / max(h, w)
    new_h, new_w = max(2, round(h * ratio)), max(2, round(w * ratio))
    pasted = np.asarray(Image.fromarray(photo).resize((new_w, new_h), Image.Resampling.LANCZOS)).astype(np.float32)
    if rng.random() < 0.5:
        pasted = pasted[:, ::-1]
    top = int(rng.integers(0, size - new_h + 1))
    left = int(rng.integers(0, size - new_w + 1))
    if background is None:
        level = rng.uniform(100.0, 160.0)
        sigma = rng.uniform(4.0, 20.0)
        background = level + rng.normal(0.0, sigma, (size, size, 1)) + rng.normal(0.0, 4.0, (size, size, 3))
    elif background.shape != (size, size, 3):
        raise ValueError(f"background must have shape {(size, size, 3)}, got {background.shape}")
    alpha = pasted[..., 3:] / 255.0
    image = np.asarray(background, np.float64).copy()
    region = image[top : top + new_h, left : left + new_w]
    image[top : top + new_h, left : left + new_w] = alpha * pasted[..., :3] + (1.0 - alpha) * region
    opaque = np.argwhere(alpha[..., 0] > 0.5)
    (y0, x0), (y1, x1) = opaque.min(axis=0), opaque.max(axis=0) + 1
    box = (top + y0, left + x0, top + y1, left + x1)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), box


def make_localization_set(
    photos: dict[str, list[np.ndarray]],
    per_class: int,
    image_size: int,
    seed: int,
    scale: tuple[float, float] = (0.35, 0.6),
    backgrounds: BackgroundFn | None = None,
) -> LocalizationSet:
    """``per_class`` composites per class, cycling through that class's photos in a seeded order.

    ``backgrounds(label, k)`` gives the background of the k-th composite of class ``label`` (default: seeded
    neutral grey noise). Placements depend only on ``seed``, so two calls with the same seed and different
    ``backgrounds`` put the same cut-outs at the same places.
    """
    rng = np.random.default_rng(seed)
    images, labels, boxes, ks = [], [], [], []
    for label, (_, pool) in enumerate(photos.items()):
        order = rng.permutation(len(pool))
        for k in range(per_class):
            background = None if backgrounds is None else backgrounds(label, k)
            image, box = paste_cutout(pool[order[k % len(pool)]], image_size, rng, scale, background)
            images.append(image)
            labels.append(label)
            boxes.append(box)
            ks.append(k)
    return shuffled_set(rng, images, labels, boxes, ks, tuple(photos))


def shuffled_set(
    rng: np.random.Generator,
    images: Sequence[np.ndarray],
    labels: Sequence[int],
    boxes: Sequence[Sequence[int]],
    index_in_class: Sequence[int],
    class_names: tuple[str, ...],
) -> LocalizationSet:
    """The composites as a ``LocalizationSet`` in one seeded random order (so no class comes in a block)."""
    order = rng.permutation(len(images))
    return LocalizationSet(
        images=np.stack(images)[order],
        labels=np.asarray(labels, np.int32)[order],
        boxes=np.asarray(boxes, np.int32)[order],
        class_names=class_names,
        index_in_class=np.asarray(index_in_class, np.int32)[order],
    )


# ----------------------------------------------------------------------------------------------------------------
# Model


def build_localizer(image_size: int, num_classes: int, seed: int = 0) -> keras.Model:
    """The "scratch" model: a small functional CNN taking 0-255 pixels: a stride-2 conv, a conv, max-pooling, the
    Grad-CAM conv ``last_conv`` (at 1/4 of the input resolution), global average pooling, dropout, softmax."""
    import keras

    init = keras.initializers.HeNormal(seed=seed)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", kernel_initializer=init, name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", kernel_initializer=init, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    return keras.Model(inputs, _head(x, num_classes, seed), name="localizer_scratch")


def _head(x: Any, num_classes: int, seed: int) -> Any:
    """The trainable head on a feature map: 3x3 conv ``last_conv`` (ReLU), global average pooling, dropout, softmax."""
    import keras

    x = keras.layers.Conv2D(
        128,
        3,
        padding="same",
        activation="relu",
        kernel_initializer=keras.initializers.HeNormal(seed),
        name=GRADCAM_LAYER,
    )(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(0.3, seed=seed, name="dropout")(x)
    return keras.layers.Dense(
        num_classes, activation="softmax", kernel_initializer=keras.initializers.GlorotUniform(seed), name="probs"
    )(x)


def _stride8_features(backbone: keras.Model) -> Any:
    """The block output at 1/8 of the input size: among the layers at that size, the last one with the fewest
    channels (Lite0's ``block3b_add``, 40 channels), not the expanded activations that follow it."""
    size = backbone.input.shape[1] // 8
    candidates = [layer for layer in backbone.layers if tuple(layer.output.shape[1:3]) == (size, size)]
    if not candidates:
        raise ValueError(f"the backbone has no layer at 1/8 of its input size ({size}x{size})")
    fewest = min(layer.output.shape[-1] for layer in candidates)
    return [layer for layer in candidates if layer.output.shape[-1] == fewest][-1].output


def build_lite0_localizer(image_size: int, num_classes: int, seed: int = 0) -> tuple[keras.Model, keras.Model]:
    """The "lite0" model: (full model on 0-255 pixels, head model on cached features). The ImageNet-pretrained
    EfficientNet-Lite0 (training.efficientnet_lite, read offline) up to stride 8 is frozen; the head is
    ``_head``. The two models have separate (unshared) head layers; copy the trained head's weights over."""
    import keras

    backbone = build_efficientnet_lite0((image_size, image_size, 3), include_top=False, weights="imagenet")
    features = _stride8_features(backbone)
    model = keras.Model(backbone.input, _head(features, num_classes, seed), name="localizer_lite0")
    for layer in model.layers:
        layer.trainable = layer.name in _HEAD_LAYERS
    head_input = keras.Input(tuple(features.shape[1:]), name="features")
    head = keras.Model(head_input, _head(head_input, num_classes, seed), name="localizer_head")
    return model, head


_HEAD_LAYERS = (GRADCAM_LAYER, "gap", "dropout", "probs")


def train_localizer(
    config: LocalizationConfig,
) -> tuple[keras.Model, LocalizationSet, LocalizationSet]:
    """Build the train/test sets from disjoint photos and train the configured model on them (seeded)."""
    import keras

    keras.utils.set_random_seed(config.seed)
    cutouts = load_cutouts(config.classes, config.stamps_dir)
    train_photos, test_photos = split_photos(cutouts, config.test_photo_fraction, config.seed)
    scale = (config.min_scale, config.max_scale)
    train = make_localization_set(train_photos, config.train_per_class, config.image_size, config.seed + 1, scale)
    test = make_localization_set(test_photos, config.test_per_class, config.image_size, config.seed + 2, scale)
    pixels = train.images.astype(np.float32)
    if config.backbone == "scratch":
        model = build_localizer(config.image_size, len(config.classes), config.seed)
        fit_model, fit_inputs = model, pixels
    else:
        model, fit_model = build_lite0_localizer(config.image_size, len(config.classes), config.seed)
        extractor = keras.Model(model.input, model.get_layer(GRADCAM_LAYER).input)
        fit_inputs = extractor.predict(pixels, batch_size=64, verbose=0)
    data = FitData((fit_inputs, train.labels), len(config.classes), int(fit_inputs.shape[-1]), len(train.labels))
    fit(config.train_config(), data, model=fit_model, verbose=0)
    if fit_model is not model:
        for name in _HEAD_LAYERS:
            model.get_layer(name).set_weights(fit_model.get_layer(name).get_weights())
    return model, train, test


@lru_cache(maxsize=2)
def cached_localizer(config: LocalizationConfig) -> tuple[keras.Model, LocalizationSet, LocalizationSet]:
    """``train_localizer(config)``, trained once per process and config (tests share it; do not modify the model)."""
    return train_localizer(config)


# ----------------------------------------------------------------------------------------------------------------
# Metrics


def pointing_game(maps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Per image, whether the map's peak (:func:`peak_positions`) lies inside the box.

    maps [N,H,W]; boxes [N,4] (top, left, bottom, right), bottom/right exclusive. Returns bool [N].
    """
    y, x = peak_positions(maps)
    top, left, bottom, right = np.asarray(boxes).T
    return (y >= top) & (y < bottom) & (x >= left) & (x < right)


def peak_positions(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the (row, column) of the map's peak: int arrays [N], [N] for maps [N,H,W].

    A coarse map upsampled bilinearly has a plateau where its maximum cell touches the border (the resize clamps
    there, so the cell's value runs from its centre out to the edge); the peak is the plateau pixel farthest from the
    border, i.e. that cell's centre, not the first maximum in row-major order (which would favour the top-left
    border).
    """
    maps = np.asarray(maps, np.float64)
    n, height, width = maps.shape
    flat = maps.reshape(n, -1)
    high = flat.max(axis=1, keepdims=True)
    spread = high - flat.min(axis=1, keepdims=True)
    plateau = flat >= high - 1e-6 * np.maximum(spread, 1e-12)
    ys, xs = np.divmod(np.arange(height * width), width)
    inset = np.minimum(np.minimum(ys, height - 1 - ys), np.minimum(xs, width - 1 - xs))
    peak = np.where(plateau, inset[None, :], -1).argmax(axis=1)
    return peak // width, peak % width


def ranking_map(method: str, result: dict[str, Any]) -> np.ndarray:
    """The [N,H,W] importance used to rank pixels: the heatmap, except for pixel-gradient methods where the
    heatmap is clipped at a percentile (ties at 1.0) and the unclipped magnitude sum_c |attribution| is used."""
    attribution = np.asarray(result[OUT_ATTRIBUTION])
    if attribution.ndim == 4:
        return np.abs(attribution).sum(axis=-1)
    return np.asarray(result[OUT_HEATMAP])


def deletion_curves(
    model: keras.Model,
    images: np.ndarray,
    class_index: np.ndarray,
    maps: np.ndarray,
    steps: int,
    seed: int,
    batch_size: int = 256,
) -> np.ndarray:
    """Probability of ``class_index`` after replacing the top k/steps of pixels (by ``maps``, ties broken by a seeded
    random order) with grey, k = 0..steps. Returns [N, steps + 1]."""
    rng = np.random.default_rng(seed)
    n, height, width = maps.shape
    pixels = height * width
    # lexsort: last key is primary; a random secondary key breaks ties without bias.
    counts = np.rint(np.linspace(0, pixels, steps + 1)).astype(int)
    batch = []
    for i in range(n):
        order = np.lexsort((rng.random(pixels), -maps[i].reshape(-1)))
        rank = np.empty(pixels, np.int64)
        rank[order] = np.arange(pixels)
        for k in counts:
            deleted = (rank < k).reshape(height, width, 1)
            batch.append(np.where(deleted, _GREY, images[i]).astype(np.float32))
    probs = model.predict(np.stack(batch), batch_size=batch_size, verbose=0)
    probs = probs.reshape(n, steps + 1, -1)
    return np.take_along_axis(probs, np.asarray(class_index).reshape(n, 1, 1), axis=2)[..., 0]


def _auc(curves: np.ndarray) -> np.ndarray:
    """Area under each curve on x in [0, 1] (trapezoid rule, equal steps)."""
    steps = curves.shape[1] - 1
    return (curves[:, 0] / 2 + curves[:, 1:-1].sum(axis=1) + curves[:, -1] / 2) / steps


def evaluate_methods(
    explainer: GraphExplainer,
    test: LocalizationSet,
    *,
    deletion_steps: int = 16,
    seed: int = 0,
    params: dict[str, dict[str, Any]] | None = None,
    methods: Sequence[str] | None = None,
    batch_size: int = 16,
) -> tuple[dict[str, float], dict[str, float], float, dict[str, float]]:
    """Pointing game and deletion AUC per method (explaining the true class), and the random-order deletion AUC.

    ``params`` overrides METHOD_PARAMS defaults per method. Returns (pointing, deletion_auc, random_auc, seconds).
    """
    images = test.images.astype(np.float32)
    labels = test.labels.astype(np.int32)
    pointing: dict[str, float] = {}
    deletion: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for method in methods or explainer.methods:
        values = {p.name: p.default for p in METHOD_PARAMS[method]}
        values.update((params or {}).get(method, {}))
        fn = explainer.function(method)
        start = time.perf_counter()
        chunks = []
        for i in range(0, len(images), batch_size):
            b = len(images[i : i + batch_size])
            args = [np.full([b], values[p.name], dtype=p.dtype) for p in METHOD_PARAMS[method]]
            result = fn(images[i : i + batch_size], labels[i : i + batch_size], *args)
            chunks.append(ranking_map(method, {k: v.numpy() for k, v in result.items()}))
        maps = np.concatenate(chunks)
        seconds[method] = time.perf_counter() - start
        pointing[method] = float(pointing_game(maps, test.boxes).mean())
        curves = deletion_curves(explainer.model, images, labels, maps, deletion_steps, seed)
        deletion[method] = float(_auc(curves).mean())
    rng = np.random.default_rng(seed + 1)
    random_maps = rng.random(images.shape[:3])
    random_auc = float(_auc(deletion_curves(explainer.model, images, labels, random_maps, deletion_steps, seed)).mean())
    return pointing, deletion, random_auc, seconds


def run_study(config: LocalizationConfig, params: dict[str, dict[str, Any]] | None = None) -> QualityReport:
    """Train on the localization set and measure every method."""
    from training.explain import GraphExplainer  # TensorFlow at import: only when the study runs

    start = time.perf_counter()
    model, _, test = train_localizer(config)
    train_seconds = time.perf_counter() - start
    probs = model.predict(test.images.astype(np.float32), verbose=0)
    accuracy = float((probs.argmax(axis=1) == test.labels).mean())
    explainer = GraphExplainer(model, GRADCAM_LAYER)
    pointing, deletion, random_auc, seconds = evaluate_methods(
        explainer, test, deletion_steps=config.deletion_steps, seed=config.seed, params=params
    )
    top, left, bottom, right = test.boxes.T
    area = float(((bottom - top) * (right - left)).mean() / config.image_size**2)
    return QualityReport(
        config=config,
        test_accuracy=accuracy,
        num_test=len(test.labels),
        pointing=pointing,
        deletion_auc=deletion,
        random_deletion_auc=random_auc,
        box_area_fraction=area,
        seconds={"train": train_seconds, **seconds},
    )


def format_report(report: QualityReport) -> str:
    """A markdown table of the figures."""
    lines = [
        f"test accuracy {report.test_accuracy:.3f} on {report.num_test} images; mean box area "
        f"{report.box_area_fraction:.1%} of the image (a random peak lands in a box about that often); "
        f"random-order deletion AUC {report.random_deletion_auc:.3f}",
        "",
        "| method | pointing game | deletion AUC (lower is better) | AUC / random | explain time (s) |",
        "|---|---|---|---|---|",
    ]
    for method, score in report.pointing.items():
        auc = report.deletion_auc[method]
        lines.append(
            f"| {method} | {score:.3f} | {auc:.3f} | {auc / report.random_deletion_auc:.2f} | "
            f"{report.seconds.get(method, float('nan')):.1f} |"
        )
    return "\n".join(lines)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    d = LocalizationConfig()
    p = argparse.ArgumentParser(prog="python -m studies.localization", description=__doc__.splitlines()[0])
    p.add_argument("--backbone", choices=BACKBONES, default=d.backbone)
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--train-per-class", type=int, default=d.train_per_class)
    p.add_argument("--test-per-class", type=int, default=d.test_per_class)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--deletion-steps", type=int, default=d.deletion_steps)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--seeds", type=int, default=1, help="Repeat with seeds seed, seed+1, ... and summarise.")
    p.add_argument(
        "--smoothgrad-noise", type=float, default=None, help="Override SmoothGrad's noise (pixel units, 0-255)."
    )
    return p.parse_args(argv)


def format_summary(reports: Sequence[QualityReport]) -> str:
    """Mean (min-max) over several seeds' reports, per method."""

    def cell(values: Sequence[float]) -> str:
        return f"{np.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"

    methods = list(reports[0].pointing)
    lines = [
        f"{len(reports)} seeds; test accuracy {cell([r.test_accuracy for r in reports])}; random-order deletion AUC "
        f"{cell([r.random_deletion_auc for r in reports])}",
        "",
        "| method | pointing game | deletion AUC | AUC / random |",
        "|---|---|---|---|",
    ]
    for m in methods:
        lines.append(
            f"| {m} | {cell([r.pointing[m] for r in reports])} | {cell([r.deletion_auc[m] for r in reports])} | "
            f"{cell([r.deletion_auc[m] / r.random_deletion_auc for r in reports])} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        config = LocalizationConfig(
            backbone=args.backbone,
            image_size=args.image_size,
            learning_rate=args.learning_rate,
            train_per_class=args.train_per_class,
            test_per_class=args.test_per_class,
            epochs=args.epochs,
            deletion_steps=args.deletion_steps,
            seed=args.seed,
        )
        if args.seeds < 1:
            raise ValueError("--seeds must be >= 1")
        params = {"smoothgrad": {"noise": args.smoothgrad_noise}} if args.smoothgrad_noise is not None else None
        reports = []
        for k in range(args.seeds):
            run_config = replace(config, seed=config.seed + k)
            start = time.perf_counter()
            report = run_study(run_config, params)
            reports.append(report)
            took = time.perf_counter() - start
            print(f"## seed {run_config.seed} ({took:.0f} s, training {report.seconds['train']:.0f} s)")
            print(format_report(report), flush=True)
            print()
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len(reports) > 1:
        print("## summary")
        print(format_summary(reports))
    print(f"\nconfig: {asdict(config)}; params: {params or 'contract defaults'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
