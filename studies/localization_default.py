"""Localization benchmark of the model users get: the default ``glimpse train`` model, explained by every method.

``studies.localization`` measures a study model built for Grad-CAM (a trainable conv at stride 8). This module
measures the model that ``glimpse train`` builds at its defaults instead (EfficientNet-Lite0, offline ImageNet
weights, 160 px, its default head, augmentation and epochs), trained through ``training.train.train`` on an image
folder of composites, and explains it through the same graph the exporter puts behind the ``explain_<method>``
signatures (``GraphExplainer`` with the Grad-CAM layer and the activation layers the exporter finds).

The composites: Tux Paint's real cut-out photos (5 classes) pasted onto backgrounds. Train and test use disjoint
cut-out photos (``studies.localization.split_photos``) and disjoint background crops: natural photos shipped with
scikit-image and scikit-learn (and Debian's darknet sample JPEGs where installed, those that show no class of the
set), whose left 60% of columns give the training crops and right 35% the test crops. Training: natural
backgrounds (a quarter on grey noise), one object, longer side 12-60% of the image. Test variants:

- ``grey``: the docs' original setting, noisy grey background, object 35-60% of the image;
- ``natural``: a natural-photo crop, object 20-35% (about 32-56 px at 160, the size of the issue's test);
- ``multiscale``: a natural-photo crop, object 12-60%;
- ``pair``: a natural-photo crop with two objects of different classes (each 20-35%, boxes apart); the target is
  one of them, the explained class is the target's, the box is the target's.

Figures per method (``ROWS``: every attribution method at the contract's defaults, plus a few parameter variants),
explaining the true class: pointing game strict (peak inside the box, ``studies.localization.peak_positions``) and
within ``NEAR_PX`` pixels of the box, the share of the map's mass inside the box, the deletion AUC
(``studies.localization.deletion_curves``, lower is better) next to a random order's, and the explanation time per
image (batches of 16, after a warm-up call). Trained models are cached on disk (``--cache-dir``), one per seed.

``python -m studies.localization_default --seeds 3`` prints the tables kept in docs/explanations.md;
``--quick`` runs the small version the tests run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from glimpse_wire.contract import ATTRIBUTION_METHODS, DEFAULT_EXPLAIN_METHOD, METHOD_PARAMS
from studies.localization import (
    STAMPS_DIR,
    LocalizationSet,
    deletion_curves,
    load_cutouts,
    make_localization_set,
    paste_cutout,
    peak_positions,
    ranking_map,
    shuffled_set,
    split_photos,
)
from training.fit import TrainConfig

if TYPE_CHECKING:
    import keras

    from training.explain import GraphExplainer

__all__ = [
    "CLASSES",
    "VARIANTS",
    "NEAR_PX",
    "ROWS",
    "Row",
    "BenchConfig",
    "QUICK_CONFIG",
    "natural_photos",
    "background_sampler",
    "make_pair_set",
    "make_sets",
    "train_default_model",
    "box_distance",
    "mass_in_box",
    "evaluate",
    "time_rows",
    "run_seed",
    "choose_default",
    "format_tables",
    "format_timing",
    "main",
]

CLASSES: tuple[str, ...] = ("mammal", "bird", "fruit", "flower", "vehicle")
VARIANTS: tuple[str, ...] = ("grey", "natural", "multiscale", "pair")
# object scale (longer side / image side) per test variant; training draws from TRAIN_SCALE
SCALES: dict[str, tuple[float, float]] = {
    "grey": (0.35, 0.6),
    "natural": (0.2, 0.35),
    "multiscale": (0.12, 0.6),
    "pair": (0.2, 0.35),
}
TRAIN_SCALE = (0.12, 0.6)
NEAR_PX = 15
DEFAULT_CACHE = Path(".cache") / "localization_default"
# natural photos whose columns [0, 60%) give training crops and [65%, 100%) test crops
_TRAIN_COLUMNS = (0.0, 0.6)
_TEST_COLUMNS = (0.65, 1.0)
_SKIMAGE_PHOTOS = ("coffee", "astronaut", "rocket", "hubble_deep_field", "gravel", "grass", "brick", "camera", "moon")
_DARKNET_GLOB = "/usr/share/darknet/data/*.jpg"
# darknet samples that show an object of the set's classes (animals, vehicles): not backgrounds
_DARKNET_SKIP = ("dog", "eagle", "horses", "giraffe", "kite", "person", "scream")


@dataclass(frozen=True)
class Row:
    """One line of the tables: a method with parameters (the contract's defaults, overridden by ``params``)."""

    label: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def values(self) -> dict[str, Any]:
        """Every parameter of the method: the contract's defaults with ``params`` on top."""
        return {**{p.name: p.default for p in METHOD_PARAMS[self.method]}, **self.params}


ROWS: tuple[Row, ...] = (
    *(Row(m, m) for m in ATTRIBUTION_METHODS),
    Row("gradcam, unguided", "gradcam", {"use_guided_grads": False}),
    Row("hirescam, layers=3", "hirescam", {"layers": 3}),
    Row("layercam, layers=1", "layercam", {"layers": 1}),
    Row("layercam, layers=2", "layercam", {"layers": 2}),
    Row("layercam, layers=4", "layercam", {"layers": 4}),
)


@dataclass(frozen=True)
class BenchConfig:
    """One seed's run. ``epochs`` None: ``glimpse train``'s default; ``rows`` None: ``ROWS``."""

    classes: tuple[str, ...] = CLASSES
    train_per_class: int = 100
    test_per_class: int = 8
    grey_train_fraction: float = 0.25
    epochs: int | None = None
    variants: tuple[str, ...] = VARIANTS
    row_labels: tuple[str, ...] | None = None
    deletion_steps: int = 8
    test_photo_fraction: float = 0.25
    seed: int = 0
    stamps_dir: str = str(STAMPS_DIR)

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variants {unknown}; expected some of {', '.join(VARIANTS)}")
        labels = {row.label for row in ROWS}
        if self.row_labels is not None and not set(self.row_labels) <= labels:
            raise ValueError(f"unknown rows {sorted(set(self.row_labels) - labels)}")
        if len(self.classes) < 2 or min(self.train_per_class, self.test_per_class, self.deletion_steps) < 1:
            raise ValueError("need >= 2 classes and train_per_class, test_per_class, deletion_steps >= 1")

    @property
    def rows(self) -> tuple[Row, ...]:
        return ROWS if self.row_labels is None else tuple(r for r in ROWS if r.label in self.row_labels)

    def train_config(self, data_dir: Path, cache_dir: Path) -> TrainConfig:
        """``glimpse train``'s defaults, on the composites folder, seeded, logging under the cache."""
        default = TrainConfig()
        return TrainConfig(
            dataset=f"folder:{data_dir}",
            epochs=self.epochs or default.epochs,
            seed=self.seed,
            logdir=str(cache_dir / "runs"),
            export_dir=str(cache_dir / "models"),
        )

    def model_key(self) -> str:
        """What the trained model depends on (the cache key)."""
        keys = ("classes", "train_per_class", "grey_train_fraction", "epochs", "test_photo_fraction", "seed")
        text = json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# The small run of the tests: 3 classes, 3 epochs, the natural variant, Grad-CAM and the default method.
QUICK_CONFIG = BenchConfig(
    classes=("mammal", "bird", "fruit"),
    train_per_class=40,
    test_per_class=10,
    epochs=3,
    variants=("natural",),
    row_labels=tuple(dict.fromkeys(("gradcam", DEFAULT_EXPLAIN_METHOD))),
    deletion_steps=4,
)


# ----------------------------------------------------------------------------------------------------------------
# Data


def natural_photos() -> list[tuple[str, np.ndarray]]:
    """The background photos as (name, float RGB [h,w,3] 0-255): scikit-image's and scikit-learn's samples that show
    none of the set's classes, and Debian's darknet sample JPEGs where installed (the same way)."""
    from skimage import data  # a few MB of imports: only when a set is built
    from sklearn.datasets import load_sample_image

    photos = [(name, np.asarray(getattr(data, name)())) for name in _SKIMAGE_PHOTOS]
    photos.append(("china", np.asarray(load_sample_image("china.jpg"))))
    for path in sorted(Path("/").glob(_DARKNET_GLOB.lstrip("/"))):
        if not any(word in path.stem for word in _DARKNET_SKIP):
            with Image.open(path) as im:
                photos.append((path.stem, np.asarray(im.convert("RGB"))))
    out = []
    for name, photo in photos:
        rgb = np.repeat(photo[..., None], 3, axis=-1) if photo.ndim == 2 else photo[..., :3]
        out.append((name, rgb.astype(np.float32)))
    return out


def background_sampler(
    photos: Sequence[tuple[str, np.ndarray]], part: str, size: int, seed: int
) -> Callable[[int, int], np.ndarray]:
    """A ``studies.localization.BackgroundFn``: the crop for composite ``k`` of class ``label``, a seeded random
    square (40-100% of the region's shorter side) of a random photo's ``part`` ("train" or "test" columns), resized
    to ``size``. Train and test columns do not overlap, so no crop of one appears in the other."""
    low, high = {"train": _TRAIN_COLUMNS, "test": _TEST_COLUMNS}[part]
    regions = [p[:, round(low * p.shape[1]) : round(high * p.shape[1])] for _, p in photos]
    salt = {"train": 1, "test": 2}[part]

    def crop(label: int, k: int) -> np.ndarray:
        rng = np.random.default_rng((seed, salt, label, k))
        region = regions[int(rng.integers(len(regions)))]
        h, w = region.shape[:2]
        side = max(8, round(rng.uniform(0.4, 1.0) * min(h, w)))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        patch = np.clip(region[top : top + side, left : left + side], 0, 255).astype(np.uint8)
        resized = Image.fromarray(patch).resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(resized, np.float32)

    return crop


def _overlap(a: Sequence[int], b: Sequence[int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def make_pair_set(
    photos: dict[str, list[np.ndarray]],
    per_class: int,
    size: int,
    seed: int,
    scale: tuple[float, float],
    backgrounds: Callable[[int, int], np.ndarray],
) -> LocalizationSet:
    """Composites of two objects of different classes: a distractor of another class pasted first, then the target
    (its class is the label, its box the box), placed so that the two boxes do not overlap (up to 50 tries; the last
    try stands otherwise)."""
    rng = np.random.default_rng(seed)
    pools = list(photos.values())
    images, labels, boxes, ks = [], [], [], []
    for label, pool in enumerate(pools):
        for k in range(per_class):
            other = (label + 1 + int(rng.integers(len(pools) - 1))) % len(pools)
            distractor = pools[other][int(rng.integers(len(pools[other])))]
            target = pool[int(rng.integers(len(pool)))]
            with_distractor, box_d = paste_cutout(distractor, size, rng, scale, backgrounds(label, k))
            for _ in range(50):
                image, box = paste_cutout(target, size, rng, scale, with_distractor.astype(np.float64))
                if not _overlap(box, box_d):
                    break
            images.append(image)
            labels.append(label)
            boxes.append(box)
            ks.append(k)
    return shuffled_set(rng, images, labels, boxes, ks, tuple(photos))


def make_sets(config: BenchConfig, size: int) -> tuple[LocalizationSet, dict[str, LocalizationSet]]:
    """The training composites and each test variant's, from disjoint photos and disjoint background crops."""
    cutouts = load_cutouts(config.classes, config.stamps_dir)
    train_photos, test_photos = split_photos(cutouts, config.test_photo_fraction, config.seed)
    backgrounds = natural_photos()
    train_bg = background_sampler(backgrounds, "train", size, config.seed)
    test_bg = background_sampler(backgrounds, "test", size, config.seed)
    n_grey = round(config.grey_train_fraction * config.train_per_class)
    natural = make_localization_set(
        train_photos, config.train_per_class - n_grey, size, config.seed + 11, TRAIN_SCALE, train_bg
    )
    parts = [natural]
    if n_grey:
        parts.append(make_localization_set(train_photos, n_grey, size, config.seed + 12, TRAIN_SCALE))
    train = LocalizationSet(
        images=np.concatenate([p.images for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        boxes=np.concatenate([p.boxes for p in parts]),
        class_names=natural.class_names,
    )
    tests: dict[str, LocalizationSet] = {}
    for i, variant in enumerate(config.variants):
        seed = config.seed + 21 + i
        per_class, scale = config.test_per_class, SCALES[variant]
        if variant == "grey":
            tests[variant] = make_localization_set(test_photos, per_class, size, seed, scale)
        elif variant == "pair":
            tests[variant] = make_pair_set(test_photos, per_class, size, seed, scale, test_bg)
        else:
            tests[variant] = make_localization_set(test_photos, per_class, size, seed, scale, test_bg)
    return train, tests


# ----------------------------------------------------------------------------------------------------------------
# The default model, trained once per seed and cached


def _write_folder(data: LocalizationSet, root: Path) -> None:
    """The composites as PNGs in one sub-folder per class, named ``<index>_<class>`` so that sorting keeps the
    set's class order (``glimpse train``'s folder datasets sort the sub-folders)."""
    for i, name in enumerate(data.class_names):
        (root / f"{i}_{name}").mkdir(parents=True, exist_ok=True)
    for j, (image, label) in enumerate(zip(data.images, data.labels, strict=True)):
        Image.fromarray(image).save(root / f"{label}_{data.class_names[label]}" / f"{j:05d}.png")


def train_default_model(
    config: BenchConfig, train: LocalizationSet, cache_dir: Path, *, log: Callable[[str], None] = print
) -> tuple[keras.Model, dict[str, Any]]:
    """The default ``glimpse train`` model of this seed: loaded from ``cache_dir`` when trained before, else trained
    through ``training.train.train`` (no export) and saved there. Returns (model, facts about the training run)."""
    from training.fit import build_classifier  # TensorFlow at import

    key = config.model_key()
    weights = cache_dir / f"model-{key}.weights.h5"
    facts_path = cache_dir / f"model-{key}.json"
    size = TrainConfig().size
    if weights.exists() and facts_path.exists():
        facts = json.loads(facts_path.read_text())
        model, _ = build_classifier(config.train_config(cache_dir, cache_dir), len(config.classes), 3)
        model.load_weights(weights)
        log(f"loaded the cached model {weights}")
        return model, facts
    from training.train import train as train_model

    data_dir = cache_dir / f"data-{key}"
    if not data_dir.exists():
        tmp = cache_dir / f".data-{key}.tmp"
        _write_folder(train, tmp)
        tmp.rename(data_dir)
    start = time.perf_counter()
    result = train_model(config.train_config(data_dir, cache_dir), export=False, verbose=0)
    facts = {
        "train_seconds": time.perf_counter() - start,
        "image_size": size,
        "class_names": list(result.class_names),
        "metrics": {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))},
    }
    result.model.save_weights(weights)
    facts_path.write_text(json.dumps(facts, indent=1))
    log(f"trained the default model in {facts['train_seconds']:.0f} s; cached at {weights}")
    return result.model, facts


# ----------------------------------------------------------------------------------------------------------------
# Metrics


def box_distance(maps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Per image, the distance in pixels from the map's peak to the nearest pixel of the box (0 inside)."""
    y, x = peak_positions(maps)
    top, left, bottom, right = np.asarray(boxes).T
    dy = np.maximum(np.maximum(top - y, y - (bottom - 1)), 0)
    dx = np.maximum(np.maximum(left - x, x - (right - 1)), 0)
    return np.hypot(dy, dx)


def mass_in_box(maps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Per image, the share of the map's (non-negative) mass inside the box; 0 for an all-zero map."""
    maps = np.maximum(np.asarray(maps, np.float64), 0.0)
    inside = np.zeros(maps.shape, bool)
    for i, (top, left, bottom, right) in enumerate(np.asarray(boxes)):
        inside[i, top:bottom, left:right] = True
    total = maps.sum(axis=(1, 2))
    return np.where(total > 0, (maps * inside).sum(axis=(1, 2)) / np.where(total > 0, total, 1.0), 0.0)


def _auc(curves: np.ndarray) -> np.ndarray:
    steps = curves.shape[1] - 1
    return (curves[:, 0] / 2 + curves[:, 1:-1].sum(axis=1) + curves[:, -1] / 2) / steps


def _maps(fn: Callable[..., Any], row: Row, images: np.ndarray, labels: np.ndarray, batch: int) -> np.ndarray:
    """The ranking maps of ``row`` by ``fn`` (its method's traced function), in batches of ``batch`` images."""
    values = row.values()
    specs = METHOD_PARAMS[row.method]

    def call(i: int, j: int) -> dict[str, Any]:
        args = [np.full([j - i], values[p.name], dtype=p.dtype) for p in specs]
        return {k: v.numpy() for k, v in fn(images[i:j], labels[i:j], *args).items()}

    chunks = [ranking_map(row.method, call(i, min(i + batch, len(images)))) for i in range(0, len(images), batch)]
    return np.concatenate(chunks)


def evaluate(
    explainer: GraphExplainer,
    sets: dict[str, LocalizationSet],
    rows: Sequence[Row],
    *,
    deletion_steps: int,
    seed: int,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Per variant: the model's accuracy on the test composites, the random-order deletion AUC, and per row the
    pointing game (strict and within ``NEAR_PX``), the mass in the box, the deletion AUC and the ms per image."""
    out: dict[str, Any] = {}
    functions: dict[str, Callable[..., Any]] = {}  # one trace per method, not per call
    for variant, data in sets.items():
        images = data.images.astype(np.float32)
        labels = data.labels.astype(np.int32)
        probs = explainer.model.predict(images, batch_size=64, verbose=0)
        rng = np.random.default_rng(seed + 1)
        random_curves = deletion_curves(explainer.model, images, labels, rng.random(images.shape[:3]),
                                        deletion_steps, seed)
        figures: dict[str, Any] = {
            "accuracy": float((probs.argmax(axis=1) == labels).mean()),
            "random_deletion_auc": float(_auc(random_curves).mean()),
            "box_area": float(np.mean([(b - t) * (r - lf) for t, lf, b, r in data.boxes]) / images[0, ..., 0].size),
            "rows": {},
        }
        for row in rows:
            fn = functions.setdefault(row.method, explainer.function(row.method))
            _maps(fn, row, images[:1], labels[:1], batch_size)  # warm-up: tracing is not explanation time
            start = time.perf_counter()
            maps = _maps(fn, row, images, labels, batch_size)
            ms = 1000.0 * (time.perf_counter() - start) / len(images)
            curves = deletion_curves(explainer.model, images, labels, maps, deletion_steps, seed)
            distance = box_distance(maps, data.boxes)
            figures["rows"][row.label] = {
                "pointing": float((distance == 0).mean()),
                "pointing_near": float((distance <= NEAR_PX).mean()),
                "mass_in_box": float(mass_in_box(maps, data.boxes).mean()),
                "deletion_auc": float(_auc(curves).mean()),
                "ms_per_image": ms,
            }
        out[variant] = figures
    return out


def time_rows(
    explainer: GraphExplainer, images: np.ndarray, rows: Sequence[Row], *, repeats: int = 3
) -> dict[str, float]:
    """Milliseconds per image of each row on ``images`` (one batch), the median of ``repeats`` rounds that take the
    rows in turn, so that a shared machine's load hits them alike (after one warm-up round)."""
    labels = np.full([len(images)], -1, np.int32)
    functions = {m: explainer.function(m) for m in dict.fromkeys(row.method for row in rows)}
    times: dict[str, list[float]] = {row.label: [] for row in rows}
    for round_ in range(repeats + 1):
        for row in rows:
            start = time.perf_counter()
            _maps(functions[row.method], row, images, labels, len(images))
            if round_:
                times[row.label].append(1000.0 * (time.perf_counter() - start) / len(images))
    return {label: float(np.median(values)) for label, values in times.items()}


def _default_explainer(model: keras.Model) -> GraphExplainer:
    """The explainer the exporter builds for ``model``: its Grad-CAM layer and activation layers."""
    from training.explain import GraphExplainer  # TensorFlow at import
    from training.export import find_activation_layers, find_gradcam_layer

    layer = find_gradcam_layer(model)
    return GraphExplainer(model, layer, activation_layers=find_activation_layers(model, layer))


def run_seed(
    config: BenchConfig,
    cache_dir: Path = DEFAULT_CACHE,
    *,
    log: Callable[[str], None] = print,
    timing_only: bool = False,
    timing_images: int = 8,
) -> dict[str, Any]:
    """Build the sets, train (or load) the default model and evaluate every row on every variant; then time every
    row on ``timing_images`` test images (``time_rows``). ``timing_only``: only the timing."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    size = TrainConfig().size
    train, tests = make_sets(config, size)
    model, facts = train_default_model(config, train, cache_dir, log=log)
    explainer = _default_explainer(model)
    layer = explainer.gradcam_layer
    start = time.perf_counter()
    variants = {} if timing_only else evaluate(
        explainer, tests, config.rows, deletion_steps=config.deletion_steps, seed=config.seed
    )
    first = next(iter(tests.values())).images[:timing_images].astype(np.float32)
    timing = time_rows(explainer, first, config.rows) if timing_images else {}
    return {
        "config": asdict(config),
        "image_size": size,
        "gradcam_layer": layer,
        "activation_layers": list(explainer.activation_layers),
        "training": facts,
        "evaluate_seconds": time.perf_counter() - start,
        "variants": variants,
        "ms_per_image": timing,
    }


# ----------------------------------------------------------------------------------------------------------------
# Summary


def _mean(results: Sequence[dict[str, Any]], variant: str, row: str, key: str) -> float:
    return float(np.mean([r["variants"][variant]["rows"][row][key] for r in results]))


def _ms(results: Sequence[dict[str, Any]], row: str) -> float:
    """Mean over seeds of a row's alternated timing (``time_rows``), or of its timing during the evaluation."""
    if all(r.get("ms_per_image") for r in results):
        return float(np.mean([r["ms_per_image"][row] for r in results]))
    variant = next(iter(results[0]["variants"]))
    return _mean(results, variant, row, "ms_per_image")


def choose_default(results: Sequence[dict[str, Any]], variant: str = "natural", max_slowdown: float = 2.0) -> str:
    """The row with the best mean strict pointing game on ``variant`` (ties: mass in the box) among those no slower
    than ``max_slowdown`` x Grad-CAM per image."""
    budget = max_slowdown * _ms(results, "gradcam")
    rows = [label for label in results[0]["variants"][variant]["rows"] if _ms(results, label) <= budget]
    return max(rows, key=lambda r: (_mean(results, variant, r, "pointing"), _mean(results, variant, r, "mass_in_box")))


def format_tables(results: Sequence[dict[str, Any]]) -> str:
    """One Markdown table per variant, means over the seeds (pointing game strict with its min-max), and the time
    per image (alternated rounds, ``time_rows``) relative to Grad-CAM's."""
    lines = []
    for variant, first in results[0]["variants"].items():
        acc = [r["variants"][variant]["accuracy"] for r in results]
        rnd = [r["variants"][variant]["random_deletion_auc"] for r in results]
        lines += [
            f"### {variant}: test accuracy {np.mean(acc):.3f} ({min(acc):.3f}-{max(acc):.3f}), "
            f"random-order deletion AUC {np.mean(rnd):.3f}, box {first['box_area']:.1%} of the image",
            "",
            "| method | pointing game | within 15 px | mass in box | deletion AUC | AUC / random | time / Grad-CAM's |",
            "|---|---|---|---|---|---|---|",
        ]
        for label in first["rows"]:
            strict = [r["variants"][variant]["rows"][label]["pointing"] for r in results]
            auc = _mean(results, variant, label, "deletion_auc")
            lines.append(
                f"| {label} | {np.mean(strict):.3f} ({min(strict):.2f}-{max(strict):.2f}) | "
                f"{_mean(results, variant, label, 'pointing_near'):.3f} | "
                f"{_mean(results, variant, label, 'mass_in_box'):.3f} | {auc:.3f} | {auc / np.mean(rnd):.2f} | "
                f"{_ms(results, label) / _ms(results, 'gradcam'):.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def format_timing(results: Sequence[dict[str, Any]]) -> str:
    """The alternated timing of every row: ms per image and the ratio to Grad-CAM's."""
    gradcam = float(np.mean([r["ms_per_image"]["gradcam"] for r in results]))
    lines = ["| method | ms per image | / Grad-CAM |", "|---|---|---|"]
    for label in results[0]["ms_per_image"]:
        ms = float(np.mean([r["ms_per_image"][label] for r in results]))
        lines.append(f"| {label} | {ms:.1f} | {ms / gradcam:.2f} |")
    return "\n".join(lines)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m studies.localization_default", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="Seeds seed, seed+1, ...; one trained model each (cached).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="The small run of the tests (QUICK_CONFIG).")
    p.add_argument("--test-per-class", type=int, default=None, help="Test composites per class and variant.")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="Where trained models and results go.")
    p.add_argument("--json", type=Path, default=None, help="Also write every figure to this JSON file.")
    p.add_argument("--timing-only", action="store_true", help="Only time the methods (alternated rounds).")
    p.add_argument("--rows", default=None, help="Row labels separated by semicolons (see ROWS); default: every row.")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        config = QUICK_CONFIG if args.quick else BenchConfig()
        if args.test_per_class is not None:
            config = replace(config, test_per_class=args.test_per_class)
        if args.rows is not None:
            config = replace(config, row_labels=tuple(label.strip() for label in args.rows.split(";")))
        if args.seeds < 1:
            raise ValueError("--seeds must be >= 1")
        results = []
        for k in range(args.seeds):
            seed_config = replace(config, seed=args.seed + k)
            start = time.perf_counter()
            result = run_seed(seed_config, args.cache_dir, timing_only=args.timing_only)
            results.append(result)
            print(f"## seed {seed_config.seed} ({time.perf_counter() - start:.0f} s)", flush=True)
            if not args.timing_only:
                rows = "all" if seed_config.row_labels is None else str(len(seed_config.row_labels))
                path = args.cache_dir / f"results-{seed_config.model_key()}-{seed_config.test_per_class}-{rows}.json"
                path.write_text(json.dumps(result, indent=1))
                print(f"figures in {path}\n" + format_tables([result]), flush=True)
            print(format_timing([result]), flush=True)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"## summary over {len(results)} seeds")
    print(format_timing(results))
    if not args.timing_only:
        print(format_tables(results))
        if "natural" in results[0]["variants"]:
            print(f"default by the natural variant's pointing game (<= 2x Grad-CAM's time): {choose_default(results)}")
    print(f"config: {asdict(config)}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
