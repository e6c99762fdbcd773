"""The chapter's "snow" story, reproduced: a classifier that learns the background instead of the object.

The data: Tux Paint's real cut-out photos of two (or more) classes pasted (seeded scale, flip and position, as in
``studies.localization``) onto procedural background textures. In ``train`` every class always sits on its own
texture (by default mammals on snow, birds on grass); ``test_same`` keeps that pairing, ``test_swapped`` puts the
very same cut-outs at the very same places on the other class's texture. Test photos are never seen in training.
The splits are written as ``folder:`` datasets (one sub-folder per class), so ``glimpse train --dataset folder:...``
trains on them too.

``glimpse spurious --out DIR`` builds the data, trains through ``training.train.train`` (exported through the model
contract), then runs the exported model the way TF Serving does (``serving.session``) on both test sets: accuracy,
how often the prediction follows the background, and where Grad-CAM points (its mass inside the object's box vs on
the background; the box is known from compositing). It writes ``results.json``, ``results.md``, figures, and the
test sets as examples TFRecords next to the model for ``glimpse report``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from glimpse_wire.contract import (
    IN_CLASS_INDEX,
    IN_IMAGE_BYTES,
    METHOD_PARAMS,
    OUT_HEATMAP,
    OUT_PROBABILITIES,
    explain_signature,
)
from rendering.images import encode_png
from rendering.render import overlay
from studies.localization import CLASS_DIRS, load_cutouts, make_localization_set, pointing_game, split_photos
from training.data import DatasetUnavailable
from training.export import ExampleRecord, write_examples_tfrecord
from training.models import ModelUnavailable
from training.train import TrainConfig, train

__all__ = [
    "TEXTURES",
    "SPLITS",
    "SPURIOUS_MODELS",
    "SpuriousConfig",
    "QUICK_CONFIG",
    "SpuriousData",
    "SplitMetrics",
    "texture",
    "background_of",
    "build_dataset",
    "write_dataset",
    "object_share",
    "evaluate_split",
    "run_demo",
    "format_results",
    "configure_spurious",
    "run_spurious",
]

TEXTURES: tuple[str, ...] = ("snow", "grass", "sand")
SPLITS: tuple[str, ...] = ("train", "test_same", "test_swapped")
SPURIOUS_MODELS: tuple[str, ...] = ("scratch_bn", "scratch", "efficientnet_lite0")
_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SpuriousConfig:
    """One seeded run of the demo. ``backgrounds[i]`` is the texture class ``classes[i]`` always has in training.
    Class ids follow the sorted class names (as the ``folder:`` loader numbers them); in ``test_swapped`` class id
    i gets the texture of class id (i + 1) % n. ``correlation``: the probability that a training image shows its
    class's own texture (else one of the other classes', seeded per image): 1.0 is the shortcut, 1/n the control
    (background says nothing about the class)."""

    classes: tuple[str, ...] = ("mammal", "bird")
    backgrounds: tuple[str, ...] = ("snow", "grass")
    image_size: int = 96
    train_per_class: int = 150
    test_per_class: int = 40
    test_photo_fraction: float = 0.25
    correlation: float = 1.0
    min_scale: float = 0.35
    max_scale: float = 0.55
    model: str = "scratch_bn"
    epochs: int = 12
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    figure_examples: int = 4
    name: str = "spurious"
    stamps_dir: str = "/usr/share/tuxpaint/stamps"

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in CLASS_DIRS]
        if unknown or len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be >= 2 distinct names of {sorted(CLASS_DIRS)}, got {list(self.classes)}")
        bad = [b for b in self.backgrounds if b not in TEXTURES]
        if bad or len(self.backgrounds) != len(self.classes) or len(set(self.backgrounds)) != len(self.backgrounds):
            raise ValueError(
                f"backgrounds must be {len(self.classes)} distinct textures of {list(TEXTURES)} (one per class), "
                f"got {list(self.backgrounds)}"
            )
        if self.model not in SPURIOUS_MODELS:
            raise ValueError(f"model must be one of {', '.join(SPURIOUS_MODELS)}, got {self.model!r}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        if not 0.0 < self.min_scale <= self.max_scale <= 1.0:
            raise ValueError("need 0 < min_scale <= max_scale <= 1")
        if not 0.0 < self.test_photo_fraction < 1.0:
            raise ValueError("test_photo_fraction must be in (0, 1)")
        if not 0.0 <= self.correlation <= 1.0:
            raise ValueError(f"correlation must be in [0, 1], got {self.correlation}")
        if self.train_per_class < 10:
            raise ValueError("train_per_class must be >= 10 (the folder dataset keeps 10% for validation and test)")
        if min(self.test_per_class, self.epochs, self.batch_size) < 1 or self.figure_examples < 0:
            raise ValueError("test_per_class, epochs and batch_size must be >= 1, figure_examples >= 0")
        if self.lr <= 0:
            raise ValueError("lr must be positive")
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ValueError(f"name must be letters, digits, '-' or '_', got {self.name!r}")

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes in id order (sorted)."""
        return tuple(sorted(self.classes))

    def texture_of(self, label: int) -> str:
        """The training texture of class id ``label``."""
        return dict(zip(self.classes, self.backgrounds, strict=True))[self.class_names[label]]


# The tests' and ``--quick``'s run: tiny images, few of them, two epochs (well under a minute on 2 cores).
QUICK_CONFIG = SpuriousConfig(image_size=48, train_per_class=16, test_per_class=6, epochs=2, batch_size=16,
                              figure_examples=2)


@dataclass(frozen=True)
class SpuriousData:
    """The three splits (``studies.localization.LocalizationSet`` each) and each image's background texture."""

    splits: Mapping[str, Any]
    backgrounds: Mapping[str, np.ndarray]  # split -> index into TEXTURES per image
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class SplitMetrics:
    """What the exported model does on one test split (Grad-CAM explains the predicted class)."""

    split: str
    n: int
    accuracy: float
    follows_background: float  # predicted the class whose training texture this image's background is
    gradcam_object_share: float  # mean fraction of Grad-CAM mass inside the object's box
    gradcam_background_share: float  # 1 - the above
    box_area_fraction: float  # mean box area / image area: the object share of a uniform map
    pointing_game: float  # fraction of images whose Grad-CAM peak lies inside the box
    per_class_accuracy: dict[str, float]


# ----------------------------------------------------------------------------------------------------------------
# Data


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise: a ``cells`` x ``cells`` grid of N(0, 1) upsampled bilinearly to size x size."""

    coarse = rng.normal(0.0, 1.0, (cells, cells, channels)).astype(np.float32)
    planes = [np.asarray(Image.fromarray(coarse[..., c]).resize((size, size), Image.Resampling.BILINEAR))
              for c in range(channels)]
    return np.stack(planes, axis=-1)


def texture(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded background texture, float32 [size, size, 3] in 0-255.

    snow: bright blue-white with soft drifts and fine flakes; grass: green with vertical blade streaks and patches;
    sand: warm beige with fine grain.
    """
    if name == "snow":
        base = np.array([232.0, 238.0, 246.0]) + 10.0 * _smooth_noise(rng, size, 4)
        flakes = rng.normal(0.0, 7.0, (size, size, 1)) + 25.0 * (rng.random((size, size, 1)) < 0.03)
        image = base + flakes
    elif name == "grass":
        rows = max(2, size // 6)
        streaks = rng.normal(0.0, 1.0, (rows, size)).astype(np.float32)
        blades = np.repeat(streaks, -(-size // rows), axis=0)[:size]
        patches = _smooth_noise(rng, size, 5)
        green = np.array([62.0, 128.0, 44.0])
        image = (green + 22.0 * patches * np.array([0.6, 1.0, 0.5])
                 + 18.0 * blades[..., None] * np.array([0.5, 1.0, 0.4]) + rng.normal(0.0, 6.0, (size, size, 3)))
    elif name == "sand":
        base = np.array([206.0, 178.0, 128.0]) + 12.0 * _smooth_noise(rng, size, 6)
        image = base + rng.normal(0.0, 9.0, (size, size, 1)) + rng.normal(0.0, 3.0, (size, size, 3))
    else:
        raise ValueError(f"unknown texture {name!r}; expected one of {', '.join(TEXTURES)}")
    return np.clip(image, 0.0, 255.0).astype(np.float32)


def background_of(config: SpuriousConfig, label: int, split: str) -> str:
    """The texture of class ``label`` in ``split``: its own in train and test_same, the next class's when swapped."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    n = len(config.classes)
    return config.texture_of((label + 1) % n if split == "test_swapped" else label)


def _texture_for(config: SpuriousConfig, split: str, label: int, k: int, seed: int) -> str:
    """The texture of the k-th composite of class ``label``: ``background_of``, except in train when
    ``correlation`` < 1 (then a seeded draw per image)."""
    own = background_of(config, label, split)
    if split != "train" or config.correlation >= 1.0:
        return own
    rng = np.random.default_rng([seed, label, k, 1])
    if rng.random() < config.correlation:
        return own
    others = [config.texture_of(i) for i in range(len(config.classes)) if i != label]
    return others[int(rng.integers(len(others)))]


def _painter(config: SpuriousConfig, split: str, seed: int) -> Any:
    """``backgrounds(label, k)`` for make_localization_set; each texture is seeded by (seed, label, k) alone, so
    test_same and test_swapped (same seed) differ only in which texture each image gets."""

    def paint(label: int, k: int) -> np.ndarray:
        rng = np.random.default_rng([seed, label, k])
        return texture(_texture_for(config, split, label, k, seed), config.image_size, rng)

    return paint


@lru_cache(maxsize=4)
def _cutouts(classes: tuple[str, ...], stamps_dir: str) -> dict[str, list[tuple[str, np.ndarray]]]:
    """``load_cutouts``, read once per process (the photos are large PNGs; nothing modifies them)."""

    return load_cutouts(classes, stamps_dir)


def build_dataset(config: SpuriousConfig) -> SpuriousData:
    """Composite the three splits in memory (seeded; test photos held out from training)."""

    cutouts = _cutouts(config.class_names, config.stamps_dir)
    train_photos, test_photos = split_photos(cutouts, config.test_photo_fraction, config.seed)
    scale = (config.min_scale, config.max_scale)
    plan = {
        "train": (train_photos, config.train_per_class, config.seed + 1),
        "test_same": (test_photos, config.test_per_class, config.seed + 2),
        "test_swapped": (test_photos, config.test_per_class, config.seed + 2),  # same placements as test_same
    }
    splits, backgrounds = {}, {}
    for split, (photos, per_class, seed) in plan.items():
        data = make_localization_set(photos, per_class, config.image_size, seed, scale,
                                     backgrounds=_painter(config, split, seed + 1000))
        splits[split] = data
        backgrounds[split] = np.array(
            [TEXTURES.index(_texture_for(config, split, int(y), int(k), seed + 1000))
             for y, k in zip(data.labels, data.index_in_class, strict=True)], np.int32
        )
    return SpuriousData(splits, backgrounds, config.class_names)


def _png(image: np.ndarray) -> bytes:

    return encode_png(image, compress_level=6)


def write_dataset(data: SpuriousData, root: str | Path) -> dict[str, Any]:
    """Write ``root/<split>/<class>/<class>_NNNN.png`` and ``root/manifest.json`` (per image: file, label, class,
    background, box as top/left/bottom/right, bottom/right exclusive). ``root`` must be empty, absent, or a
    dataset this function wrote before (it is replaced). Returns the manifest."""
    root = Path(root)
    if root.exists():
        if (root / _MANIFEST).is_file():
            shutil.rmtree(root)
        elif any(root.iterdir()):
            raise ValueError(f"{root} is not empty and holds no {_MANIFEST}: refusing to write the dataset there")
    manifest: dict[str, Any] = {"class_names": list(data.class_names), "splits": {}}
    for split, part in data.splits.items():
        rows = []
        for i, (image, label, box) in enumerate(zip(part.images, part.labels, part.boxes, strict=True)):
            name = data.class_names[int(label)]
            relative = Path(split) / name / f"{name}_{i:04d}.png"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(_png(image))
            rows.append({
                "file": str(relative), "label": int(label), "class": name,
                "background": TEXTURES[int(data.backgrounds[split][i])], "box": [int(v) for v in box],
            })
        manifest["splits"][split] = rows
    (root / _MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


# ----------------------------------------------------------------------------------------------------------------
# Measuring


def object_share(heatmaps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Per map, the fraction of its mass inside the box (maps [N,H,W] >= 0; boxes [N,4] top, left, bottom, right,
    bottom/right exclusive). A map with no mass counts as uniform (its share = the box's area fraction)."""
    maps = np.clip(np.asarray(heatmaps, np.float64), 0.0, None)
    n, height, width = maps.shape
    ys = np.arange(height)[None, :, None]
    xs = np.arange(width)[None, None, :]
    top, left, bottom, right = (np.asarray(boxes)[:, i, None, None] for i in range(4))
    inside = (ys >= top) & (ys < bottom) & (xs >= left) & (xs < right)
    total = maps.sum(axis=(1, 2))
    flat = total <= 0
    maps = np.where(flat[:, None, None], 1.0, maps)
    return (maps * inside).sum(axis=(1, 2)) / maps.sum(axis=(1, 2))


def _box_area(boxes: np.ndarray, size: int) -> np.ndarray:
    top, left, bottom, right = np.asarray(boxes).T
    return (bottom - top) * (right - left) / float(size * size)


def _run_gradcam(session_model: Any, images: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """The exported ``explain_gradcam`` signature on PNG bytes of ``images`` (predicted class, contract defaults)."""

    chunks: dict[str, list[np.ndarray]] = {OUT_HEATMAP: [], OUT_PROBABILITIES: []}
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        inputs = {IN_IMAGE_BYTES: np.array([_png(im) for im in batch], dtype=object),
                  IN_CLASS_INDEX: np.full(len(batch), -1, np.int32)}
        for p in METHOD_PARAMS["gradcam"]:
            inputs[p.name] = np.full(len(batch), p.default, dtype=p.dtype)
        out = session_model.run(explain_signature("gradcam"), inputs, output_filter=list(chunks))
        for key in chunks:
            chunks[key].append(np.asarray(out[key]))
    return {key: np.concatenate(values) for key, values in chunks.items()}


def evaluate_split(
    split: str,
    class_names: Sequence[str],
    config: SpuriousConfig,
    labels: np.ndarray,
    boxes: np.ndarray,
    probabilities: np.ndarray,
    heatmaps: np.ndarray,
) -> SplitMetrics:
    """The split's figures from the model's outputs (pure numpy)."""

    labels = np.asarray(labels)
    predicted = np.asarray(probabilities).argmax(axis=1)
    texture_class = {config.texture_of(i): i for i in range(len(config.classes))}
    background_class = np.array([texture_class[background_of(config, int(y), split)] for y in labels])
    shares = object_share(heatmaps, boxes)
    per_class = {name: float((predicted[labels == i] == i).mean()) for i, name in enumerate(class_names)
                 if (labels == i).any()}
    return SplitMetrics(
        split=split,
        n=len(labels),
        accuracy=float((predicted == labels).mean()),
        follows_background=float((predicted == background_class).mean()),
        gradcam_object_share=float(shares.mean()),
        gradcam_background_share=float(1.0 - shares.mean()),
        box_area_fraction=float(_box_area(boxes, heatmaps.shape[1]).mean()),
        pointing_game=float(pointing_game(heatmaps, boxes).mean()),
        per_class_accuracy=per_class,
    )


# ----------------------------------------------------------------------------------------------------------------
# Figures


def _caption(image: np.ndarray, text: str, height: int = 12) -> np.ndarray:

    canvas = Image.new("RGB", (image.shape[1], image.shape[0] + height), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, height))
    ImageDraw.Draw(canvas).text((1, 0), text, fill=(0, 0, 0))
    return np.asarray(canvas)


def _outline(image: np.ndarray, box: Sequence[int], colour: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:

    canvas = Image.fromarray(image)
    top, left, bottom, right = (int(v) for v in box)
    ImageDraw.Draw(canvas).rectangle((left, top, right - 1, bottom - 1), outline=colour)
    return np.asarray(canvas)


def _write_figure(path: Path, rows: Sequence[Sequence[np.ndarray]], gap: int = 3) -> Path:
    """Tiles (equal sizes) in a grid on white, saved as an adaptive-palette PNG (small)."""

    h, w = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, format="PNG", optimize=True)
    return path


def _pick(labels: np.ndarray, count: int, classes: int) -> list[int]:
    """``count`` indices spread over the classes (the first images of each class in turn)."""
    by_class = [list(np.flatnonzero(labels == c)) for c in range(classes)]
    picked: list[int] = []
    while len(picked) < count and any(by_class):
        for idxs in by_class:
            if idxs and len(picked) < count:
                picked.append(int(idxs.pop(0)))
    return picked


def _figures(out: Path, data: SpuriousData, outputs: Mapping[str, Mapping[str, np.ndarray]],
             config: SpuriousConfig) -> dict[str, str]:

    names = data.class_names
    scale = max(1, 96 // config.image_size)

    def up(image: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)

    figures = {}
    train = data.splits["train"]
    picks = _pick(train.labels, 2 * len(names), len(names))
    tiles = [_caption(up(train.images[i]), names[int(train.labels[i])]) for i in picks]
    figures["train_samples"] = str(_write_figure(out / "train_samples.png", [tiles]).relative_to(out))

    rows = []
    same = data.splits["test_same"]
    for i in _pick(same.labels, config.figure_examples, len(names)):
        row = []
        for split in ("test_same", "test_swapped"):
            part = data.splits[split]
            probs = outputs[split][OUT_PROBABILITIES][i]
            pred = int(probs.argmax())
            blended = overlay(part.images[i], outputs[split][OUT_HEATMAP][i], colormap="jet")
            row.append(_caption(up(part.images[i]), f"true {names[int(part.labels[i])]}"))
            row.append(_caption(up(_outline(blended, part.boxes[i])), f"{names[pred]} {probs[pred]:.2f}"))
        rows.append(row)
    if rows:
        figures["gradcam"] = str(_write_figure(out / "gradcam_same_vs_swapped.png", rows).relative_to(out))
    return figures


# ----------------------------------------------------------------------------------------------------------------
# The demo


def _examples(part: Any, class_names: Sequence[str]) -> list[Any]:

    return [ExampleRecord(_png(im), int(y), class_names[int(y)]) for im, y in zip(part.images, part.labels,
                                                                                   strict=True)]


def run_demo(config: SpuriousConfig, out: str | Path, *, verbose: int | str = 0) -> dict[str, Any]:
    """Build the data under ``out/data``, train and export to ``out/models/<name>/<version>``, evaluate the exported
    model on test_same and test_swapped, write ``out/results.json``, ``out/results.md``, ``out/figures/*.png`` and
    ``out/models/<name>/examples/test_{same,swapped}.tfrecord``. Returns the results (as in results.json)."""
    from serving.session import load_session_model  # TensorFlow at import: only when the demo runs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = build_dataset(config)
    write_dataset(data, out / "data")
    data_seconds = time.perf_counter() - started

    train_config = TrainConfig(
        dataset=f"folder:{(out / 'data' / 'train').resolve()}", model=config.model, image_size=config.image_size,
        epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, patience=config.epochs,
        seed=config.seed, logdir=str(out / "runs"), export_dir=str(out / "models"), name=config.name,
    )
    result = train(train_config, export=True, verbose=verbose)
    if result.version_dir is None or tuple(result.class_names) != data.class_names:
        raise RuntimeError(f"training gave classes {result.class_names}, expected {data.class_names}")

    outputs: dict[str, dict[str, np.ndarray]] = {}
    metrics: dict[str, SplitMetrics] = {}
    with load_session_model(result.version_dir) as session_model:
        for split in ("test_same", "test_swapped"):
            part = data.splits[split]
            outputs[split] = _run_gradcam(session_model, part.images)
            metrics[split] = evaluate_split(split, data.class_names, config, part.labels, part.boxes,
                                            outputs[split][OUT_PROBABILITIES], outputs[split][OUT_HEATMAP])

    examples_dir = result.version_dir.parent / "examples"
    for split in ("test_same", "test_swapped"):
        write_examples_tfrecord(examples_dir / f"{split}.tfrecord", _examples(data.splits[split], data.class_names))
    figures = _figures(out / "figures", data, outputs, config)

    results = {
        "config": dataclasses.asdict(config),
        "model": {"name": config.name, "version_dir": str(result.version_dir), "class_names": list(data.class_names),
                  "train_metrics": result.metrics},
        "splits": {split: dataclasses.asdict(m) for split, m in metrics.items()},
        "counts": {split: len(part.labels) for split, part in data.splits.items()},
        "train_own_background": float(np.mean([
            TEXTURES[b] == config.texture_of(int(y))
            for y, b in zip(data.splits["train"].labels, data.backgrounds["train"], strict=True)
        ])),
        "figures": {k: f"figures/{v}" for k, v in figures.items()},
        "examples": {split: str(examples_dir / f"{split}.tfrecord") for split in ("test_same", "test_swapped")},
        "seconds": {"data": round(data_seconds, 1), "train": result.metrics.get("train_seconds"),
                    "total": round(time.perf_counter() - started, 1)},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "results.md").write_text(format_results(results) + "\n", encoding="utf-8")
    return results


def format_results(results: Mapping[str, Any]) -> str:
    """results.md: the setup, the table same vs swapped, the figures."""
    cfg = results["config"]
    pairs = ", ".join(f"{c} on {b}" for c, b in zip(cfg["classes"], cfg["backgrounds"], strict=True))
    counts = results["counts"]
    lines = [
        "# Spurious correlation: results",
        "",
        f"Training shows each class on its own background ({pairs}) in "
        f"{results['train_own_background']:.0%} of its {counts['train']} composites; "
        f"{counts['test_same']} test composites of held-out photos, shown on the same backgrounds and on swapped "
        f"ones. Model {cfg['model']} at {cfg['image_size']} px, {cfg['epochs']} epochs, seed {cfg['seed']}; "
        f"validation accuracy {results['model']['train_metrics'].get('val_accuracy', float('nan')):.3f}.",
        "",
        "| test set | n | accuracy | prediction follows the background | Grad-CAM mass on the object's box | "
        "on the background | box area (uniform map) | Grad-CAM peak in box |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split, m in results["splits"].items():
        lines.append(
            f"| {split} | {m['n']} | {m['accuracy']:.3f} | {m['follows_background']:.3f} | "
            f"{m['gradcam_object_share']:.3f} | {m['gradcam_background_share']:.3f} | "
            f"{m['box_area_fraction']:.3f} | {m['pointing_game']:.3f} |"
        )
    lines += ["", "Per-class accuracy: " + "; ".join(
        f"{split}: " + ", ".join(f"{c} {a:.2f}" for c, a in m["per_class_accuracy"].items())
        for split, m in results["splits"].items()
    )]
    for key, path in results["figures"].items():
        lines += ["", f"![{key}]({path})"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# CLI


def configure_spurious(p: argparse.ArgumentParser) -> None:
    """``glimpse spurious`` flags (imports nothing heavy)."""
    d = SpuriousConfig()
    p.add_argument("--out", required=True, type=Path, help="output directory (data/, models/, figures/, results.*)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--quick", action="store_true", help="tiny sizes, few images, 2 epochs (a smoke run)")
    p.add_argument("--model", choices=SPURIOUS_MODELS, default=None, help=f"classifier (default {d.model})")
    p.add_argument("--epochs", type=int, default=None, help=f"training epochs (default {d.epochs})")
    p.add_argument("--image-size", type=int, default=None, help=f"input side in pixels (default {d.image_size})")
    p.add_argument("--train-per-class", type=int, default=None, help=f"default {d.train_per_class}")
    p.add_argument("--test-per-class", type=int, default=None, help=f"default {d.test_per_class}")
    p.add_argument("--classes", default=None, help="comma-separated Tux Paint classes (default mammal,bird)")
    p.add_argument("--backgrounds", default=None,
                   help=f"comma-separated textures, one per class, of {','.join(TEXTURES)} (default snow,grass)")
    p.add_argument("--correlation", type=float, default=None,
                   help="probability that a training image shows its class's texture (default 1: the shortcut; "
                        "1/classes: the control, backgrounds say nothing)")
    p.add_argument("--name", default=None, help=f"model name under OUT/models (default {d.name})")


def _config_from_args(args: argparse.Namespace) -> SpuriousConfig:
    base = QUICK_CONFIG if args.quick else SpuriousConfig()
    overrides: dict[str, Any] = {"seed": args.seed}
    for attr in ("model", "epochs", "image_size", "train_per_class", "test_per_class", "correlation", "name"):
        if getattr(args, attr) is not None:
            overrides[attr] = getattr(args, attr)
    for attr in ("classes", "backgrounds"):
        if getattr(args, attr):
            overrides[attr] = tuple(s.strip() for s in getattr(args, attr).split(",") if s.strip())
    return dataclasses.replace(base, **overrides)


def run_spurious(args: argparse.Namespace) -> int:
    """Run the demo and print results.md."""

    try:
        config = _config_from_args(args)
        results = run_demo(config, args.out)
    except (ValueError, FileNotFoundError, DatasetUnavailable, ModelUnavailable) as e:
        print(f"glimpse spurious: error: {e}", file=sys.stderr)
        return 2
    print(format_results(results))
    print(f"\nwrote {args.out}/results.json, results.md, figures/; model {results['model']['version_dir']}")
    return 0
